/* The engine: training mode, whole-batch layers, buffers and activations.
 *
 * A test-only whole-batch layer, BatchCenter, subtracts the batch mean of each feature and scales by a weight:
 *     training:   y[i][f] = w[f] * (x[i][f] - mean_i x[i][f])      evaluation:  y[i][f] = w[f] * x[i][f]
 * and keeps a running mean (momentum 1/2) and a count of batches as buffers, like BatchNorm.  Its backward:
 *     dw[f] += sum_i dy[i][f] * (x[i][f] - mean)      dx[i][f] = w[f] * (dy[i][f] - mean_i dy[i][f])
 * The tests check that the engine gives it the whole batch's sums, bit-identically for any thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "idxfixture.h"
#include "layers/layer.h"
#include "testutil.h"

typedef struct batch_center {
    lenet_layer base;
    int features;
} batch_center;

static lenet_status center_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    (void)l;
    if (in->ndim != 1)
        return lenet__fail(LENET_ESHAPE, "BatchCenter expects features");
    *out = *in;
    return LENET_OK;
}

static lenet_status center_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    batch_center *b = (batch_center *)l;
    b->features = l->in.dim[0];
    specs[0] = (lenet_param_spec){.suffix = "weight", .ndim = 1, .shape = {b->features}, .trainable = true};
    specs[1] = (lenet_param_spec){.suffix = "running_mean", .ndim = 1, .shape = {b->features}, .buffer = true};
    specs[2] = (lenet_param_spec){.suffix = "num_batches_tracked", .ndim = 1, .shape = {1}, .buffer = true,
                                  .int64 = true};
    *count = 3;
    return LENET_OK;
}

static void center_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    (void)scheme;
    for (size_t f = 0; f < l->param_numel[0]; f++)
        l->param[0][f] = 0.5f + lenet__rng_uniform(rng);
    memset(l->buffer[0], 0, l->buffer_numel[0] * sizeof(float));
    l->buffer[1][0] = 0.0f;
}

static size_t center_batch_stats(const lenet_layer *l, bool training)
{
    return training ? (size_t)((const batch_center *)l)->features : 0;
}

/* Sums of x over the chunk, per feature. */
static void center_forward_stats(const lenet_layer *l, const lenet_pass *p, double *partial)
{
    const int features = ((const batch_center *)l)->features;
    for (int i = 0; i < p->n; i++)
        for (int f = 0; f < features; f++)
            partial[f] += p->x[(size_t)i * features + f];
}

static void center_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const int features = ((const batch_center *)l)->features;
    for (int i = 0; i < p->n; i++)
        for (int f = 0; f < features; f++) {
            float mean = p->training ? (float)(p->stats[f] / p->batch) : 0.0f;
            y[(size_t)i * features + f] = l->param[0][f] * (p->x[(size_t)i * features + f] - mean);
        }
}

static void center_update_buffers(lenet_layer *l, const double *stats, int batch, size_t average)
{
    const int features = ((const batch_center *)l)->features;
    const float factor = average > 0 ? 1.0f / (float)average : 0.5f;
    for (int f = 0; f < features; f++)
        l->buffer[0][f] = (1.0f - factor) * l->buffer[0][f] + factor * (float)(stats[f] / batch);
    l->buffer[1][0] += 1.0f;
}

/* Sums of dy over the chunk, per feature. */
static void center_backward_stats(const lenet_layer *l, const lenet_pass *p, double *partial)
{
    const int features = ((const batch_center *)l)->features;
    for (int i = 0; i < p->n; i++)
        for (int f = 0; f < features; f++)
            partial[f] += p->dy[(size_t)i * features + f];
}

static void center_backward(const lenet_layer *l, const lenet_pass *p)
{
    const int features = ((const batch_center *)l)->features;
    for (int i = 0; i < p->n; i++)
        for (int f = 0; f < features; f++) {
            const size_t k = (size_t)i * features + f;
            float mean = p->training ? (float)(p->stats[f] / p->batch) : 0.0f;
            float dmean = p->training ? (float)(p->grad_stats[f] / p->batch) : 0.0f;
            p->grads[0][f] += p->dy[k] * (p->x[k] - mean);
            if (p->dx)
                p->dx[k] = l->param[0][f] * (p->dy[k] - dmean);
        }
}

static const lenet_layer_ops center_ops = {
    .name = "BatchCenter",
    .infer_shape = center_infer_shape,
    .setup = center_setup,
    .init = center_init,
    .forward = center_forward,
    .backward = center_backward,
    .batch_stats = center_batch_stats,
    .forward_stats = center_forward_stats,
    .backward_stats = center_backward_stats,
    .update_buffers = center_update_buffers,
};

static lenet_layer *batch_center_layer(void)
{
    return lenet__layer_alloc(sizeof(batch_center), &center_ops, 0, NULL);
}

