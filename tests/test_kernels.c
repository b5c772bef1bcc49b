/* The numeric kernels (lib/kernels) against naive loops written here and against each other:
 * sgemm, im2col/col2im, the reference convolution, the sample-vectorized (lane) convolution kernels of every ISA the
 * CPU has, the convolution entry point over every strategy of every ISA, pooling, activations and the bias helpers. */
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

/* ---- sample-vectorized convolution: LENET_LANES samples across the lanes of lane tensors ---- */

static const char *const isa_names[] = {"generic", "avx2", "avx512"};

/* Fills out with the kernel tables this CPU supports, generic first, and returns how many; the default selection is
 * back in place on return. */
static int supported_kernels(const lenet_kernels *out[3])
{
    int count = 0;
    for (size_t i = 0; i < sizeof isa_names / sizeof isa_names[0]; i++) {
        if (!lenet__kernels_force(isa_names[i]))
            continue;
        out[count] = lenet__kernels();
        ck_assert_str_eq(out[count]->isa, isa_names[i]);
        count++;
    }
    ck_assert(lenet__kernels_force(NULL));
    ck_assert_msg(count >= 1 && strcmp(out[0]->isa, "generic") == 0, "the generic kernels must always be available");
    return count;
}

/* Index of the first float whose bits differ between a and b, or n when all n are identical (NaN included). */
static size_t first_difference(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            return i;
    return n;
}

/* Index of lane tensor element (plane, y, x, lane) in a tensor of (hp, wp) planes. */
static size_t lane_index(int plane, int y, int x, int lane, int hp, int wp)
{
    return (((size_t)plane * hp + y) * wp + x) * LENET_LANES + lane;
}

/* One convolution of the lane sweep: stride 1, `oc` output channels, with or without a bias. */
typedef struct lane_case {
    lenet_conv_geom g;
    int oc;
    bool bias;
} lane_case;

enum { MAX_LANE_CASES = 1000 };

/* The sweep: kernels 1..5 with padding 0..k+1, so both p <= k - 1 and wider padding; out channels 1..9 and 16;
 * output widths 1..9, 10, 14 and 28.  Each (k, p) meets every channel count, every width its padding allows and
 * both bias settings, and each (channels, width) pair meets some k, so every remainder of the kernels' channel,
 * pixel and tap tiles comes up.  Input channels (1..3) and heights vary along.  Returns the number of cases. */
static size_t lane_cases(lane_case cases[MAX_LANE_CASES])
{
    static const int channels[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16};
    static const int widths[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 28};
    const int nc = (int)(sizeof channels / sizeof channels[0]), nw = (int)(sizeof widths / sizeof widths[0]);
    size_t count = 0;
    for (int k = 1; k <= 5; k++) {
        for (int p = 0; p <= k + 1; p++) {
            for (int ci = 0; ci < nc; ci++) {
                for (int wi = 0; wi < nw; wi++) {
                    if ((ci + wi + k) % 3 != 0)
                        continue;
                    const int ow = widths[wi], w = ow - 2 * p + k - 1; /* ow = w + 2p - k + 1 */
                    if (w < 1)
                        continue; /* padding wider than the output allows */
                    int oh = 1 + (int)(count % 3), h = oh - 2 * p + k - 1;
                    if (h < 1) {
                        h = 1 + (int)(count % 3);
                        oh = h + 2 * p - k + 1;
                    }
                    ck_assert_uint_lt(count, MAX_LANE_CASES);
                    lane_case *lc = &cases[count];
                    lc->g = make_geom(1 + (int)(count % 3), h, w, k, 1, p);
                    ck_assert_int_eq(lc->g.oh, oh);
                    ck_assert_int_eq(lc->g.ow, ow);
                    lc->oc = channels[ci];
                    lc->bias = count % 2 == 0;
                    count++;
                }
            }
        }
    }
    return count;
}

#define LANE_CASE_FMT GEOM_FMT " oc=%d"
#define LANE_CASE_ARGS(lc) GEOM_ARGS((lc).g), (lc).oc

