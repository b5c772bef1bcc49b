/* Every layer kind through the public API: forward against values computed by hand, backward against finite
 * differences (tests/gradcheck.h), gradient accumulation, shape inference and its errors, constructors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "kernels/kernels.h"
#include "layers/layer.h"
#include "testutil.h"

/* ---- helpers ---- */

/* A model of `count` layers, added in order (each add must succeed). */
static lenet_model *model_of(size_t count, lenet_layer *const *layers)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    for (size_t i = 0; i < count; i++)
        ck_assert_lenet_ok(lenet_model_add(m, layers[i]));
    return m;
}
#define MODEL(...) model_of(sizeof((lenet_layer *[]){__VA_ARGS__}) / sizeof(lenet_layer *), (lenet_layer *[]){__VA_ARGS__})

/* An (n, c, h, w) tensor holding `values` (n*c*h*w floats), or zeros for NULL. */
static lenet_tensor *image(int n, int c, int h, int w, const float *values)
{
    lenet_tensor *t = lenet_tensor_create(4, (int[]){n, c, h, w});
    ck_assert_ptr_nonnull(t);
    if (values)
        memcpy(lenet_tensor_data(t), values, lenet_tensor_numel(t) * sizeof(float));
    return t;
}

/* A zero tensor of the same shape as t. */
static lenet_tensor *like(const lenet_tensor *t)
{
    int shape[LENET_TENSOR_MAX_DIMS];
    for (int d = 0; d < lenet_tensor_ndim(t); d++)
        shape[d] = lenet_tensor_dim(t, d);
    lenet_tensor *u = lenet_tensor_create(lenet_tensor_ndim(t), shape);
    ck_assert_ptr_nonnull(u);
    return u;
}

static void set_param(lenet_model *m, size_t i, const float *values, size_t count)
{
    lenet_tensor *p = lenet_model_param(m, i);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(lenet_tensor_numel(p), count);
    memcpy(lenet_tensor_data(p), values, count * sizeof(float));
}

static void assert_shape(const lenet_tensor *t, int ndim, const int *dims)
{
    ck_assert_int_eq(lenet_tensor_ndim(t), ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_msg(lenet_tensor_dim(t, d) == dims[d], "dimension %d is %d, want %d", d, lenet_tensor_dim(t, d),
                      dims[d]);
}
#define ASSERT_SHAPE(t, ...) assert_shape((t), sizeof((int[]){__VA_ARGS__}) / sizeof(int), (int[]){__VA_ARGS__})

static void assert_values(const float *got, const float *want, size_t n, float tol)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= tol, "element %zu is %.9g, want %.9g", i, got[i], want[i]);
}

/* Runs a forward pass and checks the output against `want` (numel floats). */
static void assert_forward(lenet_model *m, const lenet_tensor *x, const float *want, size_t numel, float tol)
{
    const lenet_tensor *y = NULL;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ck_assert_uint_eq(lenet_tensor_numel(y), numel);
    assert_values(lenet_tensor_cdata(y), want, numel, tol);
}

static void assert_error_mentions(const char *needle)
{
    ck_assert_msg(strstr(lenet_last_error(), needle) != NULL, "message \"%s\" does not mention \"%s\"",
                  lenet_last_error(), needle);
}

static void iota(float *p, size_t n, float start)
{
    for (size_t i = 0; i < n; i++)
        p[i] = start + (float)i;
}

/* Random input in [lo, hi) of shape (n, c, h, w). */
static lenet_tensor *random_image(int n, int c, int h, int w, uint64_t seed, float lo, float hi)
{
    lenet_tensor *x = image(n, c, h, w, NULL);
    lenet_test_fill(x, seed, lo, hi);
    return x;
}

/* Every element of the input distinct and at least `gap` apart (a shuffled ramp): no ReLU/MaxPool kink lies within
 * a finite-difference step of it. */
static lenet_tensor *spread_image(int n, int c, int h, int w, uint64_t seed, float gap)
{
    lenet_tensor *x = image(n, c, h, w, NULL);
    size_t count = lenet_tensor_numel(x);
    float *p = lenet_tensor_data(x);
    for (size_t i = 0; i < count; i++)
        p[i] = gap * ((float)i - 0.5f * (float)count) + 0.5f * gap; /* never 0 */
    uint64_t s = seed * 2862933555777941757ULL + 3037000493ULL;
    for (size_t i = count - 1; i > 0; i--) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t j = (size_t)((s >> 33) % (i + 1));
        float t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    return x;
}

/* ---- forward against hand-computed values ---- */

