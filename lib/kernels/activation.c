/* Inner loops: let the compiler vectorize and unroll them whatever the build type. */
#pragma GCC optimize("O3")
#include <math.h>

#include "kernels/kernels.h"

/* 1 / (1 + e^-x) through the vector exp of the kernel table (about 1 ulp; saturates cleanly, NaN propagates). */
void lenet__sigmoid_forward(size_t count, const float *x, float *y)
{
    lenet__kernels()->sigmoid_forward(count, x, y);
}

void lenet__sigmoid_forward_ref(size_t count, const float *x, float *y)
{
    for (size_t i = 0; i < count; i++)
        y[i] = 1.0f / (1.0f + expf(-x[i]));
}

/* d sigmoid = y (1 - y), at the width of the kernel table (a pass over memory: the wider, the fewer instructions). */
void lenet__sigmoid_backward(size_t count, const float *y, const float *dy, float *dx)
{
    lenet__kernels()->sigmoid_backward(count, y, dy, dx);
}

void lenet__relu_forward(size_t count, const float *x, float *y)
{
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN passes through, as in PyTorch, so it is detected downstream */
}

/* PyTorch's ReLU gradient is 0 at exactly 0 (threshold_backward on the output). */
void lenet__relu_backward(size_t count, const float *y, const float *dy, float *dx)
{
    for (size_t i = 0; i < count; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void lenet__tanh_forward(size_t count, const float *x, float *y)
{
    for (size_t i = 0; i < count; i++)
        y[i] = tanhf(x[i]);
}

/* d tanh = 1 - y^2 */
void lenet__tanh_backward(size_t count, const float *y, const float *dy, float *dx)
{
    for (size_t i = 0; i < count; i++)
        dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}
