/* Softmax cross-entropy (nn.CrossEntropyLoss, mean over the batch): values, gradient, stability, errors. */
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* A (rows, cols) tensor holding `values` (row-major). */
static lenet_tensor *matrix(int rows, int cols, const float *values)
{
    lenet_tensor *t = lenet_tensor_create(2, (int[]){rows, cols});
    ck_assert_ptr_nonnull(t);
    if (values)
        memcpy(lenet_tensor_data(t), values, (size_t)rows * cols * sizeof(float));
    return t;
}

/* The loss of one row in double: log(sum_j exp(z_j)) - z_label, shifted by the maximum. */
static double row_loss(const float *z, int k, int label)
{
    double zmax = z[0];
    for (int j = 1; j < k; j++)
        zmax = fmax(zmax, z[j]);
    double sum = 0.0;
    for (int j = 0; j < k; j++)
        sum += exp((double)z[j] - zmax);
    return log(sum) - ((double)z[label] - zmax);
}

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

/* Fills dlogits with a sentinel, runs the loss with *loss preset to a sentinel, and checks both are untouched. */
static lenet_status expect_untouched(const lenet_tensor *logits, const int32_t *labels, lenet_tensor *dlogits)
{
    float loss = 42.0f;
    if (dlogits)
        for (size_t i = 0; i < lenet_tensor_numel(dlogits); i++)
            lenet_tensor_data(dlogits)[i] = 7.0f;
    lenet_error_clear();
    lenet_status st = lenet_cross_entropy(logits, labels, &loss, dlogits);
    ck_assert_msg(st < 0, "expected an error, got %s", lenet_status_str(st));
    ck_assert_str_ne(lenet_last_error(), "");
    ck_assert_float_eq(loss, 42.0f);
    if (dlogits)
        for (size_t i = 0; i < lenet_tensor_numel(dlogits); i++)
            ck_assert_float_eq(lenet_tensor_cdata(dlogits)[i], 7.0f);
    return st;
}

START_TEST(test_cross_entropy_matches_hand_computed_values)
{
    lenet_tensor *logits = matrix(2, 3, (float[]){1, 2, 3, 1, 1, 1});
    lenet_tensor *grad = matrix(2, 3, NULL);
    int32_t labels[2] = {2, 0};
    float loss = -1.0f;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, labels, &loss, grad));
    /* Row 0: log(e + e^2 + e^3) - 3 = 0.4076059644; row 1: log 3 = 1.0986122887; mean 0.7531091265. */
    ck_assert_float_eq_tol(loss, 0.7531091265f, 1e-6f);
    double s0 = exp(1) + exp(2) + exp(3);
    const double want[6] = {
        exp(1) / s0 / 2, exp(2) / s0 / 2, (exp(3) / s0 - 1) / 2, (1.0 / 3 - 1) / 2, 1.0 / 6, 1.0 / 6,
    };
    /* The same numbers written out: (softmax - onehot) / N. */
    const double literal[6] = {0.0450152866, 0.1223642355, -0.1673795221, -0.3333333333, 0.1666666667,
                               0.1666666667};
    for (int i = 0; i < 6; i++) {
        ck_assert_double_eq_tol(want[i], literal[i], 1e-9);
        ck_assert_msg(fabs(lenet_tensor_cdata(grad)[i] - want[i]) < 1e-6, "dlogits[%d] = %.9g, expected %.9g", i,
                      (double)lenet_tensor_cdata(grad)[i], want[i]);
    }

    /* Without dlogits: the same loss. */
    float loss2 = -1.0f;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, labels, &loss2, NULL));
    ck_assert_float_eq(loss2, loss);

    /* The other labels of row 0 and a single sample. */
    lenet_tensor *one = matrix(1, 3, (float[]){1, 2, 3});
    for (int32_t label = 0; label < 3; label++) {
        ck_assert_lenet_ok(lenet_cross_entropy(one, &label, &loss, NULL));
        ck_assert_float_eq_tol(loss, (float)(log(s0) - (label + 1)), 1e-6f);
    }
    lenet_tensor_free(one);
    lenet_tensor_free(grad);
    lenet_tensor_free(logits);
}
END_TEST