START_TEST(test_conv2d_forward_matches_hand_computed_values)
{
    /* x = 1..16 (4x4), W = [1 2; 3 4], b = 0.5: y[i][j] = x[i][j] + 2x[i][j+1] + 3x[i+1][j] + 4x[i+1][j+1] + 0.5
     * with x[i][j] = 4i + j + 1 gives 40i + 10j + 44.5 (a flipped kernel, true convolution, would differ). */
    lenet_model *m = MODEL(lenet_conv2d(1, 2, 1, 0));
    float xv[16];
    iota(xv, 16, 1.0f);
    lenet_tensor *x = image(1, 1, 4, 4, xv);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 4, 4));
    set_param(m, 0, (const float[]){1, 2, 3, 4}, 4);
    set_param(m, 1, (const float[]){0.5f}, 1);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ASSERT_SHAPE(y, 1, 1, 3, 3);
    const float want[9] = {44.5f, 54.5f, 64.5f, 84.5f, 94.5f, 104.5f, 124.5f, 134.5f, 144.5f};
    assert_values(lenet_tensor_cdata(y), want, 9, 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_conv2d_forward_with_stride_2_and_padding_1_matches_hand_values)
{
    /* 4x4 input 1..16, 3x3 kernel 1..9, stride 2, padding 1 -> 2x2:
     * y[0][0] = 5*1 + 6*2 + 8*5 + 9*6 = 111 (only the bottom-right 2x2 of the kernel is inside),
     * y[1][1] = [6 7 8; 10 11 12; 14 15 16] . [1..9] = 573; y[0][1] = 217, y[1][0] = 363. */
    lenet_model *m = MODEL(lenet_conv2d(1, 3, 2, 1));
    float xv[16], wv[9];
    iota(xv, 16, 1.0f);
    iota(wv, 9, 1.0f);
    lenet_tensor *x = image(1, 1, 4, 4, xv);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 4, 4));
    set_param(m, 0, wv, 9);
    set_param(m, 1, (const float[]){-1.0f}, 1);
    assert_forward(m, x, (const float[]){110, 216, 362, 572}, 4, 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_conv2d_forward_on_non_square_input_keeps_rows_and_columns_apart)
{
    /* 3 rows x 5 columns, 1..15; kernel [1 0 -1; 2 0 -2; 1 0 -1], stride 2, padding 1: out 2 x 3.
     * y[0][0]: kernel rows 1-2 over input rows 0-1, columns -1..1: (2*pad + 0*1 - 2*2) + (1*pad + 0*6 - 1*7) = -11;
     * y[0][2]: columns 3..5 (5 is padding): (2*4 + 0*5 - 2*pad) + (1*9 + 0*10 - 1*pad) = 17;
     * a transposed reading (3 columns x 5 rows) would not even give this output shape. */
    lenet_model *m = MODEL(lenet_conv2d(1, 3, 2, 1));
    float xv[15];
    iota(xv, 15, 1.0f);
    lenet_tensor *x = image(1, 1, 3, 5, xv);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 3, 5));
    set_param(m, 0, (const float[]){1, 0, -1, 2, 0, -2, 1, 0, -1}, 9);
    set_param(m, 1, (const float[]){0}, 1);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ASSERT_SHAPE(y, 1, 1, 2, 3);
    assert_values(lenet_tensor_cdata(y), (const float[]){-11, -6, 17, -31, -6, 37}, 6, 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_conv2d_forward_mixes_channels_with_its_weights)
{
    /* 2 input channels, 1x1 kernel, 3 output channels: y[o] = W[o][0] x0 + W[o][1] x1 + b[o] at every pixel. */
    lenet_model *m = MODEL(lenet_conv2d(3, 1, 1, 0));
    const float xv[8] = {1, 2, 3, 4, /* channel 0 */ 10, 20, 30, 40 /* channel 1 */};
    lenet_tensor *x = image(1, 2, 2, 2, xv);
    ck_assert_lenet_ok(lenet_model_build(m, 2, 2, 2));
    ck_assert_int_eq(lenet_tensor_dim(lenet_model_param(m, 0), 0), 3);
    ck_assert_int_eq(lenet_tensor_dim(lenet_model_param(m, 0), 1), 2);
    set_param(m, 0, (const float[]){1, 0, /* o0 */ 0, 1, /* o1 */ 2, -0.5f /* o2 */}, 6);
    set_param(m, 1, (const float[]){0, 1, -1}, 3);
    const float want[12] = {1, 2, 3, 4, 11, 21, 31, 41, -4, -7, -10, -13};
    assert_forward(m, x, want, 12, 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_conv2d_forward_on_a_batch_matches_reference_per_sample)
{
    /* Each sample's output equals lenet__conv2d_ref's with the model's weights: batch 3, 3 -> 4 channels, 7x6
     * input, k 3, s 2, p 1; and batch 19 (more than one chunk of the model's driver), 17 output channels (more
     * than one vector of them), k 2, s 1, p 0. */
    const struct {
        int n, c, h, w, oc, k, s, p;
    } cases[] = {{3, 3, 7, 6, 4, 3, 2, 1}, {19, 2, 5, 5, 17, 2, 1, 0}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int n = cases[ci].n, c = cases[ci].c, h = cases[ci].h, w = cases[ci].w, oc = cases[ci].oc;
        lenet_conv_geom g = {.c = c, .h = h, .w = w, .k = cases[ci].k, .s = cases[ci].s, .p = cases[ci].p};
        g.oh = (h + 2 * g.p - g.k) / g.s + 1;
        g.ow = (w + 2 * g.p - g.k) / g.s + 1;
        lenet_model *m = MODEL(lenet_conv2d(oc, g.k, g.s, g.p));
        lenet_tensor *x = random_image(n, c, h, w, 5 + ci, -1.0f, 1.0f);
        const lenet_tensor *y;
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
        ASSERT_SHAPE(y, n, oc, g.oh, g.ow);
        size_t out = (size_t)oc * g.oh * g.ow;
        float *want = malloc(out * sizeof(float));
        ck_assert_ptr_nonnull(want);
        for (int i = 0; i < n; i++) {
            lenet__conv2d_ref(&g, oc, lenet_tensor_cdata(x) + (size_t)i * c * h * w,
                              lenet_tensor_cdata(lenet_model_param(m, 0)), lenet_tensor_cdata(lenet_model_param(m, 1)),
                              want);
            double err = lenet_test_max_rel_err(lenet_tensor_cdata(y) + (size_t)i * out, want, out, 1.0);
            ck_assert_msg(err < 1e-5, "case %zu, sample %d: error %g", ci, i, err);
        }
        free(want);
        lenet_tensor_free(x);
        lenet_model_free(m);
    }
}
END_TEST

START_TEST(test_pooling_forward_with_kernel_2_stride_2_matches_hand_values)
{
    const float xv[16] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3};
    lenet_tensor *x = image(1, 1, 4, 4, xv);
    lenet_model *avg = MODEL(lenet_avgpool2d(2, 2));
    lenet_model *max = MODEL(lenet_maxpool2d(2, 2));
    /* windows {3 1 5 9} {4 1 2 6} {5 3 9 7} {5 8 9 3} */
    assert_forward(avg, x, (const float[]){4.5f, 3.25f, 6.0f, 6.25f}, 4, 0.0f);
    assert_forward(max, x, (const float[]){9, 6, 9, 9}, 4, 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(avg);
    lenet_model_free(max);
}
END_TEST

START_TEST(test_pooling_forward_with_overlapping_kernel_3_stride_2_matches_hand_values)
{
    /* 5x5 -> 2x2, windows at rows/cols {0..2, 2..4}: row and column 2 belong to two windows. */
    const float xv[25] = {2, 7, 1, 8, 2, /**/ 8, 1, 8, 2, 8, /**/ 4, 5, 1, 0, 4, /**/ 5, 2, 3, 5, 3, /**/ 6, 0, 2, 8, 7};
    lenet_tensor *x = image(1, 1, 5, 5, xv);
    lenet_model *avg = MODEL(lenet_avgpool2d(3, 2));
    lenet_model *max = MODEL(lenet_maxpool2d(3, 2));
    /* sums: {2 7 1 8 1 8 4 5 1} = 37, {1 8 2 8 2 8 1 0 4} = 34, {4 5 1 5 2 3 6 0 2} = 28, {1 0 4 3 5 3 2 8 7} = 33 */
    assert_forward(avg, x, (const float[]){37.0f / 9, 34.0f / 9, 28.0f / 9, 33.0f / 9}, 4, 1e-6f);
    assert_forward(max, x, (const float[]){8, 8, 6, 8}, 4, 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(avg);
    lenet_model_free(max);
}
END_TEST

START_TEST(test_pooling_drops_the_last_partial_window_and_keeps_channels)
{
    /* 2 channels of 5x5 with k = 2, s = 2: floor mode gives 2x2 (row and column 4 unused); channel 1 = -channel 0,
     * so its max is minus channel 0's window minimum. */
    float xv[50];
    iota(xv, 25, 1.0f);
    for (int i = 0; i < 25; i++)
        xv[25 + i] = -xv[i];
    lenet_tensor *x = image(1, 2, 5, 5, xv);
    lenet_model *max = MODEL(lenet_maxpool2d(2, 2));
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(max, x, &y));
    ASSERT_SHAPE(y, 1, 2, 2, 2);
    assert_values(lenet_tensor_cdata(y), (const float[]){7, 9, 17, 19, -1, -3, -11, -13}, 8, 0.0f);
    lenet_model *avg = MODEL(lenet_avgpool2d(2, 2));
    assert_forward(avg, x, (const float[]){4, 6, 14, 16, -4, -6, -14, -16}, 8, 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(max);
    lenet_model_free(avg);
}
END_TEST

START_TEST(test_activations_forward_at_chosen_points_including_large_magnitudes)
{
    const float xv[8] = {-1000, -100, -2, 0, 0.5f, 2, 100, 1000};
    lenet_tensor *x = image(1, 1, 2, 4, xv);
    lenet_model *sig = MODEL(lenet_sigmoid());
    lenet_model *relu = MODEL(lenet_relu());
    lenet_model *tanh_m = MODEL(lenet_tanh());
    float want[8];
    for (int i = 0; i < 8; i++)
        want[i] = (float)(1.0 / (1.0 + exp(-(double)xv[i])));
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(sig, x, &y));
    const float *yd = lenet_tensor_cdata(y);
    assert_values(yd, want, 8, 1e-7f);
    /* sigmoid(-100) = 3.7e-44 in exact arithmetic: 0 (or a denormal), never NaN; sigmoid(100) = 1 exactly. */
    ck_assert_msg(yd[1] >= 0.0f && yd[1] < 1e-30f, "sigmoid(-100) = %g", yd[1]);
    ck_assert_msg(yd[0] >= 0.0f && yd[0] < 1e-30f, "sigmoid(-1000) = %g", yd[0]);
    ck_assert_float_eq(yd[3], 0.5f);
    ck_assert_float_eq(yd[6], 1.0f);
    ck_assert_float_eq(yd[7], 1.0f);

    assert_forward(relu, x, (const float[]){0, 0, 0, 0, 0.5f, 2, 100, 1000}, 8, 0.0f);

    for (int i = 0; i < 8; i++)
        want[i] = (float)tanh((double)xv[i]);
    assert_forward(tanh_m, x, want, 8, 1e-7f);
    ck_assert_lenet_ok(lenet_model_forward(tanh_m, x, &y));
    ck_assert_float_eq(lenet_tensor_cdata(y)[0], -1.0f);
    ck_assert_float_eq(lenet_tensor_cdata(y)[7], 1.0f);
    lenet_tensor_free(x);
    lenet_model_free(sig);
    lenet_model_free(relu);
    lenet_model_free(tanh_m);
}
END_TEST

START_TEST(test_flatten_keeps_row_major_nchw_order_per_sample)
{
    float xv[24];
    iota(xv, 24, 0.0f);
    lenet_tensor *x = image(2, 3, 2, 2, xv);
    lenet_model *m = MODEL(lenet_flatten());
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ASSERT_SHAPE(y, 2, 12);
    /* y[n][c*4 + h*2 + w] = x[n][c][h][w], which is the same memory order */
    assert_values(lenet_tensor_cdata(y), xv, 24, 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_linear_forward_is_x_times_w_transposed_plus_b)
{
    /* W = [1 2 3; 4 5 6], b = [0.5, -1];  x0 = [1 0 -1] -> [-1.5, -3];  x1 = [2 1 0] -> [4.5, 12]. */
    lenet_model *m = MODEL(lenet_flatten(), lenet_linear(2));
    lenet_tensor *x = image(2, 3, 1, 1, (const float[]){1, 0, -1, 2, 1, 0});
    ck_assert_lenet_ok(lenet_model_build(m, 3, 1, 1));
    ck_assert_uint_eq(lenet_model_param_count(m), 2);
    ck_assert_str_eq(lenet_model_param_name(m, 0), "1.weight");
    ck_assert_str_eq(lenet_model_param_name(m, 1), "1.bias");
    ASSERT_SHAPE(lenet_model_param(m, 0), 2, 3);
    set_param(m, 0, (const float[]){1, 2, 3, 4, 5, 6}, 6);
    set_param(m, 1, (const float[]){0.5f, -1.0f}, 2);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ASSERT_SHAPE(y, 2, 2);
    assert_values(lenet_tensor_cdata(y), (const float[]){-1.5f, -3.0f, 4.5f, 12.0f}, 4, 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* ---- backward by hand where finite differences cannot reach (ties, exact zeros) ---- */

/* dx of a model at x for the output gradient dy (values, numel of the output). */
static lenet_tensor *input_grad(lenet_model *m, const lenet_tensor *x, const float *dy_values)
{
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *dy = like(y), *dx = like(x);
    memcpy(lenet_tensor_data(dy), dy_values, lenet_tensor_numel(dy) * sizeof(float));
    ck_assert_lenet_ok(lenet_test_input_grad(m, x, dy, dx));
    lenet_tensor_free(dy);
    return dx;
}

START_TEST(test_maxpool_backward_sends_a_tie_to_the_first_maximum)
{
    lenet_model *m = MODEL(lenet_maxpool2d(2, 2));
    /* all equal: the top-left wins */
    lenet_tensor *x = image(1, 1, 2, 2, (const float[]){7, 7, 7, 7});
    lenet_tensor *dx = input_grad(m, x, (const float[]){1});
    assert_values(lenet_tensor_cdata(dx), (const float[]){1, 0, 0, 0}, 4, 0.0f);
    lenet_tensor_free(dx);
    lenet_tensor_free(x);
    /* [[1, 3], [3, 2]]: (0,1) comes before (1,0) in row-major order */
    x = image(1, 1, 2, 2, (const float[]){1, 3, 3, 2});
    dx = input_grad(m, x, (const float[]){2.5f});
    assert_values(lenet_tensor_cdata(dx), (const float[]){0, 2.5f, 0, 0}, 4, 0.0f);
    lenet_tensor_free(dx);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_overlapping_maxpool_backward_adds_the_windows_sharing_a_maximum)
{
    lenet_model *m = MODEL(lenet_maxpool2d(3, 2));
    /* The 9 at the centre (2,2) is the maximum of all four 3x3 windows: it gets the sum of their gradients. */
    float xv[25];
    iota(xv, 25, -30.0f);
    xv[12] = 9.0f;
    lenet_tensor *x = image(1, 1, 5, 5, xv);
    lenet_tensor *dx = input_grad(m, x, (const float[]){1, 2, 3, 4});
    for (int i = 0; i < 25; i++)
        ck_assert_float_eq(lenet_tensor_cdata(dx)[i], i == 12 ? 10.0f : 0.0f);
    lenet_tensor_free(dx);
    lenet_tensor_free(x);
    /* The earlier example: ties at (1,0)/(1,2) and (0,3)/(1,2)/(1,4) go to (1,0) and (0,3); (1,2) gets nothing. */
    const float yv[25] = {2, 7, 1, 8, 2, /**/ 8, 1, 8, 2, 8, /**/ 4, 5, 1, 0, 4, /**/ 5, 2, 3, 5, 3, /**/ 6, 0, 2, 8, 7};
    x = image(1, 1, 5, 5, yv);
    dx = input_grad(m, x, (const float[]){1, 2, 3, 4});
    float want[25] = {0};
    want[1 * 5 + 0] = 1;
    want[0 * 5 + 3] = 2;
    want[4 * 5 + 0] = 3;
    want[4 * 5 + 3] = 4;
    assert_values(lenet_tensor_cdata(dx), want, 25, 0.0f);
    lenet_tensor_free(dx);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_avgpool_backward_spreads_each_gradient_over_its_window)
{
    lenet_model *m = MODEL(lenet_avgpool2d(3, 2));
    lenet_tensor *x = random_image(1, 1, 5, 5, 3, -1.0f, 1.0f);
    lenet_tensor *dx = input_grad(m, x, (const float[]){9, 9, 9, 9});
    /* With dy = 9 everywhere, dx = number of windows covering the position: rows/cols 0,1,3,4 one, 2 two. */
    const int cover[5] = {1, 1, 2, 1, 1};
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 5; c++)
            ck_assert_float_eq_tol(lenet_tensor_cdata(dx)[r * 5 + c], (float)(cover[r] * cover[c]), 1e-6f);
    lenet_tensor_free(dx);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_activation_backward_at_chosen_points)
{
    const float xv[6] = {-100, -1, 0, 0.5f, 3, 100};
    const float dyv[6] = {2, 2, 2, 2, 2, 2};
    lenet_tensor *x = image(1, 1, 1, 6, xv);
    lenet_model *sig = MODEL(lenet_sigmoid()), *relu = MODEL(lenet_relu()), *tanh_m = MODEL(lenet_tanh());
    float want[6];

    lenet_tensor *dx = input_grad(sig, x, dyv);
    for (int i = 0; i < 6; i++) {
        double s = 1.0 / (1.0 + exp(-(double)xv[i]));
        want[i] = (float)(2.0 * s * (1.0 - s));
    }
    assert_values(lenet_tensor_cdata(dx), want, 6, 1e-7f);
    ck_assert_float_eq(lenet_tensor_cdata(dx)[2], 0.5f); /* 2 * 0.25 */
    ck_assert(!isnan(lenet_tensor_cdata(dx)[0]) && !isnan(lenet_tensor_cdata(dx)[5]));
    lenet_tensor_free(dx);

    /* ReLU: the gradient at exactly 0 is 0, as PyTorch's */
    dx = input_grad(relu, x, dyv);
    assert_values(lenet_tensor_cdata(dx), (const float[]){0, 0, 0, 2, 2, 2}, 6, 0.0f);
    lenet_tensor_free(dx);

    dx = input_grad(tanh_m, x, dyv);
    for (int i = 0; i < 6; i++) {
        double t = tanh((double)xv[i]);
        want[i] = (float)(2.0 * (1.0 - t * t));
    }
    assert_values(lenet_tensor_cdata(dx), want, 6, 1e-6f);
    ck_assert_float_eq(lenet_tensor_cdata(dx)[2], 2.0f);
    lenet_tensor_free(dx);

    lenet_tensor_free(x);
    lenet_model_free(sig);
    lenet_model_free(relu);
    lenet_model_free(tanh_m);
}
END_TEST

START_TEST(test_linear_backward_matches_hand_values)
{
    /* y = x W^T + b with W = [1 2 3; 4 5 6]; dy = [[1, -1], [2, 0]] for x0 = [1 0 -1], x1 = [2 1 0]:
     * dW = dy^T x = [[1*1 + 2*2, 0 + 2*1, -1 + 0], [-1*1 + 0, 0, 1 + 0]] = [[5, 2, -1], [-1, 0, 1]],
     * db = column sums of dy = [3, -1], dx = dy W = [[-3, -3, -3], [2, 4, 6]]. */
    lenet_model *m = MODEL(lenet_flatten(), lenet_linear(2));
    lenet_tensor *x = image(2, 3, 1, 1, (const float[]){1, 0, -1, 2, 1, 0});
    ck_assert_lenet_ok(lenet_model_build(m, 3, 1, 1));
    set_param(m, 0, (const float[]){1, 2, 3, 4, 5, 6}, 6);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *dy = like(y);
    memcpy(lenet_tensor_data(dy), (const float[]){1, -1, 2, 0}, 4 * sizeof(float));
    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    assert_values(lenet_tensor_cdata(lenet_model_grad(m, 0)), (const float[]){5, 2, -1, -1, 0, 1}, 6, 0.0f);
    assert_values(lenet_tensor_cdata(lenet_model_grad(m, 1)), (const float[]){3, -1}, 2, 0.0f);
    lenet_tensor *dx = like(x);
    ck_assert_lenet_ok(lenet_test_input_grad(m, x, dy, dx));
    assert_values(lenet_tensor_cdata(dx), (const float[]){-3, -3, -3, 2, 4, 6}, 6, 0.0f);
    lenet_tensor_free(dx);
    lenet_tensor_free(dy);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* ---- backward against finite differences ---- */

typedef struct conv_case {
    int n, c, h, w, out_channels, k, s, p;
} conv_case;

static const conv_case conv_cases[] = {
    {1, 1, 4, 4, 1, 2, 1, 0}, /* the plainest */
    {1, 1, 5, 5, 2, 3, 2, 1}, /* stride and padding */
    {2, 3, 6, 5, 2, 3, 2, 1}, /* multi-channel, batch, non-square */
    {2, 2, 7, 7, 3, 5, 1, 2}, /* LeNet's kernel with same padding */
    {3, 2, 6, 6, 2, 2, 2, 0}, /* non-overlapping */
    {1, 2, 7, 5, 2, 2, 3, 1}, /* stride larger than the kernel: some inputs are never read */
    {2, 1, 3, 3, 2, 3, 1, 2}, /* padding 2 with k 3: border outputs see only padding and the bias */
    {2, 2, 5, 5, 17, 3, 1, 1}, /* more output channels than one vector */
};

START_TEST(test_conv2d_backward_matches_finite_differences)
{
    const conv_case *cc = &conv_cases[_i];
    lenet_model *m = MODEL(lenet_conv2d(cc->out_channels, cc->k, cc->s, cc->p));
    lenet_tensor *x = random_image(cc->n, cc->c, cc->h, cc->w, 100 + (uint64_t)_i, -1.0f, 1.0f);
    ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.seed = (uint64_t)_i});
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_stacked_convolutions_backward_matches_finite_differences)
{
    /* The first conv's gradients flow through the second conv's dx (col2im) and a tanh, inside the model. */
    const conv_case *cc = &conv_cases[_i];
    lenet_model *m = MODEL(lenet_conv2d(cc->out_channels, cc->k, cc->s, cc->p), lenet_tanh(), lenet_conv2d(2, 2, 1, 1),
                           lenet_sigmoid());
    lenet_tensor *x = random_image(cc->n, cc->c, cc->h, cc->w, 200 + (uint64_t)_i, -1.0f, 1.0f);
    ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.seed = 7 + (uint64_t)_i});
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_pooling_backward_matches_finite_differences)
{
    /* On the input directly, with well separated values, so no maximum changes within a step. */
    lenet_layer *(*make[2])(int, int) = {lenet_avgpool2d, lenet_maxpool2d};
    const int geometry[3][2] = {{2, 2}, {3, 2}, {2, 1}}; /* (k, s): plain, overlapping, stride 1 */
    for (int kind = 0; kind < 2; kind++) {
        for (int gi = 0; gi < 3; gi++) {
            lenet_model *m = MODEL(make[kind](geometry[gi][0], geometry[gi][1]));
            lenet_tensor *x = spread_image(2, 2, 5, 6, 10 + (uint64_t)gi, 0.05f);
            ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.seed = (uint64_t)gi});
            lenet_tensor_free(x);
            lenet_model_free(m);
        }
    }
}
END_TEST

