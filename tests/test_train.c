/* The training loop and evaluation, on a small separable data set written as IDX files by the test:
 * 8x8 images whose left half is bright (class 0) or whose right half is bright (class 1). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h" /* lenet__last_status */
#include "idxfixture.h"
#include "testutil.h"

enum { SIDE = 8, PLANE = SIDE * SIDE };

static uint32_t lcg_next(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*state >> 33);
}

/* Writes n "bright half" images (labels from the generator unless `labels` is given) and opens them.
 * `name` keeps the files of several sets apart. */
static lenet_dataset *halves(const char *name, uint32_t n, uint64_t seed, const uint8_t *labels)
{
    uint8_t *pixels = malloc((size_t)n * PLANE), *values = malloc(n);
    ck_assert_ptr_nonnull(pixels);
    ck_assert_ptr_nonnull(values);
    uint64_t state = seed;
    for (uint32_t i = 0; i < n; i++) {
        values[i] = labels ? labels[i] : (uint8_t)(lcg_next(&state) & 1);
        int bright_left = values[i] == 0;
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++) {
                int bright = (x < SIDE / 2) == bright_left;
                uint32_t r = lcg_next(&state);
                pixels[(size_t)i * PLANE + y * SIDE + x] = (uint8_t)(bright ? 160 + r % 96 : r % 64);
            }
    }
    idx_bytes images = idx_images(n, SIDE, SIDE, pixels), label_file = idx_labels(n, values);
    char file[64];
    snprintf(file, sizeof file, "%s-images.gz", name);
    const char *images_path = idx_write_bytes(file, &images, true);
    snprintf(file, sizeof file, "%s-labels", name);
    const char *labels_path = idx_write_bytes(file, &label_file, false);
    lenet_dataset *d = lenet_dataset_open_idx(images_path, labels_path);
    ck_assert_msg(d != NULL, "%s", lenet_last_error());
    idx_bytes_free(&images);
    idx_bytes_free(&label_file);
    free(pixels);
    free(values);
    return d;
}

/* conv(4, k3, p1) relu maxpool(2) flatten linear(classes), built for 1 x side x side, initialised from seed. */
static lenet_model *tiny_model(int side, int classes, uint64_t seed)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(4, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_maxpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(classes)));
    if (side > 0) {
        ck_assert_lenet_ok(lenet_model_build(m, 1, side, side));
        ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, seed));
    }
    return m;
}

/* All parameters, in order, in one new array of lenet_model_param_numel floats. */
static float *snapshot(lenet_model *m)
{
    size_t total;
    float *copy = lenet_test_copy_tensors(m, false, &total);
    ck_assert_uint_eq(total, lenet_model_param_numel(m));
    return copy;
}

static void assert_params_equal(lenet_model *m, const float *expected, const char *when)
{
    float *now = snapshot(m);
    size_t total = lenet_model_param_numel(m);
    for (size_t i = 0; i < total; i++)
        if (memcmp(&now[i], &expected[i], sizeof(float)) != 0) {
            double a = now[i], b = expected[i];
            free(now);
            ck_abort_msg("%s: parameter scalar %zu is %.9g, expected %.9g", when, i, a, b);
        }
    free(now);
}

static bool all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return false;
    return true;
}

#define MAX_CALLS 64

typedef struct progress_log {
    int calls;
    size_t done[MAX_CALLS], total[MAX_CALLS];
    lenet_metrics so_far[MAX_CALLS];
    lenet_model *model;  /* if set, the parameters after the last completed step are kept in `last_params` */
    float *last_params;
} progress_log;

static void record_progress(void *user, size_t done, size_t total, const lenet_metrics *so_far)
{
    progress_log *log = user;
    ck_assert_int_lt(log->calls, MAX_CALLS);
    log->done[log->calls] = done;
    log->total[log->calls] = total;
    log->so_far[log->calls] = *so_far;
    log->calls++;
    if (log->model) {
        free(log->last_params);
        log->last_params = snapshot(log->model);
    }
}

/* Loss and accuracy computed by hand: lenet_model_predict, lenet_cross_entropy and argmax, one example at a
 * time; the loss is the mean over the examples. */
static void manual_metrics(const lenet_model *m, const lenet_dataset *d, int classes, double *loss, double *accuracy)
{
    size_t n = lenet_dataset_size(d);
    int h = lenet_dataset_height(d), w = lenet_dataset_width(d);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, 1, h, w});
    lenet_tensor *y = lenet_tensor_create(2, (int[]){1, classes});
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_nonnull(y);
    double sum = 0.0;
    size_t correct = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_lenet_ok(lenet_dataset_image(d, i, lenet_tensor_data(x)));
        ck_assert_lenet_ok(lenet_model_predict(m, x, y));
        int32_t label = lenet_dataset_label(d, i);
        float l;
        ck_assert_lenet_ok(lenet_cross_entropy(y, &label, &l, NULL));
        sum += l;
        const float *z = lenet_tensor_cdata(y);
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (z[k] > z[best])
                best = k;
        correct += best == label;
    }
    *loss = sum / (double)n;
    *accuracy = (double)correct / (double)n;
    lenet_tensor_free(x);
    lenet_tensor_free(y);
}

static void setup(void)
{
    idx_dir_create();
}

static void teardown(void)
{
    idx_dir_remove();
}

START_TEST(test_a_tiny_model_learns_the_bright_half_to_full_accuracy)
{
    lenet_dataset *train = halves("train", 64, 1, NULL), *test = halves("test", 32, 2, NULL);
    lenet_model *m = tiny_model(SIDE, 2, 3);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 0.0f);
    ck_assert_ptr_nonnull(o);
    lenet_iter *it = lenet_iter_create(train, 8, true, 4), *test_it = lenet_iter_create(test, 10, false, 0);
    ck_assert_ptr_nonnull(it);
    ck_assert_ptr_nonnull(test_it);
    lenet_metrics first = {0}, last = {0};
    for (int epoch = 0; epoch < 8; epoch++) {
        lenet_metrics mt = {.loss = -1.0};
        ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, &mt));
        ck_assert_uint_eq(mt.examples, 64);
        ck_assert_msg(mt.seconds > 0.0, "epoch %d took %g s", epoch, mt.seconds);
        ck_assert_msg(mt.loss >= 0.0 && isfinite(mt.loss), "epoch %d: loss %g", epoch, mt.loss);
        ck_assert_msg(mt.accuracy >= 0.0 && mt.accuracy <= 1.0, "epoch %d: accuracy %g", epoch, mt.accuracy);
        if (epoch == 0)
            first = mt;
        last = mt;
    }
    ck_assert_msg(last.loss < 0.25 * first.loss, "loss went from %g to %g", first.loss, last.loss);
    ck_assert_msg(last.accuracy == 1.0, "training accuracy %g after 8 epochs", last.accuracy);
    lenet_metrics ev = {0};
    ck_assert_lenet_ok(lenet_evaluate(m, test_it, &ev));
    ck_assert_uint_eq(ev.examples, 32);
    ck_assert_msg(ev.accuracy == 1.0, "test accuracy %g (loss %g)", ev.accuracy, ev.loss);
    lenet_iter_free(it);
    lenet_iter_free(test_it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(train);
    lenet_dataset_free(test);
}
END_TEST

