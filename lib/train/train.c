/* The training loop of d2l's train_ch6: forward, loss (cross-entropy or a criterion's), backward, step, with
 * running metrics.
 *
 * Numerical faults (issue 8): a step whose loss, gradients or updated parameters hold a NaN or an infinity
 * returns LENET_ENUMERIC naming the first layer where it appeared, and leaves the parameters and the optimizer's
 * state (step count, momentum, Hessian estimate) as they were before that step.  The checks cost one scan of the
 * gradient arena and one of the parameter arena per step, plus copies of the parameter arena (61,706 floats for the
 * d2l LeNet) and of the optimizer's buffers taken just before the optimizer runs; the activations are scanned only
 * when the loss is not finite, to find the layer that produced it. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "lenet/criterion.h"
#include "lenet/loss.h"
#include "lenet/train.h"
#include "model/internal.h"
#include "optim/internal.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The batch's loss and gradient: the criterion's, or softmax cross-entropy without one. */
static lenet_status batch_loss(const lenet_criterion *c, const lenet_tensor *y, const int32_t *labels, float *loss,
                               lenet_tensor *dy)
{
    return c ? lenet_criterion_loss(c, y, labels, loss, dy) : lenet_cross_entropy(y, labels, loss, dy);
}

/* How many of the batch's outputs predict their label: the criterion's rule (into the caller's `classes` of N), or
 * the largest logit without one. */
static lenet_status count_correct(const lenet_criterion *c, const lenet_tensor *y, const int32_t *labels,
                                  int32_t *classes, size_t *correct)
{
    const int n = y->shape[0], k = y->shape[1];
    if (c) {
        lenet_status st = lenet_criterion_classify(c, y, classes);
        if (st != LENET_OK)
            return st;
    } else {
        for (int i = 0; i < n; i++)
            classes[i] = lenet__argmax(y->data + (size_t)i * k, k);
    }
    for (int i = 0; i < n; i++)
        *correct += classes[i] == labels[i];
    return LENET_OK;
}

/* True when all n floats are finite: one branch-free pass over the exponent bits, which vectorizes. */
static bool all_finite(const float *x, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        bad |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    return bad == 0;
}

/* The first index of a NaN or infinity among n floats (n if none). */
static size_t first_non_finite(const float *x, size_t n)
{
    size_t i = 0;
    while (i < n && isfinite(x[i]))
        i++;
    return i;
}

static const char *describe_value(float v)
{
    return isnan(v) ? "NaN" : "an infinity";
}

/* The loss of a batch is not finite: walks the activations of the last forward in order and names the first
 * layer whose output holds a NaN or an infinity (or the input, or the loss itself when every output is finite). */
static lenet_status report_forward_fault(const lenet_model *m, int batch, const char *who, size_t seen)
{
    size_t in_size = lenet__shape_size(&m->in_shape) * (size_t)batch;
    size_t at = first_non_finite(m->acts[0], in_size);
    if (at < in_size)
        return lenet__fail(LENET_ENUMERIC, "%s after %zu examples: the input batch is not finite (%s in sample %zu)",
                           who, seen, describe_value(m->acts[0][at]), at / (in_size / (size_t)batch));
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        size_t n = l->out_size * (size_t)batch;
        at = first_non_finite(m->acts[i + 1], n);
        if (at < n)
            return lenet__fail(LENET_ENUMERIC,
                               "%s after %zu examples: the output of layer %zu (%s) is not finite (%s in sample %zu); "
                               "the parameters are unchanged",
                               who, seen, i, l->ops->name, describe_value(m->acts[i + 1][at]), at / l->out_size);
    }
    return lenet__fail(LENET_ENUMERIC, "%s after %zu examples: the loss is not finite although every layer's output is; "
                       "the parameters are unchanged", who, seen);
}

/* The parameter tensor whose `arena` slice (gradients or parameters) holds a NaN or an infinity, searching tensors
 * in model order (`backwards`: from the last layer, the order in which back-propagation produces gradients).
 * Returns n_params if all are finite. */
static size_t find_non_finite_param(const lenet_model *m, const float *arena, bool backwards)
{
    for (size_t k = 0; k < m->n_params; k++) {
        size_t t = backwards ? m->n_params - 1 - k : k;
        if (!all_finite(arena + m->param_offset[t], m->param_tensors[t].numel))
            return t;
    }
    return m->n_params;
}

/* What an optimizer step changes besides the parameters: its step count and its state buffers (SGD's momentum,
 * SDLM's Hessian), so that a step that overflows can be undone completely. */
typedef struct optim_snapshot {
    unsigned long long steps;
    int n_buffers;
    bool had[LENET_OPTIM_MAX_STATE];
    float *copy[LENET_OPTIM_MAX_STATE];
} optim_snapshot;

