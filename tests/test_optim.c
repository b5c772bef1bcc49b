/* Optimizers: SGD (argument checks, state, torch.optim.SGD's update rule reproduced in double); Adam and AdamW
 * against PyTorch 1.13 (tests/fixtures/make_adam_fixtures.py); learning-rate schedules against PyTorch's
 * schedulers, per step and per epoch of lenet_train_epoch(); rollback and checkpoint state of Adam. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idxfixture.h"
#include "optim/internal.h" /* the state checkpoints save: lenet_optimizer_ops.state / adopt, epochs */
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
    lenet_error_clear();
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
        lenet_error_clear();
        lenet_optimizer *o = lenet_sgd_create(m, bad[i].lr, bad[i].momentum, bad[i].weight_decay);
        ck_assert_msg(o == NULL, "lr %g momentum %g wd %g accepted", (double)bad[i].lr, (double)bad[i].momentum,
                      (double)bad[i].weight_decay);
        ck_assert_msg(strlen(lenet_last_error()) > 0, "case %zu: no message", i);
    }
    lenet_error_clear();
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

/* ==== Adam and AdamW against PyTorch 1.13 (tests/fixtures/make_adam_fixtures.py) ==== */

enum { ADAM_STEPS = 5, FIX_MAX_PARAMS = 64, FIX_MAX_CASES = 8, FIX_MAX_SEQS = 16, FIX_MAX_LRS = 32 };

typedef struct adam_case {
    char kind[8];
    float lr, beta1, beta2, eps, weight_decay, eta_min;
    int t_max; /* > 0: a per-step cosine schedule */
    float after[ADAM_STEPS][FIX_MAX_PARAMS];
} adam_case;

typedef struct lr_sequence {
    int warmup, period, count;
    char kind[16];
    float value, base;
    double lrs[FIX_MAX_LRS];
} lr_sequence;

typedef struct adam_fixture {
    int n;
    float init[FIX_MAX_PARAMS];
    float grads[ADAM_STEPS][FIX_MAX_PARAMS];
    int n_cases, n_seqs;
    adam_case cases[FIX_MAX_CASES];
    lr_sequence seqs[FIX_MAX_SEQS];
} adam_fixture;

static double read_number(char **at, const char *line)
{
    char *end;
    double v = strtod(*at, &end);
    ck_assert_msg(end != *at, "fixture: a number expected at \"%.40s\" in \"%.40s\"", *at, line);
    *at = end;
    return v;
}

static int read_int(char **at, const char *line)
{
    double v = read_number(at, line);
    ck_assert_msg(v == (double)(int)v, "fixture: %g is not an integer in \"%.40s\"", v, line);
    return (int)v;
}

static void read_word(char **at, char *out, size_t size)
{
    while (**at == ' ')
        (*at)++;
    size_t n = 0;
    while ((*at)[n] != '\0' && (*at)[n] != ' ') {
        ck_assert_msg(n + 1 < size, "fixture: word too long at \"%.40s\"", *at);
        out[n] = (*at)[n];
        n++;
    }
    out[n] = '\0';
    *at += n;
}

/* The values are float32 written exactly (as hex), so the conversion to float is exact. */
static void read_floats(char **at, const char *line, float *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = (float)read_number(at, line);
}

/* Reads pytorch_adam_fixture.txt (its format is described in make_adam_fixtures.py). */
static const adam_fixture *load_adam_fixture(void)
{
    static adam_fixture f;
    memset(&f, 0, sizeof f);
    const char *path = lenet_test_fixture("pytorch_adam_fixture.txt");
    FILE *file = fopen(path, "rb");
    ck_assert_msg(file != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(file, 0, SEEK_END), 0);
    long size = ftell(file);
    ck_assert_int_gt(size, 0);
    rewind(file);
    char *text = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(fread(text, 1, (size_t)size, file), (size_t)size);
    text[size] = '\0';
    fclose(file);
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char word[16], *at = line;
        if (line[0] == '#' || line[0] == '\0') {
            line = next;
            continue;
        }
        read_word(&at, word, sizeof word);
        if (strcmp(word, "params") == 0) {
            f.n = read_int(&at, line);
            ck_assert(f.n > 0 && f.n <= FIX_MAX_PARAMS);
        } else if (strcmp(word, "init") == 0) {
            read_floats(&at, line, f.init, f.n);
        } else if (strcmp(word, "grad") == 0) {
            int k = read_int(&at, line);
            ck_assert(k >= 1 && k <= ADAM_STEPS);
            read_floats(&at, line, f.grads[k - 1], f.n);
        } else if (strcmp(word, "case") == 0) {
            ck_assert_int_lt(f.n_cases, FIX_MAX_CASES);
            adam_case *c = &f.cases[f.n_cases++];
            read_word(&at, c->kind, sizeof c->kind);
            c->lr = (float)read_number(&at, line);
            c->beta1 = (float)read_number(&at, line);
            c->beta2 = (float)read_number(&at, line);
            c->eps = (float)read_number(&at, line);
            c->weight_decay = (float)read_number(&at, line);
            c->t_max = read_int(&at, line);
            c->eta_min = (float)read_number(&at, line);
        } else if (strcmp(word, "after") == 0) {
            ck_assert_int_gt(f.n_cases, 0);
            int k = read_int(&at, line);
            ck_assert(k >= 1 && k <= ADAM_STEPS);
            read_floats(&at, line, f.cases[f.n_cases - 1].after[k - 1], f.n);
        } else if (strcmp(word, "lrs") == 0) {
            ck_assert_int_lt(f.n_seqs, FIX_MAX_SEQS);
            lr_sequence *q = &f.seqs[f.n_seqs++];
            q->warmup = read_int(&at, line);
            read_word(&at, q->kind, sizeof q->kind);
            q->period = read_int(&at, line);
            q->value = (float)read_number(&at, line);
            q->base = (float)read_number(&at, line);
            q->count = read_int(&at, line);
            ck_assert(q->count > 0 && q->count <= FIX_MAX_LRS);
            for (int i = 0; i < q->count; i++)
                q->lrs[i] = read_number(&at, line);
        } else {
            ck_abort_msg("fixture: unknown record \"%s\"", word);
        }
        line = next;
    }
    free(text);
    ck_assert_int_gt(f.n, 0);
    ck_assert_int_eq(f.n_cases, 4);
    ck_assert_int_ge(f.n_seqs, 5);
    return &f;
}