START_TEST(test_epoch_loss_is_the_batch_weighted_mean_and_progress_is_per_batch)
{
    /* With lr 0 the parameters stay put, so every batch's loss can be recomputed by hand; batches of 10 over
     * 64 examples end with a short batch of 4 that a plain mean of batch means would over-weight. */
    lenet_dataset *d = halves("set", 64, 5, NULL);
    lenet_model *m = tiny_model(SIDE, 2, 10);
    lenet_optimizer *o = lenet_sgd_create(m, 0.0f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    float *before = snapshot(m);
    lenet_iter *it = lenet_iter_create(d, 10, true, 7), *twin = lenet_iter_create(d, 10, true, 7);
    ck_assert_ptr_nonnull(it);
    ck_assert_ptr_nonnull(twin);

    progress_log log = {0};
    lenet_metrics mt = {0};
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, record_progress, &log, &mt));
    assert_params_equal(m, before, "after an epoch at lr 0");

    /* The same batches, by hand. */
    double sum = 0.0, batch_mean_sum = 0.0;
    size_t seen = 0, correct = 0;
    int batches = 0;
    const lenet_tensor *x;
    const int32_t *labels;
    int count;
    while (lenet_iter_next(twin, &x, &labels, &count) == LENET_OK) {
        const lenet_tensor *y;
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
        float l;
        ck_assert_lenet_ok(lenet_cross_entropy(y, labels, &l, NULL));
        for (int i = 0; i < count; i++) {
            const float *z = lenet_tensor_cdata(y) + 2 * i;
            correct += (z[1] > z[0] ? 1 : 0) == labels[i];
        }
        sum += (double)l * count;
        batch_mean_sum += l;
        seen += (size_t)count;
        ck_assert_int_lt(batches, log.calls);
        ck_assert_uint_eq(log.done[batches], seen);
        ck_assert_uint_eq(log.total[batches], 64);
        ck_assert_uint_eq(log.so_far[batches].examples, seen);
        ck_assert_msg(fabs(log.so_far[batches].loss - sum / (double)seen) <= 1e-6 * (sum / (double)seen),
                      "running loss after %zu examples: %.9g, expected %.9g", seen, log.so_far[batches].loss,
                      sum / (double)seen);
        ck_assert_msg(log.so_far[batches].accuracy == (double)correct / (double)seen,
                      "running accuracy after %zu examples: %g, expected %g", seen, log.so_far[batches].accuracy,
                      (double)correct / (double)seen);
        batches++;
    }
    ck_assert_int_eq(batches, 7);
    ck_assert_int_eq(log.calls, 7);
    double weighted = sum / 64.0, unweighted = batch_mean_sum / 7.0;
    ck_assert_uint_eq(mt.examples, 64);
    ck_assert_msg(fabs(mt.loss - weighted) <= 1e-6 * weighted, "epoch loss %.9g, weighted mean %.9g", mt.loss,
                  weighted);
    ck_assert_msg(fabs(weighted - unweighted) > 1e-5 * weighted,
                  "the data set does not tell the weighted from the plain mean (%.9g, %.9g)", weighted, unweighted);
    ck_assert_msg(correct > 0 && correct < 64, "%zu of 64 right: the accuracy check would be weak", correct);
    ck_assert_msg(mt.accuracy == (double)correct / 64.0, "accuracy %g, expected %g", mt.accuracy,
                  (double)correct / 64.0);
    ck_assert_msg(mt.seconds > 0.0 && mt.seconds >= log.so_far[0].seconds, "seconds %g", mt.seconds);
    for (int i = 1; i < log.calls; i++) {
        ck_assert_uint_gt(log.done[i], log.done[i - 1]);
        ck_assert_msg(log.so_far[i].seconds >= log.so_far[i - 1].seconds, "time went backwards");
    }
    free(before);
    lenet_iter_free(it);
    lenet_iter_free(twin);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_evaluate_matches_a_manual_pass_and_leaves_the_parameters)
{
    lenet_dataset *train = halves("train", 64, 8, NULL), *test = halves("test", 40, 9, NULL);
    lenet_model *m = tiny_model(SIDE, 2, 10);
    lenet_optimizer *o = lenet_sgd_create(m, 0.05f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(train, 16, true, 11), *test_it = lenet_iter_create(test, 16, true, 12);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    ck_assert_ptr_nonnull(test_it);
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL)); /* out and progress may be NULL */

    float *params = snapshot(m);
    double loss, accuracy;
    manual_metrics(m, test, 2, &loss, &accuracy);
    for (int pass = 0; pass < 2; pass++) { /* the second pass starts on the exhausted iterator */
        lenet_metrics ev = {0};
        ck_assert_lenet_ok(lenet_evaluate(m, test_it, &ev));
        assert_params_equal(m, params, "after evaluate");
        ck_assert_uint_eq(ev.examples, 40);
        ck_assert_uint_eq(lenet_iter_position(test_it), 40);
        ck_assert_msg(fabs(ev.loss - loss) <= 1e-5 * loss, "pass %d: loss %.9g, by hand %.9g", pass, ev.loss, loss);
        ck_assert_msg(ev.accuracy == accuracy, "pass %d: accuracy %g, by hand %g", pass, ev.accuracy, accuracy);
        ck_assert_msg(ev.seconds > 0.0, "seconds %g", ev.seconds);
    }
    /* The training moved the parameters away from the initial ones, and evaluating did not move them back. */
    lenet_model *fresh = tiny_model(SIDE, 2, 10);
    float *initial = snapshot(fresh);
    ck_assert_msg(memcmp(initial, params, lenet_model_param_numel(m) * sizeof(float)) != 0, "training changed nothing");
    free(initial);
    lenet_model_free(fresh);
    free(params);
    lenet_iter_free(it);
    lenet_iter_free(test_it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(train);
    lenet_dataset_free(test);
}
END_TEST

