/* BatchNorm1d/2d and Dropout: their statistics, modes, errors and determinism.  The numbers against PyTorch are in
 * test_pytorch.c (d2l's BatchNorm LeNet). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "testutil.h"

static lenet_tensor *random_input(int n, int c, int h, int w, uint64_t seed, float lo, float hi)
{
    lenet_tensor *x = lenet_tensor_create(4, (int[]){n, c, h, w});
    ck_assert_ptr_nonnull(x);
    lenet_test_fill(x, seed, lo, hi);
    return x;
}

/* Conv2d(3, k3), BatchNorm2d, ReLU, Flatten, Linear(8), BatchNorm1d, Sigmoid, Linear(4) over (2, 6, 6). */
static lenet_model *bn_model(float momentum)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(3, 3, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, momentum)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(8)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-5f, momentum)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_dropout(0.25f)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(4)));
    ck_assert_lenet_ok(lenet_model_build(m, 2, 6, 6));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 3));
    return m;
}

START_TEST(test_batchnorm2d_normalises_each_channel_over_the_whole_batch_and_tracks_running_statistics)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, 0.1f)));
    lenet_tensor *x = random_input(37, 2, 3, 4, 1, -3.0f, 5.0f);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ck_assert_str_eq(lenet_model_param_name(m, 0), "0.weight");
    ck_assert_str_eq(lenet_model_param_name(m, 1), "0.bias");
    ck_assert_str_eq(lenet_model_buffer_name(m, 0), "0.running_mean");
    ck_assert_str_eq(lenet_model_buffer_name(m, 1), "0.running_var");
    ck_assert_str_eq(lenet_model_buffer_name(m, 2), "0.num_batches_tracked");
    const float *in = lenet_tensor_cdata(x), *out = lenet_tensor_cdata(y);
    for (int c = 0; c < 2; c++) {
        double sum = 0.0, squares = 0.0, out_sum = 0.0, out_squares = 0.0;
        const int n = 37 * 12;
        for (int i = 0; i < 37; i++)
            for (int k = 0; k < 12; k++) {
                double v = in[(i * 2 + c) * 12 + k], o = out[(i * 2 + c) * 12 + k];
                sum += v;
                squares += v * v;
                out_sum += o;
                out_squares += o * o;
            }
        const double mean = sum / n, var = squares / n - mean * mean;
        ck_assert_msg(fabs(out_sum / n) < 1e-5, "channel %d: output mean %g", c, out_sum / n);
        ck_assert_msg(fabs(out_squares / n - var / (var + 1e-5)) < 1e-4, "channel %d: output variance %g", c,
                      out_squares / n);
        const float *rm = lenet_tensor_cdata(lenet_model_buffer(m, 0)), *rv = lenet_tensor_cdata(lenet_model_buffer(m, 1));
        ck_assert_msg(fabs(rm[c] - 0.1 * mean) < 1e-6, "channel %d: running mean %g, expected %g", c, (double)rm[c],
                      0.1 * mean);
        ck_assert_msg(fabs(rv[c] - (0.9 + 0.1 * var * n / (n - 1))) < 1e-5, "channel %d: running var %g", c,
                      (double)rv[c]);
    }
    ck_assert_float_eq(lenet_tensor_cdata(lenet_model_buffer(m, 2))[0], 1.0f);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_batchnorm_in_evaluation_mode_uses_the_running_statistics)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-3f, 0.1f)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 1, 3));
    const float mean[3] = {1.0f, -2.0f, 0.5f}, var[3] = {4.0f, 0.25f, 1.0f}, weight[3] = {2.0f, 1.0f, -1.0f},
                bias[3] = {0.0f, 1.0f, 3.0f};
    memcpy(lenet_tensor_data(lenet_model_buffer(m, 0)), mean, sizeof mean);
    memcpy(lenet_tensor_data(lenet_model_buffer(m, 1)), var, sizeof var);
    memcpy(lenet_tensor_data(lenet_model_param(m, 0)), weight, sizeof weight);
    memcpy(lenet_tensor_data(lenet_model_param(m, 1)), bias, sizeof bias);
    lenet_tensor *x = random_input(5, 1, 1, 3, 2, -4.0f, 4.0f), *y = lenet_tensor_create(2, (int[]){5, 3});
    /* predict is always evaluation; so is forward after set_training(false), and one sample is then fine. */
    ck_assert_lenet_ok(lenet_model_predict(m, x, y));
    for (int i = 0; i < 5; i++)
        for (int f = 0; f < 3; f++) {
            float v = lenet_tensor_cdata(x)[i * 3 + f];
            float want = (v - mean[f]) / sqrtf(var[f] + 1e-3f) * weight[f] + bias[f];
            ck_assert_msg(fabsf(lenet_tensor_cdata(y)[i * 3 + f] - want) < 1e-5f, "sample %d feature %d", i, f);
        }
    ck_assert_lenet_ok(lenet_model_set_training(m, false));
    lenet_tensor *one = random_input(1, 1, 1, 3, 3, -1.0f, 1.0f);
    const lenet_tensor *out;
    ck_assert_lenet_ok(lenet_model_forward(m, one, &out));
    /* In training mode one value per channel cannot be normalised, as PyTorch says. */
    ck_assert_lenet_ok(lenet_model_set_training(m, true));
    ck_assert_int_eq(lenet_model_forward(m, one, &out), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "more than 1 value per channel") != NULL &&
                      strstr(lenet_last_error(), "BatchNorm1d") != NULL,
                  "message: %s", lenet_last_error());
    ck_assert_float_eq(lenet_tensor_cdata(lenet_model_buffer(m, 2))[0], 0.0f);
    lenet_tensor_free(one);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_batchnorm_gradients_match_finite_differences_in_both_modes)
{
    for (int training = 1; training >= 0; training--) {
        lenet_model *m = lenet_model_create();
        ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(3, 3, 1, 0)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, 0.1f)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(6)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-5f, 0.1f)));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(3)));
        ck_assert_lenet_ok(lenet_model_build(m, 2, 5, 5));
        ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 4));
        /* Non-trivial affine parameters and running statistics. */
        lenet_test_fill(lenet_model_param(m, 2), 5, 0.5f, 1.5f);
        lenet_test_fill(lenet_model_param(m, 3), 6, -0.5f, 0.5f);
        lenet_test_fill(lenet_model_buffer(m, 1), 7, 0.5f, 2.0f);
        ck_assert_lenet_ok(lenet_model_set_training(m, training));
        lenet_tensor *x = random_input(20, 2, 5, 5, 8, -1.0f, 1.0f);
        ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.skip_input = true, .eps = 1e-3, .tol = 2e-2});
        lenet_tensor_free(x);
        lenet_model_free(m);
    }
}
END_TEST