START_TEST(test_pooling_after_conv_backward_matches_finite_differences)
{
    /* Pooling inside the model: its dx becomes the conv's dy.  Max pooling over conv outputs may meet near-ties
     * within a step (a conv weight moves every output): a small step, and the few kinks left are skipped. */
    lenet_layer *(*make[2])(int, int) = {lenet_avgpool2d, lenet_maxpool2d};
    for (int kind = 0; kind < 2; kind++) {
        for (int overlap = 0; overlap < 2; overlap++) {
            lenet_model *m = MODEL(lenet_conv2d(3, 3, 1, 1), make[kind](overlap ? 3 : 2, 2), lenet_flatten(),
                                   lenet_linear(3));
            lenet_tensor *x = random_image(2, 2, 6, 6, 300 + (uint64_t)overlap, -1.0f, 1.0f);
            lenet_gradcheck_report r;
            lenet_gradcheck_opts opts = {.eps = kind ? 1e-3 : 1e-2, .kinks = kind == 1};
            ck_assert_lenet_ok(lenet_test_gradcheck(m, x, &opts, &r));
            ck_assert_msg(r.passed, "%s k=%d: worst %.3g at %s (analytic %g, numeric %g)", kind ? "max" : "avg",
                          overlap ? 3 : 2, r.worst, r.where, r.analytic, r.numeric);
            ck_assert_msg(r.skipped * 20 <= r.checked, "%zu of %zu skipped", r.skipped, r.checked + r.skipped);
            lenet_tensor_free(x);
            lenet_model_free(m);
        }
    }
}
END_TEST

