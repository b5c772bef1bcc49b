/* The numeric kernels (lib/kernels) against naive loops written here and against each other:
 * sgemm, im2col/col2im, the reference convolution, pooling, activations and the bias helpers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "kernels/kernels.h"
#include "testutil.h"

/* ---- helpers ---- */

static float *floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

static void fill_uniform(lenet_rng *rng, float *p, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * lenet__rng_uniform(rng);
}

/* Small integers in [0, levels): many exact ties, exact sums. */
static void fill_levels(lenet_rng *rng, float *p, size_t n, int levels)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (float)lenet__rng_below(rng, (uint64_t)levels);
}

static void fill_nan(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

static int rand_int(lenet_rng *rng, int lo, int hi) /* inclusive */
{
    return lo + (int)lenet__rng_below(rng, (uint64_t)(hi - lo + 1));
}

static lenet_conv_geom make_geom(int c, int h, int w, int k, int s, int p)
{
    lenet_conv_geom g = {.c = c, .h = h, .w = w, .k = k, .s = s, .p = p};
    g.oh = (h + 2 * p - k) / s + 1;
    g.ow = (w + 2 * p - k) / s + 1;
    return g;
}

/* A random width: mostly small, sometimes wide enough for the vectorized loops' main body and remainder. */
static int rand_width(lenet_rng *rng)
{
    return lenet__rng_below(rng, 3) == 0 ? rand_int(rng, 12, 40) : rand_int(rng, 1, 11);
}

/* A random convolution geometry whose kernel fits the padded input. */
static lenet_conv_geom random_conv_geom(lenet_rng *rng)
{
    for (;;) {
        int c = rand_int(rng, 1, 4), h = rand_int(rng, 1, 11), w = rand_width(rng);
        int k = rand_int(rng, 1, 5), s = rand_int(rng, 1, 3), p = rand_int(rng, 0, 2);
        if (h + 2 * p >= k && w + 2 * p >= k)
            return make_geom(c, h, w, k, s, p);
    }
}

static lenet_conv_geom random_pool_geom(lenet_rng *rng)
{
    for (;;) {
        int h = rand_int(rng, 1, 10), w = rand_width(rng), k = rand_int(rng, 1, 4), s = rand_int(rng, 1, 3);
        if (h >= k && w >= k)
            return make_geom(1, h, w, k, s, 0);
    }
}

#define GEOM_FMT "c=%d h=%d w=%d k=%d s=%d p=%d"
#define GEOM_ARGS(g) (g).c, (g).h, (g).w, (g).k, (g).s, (g).p

/* ---- sgemm ---- */

/* C = alpha op(A) op(B) + beta C in double, with op(A) m x k and op(B) k x n, row-major with leading dims. */
static void naive_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                       int ldb, float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            for (int l = 0; l < k; l++) {
                double av = ta ? a[(size_t)l * lda + i] : a[(size_t)i * lda + l];
                double bv = tb ? b[(size_t)j * ldb + l] : b[(size_t)l * ldb + j];
                acc += av * bv;
            }
            c[(size_t)i * ldc + j] = (float)(alpha * acc + beta * (double)c[(size_t)i * ldc + j]);
        }
    }
}

