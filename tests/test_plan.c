/* Inference plans: the same outputs as lenet_model_predict for every layer kind, many threads on one plan, and the
 * errors.  Built a second time with LENET_TEST_COUNT_ALLOCATIONS as the plan_alloc test, whose malloc interposer
 * also checks that lenet_plan_run allocates nothing; that one runs without sanitizers and valgrind, which replace
 * malloc themselves. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/fused.h"
#include "kernels/kernels.h"
#include "layers/layer.h"
#include "plan/internal.h"
#include "testutil.h"

/* ---- counting allocations: this executable's malloc family wraps glibc's, for every library in the process ---- */

#ifdef LENET_TEST_COUNT_ALLOCATIONS

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

static atomic_bool counting;
static atomic_size_t allocations;

static void count(void)
{
    if (atomic_load(&counting))
        atomic_fetch_add(&allocations, 1);
}

void *malloc(size_t size)
{
    count();
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    count();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    count();
    return __libc_realloc(p, size);
}

void *aligned_alloc(size_t alignment, size_t size)
{
    count();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size)
{
    count();
    void *p = __libc_memalign(alignment, size);
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}
#else
static atomic_bool counting;
static atomic_size_t allocations;
#endif

/* ---- the networks ---- */

static lenet_model *model_of(lenet_layer *const *layers, size_t n, int c, int h, int w)
{
    lenet_model *m = lenet_model_create();
    for (size_t i = 0; i < n; i++)
        ck_assert_lenet_ok(lenet_model_add(m, layers[i]));
    ck_assert_lenet_ok(lenet_model_build(m, c, h, w));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 7));
    return m;
}

#define MODEL(c, h, w, ...)                                                                                    \
    model_of((lenet_layer *[]){__VA_ARGS__}, sizeof((lenet_layer *[]){__VA_ARGS__}) / sizeof(lenet_layer *), c, h, w)

/* Trains the BatchNorm statistics away from their initial values with a few training forwards. */
static void warm_up(lenet_model *m, int c, int h, int w)
{
    lenet_tensor *x = lenet_tensor_create(4, (int[]){32, c, h, w});
    const lenet_tensor *y;
    for (int step = 0; step < 3; step++) {
        lenet_test_fill(x, 40 + (uint64_t)step, -1.0f, 2.0f);
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    }
    lenet_tensor_free(x);
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        if (strstr(lenet_model_param_name(m, i), "bias"))
            lenet_test_fill(lenet_model_param(m, i), 50 + i, -0.3f, 0.3f);
}

typedef struct network {
    const char *name;
    lenet_model *(*make)(void);
    int c, h, w;
} network;

static lenet_model *d2l(void)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 7));
    return m;
}

static lenet_model *modern_bn_dropout(void)
{
    lenet_model *m = MODEL(1, 28, 28, lenet_conv2d(6, 5, 1, 2), lenet_batchnorm2d(1e-5f, 0.1f), lenet_relu(),
                           lenet_maxpool2d(2, 2), lenet_conv2d(16, 5, 1, 0), lenet_batchnorm2d(1e-5f, 0.1f),
                           lenet_tanh(), lenet_avgpool2d(2, 2), lenet_flatten(), lenet_dropout(0.3f),
                           lenet_linear(120), lenet_batchnorm1d(1e-5f, 0.1f), lenet_sigmoid(), lenet_dropout(0.5f),
                           lenet_linear(84), lenet_relu(), lenet_linear(10));
    warm_up(m, 1, 28, 28);
    return m;
}

/* BatchNorm where there is nothing to fold it into: first, and after a pooling layer. */
static lenet_model *unfoldable_bn(void)
{
    lenet_model *m = MODEL(2, 9, 9, lenet_batchnorm2d(1e-3f, 0.2f), lenet_conv2d(3, 3, 2, 1), lenet_maxpool2d(2, 1),
                           lenet_batchnorm2d(1e-5f, 0.1f), lenet_flatten(), lenet_batchnorm1d(1e-5f, 0.1f),
                           lenet_linear(5));
    warm_up(m, 2, 9, 9);
    return m;
}