START_TEST(test_activations_backward_match_finite_differences)
{
    lenet_layer *(*make[3])(void) = {lenet_sigmoid, lenet_relu, lenet_tanh};
    for (int kind = 0; kind < 3; kind++) {
        /* Alone, on inputs at least 0.05 from ReLU's kink, ... */
        lenet_model *m = MODEL(make[kind]());
        lenet_tensor *x = spread_image(2, 1, 4, 5, 20 + (uint64_t)kind, 0.05f);
        ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.seed = 3});
        lenet_model_free(m);
        lenet_tensor_free(x);
        /* ... and between two layers with parameters (ReLU: a small step, and the few kinks left are skipped). */
        m = MODEL(lenet_conv2d(2, 3, 1, 0), make[kind](), lenet_flatten(), lenet_linear(4), make[kind]());
        x = random_image(2, 2, 5, 5, 30 + (uint64_t)kind, -1.0f, 1.0f);
        lenet_gradcheck_report r;
        bool relu = make[kind] == lenet_relu;
        lenet_gradcheck_opts opts = {.seed = 4, .eps = relu ? 1e-3 : 1e-2, .kinks = relu};
        ck_assert_lenet_ok(lenet_test_gradcheck(m, x, &opts, &r));
        ck_assert_msg(r.passed, "kind %d: worst %.3g at %s (analytic %g, numeric %g)", kind, r.worst, r.where,
                      r.analytic, r.numeric);
        ck_assert_msg(r.skipped * 20 <= r.checked, "%zu of %zu skipped", r.skipped, r.checked + r.skipped);
        lenet_model_free(m);
        lenet_tensor_free(x);
    }
}
END_TEST

START_TEST(test_linear_stack_backward_matches_finite_differences)
{
    lenet_model *m = MODEL(lenet_flatten(), lenet_linear(7), lenet_sigmoid(), lenet_linear(5), lenet_tanh(),
                           lenet_linear(3));
    lenet_tensor *x = random_image(3, 2, 3, 4, 40, -2.0f, 2.0f);
    ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.seed = 5});
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_d2l_lenet_backward_matches_finite_differences_for_every_parameter)
{
    /* A sample of each of the ten parameter tensors and of the input, batch 2, xavier weights as in d2l. */
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 1));
    lenet_tensor *x = random_image(2, 1, 28, 28, 50, 0.0f, 1.0f);
    lenet_gradcheck_report r;
    ck_assert_lenet_ok(lenet_test_gradcheck(m, x, &(lenet_gradcheck_opts){.seed = 6, .max_per_tensor = 12}, &r));
    ck_assert_msg(r.passed, "worst %.3g at %s (analytic %g, numeric %g)", r.worst, r.where, r.analytic, r.numeric);
    /* 12 of the input and of each tensor, except the biases of 6 (0.bias) and 10 (11.bias) elements: all of them */
    ck_assert_uint_eq(r.checked, 12 + 5 * 12 + 6 + 12 + 12 + 12 + 10);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* A layer y = w x with one parameter w, whose backward can be made wrong on purpose, to show that the checker
 * fails when a gradient is wrong (a checker that cannot fail would prove nothing). */
typedef struct scale_layer {
    lenet_layer base;
    int bug; /* 0 correct, 1 halves dL/dw, 2 halves dL/dx */
} scale_layer;

static lenet_status scale_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    (void)l;
    *out = *in;
    return LENET_OK;
}

static lenet_status scale_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    (void)l;
    specs[0] = (lenet_param_spec){.suffix = "weight", .ndim = 1, .shape = {1}, .trainable = true};
    *count = 1;
    return LENET_OK;
}

static void scale_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    (void)scheme;
    (void)rng;
    l->param[0][0] = 1.5f;
}

static void scale_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    for (size_t i = 0; i < (size_t)p->n * l->in_size; i++)
        y[i] = l->param[0][0] * p->x[i];
}

static void scale_backward(const lenet_layer *l, const lenet_pass *p)
{
    int bug = ((const scale_layer *)l)->bug;
    float dw = 0.0f;
    for (size_t i = 0; i < (size_t)p->n * l->in_size; i++) {
        dw += p->dy[i] * p->x[i];
        if (p->dx)
            p->dx[i] = p->dy[i] * l->param[0][0] * (bug == 2 ? 0.5f : 1.0f);
    }
    p->grads[0][0] += bug == 1 ? 0.5f * dw : dw;
}

static const lenet_layer_ops scale_ops = {
    .name = "Scale",
    .infer_shape = scale_infer_shape,
    .setup = scale_setup,
    .init = scale_init,
    .forward = scale_forward,
    .backward = scale_backward,
};