/* nn.Sequential(Flatten(), Linear(5, 4), Sigmoid(), Linear(4, 3)) over 5 features, as in the fixture script. */
static lenet_model *fixture_model(void)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(4)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(3)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 1, 5));
    return m;
}

/* Writes (or reads) the model's parameters or gradients as one flat float array, tensor after tensor. */
static void put_flat(lenet_model *m, bool grads, const float *v)
{
    for (size_t i = 0, at = 0; i < lenet_model_param_count(m); i++) {
        lenet_tensor *t = grads ? lenet_model_grad(m, i) : lenet_model_param(m, i);
        memcpy(lenet_tensor_data(t), v + at, lenet_tensor_numel(t) * sizeof *v);
        at += lenet_tensor_numel(t);
    }
}

static void get_flat(lenet_model *m, bool grads, float *out)
{
    for (size_t i = 0, at = 0; i < lenet_model_param_count(m); i++) {
        const lenet_tensor *t = grads ? lenet_model_grad(m, i) : lenet_model_param(m, i);
        memcpy(out + at, lenet_tensor_cdata(t), lenet_tensor_numel(t) * sizeof *out);
        at += lenet_tensor_numel(t);
    }
}

/* The optimizer of a fixture case, with its schedule. */
static lenet_optimizer *case_optimizer(lenet_model *m, const adam_case *c)
{
    lenet_optimizer *o = strcmp(c->kind, "AdamW") == 0
                             ? lenet_adamw_create(m, c->lr, c->beta1, c->beta2, c->eps, c->weight_decay)
                             : lenet_adam_create(m, c->lr, c->beta1, c->beta2, c->eps, c->weight_decay);
    ck_assert_msg(o != NULL, "%s", lenet_last_error());
    if (c->t_max > 0)
        ck_assert_lenet_ok(
            lenet_optimizer_set_schedule(o, lenet_schedule_cosine(c->t_max, c->eta_min), LENET_SCHEDULE_PER_STEP));
    return o;
}

START_TEST(test_adam_and_adamw_match_pytorch_1_13_over_five_steps)
{
    const adam_fixture *f = load_adam_fixture();
    double worst_all = 0.0;
    size_t identical = 0, total = 0;
    for (int c = 0; c < f->n_cases; c++) {
        const adam_case *ac = &f->cases[c];
        lenet_model *m = fixture_model();
        ck_assert_uint_eq(lenet_model_param_numel(m), (size_t)f->n);
        const char *names[] = {"1.weight", "1.bias", "3.weight", "3.bias"};
        ck_assert_uint_eq(lenet_model_param_count(m), 4);
        for (size_t i = 0; i < 4; i++)
            ck_assert_str_eq(lenet_model_param_name(m, i), names[i]);
        put_flat(m, false, f->init);
        lenet_optimizer *o = case_optimizer(m, ac);
        float got[FIX_MAX_PARAMS], grads[FIX_MAX_PARAMS];
        double moved = 0.0;
        for (int k = 0; k < ADAM_STEPS; k++) {
            put_flat(m, true, f->grads[k]);
            ck_assert_lenet_ok(lenet_optimizer_step(o));
            get_flat(m, false, got);
            double worst = lenet_test_max_rel_err(got, ac->after[k], (size_t)f->n, 1e-3);
            for (int i = 0; i < f->n; i++) {
                identical += memcmp(&got[i], &ac->after[k][i], sizeof got[i]) == 0;
                moved = fmax(moved, fabs((double)got[i] - f->init[i]));
            }
            total += (size_t)f->n;
            ck_assert_msg(worst <= 1e-6, "%s lr %g wd %g t_max %d, step %d: relative error %.3g against PyTorch",
                          ac->kind, (double)ac->lr, (double)ac->weight_decay, ac->t_max, k + 1, worst);
            worst_all = fmax(worst_all, worst);
            /* The gradients are read, not changed. */
            get_flat(m, true, grads);
            ck_assert_mem_eq(grads, f->grads[k], (size_t)f->n * sizeof *grads);
        }
        ck_assert_msg(moved > 0.05, "%s case %d: the parameters moved only %g", ac->kind, c, moved);
        ck_assert_uint_eq(lenet_optimizer_step_count(o), ADAM_STEPS);
        lenet_optimizer_free(o);
        lenet_model_free(m);
    }
    fprintf(stderr, "Adam/AdamW vs PyTorch 1.13 (%d cases x %d steps): worst relative error %.3g, %zu of %zu values "
            "bit-identical\n", f->n_cases, ADAM_STEPS, worst_all, identical, total);
}
END_TEST

START_TEST(test_adam_create_rejects_bad_arguments_with_a_message)
{
    lenet_model *m = fixture_model();
    struct {
        float lr, beta1, beta2, eps, weight_decay;
    } bad[] = {
        {-1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f},   {NAN, 0.9f, 0.999f, 1e-8f, 0.0f},
        {INFINITY, 0.9f, 0.999f, 1e-8f, 0.0f}, {1e-3f, -0.1f, 0.999f, 1e-8f, 0.0f},
        {1e-3f, 1.0f, 0.999f, 1e-8f, 0.0f},    {1e-3f, NAN, 0.999f, 1e-8f, 0.0f},
        {1e-3f, 0.9f, 1.0f, 1e-8f, 0.0f},      {1e-3f, 0.9f, -0.5f, 1e-8f, 0.0f},
        {1e-3f, 0.9f, NAN, 1e-8f, 0.0f},       {1e-3f, 0.9f, INFINITY, 1e-8f, 0.0f},
        {1e-3f, 0.9f, 0.999f, -1e-8f, 0.0f},   {1e-3f, 0.9f, 0.999f, NAN, 0.0f},
        {1e-3f, 0.9f, 0.999f, INFINITY, 0.0f}, {1e-3f, 0.9f, 0.999f, 1e-8f, -1e-4f},
        {1e-3f, 0.9f, 0.999f, 1e-8f, NAN},     {1e-3f, 0.9f, 0.999f, 1e-8f, INFINITY},
    };
    for (int w = 0; w < 2; w++) {
        lenet_optimizer *(*create)(lenet_model *, float, float, float, float, float) =
            w ? lenet_adamw_create : lenet_adam_create;
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            lenet_error_clear();
            lenet_optimizer *o = create(m, bad[i].lr, bad[i].beta1, bad[i].beta2, bad[i].eps, bad[i].weight_decay);
            ck_assert_msg(o == NULL, "%s case %zu accepted", w ? "AdamW" : "Adam", i);
            ck_assert_msg(lenet__last_status() == LENET_EINVAL, "case %zu: status %d", i, (int)lenet__last_status());
            ck_assert_msg(strstr(lenet_last_error(), w ? "adamw_create" : "adam_create") != NULL, "case %zu: %s", i,
                          lenet_last_error());
        }
        lenet_error_clear();
        ck_assert_ptr_null(create(NULL, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f));
        ck_assert_str_ne(lenet_last_error(), "");
        /* The edges PyTorch accepts: zeros, and betas just below 1. */
        lenet_optimizer *o = create(m, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f);
        ck_assert_ptr_nonnull(o);
        lenet_optimizer_free(o);
        o = create(m, 1e-3f, nextafterf(1.0f, 0.0f), nextafterf(1.0f, 0.0f), 1e-8f, 0.5f);
        ck_assert_ptr_nonnull(o);
        ck_assert_float_eq(lenet_optimizer_lr(o), 1e-3f);
        lenet_optimizer_free(o);
    }
    lenet_model_free(m);
}
END_TEST

