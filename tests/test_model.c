/* The sequential model through its public API: ownership, build and shape inference, parameters, summary,
 * initialisation, forward/backward/zero_grad, predict and classify. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- helpers ---- */

/* Runs lenet_model_summary into memory and returns what it printed (free it), with the status in *st. */
static char *summary_text(lenet_model *m, int batch, int channels, int height, int width, lenet_status *st)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    ck_assert_ptr_nonnull(out);
    *st = lenet_model_summary(m, batch, channels, height, width, out);
    ck_assert_int_eq(fclose(out), 0);
    ck_assert_ptr_nonnull(buf);
    return buf;
}

/* Runs lenet_model_print into memory and returns the text (free it). */
static char *print_text(const lenet_model *m, lenet_status *st)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    ck_assert_ptr_nonnull(out);
    *st = lenet_model_print(m, out);
    ck_assert_int_eq(fclose(out), 0);
    ck_assert_ptr_nonnull(buf);
    return buf;
}

/* True if the decimal integer v appears in s as a whole number (not part of a longer one). */
static bool has_int(const char *s, long v)
{
    for (const char *p = s; *p;) {
        if (isdigit((unsigned char)*p)) {
            char *end;
            long x = strtol(p, &end, 10);
            if (x == v)
                return true;
            p = end;
        } else {
            p++;
        }
    }
    return false;
}

static lenet_tensor *make_tensor4(int n, int c, int h, int w, uint64_t seed)
{
    lenet_tensor *t = lenet_tensor_create(4, (int[]){n, c, h, w});
    ck_assert_ptr_nonnull(t);
    lenet_test_fill(t, seed, -1.0f, 1.0f);
    return t;
}

static lenet_tensor *make_tensor2(int n, int k, uint64_t seed)
{
    lenet_tensor *t = lenet_tensor_create(2, (int[]){n, k});
    ck_assert_ptr_nonnull(t);
    lenet_test_fill(t, seed, -1.0f, 1.0f);
    return t;
}

/* Copies all parameters (grads = false) or gradients (grads = true) into one new array. */
static float *snapshot(lenet_model *m, bool grads)
{
    size_t total = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        total += lenet_tensor_numel(lenet_model_param(m, i));
    float *copy = malloc((total ? total : 1) * sizeof *copy);
    ck_assert_ptr_nonnull(copy);
    size_t at = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        const lenet_tensor *t = grads ? lenet_model_grad(m, i) : lenet_model_param(m, i);
        memcpy(copy + at, lenet_tensor_cdata(t), lenet_tensor_numel(t) * sizeof(float));
        at += lenet_tensor_numel(t);
    }
    return copy;
}

static bool same_as_snapshot(lenet_model *m, bool grads, const float *copy)
{
    size_t at = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        const lenet_tensor *t = grads ? lenet_model_grad(m, i) : lenet_model_param(m, i);
        if (memcmp(copy + at, lenet_tensor_cdata(t), lenet_tensor_numel(t) * sizeof(float)) != 0)
            return false;
        at += lenet_tensor_numel(t);
    }
    return true;
}

/* Number of gradient values that are not zero (asserting per value would be slow: Check records each pass). */
static size_t nonzero_grads(lenet_model *m)
{
    size_t count = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        for (size_t j = 0; j < lenet_tensor_numel(lenet_model_grad(m, i)); j++)
            count += lenet_tensor_cdata(lenet_model_grad(m, i))[j] != 0.0f;
    return count;
}

static void assert_shape(const lenet_tensor *t, int ndim, const int *shape, const char *what)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_msg(lenet_tensor_ndim(t) == ndim, "%s: ndim %d, expected %d", what, lenet_tensor_ndim(t), ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_msg(lenet_tensor_dim(t, d) == shape[d], "%s: dim %d is %d, expected %d", what, d,
                      lenet_tensor_dim(t, d), shape[d]);
}

/* conv(8,3,1,1) relu conv(8,3,2,1) tanh maxpool(3,2) conv(16,3,1,0) relu avgpool(2,1) flatten linear(32) tanh
 * linear(5): 12 layers with every layer kind and strides, parameters at layers 0, 2, 5, 9, 11. */
static lenet_model *deeper_model(void)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(8, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(8, 3, 2, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_maxpool2d(3, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(16, 3, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(32)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(5)));
    return m;
}

/* conv(6,3,1,1) relu maxpool(2,2) flatten linear(10) */
static lenet_model *maxpool_model(void)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(6, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_maxpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(10)));
    return m;
}

/* A small network with parameters in four layers, for finite differences. */
static lenet_model *small_model(void)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(2, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(3, 2, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(4)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(3)));
    return m;
}

/* ---- create, free, add ---- */

START_TEST(test_model_create_is_empty_and_free_accepts_null)
{
    lenet_model_free(NULL);
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(lenet_model_layer_count(m), 0);
    ck_assert(!lenet_model_is_built(m));
    ck_assert_uint_eq(lenet_model_param_count(m), 0);
    ck_assert_uint_eq(lenet_model_param_numel(m), 0);
    ck_assert_ptr_null(lenet_model_param(m, 0));
    ck_assert_ptr_null(lenet_model_grad(m, 0));
    ck_assert_ptr_null(lenet_model_param_name(m, 0));
    ck_assert_ptr_null(lenet_model_layer(m, 0));
    lenet_model_free(m);

    ck_assert_uint_eq(lenet_model_layer_count(NULL), 0);
    ck_assert_ptr_null(lenet_model_layer(NULL, 0));
    ck_assert(!lenet_model_is_built(NULL));
    ck_assert_uint_eq(lenet_model_param_count(NULL), 0);
    ck_assert_uint_eq(lenet_model_param_numel(NULL), 0);
    ck_assert_ptr_null(lenet_model_param(NULL, 0));
    ck_assert_ptr_null(lenet_model_grad(NULL, 0));
    ck_assert_ptr_null(lenet_model_param_name(NULL, 0));
}
END_TEST