static lenet_layer *scale_layer_with_bug(int bug)
{
    scale_layer *l = lenet__layer_alloc(sizeof *l, &scale_ops, 0, NULL);
    ck_assert_ptr_nonnull(l);
    l->bug = bug;
    return &l->base;
}

START_TEST(test_gradcheck_fails_on_a_wrong_gradient_and_names_it)
{
    lenet_tensor *x = random_image(2, 1, 3, 3, 60, -1.0f, 1.0f);
    const char *where[3] = {NULL, "0.weight[0]", "input["};
    for (int bug = 0; bug < 3; bug++) {
        /* the Scale layer first, then a conv and a sigmoid, so its gradients come through the model */
        lenet_model *m = MODEL(scale_layer_with_bug(bug), lenet_conv2d(2, 2, 1, 0), lenet_sigmoid());
        lenet_gradcheck_report r;
        ck_assert_lenet_ok(lenet_test_gradcheck(m, x, NULL, &r));
        ck_assert_uint_eq(r.checked, 18 + 1 + 8 + 2);
        if (bug == 0) {
            ck_assert_msg(r.passed, "worst %.3g at %s", r.worst, r.where);
            ck_assert_msg(r.worst < 1e-3, "worst %g at %s", r.worst, r.where);
        } else {
            ck_assert_msg(!r.passed, "bug %d not caught (worst %g)", bug, r.worst);
            ck_assert_msg(strncmp(r.where, where[bug], strlen(where[bug])) == 0, "bug %d found at %s", bug,
                          r.where);
            /* halving gives analytic = numeric / 2: an error of 1/2 */
            ck_assert_double_eq_tol(r.worst, 0.5, 0.01);
        }
        lenet_model_free(m);
    }
    /* At a kink the derivative does not exist: ReLU at exactly 0 (analytic 0, numeric half the slope) fails the
     * check, unless kink_tol skips those elements, which are then counted. */
    lenet_tensor *kinks = image(1, 1, 2, 4, (const float[]){0, 0.5f, -0.5f, 0, 1, -1, 0.25f, 0});
    lenet_model *relu = MODEL(lenet_relu());
    lenet_gradcheck_report k;
    ck_assert_lenet_ok(lenet_test_gradcheck(relu, kinks, NULL, &k));
    ck_assert(!k.passed);
    ck_assert_double_eq_tol(k.worst, 1.0, 1e-6);
    ck_assert_lenet_ok(lenet_test_gradcheck(relu, kinks, &(lenet_gradcheck_opts){.kinks = true}, &k));
    ck_assert_msg(k.passed, "worst %g at %s", k.worst, k.where);
    ck_assert_uint_eq(k.skipped, 3);
    ck_assert_uint_eq(k.checked, 5);
    lenet_model_free(relu);
    lenet_tensor_free(kinks);
    /* A tolerance below float32's reach fails too, and still names an element. */
    lenet_model *m = MODEL(lenet_conv2d(2, 3, 1, 1), lenet_sigmoid());
    lenet_gradcheck_report r;
    ck_assert_lenet_ok(lenet_test_gradcheck(m, x, &(lenet_gradcheck_opts){.tol = 1e-12}, &r));
    ck_assert(!r.passed);
    ck_assert(r.where[0] != '\0');
    lenet_model_free(m);
    lenet_tensor_free(x);
}
END_TEST

/* ---- gradient accumulation ---- */

static float *copy_grads(lenet_model *m)
{
    size_t total = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        total += lenet_tensor_numel(lenet_model_grad(m, i));
    float *all = malloc(total * sizeof(float)), *p = all;
    ck_assert_ptr_nonnull(all);
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        size_t n = lenet_tensor_numel(lenet_model_grad(m, i));
        memcpy(p, lenet_tensor_cdata(lenet_model_grad(m, i)), n * sizeof(float));
        p += n;
    }
    return all;
}

static size_t grads_numel(lenet_model *m)
{
    size_t total = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        total += lenet_tensor_numel(lenet_model_grad(m, i));
    return total;
}

/* forward(x) then backward(dy) where dy is filled from seed. */
static void forward_backward(lenet_model *m, const lenet_tensor *x, uint64_t seed)
{
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *dy = like(y);
    lenet_test_fill(dy, seed, -1.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    lenet_tensor_free(dy);
}

START_TEST(test_backward_accumulates_until_zero_grad)
{
    lenet_model *m = MODEL(lenet_conv2d(3, 3, 2, 1), lenet_relu(), lenet_maxpool2d(2, 2), lenet_flatten(),
                           lenet_linear(4));
    lenet_tensor *x = random_image(2, 2, 8, 8, 70, -1.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_build(m, 2, 8, 8));
    size_t n = grads_numel(m);
    float *fresh = copy_grads(m);
    for (size_t i = 0; i < n; i++) /* build leaves the gradients zero */
        ck_assert_float_eq(fresh[i], 0.0f);
    free(fresh);
    forward_backward(m, x, 1);
    float *once = copy_grads(m);
    forward_backward(m, x, 1); /* the same pass again adds the same amount */
    float *twice = copy_grads(m);
    double nonzero = 0.0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(fabsf(twice[i] - 2.0f * once[i]) <= 1e-5f * (1.0f + fabsf(once[i])),
                      "gradient %zu: once %g, twice %g", i, once[i], twice[i]);
        nonzero += fabsf(once[i]);
    }
    ck_assert_msg(nonzero > 0.0, "all gradients are zero");
    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    float *zero = copy_grads(m);
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq(zero[i], 0.0f);
    free(once);
    free(twice);
    free(zero);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* The loss sums over the batch, so the gradient of a batch is the sum of its samples' gradients, whether it comes
 * from one backward or from one accumulated backward per sample (batches of different sizes).  19 samples: more
 * than one chunk of the model's parallel driver, and a ragged last chunk; the full chunk takes the per-lane
 * convolution kernels, single samples the per-sample ones. */
static void check_batch_equals_sum_of_samples(lenet_model *m, int channels, int side)
{
    enum { N = 19, OUT = 3 };
    const size_t plane = (size_t)channels * side * side;
    lenet_tensor *batch_x = random_image(N, channels, side, side, 80, -1.0f, 1.0f);
    lenet_tensor *batch_dy = lenet_tensor_create(2, (int[]){N, OUT});
    lenet_test_fill(batch_dy, 81, -1.0f, 1.0f);
    const lenet_tensor *y;

    ck_assert_lenet_ok(lenet_model_forward(m, batch_x, &y));
    ASSERT_SHAPE(y, N, OUT);
    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    ck_assert_lenet_ok(lenet_model_backward(m, batch_dy));
    float *batch = copy_grads(m);

    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    for (int i = 0; i < N; i++) {
        lenet_tensor *x = image(1, channels, side, side, lenet_tensor_cdata(batch_x) + (size_t)i * plane);
        lenet_tensor *dy = lenet_tensor_create(2, (int[]){1, OUT});
        memcpy(lenet_tensor_data(dy), lenet_tensor_cdata(batch_dy) + (size_t)i * OUT, OUT * sizeof(float));
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
        ck_assert_lenet_ok(lenet_model_backward(m, dy));
        lenet_tensor_free(x);
        lenet_tensor_free(dy);
    }
    float *summed = copy_grads(m);

    size_t n = grads_numel(m);
    double err = lenet_test_max_rel_err(summed, batch, n, 1e-3);
    ck_assert_msg(err < 1e-4, "worst relative difference %g", err);
    free(batch);
    free(summed);
    lenet_tensor_free(batch_x);
    lenet_tensor_free(batch_dy);
    lenet_model_free(m);
}

START_TEST(test_backward_of_a_batch_equals_the_sum_of_its_samples)
{
    check_batch_equals_sum_of_samples(MODEL(lenet_conv2d(2, 3, 1, 1), lenet_sigmoid(), lenet_avgpool2d(2, 2),
                                            lenet_conv2d(3, 2, 1, 0), lenet_tanh(), lenet_maxpool2d(2, 1),
                                            lenet_flatten(), lenet_linear(3)),
                                      1, 6);
}
END_TEST

START_TEST(test_backward_of_a_batch_equals_the_sum_of_its_samples_for_wide_padding_and_strides)
{
    /* Padding wider than k - 1 (the per-lane input gradient does not apply: the GEMM path takes it), a stride of 2
     * (per-sample kernels only) and enough channels for several register tiles. */
    check_batch_equals_sum_of_samples(MODEL(lenet_conv2d(4, 3, 1, 1), lenet_tanh(), lenet_conv2d(5, 2, 1, 2),
                                            lenet_sigmoid(), lenet_conv2d(9, 3, 2, 1), lenet_flatten(),
                                            lenet_linear(3)),
                                      2, 7);
}
END_TEST

/* The vtable contract itself: a layer's backward adds into p->grads (the model may hand it the same buffers
 * more than once), and writes p->dx rather than adding to it. */
START_TEST(test_layer_backward_adds_into_parameter_gradients_and_overwrites_dx)
{
    lenet_model *models[] = {
        MODEL(lenet_conv2d(3, 3, 1, 1)),
        MODEL(lenet_conv2d(17, 2, 2, 0)), /* more output channels than one vector */
        MODEL(lenet_flatten(), lenet_linear(5)),
    };
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        lenet_model *m = models[mi];
        const int n = 3;
        lenet_tensor *x = random_image(n, 2, 5, 5, 90 + mi, -1.0f, 1.0f);
        const lenet_tensor *y;
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
        size_t last = lenet_model_layer_count(m) - 1;
        const lenet_layer *l = lenet_model_layer(m, last);
        const float *in = lenet_tensor_cdata(x); /* the input of the last layer: Flatten copies */
        float *dy = malloc(lenet_tensor_numel(y) * sizeof(float));
        float *dx = malloc((size_t)n * l->in_size * sizeof(float));
        size_t work = l->ops->workspace ? l->ops->workspace(l, n) : 0;
        float *scratch = malloc((work ? work : 1) * sizeof(float));
        float *grads[LENET_MAX_LAYER_PARAMS] = {0}, *once[LENET_MAX_LAYER_PARAMS] = {0};
        float *dx_once = malloc((size_t)n * l->in_size * sizeof(float));
        ck_assert(dy && dx && scratch && dx_once);
        for (size_t i = 0; i < lenet_tensor_numel(y); i++)
            dy[i] = (float)((int)(i % 7) - 3) * 0.25f;
        ck_assert_int_eq(l->n_params, 2);
        for (int j = 0; j < l->n_params; j++) {
            grads[j] = calloc(l->param_numel[j], sizeof(float));
            once[j] = malloc(l->param_numel[j] * sizeof(float));
            ck_assert(grads[j] && once[j]);
        }
        lenet_pass p = {.n = n, .x = in, .y = lenet_tensor_cdata(y), .dy = dy, .dx = dx, .grads = grads,
                        .work = scratch};
        l->ops->backward(l, &p);
        for (int j = 0; j < l->n_params; j++)
            memcpy(once[j], grads[j], l->param_numel[j] * sizeof(float));
        memcpy(dx_once, dx, (size_t)n * l->in_size * sizeof(float));
        l->ops->backward(l, &p);
        for (int j = 0; j < l->n_params; j++) {
            double nonzero = 0.0;
            for (size_t i = 0; i < l->param_numel[j]; i++) {
                ck_assert_msg(fabsf(grads[j][i] - 2.0f * once[j][i]) <= 1e-5f * (1.0f + fabsf(once[j][i])),
                              "model %zu, parameter %d[%zu]: once %g, twice %g", mi, j, i, once[j][i], grads[j][i]);
                nonzero += fabsf(once[j][i]);
            }
            ck_assert_msg(nonzero > 0.0, "model %zu, parameter %d: zero gradient", mi, j);
        }
        assert_values(dx, dx_once, (size_t)n * l->in_size, 0.0f);
        for (int j = 0; j < l->n_params; j++) {
            free(grads[j]);
            free(once[j]);
        }
        free(dy);
        free(dx);
        free(dx_once);
        free(scratch);
        lenet_tensor_free(x);
        lenet_model_free(m);
    }
}
END_TEST