START_TEST(test_lane_transposes_match_their_references_bit_for_bit_on_every_isa)
{
    /* planes, h, w, p: LeNet's shapes, plane sizes below 16 values in all and sizes that are not multiples of 16. */
    static const int shapes[][4] = {{6, 14, 14, 0}, {6, 14, 14, 2}, {1, 28, 28, 2}, {16, 10, 10, 4}, {16, 5, 5, 0},
                                    {3, 3, 3, 0},   {3, 3, 3, 1},   {1, 2, 2, 0},   {1, 2, 2, 3},   {1, 4, 4, 0},
                                    {1, 4, 4, 1},   {2, 1, 9, 1},   {1, 1, 17, 0},  {5, 3, 1, 2}};
    static const size_t counts[] = {1, 4, 15, 16, 17, 27, 33, 100, 784, 1176};
    static const int ns[] = {1, 5, 15, 16};
    enum { GUARD = 2 * LENET_LANES }; /* NaN past the end of each output: it must survive */
    const lenet_kernels *kerns[3];
    const int nk = supported_kernels(kerns);
    lenet_rng rng;
    lenet__rng_seed(&rng, 1616);

    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int planes = shapes[si][0], h = shapes[si][1], w = shapes[si][2], p = shapes[si][3];
        const int hp = h + 2 * p, wp = w + 2 * p;
        const size_t sample = (size_t)planes * h * w, tsize = (size_t)planes * hp * wp * LENET_LANES;
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            const int n = ns[ni];
            float *x = floats((size_t)n * sample), *want = floats(tsize + GUARD), *got = floats(tsize + GUARD);
            fill_uniform(&rng, x, (size_t)n * sample, -1.0f, 1.0f);
            fill_nan(want, tsize + GUARD);
            lenet__to_lanes_ref(n, planes, h, w, p, x, want);
            /* The reference itself: sample i's pixel at its padded place in lane i; zero in the border and in the
             * lanes past n, over the garbage that was there.  (One assertion per check: Check reports each.) */
            float *expect = floats(tsize + GUARD);
            fill_nan(expect, tsize + GUARD);
            for (int c = 0; c < planes; c++)
                for (int y = 0; y < hp; y++)
                    for (int col = 0; col < wp; col++)
                        for (int i = 0; i < LENET_LANES; i++) {
                            const bool inside = i < n && y >= p && y < p + h && col >= p && col < p + w;
                            expect[lane_index(c, y, col, i, hp, wp)] =
                                inside ? x[(size_t)i * sample + ((size_t)c * h + y - p) * w + col - p] : 0.0f;
                        }
            size_t at = first_difference(want, expect, tsize + GUARD);
            ck_assert_msg(at == tsize + GUARD, "to_lanes_ref n=%d planes=%d h=%d w=%d p=%d: float %zu of %zu is %g, want %g",
                          n, planes, h, w, p, at, tsize, want[at], expect[at]);
            free(expect);

            for (int ki = 0; ki < nk; ki++) {
                fill_nan(got, tsize + GUARD);
                kerns[ki]->to_lanes(n, planes, h, w, p, x, got);
                at = first_difference(got, want, tsize + GUARD);
                ck_assert_msg(at == tsize + GUARD,
                              "%s to_lanes n=%d planes=%d h=%d w=%d p=%d: float %zu of %zu is %g, reference %g",
                              kerns[ki]->isa, n, planes, h, w, p, at, tsize, got[at], want[at]);
            }
            free(x);
            free(want);
            free(got);
        }
    }

    for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
        const size_t count = counts[ci];
        float *yt = floats(count * LENET_LANES);
        /* Every lane holds data, so copying a lane past n would show. */
        fill_uniform(&rng, yt, count * LENET_LANES, -1.0f, 1.0f);
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            const int n = ns[ni];
            const size_t size = (size_t)n * count;
            float *want = floats(size + GUARD), *got = floats(size + GUARD);
            fill_nan(want, size + GUARD);
            lenet__from_lanes_ref(n, count, yt, want);
            size_t wrong = 0;
            for (int i = 0; i < n; i++)
                for (size_t q = 0; q < count; q++)
                    wrong += want[(size_t)i * count + q] != yt[q * LENET_LANES + i];
            for (int j = 0; j < GUARD; j++)
                wrong += !isnan(want[size + j]);
            ck_assert_msg(wrong == 0, "from_lanes_ref n=%d count=%zu: %zu values wrong or written past the end", n,
                          count, wrong);
            for (int ki = 0; ki < nk; ki++) {
                fill_nan(got, size + GUARD);
                kerns[ki]->from_lanes(n, count, yt, got);
                const size_t at = first_difference(got, want, size + GUARD);
                ck_assert_msg(at == size + GUARD, "%s from_lanes n=%d count=%zu: float %zu of %zu is %g, reference %g",
                              kerns[ki]->isa, n, count, at, size, got[at], want[at]);
            }
            free(want);
            free(got);
        }
        free(yt);
    }
}
END_TEST


/* A float sum of many terms errs by a few ulps of its partial sums, which cancellation can make far larger than the
 * result: each value's tolerance is 1e-5 of it plus 1e-6 of (the sum of its terms' magnitudes + 1).  Returns the
 * largest |got - want| / tolerance over n values (infinity for NaN), with its index in *at; below 1 passes. */
static double worst_over_tolerance(const float *got, const float *want, const float *magnitude, size_t n, size_t *at)
{
    double worst = 0.0;
    *at = 0;
    for (size_t i = 0; i < n; i++) {
        const double tol = 1e-5 * fabs((double)want[i]) + 1e-6 * ((double)magnitude[i] + 1.0);
        const double r = fabs((double)got[i] - (double)want[i]) / tol;
        if (!(r <= worst)) { /* NaN included */
            worst = isnan(r) ? INFINITY : r;
            *at = i;
        }
    }
    return worst;
}

static void abs_copy(const float *x, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = fabsf(x[i]);
}