START_TEST(test_cross_entropy_is_the_mean_of_the_sample_losses)
{
    enum { N = 5, K = 7 };
    lenet_tensor *logits = matrix(N, K, NULL);
    lenet_test_fill(logits, 3, -4.0f, 4.0f);
    int32_t labels[N] = {0, 6, 3, 3, 1};
    float batch_loss;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, labels, &batch_loss, NULL));
    double sum = 0.0;
    for (int i = 0; i < N; i++) {
        lenet_tensor *row = matrix(1, K, lenet_tensor_cdata(logits) + i * K);
        float single;
        ck_assert_lenet_ok(lenet_cross_entropy(row, &labels[i], &single, NULL));
        double want = row_loss(lenet_tensor_cdata(logits) + i * K, K, labels[i]);
        ck_assert_msg(fabs(single - want) < 1e-6 * fmax(1.0, want), "sample %d: %.9g, expected %.9g", i,
                      (double)single, want);
        sum += single;
        lenet_tensor_free(row);
    }
    ck_assert_double_eq_tol(batch_loss, sum / N, 1e-6);

    /* Uniform logits over many classes: log K whatever the values. */
    enum { MANY = 1000 };
    lenet_tensor *flat = matrix(2, MANY, NULL);
    for (int j = 0; j < 2 * MANY; j++)
        lenet_tensor_data(flat)[j] = j < MANY ? 0.0f : -37.5f;
    int32_t two[2] = {17, 999};
    ck_assert_lenet_ok(lenet_cross_entropy(flat, two, &batch_loss, NULL));
    ck_assert_float_eq_tol(batch_loss, (float)log(MANY), 1e-5f);
    lenet_tensor_free(flat);
    lenet_tensor_free(logits);
}
END_TEST

START_TEST(test_cross_entropy_gradient_matches_finite_differences)
{
    enum { N = 4, K = 5 };
    lenet_tensor *logits = matrix(N, K, NULL);
    lenet_test_fill(logits, 11, -3.0f, 3.0f);
    lenet_tensor *grad = matrix(N, K, NULL);
    /* Overwritten, not accumulated into. */
    for (int i = 0; i < N * K; i++)
        lenet_tensor_data(grad)[i] = 5.0f;
    int32_t labels[N] = {0, 4, 2, 1};
    float loss;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, labels, &loss, grad));

    const float eps = 1e-2f;
    double worst = 0.0;
    float *z = lenet_tensor_data(logits);
    for (int i = 0; i < N * K; i++) {
        float saved = z[i], plus, minus;
        z[i] = saved + eps;
        ck_assert_lenet_ok(lenet_cross_entropy(logits, labels, &plus, NULL));
        z[i] = saved - eps;
        ck_assert_lenet_ok(lenet_cross_entropy(logits, labels, &minus, NULL));
        z[i] = saved;
        double numeric = ((double)plus - minus) / (2.0 * eps);
        double err = fabs(numeric - lenet_tensor_cdata(grad)[i]);
        ck_assert_msg(err < 2e-4, "dlogits[%d] = %.7g, finite differences %.7g", i,
                      (double)lenet_tensor_cdata(grad)[i], numeric);
        worst = fmax(worst, err);
    }
    /* Exactly (softmax - onehot) / N, and each row sums to zero. */
    for (int i = 0; i < N; i++) {
        const float *row = lenet_tensor_cdata(logits) + i * K;
        double zmax = row[0], sum = 0.0, gsum = 0.0;
        for (int j = 1; j < K; j++)
            zmax = fmax(zmax, row[j]);
        for (int j = 0; j < K; j++)
            sum += exp(row[j] - zmax);
        for (int j = 0; j < K; j++) {
            double want = (exp(row[j] - zmax) / sum - (j == labels[i])) / N;
            ck_assert_double_eq_tol(lenet_tensor_cdata(grad)[i * K + j], want, 1e-7);
            gsum += lenet_tensor_cdata(grad)[i * K + j];
        }
        ck_assert_double_eq_tol(gsum, 0.0, 1e-6);
    }
    fprintf(stderr, "cross entropy vs finite differences: worst absolute error %.2e\n", worst);
    lenet_tensor_free(grad);
    lenet_tensor_free(logits);
}
END_TEST

/* Runs a one-row loss and checks it against `want` (relative 1e-6) and the gradient is finite and sums to 0. */
static void check_row(const float *z, int k, int32_t label, double want)
{
    lenet_tensor *logits = matrix(1, k, z);
    lenet_tensor *grad = matrix(1, k, NULL);
    float loss = NAN;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, &label, &loss, grad));
    ck_assert_msg(isfinite(loss), "loss %g for logits starting %g", (double)loss, (double)z[0]);
    ck_assert_msg(fabs(loss - want) <= 1e-6 * fmax(1.0, fabs(want)), "loss %.9g, expected %.9g", (double)loss, want);
    double gsum = 0.0;
    for (int j = 0; j < k; j++) {
        float g = lenet_tensor_cdata(grad)[j];
        ck_assert_msg(isfinite(g) && g >= -1.0f && g <= 1.0f, "dlogits[%d] = %g", j, (double)g);
        gsum += g;
    }
    ck_assert_double_eq_tol(gsum, 0.0, 1e-6);
    lenet_tensor_free(grad);
    lenet_tensor_free(logits);
}