static lenet_status optim_save(const lenet_optimizer *o, size_t numel, optim_snapshot *s)
{
    s->steps = o->steps;
    s->n_buffers = 0;
    if (!o->ops->state)
        return LENET_OK;
    lenet_optimizer_state state;
    lenet_status st = o->ops->state(o, &state);
    if (st != LENET_OK)
        return st;
    for (int b = 0; b < state.n_buffers; b++) {
        s->had[b] = state.buffers[b] != NULL;
        if (!s->had[b])
            continue;
        if (!s->copy[b] && !(s->copy[b] = lenet__malloc_aligned((numel ? numel : 1) * sizeof(float))))
            return lenet__oom("optimizer state snapshot");
        memcpy(s->copy[b], state.buffers[b], numel * sizeof(float));
    }
    s->n_buffers = state.n_buffers;
    return LENET_OK;
}

/* Puts the saved state back; the optimizer takes the copies over, so this cannot fail. */
static void optim_restore(lenet_optimizer *o, optim_snapshot *s)
{
    o->steps = s->steps;
    for (int b = 0; b < s->n_buffers; b++) {
        o->ops->adopt(o, b, s->had[b] ? s->copy[b] : NULL);
        if (s->had[b])
            s->copy[b] = NULL;
    }
}

static void optim_snapshot_free(optim_snapshot *s)
{
    for (int b = 0; b < LENET_OPTIM_MAX_STATE; b++)
        lenet__free_aligned(s->copy[b]);
}

/* What a pass keeps from batch to batch: buffers grown to the largest batch, and the copies a step's rollback
 * needs. */
typedef struct pass_scratch {
    lenet_tensor *dlogits;
    int32_t *classes; /* the predicted classes of the current batch */
    int classes_cap;
    float *saved;     /* the parameters before the current optimizer step */
    optim_snapshot saved_state;
} pass_scratch;

static void scratch_free(pass_scratch *s)
{
    lenet_tensor_free(s->dlogits);
    lenet__free(s->classes);
    lenet__free_aligned(s->saved);
    optim_snapshot_free(&s->saved_state);
}

/* Grows the scratch for a batch of `batch` with `logits` as output. */
static lenet_status scratch_reserve(pass_scratch *s, const lenet_model *m, bool training, const lenet_tensor *logits,
                                    int batch)
{
    if (training && (!s->dlogits || s->dlogits->shape[0] != batch)) {
        lenet_tensor_free(s->dlogits);
        if (!(s->dlogits = lenet_tensor_create(2, logits->shape)))
            return LENET_ENOMEM;
    }
    if (training && !s->saved && !(s->saved = lenet__malloc_aligned((m->arena_numel ? m->arena_numel : 1) * sizeof(float))))
        return lenet__oom("parameter snapshot");
    if (batch > s->classes_cap) {
        lenet__free(s->classes);
        s->classes_cap = 0;
        if (!(s->classes = lenet__malloc((size_t)batch * sizeof *s->classes)))
            return lenet__oom("predicted classes");
        s->classes_cap = batch;
    }
    return LENET_OK;
}

/* Undoes an optimizer step: the parameters and the optimizer's state as they were before it. */
static void rollback(lenet_model *m, lenet_optimizer *o, pass_scratch *s)
{
    memcpy(m->params, s->saved, m->arena_numel * sizeof(float));
    optim_restore(o, &s->saved_state);
}

/* The training half of a batch whose forward and loss are done: backward, then the optimizer's step, undone when
 * it makes a parameter non-finite.  `seen` counts the examples before this batch, for messages. */
static lenet_status train_step(lenet_model *m, lenet_optimizer *o, pass_scratch *s, const char *who, size_t seen)
{
    lenet_model_zero_grad(m);
    lenet__model_backward_raw(m, s->dlogits->data);
    if (!all_finite(m->grads, m->arena_numel)) {
        size_t t = find_non_finite_param(m, m->grads, true);
        size_t layer = t < m->n_params ? m->param_layer[t] : 0;
        return lenet__fail(LENET_ENUMERIC,
                           "%s after %zu examples: the gradient of %s in layer %zu (%s) is not finite; "
                           "the parameters are unchanged",
                           who, seen, t < m->n_params ? m->param_names[t] : "?", layer, m->layers[layer]->ops->name);
    }
    memcpy(s->saved, m->params, m->arena_numel * sizeof(float));
    lenet_status st = optim_save(o, m->arena_numel, &s->saved_state);
    if (st == LENET_OK)
        st = lenet_optimizer_step(o);
    if (st != LENET_OK || all_finite(m->params, m->arena_numel))
        return st;
    size_t t = find_non_finite_param(m, m->params, false);
    size_t layer = t < m->n_params ? m->param_layer[t] : 0;
    rollback(m, o, s);
    return lenet__fail(LENET_ENUMERIC,
                       "%s after %zu examples: the update made %s in layer %zu (%s) not finite (learning rate "
                       "%g too large?); the parameters and the optimizer's state are restored to their values "
                       "before this step",
                       who, seen, t < m->n_params ? m->param_names[t] : "?", layer, m->layers[layer]->ops->name,
                       (double)lenet_optimizer_lr(o));
}