START_TEST(test_adam_updates_only_trainable_parameters)
{
    /* Linear(4) then fixed RBF centres: "2.weight" is in the arena but not trainable. */
    float centers[3 * 4];
    for (int i = 0; i < 12; i++)
        centers[i] = (float)(i % 5) * 0.25f - 0.5f;
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(4)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_euclidean_rbf(3)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 1, 5));
    memcpy(lenet_tensor_data(lenet_model_param(m, 2)), centers, sizeof centers);
    ck_assert_uint_eq(lenet_model_param_count(m), 3);
    ck_assert_str_eq(lenet_model_param_name(m, 2), "2.weight");
    for (int w = 0; w < 2; w++) {
        set_params(m);
        lenet_optimizer *o = w ? lenet_adamw_create(m, 0.1f, 0.9f, 0.999f, 1e-8f, 0.5f)
                               : lenet_adam_create(m, 0.1f, 0.9f, 0.999f, 1e-8f, 0.5f);
        ck_assert_ptr_nonnull(o);
        lenet_tensor *fixed = lenet_model_param(m, 2), *linear = lenet_model_param(m, 0);
        float before_fixed[12], before_linear[20];
        memcpy(before_fixed, lenet_tensor_cdata(fixed), sizeof before_fixed);
        memcpy(before_linear, lenet_tensor_cdata(linear), sizeof before_linear);
        for (int t = 0; t < 3; t++) {
            for (size_t i = 0; i < lenet_model_param_count(m); i++) {
                lenet_tensor *g = lenet_model_grad(m, i);
                for (size_t j = 0; j < lenet_tensor_numel(g); j++)
                    lenet_tensor_data(g)[j] = 0.5f + 0.1f * (float)j;
            }
            ck_assert_lenet_ok(lenet_optimizer_step(o));
        }
        ck_assert_mem_eq(lenet_tensor_cdata(fixed), before_fixed, sizeof before_fixed);
        ck_assert_msg(memcmp(lenet_tensor_cdata(linear), before_linear, sizeof before_linear) != 0,
                      "%s did not update the trainable Linear weight", w ? "AdamW" : "Adam");
        lenet_optimizer_free(o);
    }
    lenet_model_free(m);
}
END_TEST

static lenet_optimizer_state state_of(const lenet_optimizer *o)
{
    lenet_optimizer_state st;
    memset(&st, 0, sizeof st);
    ck_assert(o->ops->state != NULL);
    ck_assert_lenet_ok(o->ops->state(o, &st));
    return st;
}

static double setting(const lenet_optimizer_state *st, const char *name)
{
    for (int i = 0; i < st->n_settings; i++)
        if (strcmp(st->setting_names[i], name) == 0)
            return st->settings[i];
    ck_abort_msg("no setting %s", name);
    return NAN;
}

START_TEST(test_adam_state_names_its_buffers_and_settings_as_pytorch)
{
    const adam_fixture *f = load_adam_fixture();
    for (int w = 0; w < 2; w++) {
        lenet_model *m = fixture_model();
        put_flat(m, false, f->init);
        lenet_optimizer *o = w ? lenet_adamw_create(m, 0.01f, 0.8f, 0.99f, 1e-6f, 0.25f)
                               : lenet_adam_create(m, 0.01f, 0.8f, 0.99f, 1e-6f, 0.25f);
        ck_assert_ptr_nonnull(o);
        ck_assert_str_eq(o->ops->name, w ? "AdamW" : "Adam"); /* the checkpoint's "kind": PyTorch's class name */
        lenet_optimizer_state st = state_of(o);
        ck_assert_int_eq(st.n_settings, 4);
        ck_assert_double_eq(setting(&st, "beta1"), (double)0.8f);
        ck_assert_double_eq(setting(&st, "beta2"), (double)0.99f);
        ck_assert_double_eq(setting(&st, "eps"), (double)1e-6f);
        ck_assert_double_eq(setting(&st, "weight_decay"), (double)0.25f);
        ck_assert_int_eq(st.n_buffers, 2);
        ck_assert_str_eq(st.buffer_names[0], "exp_avg");
        ck_assert_str_eq(st.buffer_names[1], "exp_avg_sq");
        ck_assert_ptr_null(st.buffers[0]); /* not allocated before the first step */
        ck_assert_ptr_null(st.buffers[1]);
        put_flat(m, true, f->grads[0]);
        ck_assert_lenet_ok(lenet_optimizer_step(o));
        st = state_of(o);
        ck_assert_ptr_nonnull(st.buffers[0]);
        ck_assert_ptr_nonnull(st.buffers[1]);
        /* After one step from zero, m = (1 - beta1) g (+ L2 for Adam) and v = (1 - beta2) g^2, laid out as the
         * parameter arena. */
        for (size_t t = 0, flat = 0; t < m->n_params; t++) {
            for (size_t j = 0; j < m->param_tensors[t].numel; j++, flat++) {
                size_t i = m->param_offset[t] + j;
                float g = w ? f->grads[0][flat] : fmaf(f->init[flat], 0.25f, f->grads[0][flat]);
                ck_assert_float_eq(st.buffers[0][i], fmaf(g, (float)(1.0 - (double)0.8f), 0.0f));
                ck_assert_float_eq(st.buffers[1][i], fmaf((float)(1.0 - (double)0.99f) * g, g, 0.0f));
            }
        }
        lenet_optimizer_free(o);
        lenet_model_free(m);
    }
}
END_TEST