/* ---- criteria ---- */

/* conv(4, k3, p1) tanh flatten linear(3) RBF(2 centres in 3-D): outputs are penalties, the smallest wins. */
static lenet_model *rbf_model(uint64_t seed)
{
    static const float centers[2 * 3] = {1.0f, -1.0f, 1.0f, -1.0f, 1.0f, -1.0f};
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(4, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(3)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_euclidean_rbf(2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, SIDE, SIDE));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, seed));
    memcpy(lenet_tensor_data(lenet_model_param(m, 4)), centers, sizeof centers);
    return m;
}

START_TEST(test_training_with_the_cross_entropy_criterion_equals_the_default)
{
    /* lenet_train_epoch, lenet_train_epoch_with(NULL) and with lenet_criterion_cross_entropy() are one loop. */
    lenet_dataset *d = halves("train", 48, 21, NULL);
    lenet_criterion *ce = lenet_criterion_cross_entropy();
    ck_assert_ptr_nonnull(ce);
    float *after[3];
    lenet_metrics mt[3];
    for (int run = 0; run < 3; run++) {
        lenet_model *m = tiny_model(SIDE, 2, 22);
        lenet_optimizer *o = lenet_sgd_create(m, 0.05f, 0.9f, 0.0f);
        lenet_iter *it = lenet_iter_create(d, 16, true, 23);
        for (int epoch = 0; epoch < 2; epoch++) {
            if (run == 0)
                ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, &mt[run]));
            else
                ck_assert_lenet_ok(lenet_train_epoch_with(m, o, it, run == 1 ? NULL : ce, NULL, NULL, &mt[run]));
        }
        after[run] = snapshot(m);
        lenet_iter_free(it);
        lenet_optimizer_free(o);
        lenet_model_free(m);
    }
    lenet_model *probe = tiny_model(SIDE, 2, 22);
    const size_t n = lenet_model_param_numel(probe);
    lenet_model_free(probe);
    for (int run = 1; run < 3; run++) {
        ck_assert_msg(memcmp(after[run], after[0], n * sizeof(float)) == 0, "run %d differs from lenet_train_epoch", run);
        ck_assert(mt[run].loss == mt[0].loss && mt[run].accuracy == mt[0].accuracy);
    }
    for (int run = 0; run < 3; run++)
        free(after[run]);
    lenet_criterion_free(ce);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_an_rbf_network_trains_with_the_map_criterion_and_is_scored_by_its_smallest_penalty)
{
    lenet_dataset *train = halves("train", 64, 31, NULL), *test = halves("test", 32, 32, NULL);
    lenet_model *m = rbf_model(33);
    lenet_criterion *map = lenet_criterion_rbf(LENET_RBF_LOSS_MAP, LENET_MAP_J_DEFAULT);
    lenet_optimizer *o = lenet_sgd_create(m, 0.02f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(train, 16, true, 34), *test_it = lenet_iter_create(test, 16, false, 0);
    ck_assert_ptr_nonnull(map);
    ck_assert_ptr_nonnull(o);
    lenet_metrics first = {0}, last = {0};
    for (int epoch = 0; epoch < 12; epoch++)
        ck_assert_lenet_ok(lenet_train_epoch_with(m, o, it, map, NULL, NULL, epoch == 0 ? &first : &last));
    ck_assert_msg(last.loss < 0.5 * first.loss, "MAP loss went from %g to %g", first.loss, last.loss);
    ck_assert_msg(last.accuracy > 0.95, "training accuracy %g", last.accuracy);

    /* evaluate_with agrees with a pass by hand: predict, lenet_rbf_loss, the smallest penalty. */
    lenet_metrics ev;
    ck_assert_lenet_ok(lenet_evaluate_with(m, test_it, map, &ev));
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, 1, SIDE, SIDE}), *y = lenet_tensor_create(2, (int[]){1, 2});
    double sum = 0.0;
    size_t correct = 0;
    for (size_t i = 0; i < lenet_dataset_size(test); i++) {
        ck_assert_lenet_ok(lenet_dataset_image(test, i, lenet_tensor_data(x)));
        ck_assert_lenet_ok(lenet_model_predict(m, x, y));
        int32_t label = lenet_dataset_label(test, i), cls;
        float loss;
        ck_assert_lenet_ok(lenet_rbf_loss(y, &label, LENET_RBF_LOSS_MAP, LENET_MAP_J_DEFAULT, &loss, NULL, NULL));
        sum += loss;
        ck_assert_lenet_ok(lenet_criterion_classify(map, y, &cls));
        const float *p = lenet_tensor_cdata(y);
        ck_assert_int_eq(cls, p[1] < p[0] ? 1 : 0);
        correct += cls == label;
    }
    double loss = sum / (double)lenet_dataset_size(test);
    ck_assert_msg(fabs(ev.loss - loss) <= 1e-5 * fabs(loss), "loss %.9g, by hand %.9g", ev.loss, loss);
    ck_assert_msg(ev.accuracy == (double)correct / (double)lenet_dataset_size(test), "accuracy %g, by hand %zu/%zu",
                  ev.accuracy, correct, lenet_dataset_size(test));
    ck_assert_msg(ev.accuracy > 0.9, "test accuracy %g", ev.accuracy);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_iter_free(it);
    lenet_iter_free(test_it);
    lenet_optimizer_free(o);
    lenet_criterion_free(map);
    lenet_model_free(m);
    lenet_dataset_free(train);
    lenet_dataset_free(test);
}
END_TEST

/* A custom criterion: half the squared distance to the one-hot label, and a rule of its own (the largest output,
 * unless told otherwise) that counts its calls. */
typedef struct custom_state {
    int loss_calls, classify_calls;
    lenet_status fail_with; /* LENET_OK: compute */
    int32_t force_class;    /* >= 0: the rule answers this */
} custom_state;