/* Output, gradients and buffers of one training forward + backward with `threads` threads. */
static void run_with_threads(int threads, const lenet_tensor *x, float *out, size_t *count)
{
    ck_assert_lenet_ok(lenet_threads_set(threads));
    lenet_model *m = bn_model(0.1f);
    const lenet_tensor *y;
    for (int step = 0; step < 2; step++)
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){lenet_tensor_dim(y, 0), 4});
    lenet_test_fill(dy, 9, -1.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    size_t at = lenet_tensor_numel(y);
    memcpy(out, lenet_tensor_cdata(y), at * sizeof(float));
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        const lenet_tensor *g = lenet_model_grad(m, i);
        memcpy(out + at, lenet_tensor_cdata(g), lenet_tensor_numel(g) * sizeof(float));
        at += lenet_tensor_numel(g);
    }
    for (size_t i = 0; i < lenet_model_buffer_count(m); i++) {
        const lenet_tensor *b = lenet_model_buffer(m, i);
        memcpy(out + at, lenet_tensor_cdata(b), lenet_tensor_numel(b) * sizeof(float));
        at += lenet_tensor_numel(b);
    }
    *count = at;
    lenet_tensor_free(dy);
    lenet_model_free(m);
}

START_TEST(test_batchnorm_and_dropout_are_bit_identical_for_1_2_and_4_threads)
{
    const int batches[] = {2, 17, 40};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        lenet_tensor *x = random_input(batches[b], 2, 6, 6, 10 + b, -1.0f, 1.0f);
        float *one = malloc(8192 * sizeof *one), *other = malloc(8192 * sizeof *other);
        size_t n_one, n_other;
        run_with_threads(1, x, one, &n_one);
        ck_assert_uint_lt(n_one, 8192);
        for (int threads = 2; threads <= 4; threads *= 2) {
            run_with_threads(threads, x, other, &n_other);
            ck_assert_uint_eq(n_one, n_other);
            ck_assert_msg(memcmp(one, other, n_one * sizeof *one) == 0, "batch %d: %d threads differ from 1",
                          batches[b], threads);
        }
        free(one);
        free(other);
        lenet_tensor_free(x);
    }
    ck_assert_lenet_ok(lenet_threads_set(0));
}
END_TEST