/* A copy of an arena-sized optimizer buffer, as a checkpoint load hands it to adopt. */
static float *arena_copy(const lenet_model *m, const float *src)
{
    float *copy = lenet__malloc_aligned((m->arena_numel ? m->arena_numel : 1) * sizeof(float));
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, src, m->arena_numel * sizeof(float));
    return copy;
}

START_TEST(test_adam_resumed_from_adopted_state_is_bit_identical)
{
    /* What lib/io does on load: parameters, then adopt every buffer, then lr, steps and epochs. */
    const adam_fixture *f = load_adam_fixture();
    const adam_case *ac = &f->cases[3]; /* AdamW with a per-step cosine schedule */
    ck_assert_int_gt(ac->t_max, 0);
    lenet_model *whole = fixture_model(), *first = fixture_model(), *resumed = fixture_model();
    put_flat(whole, false, f->init);
    put_flat(first, false, f->init);
    lenet_optimizer *o_whole = case_optimizer(whole, ac), *o_first = case_optimizer(first, ac);
    lenet_optimizer *o_resumed = case_optimizer(resumed, ac);
    for (int k = 0; k < ADAM_STEPS; k++) {
        put_flat(whole, true, f->grads[k]);
        ck_assert_lenet_ok(lenet_optimizer_step(o_whole));
    }
    for (int k = 0; k < 2; k++) {
        put_flat(first, true, f->grads[k]);
        ck_assert_lenet_ok(lenet_optimizer_step(o_first));
    }
    float params[FIX_MAX_PARAMS];
    get_flat(first, false, params);
    put_flat(resumed, false, params);
    lenet_optimizer_state st = state_of(o_first);
    for (int b = 0; b < st.n_buffers; b++)
        o_resumed->ops->adopt(o_resumed, b, arena_copy(first, st.buffers[b]));
    o_resumed->lr = o_first->lr;
    o_resumed->steps = o_first->steps;
    o_resumed->epochs = o_first->epochs;
    ck_assert_float_eq(lenet_optimizer_lr(o_resumed), lenet_optimizer_lr(o_first));
    lenet_optimizer_free(o_first);
    lenet_model_free(first);
    for (int k = 2; k < ADAM_STEPS; k++) {
        put_flat(resumed, true, f->grads[k]);
        ck_assert_lenet_ok(lenet_optimizer_step(o_resumed));
    }
    float a[FIX_MAX_PARAMS], b[FIX_MAX_PARAMS];
    get_flat(whole, false, a);
    get_flat(resumed, false, b);
    ck_assert_mem_eq(a, b, (size_t)f->n * sizeof *a);
    /* adopt(NULL) goes back to a fresh optimizer's state. */
    o_resumed->ops->adopt(o_resumed, 0, NULL);
    o_resumed->ops->adopt(o_resumed, 1, NULL);
    st = state_of(o_resumed);
    ck_assert_ptr_null(st.buffers[0]);
    ck_assert_ptr_null(st.buffers[1]);
    lenet_optimizer_free(o_whole);
    lenet_optimizer_free(o_resumed);
    lenet_model_free(whole);
    lenet_model_free(resumed);
}
END_TEST

static void idx_dir_create_fixture(void)
{
    idx_dir_create();
}

START_TEST(test_adam_checkpoint_round_trip_is_bit_identical_and_checks_the_schedule)
{
    const adam_fixture *f = load_adam_fixture();
    const char *path = idx_write("adam.safetensors", "", 0);
    lenet_model *whole = fixture_model(), *resumed = fixture_model();
    put_flat(whole, false, f->init);
    lenet_optimizer *o = lenet_adam_create(whole, 0.05f, 0.9f, 0.999f, 1e-8f, 0.1f);
    lenet_optimizer *o2 = lenet_adam_create(resumed, 0.05f, 0.9f, 0.999f, 1e-8f, 0.1f);
    ck_assert_lenet_ok(lenet_optimizer_set_schedule(o, lenet_schedule_step(2, 0.5f), LENET_SCHEDULE_PER_STEP));
    ck_assert_lenet_ok(lenet_optimizer_set_schedule(o2, lenet_schedule_step(2, 0.5f), LENET_SCHEDULE_PER_STEP));
    for (int k = 0; k < 3; k++) {
        put_flat(whole, true, f->grads[k]);
        ck_assert_lenet_ok(lenet_optimizer_step(o));
    }
    ck_assert_lenet_ok(lenet_checkpoint_save(whole, o, NULL, NULL, path));
    for (int k = 3; k < ADAM_STEPS; k++) {
        put_flat(whole, true, f->grads[k]);
        ck_assert_lenet_ok(lenet_optimizer_step(o));
    }

    /* Optimizers that differ from the saved one are refused and left alone. */
    struct {
        const char *what;
        lenet_optimizer *o;
        lenet_schedule *s;
    } other[] = {
        {"no schedule", lenet_adam_create(resumed, 0.05f, 0.9f, 0.999f, 1e-8f, 0.1f), NULL},
        {"another gamma", lenet_adam_create(resumed, 0.05f, 0.9f, 0.999f, 1e-8f, 0.1f), lenet_schedule_step(2, 0.25f)},
        {"another kind", lenet_adam_create(resumed, 0.05f, 0.9f, 0.999f, 1e-8f, 0.1f), lenet_schedule_cosine(2, 0.0f)},
        {"another base lr", lenet_adam_create(resumed, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f), lenet_schedule_step(2, 0.5f)},
        {"AdamW", lenet_adamw_create(resumed, 0.05f, 0.9f, 0.999f, 1e-8f, 0.1f), lenet_schedule_step(2, 0.5f)},
        {"another beta2", lenet_adam_create(resumed, 0.05f, 0.9f, 0.99f, 1e-8f, 0.1f), lenet_schedule_step(2, 0.5f)},
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        ck_assert_ptr_nonnull(other[i].o);
        if (other[i].s)
            ck_assert_lenet_ok(lenet_optimizer_set_schedule(other[i].o, other[i].s, LENET_SCHEDULE_PER_STEP));
        float lr = lenet_optimizer_lr(other[i].o);
        lenet_status st = lenet_checkpoint_load(resumed, other[i].o, NULL, path, NULL, 0);
        ck_assert_msg(st == LENET_ESTATE, "%s: loading returned %d (%s)", other[i].what, (int)st, lenet_last_error());
        ck_assert_uint_eq(lenet_optimizer_step_count(other[i].o), 0);
        ck_assert_float_eq(lenet_optimizer_lr(other[i].o), lr);
        lenet_optimizer_free(other[i].o);
    }

    ck_assert_lenet_ok(lenet_checkpoint_load(resumed, o2, NULL, path, NULL, 0));
    ck_assert_uint_eq(lenet_optimizer_step_count(o2), 3);
    ck_assert_float_eq(lenet_optimizer_lr(o2), 0.025f); /* 0.05 * 0.5^floor(3 / 2) */
    for (int k = 3; k < ADAM_STEPS; k++) {
        put_flat(resumed, true, f->grads[k]);
        ck_assert_lenet_ok(lenet_optimizer_step(o2));
    }
    float a[FIX_MAX_PARAMS], b[FIX_MAX_PARAMS];
    get_flat(whole, false, a);
    get_flat(resumed, false, b);
    ck_assert_mem_eq(a, b, (size_t)f->n * sizeof *a);
    lenet_optimizer_free(o);
    lenet_optimizer_free(o2);
    lenet_model_free(whole);
    lenet_model_free(resumed);
}
END_TEST