/* Flatten, Linear(6), BatchCenter, Sigmoid, Linear(3) over (1, 3, 3); with `twice`, another BatchCenter as the
 * last layer, so a cut sits at the top with no layer above it. */
static lenet_model *center_model(bool twice)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(6)));
    ck_assert_lenet_ok(lenet_model_add(m, batch_center_layer()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(3)));
    if (twice)
        ck_assert_lenet_ok(lenet_model_add(m, batch_center_layer()));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 3, 3));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 11));
    return m;
}

static lenet_tensor *random_batch(int n, uint64_t seed)
{
    lenet_tensor *x = lenet_tensor_create(4, (int[]){n, 1, 3, 3});
    lenet_test_fill(x, seed, -1.0f, 1.0f);
    return x;
}

/* The output of center_model(false) computed over the whole batch at once, in double. */
static void reference_forward(lenet_model *m, const lenet_tensor *x, double *out)
{
    const int n = lenet_tensor_dim(x, 0);
    const float *w1 = lenet_tensor_cdata(lenet_model_param(m, 0)), *b1 = lenet_tensor_cdata(lenet_model_param(m, 1));
    const float *scale = lenet_tensor_cdata(lenet_model_param(m, 2));
    const float *w2 = lenet_tensor_cdata(lenet_model_param(m, 3)), *b2 = lenet_tensor_cdata(lenet_model_param(m, 4));
    double *z = calloc((size_t)n * 6, sizeof *z), mean[6] = {0};
    for (int i = 0; i < n; i++)
        for (int o = 0; o < 6; o++) {
            double acc = b1[o];
            for (int k = 0; k < 9; k++)
                acc += (double)w1[o * 9 + k] * lenet_tensor_cdata(x)[(size_t)i * 9 + k];
            z[(size_t)i * 6 + o] = acc;
            mean[o] += acc / n;
        }
    for (int i = 0; i < n; i++)
        for (int o = 0; o < 3; o++) {
            double acc = b2[o];
            for (int k = 0; k < 6; k++) {
                double c = scale[k] * (z[(size_t)i * 6 + k] - mean[k]);
                acc += (double)w2[o * 6 + k] / (1.0 + exp(-c));
            }
            out[(size_t)i * 3 + o] = acc;
        }
    free(z);
}

/* One training forward and backward of x with `threads` threads from the model's initial state; copies the output
 * and all gradients into `result` (output first), which must hold out_numel + gradient floats. */
static void forward_backward(bool twice, const lenet_tensor *x, int threads, float *result, size_t *count)
{
    ck_assert_lenet_ok(lenet_threads_set(threads));
    lenet_model *m = center_model(twice);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){lenet_tensor_dim(y, 0), lenet_tensor_dim(y, 1)});
    lenet_test_fill(dy, 5, -1.0f, 1.0f);
    size_t at = lenet_tensor_numel(y);
    memcpy(result, lenet_tensor_cdata(y), at * sizeof(float));
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    for (size_t t = 0; t < lenet_model_param_count(m); t++) {
        const lenet_tensor *g = lenet_model_grad(m, t);
        memcpy(result + at, lenet_tensor_cdata(g), lenet_tensor_numel(g) * sizeof(float));
        at += lenet_tensor_numel(g);
    }
    for (size_t t = 0; t < lenet_model_buffer_count(m); t++) {
        const lenet_tensor *b = lenet_model_buffer(m, t);
        memcpy(result + at, lenet_tensor_cdata(b), lenet_tensor_numel(b) * sizeof(float));
        at += lenet_tensor_numel(b);
    }
    *count = at;
    lenet_tensor_free(dy);
    lenet_model_free(m);
}

START_TEST(test_a_whole_batch_layer_sees_the_whole_batch_bit_identically_for_any_thread_count)
{
    const int batches[] = {1, 15, 16, 17, 40, 128};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        const int n = batches[b];
        lenet_tensor *x = random_batch(n, 100 + (uint64_t)n);
        for (int twice = 0; twice < 2; twice++) {
            float *one = malloc(4096 * sizeof *one), *other = malloc(4096 * sizeof *other);
            size_t count_one = 0, count_other = 0;
            forward_backward(twice, x, 1, one, &count_one);
            ck_assert_uint_lt(count_one, 4096);
            if (!twice) {
                lenet_model *m = center_model(false);
                double *want = malloc((size_t)n * 3 * sizeof *want);
                reference_forward(m, x, want);
                for (int k = 0; k < n * 3; k++)
                    ck_assert_msg(fabs(one[k] - want[k]) <= 1e-5 * fmax(1.0, fabs(want[k])),
                                  "batch %d, output %d: %.9g, over the whole batch %.9g", n, k, (double)one[k],
                                  want[k]);
                free(want);
                lenet_model_free(m);
            }
            for (int threads = 2; threads <= 4; threads *= 2) {
                forward_backward(twice, x, threads, other, &count_other);
                ck_assert_uint_eq(count_one, count_other);
                ck_assert_msg(memcmp(one, other, count_one * sizeof *one) == 0,
                              "batch %d (%s cut at the top): %d threads differ from 1", n, twice ? "a" : "no",
                              threads);
            }
            free(one);
            free(other);
        }
        lenet_tensor_free(x);
    }
    ck_assert_lenet_ok(lenet_threads_set(0));
}
END_TEST