static lenet_model *lenet5(void)
{
    return MODEL(1, 32, 32, lenet_conv2d(6, 5, 1, 0), lenet_scaled_tanh(), lenet_subsampling(2, 2),
                 lenet_scaled_tanh(), lenet_lenet5_c3(), lenet_scaled_tanh(), lenet_subsampling(2, 2),
                 lenet_scaled_tanh(), lenet_conv2d(120, 5, 1, 0), lenet_scaled_tanh(), lenet_flatten(),
                 lenet_linear(84), lenet_scaled_tanh(), lenet_lenet5_rbf());
}

static const network NETWORKS[] = {
    {"d2l", d2l, 1, 28, 28},
    {"modern+bn+dropout", modern_bn_dropout, 1, 28, 28},
    {"unfoldable bn", unfoldable_bn, 2, 9, 9},
    {"lenet5", lenet5, 1, 32, 32},
};

/* Worst |a - b| / max(|b|, floor) where floor is 1e-3 of the largest |b|. */
static double worst_error(const float *a, const float *b, size_t n)
{
    double most = 0.0;
    for (size_t i = 0; i < n; i++)
        most = fmax(most, fabs((double)b[i]));
    return lenet_test_max_rel_err(a, b, n, fmax(1e-3 * most, 1e-30));
}

static void check_network(const network *net, const int *batches, size_t n_batches)
{
    lenet_model *m = net->make();
    lenet_plan *p = lenet_plan_create(m, 1000);
    ck_assert_msg(p != NULL, "%s: %s", net->name, lenet_last_error());
    const size_t size = lenet_plan_workspace_size(p);
    void *work = malloc(size);
    for (size_t b = 0; b < n_batches; b++) {
        const int n = batches[b];
        lenet_tensor *x = lenet_tensor_create(4, (int[]){n, net->c, net->h, net->w});
        lenet_test_fill(x, 100 + (uint64_t)n, -1.0f, 2.0f);
        const int outputs = (int)lenet_model_output_size(m);
        lenet_tensor *want = lenet_tensor_create(2, (int[]){n, outputs}), *got = lenet_tensor_create(2, (int[]){n, outputs});
        ck_assert_lenet_ok(lenet_model_predict(m, x, want));
        atomic_store(&allocations, 0);
        atomic_store(&counting, true);
        lenet_status st = lenet_plan_run(p, work, size, x, got);
        atomic_store(&counting, false);
        ck_assert_lenet_ok(st);
        ck_assert_msg(atomic_load(&allocations) == 0, "%s, batch %d: %zu allocations inside lenet_plan_run",
                      net->name, n, atomic_load(&allocations));
        double err = worst_error(lenet_tensor_cdata(got), lenet_tensor_cdata(want), lenet_tensor_numel(want));
        printf("%-18s batch %4d: worst relative error against predict %.3g\n", net->name, n, err);
        ck_assert_msg(err <= 1e-5, "%s, batch %d: plan differs from predict by %.3g", net->name, n, err);
        lenet_tensor_free(x);
        lenet_tensor_free(want);
        lenet_tensor_free(got);
    }
    free(work);
    lenet_plan_free(p);
    lenet_model_free(m);
}

/* ---- the fused backend: every layer kind it runs, in the places its stages put them ----
 * Each of these networks ends in a sigmoid, so that its outputs are of the order of one: a last layer that cancels
 * terms down to outputs near zero carries their rounding (an ulp of the terms, in predict as much as in the plan),
 * which the relative error below the 0.1% floor would magnify past 1e-5 by chance. */

/* Tanh before max pooling and ReLU after it (an odd size leaves a row and a column out), a convolution alone, an
 * overlapping average pool that the convolution kernels cannot do, then Sigmoid after it, Linear with and without
 * an activation. */
static lenet_model *fused_odd_shapes(void)
{
    return MODEL(3, 13, 11, lenet_conv2d(5, 3, 1, 1), lenet_tanh(), lenet_maxpool2d(2, 2), lenet_relu(),
                 lenet_conv2d(7, 2, 1, 0), lenet_avgpool2d(3, 1), lenet_sigmoid(), lenet_flatten(), lenet_linear(9),
                 lenet_relu(), lenet_linear(3), lenet_sigmoid());
}