/* ---- training passes: a small data set of 8x8 images, left half bright (class 0) or right half (class 1) ---- */

enum { SIDE = 8 };

static lenet_dataset *bright_halves(const char *name, uint32_t n, uint64_t seed)
{
    uint8_t *pixels = malloc((size_t)n * SIDE * SIDE), *labels = malloc(n);
    ck_assert_ptr_nonnull(pixels);
    ck_assert_ptr_nonnull(labels);
    uint64_t state = seed;
    for (uint32_t i = 0; i < n; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        labels[i] = (uint8_t)((state >> 40) & 1);
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++) {
                state = state * 6364136223846793005ULL + 1442695040888963407ULL;
                uint32_t r = (uint32_t)(state >> 33);
                bool bright = (x < SIDE / 2) == (labels[i] == 0);
                pixels[(size_t)i * SIDE * SIDE + y * SIDE + x] = (uint8_t)(bright ? 160 + r % 96 : r % 64);
            }
    }
    idx_bytes images = idx_images(n, SIDE, SIDE, pixels), label_file = idx_labels(n, labels);
    char file[64];
    snprintf(file, sizeof file, "%s-images", name);
    const char *images_path = idx_write_bytes(file, &images, false);
    snprintf(file, sizeof file, "%s-labels", name);
    const char *labels_path = idx_write_bytes(file, &label_file, false);
    lenet_dataset *d = lenet_dataset_open_idx(images_path, labels_path);
    ck_assert_msg(d != NULL, "%s", lenet_last_error());
    idx_bytes_free(&images);
    idx_bytes_free(&label_file);
    free(pixels);
    free(labels);
    return d;
}

/* conv(4, k3, p1) relu maxpool(2) flatten linear(2) over 1x8x8, PyTorch's initialisation from `seed`. */
static lenet_model *tiny_model(uint64_t seed)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(4, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_maxpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, SIDE, SIDE));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, seed));
    return m;
}

static float *param_snapshot(const lenet_model *m)
{
    float *copy = malloc((m->arena_numel ? m->arena_numel : 1) * sizeof *copy);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, m->params, m->arena_numel * sizeof *copy);
    return copy;
}

START_TEST(test_an_adam_step_that_overflows_is_rolled_back_with_its_moments)
{
    lenet_dataset *d = bright_halves("set", 16, 3);
    lenet_model *m = tiny_model(4);
    lenet_optimizer *o = lenet_adam_create(m, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-4f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL));
    ck_assert_uint_eq(lenet_optimizer_step_count(o), 4);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 1);
    float *params = param_snapshot(m);
    lenet_optimizer_state st = state_of(o);
    float *exp_avg = arena_copy(m, st.buffers[0]), *exp_avg_sq = arena_copy(m, st.buffers[1]);

    /* lr / (1 - beta1^t) beyond FLT_MAX: the step makes every parameter with a gradient infinite or NaN. */
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, FLT_MAX));
    lenet_error_clear();
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, NULL), LENET_ENUMERIC);
    ck_assert_msg(strstr(lenet_last_error(), "restored") != NULL, "message: %s", lenet_last_error());
    ck_assert_mem_eq(m->params, params, m->arena_numel * sizeof *params);
    st = state_of(o);
    ck_assert_mem_eq(st.buffers[0], exp_avg, m->arena_numel * sizeof(float));
    ck_assert_mem_eq(st.buffers[1], exp_avg_sq, m->arena_numel * sizeof(float));
    ck_assert_uint_eq(lenet_optimizer_step_count(o), 4);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 1);

    /* Training goes on from there: the rest of the pass (3 batches). */
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 1e-3f));
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL));
    ck_assert_uint_eq(lenet_optimizer_step_count(o), 7);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 2);
    for (size_t i = 0; i < m->arena_numel; i++)
        ck_assert_msg(isfinite(m->params[i]), "parameter %zu is %g", i, (double)m->params[i]);
    lenet__free_aligned(exp_avg);
    lenet__free_aligned(exp_avg_sq);
    free(params);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_an_overflowing_first_adam_step_leaves_no_moments)
{
    lenet_dataset *d = bright_halves("set", 8, 5);
    lenet_model *m = tiny_model(6);
    lenet_optimizer *o = lenet_adamw_create(m, FLT_MAX, 0.9f, 0.999f, 1e-8f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    float *params = param_snapshot(m);
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, NULL), LENET_ENUMERIC);
    ck_assert_mem_eq(m->params, params, m->arena_numel * sizeof *params);
    lenet_optimizer_state st = state_of(o);
    ck_assert_ptr_null(st.buffers[0]); /* as before the step: a fresh optimizer's state */
    ck_assert_ptr_null(st.buffers[1]);
    ck_assert_uint_eq(lenet_optimizer_step_count(o), 0);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 0);
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 1e-3f));
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL));
    ck_assert_uint_eq(lenet_optimizer_step_count(o), 1);
    free(params);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

/* ==== learning-rate schedules ==== */

static lenet_schedule *sequence_schedule(const lr_sequence *q)
{
    lenet_schedule *s = strcmp(q->kind, "step") == 0     ? lenet_schedule_step(q->period, q->value)
                        : strcmp(q->kind, "cosine") == 0 ? lenet_schedule_cosine(q->period, q->value)
                                                         : lenet_schedule_constant();
    if (q->warmup > 0)
        s = lenet_schedule_warmup(q->warmup, s);
    ck_assert_msg(s != NULL, "%s", lenet_last_error());
    return s;
}