START_TEST(test_dropout_drops_at_its_rate_scales_the_rest_and_is_the_identity_in_evaluation)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_dropout(0.3f)));
    lenet_tensor *x = random_input(40, 1, 25, 40, 11, 0.5f, 1.5f);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    const size_t n = lenet_tensor_numel(x);
    size_t dropped = 0;
    for (size_t k = 0; k < n; k++) {
        float v = lenet_tensor_cdata(y)[k];
        if (v == 0.0f)
            dropped++;
        else
            ck_assert_msg(v == lenet_tensor_cdata(x)[k] * (1.0f / 0.7f), "element %zu: %g from %g", k, (double)v,
                          (double)lenet_tensor_cdata(x)[k]);
    }
    /* 40,000 draws at p = 0.3: the standard deviation of the rate is 0.0023. */
    double rate = (double)dropped / (double)n;
    ck_assert_msg(fabs(rate - 0.3) < 0.012, "dropped %.4f of the values", rate);
    /* The backward uses the same mask: the gradient is zero exactly where the output was dropped. */
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){40, 1000}), *dx = lenet_tensor_create(4, (int[]){40, 1, 25, 40});
    lenet_test_fill(dy, 12, 0.5f, 1.0f);
    ck_assert_lenet_ok(lenet_test_input_grad(m, x, dy, dx));
    const float *masks = lenet_tensor_cdata(lenet_model_activation(m, 1));
    for (size_t k = 0; k < n; k++)
        ck_assert_msg((lenet_tensor_cdata(dx)[k] == 0.0f) == (masks[k] == 0.0f), "element %zu", k);
    /* A second training forward draws new masks. */
    float *first = malloc(n * sizeof *first);
    memcpy(first, lenet_tensor_cdata(lenet_model_activation(m, 1)), n * sizeof *first);
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ck_assert(memcmp(first, lenet_tensor_cdata(y), n * sizeof *first) != 0);
    /* Evaluation and predict pass the input through. */
    ck_assert_lenet_ok(lenet_model_set_training(m, false));
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ck_assert_mem_eq(lenet_tensor_cdata(y), lenet_tensor_cdata(x), n * sizeof(float));
    lenet_tensor *p = lenet_tensor_create(2, (int[]){40, 1000});
    ck_assert_lenet_ok(lenet_model_predict(m, x, p));
    ck_assert_mem_eq(lenet_tensor_cdata(p), lenet_tensor_cdata(x), n * sizeof(float));
    free(first);
    lenet_tensor_free(p);
    lenet_tensor_free(dy);
    lenet_tensor_free(dx);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_dropout_masks_repeat_for_the_same_seed_and_step)
{
    lenet_tensor *x = random_input(20, 1, 4, 4, 13, 0.5f, 1.5f);
    float *runs[2];
    for (int r = 0; r < 2; r++) {
        lenet_model *m = lenet_model_create();
        ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
        ck_assert_lenet_ok(lenet_model_add(m, lenet_dropout(0.5f)));
        ck_assert_lenet_ok(lenet_model_build(m, 1, 4, 4));
        ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 42));
        const lenet_tensor *y;
        runs[r] = malloc(2 * 320 * sizeof(float));
        for (int step = 0; step < 2; step++) {
            ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
            memcpy(runs[r] + step * 320, lenet_tensor_cdata(y), 320 * sizeof(float));
        }
        ck_assert(memcmp(runs[r], runs[r] + 320, 320 * sizeof(float)) != 0);
        lenet_model_free(m);
    }
    ck_assert_mem_eq(runs[0], runs[1], 2 * 320 * sizeof(float));
    free(runs[0]);
    free(runs[1]);
    lenet_tensor_free(x);
}
END_TEST