/* Activations and pooling before any convolution, a padding wider than the kernel's reach, 20 channels (tiles that
 * do not divide them), an activation after Flatten, Linear without one, 130 outputs, a single one and an activation
 * after it on its own. */
static lenet_model *fused_layers_alone(void)
{
    return MODEL(2, 8, 8, lenet_sigmoid(), lenet_avgpool2d(2, 2), lenet_conv2d(20, 3, 1, 2), lenet_relu(),
                 lenet_avgpool2d(2, 2), lenet_flatten(), lenet_tanh(), lenet_linear(17), lenet_linear(130),
                 lenet_sigmoid(), lenet_linear(1), lenet_sigmoid());
}

/* Rows wider than any vector (40 columns), 33 channels, max pooling after ReLU with an activation after it, ending
 * on a convolution's pooled image rather than on Linear. */
static lenet_model *fused_wide(void)
{
    return MODEL(1, 20, 40, lenet_conv2d(4, 5, 1, 2), lenet_sigmoid(), lenet_avgpool2d(2, 2),
                 lenet_conv2d(33, 3, 1, 1), lenet_relu(), lenet_maxpool2d(2, 2), lenet_sigmoid());
}

/* The smallest: one convolution and its activation; and pooling straight after a convolution, with the activation
 * after the pooling, ending on Flatten. */
static lenet_model *fused_conv_only(void)
{
    return MODEL(1, 6, 6, lenet_conv2d(2, 3, 1, 1), lenet_sigmoid());
}

static lenet_model *fused_flatten_last(void)
{
    return MODEL(2, 7, 7, lenet_conv2d(3, 3, 1, 0), lenet_maxpool2d(2, 2), lenet_sigmoid(), lenet_flatten());
}

static const network FUSED_NETWORKS[] = {
    {"d2l", d2l, 1, 28, 28},
    {"modern+bn+dropout", modern_bn_dropout, 1, 28, 28},
    {"odd shapes", fused_odd_shapes, 3, 13, 11},
    {"layers alone", fused_layers_alone, 2, 8, 8},
    {"wide", fused_wide, 1, 20, 40},
    {"conv only", fused_conv_only, 1, 6, 6},
    {"flatten last", fused_flatten_last, 2, 7, 7},
};

/* A tensor of n samples of the model's output shape. */
static lenet_tensor *output_tensor(const lenet_model *m, int n)
{
    const lenet_shape *out = &m->layers[m->n_layers - 1]->out;
    int shape[1 + LENET_MAX_SAMPLE_DIMS] = {n};
    for (int d = 0; d < out->ndim; d++)
        shape[1 + d] = out->dim[d];
    return lenet_tensor_create(1 + out->ndim, shape);
}

/* The plan of net runs on the fused backend and gives predict's outputs for each batch (one image, a short group,
 * a full lane group, a full one and one image, a full one and a group of 13 and of 15, which the kernel tables run
 * one sample at a time or as a lane group with empty lanes), from a workspace full of NaNs. */
static void check_fused(const network *net, const char *isa)
{
    static const int batches[] = {1, 7, 16, 17, 29, 31};
    lenet_model *m = net->make();
    lenet_plan *p = lenet_plan_create(m, 64);
    ck_assert_msg(p != NULL, "%s: %s", net->name, lenet_last_error());
    ck_assert_str_eq(p->backend->name, "fused");
    const size_t size = lenet_plan_workspace_size(p);
    void *work = malloc(size);
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        const int n = batches[b];
        lenet_tensor *x = lenet_tensor_create(4, (int[]){n, net->c, net->h, net->w});
        lenet_test_fill(x, 200 + (uint64_t)n, -2.0f, 2.0f);
        lenet_tensor *want = output_tensor(m, n), *got = output_tensor(m, n);
        ck_assert_lenet_ok(lenet_model_predict(m, x, want));
        memset(work, 0xff, size); /* NaN: a read of anything the run did not write shows */
        atomic_store(&allocations, 0);
        atomic_store(&counting, true);
        lenet_status st = lenet_plan_run(p, work, size, x, got);
        atomic_store(&counting, false);
        ck_assert_lenet_ok(st);
        ck_assert_msg(atomic_load(&allocations) == 0, "%s, batch %d: %zu allocations inside lenet_plan_run",
                      net->name, n, atomic_load(&allocations));
        const double err = worst_error(lenet_tensor_cdata(got), lenet_tensor_cdata(want), lenet_tensor_numel(want));
        printf("%-7s %-18s batch %2d: worst relative error against predict %.3g\n", isa, net->name, n, err);
        ck_assert_msg(err <= 1e-5, "%s on %s, batch %d: plan differs from predict by %.3g", net->name, isa, n, err);
        lenet_tensor_free(x);
        lenet_tensor_free(want);
        lenet_tensor_free(got);
    }
    free(work);
    lenet_plan_free(p);
    lenet_model_free(m);
}