START_TEST(test_model_layers_are_listed_in_order_with_pytorch_names)
{
    lenet_model *m = lenet_test_d2l_model();
    static const char *names[] = {"Conv2d", "Sigmoid", "AvgPool2d", "Conv2d", "Sigmoid", "AvgPool2d",
                                  "Flatten", "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"};
    ck_assert_uint_eq(lenet_model_layer_count(m), 12);
    for (size_t i = 0; i < 12; i++) {
        ck_assert_ptr_nonnull(lenet_model_layer(m, i));
        ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, i)), names[i]);
    }
    ck_assert_ptr_null(lenet_model_layer(m, 12));
    ck_assert_ptr_null(lenet_model_layer(m, (size_t)-1));
    lenet_model_free(m);

    m = maxpool_model();
    ck_assert_uint_eq(lenet_model_layer_count(m), 5);
    ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, 1)), "ReLU");
    ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, 2)), "MaxPool2d");
    lenet_model_free(m);
    m = deeper_model();
    ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, 3)), "Tanh");
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_add_after_build_fails_with_estate_and_frees_the_layer)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    /* The layer has its own allocation to leak if add kept neither it nor freed it (ASan/valgrind check). */
    ck_assert_int_eq(lenet_model_add(m, lenet_linear(10)), LENET_ESTATE);
    ck_assert_str_ne(lenet_last_error(), "");
    ck_assert_int_eq(lenet_model_add(m, lenet_conv2d(3, 3, 1, 1)), LENET_ESTATE);
    ck_assert_uint_eq(lenet_model_layer_count(m), 12);
    ck_assert_uint_eq(lenet_model_param_count(m), 10);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_add_null_layer_reports_the_constructor_error)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    lenet_error_clear();
    ck_assert_int_eq(lenet_model_add(m, lenet_conv2d(0, 5, 1, 0)), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "Conv2d") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_model_add(m, lenet_linear(-3)), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "Linear") != NULL, "message: %s", lenet_last_error());
    ck_assert_uint_eq(lenet_model_layer_count(m), 0);

    /* A plain NULL without a previous failure is still an error. */
    lenet_error_clear();
    ck_assert_int_eq(lenet_model_add(m, NULL), LENET_EINVAL);
    ck_assert_str_ne(lenet_last_error(), "");
    ck_assert_uint_eq(lenet_model_layer_count(m), 0);

    /* A NULL model still takes (and frees) the layer. */
    ck_assert_int_eq(lenet_model_add(NULL, lenet_linear(4)), LENET_EINVAL);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_add_grows_past_many_layers)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    for (int i = 0; i < 40; i++)
        ck_assert_lenet_ok(lenet_model_add(m, i % 2 ? lenet_relu() : lenet_tanh()));
    ck_assert_uint_eq(lenet_model_layer_count(m), 40);
    ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, 39)), "ReLU");
    ck_assert_lenet_ok(lenet_model_build(m, 1, 2, 2));
    ck_assert_uint_eq(lenet_model_param_count(m), 0);
    lenet_tensor *x = make_tensor4(1, 1, 2, 2, 1);
    const lenet_tensor *y = NULL;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    for (int i = 0; i < 4; i++) {
        float v = lenet_tensor_cdata(x)[i];
        for (int k = 0; k < 20; k++)
            v = fmaxf(tanhf(v), 0.0f);
        ck_assert_float_eq_tol(lenet_tensor_cdata(y)[i], v, 1e-6f);
    }
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* ---- build ---- */

START_TEST(test_model_build_infers_d2l_parameter_names_and_shapes)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert(lenet_model_is_built(m));
    static const char *names[] = {"0.weight", "0.bias", "3.weight", "3.bias", "7.weight",
                                  "7.bias",   "9.weight", "9.bias", "11.weight", "11.bias"};
    static const int shapes[10][5] = {
        {4, 6, 1, 5, 5}, {1, 6}, {4, 16, 6, 5, 5}, {1, 16}, {2, 120, 400},
        {1, 120},        {2, 84, 120}, {1, 84}, {2, 10, 84}, {1, 10},
    };
    ck_assert_uint_eq(lenet_model_param_count(m), 10);
    size_t total = 0;
    for (size_t i = 0; i < 10; i++) {
        ck_assert_str_eq(lenet_model_param_name(m, i), names[i]);
        assert_shape(lenet_model_param(m, i), shapes[i][0], shapes[i] + 1, names[i]);
        assert_shape(lenet_model_grad(m, i), shapes[i][0], shapes[i] + 1, names[i]);
        ck_assert_ptr_ne(lenet_tensor_cdata(lenet_model_param(m, i)), lenet_tensor_cdata(lenet_model_grad(m, i)));
        total += lenet_tensor_numel(lenet_model_param(m, i));
    }
    ck_assert_uint_eq(nonzero_grads(m), 0); /* freshly built */
    ck_assert_uint_eq(total, 61706);
    ck_assert_uint_eq(lenet_model_param_numel(m), 61706);
    ck_assert_ptr_null(lenet_model_param(m, 10));
    ck_assert_ptr_null(lenet_model_grad(m, 10));
    ck_assert_ptr_null(lenet_model_param_name(m, 10));
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_build_names_parameters_by_layer_index)
{
    lenet_model *m = deeper_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    static const char *names[] = {"0.weight", "0.bias", "2.weight", "2.bias", "5.weight",
                                  "5.bias",   "9.weight", "9.bias", "11.weight", "11.bias"};
    static const int shapes[10][5] = {
        {4, 8, 1, 3, 3}, {1, 8}, {4, 8, 8, 3, 3}, {1, 8}, {4, 16, 8, 3, 3},
        {1, 16},         {2, 32, 144}, {1, 32}, {2, 5, 32}, {1, 5},
    };
    ck_assert_uint_eq(lenet_model_param_count(m), 10);
    for (size_t i = 0; i < 10; i++) {
        ck_assert_str_eq(lenet_model_param_name(m, i), names[i]);
        assert_shape(lenet_model_param(m, i), shapes[i][0], shapes[i] + 1, names[i]);
    }
    ck_assert_uint_eq(lenet_model_param_numel(m), 80 + 584 + 1168 + 4640 + 165);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_build_twice_same_shape_ok_other_shape_estate)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    float *before = snapshot(m, false);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_msg(same_as_snapshot(m, false, before), "building again changed the weights");
    ck_assert_int_eq(lenet_model_build(m, 1, 32, 32), LENET_ESTATE);
    ck_assert(has_int(lenet_last_error(), 32) && has_int(lenet_last_error(), 28));
    ck_assert_int_eq(lenet_model_build(m, 3, 28, 28), LENET_ESTATE);
    ck_assert(lenet_model_is_built(m));
    ck_assert_uint_eq(lenet_model_param_count(m), 10);
    ck_assert_msg(same_as_snapshot(m, false, before), "a failed build changed the weights");
    free(before);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_build_rejects_bad_arguments)
{
    lenet_model *empty = lenet_model_create();
    ck_assert_ptr_nonnull(empty);
    ck_assert_int_eq(lenet_model_build(empty, 1, 28, 28), LENET_EINVAL);
    ck_assert_str_ne(lenet_last_error(), "");
    ck_assert(!lenet_model_is_built(empty));
    lenet_model_free(empty);

    ck_assert_int_eq(lenet_model_build(NULL, 1, 28, 28), LENET_EINVAL);
    lenet_model *m = lenet_test_d2l_model();
    int bad[][3] = {{0, 28, 28}, {1, 0, 28}, {1, 28, 0}, {-1, 28, 28}, {1, -28, 28}, {1, 28, -5}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(lenet_model_build(m, bad[i][0], bad[i][1], bad[i][2]), LENET_EINVAL);
        ck_assert(!lenet_model_is_built(m));
        ck_assert_uint_eq(lenet_model_param_count(m), 0);
    }
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_build_that_does_not_fit_names_the_layer_and_stays_unbuilt)
{
    lenet_model *m = lenet_test_d2l_model();
    /* 4x4 -> conv(p2) 4x4 -> pool 2x2 -> conv k5 does not fit. */
    lenet_error_clear();
    ck_assert_int_eq(lenet_model_build(m, 1, 4, 4), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "Conv2d") != NULL && has_int(lenet_last_error(), 3),
                  "message: %s", lenet_last_error());
    ck_assert(!lenet_model_is_built(m));
    ck_assert_uint_eq(lenet_model_param_count(m), 0);
    ck_assert_uint_eq(lenet_model_param_numel(m), 0);
    /* The failure left nothing behind: a good build now works and has the right shapes. */
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_uint_eq(lenet_model_param_numel(m), 61706);
    lenet_model_free(m);

    /* Linear straight after a conv, without Flatten. */
    m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(2, 3, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(3)));
    ck_assert_int_eq(lenet_model_build(m, 1, 5, 5), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "Linear") != NULL, "message: %s", lenet_last_error());
    ck_assert(!lenet_model_is_built(m));
    lenet_model_free(m);
}
END_TEST