/* ---- shape inference ---- */

/* The summary text of m for a (1, c, h, w) input. */
static char *summary_text(lenet_model *m, int c, int h, int w, lenet_status *st)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    *st = lenet_model_summary(m, 1, c, h, w, f);
    long size = ftell(f);
    ck_assert_int_ge(size, 0);
    char *text = calloc((size_t)size + 1, 1);
    ck_assert_ptr_nonnull(text);
    rewind(f);
    ck_assert_uint_eq(fread(text, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    return text;
}

START_TEST(test_d2l_lenet_shapes_for_28x28_input)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_status st;
    char *text = summary_text(m, 1, 28, 28, &st);
    ck_assert_lenet_ok(st);
    ck_assert_str_eq(text, "Conv2d output shape: \t torch.Size([1, 6, 28, 28])\n"
                           "Sigmoid output shape: \t torch.Size([1, 6, 28, 28])\n"
                           "AvgPool2d output shape: \t torch.Size([1, 6, 14, 14])\n"
                           "Conv2d output shape: \t torch.Size([1, 16, 10, 10])\n"
                           "Sigmoid output shape: \t torch.Size([1, 16, 10, 10])\n"
                           "AvgPool2d output shape: \t torch.Size([1, 16, 5, 5])\n"
                           "Flatten output shape: \t torch.Size([1, 400])\n"
                           "Linear output shape: \t torch.Size([1, 120])\n"
                           "Sigmoid output shape: \t torch.Size([1, 120])\n"
                           "Linear output shape: \t torch.Size([1, 84])\n"
                           "Sigmoid output shape: \t torch.Size([1, 84])\n"
                           "Linear output shape: \t torch.Size([1, 10])\n");
    free(text);
    /* The parameters have PyTorch's shapes and names. */
    ck_assert_uint_eq(lenet_model_param_count(m), 10);
    ASSERT_SHAPE(lenet_model_param(m, 0), 6, 1, 5, 5);
    ASSERT_SHAPE(lenet_model_param(m, 2), 16, 6, 5, 5);
    ASSERT_SHAPE(lenet_model_param(m, 4), 120, 400);
    ASSERT_SHAPE(lenet_model_param(m, 6), 84, 120);
    ASSERT_SHAPE(lenet_model_param(m, 8), 10, 84);
    ASSERT_SHAPE(lenet_model_param(m, 9), 10);
    ck_assert_str_eq(lenet_model_param_name(m, 2), "3.weight");
    ck_assert_str_eq(lenet_model_param_name(m, 5), "7.bias");
    ck_assert_uint_eq(lenet_model_param_numel(m), 61706);
    /* and a batch goes through */
    lenet_tensor *x = random_image(3, 1, 28, 28, 1, 0.0f, 1.0f);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ASSERT_SHAPE(y, 3, 10);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_lenet5_shapes_for_32x32_input)
{
    /* LeCun 1998 without padding: 32 -> C1 28 -> S2 14 -> C3 10 -> S4 5 -> C5 1x1x120 -> F6 84 -> 10. */
    lenet_model *m = MODEL(lenet_conv2d(6, 5, 1, 0), lenet_tanh(), lenet_avgpool2d(2, 2), lenet_conv2d(16, 5, 1, 0),
                           lenet_tanh(), lenet_avgpool2d(2, 2), lenet_conv2d(120, 5, 1, 0), lenet_tanh(), lenet_flatten(),
                           lenet_linear(84), lenet_tanh(), lenet_linear(10));
    lenet_status st;
    char *text = summary_text(m, 1, 32, 32, &st);
    ck_assert_lenet_ok(st);
    ck_assert_str_eq(text, "Conv2d output shape: \t torch.Size([1, 6, 28, 28])\n"
                           "Tanh output shape: \t torch.Size([1, 6, 28, 28])\n"
                           "AvgPool2d output shape: \t torch.Size([1, 6, 14, 14])\n"
                           "Conv2d output shape: \t torch.Size([1, 16, 10, 10])\n"
                           "Tanh output shape: \t torch.Size([1, 16, 10, 10])\n"
                           "AvgPool2d output shape: \t torch.Size([1, 16, 5, 5])\n"
                           "Conv2d output shape: \t torch.Size([1, 120, 1, 1])\n"
                           "Tanh output shape: \t torch.Size([1, 120, 1, 1])\n"
                           "Flatten output shape: \t torch.Size([1, 120])\n"
                           "Linear output shape: \t torch.Size([1, 84])\n"
                           "Tanh output shape: \t torch.Size([1, 84])\n"
                           "Linear output shape: \t torch.Size([1, 10])\n");
    free(text);
    ASSERT_SHAPE(lenet_model_param(m, 4), 120, 16, 5, 5);
    ASSERT_SHAPE(lenet_model_param(m, 6), 84, 120);
    lenet_model_free(m);

    /* The d2l network on 32x32: padding 2 keeps 32, so Flatten gives 16 * 6 * 6 = 576 features. */
    m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 32, 32));
    ASSERT_SHAPE(lenet_model_param(m, 4), 120, 576);
    lenet_tensor *x = random_image(1, 1, 32, 32, 2, 0.0f, 1.0f);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ASSERT_SHAPE(y, 1, 10);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_build_fails_when_a_kernel_is_larger_than_its_input)
{
    lenet_model *m = MODEL(lenet_conv2d(2, 5, 1, 0));
    ck_assert_int_eq(lenet_model_build(m, 1, 4, 4), LENET_ESHAPE);
    assert_error_mentions("layer 0");
    assert_error_mentions("Conv2d");
    assert_error_mentions("5x5");
    assert_error_mentions("4x4");
    ck_assert(!lenet_model_is_built(m));
    ck_assert_uint_eq(lenet_model_param_count(m), 0);
    /* The model stays unbuilt and usable: a large enough input builds it. */
    ck_assert_lenet_ok(lenet_model_build(m, 1, 5, 5));
    ck_assert_uint_eq(lenet_model_param_count(m), 2);
    lenet_model_free(m);

    /* Padding counts: 3x3 padded by 1 fits a 5x5 kernel (one output), 2x2 padded by 1 does not. */
    m = MODEL(lenet_conv2d(1, 5, 1, 1));
    ck_assert_int_eq(lenet_model_build(m, 1, 2, 2), LENET_ESHAPE);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 3, 3));
    lenet_model_free(m);

    /* One side too small is enough, either one. */
    lenet_layer *(*make_pool[2])(int, int) = {lenet_avgpool2d, lenet_maxpool2d};
    for (int side = 0; side < 2; side++) {
        int h = side ? 2 : 5, w = side ? 5 : 2;
        m = MODEL(lenet_conv2d(1, 3, 1, 0));
        ck_assert_int_eq(lenet_model_build(m, 1, h, w), LENET_ESHAPE);
        lenet_model_free(m);
        for (int kind = 0; kind < 2; kind++) {
            m = MODEL(make_pool[kind](3, 1));
            ck_assert_msg(lenet_model_build(m, 1, h, w) == LENET_ESHAPE, "%s accepted %dx%d", kind ? "max" : "avg",
                          h, w);
            lenet_model_free(m);
        }
    }

    /* Pooling: a 3x3 window over the 2x2 output of a conv, named with its index. */
    m = MODEL(lenet_conv2d(2, 3, 1, 0), lenet_maxpool2d(3, 1));
    ck_assert_int_eq(lenet_model_build(m, 1, 4, 4), LENET_ESHAPE);
    assert_error_mentions("layer 1");
    assert_error_mentions("MaxPool2d");
    assert_error_mentions("3x3");
    assert_error_mentions("2x2");
    lenet_model_free(m);

    m = MODEL(lenet_avgpool2d(4, 4));
    ck_assert_int_eq(lenet_model_build(m, 3, 3, 5), LENET_ESHAPE);
    assert_error_mentions("AvgPool2d");
    assert_error_mentions("4x4");
    assert_error_mentions("3x5");
    lenet_model_free(m);
}
END_TEST