static lenet_status squared_loss(void *user, const lenet_tensor *y, const int32_t *labels, float *loss,
                                 lenet_tensor *dy)
{
    custom_state *st = user;
    st->loss_calls++;
    if (st->fail_with != LENET_OK)
        return st->fail_with;
    const int n = lenet_tensor_dim(y, 0), k = lenet_tensor_dim(y, 1);
    const float *v = lenet_tensor_cdata(y);
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) {
            float diff = v[(size_t)i * k + j] - (j == labels[i] ? 1.0f : 0.0f);
            sum += 0.5 * (double)diff * diff;
            if (dy)
                lenet_tensor_data(dy)[(size_t)i * k + j] = diff / (float)n;
        }
    *loss = (float)(sum / n);
    return LENET_OK;
}

static int32_t largest(void *user, const float *y, int k)
{
    custom_state *st = user;
    st->classify_calls++;
    if (st->force_class >= 0)
        return st->force_class;
    int32_t best = 0;
    for (int j = 1; j < k; j++)
        if (y[j] > y[best])
            best = j;
    return best;
}

START_TEST(test_a_custom_criterion_drives_training_and_its_failures_are_reported)
{
    lenet_dataset *d = halves("train", 64, 41, NULL);
    lenet_model *m = tiny_model(SIDE, 2, 42);
    custom_state st = {.force_class = -1};
    lenet_criterion *c = lenet_criterion_custom(squared_loss, largest, &st);
    lenet_optimizer *o = lenet_sgd_create(m, 0.05f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 16, true, 43);
    ck_assert_ptr_nonnull(c);
    lenet_metrics first, last;
    for (int epoch = 0; epoch < 8; epoch++)
        ck_assert_lenet_ok(lenet_train_epoch_with(m, o, it, c, NULL, NULL, epoch == 0 ? &first : &last));
    ck_assert_int_eq(st.loss_calls, 8 * 4);
    ck_assert_int_eq(st.classify_calls, 8 * 64);
    ck_assert_msg(last.loss < 0.1 * first.loss, "loss went from %g to %g", first.loss, last.loss);
    ck_assert_msg(last.accuracy > 0.95, "accuracy %g", last.accuracy);

    /* A loss that fails stops the pass before its step, with the status it returned and a message. */
    float *before = snapshot(m);
    st.fail_with = LENET_EINVAL;
    lenet_error_clear();
    ck_assert_int_eq(lenet_train_epoch_with(m, o, it, c, NULL, NULL, NULL), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "custom loss") != NULL, "message: %s", lenet_last_error());
    assert_params_equal(m, before, "after the custom loss failed");
    /* A rule that answers outside the classes is EINVAL. */
    st.fail_with = LENET_OK;
    st.force_class = 2;
    ck_assert_int_eq(lenet_evaluate_with(m, it, c, NULL), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "class 2") != NULL, "message: %s", lenet_last_error());
    free(before);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_criterion_free(c);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_criterion_constructors_and_calls_reject_bad_arguments)
{
    ck_assert_ptr_null(lenet_criterion_rbf((lenet_rbf_loss_kind)7, 1.0f));
    ck_assert_msg(strstr(lenet_last_error(), "unknown criterion 7") != NULL, "message: %s", lenet_last_error());
    ck_assert_ptr_null(lenet_criterion_rbf(LENET_RBF_LOSS_MAP, NAN));
    ck_assert_msg(strstr(lenet_last_error(), "finite") != NULL, "message: %s", lenet_last_error());
    lenet_criterion *mse = lenet_criterion_rbf(LENET_RBF_LOSS_MSE, NAN); /* j is ignored for MSE */
    ck_assert_ptr_nonnull(mse);
    ck_assert_ptr_null(lenet_criterion_custom(NULL, NULL, NULL));
    ck_assert_msg(strstr(lenet_last_error(), "loss function is NULL") != NULL, "message: %s", lenet_last_error());
    lenet_criterion_free(NULL);

    lenet_tensor *y = lenet_tensor_create(2, (int[]){2, 3}), *bad = lenet_tensor_create(2, (int[]){2, 4});
    lenet_tensor *flat = lenet_tensor_create(1, (int[]){6});
    const int32_t labels[2] = {0, 2}, wrong[2] = {0, 3};
    int32_t classes[2];
    float loss;
    ck_assert_int_eq(lenet_criterion_loss(NULL, y, labels, &loss, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_criterion_loss(mse, y, NULL, &loss, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_criterion_loss(mse, y, labels, NULL, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_criterion_loss(mse, y, labels, &loss, bad), LENET_ESHAPE);
    ck_assert_int_eq(lenet_criterion_loss(mse, y, wrong, &loss, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_criterion_loss(mse, flat, labels, &loss, NULL), LENET_ESHAPE);
    ck_assert_int_eq(lenet_criterion_classify(mse, y, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_criterion_classify(mse, flat, classes), LENET_ESHAPE);
    /* MSE over penalties: the mean penalty of the right class; the smallest penalty wins. */
    const float values[6] = {0.5f, 2.0f, 3.0f, 4.0f, 1.0f, 0.25f};
    memcpy(lenet_tensor_data(y), values, sizeof values);
    ck_assert_lenet_ok(lenet_criterion_loss(mse, y, labels, &loss, NULL));
    ck_assert_float_eq_tol(loss, (0.5f + 0.25f) / 2.0f, 1e-7f);
    ck_assert_lenet_ok(lenet_criterion_classify(mse, y, classes));
    ck_assert_int_eq(classes[0], 0);
    ck_assert_int_eq(classes[1], 2);
    lenet_tensor_free(y);
    lenet_tensor_free(bad);
    lenet_tensor_free(flat);
    lenet_criterion_free(mse);
}
END_TEST

START_TEST(test_consecutive_epochs_match_a_manual_loop_that_resets_the_iterator)
{
    /* train_epoch twice on one iterator == forward, cross-entropy, zero_grad, backward, step over two passes,
     * the second after lenet_iter_reset: so the exhausted iterator is reset, and each batch steps once. */
    lenet_dataset *d = halves("set", 30, 13, NULL);
    lenet_model *a = tiny_model(SIDE, 2, 14), *b = tiny_model(SIDE, 2, 14);
    lenet_optimizer *oa = lenet_sgd_create(a, 0.1f, 0.5f, 1e-3f), *ob = lenet_sgd_create(b, 0.1f, 0.5f, 1e-3f);
    lenet_iter *ia = lenet_iter_create(d, 8, true, 15), *ib = lenet_iter_create(d, 8, true, 15);
    ck_assert_ptr_nonnull(oa);
    ck_assert_ptr_nonnull(ob);
    ck_assert_ptr_nonnull(ia);
    ck_assert_ptr_nonnull(ib);
    for (int epoch = 0; epoch < 2; epoch++) {
        lenet_metrics mt = {0};
        ck_assert_lenet_ok(lenet_train_epoch(a, oa, ia, NULL, NULL, &mt));
        ck_assert_uint_eq(mt.examples, 30);
        ck_assert_uint_eq(lenet_iter_position(ia), 30);
        if (epoch > 0)
            ck_assert_lenet_ok(lenet_iter_reset(ib));
        const lenet_tensor *x;
        const int32_t *labels;
        int count;
        while (lenet_iter_next(ib, &x, &labels, &count) == LENET_OK) {
            const lenet_tensor *y;
            ck_assert_lenet_ok(lenet_model_forward(b, x, &y));
            lenet_tensor *dy = lenet_tensor_create(2, (int[]){count, 2});
            ck_assert_ptr_nonnull(dy);
            float l;
            ck_assert_lenet_ok(lenet_cross_entropy(y, labels, &l, dy));
            ck_assert_lenet_ok(lenet_optimizer_zero_grad(ob));
            ck_assert_lenet_ok(lenet_model_backward(b, dy));
            ck_assert_lenet_ok(lenet_optimizer_step(ob));
            lenet_tensor_free(dy);
        }
        float *pa = snapshot(a), *pb = snapshot(b);
        size_t n = lenet_model_param_numel(a);
        double err = lenet_test_max_rel_err(pa, pb, n, 1e-3);
        free(pa);
        free(pb);
        ck_assert_msg(err <= 1e-5, "epoch %d: train_epoch and the manual loop differ by %g (relative)", epoch, err);
    }
    lenet_iter_free(ia);
    lenet_iter_free(ib);
    lenet_optimizer_free(oa);
    lenet_optimizer_free(ob);
    lenet_model_free(a);
    lenet_model_free(b);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_an_epoch_runs_from_the_iterator_position_to_its_end)
{
    lenet_dataset *d = halves("set", 30, 16, NULL);
    lenet_model *m = tiny_model(SIDE, 2, 17);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 8, false, 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    const lenet_tensor *x;
    const int32_t *labels;
    int count;
    ck_assert_lenet_ok(lenet_iter_next(it, &x, &labels, &count));
    progress_log log = {0};
    lenet_metrics mt = {0};
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, record_progress, &log, &mt));
    ck_assert_uint_eq(mt.examples, 22);
    ck_assert_int_eq(log.calls, 3);
    ck_assert_uint_eq(log.done[2], 22);
    ck_assert_uint_eq(log.total[2], 30);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_a_diverging_loss_is_enumeric_and_keeps_the_last_finite_parameters)
{
    lenet_dataset *d = halves("set", 64, 18, NULL);
    lenet_model *m = tiny_model(SIDE, 2, 19);
    lenet_optimizer *o = lenet_sgd_create(m, 1e30f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 8, false, 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    size_t numel = lenet_model_param_numel(m);
    progress_log log = {.model = m, .last_params = snapshot(m)};
    ck_assert_msg(all_finite(log.last_params, numel), "the initial parameters are not finite");
    lenet_metrics mt = {.loss = 123.0};
    lenet_error_clear();
    lenet_status st = lenet_train_epoch(m, o, it, record_progress, &log, &mt);
    ck_assert_msg(st == LENET_ENUMERIC, "train_epoch at lr 1e30 returned %s (%s) after %d batches",
                  lenet_status_str(st), lenet_last_error(), log.calls);
    ck_assert_msg(strstr(lenet_last_error(), "finite") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_lt(log.calls, 8); /* it failed before the end of the pass */
    /* The parameters are those before the failing step: after the last step the callback saw (or the initial
     * ones), and they are finite. */
    assert_params_equal(m, log.last_params, "after LENET_ENUMERIC");
    float *now = snapshot(m);
    bool finite = all_finite(now, numel);
    free(now);
    ck_assert_msg(finite, "after LENET_ENUMERIC, %d steps in, the parameters are not all finite", log.calls);
    free(log.last_params);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

/* With inputs in [0, 100] and lr 3e38 the first step's loss is finite but the step overflows most parameters to
 * infinity: that step itself must fail with LENET_ENUMERIC and put the parameters back, rather than letting the next
 * loss turn NaN with the parameters "as before that step", already infinite. */
START_TEST(test_a_step_that_overflows_the_parameters_is_rolled_back)
{
    lenet_dataset *d = halves("set", 16, 26, NULL);
    ck_assert_lenet_ok(lenet_dataset_set_range(d, 0.0f, 100.0f));
    lenet_model *m = tiny_model(SIDE, 2, 27);
    lenet_optimizer *o = lenet_sgd_create(m, 3e38f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    float *initial = snapshot(m);
    progress_log log = {0};
    ck_assert_int_eq(lenet_train_epoch(m, o, it, record_progress, &log, NULL), LENET_ENUMERIC);
    ck_assert_int_eq(log.calls, 0); /* the first step was the one that failed */
    assert_params_equal(m, initial, "after an overflowing step");
    free(initial);
    float *now = snapshot(m);
    size_t numel = lenet_model_param_numel(m), bad = 0;
    for (size_t i = 0; i < numel; i++)
        bad += !isfinite(now[i]);
    free(now);
    ck_assert_msg(bad == 0, "after LENET_ENUMERIC %zu of %zu parameters are not finite", bad, numel);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_labels_outside_the_model_classes_are_einval)
{
    uint8_t labels[12] = {2, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0};
    lenet_dataset *d = halves("set", 12, 20, labels); /* label 2 draws as class 1 but the model has 2 classes */
    lenet_model *m = tiny_model(SIDE, 2, 21);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    float *before = snapshot(m);
    lenet_error_clear();
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, NULL), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "label 2") != NULL, "message: %s", lenet_last_error());
    assert_params_equal(m, before, "after a batch with a bad label");
    lenet_iter *test_it = lenet_iter_create(d, 12, false, 0);
    ck_assert_ptr_nonnull(test_it);
    ck_assert_int_eq(lenet_evaluate(m, test_it, NULL), LENET_EINVAL);
    /* With three classes the same data trains. */
    lenet_model *wide = tiny_model(SIDE, 3, 21);
    lenet_optimizer *ow = lenet_sgd_create(wide, 0.1f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(ow);
    ck_assert_lenet_ok(lenet_iter_reset(it));
    ck_assert_lenet_ok(lenet_train_epoch(wide, ow, it, NULL, NULL, NULL));
    free(before);
    lenet_optimizer_free(ow);
    lenet_model_free(wide);
    lenet_iter_free(test_it);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_null_arguments_are_einval)
{
    lenet_dataset *d = halves("set", 8, 22, NULL);
    lenet_model *m = tiny_model(SIDE, 2, 23);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    lenet_metrics mt = {0};
    ck_assert_int_eq(lenet_train_epoch(NULL, o, it, NULL, NULL, &mt), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "model") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_train_epoch(m, NULL, it, NULL, NULL, &mt), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "optimizer") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_train_epoch(m, o, NULL, NULL, NULL, &mt), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "iterator") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_evaluate(NULL, it, &mt), LENET_EINVAL);
    ck_assert_int_eq(lenet_evaluate(m, NULL, &mt), LENET_EINVAL);
    ck_assert_uint_eq(lenet_iter_position(it), 0);
    ck_assert_uint_eq(mt.examples, 0);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_an_optimizer_of_another_model_is_einval_and_trains_nothing)
{
    lenet_dataset *d = halves("set", 8, 25, NULL);
    lenet_model *m = tiny_model(SIDE, 2, 26), *other = tiny_model(SIDE, 3, 27);
    lenet_optimizer *o = lenet_sgd_create(other, 0.1f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_nonnull(it);
    const size_t numel = lenet_tensor_numel(lenet_model_param(m, 0));
    float *before = malloc(numel * sizeof *before);
    ck_assert_ptr_nonnull(before);
    memcpy(before, lenet_tensor_cdata(lenet_model_param(m, 0)), numel * sizeof *before);
    lenet_metrics mt = {0};
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, &mt), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "another model") != NULL, "message: %s", lenet_last_error());
    ck_assert_int_eq(lenet_train_epoch_with(m, o, it, NULL, NULL, NULL, &mt), LENET_EINVAL);
    ck_assert_uint_eq(lenet_iter_position(it), 0);
    ck_assert_uint_eq(mt.examples, 0);
    ck_assert_mem_eq(before, lenet_tensor_cdata(lenet_model_param(m, 0)), numel * sizeof *before);
    free(before);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(other);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_a_model_built_for_another_input_size_is_eshape)
{
    lenet_dataset *d = halves("set", 8, 24, NULL);
    lenet_iter *it = lenet_iter_create(d, 4, false, 0);
    ck_assert_ptr_nonnull(it);
    lenet_model *m = tiny_model(10, 2, 25);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    float *before = snapshot(m);
    lenet_error_clear();
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, NULL), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "8x8") && strstr(lenet_last_error(), "10x10"), "message: %s",
                  lenet_last_error());
    assert_params_equal(m, before, "after LENET_ESHAPE");
    ck_assert_lenet_ok(lenet_iter_reset(it));
    ck_assert_int_eq(lenet_evaluate(m, it, NULL), LENET_ESHAPE);
    free(before);
    lenet_optimizer_free(o);
    lenet_model_free(m);

    /* Three input channels where the images have one. */
    m = tiny_model(0, 2, 0);
    ck_assert_lenet_ok(lenet_model_build(m, 3, SIDE, SIDE));
    ck_assert_lenet_ok(lenet_iter_reset(it));
    ck_assert_int_eq(lenet_evaluate(m, it, NULL), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "channels") != NULL, "message: %s", lenet_last_error());
    lenet_model_free(m);

    /* A model whose output is not (N, classes). */
    m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(2, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_iter_reset(it));
    ck_assert_int_eq(lenet_evaluate(m, it, NULL), LENET_ESHAPE);
    lenet_model_free(m);

    /* An unbuilt model is built from the first batch. */
    m = tiny_model(0, 2, 0);
    o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    ck_assert_ptr_nonnull(o);
    ck_assert_lenet_ok(lenet_iter_reset(it));
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL));
    ck_assert(lenet_model_is_built(m));
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