/* Builds a fresh model of the given layers for a (c, h, w) input and expects LENET_ESHAPE with every word of
 * `expect` in the message, nothing built and nothing allocated for parameters. */
static void expect_too_large(lenet_layer *const *layers, size_t count, int c, int h, int w, const char *const *expect,
                             size_t n_expect)
{
    lenet_model *m = lenet_model_create();
    for (size_t i = 0; i < count; i++)
        ck_assert_lenet_ok(lenet_model_add(m, layers[i]));
    lenet_error_clear();
    ck_assert_int_eq(lenet_model_build(m, c, h, w), LENET_ESHAPE);
    for (size_t i = 0; i < n_expect; i++)
        ck_assert_msg(strstr(lenet_last_error(), expect[i]) != NULL, "expected '%s' in: %s", expect[i],
                      lenet_last_error());
    ck_assert(!lenet_model_is_built(m));
    ck_assert_uint_eq(lenet_model_param_count(m), 0);
    /* The summary builds on the way and reports the same failure, printing nothing. */
    FILE *out = tmpfile();
    ck_assert_int_eq(lenet_model_summary(m, 1, c, h, w, out), LENET_ESHAPE);
    ck_assert_int_eq(ftell(out), 0);
    fclose(out);
    ck_assert(!lenet_model_is_built(m));
    lenet_model_free(m);
}

START_TEST(test_model_build_refuses_padding_that_overflows_the_geometry)
{
    /* Conv2d(2, 3, 1, INT_MAX): h + 2p wrapped around int and passed the kernel-size check. */
    const char *expect[] = {"layer 0 (Conv2d)", "padding 2147483647", "overflows"};
    expect_too_large((lenet_layer *[]){lenet_conv2d(2, 3, 1, 2147483647), lenet_flatten(), lenet_linear(3)}, 3, 1, 6,
                     6, expect, 3);
    /* Large but not overflowing padding: the padded input is over the per-sample limit. */
    const char *expect_padded[] = {"layer 0 (Conv2d)", "padded input", "LENET_MAX_SAMPLE_ELEMENTS"};
    expect_too_large((lenet_layer *[]){lenet_conv2d(1, 1, 1, 1 << 20)}, 1, 1, 1, 1, expect_padded, 3);
}
END_TEST

START_TEST(test_model_build_refuses_an_output_too_large_for_flatten)
{
    /* Conv2d(1, 1, 1, 32768) on 1x1x1 makes 1x65537x65537: Flatten used to truncate it to 131,073 features. */
    const char *expect[] = {"layer 0 (Conv2d)", "65537", "LENET_MAX_SAMPLE_ELEMENTS"};
    expect_too_large((lenet_layer *[]){lenet_conv2d(1, 1, 1, 32768), lenet_flatten(), lenet_linear(2)}, 3, 1, 1, 1,
                     expect, 3);
}
END_TEST

START_TEST(test_model_build_refuses_parameter_arenas_over_the_limits)
{
    /* The reported case: an input of 2^31 elements, then Linear(2^30) and Linear(INT_MAX). */
    const char *expect_input[] = {"input", "LENET_MAX_SAMPLE_ELEMENTS"};
    expect_too_large((lenet_layer *[]){lenet_flatten(), lenet_linear(1 << 30), lenet_linear(2147483647)}, 3, 1, 2,
                     1073741823, expect_input, 2);
    /* One weight over the per-tensor limit: 2^14 features x 2^15 outputs. */
    const char *expect_tensor[] = {"layer 1 (Linear)", "weight", "LENET_MAX_PARAM_ELEMENTS"};
    expect_too_large((lenet_layer *[]){lenet_flatten(), lenet_linear(1 << 15)}, 2, 1, 1, 1 << 14, expect_tensor, 3);
    /* Each weight at the per-tensor limit, four of them over the model's. */
    const char *expect_model[] = {"layer 4 (Linear)", "LENET_MAX_MODEL_ELEMENTS"};
    expect_too_large((lenet_layer *[]){lenet_flatten(), lenet_linear(1 << 14), lenet_linear(1 << 14),
                                       lenet_linear(1 << 14), lenet_linear(1 << 14)},
                     5, 1, 1, 1 << 14, expect_model, 2);
}
END_TEST

START_TEST(test_model_builds_lazily_on_first_forward)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_tensor *x = make_tensor4(3, 1, 28, 28, 7);
    const lenet_tensor *y = NULL;
    ck_assert(!lenet_model_is_built(m));
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ck_assert(lenet_model_is_built(m));
    ck_assert_uint_eq(lenet_model_param_count(m), 10);
    assert_shape(y, 2, (int[]){3, 10}, "y");
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_int_eq(lenet_model_build(m, 1, 32, 32), LENET_ESTATE);

    /* The lazily built model is initialised exactly as an explicit build (PyTorch scheme, seed 0). */
    lenet_model *explicit = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(explicit, 1, 28, 28));
    float *want = snapshot(explicit, false);
    ck_assert(same_as_snapshot(m, false, want));
    ck_assert_lenet_ok(lenet_model_init(explicit, LENET_INIT_PYTORCH, 0));
    ck_assert(same_as_snapshot(explicit, false, want));
    free(want);
    lenet_model_free(explicit);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_forward_on_unbuilt_model_with_bad_input_leaves_it_unbuilt)
{
    lenet_model *m = lenet_test_d2l_model();
    const lenet_tensor *y = NULL;
    lenet_tensor *small = make_tensor4(1, 1, 4, 4, 1);
    ck_assert_int_eq(lenet_model_forward(m, small, &y), LENET_ESHAPE);
    ck_assert(!lenet_model_is_built(m));
    lenet_tensor *flat = make_tensor2(2, 784, 1);
    lenet_status st = lenet_model_forward(m, flat, &y);
    /* The contract says ESHAPE (x is not (N, C, H, W)); the library says ESTATE ("not built") for now. */
    ck_assert_msg(st == LENET_ESHAPE || st == LENET_ESTATE, "2-D input on an unbuilt model returned %s: %s", lenet_status_str(st),
                  lenet_last_error());
    ck_assert(!lenet_model_is_built(m));
    lenet_tensor_free(flat);
    lenet_tensor_free(small);
    lenet_model_free(m);
}
END_TEST

/* ---- summary and print ---- */

static const char d2l_summary[] = "Conv2d output shape: \t torch.Size([1, 6, 28, 28])\n"
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
                                  "Linear output shape: \t torch.Size([1, 10])\n";