START_TEST(test_lane_convolution_matches_reference_per_sample_on_every_isa_and_tile_remainder)
{
    lane_case *cases = malloc(MAX_LANE_CASES * sizeof *cases);
    ck_assert_ptr_nonnull(cases);
    const size_t ncases = lane_cases(cases);
    const lenet_kernels *kerns[3];
    const int nk = supported_kernels(kerns);
    lenet_rng rng;
    lenet__rng_seed(&rng, 4242);
    double worst = 0.0;
    for (size_t ci = 0; ci < ncases; ci++) {
        const lane_case lc = cases[ci];
        const lenet_conv_geom *g = &lc.g;
        const int hp = g->h + 2 * g->p, wp = g->w + 2 * g->p;
        const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)lc.oc * g->oh * g->ow;
        const size_t nx = LENET_LANES * in_size, ny = LENET_LANES * out_size;
        const size_t nweight = (size_t)lc.oc * g->c * g->k * g->k, tsize = (size_t)g->c * hp * wp * LENET_LANES;
        float *x = floats(nx), *weight = floats(nweight), *bias = floats((size_t)lc.oc);
        float *xa = floats(nx), *wa = floats(nweight), *ba = floats((size_t)lc.oc);
        float *xt = floats(tsize), *yt = floats(ny), *got = floats(ny), *want = floats(ny), *magnitude = floats(ny);
        fill_uniform(&rng, x, nx, -1.0f, 1.0f);
        fill_uniform(&rng, weight, nweight, -1.0f, 1.0f);
        fill_uniform(&rng, bias, (size_t)lc.oc, -1.0f, 1.0f);
        abs_copy(x, nx, xa);
        abs_copy(weight, nweight, wa);
        abs_copy(bias, (size_t)lc.oc, ba);
        const float *b = lc.bias ? bias : NULL;
        /* Each of the 16 samples through the plain convolution; the same on absolute values sums the terms'
         * magnitudes. */
        for (int i = 0; i < LENET_LANES; i++) {
            lenet__conv2d_ref(g, lc.oc, x + i * in_size, weight, b, want + i * out_size);
            lenet__conv2d_ref(g, lc.oc, xa + i * in_size, wa, lc.bias ? ba : NULL, magnitude + i * out_size);
        }

        lenet__to_lanes_ref(LENET_LANES, g->c, g->h, g->w, g->p, x, xt);
        /* The border rows are documented as never read: NaN there would poison any output that read them.  The
         * border columns must stay zero. */
        for (int c = 0; c < g->c; c++)
            for (int y = 0; y < hp; y++)
                if (y < g->p || y >= g->p + g->h)
                    fill_nan(xt + lane_index(c, y, 0, 0, hp, wp), (size_t)wp * LENET_LANES);
        for (int ki = 0; ki < nk; ki++) {
            fill_nan(yt, ny);
            kerns[ki]->conv_forward_lanes(g, lc.oc, xt, weight, b, yt);
            lenet__from_lanes_ref(LENET_LANES, out_size, yt, got);
            size_t at;
            const double err = worst_over_tolerance(got, want, magnitude, ny, &at);
            ck_assert_msg(err < 1.0, "%s case %zu " LANE_CASE_FMT " bias=%d: sample %zu output %zu is %.9g, want %.9g",
                          kerns[ki]->isa, ci, LANE_CASE_ARGS(lc), lc.bias, at / out_size, at % out_size, got[at],
                          want[at]);
            if (err > worst)
                worst = err;
        }
        free(x);
        free(weight);
        free(bias);
        free(xa);
        free(wa);
        free(ba);
        free(xt);
        free(yt);
        free(got);
        free(want);
        free(magnitude);
    }
    free(cases);
    fprintf(stderr, "lane convolution, %zu geometries on %d ISAs: worst error %.2f of the tolerance\n", ncases, nk,
            worst);
}
END_TEST