START_TEST(test_cross_entropy_is_stable_for_huge_logits)
{
    const float a[3] = {1000.0f, -1000.0f, 0.0f};
    check_row(a, 3, 0, 0.0);
    check_row(a, 3, 1, 2000.0);
    check_row(a, 3, 2, 1000.0);
    check_row((float[]){1000.0f, 1000.0f}, 2, 1, log(2.0));
    check_row((float[]){-1000.0f, -1000.0f, -1000.0f}, 3, 2, log(3.0));
    check_row((float[]){1e30f, -1e30f}, 2, 0, 0.0);
    check_row((float[]){1e30f, -1e30f}, 2, 1, 2.0 * (double)1e30f);
    check_row((float[]){1e30f, 1e30f, 1e30f, 1e30f}, 4, 3, log(4.0));
    check_row((float[]){-1e30f, 0.0f}, 2, 1, 0.0);

    /* The gradient of a saturated row is the exact one-hot difference. */
    lenet_tensor *logits = matrix(2, 3, (float[]){1000, -1000, 0, 1e30f, -1e30f, -1e30f});
    lenet_tensor *grad = matrix(2, 3, NULL);
    int32_t labels[2] = {1, 0};
    float loss;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, labels, &loss, grad));
    ck_assert_float_eq_tol(loss, 1000.0f, 1e-3f);
    const float want[6] = {0.5f, -0.5f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq_tol(lenet_tensor_cdata(grad)[i], want[i], 1e-7f);
    lenet_tensor_free(grad);
    lenet_tensor_free(logits);
}
END_TEST

START_TEST(test_cross_entropy_label_out_of_range_names_the_sample)
{
    lenet_tensor *logits = matrix(3, 3, (float[]){1, 2, 3, 4, 5, 6, 7, 8, 9});
    lenet_tensor *grad = matrix(3, 3, NULL);
    ck_assert_int_eq(expect_untouched(logits, (int32_t[]){0, 2, 3}, grad), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "sample") != NULL && has_int(lenet_last_error(), 2), "message: %s",
                  lenet_last_error());
    ck_assert_int_eq(expect_untouched(logits, (int32_t[]){0, -1, 0}, grad), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "sample 1") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(expect_untouched(logits, (int32_t[]){INT32_MAX, 0, 0}, NULL), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "sample 0") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(expect_untouched(logits, (int32_t[]){1, 1, INT32_MIN}, grad), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "sample 2") != NULL, "message: %s", lenet_last_error());
    /* The boundaries are fine. */
    float loss;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, (int32_t[]){0, 2, 1}, &loss, grad));
    lenet_tensor_free(grad);
    lenet_tensor_free(logits);
}
END_TEST

/* Puts `bad` at each of the given positions of a (2, 3) batch with labels {1, 2} in turn: ENUMERIC each time,
 * with and without dlogits, and nothing written. */
static void check_non_finite(float bad, const int *positions, int count)
{
    int32_t labels[2] = {1, 2};
    lenet_tensor *grad = matrix(2, 3, NULL);
    for (int p = 0; p < count; p++) {
        int at = positions[p];
        float z[6] = {0.5f, -1.0f, 2.0f, 3.0f, 0.0f, -2.0f};
        z[at] = bad;
        lenet_tensor *logits = matrix(2, 3, z);
        lenet_status st = expect_untouched(logits, labels, grad);
        ck_assert_msg(st == LENET_ENUMERIC, "logit %d = %g: %s", at, (double)bad, lenet_status_str(st));
        st = expect_untouched(logits, labels, NULL);
        ck_assert_msg(st == LENET_ENUMERIC, "logit %d = %g without dlogits: %s", at, (double)bad,
                      lenet_status_str(st));
        lenet_tensor_free(logits);
    }
    lenet_tensor_free(grad);
}