START_TEST(test_model_summary_matches_pytorch_for_d2l_lenet_and_builds_lazily)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_status st;
    char *text = summary_text(m, 1, 1, 28, 28, &st);
    ck_assert_lenet_ok(st);
    ck_assert_str_eq(text, d2l_summary);
    free(text);
    ck_assert(lenet_model_is_built(m));
    ck_assert_uint_eq(lenet_model_param_numel(m), 61706);
    ck_assert_int_eq(lenet_model_build(m, 1, 32, 32), LENET_ESTATE);
    /* Summarising again gives the same text. */
    text = summary_text(m, 1, 1, 28, 28, &st);
    ck_assert_lenet_ok(st);
    ck_assert_str_eq(text, d2l_summary);
    free(text);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_summary_to_a_tmpfile_writes_the_same_bytes)
{
    lenet_model *m = lenet_test_d2l_model();
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_lenet_ok(lenet_model_summary(m, 1, 1, 28, 28, f));
    rewind(f);
    char buf[2048];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    ck_assert_uint_eq(n, strlen(d2l_summary));
    ck_assert_str_eq(buf, d2l_summary);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_summary_shows_batch_and_input_size)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_status st;
    char *text = summary_text(m, 8, 1, 32, 32, &st);
    ck_assert_lenet_ok(st);
    ck_assert_str_eq(text, "Conv2d output shape: \t torch.Size([8, 6, 32, 32])\n"
                           "Sigmoid output shape: \t torch.Size([8, 6, 32, 32])\n"
                           "AvgPool2d output shape: \t torch.Size([8, 6, 16, 16])\n"
                           "Conv2d output shape: \t torch.Size([8, 16, 12, 12])\n"
                           "Sigmoid output shape: \t torch.Size([8, 16, 12, 12])\n"
                           "AvgPool2d output shape: \t torch.Size([8, 16, 6, 6])\n"
                           "Flatten output shape: \t torch.Size([8, 576])\n"
                           "Linear output shape: \t torch.Size([8, 120])\n"
                           "Sigmoid output shape: \t torch.Size([8, 120])\n"
                           "Linear output shape: \t torch.Size([8, 84])\n"
                           "Sigmoid output shape: \t torch.Size([8, 84])\n"
                           "Linear output shape: \t torch.Size([8, 10])\n");
    free(text);
    /* Built from the per-sample size, so any batch works afterwards. */
    assert_shape(lenet_model_param(m, 4), 2, (int[]){120, 576}, "7.weight");
    ck_assert_uint_eq(lenet_model_param_numel(m), 156 + 2416 + 120 * 577 + 10164 + 850);

    /* A built model prints other batch sizes of its input. */
    text = summary_text(m, 128, 1, 32, 32, &st);
    ck_assert_lenet_ok(st);
    ck_assert_ptr_nonnull(strstr(text, "Linear output shape: \t torch.Size([128, 10])\n"));
    free(text);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_summary_of_maxpool_and_deeper_networks)
{
    lenet_model *m = maxpool_model();
    lenet_status st;
    char *text = summary_text(m, 2, 3, 32, 32, &st);
    ck_assert_lenet_ok(st);
    ck_assert_str_eq(text, "Conv2d output shape: \t torch.Size([2, 6, 32, 32])\n"
                           "ReLU output shape: \t torch.Size([2, 6, 32, 32])\n"
                           "MaxPool2d output shape: \t torch.Size([2, 6, 16, 16])\n"
                           "Flatten output shape: \t torch.Size([2, 1536])\n"
                           "Linear output shape: \t torch.Size([2, 10])\n");
    free(text);
    assert_shape(lenet_model_param(m, 0), 4, (int[]){6, 3, 3, 3}, "0.weight");
    lenet_model_free(m);

    m = deeper_model();
    text = summary_text(m, 1, 1, 28, 28, &st);
    ck_assert_lenet_ok(st);
    ck_assert_str_eq(text, "Conv2d output shape: \t torch.Size([1, 8, 28, 28])\n"
                           "ReLU output shape: \t torch.Size([1, 8, 28, 28])\n"
                           "Conv2d output shape: \t torch.Size([1, 8, 14, 14])\n"
                           "Tanh output shape: \t torch.Size([1, 8, 14, 14])\n"
                           "MaxPool2d output shape: \t torch.Size([1, 8, 6, 6])\n"
                           "Conv2d output shape: \t torch.Size([1, 16, 4, 4])\n"
                           "ReLU output shape: \t torch.Size([1, 16, 4, 4])\n"
                           "AvgPool2d output shape: \t torch.Size([1, 16, 3, 3])\n"
                           "Flatten output shape: \t torch.Size([1, 144])\n"
                           "Linear output shape: \t torch.Size([1, 32])\n"
                           "Tanh output shape: \t torch.Size([1, 32])\n"
                           "Linear output shape: \t torch.Size([1, 5])\n");
    free(text);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_summary_of_built_convolutional_model_accepts_other_sizes)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(4, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_maxpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 8, 8));
    lenet_status st;
    char *text = summary_text(m, 2, 1, 16, 10, &st);
    ck_assert_lenet_ok(st);
    ck_assert_str_eq(text, "Conv2d output shape: \t torch.Size([2, 4, 16, 10])\n"
                           "ReLU output shape: \t torch.Size([2, 4, 16, 10])\n"
                           "MaxPool2d output shape: \t torch.Size([2, 4, 8, 5])\n");
    free(text);
    /* Summarising another size does not rebuild the model. */
    ck_assert_int_eq(lenet_model_build(m, 1, 16, 10), LENET_ESTATE);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 8, 8));
    /* The weights expect one channel. */
    text = summary_text(m, 1, 2, 8, 8, &st);
    ck_assert_int_eq(st, LENET_ESHAPE);
    ck_assert_str_eq(text, "");
    free(text);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_summary_errors_print_nothing)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_status st;
    char *text;

    ck_assert_int_eq(lenet_model_summary(NULL, 1, 1, 28, 28, stdout), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_summary(m, 1, 1, 28, 28, NULL), LENET_EINVAL);
    ck_assert(!lenet_model_is_built(m));
    int bad[][4] = {{0, 1, 28, 28}, {1, 0, 28, 28}, {1, 1, 0, 28}, {1, 1, 28, -1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        text = summary_text(m, bad[i][0], bad[i][1], bad[i][2], bad[i][3], &st);
        ck_assert_int_eq(st, LENET_EINVAL);
        ck_assert_str_eq(text, "");
        free(text);
    }
    ck_assert(!lenet_model_is_built(m));

    /* Unbuilt, too small: the second Conv2d does not fit; nothing printed, model stays unbuilt. */
    lenet_error_clear();
    text = summary_text(m, 1, 1, 4, 4, &st);
    ck_assert_int_eq(st, LENET_ESHAPE);
    ck_assert_str_eq(text, "");
    ck_assert_msg(strstr(lenet_last_error(), "Conv2d") != NULL, "message: %s", lenet_last_error());
    free(text);
    ck_assert(!lenet_model_is_built(m));

    /* Built for 28x28, the Linear after Flatten does not fit 32x32 (576 features, weights expect 400):
     * the failing layer is the eighth, so the seven lines before it must not be printed either. */
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    lenet_error_clear();
    text = summary_text(m, 1, 1, 32, 32, &st);
    ck_assert_int_eq(st, LENET_ESHAPE);
    ck_assert_str_eq(text, "");
    ck_assert_msg(strstr(lenet_last_error(), "Linear") != NULL && has_int(lenet_last_error(), 576) &&
                      has_int(lenet_last_error(), 400),
                  "message: %s", lenet_last_error());
    free(text);

    /* A stream that cannot be written. */
    FILE *ro = fopen("/dev/null", "r");
    ck_assert_ptr_nonnull(ro);
    ck_assert_int_eq(lenet_model_summary(m, 1, 1, 28, 28, ro), LENET_EIO);
    ck_assert_int_eq(lenet_model_print(m, ro), LENET_EIO);
    fclose(ro);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_print_shows_total_parameters)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_status st;
    char *text = print_text(m, &st);
    ck_assert_int_eq(st, LENET_ESTATE);
    ck_assert_str_eq(text, "");
    free(text);
    ck_assert_int_eq(lenet_model_print(NULL, stdout), LENET_EINVAL);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_int_eq(lenet_model_print(m, NULL), LENET_EINVAL);
    text = print_text(m, &st);
    ck_assert_lenet_ok(st);
    ck_assert_msg(strstr(text, "61,706") != NULL, "print output:\n%s", text);
    /* Per-layer counts: conv1 156, conv2 2,416, linears 48,120 / 10,164 / 850. */
    ck_assert_msg(strstr(text, "2,416") && strstr(text, "48,120") && strstr(text, "10,164") && strstr(text, "850"),
                  "print output:\n%s", text);
    ck_assert_ptr_nonnull(strstr(text, "AvgPool2d"));
    free(text);
    lenet_model_free(m);
}
END_TEST