/* A stop flag that the progress callback raises after call `at` (0: never), as a signal handler would. */
typedef struct stopper {
    volatile sig_atomic_t flag;
    int calls, at;
} stopper;

static void stop_at(void *user, size_t done, size_t total, const lenet_metrics *so_far)
{
    (void)done, (void)total, (void)so_far;
    stopper *s = user;
    if (++s->calls == s->at)
        s->flag = 1;
}

/* An SGD with momentum and a per-epoch step schedule, so that a pass counted twice or not at all shows. */
static lenet_optimizer *stepped_sgd(lenet_model *m)
{
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.5f, 1e-3f);
    ck_assert_ptr_nonnull(o);
    ck_assert_lenet_ok(lenet_optimizer_set_schedule(o, lenet_schedule_step(1, 0.5f), LENET_SCHEDULE_PER_EPOCH));
    return o;
}

START_TEST(test_a_stopped_pass_continues_where_it_stopped_bit_identically)
{
    /* 40 examples in batches of 8: stopped after the second batch, the pass resumes, from the same objects and
     * from a checkpoint saved at the stop, to exactly the parameters of two uninterrupted passes. */
    lenet_dataset *d = halves("set", 40, 31, NULL);
    lenet_model *ref = tiny_model(SIDE, 2, 32);
    lenet_optimizer *oref = stepped_sgd(ref);
    lenet_iter *iref = lenet_iter_create(d, 8, true, 33);
    ck_assert_ptr_nonnull(iref);
    for (int epoch = 0; epoch < 2; epoch++)
        ck_assert_lenet_ok(lenet_train_epoch(ref, oref, iref, NULL, NULL, NULL));
    float *expected = snapshot(ref);

    lenet_model *m = tiny_model(SIDE, 2, 32);
    lenet_optimizer *o = stepped_sgd(m);
    lenet_iter *it = lenet_iter_create(d, 8, true, 33);
    ck_assert_ptr_nonnull(it);
    stopper stop = {.at = 2};
    ck_assert_lenet_ok(lenet_model_set_stop_flag(m, &stop.flag));
    lenet_metrics mt = {0};
    ck_assert_int_eq(lenet_train_epoch(m, o, it, stop_at, &stop, &mt), LENET_STOPPED);
    ck_assert_int_eq(stop.calls, 2);
    ck_assert_uint_eq(mt.examples, 16);
    ck_assert(mt.loss > 0 && mt.accuracy >= 0 && mt.accuracy <= 1);
    ck_assert_uint_eq(lenet_iter_position(it), 16);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 0);
    ck_assert_str_eq(lenet_status_str(LENET_STOPPED), "stopped on request");

    const char *path = idx_write("stopped.safetensors", "", 0); /* the path: the save replaces the file */
    ck_assert_lenet_ok(lenet_checkpoint_save(m, o, it, "stopped", path));

    /* The same objects, flag lowered: the rest of the pass, then a whole one. */
    stop.flag = 0;
    stop.at = 0;
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, &mt));
    ck_assert_uint_eq(mt.examples, 24);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 1);
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, &mt));
    ck_assert_uint_eq(mt.examples, 40);
    assert_params_equal(m, expected, "continued on the same objects");

    /* New objects loaded from the checkpoint of the stop. */
    lenet_model *r = tiny_model(SIDE, 2, 99);
    lenet_optimizer *orr = stepped_sgd(r);
    lenet_iter *ir = lenet_iter_create(d, 8, true, 33);
    ck_assert_ptr_nonnull(ir);
    char note[16];
    ck_assert_lenet_ok(lenet_checkpoint_load(r, orr, ir, path, note, sizeof note));
    ck_assert_uint_eq(lenet_iter_position(ir), 16);
    for (int epoch = 0; epoch < 2; epoch++)
        ck_assert_lenet_ok(lenet_train_epoch(r, orr, ir, NULL, NULL, NULL));
    assert_params_equal(r, expected, "resumed from the checkpoint of the stop");

    free(expected);
    lenet_iter_free(ir);
    lenet_optimizer_free(orr);
    lenet_model_free(r);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_iter_free(iref);
    lenet_optimizer_free(oref);
    lenet_model_free(ref);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_a_stop_flag_ends_only_passes_with_batches_left_and_evaluation_ignores_it)
{
    lenet_dataset *d = halves("set", 40, 34, NULL);
    lenet_model *m = tiny_model(SIDE, 2, 35);
    lenet_optimizer *o = stepped_sgd(m);
    lenet_iter *it = lenet_iter_create(d, 8, true, 36);
    ck_assert_ptr_nonnull(it);
    stopper stop = {.at = 5};
    ck_assert_int_eq(lenet_model_set_stop_flag(NULL, &stop.flag), LENET_EINVAL);
    ck_assert_lenet_ok(lenet_model_set_stop_flag(m, &stop.flag));

    /* Raised during the last batch: the pass is whole. */
    lenet_metrics mt = {0};
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, stop_at, &stop, &mt));
    ck_assert_uint_eq(mt.examples, 40);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 1);

    /* Already raised: one batch, then the stop; the library never lowers the flag. */
    ck_assert_int_eq(lenet_train_epoch(m, o, it, NULL, NULL, &mt), LENET_STOPPED);
    ck_assert_uint_eq(mt.examples, 8);
    ck_assert_int_eq(stop.flag, 1);
    ck_assert_int_eq(lenet_train_epoch_with(m, o, it, NULL, NULL, NULL, &mt), LENET_STOPPED);
    ck_assert_uint_eq(lenet_iter_position(it), 16);

    /* Evaluation reads no flag. */
    lenet_iter *test = lenet_iter_create(d, 8, false, 0);
    ck_assert_ptr_nonnull(test);
    ck_assert_lenet_ok(lenet_evaluate(m, test, &mt));
    ck_assert_uint_eq(mt.examples, 40);

    /* Removed: the pass runs to its end. */
    ck_assert_lenet_ok(lenet_model_set_stop_flag(m, NULL));
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, &mt));
    ck_assert_uint_eq(mt.examples, 24);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(o), 2);

    lenet_iter_free(test);
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