START_TEST(test_gradients_through_whole_batch_layers_match_finite_differences)
{
    for (int twice = 0; twice < 2; twice++) {
        lenet_model *m = center_model(twice);
        lenet_tensor *x = random_batch(40, 7);
        ck_assert_gradcheck(m, x, &(lenet_gradcheck_opts){.skip_input = true, .eps = 1e-3, .tol = 2e-2});
        lenet_tensor_free(x);
        lenet_model_free(m);
    }
}
END_TEST

START_TEST(test_evaluation_mode_uses_no_batch_statistics_and_matches_predict)
{
    lenet_model *m = center_model(false);
    ck_assert(lenet_model_is_training(m));
    lenet_tensor *x = random_batch(17, 3), *y = lenet_tensor_create(2, (int[]){17, 3});
    ck_assert_lenet_ok(lenet_model_set_training(m, false));
    ck_assert(!lenet_model_is_training(m));
    const lenet_tensor *out;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &out));
    ck_assert_lenet_ok(lenet_model_predict(m, x, y));
    ck_assert_mem_eq(lenet_tensor_cdata(out), lenet_tensor_cdata(y), 17 * 3 * sizeof(float));
    /* Evaluation left the buffers alone. */
    ck_assert_float_eq(lenet_tensor_cdata(lenet_model_buffer(m, 1))[0], 0.0f);
    /* In training mode the same batch gives other outputs (centred), and predict still gives the evaluation ones. */
    ck_assert_lenet_ok(lenet_model_set_training(m, true));
    ck_assert_lenet_ok(lenet_model_forward(m, x, &out));
    ck_assert(memcmp(lenet_tensor_cdata(out), lenet_tensor_cdata(y), 17 * 3 * sizeof(float)) != 0);
    lenet_tensor *again = lenet_tensor_create(2, (int[]){17, 3});
    ck_assert_lenet_ok(lenet_model_predict(m, x, again));
    ck_assert_mem_eq(lenet_tensor_cdata(again), lenet_tensor_cdata(y), 17 * 3 * sizeof(float));
    ck_assert_int_eq(lenet_model_set_training(NULL, true), LENET_EINVAL);
    ck_assert(!lenet_model_is_training(NULL));
    lenet_tensor_free(again);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_buffers_are_listed_by_name_and_updated_once_per_training_forward)
{
    lenet_model *m = center_model(false);
    ck_assert_uint_eq(lenet_model_buffer_count(m), 2);
    ck_assert_str_eq(lenet_model_buffer_name(m, 0), "2.running_mean");
    ck_assert_str_eq(lenet_model_buffer_name(m, 1), "2.num_batches_tracked");
    ck_assert_ptr_null(lenet_model_buffer(m, 2));
    ck_assert_ptr_null(lenet_model_buffer_name(m, 2));
    ck_assert_uint_eq(lenet_model_buffer_count(NULL), 0);
    /* Buffers are not parameters: the parameter list and the trainable count are unchanged by them. */
    ck_assert_uint_eq(lenet_model_param_count(m), 5);
    ck_assert_str_eq(lenet_model_param_name(m, 2), "2.weight");
    ck_assert_uint_eq(lenet_model_param_numel(m), 6 * 9 + 6 + 6 + 3 * 6 + 3);
    lenet_tensor *x = random_batch(40, 9);
    const lenet_tensor *y;
    for (int step = 1; step <= 3; step++) {
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
        ck_assert_float_eq(lenet_tensor_cdata(lenet_model_buffer(m, 1))[0], (float)step);
    }
    /* The running mean after three identical batches: (1 - 1/8) of the batch mean of Linear(6)'s output. */
    const lenet_tensor *z = lenet_model_activation(m, 1);
    for (int f = 0; f < 6; f++) {
        double mean = 0.0;
        for (int i = 0; i < 40; i++)
            mean += lenet_tensor_cdata(z)[(size_t)i * 6 + f] / 40.0;
        ck_assert_msg(fabs(lenet_tensor_cdata(lenet_model_buffer(m, 0))[f] - 0.875 * mean) < 1e-6,
                      "feature %d: running mean %g, expected %g", f,
                      (double)lenet_tensor_cdata(lenet_model_buffer(m, 0))[f], 0.875 * mean);
    }
    /* Re-initialising resets them. */
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 1));
    ck_assert_float_eq(lenet_tensor_cdata(lenet_model_buffer(m, 1))[0], 0.0f);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_activations_are_each_layers_output_of_the_last_forward)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_ptr_null(lenet_model_activation(m, 0));
    lenet_tensor *x = lenet_tensor_create(4, (int[]){3, 1, 28, 28});
    lenet_test_fill(x, 1, 0.0f, 1.0f);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    ck_assert_ptr_eq(lenet_model_activation(m, 11), y);
    ck_assert_ptr_null(lenet_model_activation(m, 12));
    ck_assert_ptr_null(lenet_model_activation(NULL, 0));
    const int want[][4] = {{6, 28, 28}, {6, 28, 28}, {6, 14, 14}, {16, 10, 10}, {16, 10, 10}, {16, 5, 5},
                           {400}, {120}, {120}, {84}, {84}, {10}};
    for (size_t i = 0; i < 12; i++) {
        const lenet_tensor *a = lenet_model_activation(m, i);
        ck_assert_int_eq(lenet_tensor_dim(a, 0), 3);
        for (int d = 0; d < lenet_tensor_ndim(a) - 1; d++)
            ck_assert_int_eq(lenet_tensor_dim(a, d + 1), want[i][d]);
    }
    /* Sigmoid's output is the sigmoid of Conv2d's. */
    const float *conv = lenet_tensor_cdata(lenet_model_activation(m, 0));
    const float *sig = lenet_tensor_cdata(lenet_model_activation(m, 1));
    for (size_t k = 0; k < 3 * 6 * 28 * 28; k += 97)
        ck_assert_msg(fabsf(sig[k] - 1.0f / (1.0f + expf(-conv[k]))) < 1e-6f, "element %zu", k);
    /* Predict does not touch them. */
    float first = lenet_tensor_cdata(lenet_model_activation(m, 0))[0];
    lenet_tensor *x2 = lenet_tensor_create(4, (int[]){3, 1, 28, 28}), *out = lenet_tensor_create(2, (int[]){3, 10});
    lenet_test_fill(x2, 2, 0.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_predict(m, x2, out));
    ck_assert_float_eq(lenet_tensor_cdata(lenet_model_activation(m, 0))[0], first);
    lenet_tensor_free(x2);
    lenet_tensor_free(out);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_training_runs_in_training_mode_and_evaluation_in_evaluation_mode_each_restoring_the_mode)
{
    idx_dir_create();
    uint8_t pixels[20 * 9], labels[20];
    for (int i = 0; i < 20 * 9; i++)
        pixels[i] = (uint8_t)(i * 37);
    for (int i = 0; i < 20; i++)
        labels[i] = (uint8_t)(i % 3);
    idx_bytes images = idx_images(20, 3, 3, pixels), classes = idx_labels(20, labels);
    lenet_dataset *d = lenet_dataset_open_idx(idx_write_bytes("images", &images, false),
                                              idx_write_bytes("labels", &classes, false));
    ck_assert_ptr_nonnull(d);
    lenet_iter *it = lenet_iter_create(d, 8, false, 0);
    lenet_model *m = center_model(false);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    const float *count = lenet_tensor_cdata(lenet_model_buffer(m, 1));
    for (int mode = 0; mode < 2; mode++) {
        ck_assert_lenet_ok(lenet_model_set_training(m, mode));
        float before = count[0];
        lenet_metrics mt;
        /* Three batches of training, each a training forward that updates the buffers. */
        ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, &mt));
        ck_assert_float_eq(count[0], before + 3.0f);
        ck_assert_int_eq(lenet_model_is_training(m), mode);
        /* Evaluation forwards leave them. */
        ck_assert_lenet_ok(lenet_evaluate(m, it, &mt));
        ck_assert_float_eq(count[0], before + 3.0f);
        ck_assert_int_eq(lenet_model_is_training(m), mode);
    }
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_iter_free(it);
    lenet_dataset_free(d);
    idx_bytes_free(&images);
    idx_bytes_free(&classes);
    idx_dir_remove();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("engine");
    tcase_add_test(tc, test_a_whole_batch_layer_sees_the_whole_batch_bit_identically_for_any_thread_count);
    tcase_add_test(tc, test_gradients_through_whole_batch_layers_match_finite_differences);
    tcase_add_test(tc, test_evaluation_mode_uses_no_batch_statistics_and_matches_predict);
    tcase_add_test(tc, test_buffers_are_listed_by_name_and_updated_once_per_training_forward);
    tcase_add_test(tc, test_activations_are_each_layers_output_of_the_last_forward);
    tcase_add_test(tc, test_training_runs_in_training_mode_and_evaluation_in_evaluation_mode_each_restoring_the_mode);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