START_TEST(test_linear_without_flatten_is_a_shape_error)
{
    lenet_model *m = MODEL(lenet_conv2d(2, 3, 1, 0), lenet_linear(10));
    ck_assert_int_eq(lenet_model_build(m, 1, 5, 5), LENET_ESHAPE);
    assert_error_mentions("layer 1");
    assert_error_mentions("Linear");
    assert_error_mentions("[2, 3, 3]");
    assert_error_mentions("flatten");
    ck_assert(!lenet_model_is_built(m));
    lenet_model_free(m);
    /* A Linear first, straight on the image, too. */
    m = MODEL(lenet_linear(3));
    lenet_tensor *x = image(1, 1, 2, 2, NULL);
    const lenet_tensor *y;
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    assert_error_mentions("Linear");
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_input_with_other_channel_count_than_the_built_model_is_a_shape_error)
{
    lenet_model *m = MODEL(lenet_conv2d(4, 3, 1, 1), lenet_relu());
    ck_assert_lenet_ok(lenet_model_build(m, 3, 8, 8));
    lenet_tensor *x = image(1, 1, 8, 8, NULL);
    const lenet_tensor *y;
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    assert_error_mentions("1 channels");
    assert_error_mentions("3");
    lenet_tensor_free(x);
    /* Summarising the built model for one channel asks the Conv2d, which names itself and both counts;
     * nothing is printed. */
    lenet_status st;
    char *text = summary_text(m, 1, 8, 8, &st);
    ck_assert_int_eq(st, LENET_ESHAPE);
    ck_assert_str_eq(text, "");
    assert_error_mentions("layer 0");
    assert_error_mentions("Conv2d");
    assert_error_mentions("1 channels");
    assert_error_mentions("expect 3");
    free(text);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_input_of_the_wrong_size_is_a_shape_error)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    lenet_tensor *x = image(2, 1, 32, 32, NULL);
    const lenet_tensor *y;
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    assert_error_mentions("32x32");
    assert_error_mentions("28x28");
    lenet_tensor_free(x);
    /* Not an image at all */
    x = lenet_tensor_create(2, (int[]){1, 784});
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    lenet_tensor_free(x);
    /* The layers themselves: 32x32 reaches the first Linear with 576 features where its weights take 400. */
    lenet_status st;
    char *text = summary_text(m, 1, 32, 32, &st);
    ck_assert_int_eq(st, LENET_ESHAPE);
    ck_assert_str_eq(text, "");
    assert_error_mentions("layer 7");
    assert_error_mentions("Linear");
    assert_error_mentions("576");
    assert_error_mentions("400");
    free(text);
    /* The failures changed nothing: a right-sized input still runs. */
    x = image(1, 1, 28, 28, NULL);
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ASSERT_SHAPE(y, 1, 10);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_backward_checks_its_gradient_and_needs_a_forward)
{
    lenet_model *m = MODEL(lenet_conv2d(2, 3, 1, 0));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 5, 5));
    lenet_tensor *dy = image(1, 2, 3, 3, NULL);
    ck_assert_int_eq(lenet_model_backward(m, dy), LENET_ESTATE);
    lenet_tensor *x = image(1, 1, 5, 5, NULL);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *wrong = image(1, 2, 3, 4, NULL);
    ck_assert_int_eq(lenet_model_backward(m, wrong), LENET_ESHAPE);
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    ck_assert_int_eq(lenet_model_backward(m, NULL), LENET_EINVAL);
    lenet_tensor_free(wrong);
    lenet_tensor_free(dy);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* ---- constructors, names, ownership ---- */

