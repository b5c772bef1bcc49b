#include <string.h>

#include "kernels/kernels.h"

/* Row r = (ci, ky, kx) of cols holds, for every output position (oy, ox), x[ci][oy*s - p + ky][ox*s - p + kx]. */
void lenet__im2col(const lenet_conv_geom *g, const float *x, float *cols)
{
    const int k = g->k, s = g->s, p = g->p, oh = g->oh, ow = g->ow, h = g->h, w = g->w;
    for (int ci = 0; ci < g->c; ci++) {
        const float *plane = x + (size_t)ci * h * w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                float *row = cols + (((size_t)ci * k + ky) * k + kx) * oh * ow;
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * s - p + ky;
                    float *out = row + (size_t)oy * ow;
                    if (iy < 0 || iy >= h) {
                        memset(out, 0, sizeof(float) * ow);
                        continue;
                    }
                    const float *in = plane + (size_t)iy * w;
                    for (int ox = 0; ox < ow; ox++) {
                        int ix = ox * s - p + kx;
                        out[ox] = (ix >= 0 && ix < w) ? in[ix] : 0.0f;
                    }
                }
            }
        }
    }
}

/* The transpose of im2col: every column entry adds back into the input position it was read from. */
void lenet__col2im(const lenet_conv_geom *g, const float *cols, float *dx)
{
    const int k = g->k, s = g->s, p = g->p, oh = g->oh, ow = g->ow, h = g->h, w = g->w;
    memset(dx, 0, sizeof(float) * (size_t)g->c * h * w);
    for (int ci = 0; ci < g->c; ci++) {
        float *plane = dx + (size_t)ci * h * w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                const float *row = cols + (((size_t)ci * k + ky) * k + kx) * oh * ow;
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= h)
                        continue;
                    float *out = plane + (size_t)iy * w;
                    const float *in = row + (size_t)oy * ow;
                    for (int ox = 0; ox < ow; ox++) {
                        int ix = ox * s - p + kx;
                        if (ix >= 0 && ix < w)
                            out[ix] += in[ox];
                    }
                }
            }
        }
    }
}

void lenet__conv2d_ref(const lenet_conv_geom *g, int oc, const float *x, const float *weight, const float *bias,
                       float *y)
{
    const int k = g->k;
    for (int o = 0; o < oc; o++) {
        for (int oy = 0; oy < g->oh; oy++) {
            for (int ox = 0; ox < g->ow; ox++) {
                double acc = bias ? bias[o] : 0.0;
                for (int ci = 0; ci < g->c; ci++) {
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy * g->s - g->p + ky;
                        if (iy < 0 || iy >= g->h)
                            continue;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = ox * g->s - g->p + kx;
                            if (ix < 0 || ix >= g->w)
                                continue;
                            acc += (double)weight[(((size_t)o * g->c + ci) * k + ky) * k + kx] *
                                   x[((size_t)ci * g->h + iy) * g->w + ix];
                        }
                    }
                }
                y[((size_t)o * g->oh + oy) * g->ow + ox] = (float)acc;
            }
        }
    }
}

void lenet__add_bias_rows(size_t rows, size_t cols, const float *bias, size_t nbias, float *y)
{
    for (size_t r = 0; r < rows; r++) {
        float b = bias[r % nbias];
        float *row = y + r * cols;
        for (size_t i = 0; i < cols; i++)
            row[i] += b;
    }
}

void lenet__sum_rows_into(size_t rows, size_t cols, const float *dy, float *db, size_t nbias)
{
    for (size_t r = 0; r < rows; r++) {
        const float *row = dy + r * cols;
        float acc = 0.0f;
        for (size_t i = 0; i < cols; i++)
            acc += row[i];
        db[r % nbias] += acc;
    }
}