START_TEST(test_sgemm_matches_naive_product_for_every_transpose_and_leading_dimension)
{
    lenet_rng rng;
    lenet__rng_seed(&rng, 11);
    for (int trial = 0; trial < 4 * 6; trial++) {
        bool ta = trial & 1, tb = trial & 2;
        int m = rand_int(&rng, 1, 9), n = rand_int(&rng, 1, 9), k = rand_int(&rng, 1, 9);
        /* Leading dimensions wider than the rows, so sub-matrices of larger arrays work. */
        int lda = (ta ? m : k) + rand_int(&rng, 0, 3), ldb = (tb ? k : n) + rand_int(&rng, 0, 3);
        int ldc = n + rand_int(&rng, 0, 3);
        size_t a_size = (size_t)(ta ? k : m) * lda, b_size = (size_t)(tb ? n : k) * ldb, c_size = (size_t)m * ldc;
        float *a = floats(a_size), *b = floats(b_size), *c = floats(c_size), *want = floats(c_size);
        fill_uniform(&rng, a, a_size, -1.0f, 1.0f);
        fill_uniform(&rng, b, b_size, -1.0f, 1.0f);
        fill_uniform(&rng, c, c_size, -1.0f, 1.0f);
        memcpy(want, c, c_size * sizeof(float));
        float alpha = trial % 3 == 0 ? 1.0f : -0.5f, beta = trial % 4 == 0 ? 0.0f : 1.5f;
        lenet__sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        naive_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc);
        double err = lenet_test_max_rel_err(c, want, c_size, 1.0);
        ck_assert_msg(err < 1e-5, "trial %d (ta=%d tb=%d m=%d n=%d k=%d): worst error %g", trial, ta, tb, m, n, k,
                      err);
        free(a);
        free(b);
        free(c);
        free(want);
    }
}
END_TEST

/* ---- im2col, col2im, convolution ---- */

START_TEST(test_im2col_lays_out_windows_as_rows_of_kernel_offsets)
{
    /* x = [1 2 3; 4 5 6; 7 8 9], k = 2, s = 1, p = 0: row (ky, kx) lists x[oy + ky][ox + kx] over (oy, ox). */
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const float want[16] = {1, 2, 4, 5, /* (0,0) */ 2, 3, 5, 6, /* (0,1) */
                            4, 5, 7, 8, /* (1,0) */ 5, 6, 8, 9 /* (1,1) */};
    lenet_conv_geom g = make_geom(1, 3, 3, 2, 1, 0);
    float cols[16];
    lenet__im2col(&g, x, cols);
    for (int i = 0; i < 16; i++)
        ck_assert_msg(cols[i] == want[i], "cols[%d] = %g, want %g", i, cols[i], want[i]);

    /* With padding 1 and stride 2 (out 2x2), the padded positions read as zero: row (0,0) reads
     * x[2oy - 1][2ox - 1] = {pad, pad, pad, 5}, row (1,1) reads x[2oy][2ox] = {1, 3, 7, 9}. */
    g = make_geom(1, 3, 3, 2, 2, 1);
    ck_assert_int_eq(g.oh, 2);
    lenet__im2col(&g, x, cols);
    const float row00[4] = {0, 0, 0, 5}, row11[4] = {1, 3, 7, 9};
    for (int i = 0; i < 4; i++) {
        ck_assert_float_eq(cols[i], row00[i]);
        ck_assert_float_eq(cols[12 + i], row11[i]);
    }
}
END_TEST

START_TEST(test_im2col_sgemm_convolution_matches_reference_over_random_geometries)
{
    lenet_rng rng;
    lenet__rng_seed(&rng, 2024);
    for (int trial = 0; trial < 300; trial++) {
        lenet_conv_geom g = random_conv_geom(&rng);
        int oc = rand_int(&rng, 1, 5), ckk = g.c * g.k * g.k, ohw = g.oh * g.ow;
        size_t x_size = (size_t)g.c * g.h * g.w, y_size = (size_t)oc * ohw;
        float *x = floats(x_size), *weight = floats((size_t)oc * ckk), *bias = floats((size_t)oc);
        float *cols = floats((size_t)ckk * ohw), *y = floats(y_size), *want = floats(y_size);
        fill_uniform(&rng, x, x_size, -1.0f, 1.0f);
        fill_uniform(&rng, weight, (size_t)oc * ckk, -1.0f, 1.0f);
        fill_uniform(&rng, bias, (size_t)oc, -1.0f, 1.0f);
        fill_nan(y, y_size);

        /* The layer's path: y (oc, oh*ow) = W (oc, c*k*k) . im2col(x) + b */
        lenet__im2col(&g, x, cols);
        lenet__sgemm(false, false, oc, ohw, ckk, 1.0f, weight, ckk, cols, ohw, 0.0f, y, ohw);
        lenet__add_bias_rows((size_t)oc, (size_t)ohw, bias, (size_t)oc, y);
        lenet__conv2d_ref(&g, oc, x, weight, bias, want);

        double err = lenet_test_max_rel_err(y, want, y_size, 1.0);
        ck_assert_msg(err < 1e-5, "trial %d " GEOM_FMT " oc=%d: worst error %g", trial, GEOM_ARGS(g), oc, err);
        free(x);
        free(weight);
        free(bias);
        free(cols);
        free(y);
        free(want);
    }
}
END_TEST