/* One batch: forward, loss, the count of correct predictions, and with `o` a training step. */
static lenet_status run_batch(lenet_model *m, lenet_optimizer *o, const lenet_criterion *crit, pass_scratch *s,
                              const lenet_tensor *images, const int32_t *labels, const char *who, size_t seen,
                              float *loss, size_t *correct)
{
    int batch;
    lenet_status st = lenet__model_check_input(m, images, who, &batch);
    if (st == LENET_OK)
        st = lenet__model_reserve(m, batch);
    if (st != LENET_OK)
        return st;
    memcpy(m->acts[0], images->data, images->numel * sizeof(float));
    lenet__model_forward_raw(m, batch);
    const lenet_tensor *logits = &m->output;
    if (logits->ndim != 2)
        return lenet__fail(LENET_ESHAPE, "%s: the model's output must be (N, classes) logits", who);
    st = scratch_reserve(s, m, o != NULL, logits, batch);
    if (st != LENET_OK)
        return st;
    st = batch_loss(crit, logits, labels, loss, o ? s->dlogits : NULL);
    if (st == LENET_ENUMERIC)
        return report_forward_fault(m, batch, who, seen);
    if (st == LENET_OK)
        st = count_correct(crit, logits, labels, s->classes, correct);
    if (st != LENET_OK) {
        lenet__error_prefix("%s after %zu examples: ", who, seen);
        return st;
    }
    return o ? train_step(m, o, s, who, seen) : LENET_OK;
}

/* One pass over `it`, in training mode with `o`, in evaluation mode without; the model's mode is restored. */
static lenet_status run_pass(lenet_model *m, lenet_optimizer *o, lenet_iter *it, const lenet_criterion *crit,
                             lenet_progress_fn progress, void *user, lenet_metrics *out)
{
    const char *who = o ? "train_epoch" : "evaluate";
    if (!m || !it)
        return lenet__fail(LENET_EINVAL, "%s: %s is NULL", who, !m ? "model" : "iterator");
    size_t total = lenet_iter_total(it);
    if (lenet_iter_position(it) >= total) {
        lenet_status st = lenet_iter_reset(it);
        if (st != LENET_OK)
            return st;
    }
    const bool mode = m->training;
    m->training = o != NULL;
    double start = now_seconds(), loss_sum = 0.0;
    size_t seen = 0, correct = 0;
    pass_scratch scratch = {0};
    lenet_metrics so_far = {0};
    lenet_status st;
    for (;;) {
        const lenet_tensor *images;
        const int32_t *labels;
        int count;
        st = lenet_iter_next(it, &images, &labels, &count);
        if (st == LENET_DONE) {
            st = LENET_OK;
            break;
        }
        float loss;
        if (st == LENET_OK)
            st = run_batch(m, o, crit, &scratch, images, labels, who, seen, &loss, &correct);
        if (st != LENET_OK)
            break;
        loss_sum += (double)loss * count;
        seen += (size_t)count;
        so_far = (lenet_metrics){loss_sum / (double)seen, (double)correct / (double)seen, now_seconds() - start, seen};
        if (progress)
            progress(user, seen, total, &so_far);
    }
    m->training = mode;
    scratch_free(&scratch);
    if (st == LENET_OK && o)
        lenet__optimizer_end_epoch(o); /* a complete training pass: counts the epoch for per-epoch schedules */
    if (st == LENET_OK && out)
        *out = so_far;
    return st;
}

lenet_status lenet_train_epoch(lenet_model *m, lenet_optimizer *o, lenet_iter *train, lenet_progress_fn progress,
                               void *user, lenet_metrics *out)
{
    return lenet_train_epoch_with(m, o, train, NULL, progress, user, out);
}

lenet_status lenet_train_epoch_with(lenet_model *m, lenet_optimizer *o, lenet_iter *train,
                                    const lenet_criterion *criterion, lenet_progress_fn progress, void *user,
                                    lenet_metrics *out)
{
    if (!o)
        return lenet__fail(LENET_EINVAL, "train_epoch: optimizer is NULL");
    if (m && o->model != m)
        return lenet__fail(LENET_EINVAL, "train_epoch: the optimizer was created for another model");
    return run_pass(m, o, train, criterion, progress, user, out);
}

lenet_status lenet_evaluate(lenet_model *m, lenet_iter *test, lenet_metrics *out)
{
    return lenet_evaluate_with(m, test, NULL, out);
}

lenet_status lenet_evaluate_with(lenet_model *m, lenet_iter *test, const lenet_criterion *criterion,
                                 lenet_metrics *out)
{
    return run_pass(m, NULL, test, criterion, NULL, NULL, out);
}