START_TEST(test_schedules_give_pytorch_lr_sequences)
{
    const adam_fixture *f = load_adam_fixture();
    double worst = 0.0;
    for (int i = 0; i < f->n_seqs; i++) {
        const lr_sequence *q = &f->seqs[i];
        lenet_schedule *s = sequence_schedule(q);
        for (int k = 0; k < q->count; k++) {
            double got = lenet_schedule_lr(s, q->base, (uint64_t)k), want = (float)q->lrs[k];
            double err = fabs(got - want) / fmax(fabs(want), 1e-12);
            ck_assert_msg(err <= 1e-6, "warmup %d %s(%d, %g) base %g, count %d: lr %.9g, PyTorch %.9g", q->warmup,
                          q->kind, q->period, (double)q->value, (double)q->base, k, got, q->lrs[k]);
            worst = fmax(worst, err);
        }
        lenet_schedule_free(s);
    }
    fprintf(stderr, "schedules vs PyTorch 1.13 (%d sequences): worst relative error %.3g\n", f->n_seqs, worst);

    /* Far counts stay exact: the cosine's period, the step decay down to 0. */
    lenet_schedule *cosine = lenet_schedule_cosine(5, 0.001f), *step = lenet_schedule_step(3, 0.5f);
    ck_assert_float_eq(lenet_schedule_lr(cosine, 0.1f, 10000000000000ULL), 0.1f);
    ck_assert_float_eq(lenet_schedule_lr(cosine, 0.1f, 10000000000005ULL), 0.001f);
    ck_assert_float_eq(lenet_schedule_lr(step, 0.1f, UINT64_MAX), 0.0f);
    ck_assert_float_eq(lenet_schedule_lr(NULL, 0.1f, 3), 0.0f);
    lenet_schedule_free(cosine);
    lenet_schedule_free(step);
}
END_TEST

START_TEST(test_a_per_step_schedule_sets_the_lr_of_each_step)
{
    /* Each step from p = 0 with g = 1 leaves p = -lr: the lr the step used. */
    const adam_fixture *f = load_adam_fixture();
    for (int i = 0; i < f->n_seqs; i++) {
        const lr_sequence *q = &f->seqs[i];
        lenet_model *m = small_model(true);
        lenet_optimizer *o = lenet_sgd_create(m, q->base, 0.0f, 0.0f);
        ck_assert_ptr_nonnull(o);
        ck_assert_lenet_ok(lenet_optimizer_set_schedule(o, sequence_schedule(q), LENET_SCHEDULE_PER_STEP));
        for (int k = 0; k < q->count; k++) {
            float want = (float)q->lrs[k], lr = lenet_optimizer_lr(o);
            ck_assert_msg(fabs((double)lr - want) <= 1e-6 * fmax(fabs((double)want), 1e-12),
                          "sequence %d, step %d: lr %.9g, PyTorch %.9g", i, k, (double)lr, (double)want);
            memset(m->params, 0, m->arena_numel * sizeof(float));
            for (size_t j = 0; j < m->arena_numel; j++)
                m->grads[j] = 1.0f;
            ck_assert_lenet_ok(lenet_optimizer_step(o));
            for (size_t t = 0; t < m->n_params; t++) {
                const float *p = m->params + m->param_offset[t];
                ck_assert_float_eq(p[0], -lr);
                ck_assert_float_eq(p[m->param_tensors[t].numel - 1], -lr);
            }
            ck_assert_uint_eq(lenet_optimizer_step_count(o), (uint64_t)k + 1);
        }
        ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 0);
        lenet_optimizer_free(o);
        lenet_model_free(m);
    }
}
END_TEST

/* The lr seen during each batch of a pass. */
typedef struct lr_log {
    const lenet_optimizer *o;
    int calls;
    float lr[64];
} lr_log;

static void log_lr(void *user, size_t done, size_t total, const lenet_metrics *so_far)
{
    lr_log *log = user;
    (void)done, (void)total, (void)so_far;
    ck_assert_int_lt(log->calls, 64);
    log->lr[log->calls++] = lenet_optimizer_lr(log->o);
}

START_TEST(test_a_per_epoch_schedule_advances_with_lenet_train_epoch)
{
    lenet_dataset *d = bright_halves("set", 16, 7);
    lenet_model *m = tiny_model(8), *twin = tiny_model(8);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 0.0f), *o_twin = lenet_sgd_create(twin, 0.1f, 0.9f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, true, 9), *it_twin = lenet_iter_create(d, 4, true, 9);
    lenet_iter *test_it = lenet_iter_create(d, 8, false, 0);
    ck_assert(o && o_twin && it && it_twin && test_it);
    /* Warm-up over 2 epochs, then halve every epoch: 0.05, 0.1, 0.1, 0.05. */
    ck_assert_lenet_ok(
        lenet_optimizer_set_schedule(o, lenet_schedule_warmup(2, lenet_schedule_step(1, 0.5f)), LENET_SCHEDULE_PER_EPOCH));
    const float expected[] = {0.05f, 0.1f, 0.1f, 0.05f};
    for (int e = 0; e < 4; e++) {
        ck_assert_float_eq(lenet_optimizer_lr(o), expected[e]);
        lr_log log = {.o = o};
        ck_assert_lenet_ok(lenet_train_epoch(m, o, it, log_lr, &log, NULL));
        ck_assert_int_eq(log.calls, 4);
        for (int b = 0; b < log.calls; b++)
            ck_assert_float_eq(log.lr[b], expected[e]); /* constant within the epoch */
        ck_assert_uint_eq(lenet_optimizer_epoch_count(o), (uint64_t)e + 1);
        ck_assert_uint_eq(lenet_optimizer_step_count(o), 4 * ((uint64_t)e + 1));
        /* The lr the steps used: a twin trained with that lr set by hand ends bit-identical. */
        ck_assert_lenet_ok(lenet_optimizer_set_lr(o_twin, expected[e]));
        ck_assert_lenet_ok(lenet_train_epoch(twin, o_twin, it_twin, NULL, NULL, NULL));
        ck_assert_mem_eq(m->params, twin->params, m->arena_numel * sizeof(float));
        /* Evaluating is not an epoch. */
        ck_assert_lenet_ok(lenet_evaluate(m, test_it, NULL));
        ck_assert_uint_eq(lenet_optimizer_epoch_count(o), (uint64_t)e + 1);
    }
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.025f);
    lenet_iter_free(test_it);
    lenet_iter_free(it_twin);
    lenet_iter_free(it);
    lenet_optimizer_free(o_twin);
    lenet_optimizer_free(o);
    lenet_model_free(twin);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_a_failed_epoch_is_not_counted)
{
    lenet_dataset *d = bright_halves("set", 16, 11);
    ck_assert_lenet_ok(lenet_dataset_set_range(d, 0.0f, 100.0f));
    lenet_model *m = tiny_model(12);
    lenet_optimizer *o = lenet_sgd_create(m, 3e38f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert(o && it);
    ck_assert_lenet_ok(lenet_optimizer_set_schedule(o, lenet_schedule_step(1, 0.5f), LENET_SCHEDULE_PER_EPOCH));
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, NULL), LENET_ENUMERIC);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 0);
    ck_assert_float_eq(lenet_optimizer_lr(o), 3e38f);
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 1e-4f));
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL));
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 1);
    ck_assert_float_eq(lenet_optimizer_lr(o), 5e-5f);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

