/* Inner loops: let the compiler vectorize and unroll them whatever the build type. */
#pragma GCC optimize("O3")
#include <string.h>

#include "kernels/kernels.h"

/* The output columns ox whose input column ox*s - p + kx lies inside [0, w): [*lo, *hi).  Computing the range
 * once per kernel column keeps the inner loops free of bounds checks, so they vectorize. */
static void valid_columns(const lenet_conv_geom *g, int kx, int *lo, int *hi)
{
    int first = g->p - kx; /* smallest ox*s >= first */
    *lo = first <= 0 ? 0 : (first - 1) / g->s + 1; /* the ceiling of first / s, without first + s overflowing */
    int last = g->w - 1 + g->p - kx; /* largest ox*s <= last */
    *hi = last < 0 ? 0 : last / g->s + 1;
    if (*hi > g->ow)
        *hi = g->ow;
    if (*lo > *hi)
        *lo = *hi;
}

/* Row r = (ci, ky, kx) of cols holds, for every output position (oy, ox), x[ci][oy*s - p + ky][ox*s - p + kx]. */
void lenet__im2col(const lenet_conv_geom *g, const float *x, float *cols)
{
    const int k = g->k, s = g->s, p = g->p, oh = g->oh, ow = g->ow, h = g->h, w = g->w;
    for (int ci = 0; ci < g->c; ci++) {
        const float *plane = x + (size_t)ci * h * w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                float *row = cols + (((size_t)ci * k + ky) * k + kx) * oh * ow;
                int lo, hi;
                valid_columns(g, kx, &lo, &hi);
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * s - p + ky;
                    float *out = row + (size_t)oy * ow;
                    if (iy < 0 || iy >= h) {
                        memset(out, 0, sizeof(float) * ow);
                        continue;
                    }
                    /* Index from the row start: a pointer before the array would be undefined even unread. */
                    const float *in = plane + (size_t)iy * w;
                    const int shift = kx - p;
                    for (int ox = 0; ox < lo; ox++)
                        out[ox] = 0.0f;
                    for (int ox = lo; ox < hi; ox++)
                        out[ox] = in[ox * s + shift];
                    for (int ox = hi; ox < ow; ox++)
                        out[ox] = 0.0f;
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
                int lo, hi;
                valid_columns(g, kx, &lo, &hi);
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= h)
                        continue;
                    float *out = plane + (size_t)iy * w;
                    const float *in = row + (size_t)oy * ow;
                    const int shift = kx - p;
                    if (s == 1) {
                        for (int ox = lo; ox < hi; ox++)
                            out[ox + shift] += in[ox];
                    } else {
                        for (int ox = lo; ox < hi; ox++)
                            out[ox * s + shift] += in[ox];
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
    /* Independent partial sums: one running sum would wait on each add's latency and never vectorize. */
    enum { PARTS = 16 };
    for (size_t r = 0; r < rows; r++) {
        const float *row = dy + r * cols;
        float part[PARTS] = {0};
        size_t i = 0;
        for (; i + PARTS <= cols; i += PARTS)
            for (int j = 0; j < PARTS; j++)
                part[j] += row[i + j];
        float acc = 0.0f;
        for (int j = 0; j < PARTS; j++)
            acc += part[j];
        for (; i < cols; i++)
            acc += row[i];
        db[r % nbias] += acc;
    }
}

void lenet__to_lanes_ref(int n, int planes, int h, int w, int p, const float *x, float *xt)
{
    const int hp = h + 2 * p, wp = w + 2 * p;
    const size_t plane = (size_t)h * w, sample = (size_t)planes * plane;
    memset(xt, 0, (size_t)planes * hp * wp * LENET_LANES * sizeof(float));
    for (int c = 0; c < planes; c++)
        for (int y = 0; y < h; y++) {
            float *out = xt + (((size_t)c * hp + y + p) * wp + p) * LENET_LANES;
            const float *in = x + (size_t)c * plane + (size_t)y * w;
            for (int i = 0; i < n; i++)
                for (int col = 0; col < w; col++)
                    out[(size_t)col * LENET_LANES + i] = in[(size_t)i * sample + col];
        }
}

void lenet__from_lanes_ref(int n, size_t count, const float *yt, float *y)
{
    for (int i = 0; i < n; i++)
        for (size_t q = 0; q < count; q++)
            y[(size_t)i * count + q] = yt[q * LENET_LANES + i];
}
