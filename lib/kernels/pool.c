/* Inner loops: let the compiler vectorize and unroll them whatever the build type. */
#pragma GCC optimize("O3")
#include <string.h>

#include "kernels/kernels.h"

/* The 2x2, stride 2 case of LeNet: straight loops over row pairs that the compiler vectorizes. */
static void avgpool2_forward(const lenet_conv_geom *g, size_t planes, const float *x, float *y)
{
    const int h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = x + pl * h * w;
        float *out = y + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            const float *r0 = in + (size_t)(2 * oy) * w, *r1 = r0 + w;
            float *o = out + (size_t)oy * ow;
            for (int ox = 0; ox < ow; ox++)
                o[ox] = ((r0[2 * ox] + r0[2 * ox + 1]) + (r1[2 * ox] + r1[2 * ox + 1])) * 0.25f;
        }
    }
}

static void avgpool2_backward(const lenet_conv_geom *g, size_t planes, const float *dy, float *dx)
{
    const int h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    for (size_t pl = 0; pl < planes; pl++) {
        float *in = dx + pl * h * w;
        const float *out = dy + pl * oh * ow;
        /* Odd sizes leave a last row or column that no window reads: its gradient is zero. */
        if (h != 2 * oh || w != 2 * ow)
            memset(in, 0, sizeof(float) * (size_t)h * w);
        for (int oy = 0; oy < oh; oy++) {
            float *r0 = in + (size_t)(2 * oy) * w, *r1 = r0 + w;
            const float *o = out + (size_t)oy * ow;
            for (int ox = 0; ox < ow; ox++) {
                float v = o[ox] * 0.25f;
                r0[2 * ox] = v;
                r0[2 * ox + 1] = v;
                r1[2 * ox] = v;
                r1[2 * ox + 1] = v;
            }
        }
    }
}

void lenet__avgpool_forward(const lenet_conv_geom *g, size_t planes, const float *x, float *y)
{
    if (g->k == 2 && g->s == 2) {
        avgpool2_forward(g, planes, x, y);
        return;
    }
    const int k = g->k, s = g->s, h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    const float scale = 1.0f / (float)(k * k);
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = x + pl * h * w;
        float *out = y + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                float acc = 0.0f;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        acc += in[(oy * s + ky) * w + ox * s + kx];
                out[oy * ow + ox] = acc * scale;
            }
        }
    }
}

/* dx[window] += dy / k^2 for every window covering the position (windows overlap when s < k). */
void lenet__avgpool_backward(const lenet_conv_geom *g, size_t planes, const float *dy, float *dx)
{
    if (g->k == 2 && g->s == 2) {
        avgpool2_backward(g, planes, dy, dx);
        return;
    }
    const int k = g->k, s = g->s, h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    const float scale = 1.0f / (float)(k * k);
    memset(dx, 0, sizeof(float) * planes * h * w);
    for (size_t pl = 0; pl < planes; pl++) {
        float *in = dx + pl * h * w;
        const float *out = dy + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                float grad = out[oy * ow + ox] * scale;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        in[(oy * s + ky) * w + ox * s + kx] += grad;
            }
        }
    }
}

/* Index (within the plane) of the first maximum of a window; NaN propagates as in PyTorch (it wins). */
static int window_argmax(const float *in, int w, int y0, int x0, int k)
{
    int best = y0 * w + x0;
    float best_value = in[best];
    for (int ky = 0; ky < k; ky++) {
        for (int kx = 0; kx < k; kx++) {
            int idx = (y0 + ky) * w + x0 + kx;
            float v = in[idx];
            if (v > best_value || (v != v && best_value == best_value)) {
                best = idx;
                best_value = v;
            }
        }
    }
    return best;
}

void lenet__maxpool_forward(const lenet_conv_geom *g, size_t planes, const float *x, float *y)
{
    const int k = g->k, s = g->s, h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = x + pl * h * w;
        float *out = y + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                out[oy * ow + ox] = in[window_argmax(in, w, oy * s, ox * s, k)];
    }
}

void lenet__maxpool_backward(const lenet_conv_geom *g, size_t planes, const float *x, const float *dy, float *dx)
{
    const int k = g->k, s = g->s, h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    memset(dx, 0, sizeof(float) * planes * h * w);
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = x + pl * h * w;
        float *grad_in = dx + pl * h * w;
        const float *out = dy + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                grad_in[window_argmax(in, w, oy * s, ox * s, k)] += out[oy * ow + ox];
    }
}