START_TEST(test_constructors_refuse_bad_arguments)
{
    ck_assert_ptr_null(lenet_batchnorm2d(0.0f, 0.1f));
    ck_assert_msg(strstr(lenet_last_error(), "BatchNorm2d") != NULL, "message: %s", lenet_last_error());
    ck_assert_ptr_null(lenet_batchnorm1d(1e-5f, 1.5f));
    ck_assert_ptr_null(lenet_batchnorm1d(NAN, 0.1f));
    ck_assert_ptr_null(lenet_batchnorm1d(1e-5f, -0.1f));
    ck_assert_ptr_null(lenet_dropout(1.0f));
    ck_assert_msg(strstr(lenet_last_error(), "Dropout") != NULL, "message: %s", lenet_last_error());
    ck_assert_ptr_null(lenet_dropout(-0.1f));
    ck_assert_ptr_null(lenet_dropout(NAN));
    /* BatchNorm2d needs images and BatchNorm1d features. */
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, 0.1f)));
    ck_assert_int_eq(lenet_model_build(m, 1, 4, 4), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "(C, H, W)") != NULL, "message: %s", lenet_last_error());
    lenet_model_free(m);
    m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-5f, 0.1f)));
    ck_assert_int_eq(lenet_model_build(m, 1, 4, 4), LENET_ESHAPE);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_print_lists_the_new_layers_and_counts_only_trainable_parameters)
{
    lenet_model *m = bn_model(0.1f);
    /* Conv 3*2*9+3, BN2d 3+3, Linear 8*48+8, BN1d 8+8, Linear 4*8+4: buffers are not parameters. */
    ck_assert_uint_eq(lenet_model_param_numel(m), 57 + 6 + 392 + 16 + 36);
    FILE *out = tmpfile();
    ck_assert_lenet_ok(lenet_model_print(m, out));
    rewind(out);
    char text[4096] = "";
    size_t got = fread(text, 1, sizeof text - 1, out);
    text[got] = '\0';
    fclose(out);
    ck_assert_msg(strstr(text, "BatchNorm2d") && strstr(text, "BatchNorm1d") && strstr(text, "Dropout") &&
                      strstr(text, "Total trainable parameters: 507"),
                  "%s", text);
    lenet_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("norm");
    TCase *tc = tcase_create("norm");
    tcase_add_test(tc, test_batchnorm2d_normalises_each_channel_over_the_whole_batch_and_tracks_running_statistics);
    tcase_add_test(tc, test_batchnorm_in_evaluation_mode_uses_the_running_statistics);
    tcase_add_test(tc, test_batchnorm_gradients_match_finite_differences_in_both_modes);
    tcase_add_test(tc, test_batchnorm_and_dropout_are_bit_identical_for_1_2_and_4_threads);
    tcase_add_test(tc, test_dropout_drops_at_its_rate_scales_the_rest_and_is_the_identity_in_evaluation);
    tcase_add_test(tc, test_dropout_masks_repeat_for_the_same_seed_and_step);
    tcase_add_test(tc, test_constructors_refuse_bad_arguments);
    tcase_add_test(tc, test_print_lists_the_new_layers_and_counts_only_trainable_parameters);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
