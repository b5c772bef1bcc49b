/* SGD: argument checks, state, and torch.optim.SGD's update rule reproduced in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { STEPS = 3 };

/* conv(2, k2) flatten linear(3) over 1x3x3: four parameter tensors of 8, 2, 24 and 3 values. */
static lenet_model *small_model(bool build)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(2, 2, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(3)));
    if (build)
        ck_assert_lenet_ok(lenet_model_build(m, 1, 3, 3));
    return m;
}

static size_t total_numel(lenet_model *m)
{
    size_t n = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        n += lenet_tensor_numel(lenet_model_param(m, i));
    return n;
}

/* Copies the model's parameters (or gradients) into a flat double array, tensor after tensor. */
static void read_flat(lenet_model *m, bool grads, double *out)
{
    for (size_t i = 0, at = 0; i < lenet_model_param_count(m); i++) {
        const lenet_tensor *t = grads ? lenet_model_grad(m, i) : lenet_model_param(m, i);
        for (size_t j = 0; j < lenet_tensor_numel(t); j++)
            out[at++] = lenet_tensor_cdata(t)[j];
    }
}

/* Writes hand-made gradients for step `step` into the model: distinct, signed, of mixed size. */
static void set_grads(lenet_model *m, int step)
{
    for (size_t i = 0, at = 0; i < lenet_model_param_count(m); i++) {
        float *g = lenet_tensor_data(lenet_model_grad(m, i));
        for (size_t j = 0; j < lenet_tensor_numel(lenet_model_grad(m, i)); j++, at++)
            g[j] = (float)(0.8 * sin(0.7 * (double)at + 1.3 * step + 0.1) + 0.05 * step);
    }
}

/* Sets every parameter to a known value in [-1, 1). */
static void set_params(lenet_model *m)
{
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        lenet_test_fill(lenet_model_param(m, i), 100 + i, -1.0f, 1.0f);
}

/*
 * torch.optim.SGD (dampening 0, nesterov False), in double:
 *   d = g + wd * p
 *   if momentum != 0:  b = d on the first step, else b = momentum * b + d;  d = b
 *   p = p - lr * d
 * Runs STEPS steps with lr[t] and hand-set gradients, and compares the model with it to 1e-6 after each step.
 */
static void check_sgd(lenet_model *m, lenet_optimizer *o, const float *lr, float momentum, float weight_decay)
{
    size_t n = total_numel(m);
    double *p = calloc(n, sizeof *p), *b = calloc(n, sizeof *b), *g = calloc(n, sizeof *g);
    double *got = calloc(n, sizeof *got);
    ck_assert(p && b && g && got);
    read_flat(m, false, p);
    for (int t = 0; t < STEPS; t++) {
        set_grads(m, t);
        read_flat(m, true, g);
        if (t > 0 || lr[t] != lenet_optimizer_lr(o))
            ck_assert_lenet_ok(lenet_optimizer_set_lr(o, lr[t]));
        ck_assert_float_eq(lenet_optimizer_lr(o), lr[t]);
        ck_assert_lenet_ok(lenet_optimizer_step(o));
        double worst = 0.0, moved = 0.0;
        for (size_t i = 0; i < n; i++) {
            double d = g[i] + (double)weight_decay * p[i];
            if (momentum != 0.0f) {
                b[i] = t == 0 ? d : (double)momentum * b[i] + d;
                d = b[i];
            }
            double before = p[i];
            p[i] -= (double)lr[t] * d;
            moved = fmax(moved, fabs(p[i] - before));
        }
        read_flat(m, false, got);
        for (size_t i = 0; i < n; i++) {
            ck_assert_msg(fabs(got[i] - p[i]) < 1e-6,
                          "lr %g momentum %g wd %g, step %d, value %zu: %.9g, torch.optim.SGD gives %.9g",
                          (double)lr[t], (double)momentum, (double)weight_decay, t + 1, i, got[i], p[i]);
            worst = fmax(worst, fabs(got[i] - p[i]));
        }
        if (lr[t] >= 0.01f)
            ck_assert_double_gt(moved, 1e-3); /* the step did something worth comparing */
        else if (lr[t] == 0.0f)
            ck_assert_double_eq(moved, 0.0);
        /* The gradients are read, not changed (PyTorch leaves p.grad alone). */
        read_flat(m, true, got);
        for (size_t i = 0; i < n; i++)
            ck_assert_double_eq(got[i], g[i]);
        if (t == STEPS - 1)
            fprintf(stderr, "SGD lr %g momentum %g wd %g: worst error %.2e after %d steps\n", (double)lr[t],
                    (double)momentum, (double)weight_decay, worst, STEPS);
    }
    free(got);
    free(g);
    free(b);
    free(p);
}

