/* Numerical faults in training (issue 8): a step whose loss, gradients or updated parameters hold a NaN or an
 * infinity returns LENET_ENUMERIC naming the first layer where it appeared, and leaves the parameters exactly as
 * they were before that step. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

/* ---- a tiny IDX data set in a private directory ---- */

static char dir[256];
static char images_path[300], labels_path[300];

static void put_be32(FILE *f, uint32_t v)
{
    const unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                                (unsigned char)v};
    ck_assert_uint_eq(fwrite(b, 1, 4, f), 4);
}

/* n images of side x side pixels (a fixed pseudo-random pattern) with labels i % classes. */
static lenet_dataset *make_dataset(uint32_t n, uint32_t side, int classes)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/lenet-numeric-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(images_path, sizeof images_path, "%s/images", dir);
    snprintf(labels_path, sizeof labels_path, "%s/labels", dir);
    FILE *f = fopen(images_path, "wb");
    ck_assert_ptr_nonnull(f);
    put_be32(f, 0x00000803);
    put_be32(f, n);
    put_be32(f, side);
    put_be32(f, side);
    uint32_t x = 12345;
    for (size_t i = 0; i < (size_t)n * side * side; i++) {
        x = x * 1103515245u + 12345u;
        fputc((int)(x >> 24), f);
    }
    ck_assert_int_eq(fclose(f), 0);
    f = fopen(labels_path, "wb");
    ck_assert_ptr_nonnull(f);
    put_be32(f, 0x00000801);
    put_be32(f, n);
    for (uint32_t i = 0; i < n; i++)
        fputc((int)(i % (uint32_t)classes), f);
    ck_assert_int_eq(fclose(f), 0);
    lenet_dataset *d = lenet_dataset_open_idx(images_path, labels_path);
    ck_assert_msg(d != NULL, "%s", lenet_last_error());
    return d;
}

static void remove_dataset(lenet_dataset *d)
{
    lenet_dataset_free(d);
    unlink(images_path);
    unlink(labels_path);
    rmdir(dir);
}

/* ---- parameters ---- */

static float *snapshot(lenet_model *m)
{
    size_t total = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        total += lenet_tensor_numel(lenet_model_param(m, i));
    float *copy = malloc((total ? total : 1) * sizeof *copy);
    ck_assert_ptr_nonnull(copy);
    size_t at = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        const lenet_tensor *t = lenet_model_param(m, i);
        memcpy(copy + at, lenet_tensor_cdata(t), lenet_tensor_numel(t) * sizeof(float));
        at += lenet_tensor_numel(t);
    }
    return copy;
}

/* Bit-for-bit equality (NaN included) of the parameters with a snapshot. */
static bool params_equal(lenet_model *m, const float *copy)
{
    float *now = snapshot(m);
    size_t total = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        total += lenet_tensor_numel(lenet_model_param(m, i));
    bool same = memcmp(now, copy, total * sizeof(float)) == 0;
    free(now);
    return same;
}

static lenet_tensor *param_named(lenet_model *m, const char *name)
{
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        if (strcmp(lenet_model_param_name(m, i), name) == 0)
            return lenet_model_param(m, i);
    ck_abort_msg("no parameter %s", name);
    return NULL;
}

static void fill(lenet_tensor *t, float value)
{
    for (size_t i = 0; i < lenet_tensor_numel(t); i++)
        lenet_tensor_data(t)[i] = value;
}

/* Keeps a copy of the parameters after every successful step. */
typedef struct step_log {
    lenet_model *m;
    float *last;
    int steps;
} step_log;

static void record_step(void *user, size_t done, size_t total, const lenet_metrics *so_far)
{
    step_log *log = user;
    free(log->last);
    log->last = snapshot(log->m);
    log->steps++;
}

static lenet_model *d2l_model(void)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 0));
    return m;
}

/* Flatten, Linear(4), Linear(2) over 4x4 images, with the weights chosen by each test. */
static lenet_model *two_linear_model(void)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(4)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 4, 4));
    return m;
}

/* Sets layer 2's weight rows to +magnitude and -magnitude, so the gradient reaching layer 1 is about
 * 2 * magnitude times the loss gradient, while the forward pass stays small when layer 1's output is small. */
static void set_opposite_rows(lenet_model *m, float magnitude)
{
    lenet_tensor *w = param_named(m, "2.weight");
    for (int j = 0; j < 4; j++) {
        lenet_tensor_data(w)[j] = magnitude;
        lenet_tensor_data(w)[4 + j] = -magnitude;
    }
    fill(param_named(m, "2.bias"), 0.0f);
}