START_TEST(test_constructors_reject_non_positive_arguments_with_a_message)
{
    struct {
        lenet_layer *layer;
        const char *name;
    } bad[] = {
        {lenet_conv2d(0, 5, 1, 0), "Conv2d"},  {lenet_conv2d(6, 0, 1, 0), "Conv2d"},
        {lenet_conv2d(6, 5, 0, 0), "Conv2d"},  {lenet_conv2d(6, 5, 1, -1), "Conv2d"},
        {lenet_conv2d(-6, 5, 1, 0), "Conv2d"}, {lenet_conv2d(6, -5, 1, 2), "Conv2d"},
        {lenet_conv2d(6, 5, -2, 0), "Conv2d"}, {lenet_avgpool2d(0, 2), "AvgPool2d"},
        {lenet_avgpool2d(2, 0), "AvgPool2d"},  {lenet_avgpool2d(-2, 2), "AvgPool2d"},
        {lenet_maxpool2d(0, 1), "MaxPool2d"},  {lenet_maxpool2d(3, -1), "MaxPool2d"},
        {lenet_linear(0), "Linear"},           {lenet_linear(-10), "Linear"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(bad[i].layer == NULL, "case %zu (%s) was accepted", i, bad[i].name);
    /* each message names the layer kind and the offending value */
    lenet_error_clear();
    ck_assert_ptr_null(lenet_conv2d(6, 5, 1, -3));
    assert_error_mentions("Conv2d");
    assert_error_mentions("-3");
    ck_assert_ptr_null(lenet_avgpool2d(2, -7));
    assert_error_mentions("AvgPool2d");
    assert_error_mentions("-7");
    ck_assert_ptr_null(lenet_maxpool2d(0, 2));
    assert_error_mentions("MaxPool2d");
    ck_assert_ptr_null(lenet_linear(-4));
    assert_error_mentions("Linear");
    assert_error_mentions("-4");
    /* padding 0 and stride/kernel 1 are fine */
    lenet_layer *ok = lenet_conv2d(1, 1, 1, 0);
    ck_assert_ptr_nonnull(ok);
    lenet_layer_free(ok);
}
END_TEST

/* The README's first program with the first add unchecked and failing: the model must not run without it. */
START_TEST(test_a_failed_add_is_sticky_until_the_model_is_freed)
{
    lenet_model *m = lenet_model_create();
    lenet_model_add(m, lenet_conv2d(0, 5, 1, 0));
    /* Later adds take their layer, free it and report the first failure. */
    ck_assert_int_eq(lenet_model_add(m, lenet_sigmoid()), LENET_EINVAL);
    assert_error_mentions("out_channels 0");
    ck_assert_int_eq(lenet_model_add(m, lenet_flatten()), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_add(m, lenet_linear(10)), LENET_EINVAL);
    ck_assert_uint_eq(lenet_model_layer_count(m), 0);
    lenet_error_clear();
    ck_assert_int_eq(lenet_model_build(m, 1, 28, 28), LENET_EINVAL);
    assert_error_mentions("could not be added");
    assert_error_mentions("out_channels 0");
    ck_assert(!lenet_model_is_built(m));
    FILE *out = tmpfile();
    ck_assert_int_eq(lenet_model_summary(m, 1, 1, 28, 28, out), LENET_EINVAL);
    ck_assert_int_eq(ftell(out), 0);
    fclose(out);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){2, 1, 28, 28}), *y = lenet_tensor_create(2, (int[]){2, 10});
    const lenet_tensor *out_y = NULL;
    ck_assert_int_eq(lenet_model_forward(m, x, &out_y), LENET_EINVAL);
    ck_assert_ptr_null(out_y);
    ck_assert_int_eq(lenet_model_predict(m, x, y), LENET_EINVAL);
    assert_error_mentions("model_predict");
    ck_assert_int_eq(lenet_model_classify(m, x, NULL, NULL), LENET_EINVAL);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_model_free(m);

    /* An add refused after build sticks too: the caller meant a bigger network than the one that would run. */
    m = MODEL(lenet_flatten());
    ck_assert_lenet_ok(lenet_model_build(m, 1, 2, 2));
    ck_assert_int_eq(lenet_model_add(m, lenet_linear(3)), LENET_ESTATE);
    ck_assert_int_eq(lenet_model_build(m, 1, 2, 2), LENET_ESTATE);
    assert_error_mentions("after the model is built");
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_add_of_a_failed_constructor_returns_its_status)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(lenet_model_add(m, lenet_conv2d(6, 0, 1, 0)), LENET_EINVAL);
    assert_error_mentions("Conv2d"); /* the constructor's message is kept */
    ck_assert_uint_eq(lenet_model_layer_count(m), 0);
    lenet_model_free(m);
    /* After another kind of failure, a constructor's failure still reports EINVAL, not the older status. */
    m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(1, 9, 1, 0)));
    ck_assert_int_eq(lenet_model_build(m, 1, 4, 4), LENET_ESHAPE);
    ck_assert_int_eq(lenet_model_add(m, lenet_maxpool2d(2, 0)), LENET_EINVAL);
    assert_error_mentions("MaxPool2d");
    lenet_model_free(m);
    /* A plain NULL with no failed constructor before it is still an invalid argument. */
    m = MODEL(lenet_flatten());
    lenet_error_clear();
    ck_assert_int_eq(lenet_model_add(m, NULL), LENET_EINVAL);
    ck_assert_uint_eq(lenet_model_layer_count(m), 1);
    /* Adding after build is refused and the layer freed (the leak checkers watch this). */
    lenet_model_free(m);
    m = MODEL(lenet_flatten());
    ck_assert_lenet_ok(lenet_model_build(m, 1, 2, 2));
    ck_assert_int_eq(lenet_model_add(m, lenet_linear(3)), LENET_ESTATE);
    ck_assert_uint_eq(lenet_model_layer_count(m), 1);
    lenet_model_free(m);
    /* and into no model at all */
    ck_assert_int_eq(lenet_model_add(NULL, lenet_relu()), LENET_EINVAL);
}
END_TEST

START_TEST(test_layer_names_are_pytorch_class_names)
{
    struct {
        lenet_layer *layer;
        const char *name;
    } all[] = {
        {lenet_conv2d(6, 5, 1, 2), "Conv2d"}, {lenet_avgpool2d(2, 2), "AvgPool2d"},
        {lenet_maxpool2d(2, 2), "MaxPool2d"}, {lenet_sigmoid(), "Sigmoid"},
        {lenet_relu(), "ReLU"},               {lenet_tanh(), "Tanh"},
        {lenet_flatten(), "Flatten"},         {lenet_linear(10), "Linear"},
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        ck_assert_ptr_nonnull(all[i].layer);
        ck_assert_str_eq(lenet_layer_name(all[i].layer), all[i].name);
        lenet_layer_free(all[i].layer); /* never added: the caller frees it */
    }
    ck_assert_str_eq(lenet_layer_name(NULL), "");
    lenet_layer_free(NULL);
    /* and a model reports the same names for its layers */
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, 0)), "Conv2d");
    ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, 6)), "Flatten");
    ck_assert_ptr_null(lenet_model_layer(m, 12));
    lenet_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("layers");

    TCase *forward = tcase_create("forward");
    tcase_add_test(forward, test_conv2d_forward_matches_hand_computed_values);
    tcase_add_test(forward, test_conv2d_forward_with_stride_2_and_padding_1_matches_hand_values);
    tcase_add_test(forward, test_conv2d_forward_on_non_square_input_keeps_rows_and_columns_apart);
    tcase_add_test(forward, test_conv2d_forward_mixes_channels_with_its_weights);
    tcase_add_test(forward, test_conv2d_forward_on_a_batch_matches_reference_per_sample);
    tcase_add_test(forward, test_pooling_forward_with_kernel_2_stride_2_matches_hand_values);
    tcase_add_test(forward, test_pooling_forward_with_overlapping_kernel_3_stride_2_matches_hand_values);
    tcase_add_test(forward, test_pooling_drops_the_last_partial_window_and_keeps_channels);
    tcase_add_test(forward, test_activations_forward_at_chosen_points_including_large_magnitudes);
    tcase_add_test(forward, test_flatten_keeps_row_major_nchw_order_per_sample);
    tcase_add_test(forward, test_linear_forward_is_x_times_w_transposed_plus_b);
    suite_add_tcase(s, forward);

    TCase *backward = tcase_create("backward");
    tcase_add_test(backward, test_maxpool_backward_sends_a_tie_to_the_first_maximum);
    tcase_add_test(backward, test_overlapping_maxpool_backward_adds_the_windows_sharing_a_maximum);
    tcase_add_test(backward, test_avgpool_backward_spreads_each_gradient_over_its_window);
    tcase_add_test(backward, test_activation_backward_at_chosen_points);
    tcase_add_test(backward, test_linear_backward_matches_hand_values);
    int n_conv = (int)(sizeof conv_cases / sizeof conv_cases[0]);
    tcase_add_loop_test(backward, test_conv2d_backward_matches_finite_differences, 0, n_conv);
    tcase_add_loop_test(backward, test_stacked_convolutions_backward_matches_finite_differences, 0, n_conv);
    tcase_add_test(backward, test_pooling_backward_matches_finite_differences);
    tcase_add_test(backward, test_pooling_after_conv_backward_matches_finite_differences);
    tcase_add_test(backward, test_activations_backward_match_finite_differences);
    tcase_add_test(backward, test_linear_stack_backward_matches_finite_differences);
    tcase_add_test(backward, test_d2l_lenet_backward_matches_finite_differences_for_every_parameter);
    tcase_add_test(backward, test_gradcheck_fails_on_a_wrong_gradient_and_names_it);
    tcase_add_test(backward, test_backward_accumulates_until_zero_grad);
    tcase_add_test(backward, test_backward_of_a_batch_equals_the_sum_of_its_samples);
    tcase_add_test(backward, test_backward_of_a_batch_equals_the_sum_of_its_samples_for_wide_padding_and_strides);
    tcase_add_test(backward, test_layer_backward_adds_into_parameter_gradients_and_overwrites_dx);
    suite_add_tcase(s, backward);

    TCase *shapes = tcase_create("shapes");
    tcase_add_test(shapes, test_d2l_lenet_shapes_for_28x28_input);
    tcase_add_test(shapes, test_lenet5_shapes_for_32x32_input);
    tcase_add_test(shapes, test_build_fails_when_a_kernel_is_larger_than_its_input);
    tcase_add_test(shapes, test_linear_without_flatten_is_a_shape_error);
    tcase_add_test(shapes, test_input_with_other_channel_count_than_the_built_model_is_a_shape_error);
    tcase_add_test(shapes, test_input_of_the_wrong_size_is_a_shape_error);
    tcase_add_test(shapes, test_backward_checks_its_gradient_and_needs_a_forward);
    suite_add_tcase(s, shapes);

    TCase *api = tcase_create("constructors");
    tcase_add_test(api, test_constructors_reject_non_positive_arguments_with_a_message);
    tcase_add_test(api, test_model_add_of_a_failed_constructor_returns_its_status);
    tcase_add_test(api, test_a_failed_add_is_sticky_until_the_model_is_freed);
    tcase_add_test(api, test_layer_names_are_pytorch_class_names);
    suite_add_tcase(s, api);
    return lenet_test_run(s);
}