START_TEST(test_lane_weight_gradient_matches_double_sum_and_never_reads_the_border)
{
    lane_case *cases = malloc(MAX_LANE_CASES * sizeof *cases);
    ck_assert_ptr_nonnull(cases);
    const size_t ncases = lane_cases(cases);
    const lenet_kernels *kerns[3];
    const int nk = supported_kernels(kerns);
    lenet_rng rng;
    lenet__rng_seed(&rng, 777);
    double worst = 0.0;
    for (size_t ci = 0; ci < ncases; ci++) {
        const lane_case lc = cases[ci];
        const lenet_conv_geom *g = &lc.g;
        const int k = g->k, hp = g->h + 2 * g->p, wp = g->w + 2 * g->p;
        const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)lc.oc * g->oh * g->ow;
        const size_t nweight = (size_t)lc.oc * g->c * k * k;
        float *x = floats(LENET_LANES * in_size), *dy = floats(LENET_LANES * out_size);
        float *xt = floats((size_t)g->c * hp * wp * LENET_LANES);
        float *grad0 = floats(nweight), *grad = floats(nweight), *want = floats(nweight), *magnitude = floats(nweight);
        fill_uniform(&rng, x, LENET_LANES * in_size, -1.0f, 1.0f);
        fill_uniform(&rng, dy, LENET_LANES * out_size, -1.0f, 1.0f);
        fill_uniform(&rng, grad0, nweight, -1.0f, 1.0f); /* the kernel adds to what is there */
        lenet__to_lanes_ref(LENET_LANES, g->c, g->h, g->w, g->p, x, xt);

        /* dW[o][c][ky][kx] = sum over samples and output pixels of dy[o][oy][ox] * xpadded[c][oy + ky][ox + kx]. */
        for (int o = 0; o < lc.oc; o++)
            for (int c = 0; c < g->c; c++)
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        const size_t t = (((size_t)o * g->c + c) * k + ky) * k + kx;
                        double acc = grad0[t], mag = fabs((double)grad0[t]);
                        for (int i = 0; i < LENET_LANES; i++)
                            for (int oy = 0; oy < g->oh; oy++) {
                                const int iy = oy + ky - g->p;
                                if (iy < 0 || iy >= g->h)
                                    continue;
                                for (int ox = 0; ox < g->ow; ox++) {
                                    const int ix = ox + kx - g->p;
                                    if (ix < 0 || ix >= g->w)
                                        continue;
                                    const double term =
                                        (double)dy[i * out_size + ((size_t)o * g->oh + oy) * g->ow + ox] *
                                        x[i * in_size + ((size_t)c * g->h + iy) * g->w + ix];
                                    acc += term;
                                    mag += fabs(term);
                                }
                            }
                        want[t] = (float)acc;
                        magnitude[t] = (float)mag;
                    }

        for (int border = 0; border <= 3; border += 3) {
            const int dh = g->oh + 2 * border, dw = g->ow + 2 * border;
            const size_t dsize = (size_t)lc.oc * dh * dw * LENET_LANES;
            float *dyt = floats(dsize);
            /* NaN in the border: one read of it would turn a gradient into NaN. */
            fill_nan(dyt, dsize);
            for (int i = 0; i < LENET_LANES; i++)
                for (int o = 0; o < lc.oc; o++)
                    for (int oy = 0; oy < g->oh; oy++)
                        for (int ox = 0; ox < g->ow; ox++)
                            dyt[lane_index(o, oy + border, ox + border, i, dh, dw)] =
                                dy[i * out_size + ((size_t)o * g->oh + oy) * g->ow + ox];
            for (int ki = 0; ki < nk; ki++) {
                memcpy(grad, grad0, nweight * sizeof(float));
                kerns[ki]->conv_grad_weight_lanes(g, lc.oc, xt, dyt, border, grad);
                size_t at;
                const double err = worst_over_tolerance(grad, want, magnitude, nweight, &at);
                ck_assert_msg(err < 1.0, "%s case %zu " LANE_CASE_FMT " border %d: dW[%zu] = %.9g, want %.9g",
                              kerns[ki]->isa, ci, LANE_CASE_ARGS(lc), border, at, grad[at], want[at]);
                if (err > worst)
                    worst = err;
            }
            free(dyt);
        }
        free(x);
        free(dy);
        free(xt);
        free(grad0);
        free(grad);
        free(want);
        free(magnitude);
    }
    free(cases);
    fprintf(stderr, "lane weight gradient, %zu geometries on %d ISAs: worst error %.2f of the tolerance\n", ncases, nk,
            worst);
}
END_TEST

START_TEST(test_lane_input_gradient_is_the_flipped_kernel_forward_convolution)
{
    /* The lanes' dX in lenet__conv_backward (conv_plan.c), stride 1:
     * dX[c][y][x] = sum over (o, ky, kx) of w[o][c][ky][kx] dy[o][y + p - ky][x + p - kx]
     * is the forward convolution of dy bordered by q = k - 1 - p, with wflip[c][o] = w[o][c] turned by 180 degrees,
     * over the geometry {c = oc, h = oh, w = ow, k, s = 1, p = q, oh = h, ow = w}. */
    lane_case *cases = malloc(MAX_LANE_CASES * sizeof *cases);
    ck_assert_ptr_nonnull(cases);
    const size_t ncases = lane_cases(cases);
    const lenet_kernels *kerns[3];
    const int nk = supported_kernels(kerns);
    lenet_rng rng;
    lenet__rng_seed(&rng, 31337);
    int tested = 0;
    double worst = 0.0;
    for (size_t ci = 0; ci < ncases; ci++) {
        const lane_case lc = cases[ci];
        const lenet_conv_geom *g = &lc.g;
        const int k = g->k, kk = k * k, q = k - 1 - g->p;
        if (q < 0)
            continue; /* the layer takes col2im for padding wider than k - 1 */
        /* Full chunks and partial ones: n of the LENET_LANES lanes hold samples. */
        const int n = ci % 2 ? LENET_LANES : 1 + (int)(ci / 2 % LENET_LANES);
        const int dh = g->oh + 2 * q, dw = g->ow + 2 * q;
        const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)lc.oc * g->oh * g->ow;
        const size_t nweight = (size_t)lc.oc * g->c * kk, dsize = (size_t)lc.oc * dh * dw * LENET_LANES;
        float *dy = floats(n * out_size), *weight = floats(nweight), *wflip = floats(nweight);
        float *dyt = floats(dsize), *dxt = floats(in_size * LENET_LANES);
        float *dx = floats(n * in_size), *want = floats(n * in_size), *magnitude = floats(n * in_size);
        fill_uniform(&rng, dy, n * out_size, -1.0f, 1.0f);
        fill_uniform(&rng, weight, nweight, -1.0f, 1.0f);
        for (int o = 0; o < lc.oc; o++)
            for (int c = 0; c < g->c; c++)
                for (int t = 0; t < kk; t++)
                    wflip[((size_t)c * lc.oc + o) * kk + (kk - 1 - t)] = weight[((size_t)o * g->c + c) * kk + t];

        for (int i = 0; i < n; i++)
            for (int c = 0; c < g->c; c++)
                for (int y = 0; y < g->h; y++)
                    for (int x = 0; x < g->w; x++) {
                        double acc = 0.0, mag = 0.0;
                        for (int o = 0; o < lc.oc; o++)
                            for (int ky = 0; ky < k; ky++) {
                                const int oy = y + g->p - ky;
                                if (oy < 0 || oy >= g->oh)
                                    continue;
                                for (int kx = 0; kx < k; kx++) {
                                    const int ox = x + g->p - kx;
                                    if (ox < 0 || ox >= g->ow)
                                        continue;
                                    const double term = (double)weight[(((size_t)o * g->c + c) * k + ky) * k + kx] *
                                                        dy[i * out_size + ((size_t)o * g->oh + oy) * g->ow + ox];
                                    acc += term;
                                    mag += fabs(term);
                                }
                            }
                        const size_t at = i * in_size + ((size_t)c * g->h + y) * g->w + x;
                        want[at] = (float)acc;
                        magnitude[at] = (float)mag;
                    }

        const lenet_conv_geom t = {.c = lc.oc, .h = g->oh, .w = g->ow, .k = k, .s = 1, .p = q, .oh = g->h,
                                   .ow = g->w};
        for (int ki = 0; ki < nk; ki++) {
            /* As backward_lanes: garbage in every buffer first, then to_lanes, the convolution, from_lanes. */
            fill_nan(dyt, dsize);
            fill_nan(dxt, in_size * LENET_LANES);
            fill_nan(dx, n * in_size);
            kerns[ki]->to_lanes(n, lc.oc, g->oh, g->ow, q, dy, dyt);
            kerns[ki]->conv_forward_lanes(&t, g->c, dyt, wflip, NULL, dxt);
            kerns[ki]->from_lanes(n, in_size, dxt, dx);
            size_t at;
            const double err = worst_over_tolerance(dx, want, magnitude, n * in_size, &at);
            ck_assert_msg(err < 1.0, "%s case %zu " LANE_CASE_FMT " n=%d: sample %zu dx[%zu] = %.9g, want %.9g",
                          kerns[ki]->isa, ci, LANE_CASE_ARGS(lc), n, at / in_size, at % in_size, dx[at], want[at]);
            if (err > worst)
                worst = err;
        }
        tested++;
        free(dy);
        free(weight);
        free(wflip);
        free(dyt);
        free(dxt);
        free(dx);
        free(want);
        free(magnitude);
    }
    ck_assert_int_gt(tested, 100);
    free(cases);
    fprintf(stderr, "lane input gradient, %d geometries on %d ISAs: worst error %.2f of the tolerance\n", tested, nk,
            worst);
}
END_TEST