typedef struct param_log {
    const lenet_model *m;
    float *last; /* the parameters after the last completed step */
} param_log;

static void log_params(void *user, size_t done, size_t total, const lenet_metrics *so_far)
{
    param_log *log = user;
    (void)done, (void)total, (void)so_far;
    free(log->last);
    log->last = param_snapshot(log->m);
}

START_TEST(test_a_per_step_schedule_follows_a_rolled_back_step)
{
    /* Adam at lr 1 for two steps, then lr FLT_MAX: the third step overflows and is rolled back, and the schedule
     * still gives the third step's lr, because it reads the restored step count. */
    lenet_dataset *d = bright_halves("set", 16, 13);
    lenet_model *m = tiny_model(14);
    lenet_optimizer *o = lenet_adam_create(m, 1.0f, 0.9f, 0.999f, 1e-8f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert(o && it);
    ck_assert_lenet_ok(lenet_optimizer_set_schedule(o, lenet_schedule_step(2, FLT_MAX), LENET_SCHEDULE_PER_STEP));
    param_log log = {.m = m};
    ck_assert_int_eq(lenet_train_epoch(m, o, it, log_params, &log, NULL), LENET_ENUMERIC);
    ck_assert_uint_eq(lenet_optimizer_step_count(o), 2);
    ck_assert_float_eq(lenet_optimizer_lr(o), FLT_MAX);
    ck_assert_ptr_nonnull(log.last);
    ck_assert_mem_eq(m->params, log.last, m->arena_numel * sizeof(float));
    /* A smaller base brings the third step's lr to 3.4: training goes on. */
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 1e-38f));
    ck_assert_float_eq(lenet_optimizer_lr(o), (float)(1e-38f * (double)FLT_MAX));
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL));
    ck_assert_uint_eq(lenet_optimizer_step_count(o), 3);
    free(log.last);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_set_lr_with_a_schedule_sets_the_base)
{
    lenet_model *m = small_model(true);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    ck_assert_lenet_ok(lenet_optimizer_set_schedule(o, lenet_schedule_step(1, 0.5f), LENET_SCHEDULE_PER_STEP));
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.1f);
    ck_assert_lenet_ok(lenet_optimizer_step(o));
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.05f);
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 0.4f));
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.2f);
    lenet_optimizer_state st = state_of(o);
    ck_assert_double_eq(setting(&st, "schedule_base_lr"), (double)0.4f);
    ck_assert_int_eq(lenet_optimizer_set_lr(o, -1.0f), LENET_EINVAL);
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.2f);
    ck_assert_lenet_ok(lenet_optimizer_step(o));
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.1f);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_a_schedule_lr_beyond_float_is_enumeric_and_changes_nothing)
{
    lenet_model *m = small_model(true);
    set_params(m);
    set_grads(m, 0);
    lenet_optimizer *o = lenet_sgd_create(m, 1.0f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    ck_assert_lenet_ok(lenet_optimizer_set_schedule(o, lenet_schedule_step(1, 1e30f), LENET_SCHEDULE_PER_STEP));
    ck_assert_lenet_ok(lenet_optimizer_step(o));
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 0.0f)); /* keep the parameters finite at 0 * 1e30 */
    ck_assert_lenet_ok(lenet_optimizer_step(o));
    ck_assert_lenet_ok(lenet_optimizer_set_lr(o, 1.0f));
    ck_assert(isinf(lenet_optimizer_lr(o))); /* 1e60 */
    float *before = param_snapshot(m);
    lenet_error_clear();
    ck_assert_int_eq(lenet_optimizer_step(o), LENET_ENUMERIC);
    ck_assert_msg(strstr(lenet_last_error(), "schedule") != NULL, "message: %s", lenet_last_error());
    ck_assert_mem_eq(m->params, before, m->arena_numel * sizeof(float));
    ck_assert_uint_eq(lenet_optimizer_step_count(o), 2);
    free(before);
    lenet_optimizer_free(o);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_schedule_constructors_and_attach_reject_bad_arguments_and_free)
{
    struct {
        int period;
        float value;
    } bad[] = {{0, 0.5f}, {-1, 0.5f}, {1, -0.1f}, {1, NAN}, {1, INFINITY}, {INT32_MIN, 0.0f}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lenet_error_clear();
        ck_assert_ptr_null(lenet_schedule_step(bad[i].period, bad[i].value));
        ck_assert_msg(strstr(lenet_last_error(), "schedule_step") != NULL, "case %zu: %s", i, lenet_last_error());
        lenet_error_clear();
        ck_assert_ptr_null(lenet_schedule_cosine(bad[i].period, bad[i].value));
        ck_assert_msg(strstr(lenet_last_error(), "schedule_cosine") != NULL, "case %zu: %s", i, lenet_last_error());
    }
    /* warmup takes ownership of its inner schedule also when it fails (valgrind checks the frees). */
    ck_assert_ptr_null(lenet_schedule_warmup(0, lenet_schedule_constant()));
    ck_assert_int_eq(lenet__last_status(), LENET_EINVAL);
    ck_assert_ptr_null(lenet_schedule_warmup(2, lenet_schedule_warmup(3, lenet_schedule_constant())));
    ck_assert_msg(strstr(lenet_last_error(), "warm-up") != NULL, "%s", lenet_last_error());
    /* A failed inner constructor's message is kept. */
    ck_assert_ptr_null(lenet_schedule_warmup(3, lenet_schedule_cosine(0, 0.0f)));
    ck_assert_msg(strstr(lenet_last_error(), "schedule_cosine") != NULL, "%s", lenet_last_error());
    lenet_schedule_free(NULL);

    lenet_model *m = small_model(true);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(lenet_optimizer_set_schedule(NULL, lenet_schedule_constant(), LENET_SCHEDULE_PER_STEP),
                     LENET_EINVAL);
    ck_assert_int_eq(lenet_optimizer_set_schedule(o, lenet_schedule_step(0, 0.5f), LENET_SCHEDULE_PER_STEP),
                     LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "schedule_step") != NULL, "%s", lenet_last_error());
    ck_assert_int_eq(lenet_optimizer_set_schedule(o, lenet_schedule_constant(), (lenet_schedule_unit)7),
                     LENET_EINVAL);
    ck_assert_lenet_ok(lenet_optimizer_set_schedule(o, lenet_schedule_step(1, 0.5f), LENET_SCHEDULE_PER_EPOCH));
    ck_assert_int_eq(lenet_optimizer_set_schedule(o, lenet_schedule_constant(), LENET_SCHEDULE_PER_STEP),
                     LENET_ESTATE);
    lenet_optimizer_free(o);

    /* Only before the first step and the first epoch. */
    o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    ck_assert_lenet_ok(lenet_optimizer_step(o));
    ck_assert_int_eq(lenet_optimizer_set_schedule(o, lenet_schedule_constant(), LENET_SCHEDULE_PER_STEP),
                     LENET_ESTATE);
    lenet_optimizer_free(o);
    o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    lenet__optimizer_end_epoch(o);
    ck_assert_int_eq(lenet_optimizer_set_schedule(o, lenet_schedule_constant(), LENET_SCHEDULE_PER_EPOCH),
                     LENET_ESTATE);
    ck_assert_float_eq(lenet_optimizer_lr(o), 0.1f);
    lenet_optimizer_free(o);
    ck_assert_uint_eq(lenet_optimizer_step_count(NULL), 0);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(NULL), 0);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_schedule_settings_are_part_of_every_kind_state)
{
    lenet_model *m = small_model(true);
    for (int kind = 0; kind < 4; kind++) {
        for (int variant = 0; variant < 3; variant++) {
            lenet_optimizer *o = kind == 0   ? lenet_sgd_create(m, 0.1f, 0.9f, 0.0f)
                                 : kind == 1 ? lenet_sdlm_create(m, 0.1f, 0.02f)
                                 : kind == 2 ? lenet_adam_create(m, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f)
                                             : lenet_adamw_create(m, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f);
            ck_assert_ptr_nonnull(o);
            int own = state_of(o).n_settings;
            if (variant == 1)
                ck_assert_lenet_ok(lenet_optimizer_set_schedule(
                    o, lenet_schedule_warmup(3, lenet_schedule_cosine(10, 0.001f)), LENET_SCHEDULE_PER_EPOCH));
            if (variant == 2)
                ck_assert_lenet_ok(
                    lenet_optimizer_set_schedule(o, lenet_schedule_step(4, 0.25f), LENET_SCHEDULE_PER_STEP));
            lenet_optimizer_state st = state_of(o);
            ck_assert_int_eq(st.n_settings, own + (variant == 0 ? 0 : 6));
            for (int i = 0; i < st.n_settings; i++) /* a checkpoint writes them as keys of one JSON object */
                for (int j = i + 1; j < st.n_settings; j++)
                    ck_assert_str_ne(st.setting_names[i], st.setting_names[j]);
            if (variant == 1) {
                ck_assert_double_eq(setting(&st, "schedule_unit"), LENET_SCHEDULE_PER_EPOCH);
                ck_assert_double_eq(setting(&st, "schedule_base_lr"), (double)0.1f);
                ck_assert_double_eq(setting(&st, "schedule_warmup"), 3);
                ck_assert_double_eq(setting(&st, "schedule_t_max"), 10);
                ck_assert_double_eq(setting(&st, "schedule_eta_min"), (double)0.001f);
            } else if (variant == 2) {
                ck_assert_double_eq(setting(&st, "schedule_unit"), LENET_SCHEDULE_PER_STEP);
                ck_assert_double_eq(setting(&st, "schedule_warmup"), 0);
                ck_assert_double_eq(setting(&st, "schedule_step_size"), 4);
                ck_assert_double_eq(setting(&st, "schedule_gamma"), 0.25);
            }
            lenet_optimizer_free(o);
        }
    }
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

    tc = tcase_create("adam");
    tcase_add_checked_fixture(tc, idx_dir_create_fixture, idx_dir_remove);
    tcase_add_test(tc, test_adam_and_adamw_match_pytorch_1_13_over_five_steps);
    tcase_add_test(tc, test_adam_create_rejects_bad_arguments_with_a_message);
    tcase_add_test(tc, test_adam_updates_only_trainable_parameters);
    tcase_add_test(tc, test_adam_state_names_its_buffers_and_settings_as_pytorch);
    tcase_add_test(tc, test_adam_resumed_from_adopted_state_is_bit_identical);
    tcase_add_test(tc, test_adam_checkpoint_round_trip_is_bit_identical_and_checks_the_schedule);
    tcase_add_test(tc, test_an_adam_step_that_overflows_is_rolled_back_with_its_moments);
    tcase_add_test(tc, test_an_overflowing_first_adam_step_leaves_no_moments);
    suite_add_tcase(s, tc);

    tc = tcase_create("schedule");
    tcase_add_checked_fixture(tc, idx_dir_create_fixture, idx_dir_remove);
    tcase_add_test(tc, test_schedules_give_pytorch_lr_sequences);
    tcase_add_test(tc, test_a_per_step_schedule_sets_the_lr_of_each_step);
    tcase_add_test(tc, test_a_per_epoch_schedule_advances_with_lenet_train_epoch);
    tcase_add_test(tc, test_a_failed_epoch_is_not_counted);
    tcase_add_test(tc, test_a_per_step_schedule_follows_a_rolled_back_step);
    tcase_add_test(tc, test_set_lr_with_a_schedule_sets_the_base);
    tcase_add_test(tc, test_a_schedule_lr_beyond_float_is_enumeric_and_changes_nothing);
    tcase_add_test(tc, test_schedule_constructors_and_attach_reject_bad_arguments_and_free);
    tcase_add_test(tc, test_schedule_settings_are_part_of_every_kind_state);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