START_TEST(test_cross_entropy_non_finite_logits_are_enumeric_and_write_nothing)
{
    const int all[6] = {0, 1, 2, 3, 4, 5}, labelled[2] = {1, 5};
    check_non_finite(NAN, all, 6);
    check_non_finite(-NAN, all, 6);
    check_non_finite(INFINITY, all, 6);
    /* -inf on the labelled class makes the loss infinite. */
    check_non_finite(-INFINITY, labelled, 2);
}
END_TEST

/* Known bug (lib/loss/cross_entropy.c): only the row maximum and the mean are checked, so a -inf logit on
 * another class passes.  loss.h: "LENET_ENUMERIC if a logit or the loss is NaN or infinite". */
START_TEST(test_cross_entropy_minus_infinity_on_other_classes_is_enumeric)
{
    const int others[4] = {0, 2, 3, 4};
    check_non_finite(-INFINITY, others, 4);
}
END_TEST

/* Known bug (lib/loss/cross_entropy.c): the mean is checked in double, then stored as a float that overflows. */
START_TEST(test_cross_entropy_loss_beyond_float_range_is_enumeric)
{
    /* Each logit is finite but the loss, 2 * FLT_MAX, is not representable as a float. */
    lenet_tensor *logits = matrix(1, 2, (float[]){FLT_MAX, -FLT_MAX});
    lenet_tensor *grad = matrix(1, 2, NULL);
    int32_t label = 1;
    ck_assert_int_eq(expect_untouched(logits, &label, grad), LENET_ENUMERIC);
    /* With the other label the loss is 0 and fine. */
    label = 0;
    float loss;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, &label, &loss, grad));
    ck_assert_float_eq(loss, 0.0f);
    lenet_tensor_free(grad);
    lenet_tensor_free(logits);
}
END_TEST

START_TEST(test_cross_entropy_shape_and_null_errors)
{
    int32_t labels[6] = {0, 1, 2, 0, 1, 2};
    float loss;
    lenet_tensor *logits = matrix(2, 3, (float[]){1, 2, 3, 4, 5, 6});
    lenet_tensor *grad = matrix(2, 3, NULL);

    ck_assert_int_eq(lenet_cross_entropy(NULL, labels, &loss, NULL), LENET_EINVAL);
    ck_assert_int_eq(expect_untouched(logits, NULL, grad), LENET_EINVAL);
    ck_assert_int_eq(lenet_cross_entropy(logits, labels, NULL, grad), LENET_EINVAL);

    lenet_tensor *vec = lenet_tensor_create(1, (int[]){6});
    lenet_tensor *cube = lenet_tensor_create(3, (int[]){2, 3, 1});
    lenet_tensor *image = lenet_tensor_create(4, (int[]){2, 3, 1, 1});
    ck_assert_int_eq(expect_untouched(vec, labels, NULL), LENET_ESHAPE);
    ck_assert_int_eq(expect_untouched(cube, labels, NULL), LENET_ESHAPE);
    ck_assert_int_eq(expect_untouched(image, labels, grad), LENET_ESHAPE);

    lenet_tensor *wrong[] = {matrix(2, 4, NULL), matrix(3, 3, NULL), matrix(3, 2, NULL), matrix(1, 6, NULL),
                             lenet_tensor_create(1, (int[]){6}), lenet_tensor_create(3, (int[]){2, 3, 1})};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        ck_assert_ptr_nonnull(wrong[i]);
        ck_assert_int_eq(expect_untouched(logits, labels, wrong[i]), LENET_ESHAPE);
        lenet_tensor_free(wrong[i]);
    }
    lenet_tensor_free(image);
    lenet_tensor_free(cube);
    lenet_tensor_free(vec);
    lenet_tensor_free(grad);
    lenet_tensor_free(logits);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loss");
    TCase *tc = tcase_create("cross_entropy");
    tcase_add_test(tc, test_cross_entropy_matches_hand_computed_values);
    tcase_add_test(tc, test_cross_entropy_is_the_mean_of_the_sample_losses);
    tcase_add_test(tc, test_cross_entropy_gradient_matches_finite_differences);
    tcase_add_test(tc, test_cross_entropy_is_stable_for_huge_logits);
    tcase_add_test(tc, test_cross_entropy_label_out_of_range_names_the_sample);
    tcase_add_test(tc, test_cross_entropy_non_finite_logits_are_enumeric_and_write_nothing);
    tcase_add_test(tc, test_cross_entropy_shape_and_null_errors);
    tcase_add_test(tc, test_cross_entropy_minus_infinity_on_other_classes_is_enumeric);
    tcase_add_test(tc, test_cross_entropy_loss_beyond_float_range_is_enumeric);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