START_TEST(test_conv2d_ref_matches_hand_computed_stride_and_padding)
{
    /* x = 1..16 (4x4), weights 1..9 (3x3), stride 2, padding 1: y[0][0] = 5*1 + 6*2 + 8*5 + 9*6 = 111,
     * y[1][1] = [6 7 8; 10 11 12; 14 15 16] . [1..9] = 573; the others likewise. */
    float x[16], weight[9];
    for (int i = 0; i < 16; i++)
        x[i] = (float)(i + 1);
    for (int i = 0; i < 9; i++)
        weight[i] = (float)(i + 1);
    lenet_conv_geom g = make_geom(1, 4, 4, 3, 2, 1);
    float y[4], bias = -1.0f;
    lenet__conv2d_ref(&g, 1, x, weight, &bias, y);
    const float want[4] = {110, 216, 362, 572};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(y[i] == want[i], "y[%d] = %g, want %g", i, y[i], want[i]);
    lenet__conv2d_ref(&g, 1, x, weight, NULL, y); /* no bias */
    ck_assert_float_eq(y[0], 111.0f);
}
END_TEST

START_TEST(test_col2im_is_the_adjoint_of_im2col)
{
    /* <im2col(x), c> == <x, col2im(c)> for all x, c: col2im is im2col's transpose, which conv2d's dx needs. */
    lenet_rng rng;
    lenet__rng_seed(&rng, 7);
    for (int trial = 0; trial < 300; trial++) {
        lenet_conv_geom g = random_conv_geom(&rng);
        size_t x_size = (size_t)g.c * g.h * g.w, cols_size = (size_t)g.c * g.k * g.k * g.oh * g.ow;
        float *x = floats(x_size), *c = floats(cols_size), *cols = floats(cols_size), *back = floats(x_size);
        fill_uniform(&rng, x, x_size, -1.0f, 1.0f);
        fill_uniform(&rng, c, cols_size, -1.0f, 1.0f);
        fill_nan(back, x_size); /* col2im must overwrite, not accumulate into, its output */
        lenet__im2col(&g, x, cols);
        lenet__col2im(&g, c, back);
        double lhs = 0.0, rhs = 0.0, scale = 0.0;
        for (size_t i = 0; i < cols_size; i++) {
            lhs += (double)cols[i] * c[i];
            scale += fabs((double)cols[i] * c[i]);
        }
        for (size_t i = 0; i < x_size; i++)
            rhs += (double)x[i] * back[i];
        ck_assert_msg(fabs(lhs - rhs) <= 1e-5 * (scale + 1.0), "trial %d " GEOM_FMT ": <im2col x, c> = %.9g, <x, col2im c> = %.9g",
                      trial, GEOM_ARGS(g), lhs, rhs);
        free(x);
        free(c);
        free(cols);
        free(back);
    }
}
END_TEST

START_TEST(test_col2im_counts_each_input_once_per_window_covering_it)
{
    /* col2im of all-ones columns gives, at each input position, the number of kernel windows that read it:
     * 4x4 input, k = 3, s = 1, p = 0 (2x2 windows): corners 1, edge middles 2, the centre 4. */
    lenet_conv_geom g = make_geom(1, 4, 4, 3, 1, 0);
    float cols[9 * 4], dx[16];
    for (int i = 0; i < 36; i++)
        cols[i] = 1.0f;
    lenet__col2im(&g, cols, dx);
    const float want[16] = {1, 2, 2, 1, 2, 4, 4, 2, 2, 4, 4, 2, 1, 2, 2, 1};
    for (int i = 0; i < 16; i++)
        ck_assert_msg(dx[i] == want[i], "dx[%d] = %g, want %g", i, dx[i], want[i]);
}
END_TEST

