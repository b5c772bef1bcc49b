/* The training loop of d2l's train_ch6: forward, cross-entropy, backward, step, with running metrics. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <string.h>
#include <time.h>

#include "lenet/loss.h"
#include "lenet/train.h"
#include "model/internal.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t count_correct(const lenet_tensor *logits, const int32_t *labels)
{
    size_t correct = 0;
    int n = logits->shape[0], k = logits->shape[1];
    for (int i = 0; i < n; i++) {
        const float *row = logits->data + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (row[j] > row[best])
                best = j;
        correct += best == labels[i];
    }
    return correct;
}

/* One pass over `it`; with `o` NULL it only evaluates. */
static lenet_status run_pass(lenet_model *m, lenet_optimizer *o, lenet_iter *it, lenet_progress_fn progress,
                             void *user, lenet_metrics *out)
{
    if (!m || !it)
        return lenet__fail(LENET_EINVAL, "%s: %s is NULL", o ? "train_epoch" : "evaluate", !m ? "model" : "iterator");
    const char *who = o ? "train_epoch" : "evaluate";
    size_t total = lenet_iter_total(it);
    if (lenet_iter_position(it) >= total) {
        lenet_status st = lenet_iter_reset(it);
        if (st != LENET_OK)
            return st;
    }
    double start = now_seconds(), loss_sum = 0.0;
    size_t seen = 0, correct = 0;
    lenet_tensor *dlogits = NULL;
    lenet_status st;
    lenet_metrics so_far = {0};
    for (;;) {
        const lenet_tensor *images;
        const int32_t *labels;
        int count;
        st = lenet_iter_next(it, &images, &labels, &count);
        if (st == LENET_DONE) {
            st = LENET_OK;
            break;
        }
        if (st != LENET_OK)
            break;
        int batch;
        st = lenet__model_check_input(m, images, who, &batch);
        if (st == LENET_OK)
            st = lenet__model_reserve(m, batch);
        if (st != LENET_OK)
            break;
        memcpy(m->acts[0], images->data, images->numel * sizeof(float));
        lenet__model_forward_raw(m, batch);
        const lenet_tensor *logits = &m->output;
        if (logits->ndim != 2) {
            st = lenet__fail(LENET_ESHAPE, "%s: the model's output must be (N, classes) logits", who);
            break;
        }
        if (o && (!dlogits || dlogits->shape[0] != batch)) {
            lenet_tensor_free(dlogits);
            dlogits = lenet_tensor_create(2, logits->shape);
            if (!dlogits) {
                st = LENET_ENOMEM;
                break;
            }
        }
        float loss;
        st = lenet_cross_entropy(logits, labels, &loss, o ? dlogits : NULL);
        if (st != LENET_OK) {
            lenet__error_prefix("%s after %zu examples: ", who, seen);
            break;
        }
        correct += count_correct(logits, labels);
        if (o) {
            lenet_model_zero_grad(m);
            lenet__model_backward_raw(m, dlogits->data);
            st = lenet_optimizer_step(o);
            if (st != LENET_OK)
                break;
        }
        loss_sum += (double)loss * batch;
        seen += (size_t)batch;
        so_far = (lenet_metrics){loss_sum / (double)seen, (double)correct / (double)seen, now_seconds() - start, seen};
        if (progress)
            progress(user, seen, total, &so_far);
    }
    lenet_tensor_free(dlogits);
    if (st == LENET_OK && out)
        *out = so_far;
    return st;
}

lenet_status lenet_train_epoch(lenet_model *m, lenet_optimizer *o, lenet_iter *train, lenet_progress_fn progress,
                               void *user, lenet_metrics *out)
{
    if (!o)
        return lenet__fail(LENET_EINVAL, "train_epoch: optimizer is NULL");
    return run_pass(m, o, train, progress, user, out);
}

lenet_status lenet_evaluate(lenet_model *m, lenet_iter *test, lenet_metrics *out)
{
    return run_pass(m, NULL, test, NULL, NULL, out);
}
