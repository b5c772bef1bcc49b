/* Shared helpers for the Check suites. */
#ifndef LENET_TESTUTIL_H
#define LENET_TESTUTIL_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lenet/lenet.h>

/* Runs one suite and returns the process exit code. */
int lenet_test_run(Suite *s);

/* Appends the d2l LeNet's 12 layers to m; fails the test on error. */
void lenet_test_add_d2l_layers(lenet_model *m);

/* Builds the d2l LeNet (unbuilt); aborts the test on failure. */
lenet_model *lenet_test_d2l_model(void);

/* Fills a tensor with uniform values in [lo, hi) from a fixed seed. */
void lenet_test_fill(lenet_tensor *t, uint64_t seed, float lo, float hi);

/* Path of a fixture file (LENET_TEST_FIXTURES or tests/fixtures) in a static buffer. */
const char *lenet_test_fixture(const char *name);

/* Every parameter (or, with `buffers`, every buffer) of m in order, concatenated in a new malloc'd array the caller
 * frees; *count receives the number of floats.  Aborts the test when out of memory. */
float *lenet_test_copy_tensors(lenet_model *m, bool buffers, size_t *count);

/* Largest |a - b| / max(|b|, floor) over n values. */
double lenet_test_max_rel_err(const float *a, const float *b, size_t n, double floor);

#define ck_assert_lenet_ok(expr)                                                                             \
    do {                                                                                                     \
        lenet_status st_ = (expr);                                                                           \
        ck_assert_msg(st_ == LENET_OK, "%s returned %d (%s): %s", #expr, (int)st_, lenet_status_str(st_),    \
                      lenet_last_error());                                                                   \
    } while (0)

#endif /* LENET_TESTUTIL_H */
