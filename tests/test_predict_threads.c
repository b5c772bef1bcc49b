/* lenet_model_predict and lenet_model_classify from many threads on one shared model: every call gives the
 * bytes one thread gives.  A suite of its own so CI can run it under ThreadSanitizer. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { THREADS = 4, CALLS = 50, CLASSES = 10 };

/* Batch sizes per thread, different so each call sizes its own scratch. */
static const int batch_of[THREADS] = {1, 3, 8, 5};

typedef struct worker {
    const lenet_model *m;
    const lenet_tensor *x;   /* this thread's input */
    const float *logits;     /* what one thread computed alone */
    const int32_t *classes;
    const float *probs;
    int batch;
    int failures, mismatches;
    char error[256];
} worker;

static void *predict_loop(void *arg)
{
    worker *w = arg;
    size_t outputs = (size_t)w->batch * CLASSES;
    lenet_tensor *y = lenet_tensor_create(2, (int[]){w->batch, CLASSES});
    int32_t *classes = malloc((size_t)w->batch * sizeof *classes);
    float *probs = malloc(outputs * sizeof *probs);
    if (!y || !classes || !probs) {
        w->failures++;
        goto done;
    }
    for (int i = 0; i < CALLS; i++) {
        if (lenet_model_predict(w->m, w->x, y) != LENET_OK) {
            w->failures++;
            snprintf(w->error, sizeof w->error, "%s", lenet_last_error());
            continue;
        }
        if (memcmp(lenet_tensor_cdata(y), w->logits, outputs * sizeof(float)) != 0)
            w->mismatches++;
        if (i % 5 == 0) {
            if (lenet_model_classify(w->m, w->x, classes, probs) != LENET_OK) {
                w->failures++;
                snprintf(w->error, sizeof w->error, "%s", lenet_last_error());
                continue;
            }
            if (memcmp(classes, w->classes, (size_t)w->batch * sizeof *classes) != 0 ||
                memcmp(probs, w->probs, outputs * sizeof *probs) != 0)
                w->mismatches++;
        }
    }
done:
    lenet_tensor_free(y);
    free(classes);
    free(probs);
    return NULL;
}

/* References computed on this thread, then THREADS threads calling at once. */
static void check_threads_agree(lenet_model *m)
{
    lenet_tensor *x[THREADS], *ref[THREADS];
    int32_t *classes[THREADS];
    float *probs[THREADS];
    worker w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        int b = batch_of[i];
        x[i] = lenet_tensor_create(4, (int[]){b, 1, 28, 28});
        ref[i] = lenet_tensor_create(2, (int[]){b, CLASSES});
        classes[i] = malloc((size_t)b * sizeof *classes[i]);
        probs[i] = malloc((size_t)b * CLASSES * sizeof *probs[i]);
        ck_assert_ptr_nonnull(x[i]);
        ck_assert_ptr_nonnull(ref[i]);
        lenet_test_fill(x[i], 100 + (uint64_t)i, 0.0f, 1.0f);
        ck_assert_lenet_ok(lenet_model_predict(m, x[i], ref[i]));
        ck_assert_lenet_ok(lenet_model_classify(m, x[i], classes[i], probs[i]));
        w[i] = (worker){.m = m, .x = x[i], .logits = lenet_tensor_cdata(ref[i]), .classes = classes[i],
                        .probs = probs[i], .batch = b};
    }
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, predict_loop, &w[i]), 0);
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < THREADS; i++) {
        ck_assert_msg(w[i].failures == 0, "thread %d: %d failed calls: %s", i, w[i].failures, w[i].error);
        ck_assert_msg(w[i].mismatches == 0, "thread %d: %d of %d calls differ from one thread's", i, w[i].mismatches,
                      CALLS);
        lenet_tensor_free(x[i]);
        lenet_tensor_free(ref[i]);
        free(classes[i]);
        free(probs[i]);
    }
}

static lenet_model *trained_d2l(void)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 17));
    return m;
}

START_TEST(test_threads_predicting_on_one_model_agree_with_one_thread)
{
    lenet_model *m = trained_d2l();
    check_threads_agree(m);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_threads_agree_when_each_call_runs_on_one_thread)
{
    /* The library's own batch parallelism off: the callers' threads are the only concurrency. */
    int before = lenet_threads_get();
    ck_assert_lenet_ok(lenet_threads_set(1));
    lenet_model *m = trained_d2l();
    check_threads_agree(m);
    lenet_model_free(m);
    ck_assert_lenet_ok(lenet_threads_set(0));
    ck_assert_int_eq(lenet_threads_get(), before);
}
END_TEST

START_TEST(test_predict_leaves_the_training_buffers_alone)
{
    /* A forward's output stays valid across predictions from other threads: predict writes no model memory. */
    lenet_model *m = trained_d2l();
    lenet_tensor *x = lenet_tensor_create(4, (int[]){2, 1, 28, 28});
    lenet_test_fill(x, 7, 0.0f, 1.0f);
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    float before[2 * CLASSES];
    memcpy(before, lenet_tensor_cdata(y), sizeof before);
    check_threads_agree(m);
    ck_assert_mem_eq(before, lenet_tensor_cdata(y), sizeof before);
    lenet_tensor_free(x);
    lenet_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("predict_threads");
    TCase *tc = tcase_create("predict_threads");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_threads_predicting_on_one_model_agree_with_one_thread);
    tcase_add_test(tc, test_threads_agree_when_each_call_runs_on_one_thread);
    tcase_add_test(tc, test_predict_leaves_the_training_buffers_alone);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