START_TEST(test_an_enormous_learning_rate_on_the_d2l_lenet_is_enumeric_and_keeps_the_parameters_of_the_last_good_step)
{
    lenet_dataset *d = make_dataset(96, 28, 10);
    lenet_model *m = d2l_model();
    /* Not 1e6: the sigmoids saturate, which caps every gradient, so at lr 1e6 (or even 1e30) the loss grows but
     * stays finite.  At 1e37 the last layer's weights reach ~1e37 and its 84-term sums overflow. */
    lenet_optimizer *o = lenet_sgd_create(m, 1e37f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 16, true, 7);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    step_log log = {.m = m, .last = snapshot(m)};
    lenet_status st = LENET_OK;
    int epochs = 0;
    for (; epochs < 20 && st == LENET_OK; epochs++)
        st = lenet_train_epoch(m, o, it, record_step, &log, NULL);
    ck_assert_msg(st == LENET_ENUMERIC, "lr 1e37 gave %s after %d epochs (%s)", lenet_status_str(st), epochs,
                  lenet_last_error());
    ck_assert_msg(strstr(lenet_last_error(), "layer ") != NULL && strstr(lenet_last_error(), "not finite") != NULL,
                  "the message names no layer: %s", lenet_last_error());
    ck_assert_msg(params_equal(m, log.last), "the parameters changed in the failing step (%s)", lenet_last_error());
    /* And the model is still usable: a forward pass on the restored parameters works. */
    lenet_tensor *x = lenet_tensor_create(4, (int[]){2, 1, 28, 28});
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor_free(x);
    free(log.last);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    remove_dataset(d);
}
END_TEST

START_TEST(test_a_nan_weight_is_blamed_on_the_first_layer_whose_output_it_poisons)
{
    lenet_dataset *d = make_dataset(32, 28, 10);
    lenet_model *m = d2l_model();
    lenet_tensor_data(param_named(m, "3.weight"))[17] = NAN;
    float *before = snapshot(m);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 16, false, 0);
    lenet_error_clear();
    lenet_status st = lenet_train_epoch(m, o, it, NULL, NULL, NULL);
    ck_assert_int_eq(st, LENET_ENUMERIC);
    ck_assert_msg(strstr(lenet_last_error(), "layer 3 (Conv2d)") != NULL, "message: %s", lenet_last_error());
    ck_assert_msg(strstr(lenet_last_error(), "NaN") != NULL, "message: %s", lenet_last_error());
    ck_assert_msg(strstr(lenet_last_error(), "after 0 examples") != NULL, "message: %s", lenet_last_error());
    ck_assert_msg(params_equal(m, before), "the parameters changed");
    free(before);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    remove_dataset(d);
}
END_TEST

START_TEST(test_an_infinite_bias_of_the_last_layer_is_named_and_evaluate_reports_it_too)
{
    lenet_dataset *d = make_dataset(32, 28, 10);
    lenet_model *m = d2l_model();
    lenet_tensor_data(param_named(m, "11.bias"))[4] = INFINITY;
    float *before = snapshot(m);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 16, false, 0);
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, NULL), LENET_ENUMERIC);
    ck_assert_msg(strstr(lenet_last_error(), "layer 11 (Linear)") != NULL, "message: %s", lenet_last_error());
    ck_assert_msg(strstr(lenet_last_error(), "infinity") != NULL, "message: %s", lenet_last_error());
    ck_assert_msg(params_equal(m, before), "the parameters changed");
    lenet_error_clear();
    lenet_metrics mt = {.loss = 42.0};
    ck_assert_int_eq(lenet_evaluate(m, it, &mt), LENET_ENUMERIC);
    ck_assert_msg(strstr(lenet_last_error(), "evaluate") != NULL &&
                      strstr(lenet_last_error(), "layer 11 (Linear)") != NULL,
                  "message: %s", lenet_last_error());
    ck_assert(mt.loss == 42.0); /* metrics are not written on failure */
    free(before);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    remove_dataset(d);
}
END_TEST

START_TEST(test_a_gradient_that_overflows_is_enumeric_before_the_update)
{
    lenet_dataset *d = make_dataset(8, 4, 1); /* every label 0 */
    lenet_model *m = two_linear_model();
    fill(param_named(m, "1.weight"), 0.0f);
    fill(param_named(m, "1.bias"), 1e-37f);
    /* Logits -120 and +120: finite, and all wrong, so each sample sends 1.5e38 back into layer 1, whose bias
     * gradient sums 4 of them: 6e38 overflows. */
    set_opposite_rows(m, -3e38f);
    float *before = snapshot(m);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    lenet_error_clear();
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, NULL), LENET_ENUMERIC);
    ck_assert_msg(strstr(lenet_last_error(), "gradient") != NULL &&
                      strstr(lenet_last_error(), "layer 1 (Linear)") != NULL,
                  "message: %s", lenet_last_error());
    ck_assert_msg(params_equal(m, before), "the parameters changed");
    free(before);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    remove_dataset(d);
}
END_TEST