/* ---- init ---- */

START_TEST(test_model_init_same_seed_same_weights_other_seed_different)
{
    lenet_init schemes[] = {LENET_INIT_PYTORCH, LENET_INIT_XAVIER_UNIFORM, LENET_INIT_LECUN};
    lenet_model *a = lenet_test_d2l_model();
    lenet_model *b = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(a, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_build(b, 1, 28, 28));
    for (size_t s = 0; s < 3; s++) {
        ck_assert_lenet_ok(lenet_model_init(a, schemes[s], 42));
        ck_assert_lenet_ok(lenet_model_init(b, schemes[s], 42));
        float *wa = snapshot(a, false);
        ck_assert_msg(same_as_snapshot(b, false, wa), "scheme %d: same seed, different weights", (int)schemes[s]);
        ck_assert_lenet_ok(lenet_model_init(b, schemes[s], 43));
        for (size_t i = 0; i < lenet_model_param_count(a); i++) {
            const lenet_tensor *ta = lenet_model_param(a, i), *tb = lenet_model_param(b, i);
            size_t n = lenet_tensor_numel(ta), equal = 0;
            for (size_t j = 0; j < n; j++)
                equal += lenet_tensor_cdata(ta)[j] == lenet_tensor_cdata(tb)[j];
            ck_assert_msg(equal < n, "scheme %d: %s identical for seeds 42 and 43", (int)schemes[s],
                          lenet_model_param_name(a, i));
        }
        free(wa);
    }
    /* Tensors do not repeat each other's values (each draws from its own part of the stream). */
    const float *w7 = lenet_tensor_cdata(lenet_model_param(a, 4));
    const float *w9 = lenet_tensor_cdata(lenet_model_param(a, 6));
    ck_assert(memcmp(w7, w9, 84 * sizeof(float)) != 0);
    lenet_model_free(a);
    lenet_model_free(b);
}
END_TEST

/* Checks every value of every parameter against the scheme's bound and that large weight tensors come close to
 * it (so a tighter scheme cannot pass for a wider one). */
static void check_init_bounds(lenet_model *m, lenet_init scheme)
{
    double fan_in = 0.0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        const lenet_tensor *t = lenet_model_param(m, i);
        const char *name = lenet_model_param_name(m, i);
        bool is_weight = strstr(name, "weight") != NULL;
        size_t n = lenet_tensor_numel(t);
        double bound;
        if (is_weight) {
            fan_in = (double)n / lenet_tensor_dim(t, 0);
            double fan_out = (double)n / lenet_tensor_dim(t, 1);
            bound = scheme == LENET_INIT_XAVIER_UNIFORM ? sqrt(6.0 / (fan_in + fan_out))
                    : scheme == LENET_INIT_LECUN        ? 2.4 / fan_in
                                                        : 1.0 / sqrt(fan_in);
        } else {
            bound = scheme == LENET_INIT_LECUN ? 2.4 / fan_in : 1.0 / sqrt(fan_in);
        }
        double most = 0.0, sum = 0.0;
        for (size_t j = 0; j < n; j++) {
            double v = lenet_tensor_cdata(t)[j];
            if (!isfinite(v) || fabs(v) > bound * (1.0 + 1e-6))
                ck_abort_msg("scheme %d: %s[%zu] = %g outside +-%g", (int)scheme, name, j, v, bound);
            most = fmax(most, fabs(v));
            sum += v;
        }
        if (n >= 100) {
            ck_assert_msg(most > 0.9 * bound, "scheme %d: %s reaches only %g of +-%g", (int)scheme, name, most, bound);
            ck_assert_msg(fabs(sum / n) < 0.2 * bound, "scheme %d: %s has mean %g for bound %g", (int)scheme, name,
                          sum / n, bound);
        }
    }
}

START_TEST(test_model_init_xavier_weights_and_pytorch_biases_stay_in_bounds)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    for (uint64_t seed = 0; seed < 3; seed++) {
        ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, seed));
        check_init_bounds(m, LENET_INIT_XAVIER_UNIFORM);
    }
    /* 7.weight: xavier +-sqrt(6/520) ~ 0.107 is wider than PyTorch's +-0.05: the scheme must reach past it. */
    const lenet_tensor *w = lenet_model_param(m, 4);
    float most = 0.0f;
    for (size_t j = 0; j < lenet_tensor_numel(w); j++)
        most = fmaxf(most, fabsf(lenet_tensor_cdata(w)[j]));
    ck_assert_float_gt(most, 0.1f);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_init_pytorch_and_lecun_stay_in_bounds)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    check_init_bounds(m, LENET_INIT_PYTORCH); /* as built */
    for (uint64_t seed = 1; seed < 3; seed++) {
        ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, seed));
        check_init_bounds(m, LENET_INIT_PYTORCH);
        ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_LECUN, seed));
        check_init_bounds(m, LENET_INIT_LECUN);
    }
    lenet_model_free(m);

    m = deeper_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_LECUN, 5));
    check_init_bounds(m, LENET_INIT_LECUN);
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 5));
    check_init_bounds(m, LENET_INIT_XAVIER_UNIFORM);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_init_rejects_null_unknown_scheme_and_unbuilt_model)
{
    ck_assert_int_eq(lenet_model_init(NULL, LENET_INIT_PYTORCH, 0), LENET_EINVAL);
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_int_eq(lenet_model_init(m, LENET_INIT_PYTORCH, 0), LENET_ESTATE);
    ck_assert_str_ne(lenet_last_error(), "");
    ck_assert(!lenet_model_is_built(m));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    float *before = snapshot(m, false);
    ck_assert_int_eq(lenet_model_init(m, (lenet_init)99, 0), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_init(m, (lenet_init)-1, 0), LENET_EINVAL);
    ck_assert(same_as_snapshot(m, false, before));
    free(before);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_init_zeroes_gradients)
{
    lenet_model *m = small_model();
    lenet_tensor *x = make_tensor4(2, 1, 6, 6, 3);
    const lenet_tensor *y = NULL;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *dy = make_tensor2(2, 3, 4);
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    ck_assert_uint_gt(nonzero_grads(m), 0);
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_LECUN, 1));
    ck_assert_uint_eq(nonzero_grads(m), 0);
    lenet_tensor_free(dy);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* ---- forward, backward, zero_grad ---- */