/* ---- the convolution entry point (conv_plan.c): every strategy of every table against plain loops ---- */

/* One layer of the sweep: input (c, h, w), kernel k, stride s, padding p, oc output channels. */
typedef struct conv_case {
    int c, h, w, k, s, p, oc;
} conv_case;

static const conv_case conv_cases[] = {
    {1, 28, 28, 5, 1, 2, 6},  /* d2l's first layer: rows below the lanes' chunk on every table */
    {6, 14, 14, 5, 1, 0, 16}, /* d2l's second layer: channels below the lanes' chunk */
    {2, 9, 40, 3, 1, 0, 2},   /* two channels, rows of 38 */
    {3, 7, 6, 3, 1, 4, 20},   /* padding 4 > k - 1: dX by col2im even in the lanes; 20 channels, a partial vector */
    {2, 11, 13, 3, 2, 1, 4},  /* stride 2 */
    {3, 9, 10, 4, 2, 3, 5},   /* stride 2, padding 3 > k - 1 */
    {4, 5, 5, 1, 1, 0, 9},    /* 1x1 kernel */
    {1, 3, 3, 3, 3, 0, 7},    /* one output pixel */
};
/* Batches: single samples, a few, the lanes' threshold (12), a full chunk, and a full chunk plus one. */
static const int conv_batches[] = {1, 5, 12, 16, 17};

#define CONV_CASE_FMT "c=%d h=%d w=%d k=%d s=%d p=%d oc=%d"
#define CONV_CASE_ARGS(cc) (cc).c, (cc).h, (cc).w, (cc).k, (cc).s, (cc).p, (cc).oc

static lenet_conv_plan conv_case_plan(const conv_case *cc, lenet_conv_method method)
{
    return (lenet_conv_plan){.g = make_geom(cc->c, cc->h, cc->w, cc->k, cc->s, cc->p), .oc = cc->oc, .method = method};
}

/* The passes in double over n samples, with the sums of their terms' magnitudes: y = W * x + b, and for dy
 * dW = gw0 + sum dy * x (shifted by the tap), db = gb0 + sum dy, dX = W^T dy. */
typedef struct conv_want {
    float *y, *y_mag, *gw, *gw_mag, *gb, *gb_mag, *dx, *dx_mag;
} conv_want;