static void run_case(float lr, float momentum, float weight_decay)
{
    lenet_model *m = small_model(true);
    set_params(m);
    lenet_optimizer *o = lenet_sgd_create(m, lr, momentum, weight_decay);
    ck_assert_ptr_nonnull(o);
    const float lrs[STEPS] = {lr, lr, lr};
    check_sgd(m, o, lrs, momentum, weight_decay);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}

START_TEST(test_sgd_plain_matches_torch_over_three_steps)
{
    run_case(0.1f, 0.0f, 0.0f);
}
END_TEST

START_TEST(test_sgd_momentum_matches_torch_over_three_steps)
{
    run_case(0.1f, 0.9f, 0.0f);
}
END_TEST

START_TEST(test_sgd_momentum_and_weight_decay_match_torch_over_three_steps)
{
    run_case(0.1f, 0.9f, 1e-2f);
}
END_TEST

START_TEST(test_sgd_weight_decay_without_momentum_matches_torch)
{
    /* A large decay, so that a missing or doubled decay term is far outside the tolerance. */
    run_case(0.05f, 0.0f, 0.5f);
}
END_TEST

START_TEST(test_sgd_set_lr_takes_effect_on_the_next_step)
{
    lenet_model *m = small_model(true);
    set_params(m);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 1e-2f);
    ck_assert_ptr_nonnull(o);
    /* The momentum buffer does not include the learning rate: changing lr scales only the new update. */
    const float lrs[STEPS] = {0.1f, 0.025f, 0.4f};
    check_sgd(m, o, lrs, 0.9f, 1e-2f);
    lenet_optimizer_free(o);
    lenet_model_free(m);

    m = small_model(true);
    set_params(m);
    o = lenet_sgd_create(m, 0.5f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    const float plain[STEPS] = {0.5f, 1e-3f, 0.0f};
    check_sgd(m, o, plain, 0.0f, 0.0f);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_sgd_with_zero_lr_leaves_parameters_alone)
{
    lenet_model *m = small_model(true);
    set_params(m);
    lenet_optimizer *o = lenet_sgd_create(m, 0.0f, 0.9f, 0.1f);
    ck_assert_ptr_nonnull(o);
    size_t n = total_numel(m);
    double *before = calloc(n, sizeof *before), *after = calloc(n, sizeof *after);
    read_flat(m, false, before);
    for (int t = 0; t < STEPS; t++) {
        set_grads(m, t);
        ck_assert_lenet_ok(lenet_optimizer_step(o));
    }
    read_flat(m, false, after);
    ck_assert_mem_eq(before, after, n * sizeof *before);
    free(after);
    free(before);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_sgd_step_on_unbuilt_model_is_estate_and_not_a_first_step)
{
    lenet_model *m = small_model(false);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 1e-2f);
    ck_assert_ptr_nonnull(o);
    lenet_clear_error();
    ck_assert_int_eq(lenet_optimizer_step(o), LENET_ESTATE);
    ck_assert_str_ne(lenet_last_error(), "");
    ck_assert_int_eq(lenet_optimizer_step(o), LENET_ESTATE);
    ck_assert_lenet_ok(lenet_optimizer_zero_grad(o));
    /* Built afterwards: the optimizer allocates its state then, and its first step starts the buffer at g. */
    ck_assert_lenet_ok(lenet_model_build(m, 1, 3, 3));
    set_params(m);
    const float lrs[STEPS] = {0.1f, 0.1f, 0.1f};
    check_sgd(m, o, lrs, 0.9f, 1e-2f);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_sgd_create_rejects_bad_arguments_with_a_message)
{
    lenet_model *m = small_model(true);
    struct {
        float lr, momentum, weight_decay;
    } bad[] = {
        {-0.1f, 0.0f, 0.0f},     {NAN, 0.0f, 0.0f},      {INFINITY, 0.0f, 0.0f}, {0.1f, -0.5f, 0.0f},
        {0.1f, NAN, 0.0f},       {0.1f, INFINITY, 0.0f}, {0.1f, 0.9f, -1e-4f},   {0.1f, 0.9f, NAN},
        {0.1f, 0.9f, INFINITY},  {-INFINITY, 0.0f, 0.0f},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lenet_clear_error();
        lenet_optimizer *o = lenet_sgd_create(m, bad[i].lr, bad[i].momentum, bad[i].weight_decay);
        ck_assert_msg(o == NULL, "lr %g momentum %g wd %g accepted", (double)bad[i].lr, (double)bad[i].momentum,
                      (double)bad[i].weight_decay);
        ck_assert_msg(strlen(lenet_last_error()) > 0, "case %zu: no message", i);
    }
    lenet_clear_error();
    ck_assert_ptr_null(lenet_sgd_create(NULL, 0.1f, 0.9f, 0.0f));
    ck_assert_str_ne(lenet_last_error(), "");

    /* Zero everything is valid, as are the d2l settings. */
    lenet_optimizer *o = lenet_sgd_create(m, 0.0f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.0f);
    lenet_optimizer_free(o);
    o = lenet_sgd_create(m, 0.9f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.9f);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_sgd_set_lr_rejects_bad_values_and_keeps_the_old_one)
{
    lenet_model *m = small_model(true);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.1f);
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 0.25f));
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.25f);
    ck_assert_int_eq(lenet_optimizer_set_lr(o, -0.25f), LENET_EINVAL);
    ck_assert_str_ne(lenet_last_error(), "");
    ck_assert_int_eq(lenet_optimizer_set_lr(o, NAN), LENET_EINVAL);
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.25f);
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 0.0f));
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.0f);
    ck_assert_int_eq(lenet_optimizer_set_lr(NULL, 0.1f), LENET_EINVAL);
    ck_assert_float_eq(lenet_optimizer_lr(NULL), 0.0f);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_sgd_null_handles_and_free)
{
    lenet_optimizer_free(NULL);
    ck_assert_int_eq(lenet_optimizer_step(NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_optimizer_zero_grad(NULL), LENET_EINVAL);
    ck_assert_str_ne(lenet_last_error(), "");
    /* An optimizer that never stepped, and one whose momentum state exists, both free cleanly. */
    lenet_model *m = small_model(true);
    lenet_optimizer *idle = lenet_sgd_create(m, 0.1f, 0.9f, 0.0f);
    lenet_optimizer *busy = lenet_sgd_create(m, 0.1f, 0.9f, 0.0f);
    ck_assert_ptr_nonnull(idle);
    ck_assert_ptr_nonnull(busy);
    ck_assert_lenet_ok(lenet_optimizer_step(busy));
    lenet_optimizer_free(idle);
    lenet_optimizer_free(busy);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_sgd_zero_grad_clears_the_model_gradients)
{
    lenet_model *m = small_model(true);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 0.0f);
    ck_assert_ptr_nonnull(o);
    set_grads(m, 1);
    size_t n = total_numel(m);
    double *g = calloc(n, sizeof *g);
    read_flat(m, true, g);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++)
        nonzero += g[i] != 0.0;
    ck_assert_uint_eq(nonzero, n);
    double *p = calloc(n, sizeof *p), *p2 = calloc(n, sizeof *p2);
    read_flat(m, false, p);
    ck_assert_lenet_ok(lenet_optimizer_zero_grad(o));
    read_flat(m, true, g);
    for (size_t i = 0; i < n; i++)
        ck_assert_double_eq(g[i], 0.0);
    read_flat(m, false, p2);
    ck_assert_mem_eq(p, p2, n * sizeof *p); /* parameters untouched */

    /* zero_grad, forward, loss, backward, step: a real training step lowers the loss on its batch. */
    lenet_tensor *x = lenet_tensor_create(4, (int[]){4, 1, 3, 3});
    lenet_test_fill(x, 5, -1.0f, 1.0f);
    int32_t labels[4] = {0, 1, 2, 1};
    lenet_tensor *dlogits = lenet_tensor_create(2, (int[]){4, 3});
    float first = 0.0f, loss = 0.0f;
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 0.05f));
    for (int t = 0; t < 20; t++) {
        const lenet_tensor *y = NULL;
        ck_assert_lenet_ok(lenet_optimizer_zero_grad(o));
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
        ck_assert_lenet_ok(lenet_cross_entropy(y, labels, &loss, dlogits));
        ck_assert_lenet_ok(lenet_model_backward(m, dlogits));
        ck_assert_lenet_ok(lenet_optimizer_step(o));
        if (t == 0)
            first = loss;
    }
    ck_assert_msg(loss < 0.8f * first, "loss went from %g to %g in 20 steps", (double)first, (double)loss);
    lenet_tensor_free(dlogits);
    lenet_tensor_free(x);
    free(p2);
    free(p);
    free(g);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("sgd");
    tcase_add_test(tc, test_sgd_plain_matches_torch_over_three_steps);
    tcase_add_test(tc, test_sgd_momentum_matches_torch_over_three_steps);
    tcase_add_test(tc, test_sgd_momentum_and_weight_decay_match_torch_over_three_steps);
    tcase_add_test(tc, test_sgd_weight_decay_without_momentum_matches_torch);
    tcase_add_test(tc, test_sgd_set_lr_takes_effect_on_the_next_step);
    tcase_add_test(tc, test_sgd_with_zero_lr_leaves_parameters_alone);
    tcase_add_test(tc, test_sgd_step_on_unbuilt_model_is_estate_and_not_a_first_step);
    tcase_add_test(tc, test_sgd_create_rejects_bad_arguments_with_a_message);
    tcase_add_test(tc, test_sgd_set_lr_rejects_bad_values_and_keeps_the_old_one);
    tcase_add_test(tc, test_sgd_null_handles_and_free);
    tcase_add_test(tc, test_sgd_zero_grad_clears_the_model_gradients);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
