#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lenet_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void lenet_test_add_d2l_layers(lenet_model *m)
{
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(6, 5, 1, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(16, 5, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(120)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(84)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(10)));
}

lenet_model *lenet_test_d2l_model(void)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    lenet_test_add_d2l_layers(m);
    return m;
}

void lenet_test_fill(lenet_tensor *t, uint64_t seed, float lo, float hi)
{
    uint64_t x = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    float *p = lenet_tensor_data(t);
    for (size_t i = 0; i < lenet_tensor_numel(t); i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = lo + (hi - lo) * (float)((x >> 40) * 0x1.0p-24);
    }
}

const char *lenet_test_fixture(const char *name)
{
    static char path[1024];
    const char *dir = getenv("LENET_TEST_FIXTURES");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/fixtures", name);
    return path;
}

double lenet_test_max_rel_err(const float *a, const float *b, size_t n, double floor)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double denom = fabs((double)b[i]) > floor ? fabs((double)b[i]) : floor;
        double err = fabs((double)a[i] - (double)b[i]) / denom;
        if (err > worst || isnan(err))
            worst = isnan(err) ? INFINITY : err;
    }
    return worst;
}

float *lenet_test_copy_tensors(lenet_model *m, bool buffers, size_t *count)
{
    const size_t tensors = buffers ? lenet_model_buffer_count(m) : lenet_model_param_count(m);
    size_t total = 0;
    for (size_t i = 0; i < tensors; i++)
        total += lenet_tensor_numel(buffers ? lenet_model_buffer(m, i) : lenet_model_param(m, i));
    float *copy = malloc((total ? total : 1) * sizeof *copy);
    ck_assert_ptr_nonnull(copy);
    size_t at = 0;
    for (size_t i = 0; i < tensors; i++) {
        const lenet_tensor *t = buffers ? lenet_model_buffer(m, i) : lenet_model_param(m, i);
        memcpy(copy + at, lenet_tensor_cdata(t), lenet_tensor_numel(t) * sizeof *copy);
        at += lenet_tensor_numel(t);
    }
    *count = total;
    return copy;
}