START_TEST(test_fused_plans_give_predicts_outputs_from_a_workspace_of_nans)
{
    for (size_t i = 0; i < sizeof FUSED_NETWORKS / sizeof FUSED_NETWORKS[0]; i++)
        check_fused(&FUSED_NETWORKS[i], lenet__kernels()->isa);
}
END_TEST

/* predict and the plan both follow the forced table, so each table's fused kernels meet the layers' kernels of the
 * same instruction set; a CPU without AVX-512 (or AVX2) checks what it has. */
START_TEST(test_fused_plans_give_predicts_outputs_on_every_kernel_table_the_cpu_has)
{
    static const char *const tables[] = {"generic", "avx2", "avx512"};
    int ran = 0;
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        if (!lenet__kernels_force(tables[t]))
            continue;
        ck_assert_str_eq(lenet__kernels()->isa, tables[t]);
        for (size_t i = 0; i < sizeof FUSED_NETWORKS / sizeof FUSED_NETWORKS[0]; i++)
            check_fused(&FUSED_NETWORKS[i], tables[t]);
        ran++;
    }
    ck_assert(lenet__kernels_force(NULL));
    ck_assert_int_ge(ran, 1);
}
END_TEST

/* Distance of a from b in units of b's last place; 0 when both are the same value (NaN included). */
static double ulps(float a, float b)
{
    if ((isnan(a) && isnan(b)) || a == b)
        return 0.0;
    const float m = fabsf(b);
    return fabs((double)a - (double)b) / ((double)nextafterf(m, INFINITY) - (double)m);
}

/* The fused kernels' activations (their map kernel on a lane tensor) against the layers': sigmoid within 6 ulp of the
 * layers' vector sigmoid, tanh within 4 of tanhf (5 and 3 measured), ReLU exact; infinities, NaN and -0 as the layers
 * treat them. */
START_TEST(test_fused_activations_are_within_a_few_ulp_of_the_layers)
{
    enum { N = 1 << 16, LANES = 16 };
    static const char *const tables[] = {"generic", "avx2", "avx512"};
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *want = malloc(N * sizeof *want);
    for (int i = 0; i < N; i++)
        x[i] = -100.0f + 200.0f * (float)i / N;
    const float special[] = {INFINITY, -INFINITY, NAN, -0.0f, 0.0f, 1e-30f, -1e-30f, 88.5f, -88.5f, 1e30f, -1e30f};
    memcpy(x, special, sizeof special);
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        if (!lenet__kernels_force(tables[t]))
            continue;
        const lenet_fused_kernels *fk = lenet__fused_kernels();
        ck_assert_str_eq(fk->isa, tables[t]);
        for (lenet_act act = LENET_ACT_SIGMOID; act <= LENET_ACT_TANH; act++) {
            const lenet_conv_geom g = {.c = N / LANES, .h = 1, .w = 1, .k = 1, .s = 1, .oh = 1, .ow = 1};
            const lenet_epilogue e = {.act = act};
            const lenet_view to = {.data = y, .plane = LANES, .row = LANES};
            fk->map(&g, &e, LANES, x, LANES, LANES, &to);
            if (act == LENET_ACT_SIGMOID)
                lenet__sigmoid_forward(N, x, want);
            else if (act == LENET_ACT_RELU)
                lenet__relu_forward(N, x, want);
            else
                lenet__tanh_forward(N, x, want);
            double worst = 0.0;
            for (int i = 0; i < N; i++) {
                ck_assert_msg(signbit(y[i]) == signbit(want[i]) || isnan(want[i]), "%s act %d at %g: %g, want %g",
                              tables[t], (int)act, (double)x[i], (double)y[i], (double)want[i]);
                worst = fmax(worst, ulps(y[i], want[i]));
            }
            printf("%-7s activation %d: worst %.1f ulp from the layers'\n", tables[t], (int)act, worst);
            ck_assert_msg(worst <= (act == LENET_ACT_SIGMOID ? 6.0 : act == LENET_ACT_TANH ? 4.0 : 0.0),
                          "%s act %d: %.1f ulp from the layers'", tables[t], (int)act, worst);
        }
    }
    ck_assert(lenet__kernels_force(NULL));
    free(x);
    free(y);
    free(want);
}
END_TEST