/* Conv2d(3, k3), BatchNorm2d, ReLU, Flatten, Dropout, Linear(8), BatchNorm1d, ReLU, Linear(2), over SIDE x SIDE. */
static lenet_model *bn_model(float momentum, uint64_t seed)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(3, 3, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, momentum)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_dropout(0.2f)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(8)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-5f, momentum)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, SIDE, SIDE));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, seed));
    return m;
}

/* The model of a pass's checks: bn_model(0.1, 6) after one SGD step on `other` (statistics and a random stream of its
 * own that the pass must forget and keep). */
static lenet_model *stepped_bn_model(lenet_iter *other, lenet_optimizer **o)
{
    lenet_model *m = bn_model(0.1f, 6);
    ck_assert_ptr_nonnull(*o = lenet_sgd_create(m, 0.5f, 0.0f, 0.0f));
    ck_assert_lenet_ok(lenet_train_epoch(m, *o, other, NULL, NULL, NULL));
    return m;
}

/* The statistics the pass must give come from a twin with momentum 1, whose running statistics after a training
 * forward are that batch's own (the mean and PyTorch's unbiased variance).  Its forwards draw the same Dropout
 * masks as the pass's, as its random stream stands where the pass's does after one forward of its own. */
START_TEST(test_update_statistics_averages_the_batch_statistics_of_a_pass)
{
    lenet_dataset *d = halves("stats", 44, 5, NULL), *other = halves("other", 16, 9, NULL);
    lenet_iter *it = lenet_iter_create(d, 16, false, 0), *twin_it = lenet_iter_create(d, 16, false, 0);
    lenet_iter *other_it = lenet_iter_create(other, 16, false, 0);
    ck_assert_ptr_nonnull(it);
    ck_assert_ptr_nonnull(twin_it);
    ck_assert_ptr_nonnull(other_it);
    lenet_optimizer *o, *o_plain;
    lenet_model *m = stepped_bn_model(other_it, &o), *plain = stepped_bn_model(other_it, &o_plain);
    float *params = snapshot(m);
    ck_assert_lenet_ok(lenet_model_set_training(m, false));
    lenet_metrics mt;
    ck_assert_lenet_ok(lenet_update_statistics(m, it, &mt));
    ck_assert(!lenet_model_is_training(m));
    ck_assert_uint_eq(mt.examples, 44);
    assert_params_equal(m, params, "after update_statistics");

    lenet_model *twin = bn_model(1.0f, 6);
    size_t at = 0;
    for (size_t i = 0; i < lenet_model_param_count(twin); i++) {
        lenet_tensor *p = lenet_model_param(twin, i);
        memcpy(lenet_tensor_data(p), params + at, lenet_tensor_numel(p) * sizeof(float));
        at += lenet_tensor_numel(p);
    }
    const lenet_tensor *x, *y;
    const int32_t *labels;
    int n, batches = 0;
    ck_assert_lenet_ok(lenet_iter_reset(other_it));
    ck_assert_lenet_ok(lenet_iter_next(other_it, &x, &labels, &n));
    ck_assert_lenet_ok(lenet_model_forward(twin, x, &y));
    size_t count, twin_count;
    float *got = lenet_test_copy_tensors(m, true, &count);
    double sum[64] = {0};
    ck_assert_uint_le(count, 64);
    while (lenet_iter_next(twin_it, &x, &labels, &n) == LENET_OK) {
        ck_assert_lenet_ok(lenet_model_forward(twin, x, &y));
        float *b = lenet_test_copy_tensors(twin, true, &twin_count);
        ck_assert_uint_eq(twin_count, count);
        for (size_t i = 0; i < count; i++)
            sum[i] += b[i];
        free(b);
        batches++;
    }
    ck_assert_int_eq(batches, 3);
    /* 0.running_mean (3), 0.running_var (3), 0.num_batches_tracked, then the BatchNorm1d's (8, 8, 1): the counts
     * are the pass's batches. */
    const size_t counts[] = {6, 6 + 1 + 16};
    for (size_t i = 0; i < count; i++) {
        if (i == counts[0] || i == counts[1]) {
            ck_assert_float_eq(got[i], 3.0f);
            continue;
        }
        double want = sum[i] / batches;
        ck_assert_msg(fabs(got[i] - want) <= 1e-5 * (1.0 + fabs(want)), "buffer scalar %zu: %.9g, expected %.9g", i,
                      (double)got[i], want);
    }
    /* Training goes on as if the pass had not run (the same Dropout masks): the same parameters as a model that
     * never made it. */
    ck_assert_lenet_ok(lenet_train_epoch(m, o, it, NULL, NULL, NULL));
    lenet_iter_reset(it);
    ck_assert_lenet_ok(lenet_train_epoch(plain, o_plain, it, NULL, NULL, NULL));
    free(params);
    params = snapshot(plain);
    assert_params_equal(m, params, "training after update_statistics");

    free(got);
    free(params);
    lenet_optimizer_free(o_plain);
    lenet_optimizer_free(o);
    lenet_iter_free(other_it);
    lenet_iter_free(twin_it);
    lenet_iter_free(it);
    lenet_dataset_free(other);
    lenet_model_free(plain);
    lenet_model_free(twin);
    lenet_model_free(m);
    lenet_dataset_free(d);
}
END_TEST

