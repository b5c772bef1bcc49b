/* A finite-difference gradient checker for the Check suites.
 *
 * For a model and an input batch x it takes the scalar loss L = sum_i w_i * y_i over the model's output y,
 * with weights w fixed from a seed (uniform in [-1, 1)), and compares, element by element,
 *   - dL/dx, computed by the layers' own backward code (the model never computes the first layer's dx, so the
 *     checker drives the layer vtable itself for that one), and
 *   - dL/dp for every parameter p, computed by lenet_model_backward(),
 * with the central difference (L(v + eps) - L(v - eps)) / (2 eps).  The library is float32, so eps is large
 * (1e-2 by default) and the loss is summed in double; the error of one element is
 *   |analytic - numeric| / max(|analytic|, |numeric|, floor),
 * a relative error that becomes absolute (in units of floor) for gradients smaller than floor.
 *
 * Functions with kinks (ReLU at 0, MaxPool at ties) have no derivative there, and a kink within eps of an element
 * spoils its central difference.  Keep inputs away from kinks, or set `kinks`: an element whose central difference
 * disagrees but one of whose one-sided differences, (L(v + eps) - L(v)) / eps or (L(v) - L(v - eps)) / eps,
 * agrees is then skipped and counted (the side without the kink gives the derivative); assert that few were.
 *
 * With LENET_GRADCHECK_VERBOSE set in the environment every check prints its report to stderr.
 *
 * Every suite in tests/meson.build is built with gradcheck.c and the internal library: include this header. */
#ifndef LENET_TEST_GRADCHECK_H
#define LENET_TEST_GRADCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lenet/lenet.h>

#include "testutil.h"

/* Options; a zero field takes its default, so `&(lenet_gradcheck_opts){.max_per_tensor = 40}` reads well. */
typedef struct lenet_gradcheck_opts {
    double eps;            /* half step of the central difference (default 1e-2) */
    double tol;            /* largest accepted error (default 1e-2) */
    double floor;          /* smallest denominator of the error (default 1e-2) */
    uint64_t seed;         /* seed of the loss weights w and of the sampled elements (0 is a valid seed) */
    size_t max_per_tensor; /* check at most this many elements of x and of each parameter, spread over the
                              tensor (stratified random); 0 checks every element */
    bool kinks;            /* skip (and count) elements that only a one-sided difference matches (see above) */
    bool skip_input;       /* do not check dL/dx */
    bool skip_params;      /* do not check dL/dp */
} lenet_gradcheck_opts;

/* What the checker saw. */
typedef struct lenet_gradcheck_report {
    bool passed;             /* worst <= tol and at least one element was compared */
    double tol;              /* the tolerance applied */
    double worst;            /* largest error over all compared elements */
    double worst_input;      /* largest error on dL/dx */
    double worst_param;      /* largest error on any dL/dp */
    char where[64];          /* the element with the largest error: "input[17]", "0.weight[5]" */
    double analytic, numeric; /* the two gradients at that element */
    size_t checked;          /* elements compared */
    size_t skipped;          /* elements skipped as kinks (only with opts.kinks) */
} lenet_gradcheck_report;

/* Runs the check described above on model m (built from x if it is not) and input x (N, C, H, W).
 * The model's parameters are restored exactly; its gradients are left holding dL/dp (they are zeroed first).
 * Returns LENET_OK when the check ran (see report->passed for its verdict), or the error of a failed call. */
lenet_status lenet_test_gradcheck(lenet_model *m, const lenet_tensor *x, const lenet_gradcheck_opts *opts,
                                  lenet_gradcheck_report *report);

/* dx = d(sum(dy * y))/dx for y = model(x), through the layers' forward and backward as the model runs them, but
 * also through the first layer's backward (which lenet_model_backward skips).  The model's gradients are not
 * touched.  dy has the shape of the output, dx that of x.  Builds the model from x if needed. */
lenet_status lenet_test_input_grad(lenet_model *m, const lenet_tensor *x, const lenet_tensor *dy, lenet_tensor *dx);

/* Asserts (Check) that the gradient check of m at x passes, printing the worst element when it does not.
 * The options come last and may be a compound literal with commas: `&(lenet_gradcheck_opts){.eps = 1e-3, ...}`. */
#define ck_assert_gradcheck(m, x, ...)                                                                       \
    do {                                                                                                     \
        lenet_gradcheck_report gc_report_;                                                                   \
        ck_assert_lenet_ok(lenet_test_gradcheck((m), (x), (__VA_ARGS__), &gc_report_));                      \
        ck_assert_msg(gc_report_.passed,                                                                     \
                      "gradcheck: worst error %.3g > %.3g at %s (analytic %.7g, numeric %.7g); "             \
                      "%zu checked, %zu skipped",                                                            \
                      gc_report_.worst, gc_report_.tol, gc_report_.where, gc_report_.analytic,               \
                      gc_report_.numeric, gc_report_.checked, gc_report_.skipped);                           \
    } while (0)

#endif /* LENET_TEST_GRADCHECK_H */