/* ---- pooling ---- */

static void naive_avgpool(const lenet_conv_geom *g, size_t planes, const float *x, float *y)
{
    for (size_t pl = 0; pl < planes; pl++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                double acc = 0.0;
                for (int ky = 0; ky < g->k; ky++)
                    for (int kx = 0; kx < g->k; kx++)
                        acc += x[(pl * g->h + (size_t)(oy * g->s + ky)) * g->w + (size_t)(ox * g->s + kx)];
                y[(pl * g->oh + oy) * g->ow + ox] = (float)(acc / (g->k * g->k));
            }
}

/* Index in x of the first (row-major within the window) maximum of window (pl, oy, ox). */
static size_t naive_argmax(const lenet_conv_geom *g, size_t pl, int oy, int ox, const float *x)
{
    size_t best = 0;
    bool have = false;
    for (int ky = 0; ky < g->k; ky++)
        for (int kx = 0; kx < g->k; kx++) {
            size_t i = (pl * g->h + (size_t)(oy * g->s + ky)) * g->w + (size_t)(ox * g->s + kx);
            if (!have || x[i] > x[best]) {
                best = i;
                have = true;
            }
        }
    return best;
}

START_TEST(test_pooling_kernels_match_naive_loops_over_random_geometries)
{
    lenet_rng rng;
    lenet__rng_seed(&rng, 99);
    for (int trial = 0; trial < 300; trial++) {
        lenet_conv_geom g = random_pool_geom(&rng);
        size_t planes = (size_t)rand_int(&rng, 1, 4);
        size_t x_size = planes * g.h * g.w, y_size = planes * g.oh * g.ow;
        float *x = floats(x_size), *y = floats(y_size), *want = floats(y_size);
        float *dy = floats(y_size), *dx = floats(x_size), *want_dx = floats(x_size);
        /* Few levels in half the trials: ties in most windows, where max pooling must pick the first maximum. */
        if (trial % 2)
            fill_levels(&rng, x, x_size, 3);
        else
            fill_uniform(&rng, x, x_size, -1.0f, 1.0f);
        fill_levels(&rng, dy, y_size, 8);

        /* Average: forward, and backward spreading dy / k^2 over every window covering a position. */
        fill_nan(y, y_size);
        lenet__avgpool_forward(&g, planes, x, y);
        naive_avgpool(&g, planes, x, want);
        double err = lenet_test_max_rel_err(y, want, y_size, 1.0);
        ck_assert_msg(err < 1e-6, "avg forward, trial %d " GEOM_FMT ": error %g", trial, GEOM_ARGS(g), err);
        memset(want_dx, 0, x_size * sizeof(float));
        for (size_t pl = 0; pl < planes; pl++)
            for (int oy = 0; oy < g.oh; oy++)
                for (int ox = 0; ox < g.ow; ox++)
                    for (int ky = 0; ky < g.k; ky++)
                        for (int kx = 0; kx < g.k; kx++)
                            want_dx[(pl * g.h + (size_t)(oy * g.s + ky)) * g.w + (size_t)(ox * g.s + kx)] +=
                                dy[(pl * g.oh + oy) * g.ow + ox] / (float)(g.k * g.k);
        fill_nan(dx, x_size);
        lenet__avgpool_backward(&g, planes, dy, dx);
        err = lenet_test_max_rel_err(dx, want_dx, x_size, 1.0);
        ck_assert_msg(err < 1e-6, "avg backward, trial %d " GEOM_FMT ": error %g", trial, GEOM_ARGS(g), err);

        /* Max: exact values, and dy routed to the first maximum of each window (summed where windows overlap). */
        fill_nan(y, y_size);
        lenet__maxpool_forward(&g, planes, x, y);
        memset(want_dx, 0, x_size * sizeof(float));
        for (size_t pl = 0; pl < planes; pl++)
            for (int oy = 0; oy < g.oh; oy++)
                for (int ox = 0; ox < g.ow; ox++) {
                    size_t o = (pl * g.oh + oy) * g.ow + ox, at = naive_argmax(&g, pl, oy, ox, x);
                    ck_assert_msg(y[o] == x[at], "max forward, trial %d " GEOM_FMT ": y[%zu] = %g, want %g", trial,
                                  GEOM_ARGS(g), o, y[o], x[at]);
                    want_dx[at] += dy[o];
                }
        fill_nan(dx, x_size);
        lenet__maxpool_backward(&g, planes, x, dy, dx);
        for (size_t i = 0; i < x_size; i++)
            ck_assert_msg(dx[i] == want_dx[i], "max backward, trial %d " GEOM_FMT ": dx[%zu] = %g, want %g", trial,
                          GEOM_ARGS(g), i, dx[i], want_dx[i]);
        free(x);
        free(y);
        free(want);
        free(dy);
        free(dx);
        free(want_dx);
    }
}
END_TEST