START_TEST(test_update_statistics_is_the_same_for_any_thread_count_and_skips_models_without_statistics)
{
    lenet_dataset *d = halves("stats", 40, 5, NULL);
    lenet_iter *it = lenet_iter_create(d, 20, false, 0);
    ck_assert_ptr_nonnull(it);
    float *first = NULL;
    size_t first_count = 0;
    for (int threads = 1; threads <= 4; threads *= 2) {
        ck_assert_lenet_ok(lenet_threads_set(threads));
        lenet_model *m = bn_model(0.1f, 8);
        ck_assert_lenet_ok(lenet_update_statistics(m, it, NULL));
        size_t count;
        float *got = lenet_test_copy_tensors(m, true, &count);
        if (!first) {
            first = got;
            first_count = count;
        } else {
            ck_assert_uint_eq(count, first_count);
            ck_assert_msg(memcmp(got, first, count * sizeof *got) == 0, "%d threads differ from 1", threads);
            free(got);
        }
        lenet_model_free(m);
    }
    ck_assert_lenet_ok(lenet_threads_set(0));
    free(first);

    /* No running statistics: no pass (the iterator stays where it stood). */
    lenet_model *plain = tiny_model(SIDE, 2, 3);
    lenet_metrics mt = {.examples = 99};
    lenet_iter_reset(it);
    ck_assert_lenet_ok(lenet_update_statistics(plain, it, &mt));
    ck_assert_uint_eq(mt.examples, 0);
    ck_assert_uint_eq(lenet_iter_position(it), 0);
    ck_assert_int_eq(lenet_update_statistics(NULL, it, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_update_statistics(plain, NULL, NULL), LENET_EINVAL);
    ck_assert_ptr_nonnull(strstr(lenet_last_error(), "update_statistics"));
    lenet_model_free(plain);
    lenet_iter_free(it);
    lenet_dataset_free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_a_tiny_model_learns_the_bright_half_to_full_accuracy);
    tcase_add_test(tc, test_epoch_loss_is_the_batch_weighted_mean_and_progress_is_per_batch);
    tcase_add_test(tc, test_evaluate_matches_a_manual_pass_and_leaves_the_parameters);
    tcase_add_test(tc, test_consecutive_epochs_match_a_manual_loop_that_resets_the_iterator);
    tcase_add_test(tc, test_an_epoch_runs_from_the_iterator_position_to_its_end);
    tcase_add_test(tc, test_a_stopped_pass_continues_where_it_stopped_bit_identically);
    tcase_add_test(tc, test_a_stop_flag_ends_only_passes_with_batches_left_and_evaluation_ignores_it);
    tcase_add_test(tc, test_a_diverging_loss_is_enumeric_and_keeps_the_last_finite_parameters);
    tcase_add_test(tc, test_a_step_that_overflows_the_parameters_is_rolled_back);
    tcase_add_test(tc, test_labels_outside_the_model_classes_are_einval);
    tcase_add_test(tc, test_null_arguments_are_einval);
    tcase_add_test(tc, test_an_optimizer_of_another_model_is_einval_and_trains_nothing);
    tcase_add_test(tc, test_a_model_built_for_another_input_size_is_eshape);
    tcase_add_test(tc, test_training_with_the_cross_entropy_criterion_equals_the_default);
    tcase_add_test(tc, test_an_rbf_network_trains_with_the_map_criterion_and_is_scored_by_its_smallest_penalty);
    tcase_add_test(tc, test_a_custom_criterion_drives_training_and_its_failures_are_reported);
    tcase_add_test(tc, test_criterion_constructors_and_calls_reject_bad_arguments);
    tcase_add_test(tc, test_update_statistics_averages_the_batch_statistics_of_a_pass);
    tcase_add_test(tc, test_update_statistics_is_the_same_for_any_thread_count_and_skips_models_without_statistics);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