START_TEST(test_model_calls_reject_null_arguments)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    lenet_tensor *x = make_tensor4(2, 1, 28, 28, 1);
    lenet_tensor *dy = make_tensor2(2, 10, 2);
    lenet_tensor *out = lenet_tensor_create(2, (int[]){2, 10});
    const lenet_tensor *y = NULL;
    int32_t classes[2];
    ck_assert_int_eq(lenet_model_forward(NULL, x, &y), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_forward(m, NULL, &y), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_forward(m, x, NULL), LENET_EINVAL);
    ck_assert_ptr_null(y);
    ck_assert_int_eq(lenet_model_backward(NULL, dy), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_backward(m, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_zero_grad(NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_predict(NULL, x, out), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_predict(m, NULL, out), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_predict(m, x, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_classify(NULL, x, classes, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_classify(m, NULL, classes, NULL), LENET_EINVAL);
    /* Nothing ran: backward still has no forward to use. */
    ck_assert_int_eq(lenet_model_backward(m, dy), LENET_ESTATE);
    lenet_tensor_free(out);
    lenet_tensor_free(dy);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_backward_before_forward_is_estate)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_tensor *dy = make_tensor2(2, 10, 2);
    ck_assert_int_eq(lenet_model_backward(m, dy), LENET_ESTATE); /* unbuilt */
    ck_assert_str_ne(lenet_last_error(), "");
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_int_eq(lenet_model_backward(m, dy), LENET_ESTATE); /* built, no forward yet */
    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    lenet_tensor_free(dy);
    lenet_model_free(m);

    /* zero_grad of an unbuilt model is fine. */
    m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_backward_with_wrong_dy_shape_is_eshape)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_tensor *x = make_tensor4(2, 1, 28, 28, 1);
    const lenet_tensor *y = NULL;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *bad[] = {
        lenet_tensor_create(2, (int[]){3, 10}), lenet_tensor_create(2, (int[]){2, 9}),
        lenet_tensor_create(1, (int[]){20}),    lenet_tensor_create(3, (int[]){2, 10, 1}),
        lenet_tensor_create(2, (int[]){1, 20}),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_ptr_nonnull(bad[i]);
        lenet_test_fill(bad[i], i, -1.0f, 1.0f);
        ck_assert_int_eq(lenet_model_backward(m, bad[i]), LENET_ESHAPE);
        ck_assert_str_ne(lenet_last_error(), "");
        lenet_tensor_free(bad[i]);
    }
    ck_assert_uint_eq(nonzero_grads(m), 0);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_forward_with_wrong_channels_names_both_counts)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    const lenet_tensor *y = NULL;
    lenet_tensor *x = make_tensor4(2, 3, 28, 28, 1);
    lenet_error_clear();
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    ck_assert_msg(has_int(lenet_last_error(), 3) && has_int(lenet_last_error(), 1), "message: %s",
                  lenet_last_error());
    ck_assert_ptr_null(y);
    lenet_tensor_free(x);

    /* Wrong height or width, and input that is not 4-D. */
    x = make_tensor4(2, 1, 32, 28, 1);
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    ck_assert(has_int(lenet_last_error(), 32));
    lenet_tensor_free(x);
    x = make_tensor4(2, 1, 28, 27, 1);
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    lenet_tensor_free(x);
    x = lenet_tensor_create(3, (int[]){1, 28, 28});
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    lenet_tensor_free(x);
    x = lenet_tensor_create(5, (int[]){2, 1, 28, 28, 1});
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    lenet_tensor_free(x);
    ck_assert_ptr_null(y);

    /* A model built for two channels, fed five. */
    lenet_model_free(m);
    m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(4, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_build(m, 2, 8, 8));
    x = make_tensor4(1, 5, 8, 8, 1);
    ck_assert_int_eq(lenet_model_forward(m, x, &y), LENET_ESHAPE);
    ck_assert_msg(has_int(lenet_last_error(), 5) && has_int(lenet_last_error(), 2), "message: %s",
                  lenet_last_error());
    lenet_tensor *out = lenet_tensor_create(4, (int[]){1, 4, 8, 8});
    ck_assert_int_eq(lenet_model_predict(m, x, out), LENET_ESHAPE);
    ck_assert_msg(has_int(lenet_last_error(), 5) && has_int(lenet_last_error(), 2), "message: %s",
                  lenet_last_error());
    lenet_tensor_free(out);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_forward_output_stays_valid_until_next_forward)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_tensor *x1 = make_tensor4(4, 1, 28, 28, 11);
    lenet_tensor *x2 = make_tensor4(2, 1, 28, 28, 12);
    lenet_tensor *x3 = make_tensor4(6, 1, 28, 28, 13);
    const lenet_tensor *y = NULL;
    ck_assert_lenet_ok(lenet_model_forward(m, x1, &y));
    assert_shape(y, 2, (int[]){4, 10}, "y1");
    float first[40];
    memcpy(first, lenet_tensor_cdata(y), sizeof first);

    /* Backward, zero_grad, predict and classify in between do not touch it. */
    lenet_tensor *dy = make_tensor2(4, 10, 5);
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    lenet_tensor *p2 = lenet_tensor_create(2, (int[]){2, 10});
    ck_assert_lenet_ok(lenet_model_predict(m, x2, p2));
    int32_t classes[6];
    ck_assert_lenet_ok(lenet_model_classify(m, x3, classes, NULL));
    assert_shape(y, 2, (int[]){4, 10}, "y1 after other calls");
    ck_assert_mem_eq(lenet_tensor_cdata(y), first, sizeof first);

    /* The next forward replaces it: the shape and values are now x2's. */
    const lenet_tensor *y2 = NULL;
    ck_assert_lenet_ok(lenet_model_forward(m, x2, &y2));
    assert_shape(y2, 2, (int[]){2, 10}, "y2");
    ck_assert_mem_eq(lenet_tensor_cdata(y2), lenet_tensor_cdata(p2), 20 * sizeof(float));
    /* A larger batch after a smaller one (the buffers grow). */
    const lenet_tensor *y3 = NULL;
    ck_assert_lenet_ok(lenet_model_forward(m, x3, &y3));
    assert_shape(y3, 2, (int[]){6, 10}, "y3");
    ck_assert_lenet_ok(lenet_model_forward(m, x1, &y));
    ck_assert_mem_eq(lenet_tensor_cdata(y), first, sizeof first);

    lenet_tensor_free(p2);
    lenet_tensor_free(dy);
    lenet_tensor_free(x1);
    lenet_tensor_free(x2);
    lenet_tensor_free(x3);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_grads_accumulate_over_backward_calls_until_zero_grad)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_tensor *x = make_tensor4(3, 1, 28, 28, 21);
    lenet_tensor *dy = make_tensor2(3, 10, 22);
    const lenet_tensor *y = NULL;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    float *once = snapshot(m, true);
    float *weights = snapshot(m, false);
    for (size_t i = 0, at = 0; i < lenet_model_param_count(m); i++) {
        size_t n = lenet_tensor_numel(lenet_model_grad(m, i)), nonzero = 0;
        for (size_t j = 0; j < n; j++)
            nonzero += once[at + j] != 0.0f;
        ck_assert_msg(nonzero > 0, "%s has a zero gradient", lenet_model_param_name(m, i));
        at += n;
    }
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    for (size_t i = 0, at = 0; i < lenet_model_param_count(m); i++) {
        const lenet_tensor *g = lenet_model_grad(m, i);
        /* Summation order may differ between g1 + g1 and one sum: allow float rounding of the tensor's scale. */
        float scale = 0.0f;
        for (size_t j = 0; j < lenet_tensor_numel(g); j++)
            scale = fmaxf(scale, fabsf(2.0f * once[at + j]));
        for (size_t j = 0; j < lenet_tensor_numel(g); j++, at++) {
            float want = 2.0f * once[at];
            if (!(fabsf(lenet_tensor_cdata(g)[j] - want) <= 1e-5f * fabsf(want) + 1e-5f * scale))
                ck_abort_msg("%s[%zu]: %g after two backward calls, %g after one", lenet_model_param_name(m, i), j,
                             (double)lenet_tensor_cdata(g)[j], (double)once[at]);
        }
    }
    /* Backward changes only gradients. */
    ck_assert(same_as_snapshot(m, false, weights));

    ck_assert_lenet_ok(lenet_model_zero_grad(m));
    ck_assert_uint_eq(nonzero_grads(m), 0);
    /* After zero_grad, one backward gives the single-call gradients again. */
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    ck_assert(same_as_snapshot(m, true, once));
    free(weights);
    free(once);
    lenet_tensor_free(dy);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* L = sum(y * w) for the model's output y; dL/dy = w. */