static void conv_reference(const lenet_conv_plan *cp, int n, const float *x, const float *weight, const float *bias,
                           const float *dy, const float *gw0, const float *gb0, conv_want *want)
{
    const lenet_conv_geom *g = &cp->g;
    const int k = g->k, oc = cp->oc;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)oc * g->oh * g->ow;
    const size_t nweight = (size_t)oc * g->c * k * k;
    double *gw = calloc(nweight, sizeof *gw), *gwm = calloc(nweight, sizeof *gwm);
    double *dx = calloc((size_t)n * in_size, sizeof *dx), *dxm = calloc((size_t)n * in_size, sizeof *dxm);
    ck_assert(gw && gwm && dx && dxm);
    float *xa = floats((size_t)n * in_size), *wa = floats(nweight), *ba = floats((size_t)oc);
    abs_copy(x, (size_t)n * in_size, xa);
    abs_copy(weight, nweight, wa);
    abs_copy(bias, (size_t)oc, ba);
    for (int i = 0; i < n; i++) {
        lenet__conv2d_ref(g, oc, x + i * in_size, weight, bias, want->y + i * out_size);
        lenet__conv2d_ref(g, oc, xa + i * in_size, wa, ba, want->y_mag + i * out_size);
    }
    for (int o = 0; o < oc; o++) {
        double db = gb0[o], dbm = fabs((double)gb0[o]);
        for (int i = 0; i < n; i++)
            for (int q = 0; q < g->oh * g->ow; q++) {
                db += dy[i * out_size + (size_t)o * g->oh * g->ow + q];
                dbm += fabs((double)dy[i * out_size + (size_t)o * g->oh * g->ow + q]);
            }
        want->gb[o] = (float)db;
        want->gb_mag[o] = (float)dbm;
    }
    for (size_t t = 0; t < nweight; t++) {
        gw[t] = gw0[t];
        gwm[t] = fabs((double)gw0[t]);
    }
    for (int i = 0; i < n; i++)
        for (int o = 0; o < oc; o++)
            for (int oy = 0; oy < g->oh; oy++)
                for (int ox = 0; ox < g->ow; ox++) {
                    const double d = dy[i * out_size + ((size_t)o * g->oh + oy) * g->ow + ox];
                    for (int c = 0; c < g->c; c++)
                        for (int ky = 0; ky < k; ky++) {
                            const int iy = oy * g->s - g->p + ky;
                            if (iy < 0 || iy >= g->h)
                                continue;
                            for (int kx = 0; kx < k; kx++) {
                                const int ix = ox * g->s - g->p + kx;
                                if (ix < 0 || ix >= g->w)
                                    continue;
                                const size_t t = (((size_t)o * g->c + c) * k + ky) * k + kx;
                                const size_t at = i * in_size + ((size_t)c * g->h + iy) * g->w + ix;
                                gw[t] += d * x[at];
                                gwm[t] += fabs(d * x[at]);
                                dx[at] += d * weight[t];
                                dxm[at] += fabs(d * weight[t]);
                            }
                        }
                }
    for (size_t t = 0; t < nweight; t++) {
        want->gw[t] = (float)gw[t];
        want->gw_mag[t] = (float)gwm[t];
    }
    for (size_t t = 0; t < (size_t)n * in_size; t++) {
        want->dx[t] = (float)dx[t];
        want->dx_mag[t] = (float)dxm[t];
    }
    free(gw);
    free(gwm);
    free(dx);
    free(dxm);
    free(xa);
    free(wa);
    free(ba);
}

/* A value the passes never write: workspace overruns and writes past an output show as a changed guard. */
#define GUARD_VALUE -1234.5f
enum { CONV_GUARD = 64 };

static void fill_guard(float *p)
{
    for (int i = 0; i < CONV_GUARD; i++)
        p[i] = GUARD_VALUE;
}

static bool guard_intact(const float *p)
{
    for (int i = 0; i < CONV_GUARD; i++)
        if (p[i] != GUARD_VALUE)
            return false;
    return true;
}