START_TEST(test_plans_take_the_fused_backend_only_for_the_layer_kinds_it_runs)
{
    for (size_t i = 0; i < sizeof NETWORKS / sizeof NETWORKS[0]; i++) {
        lenet_model *m = NETWORKS[i].make();
        lenet_plan *p = lenet_plan_create(m, 4);
        ck_assert_ptr_nonnull(p);
        /* d2l and the BatchNorm LeNet (BatchNorm folded, Dropout gone) are fused; LeNet-5's own layers and a stride-2
         * convolution are not. */
        ck_assert_str_eq(p->backend->name, i < 2 ? "fused" : "layers");
        lenet_plan_free(p);
        lenet_model_free(m);
    }
}
END_TEST

START_TEST(test_plans_give_predicts_outputs_for_every_layer_kind_without_allocating)
{
    const int batches[] = {1, 7, 16, 17};
    for (size_t i = 0; i < sizeof NETWORKS / sizeof NETWORKS[0]; i++)
        check_network(&NETWORKS[i], batches, sizeof batches / sizeof batches[0]);
}
END_TEST

START_TEST(test_a_plan_runs_a_batch_of_1000)
{
    const int batches[] = {1000};
    check_network(&NETWORKS[0], batches, 1);
    check_network(&NETWORKS[1], batches, 1);
}
END_TEST

START_TEST(test_a_plan_outlives_its_model_and_folds_batchnorm_away)
{
    lenet_model *m = modern_bn_dropout();
    lenet_tensor *x = lenet_tensor_create(4, (int[]){5, 1, 28, 28}), *want = lenet_tensor_create(2, (int[]){5, 10});
    lenet_test_fill(x, 3, 0.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_predict(m, x, want));
    lenet_plan *p = lenet_plan_create(m, 5);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(lenet_plan_max_batch(p), 5);
    lenet_model_free(m);
    lenet_tensor *got = lenet_tensor_create(2, (int[]){5, 10});
    void *work = malloc(lenet_plan_workspace_size(p));
    ck_assert_lenet_ok(lenet_plan_run(p, work, lenet_plan_workspace_size(p), x, got));
    ck_assert(worst_error(lenet_tensor_cdata(got), lenet_tensor_cdata(want), 50) <= 1e-5);
    /* Any alignment of the workspace will do. */
    char *odd = malloc(lenet_plan_workspace_size(p) + 3);
    ck_assert_lenet_ok(lenet_plan_run(p, odd + 3, lenet_plan_workspace_size(p), x, got));
    free(odd);
    free(work);
    lenet_plan_free(p);
    lenet_tensor_free(x);
    lenet_tensor_free(want);
    lenet_tensor_free(got);
}
END_TEST