START_TEST(test_maxpool_kernel_gives_tied_gradient_to_first_maximum)
{
    /* One 2x2 window [[1, 3], [3, 2]]: the maxima at (0,1) and (1,0) tie; the first in row-major order wins. */
    lenet_conv_geom g = make_geom(1, 2, 2, 2, 2, 0);
    const float x[4] = {1, 3, 3, 2}, dy[1] = {5};
    float y[1], dx[4];
    lenet__maxpool_forward(&g, 1, x, y);
    ck_assert_float_eq(y[0], 3.0f);
    lenet__maxpool_backward(&g, 1, x, dy, dx);
    ck_assert_float_eq(dx[0], 0.0f);
    ck_assert_float_eq(dx[1], 5.0f);
    ck_assert_float_eq(dx[2], 0.0f);
    ck_assert_float_eq(dx[3], 0.0f);
}
END_TEST

START_TEST(test_maxpool_kernel_propagates_nan_as_pytorch)
{
    /* A NaN anywhere in a window is its maximum (PyTorch's max_pool2d), and takes the window's gradient, so a
     * diverging network shows NaN instead of hiding it.  Windows: NaN second, NaN first, none. */
    lenet_conv_geom g = make_geom(1, 2, 6, 2, 2, 0);
    const float x[12] = {1, NAN, NAN, 5, 1, 2, /**/ 9, 3, 0, 7, 3, 4};
    const float dy[3] = {1, 2, 3};
    float y[3], dx[12];
    lenet__maxpool_forward(&g, 1, x, y);
    ck_assert(isnan(y[0]));
    ck_assert(isnan(y[1]));
    ck_assert_float_eq(y[2], 4.0f);
    lenet__maxpool_backward(&g, 1, x, dy, dx);
    const float want[12] = {0, 1, 2, 0, 0, 0, /**/ 0, 0, 0, 0, 0, 3};
    for (int i = 0; i < 12; i++)
        ck_assert_msg(dx[i] == want[i], "dx[%d] = %g, want %g", i, dx[i], want[i]);
}
END_TEST

/* ---- activations and bias helpers ---- */

START_TEST(test_activation_kernels_match_libm_in_double)
{
    enum { N = 401 };
    float x[N], y[N], dy[N], dx[N];
    for (int i = 0; i < N; i++) {
        x[i] = -40.0f + 0.2f * (float)i;
        dy[i] = 1.0f - 0.005f * (float)i;
    }
    lenet__sigmoid_forward(N, x, y);
    for (int i = 0; i < N; i++)
        ck_assert_msg(fabs(y[i] - 1.0 / (1.0 + exp(-(double)x[i]))) < 1e-6, "sigmoid(%g) = %g", x[i], y[i]);
    lenet__sigmoid_backward(N, y, dy, dx);
    for (int i = 0; i < N; i++)
        ck_assert_float_eq_tol(dx[i], dy[i] * y[i] * (1.0f - y[i]), 1e-7f);

    lenet__tanh_forward(N, x, y);
    for (int i = 0; i < N; i++)
        ck_assert_msg(fabs(y[i] - tanh((double)x[i])) < 1e-6, "tanh(%g) = %g", x[i], y[i]);
    lenet__tanh_backward(N, y, dy, dx);
    for (int i = 0; i < N; i++)
        ck_assert_float_eq_tol(dx[i], dy[i] * (1.0f - y[i] * y[i]), 1e-7f);

    lenet__relu_forward(N, x, y);
    lenet__relu_backward(N, y, dy, dx);
    for (int i = 0; i < N; i++) {
        ck_assert_float_eq(y[i], x[i] > 0.0f ? x[i] : 0.0f);
        ck_assert_float_eq(dx[i], x[i] > 0.0f ? dy[i] : 0.0f);
    }
}
END_TEST