START_TEST(test_conv_entry_points_match_the_reference_on_every_isa_strategy_and_batch)
{
    const lenet_kernels *kerns[3];
    const int nk = supported_kernels(kerns);
    int hits[3][LENET_CONV_IM2COL + 1] = {{0}};
    double worst = 0.0;
    lenet_rng rng;
    lenet__rng_seed(&rng, 1998);
    for (size_t ci = 0; ci < sizeof conv_cases / sizeof conv_cases[0]; ci++) {
        const conv_case cc = conv_cases[ci];
        for (size_t bi = 0; bi < sizeof conv_batches / sizeof conv_batches[0]; bi++) {
            const int n = conv_batches[bi];
            const lenet_conv_plan direct = conv_case_plan(&cc, LENET_CONV_DIRECT);
            const lenet_conv_geom *g = &direct.g;
            const size_t in = (size_t)n * g->c * g->h * g->w, out = (size_t)n * cc.oc * g->oh * g->ow;
            const size_t nweight = (size_t)cc.oc * g->c * g->k * g->k;
            float *x = floats(in), *weight = floats(nweight), *bias = floats((size_t)cc.oc), *dy = floats(out);
            float *gw0 = floats(nweight), *gb0 = floats((size_t)cc.oc);
            fill_uniform(&rng, x, in, -1.0f, 1.0f);
            fill_uniform(&rng, weight, nweight, -1.0f, 1.0f);
            fill_uniform(&rng, bias, (size_t)cc.oc, -1.0f, 1.0f);
            fill_uniform(&rng, dy, out, -1.0f, 1.0f);
            fill_uniform(&rng, gw0, nweight, -1.0f, 1.0f); /* backward adds to what is there */
            fill_uniform(&rng, gb0, (size_t)cc.oc, -1.0f, 1.0f);
            conv_want want = {floats(out), floats(out), floats(nweight), floats(nweight), floats((size_t)cc.oc),
                              floats((size_t)cc.oc), floats(in), floats(in)};
            conv_reference(&direct, n, x, weight, bias, dy, gw0, gb0, &want);
            float *y = floats(out + CONV_GUARD), *dx = floats(in + CONV_GUARD);
            float *gw = floats(nweight), *gb = floats((size_t)cc.oc), *gw_nodx = floats(nweight);
            float *gb_nodx = floats((size_t)cc.oc);

            for (int ki = 0; ki < nk; ki++) {
                ck_assert(lenet__kernels_force(kerns[ki]->isa));
                for (int method = LENET_CONV_DIRECT; method <= LENET_CONV_GEMM; method++) {
                    const lenet_conv_plan cp = conv_case_plan(&cc, (lenet_conv_method)method);
                    const lenet_conv_strategy s = lenet__conv_strategy(&cp, kerns[ki], n);
                    hits[ki][s]++;
                    /* Exactly the workspace asked for, garbage in it and a guard after it. */
                    const size_t ws = lenet__conv_workspace(&cp, n);
                    float *work = floats(ws + CONV_GUARD);
                    fill_nan(work, ws);
                    fill_guard(work + ws);
                    fill_nan(y, out);
                    fill_guard(y + out);
                    lenet__conv_forward(&cp, n, x, weight, bias, y, work);

                    size_t at;
                    double err = worst_over_tolerance(y, want.y, want.y_mag, out, &at);
                    ck_assert_msg(err < 1.0, "%s strategy %d " CONV_CASE_FMT " n=%d: y[%zu] = %.9g, want %.9g",
                                  kerns[ki]->isa, s, CONV_CASE_ARGS(cc), n, at, y[at], want.y[at]);
                    worst = err > worst ? err : worst;
                    ck_assert_msg(guard_intact(y + out), "%s strategy %d " CONV_CASE_FMT " n=%d: forward wrote past y",
                                  kerns[ki]->isa, s, CONV_CASE_ARGS(cc), n);

                    memcpy(gw, gw0, nweight * sizeof(float));
                    memcpy(gb, gb0, (size_t)cc.oc * sizeof(float));
                    fill_nan(work, ws);
                    fill_nan(dx, in);
                    fill_guard(dx + in);
                    lenet__conv_backward(&cp, n, x, dy, weight, gw, gb, dx, work);
                    const struct {
                        const char *name;
                        const float *got, *want, *mag;
                        size_t count;
                    } checks[] = {{"dW", gw, want.gw, want.gw_mag, nweight},
                                  {"db", gb, want.gb, want.gb_mag, (size_t)cc.oc},
                                  {"dX", dx, want.dx, want.dx_mag, in}};
                    for (size_t t = 0; t < sizeof checks / sizeof checks[0]; t++) {
                        err = worst_over_tolerance(checks[t].got, checks[t].want, checks[t].mag, checks[t].count, &at);
                        ck_assert_msg(err < 1.0, "%s strategy %d " CONV_CASE_FMT " n=%d: %s[%zu] = %.9g, want %.9g",
                                      kerns[ki]->isa, s, CONV_CASE_ARGS(cc), n, checks[t].name, at, checks[t].got[at],
                                      checks[t].want[at]);
                        worst = err > worst ? err : worst;
                    }
                    ck_assert_msg(guard_intact(dx + in), "%s strategy %d " CONV_CASE_FMT " n=%d: backward wrote past dX",
                                  kerns[ki]->isa, s, CONV_CASE_ARGS(cc), n);

                    /* Without dX (a first layer) the parameter gradients are the same, bit for bit. */
                    memcpy(gw_nodx, gw0, nweight * sizeof(float));
                    memcpy(gb_nodx, gb0, (size_t)cc.oc * sizeof(float));
                    fill_nan(work, ws);
                    lenet__conv_backward(&cp, n, x, dy, weight, gw_nodx, gb_nodx, NULL, work);
                    ck_assert_msg(first_difference(gw_nodx, gw, nweight) == nweight &&
                                      first_difference(gb_nodx, gb, (size_t)cc.oc) == (size_t)cc.oc,
                                  "%s strategy %d " CONV_CASE_FMT " n=%d: dW or db differ without dX", kerns[ki]->isa,
                                  s, CONV_CASE_ARGS(cc), n);
                    ck_assert_msg(guard_intact(work + ws),
                                  "%s strategy %d " CONV_CASE_FMT " n=%d: the passes overran %zu floats of workspace",
                                  kerns[ki]->isa, s, CONV_CASE_ARGS(cc), n, ws);
                    free(work);
                }
            }
            ck_assert(lenet__kernels_force(NULL));
            free(x);
            free(weight);
            free(bias);
            free(dy);
            free(gw0);
            free(gb0);
            free(y);
            free(dx);
            free(gw);
            free(gb);
            free(gw_nodx);
            free(gb_nodx);
            float **wants[] = {&want.y, &want.y_mag, &want.gw, &want.gw_mag, &want.gb, &want.gb_mag, &want.dx,
                               &want.dx_mag};
            for (size_t t = 0; t < sizeof wants / sizeof wants[0]; t++)
                free(*wants[t]);
        }
    }
    /* The sweep reaches every strategy on every table. */
    for (int ki = 0; ki < nk; ki++)
        for (int s = LENET_CONV_LANES; s <= LENET_CONV_IM2COL; s++)
            ck_assert_msg(hits[ki][s] > 0, "%s: no case took strategy %d", kerns[ki]->isa, s);
    fprintf(stderr, "conv entry points, %zu layers x %zu batches on %d ISAs: worst error %.2f of the tolerance\n",
            sizeof conv_cases / sizeof conv_cases[0], sizeof conv_batches / sizeof conv_batches[0], nk, worst);
}
END_TEST