START_TEST(test_plan_classify_applies_the_models_rule_to_scores_and_to_penalties)
{
    /* On predict's own outputs, lenet_plan_classify gives exactly what lenet_model_classify gives: the largest of
     * the d2l LeNet's scores, the smallest of LeNet-5's RBF penalties. */
    for (size_t k = 0; k < sizeof NETWORKS / sizeof NETWORKS[0]; k++) {
        const network *net = &NETWORKS[k];
        if (strcmp(net->name, "d2l") != 0 && strcmp(net->name, "lenet5") != 0)
            continue;
        lenet_model *m = net->make();
        lenet_plan *p = lenet_plan_create(m, 8);
        ck_assert_msg(p != NULL, "%s: %s", net->name, lenet_last_error());
        enum { N = 6 };
        lenet_tensor *x = lenet_tensor_create(4, (int[]){N, net->c, net->h, net->w});
        lenet_test_fill(x, 300, -1.0f, 2.0f);
        const int outputs = (int)lenet_model_output_size(m);
        lenet_tensor *y = lenet_tensor_create(2, (int[]){N, outputs});
        ck_assert_lenet_ok(lenet_model_predict(m, x, y));
        int32_t want[N], got[N];
        float want_probs[N * 10], got_probs[N * 10];
        ck_assert_int_eq(outputs, 10);
        ck_assert_lenet_ok(lenet_model_classify(m, x, want, want_probs));
        ck_assert_lenet_ok(lenet_plan_classify(p, y, got, got_probs));
        for (int i = 0; i < N; i++) {
            const float *row = lenet_tensor_cdata(y) + (size_t)i * outputs;
            int extreme = 0;
            for (int j = 1; j < outputs; j++)
                if (strcmp(net->name, "lenet5") == 0 ? row[j] < row[extreme] : row[j] > row[extreme])
                    extreme = j;
            ck_assert_int_eq(got[i], want[i]);
            ck_assert_int_eq(got[i], extreme);
        }
        ck_assert_mem_eq(got_probs, want_probs, sizeof got_probs);
        ck_assert_lenet_ok(lenet_plan_classify(p, y, NULL, NULL));

        ck_assert_int_eq(lenet_plan_classify(NULL, y, got, NULL), LENET_EINVAL);
        ck_assert_int_eq(lenet_plan_classify(p, NULL, got, NULL), LENET_EINVAL);
        lenet_tensor *wrong = lenet_tensor_create(2, (int[]){N, outputs + 1});
        ck_assert_int_eq(lenet_plan_classify(p, wrong, got, NULL), LENET_ESHAPE);
        lenet_tensor_free(wrong);
        lenet_tensor_free(x);
        lenet_tensor_free(y);
        lenet_plan_free(p);
        lenet_model_free(m);
    }
}
END_TEST

START_TEST(test_plan_errors_are_statuses_and_write_nothing)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_ptr_null(lenet_plan_create(m, 4));
    ck_assert_int_eq(lenet__last_status(), LENET_ESTATE); /* not built */
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_ptr_null(lenet_plan_create(NULL, 4));
    ck_assert_ptr_null(lenet_plan_create(m, 0));
    ck_assert_msg(strstr(lenet_last_error(), "max_batch") != NULL, "message: %s", lenet_last_error());
    lenet_plan *p = lenet_plan_create(m, 4);
    const size_t size = lenet_plan_workspace_size(p);
    void *work = malloc(size);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){4, 1, 28, 28}), *y = lenet_tensor_create(2, (int[]){4, 10});
    lenet_tensor *big = lenet_tensor_create(4, (int[]){5, 1, 28, 28}), *big_y = lenet_tensor_create(2, (int[]){5, 10});
    lenet_tensor *wrong = lenet_tensor_create(4, (int[]){4, 1, 32, 32}), *wrong_y = lenet_tensor_create(2, (int[]){4, 9});
    lenet_test_fill(y, 1, 5.0f, 6.0f);
    float before[40];
    memcpy(before, lenet_tensor_cdata(y), sizeof before);
    ck_assert_int_eq(lenet_plan_run(p, work, size - 1, x, y), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "workspace") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_plan_run(p, NULL, size, x, y), LENET_EINVAL);
    ck_assert_int_eq(lenet_plan_run(NULL, work, size, x, y), LENET_EINVAL);
    ck_assert_int_eq(lenet_plan_run(p, work, size, big, big_y), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "max_batch") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_plan_run(p, work, size, wrong, y), LENET_ESHAPE);
    ck_assert_int_eq(lenet_plan_run(p, work, size, x, wrong_y), LENET_ESHAPE);
    ck_assert_mem_eq(before, lenet_tensor_cdata(y), sizeof before);
    ck_assert_uint_eq(lenet_plan_workspace_size(NULL), 0);
    lenet_plan_free(NULL);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_tensor_free(big);
    lenet_tensor_free(big_y);
    lenet_tensor_free(wrong);
    lenet_tensor_free(wrong_y);
    free(work);
    lenet_plan_free(p);
    lenet_model_free(m);
}
END_TEST