static double weighted_output(const lenet_model *m, const lenet_tensor *x, lenet_tensor *y, const lenet_tensor *w)
{
    ck_assert_lenet_ok(lenet_model_predict(m, x, y));
    double sum = 0.0;
    for (size_t i = 0; i < lenet_tensor_numel(y); i++)
        sum += (double)lenet_tensor_cdata(y)[i] * lenet_tensor_cdata(w)[i];
    return sum;
}

START_TEST(test_model_backward_matches_finite_differences)
{
    lenet_model *m = small_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 6, 6));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 3));
    lenet_tensor *x = make_tensor4(2, 1, 6, 6, 31);
    lenet_tensor *w = make_tensor2(2, 3, 32);
    lenet_tensor *y = lenet_tensor_create(2, (int[]){2, 3});
    const lenet_tensor *out = NULL;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &out));
    ck_assert_lenet_ok(lenet_model_backward(m, w));

    const float eps = 1e-2f;
    double worst = 0.0;
    size_t checked = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        float *p = lenet_tensor_data(lenet_model_param(m, i));
        const float *g = lenet_tensor_cdata(lenet_model_grad(m, i));
        for (size_t j = 0; j < lenet_tensor_numel(lenet_model_param(m, i)); j++) {
            float saved = p[j];
            p[j] = saved + eps;
            double plus = weighted_output(m, x, y, w);
            p[j] = saved - eps;
            double minus = weighted_output(m, x, y, w);
            p[j] = saved;
            double numeric = (plus - minus) / (2.0 * eps);
            double err = fabs(numeric - g[j]) / (fabs(numeric) + 1e-2);
            ck_assert_msg(err < 2e-2, "%s[%zu]: backward %g, finite differences %g", lenet_model_param_name(m, i),
                          j, (double)g[j], numeric);
            worst = fmax(worst, err);
            checked++;
        }
    }
    ck_assert_uint_eq(checked, 20 + 27 + 52 + 15);
    fprintf(stderr, "model backward vs finite differences: worst relative error %.2e over %zu values\n", worst,
            checked);
    lenet_tensor_free(y);
    lenet_tensor_free(w);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

/* ---- predict and classify ---- */

START_TEST(test_model_predict_matches_forward_bit_for_bit_and_changes_nothing)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_tensor *x = make_tensor4(5, 1, 28, 28, 41);
    lenet_tensor *other = make_tensor4(3, 1, 28, 28, 42);
    lenet_tensor *dy = make_tensor2(5, 10, 43);
    lenet_tensor *p = lenet_tensor_create(2, (int[]){5, 10});
    lenet_tensor *p_other = lenet_tensor_create(2, (int[]){3, 10});
    const lenet_tensor *y = NULL;

    ck_assert_int_eq(lenet_model_predict(m, x, p), LENET_ESTATE); /* never builds */
    ck_assert(!lenet_model_is_built(m));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 9));

    /* Reference gradients: forward(x), backward(dy). */
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    float *want_grads = snapshot(m, true);
    ck_assert_lenet_ok(lenet_model_zero_grad(m));

    /* forward(x), then predict on other data, then backward: the gradients must still be x's. */
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    float *weights = snapshot(m, false);
    float *grads = snapshot(m, true);
    ck_assert_lenet_ok(lenet_model_predict(m, x, p));
    ck_assert_mem_eq(lenet_tensor_cdata(p), lenet_tensor_cdata(y), 50 * sizeof(float));
    ck_assert_lenet_ok(lenet_model_predict(m, other, p_other));
    int32_t classes[3];
    float probs[30];
    ck_assert_lenet_ok(lenet_model_classify(m, other, classes, probs));
    ck_assert(same_as_snapshot(m, false, weights));
    ck_assert(same_as_snapshot(m, true, grads));
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    ck_assert_msg(same_as_snapshot(m, true, want_grads), "predict changed the activations kept for backward");

    /* predict on `other` agrees with a forward on it. */
    ck_assert_lenet_ok(lenet_model_forward(m, other, &y));
    ck_assert_mem_eq(lenet_tensor_cdata(p_other), lenet_tensor_cdata(y), 30 * sizeof(float));

    free(grads);
    free(weights);
    free(want_grads);
    lenet_tensor_free(p_other);
    lenet_tensor_free(p);
    lenet_tensor_free(dy);
    lenet_tensor_free(other);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

typedef struct predict_job {
    const lenet_model *model;
    const lenet_tensor *x;
    lenet_tensor *y;
    const lenet_tensor *want;
    int mismatches;
    lenet_status status;
} predict_job;

static void *predict_repeatedly(void *arg)
{
    predict_job *job = arg;
    for (int r = 0; r < 5 && job->status == LENET_OK; r++) {
        job->status = lenet_model_predict(job->model, job->x, job->y);
        job->mismatches += memcmp(lenet_tensor_cdata(job->y), lenet_tensor_cdata(job->want),
                                  lenet_tensor_numel(job->y) * sizeof(float)) != 0;
    }
    return NULL;
}