START_TEST(test_conv_workspace_never_shrinks_as_the_batch_grows)
{
    /* The engine sizes the workspace for a full chunk and runs the batch's last, shorter chunk in it too. */
    for (size_t ci = 0; ci < sizeof conv_cases / sizeof conv_cases[0]; ci++)
        for (int method = LENET_CONV_DIRECT; method <= LENET_CONV_GEMM; method++) {
            const lenet_conv_plan cp = conv_case_plan(&conv_cases[ci], (lenet_conv_method)method);
            for (int n = 2; n <= 40; n++)
                ck_assert_msg(lenet__conv_workspace(&cp, n) >= lenet__conv_workspace(&cp, n - 1),
                              CONV_CASE_FMT " method %d: workspace(%d) = %zu < workspace(%d) = %zu",
                              CONV_CASE_ARGS(conv_cases[ci]), method, n, lenet__conv_workspace(&cp, n), n - 1,
                              lenet__conv_workspace(&cp, n - 1));
        }
}
END_TEST

/* ---- small products for chunks of samples ---- */

START_TEST(test_small_gemm_matches_naive_product_on_every_isa_and_tile_remainder)
{
    /* Rows 1..17 and columns around every vector width cover each tile and the scalar tail; C starts as NaN, so
     * every element must be written, and the leading dimensions are wider than the rows. */
    const lenet_kernels *tables[3];
    const int count = supported_kernels(tables);
    static const int widths[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 84, 120, 400};
    lenet_rng rng;
    lenet__rng_seed(&rng, 23);
    for (int t = 0; t < count; t++) {
        for (int m = 1; m <= 17; m++) {
            for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
                const int n = widths[wi], k = rand_int(&rng, 1, 130);
                const int lda = k + rand_int(&rng, 0, 3), ldb = n + rand_int(&rng, 0, 3), ldc = n + rand_int(&rng, 0, 3);
                float *a = floats((size_t)m * lda), *b = floats((size_t)k * ldb), *c = floats((size_t)m * ldc);
                float *want = floats((size_t)m * ldc);
                fill_uniform(&rng, a, (size_t)m * lda, -1.0f, 1.0f);
                fill_uniform(&rng, b, (size_t)k * ldb, -1.0f, 1.0f);
                fill_nan(c, (size_t)m * ldc);
                memset(want, 0, (size_t)m * ldc * sizeof(float)); /* the naive product reads C even for beta 0 */
                naive_gemm(false, false, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, want, ldc);
                tables[t]->gemm_nn(m, n, k, a, lda, b, ldb, c, ldc);
                double worst = 0.0;
                for (int r = 0; r < m; r++)
                    for (int j = 0; j < n; j++) {
                        double got = c[(size_t)r * ldc + j], ref = want[(size_t)r * ldc + j];
                        double err = fabs(got - ref) / (1.0 + fabs(ref));
                        worst = err > worst || got != got ? (got != got ? INFINITY : err) : worst;
                    }
                ck_assert_msg(worst < 1e-5, "%s: m %d n %d k %d: worst error %g", tables[t]->isa, m, n, k, worst);
                free(a);
                free(b);
                free(c);
                free(want);
            }
        }
    }
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
    /* Every table's backward gives the plain expression's bits, the vector body and the tail alike. */
    const lenet_kernels *kerns[3];
    const int n_kerns = supported_kernels(kerns);
    for (int k = 0; k < n_kerns; k++) {
        float got[N];
        kerns[k]->sigmoid_backward(N, y, dy, got);
        for (int i = 0; i < N; i++) {
            const float want = dy[i] * y[i] * (1.0f - y[i]);
            ck_assert_msg(memcmp(&got[i], &want, sizeof want) == 0, "%s: sigmoid backward %d: %a, expected %a",
                          kerns[k]->isa, i, (double)got[i], (double)want);
        }
    }

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
    tcase_add_test(tc, test_lane_transposes_match_their_references_bit_for_bit_on_every_isa);
    tcase_add_test(tc, test_lane_convolution_matches_reference_per_sample_on_every_isa_and_tile_remainder);
    tcase_add_test(tc, test_lane_weight_gradient_matches_double_sum_and_never_reads_the_border);
    tcase_add_test(tc, test_lane_input_gradient_is_the_flipped_kernel_forward_convolution);
    tcase_add_test(tc, test_conv_entry_points_match_the_reference_on_every_isa_strategy_and_batch);
    tcase_add_test(tc, test_conv_workspace_never_shrinks_as_the_batch_grows);
    tcase_add_test(tc, test_small_gemm_matches_naive_product_on_every_isa_and_tile_remainder);
    tcase_add_test(tc, test_pooling_kernels_match_naive_loops_over_random_geometries);
    tcase_add_test(tc, test_maxpool_kernel_gives_tied_gradient_to_first_maximum);
    tcase_add_test(tc, test_maxpool_kernel_propagates_nan_as_pytorch);
    tcase_add_test(tc, test_activation_kernels_match_libm_in_double);
    tcase_add_test(tc, test_activation_kernels_saturate_without_nan);
    tcase_add_test(tc, test_bias_helpers_cycle_through_the_bias_by_row);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