START_TEST(test_an_update_that_overflows_restores_the_parameters_of_before_the_step)
{
    lenet_dataset *d = make_dataset(8, 4, 2);
    lenet_model *m = two_linear_model();
    fill(param_named(m, "1.weight"), 0.0f);
    fill(param_named(m, "1.bias"), 1e-9f);
    set_opposite_rows(m, 1e10f); /* gradients into layer 1 about 1e10: finite; times lr 1e30: not */
    float *before = snapshot(m);
    lenet_optimizer *o = lenet_sgd_create(m, 1e30f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    lenet_error_clear();
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, NULL), LENET_ENUMERIC);
    ck_assert_msg(strstr(lenet_last_error(), "update") != NULL && strstr(lenet_last_error(), "1.weight") != NULL &&
                      strstr(lenet_last_error(), "layer 1 (Linear)") != NULL,
                  "message: %s", lenet_last_error());
    ck_assert_msg(params_equal(m, before), "the parameters are not those of before the step");
    /* With a sane learning rate the same model trains on. */
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 1e-12f));
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL));
    free(before);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    remove_dataset(d);
}
END_TEST

START_TEST(test_an_update_that_overflows_also_restores_the_momentum)
{
    /* A step that fails must leave no trace: after it, training on with a sane learning rate gives exactly what
     * a fresh optimizer gives, momentum buffer and step count included. */
    lenet_dataset *d = make_dataset(8, 4, 2);
    lenet_model *m = two_linear_model();
    fill(param_named(m, "1.weight"), 0.0f);
    fill(param_named(m, "1.bias"), 1e-9f);
    set_opposite_rows(m, 1e10f);
    float *before = snapshot(m);
    lenet_optimizer *o = lenet_sgd_create(m, 1e30f, 0.9f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, NULL), LENET_ENUMERIC);
    ck_assert_msg(strstr(lenet_last_error(), "optimizer's state") != NULL, "message: %s", lenet_last_error());
    ck_assert_msg(params_equal(m, before), "the parameters are not those of before the step");
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 1e-12f));
    ck_assert_lenet_ok(lenet_iter_reset(it));
    for (int epoch = 0; epoch < 2; epoch++)
        ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL));
    float *after_failure = snapshot(m);

    lenet_model *fresh = two_linear_model();
    fill(param_named(fresh, "1.weight"), 0.0f);
    fill(param_named(fresh, "1.bias"), 1e-9f);
    set_opposite_rows(fresh, 1e10f);
    lenet_optimizer *fo = lenet_sgd_create(fresh, 1e-12f, 0.9f, 0.0f);
    lenet_iter *fit = lenet_iter_create(d, 4, false, 0);
    for (int epoch = 0; epoch < 2; epoch++)
        ck_assert_lenet_ok(lenet_train_epoch(fresh, fo, fit, NULL, NULL, NULL));
    ck_assert_msg(params_equal(fresh, after_failure), "training after the failed step differs from a fresh start");
    free(before);
    free(after_failure);
    lenet_iter_free(fit);
    lenet_optimizer_free(fo);
    lenet_model_free(fresh);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    remove_dataset(d);
}
END_TEST

START_TEST(test_finite_training_is_not_flagged)
{
    lenet_dataset *d = make_dataset(48, 28, 10);
    lenet_model *m = d2l_model();
    lenet_optimizer *o = lenet_sgd_create(m, 0.9f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 16, true, 1);
    step_log log = {.m = m};
    lenet_metrics mt;
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, record_step, &log, &mt));
    ck_assert_int_eq(log.steps, 3);
    ck_assert(isfinite(mt.loss) && mt.examples == 48);
    free(log.last);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    remove_dataset(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("numeric");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_an_enormous_learning_rate_on_the_d2l_lenet_is_enumeric_and_keeps_the_parameters_of_the_last_good_step);
    tcase_add_test(tc, test_a_nan_weight_is_blamed_on_the_first_layer_whose_output_it_poisons);
    tcase_add_test(tc, test_an_infinite_bias_of_the_last_layer_is_named_and_evaluate_reports_it_too);
    tcase_add_test(tc, test_a_gradient_that_overflows_is_enumeric_before_the_update);
    tcase_add_test(tc, test_an_update_that_overflows_restores_the_parameters_of_before_the_step);
    tcase_add_test(tc, test_an_update_that_overflows_also_restores_the_momentum);
    tcase_add_test(tc, test_finite_training_is_not_flagged);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