START_TEST(test_model_predict_runs_concurrently_on_a_shared_model)
{
    enum { THREADS = 4 };
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 8));
    float *weights = snapshot(m, false);
    predict_job jobs[THREADS];
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) {
        int batch = 1 + t; /* different batch sizes, so different scratch sizes */
        lenet_tensor *x = make_tensor4(batch, 1, 28, 28, 80 + (uint64_t)t);
        lenet_tensor *want = lenet_tensor_create(2, (int[]){batch, 10});
        ck_assert_lenet_ok(lenet_model_predict(m, x, want)); /* serially first */
        jobs[t] = (predict_job){m, x, lenet_tensor_create(2, (int[]){batch, 10}), want, 0, LENET_OK};
    }
    for (int t = 0; t < THREADS; t++)
        ck_assert_int_eq(pthread_create(&threads[t], NULL, predict_repeatedly, &jobs[t]), 0);
    for (int t = 0; t < THREADS; t++)
        ck_assert_int_eq(pthread_join(threads[t], NULL), 0);
    for (int t = 0; t < THREADS; t++) {
        ck_assert_msg(jobs[t].status == LENET_OK, "thread %d: %s", t, lenet_status_str(jobs[t].status));
        ck_assert_msg(jobs[t].mismatches == 0, "thread %d: %d of 5 predictions differ from the serial one", t,
                      jobs[t].mismatches);
        lenet_tensor_free((lenet_tensor *)jobs[t].x);
        lenet_tensor_free(jobs[t].y);
        lenet_tensor_free((lenet_tensor *)jobs[t].want);
    }
    ck_assert(same_as_snapshot(m, false, weights));
    free(weights);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_predict_with_wrong_output_shape_is_eshape)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    lenet_tensor *x = make_tensor4(4, 1, 28, 28, 51);
    int shapes[][4] = {{2, 5, 10}, {2, 4, 9}, {2, 4, 11}, {1, 40}, {3, 4, 10, 1}, {2, 10, 4}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        lenet_tensor *out = lenet_tensor_create(shapes[i][0], shapes[i] + 1);
        ck_assert_ptr_nonnull(out);
        lenet_test_fill(out, 1, 5.0f, 6.0f);
        float first = lenet_tensor_cdata(out)[0];
        ck_assert_int_eq(lenet_model_predict(m, x, out), LENET_ESHAPE);
        ck_assert_str_ne(lenet_last_error(), "");
        ck_assert_float_eq(lenet_tensor_cdata(out)[0], first);
        lenet_tensor_free(out);
    }
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_classify_returns_argmax_and_softmax)
{
    /* A linear classifier over 3x2x2 inputs, so that the samples fall into different classes. */
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(10)));
    ck_assert_lenet_ok(lenet_model_build(m, 3, 2, 2));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 4));
    enum { N = 9, K = 10 };
    lenet_tensor *x = make_tensor4(N, 3, 2, 2, 61);
    float *xs = lenet_tensor_data(x);
    for (size_t j = 0; j < lenet_tensor_numel(x); j++)
        xs[j] *= 6.0f;
    lenet_tensor *y = lenet_tensor_create(2, (int[]){N, K});
    ck_assert_lenet_ok(lenet_model_predict(m, x, y));
    int32_t classes[N];
    float probs[N * K];
    for (int i = 0; i < N; i++)
        classes[i] = -1;
    ck_assert_lenet_ok(lenet_model_classify(m, x, classes, probs));
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        const float *row = lenet_tensor_cdata(y) + i * K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (row[k] > row[best])
                best = k;
        ck_assert_int_eq(classes[i], best);
        double sum = 0.0, norm = 0.0;
        for (int k = 0; k < K; k++)
            norm += exp((double)row[k] - row[best]);
        for (int k = 0; k < K; k++) {
            double want = exp((double)row[k] - row[best]) / norm;
            ck_assert_msg(fabs(probs[i * K + k] - want) < 1e-6, "probs[%d][%d] = %g, softmax %g", i, k,
                          (double)probs[i * K + k], want);
            ck_assert(probs[i * K + k] >= 0.0f && probs[i * K + k] <= 1.0f);
            sum += probs[i * K + k];
        }
        ck_assert_msg(fabs(sum - 1.0) < 1e-5, "row %d sums to %.9f", i, sum);
        for (int k = 0; k < K; k++)
            ck_assert(probs[i * K + k] <= probs[i * K + best]);
        distinct += i == 0 || classes[i] != classes[0];
    }
    ck_assert_int_gt(distinct, 1);

    /* Either output may be NULL. */
    int32_t again[N];
    ck_assert_lenet_ok(lenet_model_classify(m, x, again, NULL));
    ck_assert_mem_eq(again, classes, sizeof again);
    float probs2[N * K];
    ck_assert_lenet_ok(lenet_model_classify(m, x, NULL, probs2));
    ck_assert_mem_eq(probs2, probs, sizeof probs);
    ck_assert_lenet_ok(lenet_model_classify(m, x, NULL, NULL));
    lenet_tensor_free(y);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_model_classify_errors_leave_outputs_untouched)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_tensor *x = make_tensor4(2, 1, 28, 28, 71);
    int32_t classes[2] = {-7, -7};
    ck_assert_int_eq(lenet_model_classify(m, x, classes, NULL), LENET_ESTATE);
    ck_assert(!lenet_model_is_built(m));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    lenet_tensor *bad = make_tensor4(2, 1, 20, 28, 72);
    ck_assert_int_eq(lenet_model_classify(m, bad, classes, NULL), LENET_ESHAPE);
    lenet_tensor *flat = make_tensor2(2, 784, 73);
    ck_assert_int_eq(lenet_model_classify(m, flat, classes, NULL), LENET_ESHAPE);
    ck_assert_int_eq(classes[0], -7);
    ck_assert_int_eq(classes[1], -7);
    lenet_tensor_free(flat);
    lenet_tensor_free(bad);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("build");
    tcase_add_test(tc, test_model_create_is_empty_and_free_accepts_null);
    tcase_add_test(tc, test_model_layers_are_listed_in_order_with_pytorch_names);
    tcase_add_test(tc, test_model_add_after_build_fails_with_estate_and_frees_the_layer);
    tcase_add_test(tc, test_model_add_null_layer_reports_the_constructor_error);
    tcase_add_test(tc, test_model_add_grows_past_many_layers);
    tcase_add_test(tc, test_model_build_infers_d2l_parameter_names_and_shapes);
    tcase_add_test(tc, test_model_build_names_parameters_by_layer_index);
    tcase_add_test(tc, test_model_build_twice_same_shape_ok_other_shape_estate);
    tcase_add_test(tc, test_model_build_rejects_bad_arguments);
    tcase_add_test(tc, test_model_build_that_does_not_fit_names_the_layer_and_stays_unbuilt);
    tcase_add_test(tc, test_model_build_refuses_padding_that_overflows_the_geometry);
    tcase_add_test(tc, test_model_build_refuses_an_output_too_large_for_flatten);
    tcase_add_test(tc, test_model_build_refuses_parameter_arenas_over_the_limits);
    tcase_add_test(tc, test_model_builds_lazily_on_first_forward);
    tcase_add_test(tc, test_model_forward_on_unbuilt_model_with_bad_input_leaves_it_unbuilt);
    suite_add_tcase(s, tc);

    tc = tcase_create("summary");
    tcase_add_test(tc, test_model_summary_matches_pytorch_for_d2l_lenet_and_builds_lazily);
    tcase_add_test(tc, test_model_summary_to_a_tmpfile_writes_the_same_bytes);
    tcase_add_test(tc, test_model_summary_shows_batch_and_input_size);
    tcase_add_test(tc, test_model_summary_of_maxpool_and_deeper_networks);
    tcase_add_test(tc, test_model_summary_of_built_convolutional_model_accepts_other_sizes);
    tcase_add_test(tc, test_model_summary_errors_print_nothing);
    tcase_add_test(tc, test_model_print_shows_total_parameters);
    suite_add_tcase(s, tc);

    tc = tcase_create("init");
    tcase_add_test(tc, test_model_init_same_seed_same_weights_other_seed_different);
    tcase_add_test(tc, test_model_init_xavier_weights_and_pytorch_biases_stay_in_bounds);
    tcase_add_test(tc, test_model_init_pytorch_and_lecun_stay_in_bounds);
    tcase_add_test(tc, test_model_init_rejects_null_unknown_scheme_and_unbuilt_model);
    tcase_add_test(tc, test_model_init_zeroes_gradients);
    suite_add_tcase(s, tc);

    tc = tcase_create("passes");
    tcase_add_test(tc, test_model_calls_reject_null_arguments);
    tcase_add_test(tc, test_model_backward_before_forward_is_estate);
    tcase_add_test(tc, test_model_backward_with_wrong_dy_shape_is_eshape);
    tcase_add_test(tc, test_model_forward_with_wrong_channels_names_both_counts);
    tcase_add_test(tc, test_model_forward_output_stays_valid_until_next_forward);
    tcase_add_test(tc, test_model_grads_accumulate_over_backward_calls_until_zero_grad);
    tcase_add_test(tc, test_model_backward_matches_finite_differences);
    tcase_add_test(tc, test_model_predict_matches_forward_bit_for_bit_and_changes_nothing);
    tcase_add_test(tc, test_model_predict_runs_concurrently_on_a_shared_model);
    tcase_add_test(tc, test_model_predict_with_wrong_output_shape_is_eshape);
    tcase_add_test(tc, test_model_classify_returns_argmax_and_softmax);
    tcase_add_test(tc, test_model_classify_errors_leave_outputs_untouched);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