/* A layer kind outside the library: a plan cannot rebuild it. */
static lenet_status same_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    (void)l;
    *out = *in;
    return LENET_OK;
}

static void copy_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    memcpy(y, p->x, (size_t)p->n * l->in_size * sizeof(float));
}

static const lenet_layer_ops custom_ops = {.name = "Custom", .infer_shape = same_shape, .forward = copy_forward};

START_TEST(test_a_layer_kind_outside_the_library_is_unsupported_by_name)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet__layer_alloc(sizeof(lenet_layer), &custom_ops, 0, NULL)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 2, 2));
    ck_assert_ptr_null(lenet_plan_create(m, 1));
    ck_assert_int_eq(lenet__last_status(), LENET_EUNSUPPORTED);
    ck_assert_msg(strstr(lenet_last_error(), "layer 1 (Custom)") != NULL, "message: %s", lenet_last_error());
    lenet_model_free(m);
}
END_TEST

typedef struct thread_job {
    const lenet_plan *p;
    const lenet_tensor *x;
    const float *want;
    int failures;
} thread_job;

static void *run_many(void *arg)
{
    thread_job *job = arg;
    size_t size = lenet_plan_workspace_size(job->p);
    void *work = malloc(size);
    lenet_tensor *y = lenet_tensor_create(2, (int[]){lenet_tensor_dim(job->x, 0), 10});
    for (int r = 0; r < 20; r++) {
        if (lenet_plan_run(job->p, work, size, job->x, y) != LENET_OK ||
            memcmp(lenet_tensor_cdata(y), job->want, lenet_tensor_numel(y) * sizeof(float)) != 0)
            job->failures++;
    }
    lenet_tensor_free(y);
    free(work);
    return NULL;
}

START_TEST(test_many_threads_run_one_plan_at_once_with_a_workspace_each)
{
    lenet_model *m = modern_bn_dropout();
    lenet_plan *p = lenet_plan_create(m, 20);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){20, 1, 28, 28}), *y = lenet_tensor_create(2, (int[]){20, 10});
    lenet_test_fill(x, 8, 0.0f, 1.0f);
    void *work = malloc(lenet_plan_workspace_size(p));
    ck_assert_lenet_ok(lenet_plan_run(p, work, lenet_plan_workspace_size(p), x, y));
    free(work);
    enum { THREADS = 6 };
    pthread_t threads[THREADS];
    thread_job jobs[THREADS];
    for (int t = 0; t < THREADS; t++) {
        jobs[t] = (thread_job){p, x, lenet_tensor_cdata(y), 0};
        ck_assert_int_eq(pthread_create(&threads[t], NULL, run_many, &jobs[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        ck_assert_int_eq(jobs[t].failures, 0);
    }
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_plan_free(p);
    lenet_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("plan");
    tcase_add_test(tc, test_plans_give_predicts_outputs_for_every_layer_kind_without_allocating);
    tcase_add_test(tc, test_a_plan_runs_a_batch_of_1000);
    tcase_add_test(tc, test_a_plan_outlives_its_model_and_folds_batchnorm_away);
    tcase_add_test(tc, test_plan_errors_are_statuses_and_write_nothing);
    tcase_add_test(tc, test_plan_classify_applies_the_models_rule_to_scores_and_to_penalties);
    tcase_add_test(tc, test_a_layer_kind_outside_the_library_is_unsupported_by_name);
    tcase_add_test(tc, test_many_threads_run_one_plan_at_once_with_a_workspace_each);
    tcase_add_test(tc, test_fused_plans_give_predicts_outputs_from_a_workspace_of_nans);
    tcase_add_test(tc, test_fused_plans_give_predicts_outputs_on_every_kernel_table_the_cpu_has);
    tcase_add_test(tc, test_plans_take_the_fused_backend_only_for_the_layer_kinds_it_runs);
    tcase_add_test(tc, test_fused_activations_are_within_a_few_ulp_of_the_layers);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
