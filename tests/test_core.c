/* Status codes, the thread-local error message, version, tensors. */
#include <pthread.h>
#include <string.h>

#include "testutil.h"

START_TEST(test_status_strings_are_distinct_and_never_null)
{
    lenet_status all[] = {LENET_OK, LENET_DONE, LENET_EINVAL, LENET_ENOMEM, LENET_EIO, LENET_EFORMAT,
                          LENET_ESHAPE, LENET_ESTATE, LENET_ENUMERIC, LENET_EUNSUPPORTED};
    size_t n = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n; i++) {
        ck_assert_ptr_nonnull(lenet_status_str(all[i]));
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(lenet_status_str(all[i]), lenet_status_str(all[j]));
    }
    ck_assert_str_eq(lenet_status_str((lenet_status)-99), "unknown status");
}
END_TEST

START_TEST(test_version_string_matches_header)
{
    ck_assert_str_eq(lenet_version_string(), LENET_VERSION_STRING);
    ck_assert_int_eq(LENET_VERSION_MAJOR, 0);
}
END_TEST

static void *fail_in_thread(void *arg)
{
    (void)arg;
    lenet_tensor_create(0, NULL);
    return (void *)lenet_last_error();
}

START_TEST(test_last_error_is_per_thread)
{
    lenet_error_clear();
    ck_assert_str_eq(lenet_last_error(), "");
    pthread_t t;
    void *other = NULL;
    ck_assert_int_eq(pthread_create(&t, NULL, fail_in_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &other), 0);
    ck_assert_str_eq(lenet_last_error(), "");
    ck_assert_ptr_null(lenet_conv2d(0, 5, 1, 0));
    ck_assert_msg(strstr(lenet_last_error(), "Conv2d") != NULL, "message: %s", lenet_last_error());
}
END_TEST

START_TEST(test_tensor_create_is_zero_filled_with_shape)
{
    lenet_tensor *t = lenet_tensor_create(4, (int[]){2, 3, 4, 5});
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(lenet_tensor_ndim(t), 4);
    ck_assert_int_eq(lenet_tensor_dim(t, 1), 3);
    ck_assert_int_eq(lenet_tensor_dim(t, -1), 5);
    ck_assert_int_eq(lenet_tensor_dim(t, 4), 0);
    ck_assert_int_eq(lenet_tensor_dim(t, -5), 0);
    ck_assert_uint_eq(lenet_tensor_numel(t), 120);
    for (size_t i = 0; i < 120; i++)
        ck_assert_float_eq(lenet_tensor_cdata(t)[i], 0.0f);
    lenet_tensor_free(t);
}
END_TEST

START_TEST(test_tensor_rejects_bad_shapes_with_message)
{
    ck_assert_ptr_null(lenet_tensor_create(0, (int[]){1}));
    ck_assert_ptr_null(lenet_tensor_create(LENET_TENSOR_MAX_DIMS + 1, (int[LENET_TENSOR_MAX_DIMS + 1]){1}));
    ck_assert_ptr_null(lenet_tensor_create(2, NULL));
    ck_assert_ptr_null(lenet_tensor_create(2, (int[]){3, 0}));
    ck_assert_msg(strstr(lenet_last_error(), "dimension 1") != NULL, "message: %s", lenet_last_error());
    ck_assert_ptr_null(lenet_tensor_create(2, (int[]){-4, 2}));
    ck_assert_ptr_null(lenet_tensor_create(4, (int[]){1 << 30, 1 << 30, 1 << 30, 1 << 30}));
}
END_TEST

START_TEST(test_tensor_accessors_accept_null)
{
    lenet_tensor_free(NULL);
    ck_assert_int_eq(lenet_tensor_ndim(NULL), 0);
    ck_assert_int_eq(lenet_tensor_dim(NULL, 0), 0);
    ck_assert_uint_eq(lenet_tensor_numel(NULL), 0);
    ck_assert_ptr_null(lenet_tensor_data(NULL));
    ck_assert_ptr_null(lenet_tensor_cdata(NULL));
    ck_assert_int_eq(lenet_tensor_copy(NULL, NULL), LENET_EINVAL);
}
END_TEST

START_TEST(test_tensor_copy_checks_shapes)
{
    lenet_tensor *a = lenet_tensor_create(2, (int[]){2, 3});
    lenet_tensor *b = lenet_tensor_create(2, (int[]){2, 3});
    lenet_tensor *c = lenet_tensor_create(2, (int[]){3, 2});
    lenet_test_fill(a, 1, -1.0f, 1.0f);
    ck_assert_lenet_ok(lenet_tensor_copy(b, a));
    ck_assert_mem_eq(lenet_tensor_cdata(a), lenet_tensor_cdata(b), 6 * sizeof(float));
    ck_assert_int_eq(lenet_tensor_copy(c, a), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "[3, 2]") != NULL, "message: %s", lenet_last_error());
    lenet_tensor_free(a);
    lenet_tensor_free(b);
    lenet_tensor_free(c);
}
END_TEST

START_TEST(test_model_reports_its_input_shape_and_output_size)
{
    int c = -1, h = -1, w = -1;
    ck_assert_int_eq(lenet_model_input_shape(NULL, &c, &h, &w), LENET_EINVAL);
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_int_eq(lenet_model_input_shape(m, &c, &h, &w), LENET_ESTATE);
    ck_assert_int_eq(c, -1);
    ck_assert_uint_eq(lenet_model_output_size(m), 0);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_input_shape(m, &c, &h, &w));
    ck_assert_int_eq(c, 1);
    ck_assert_int_eq(h, 28);
    ck_assert_int_eq(w, 28);
    ck_assert_lenet_ok(lenet_model_input_shape(m, NULL, NULL, &w));
    ck_assert_uint_eq(lenet_model_output_size(m), 10);
    ck_assert_uint_eq(lenet_model_output_size(NULL), 0);
    lenet_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_status_strings_are_distinct_and_never_null);
    tcase_add_test(tc, test_version_string_matches_header);
    tcase_add_test(tc, test_last_error_is_per_thread);
    tcase_add_test(tc, test_tensor_create_is_zero_filled_with_shape);
    tcase_add_test(tc, test_tensor_rejects_bad_shapes_with_message);
    tcase_add_test(tc, test_tensor_accessors_accept_null);
    tcase_add_test(tc, test_tensor_copy_checks_shapes);
    tcase_add_test(tc, test_model_reports_its_input_shape_and_output_size);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
