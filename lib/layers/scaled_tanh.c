/* ScaledTanh: LeNet-5's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (LeCun et al. 1998,
 * appendix A), so that f(1) = 1 and f(-1) = -1 and the second derivative is largest at a = +-1. */
#include <math.h>

#include "layers/layer.h"

#define SQUASH_A 1.7159f
#define SQUASH_S (2.0f / 3.0f)

static lenet_status scaled_tanh_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    (void)l;
    *out = *in;
    return LENET_OK;
}

/* tanh(z) = 1 - 2 / (e^{2z} + 1), cheaper than libm's tanhf; its odd Taylor series near 0, where that form
 * would cancel (the next term, 17 z^7 / 315, is below 5e-11 for |z| < 0.05). */
static inline float fast_tanh(float z)
{
    if (fabsf(z) < 0.05f) {
        float z2 = z * z;
        return z * (1.0f - z2 * (1.0f / 3.0f - z2 * (2.0f / 15.0f)));
    }
    return 1.0f - 2.0f / (expf(2.0f * z) + 1.0f);
}

/* y = A tanh(S x) */
static void scaled_tanh_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    size_t count = (size_t)p->n * l->in_size;
    for (size_t i = 0; i < count; i++)
        y[i] = SQUASH_A * fast_tanh(SQUASH_S * p->x[i]);
}

/* f'(x) = A S (1 - tanh^2(S x)) = S (A - y^2 / A), from the forward output y. */
static inline float scaled_tanh_slope(float y)
{
    return SQUASH_S * (SQUASH_A - y * y * (1.0f / SQUASH_A));
}

/* dx = dy * f'(x) */
static void scaled_tanh_backward(const lenet_layer *l, const lenet_pass *p)
{
    if (!p->dx)
        return;
    size_t count = (size_t)p->n * l->in_size;
    for (size_t i = 0; i < count; i++)
        p->dx[i] = p->dy[i] * scaled_tanh_slope(p->y[i]);
}

/* Gauss-Newton: hx = hy * f'(x)^2 (the f'' term is dropped). */
static void scaled_tanh_backward_gn(const lenet_layer *l, const lenet_pass *p, const float *hy, float *hx)
{
    if (!hx)
        return;
    size_t count = (size_t)p->n * l->in_size;
    for (size_t i = 0; i < count; i++) {
        float slope = scaled_tanh_slope(p->y[i]);
        hx[i] = hy[i] * slope * slope;
    }
}

static const lenet_layer_ops scaled_tanh_ops = {
    .name = "ScaledTanh",
    .infer_shape = scaled_tanh_infer_shape,
    .forward = scaled_tanh_forward,
    .backward = scaled_tanh_backward,
    .backward_gn = scaled_tanh_backward_gn,
};

lenet_layer *lenet_scaled_tanh(void)
{
    return lenet__layer_alloc(sizeof(lenet_layer), &scaled_tanh_ops, 0, NULL);
}