START_TEST(test_activation_kernels_saturate_without_nan)
{
    const float x[6] = {-1e4f, -100.0f, -88.8f, 88.8f, 100.0f, 1e4f};
    float y[6], dy[6] = {1, 1, 1, 1, 1, 1}, dx[6];
    lenet__sigmoid_forward(6, x, y);
    lenet__sigmoid_backward(6, y, dy, dx);
    for (int i = 0; i < 6; i++) {
        ck_assert_msg(y[i] >= 0.0f && y[i] <= 1.0f, "sigmoid(%g) = %g", x[i], y[i]);
        ck_assert_msg(dx[i] >= 0.0f && dx[i] < 1e-30f, "sigmoid'(%g) = %g", x[i], dx[i]);
    }
    ck_assert_float_eq_tol(y[1], 0.0f, 1e-30f);
    ck_assert_float_eq(y[4], 1.0f);
    lenet__tanh_forward(6, x, y);
    ck_assert_float_eq(y[0], -1.0f);
    ck_assert_float_eq(y[5], 1.0f);
}
END_TEST

START_TEST(test_bias_helpers_cycle_through_the_bias_by_row)
{
    /* 6 rows of 3 with 2 biases: row r gets bias[r % 2]; summing gives each bias the rows that used it. */
    float y[18] = {0}, db[2] = {10, 20};
    const float bias[2] = {1.5f, -2.0f};
    lenet__add_bias_rows(6, 3, bias, 2, y);
    for (int r = 0; r < 6; r++)
        for (int i = 0; i < 3; i++)
            ck_assert_float_eq(y[r * 3 + i], bias[r % 2]);
    float dy[18];
    for (int i = 0; i < 18; i++)
        dy[i] = (float)i;
    lenet__sum_rows_into(6, 3, dy, db, 2);
    /* rows 0, 2, 4 hold 0+1+2, 6+7+8, 12+13+14 = 63; rows 1, 3, 5 hold 3+4+5, 9+10+11, 15+16+17 = 90; added to db */
    ck_assert_float_eq(db[0], 73.0f);
    ck_assert_float_eq(db[1], 110.0f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("kernels");
    tcase_add_test(tc, test_sgemm_matches_naive_product_for_every_transpose_and_leading_dimension);
    tcase_add_test(tc, test_im2col_lays_out_windows_as_rows_of_kernel_offsets);
    tcase_add_test(tc, test_im2col_sgemm_convolution_matches_reference_over_random_geometries);
    tcase_add_test(tc, test_conv2d_ref_matches_hand_computed_stride_and_padding);
    tcase_add_test(tc, test_col2im_is_the_adjoint_of_im2col);
    tcase_add_test(tc, test_col2im_counts_each_input_once_per_window_covering_it);
    tcase_add_test(tc, test_pooling_kernels_match_naive_loops_over_random_geometries);
    tcase_add_test(tc, test_maxpool_kernel_gives_tied_gradient_to_first_maximum);
    tcase_add_test(tc, test_maxpool_kernel_propagates_nan_as_pytorch);
    tcase_add_test(tc, test_activation_kernels_match_libm_in_double);
    tcase_add_test(tc, test_activation_kernels_saturate_without_nan);
    tcase_add_test(tc, test_bias_helpers_cycle_through_the_bias_by_row);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
