/* The training loop of d2l's train_ch6: forward, loss (cross-entropy or a criterion's), backward, step, with
 * running metrics.
 *
 * Numerical faults (issue 8): a step whose loss, gradients or updated parameters hold a NaN or an infinity
 * returns LENET_ENUMERIC naming the first layer where it appeared, and leaves the parameters and the optimizer's
 * state (step count, momentum, Hessian estimate) as they were before that step.  The checks cost one scan of the
 * gradient arena and one of the parameter arena per step, plus copies of the parameter arena (61,706 floats for the
 * d2l LeNet) and of the optimizer's buffers taken just before the optimizer runs; the activations are scanned only
 * when the loss is not finite, to find the layer that produced it.
 *
 * Data-parallel passes (a communicator from lenet_model_set_comm, lib/mpi): every process iterates the same global
 * batches and runs its own block of each batch's chunks; the engine's reducer sums gradients and statistics over all
 * chunks in chunk order.  With the cross-entropy each process computes its own samples' loss terms and gradient
 * rows, and the agreement that ends each step gathers the terms, so every process reports the whole batch's loss and
 * accuracy exactly as one process does (a criterion gets the whole batch's outputs, gathered).  A failure on one
 * process makes all of them return its message and undo the step; the processes also agree before the forward when
 * preparing a batch may fail on one of them, and the first batch of a pass checks that they hold the same model,
 * optimizer and iterator. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "lenet/criterion.h"
#include "lenet/loss.h"
#include "lenet/train.h"
#include "data/internal.h"
#include "loss/internal.h"
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

/* Keys that order one step's failures across processes (lenet_reducer.agree): the smallest wins, so the processes
 * report the failure one process would have met first.  A forward fault adds the position where it appeared. */
enum {
    KEY_PREPARE = 0,     /* a batch that cannot run: shapes, memory, a failed iterator */
    KEY_DISAGREE = 1,    /* processes holding different models, optimizers or iterators */
    KEY_LOSS = 2,        /* the loss or the accuracy failed otherwise than by a non-finite value */
    KEY_FORWARD = 3,     /* + 0 for the input, + 1 + i for layer i's output, + 1 + n_layers for the loss alone */
    KEY_GRADIENT = 0x40000000,
    KEY_STEP = 0x40000001
};

/* The loss of a batch is not finite: walks the activations of the last forward in order and names the first
 * layer whose output holds a NaN or an infinity (or the input, or the loss itself when every output is finite).
 * Only this process's samples are looked at; *key gets where the fault appeared (KEY_FORWARD + position). */
static lenet_status report_forward_fault(const lenet_model *m, int batch, const char *who, size_t seen, unsigned *key)
{
    int begin, end;
    lenet__model_own_samples(m, batch, &begin, &end);
    const size_t own = (size_t)(end - begin), sample = lenet__shape_size(&m->in_shape);
    size_t at = first_non_finite(m->acts[0] + (size_t)begin * sample, own * sample);
    *key = KEY_FORWARD;
    if (at < own * sample)
        return lenet__fail(LENET_ENUMERIC, "%s after %zu examples: the input batch is not finite (%s in sample %zu)",
                           who, seen, describe_value(m->acts[0][(size_t)begin * sample + at]),
                           (size_t)begin + at / sample);
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        const float *out = m->acts[i + 1] + (size_t)begin * l->out_size;
        at = first_non_finite(out, l->out_size * own);
        if (at < l->out_size * own) {
            *key = KEY_FORWARD + 1 + (unsigned)i; /* far below KEY_GRADIENT: a model has not 2^30 layers */
            return lenet__fail(LENET_ENUMERIC,
                               "%s after %zu examples: the output of layer %zu (%s) is not finite (%s in sample %zu); "
                               "the parameters are unchanged",
                               who, seen, i, l->ops->name, describe_value(out[at]), (size_t)begin + at / l->out_size);
        }
    }
    *key = KEY_GRADIENT - 1;
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
    /* Data-parallel passes with the cross-entropy: this process's samples' loss terms, then every sample's loss term
     * and hit (1 when its class is right) as pairs, for classes_cap samples. */
    double *terms, *samples;
} pass_scratch;

static void scratch_free(pass_scratch *s)
{
    lenet_tensor_free(s->dlogits);
    lenet__free(s->classes);
    lenet__free_aligned(s->saved);
    optim_snapshot_free(&s->saved_state);
    lenet__free(s->terms);
    lenet__free(s->samples);
}

/* Grows the scratch for a batch of `batch` outputs of `classes` (`shared`: of a data-parallel pass). */
static lenet_status scratch_reserve(pass_scratch *s, const lenet_model *m, bool training, bool shared, int batch,
                                    int classes)
{
    if (training && (!s->dlogits || s->dlogits->shape[0] != batch)) {
        lenet_tensor_free(s->dlogits);
        if (!(s->dlogits = lenet_tensor_create(2, (int[]){batch, classes})))
            return LENET_ENOMEM;
    }
    if (training && !s->saved && !(s->saved = lenet__malloc_aligned((m->arena_numel ? m->arena_numel : 1) * sizeof(float))))
        return lenet__oom("parameter snapshot");
    if (batch > s->classes_cap) {
        lenet__free(s->classes);
        lenet__free(s->terms);
        lenet__free(s->samples);
        s->terms = s->samples = NULL;
        s->classes_cap = 0;
        if (!(s->classes = lenet__malloc((size_t)batch * sizeof *s->classes)))
            return lenet__oom("predicted classes");
        if (shared && (!(s->terms = lenet__malloc((size_t)batch * sizeof *s->terms)) ||
                       !(s->samples = lenet__malloc(2 * (size_t)batch * sizeof *s->samples))))
            return lenet__oom("loss terms");
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

/* The gradients of a step are not finite: names the parameter, searching from the last layer. */
static lenet_status report_gradient_fault(const lenet_model *m, const char *who, size_t seen)
{
    size_t t = find_non_finite_param(m, m->grads, true);
    size_t layer = t < m->n_params ? m->param_layer[t] : 0;
    return lenet__fail(LENET_ENUMERIC,
                       "%s after %zu examples: the gradient of %s in layer %zu (%s) is not finite; "
                       "the parameters are unchanged",
                       who, seen, t < m->n_params ? m->param_names[t] : "?", layer, m->layers[layer]->ops->name);
}

/* The optimizer's step on gradients that are finite, undone when it makes a parameter non-finite.  LENET_OK when the
 * step was taken and kept. */
static lenet_status take_step(lenet_model *m, lenet_optimizer *o, pass_scratch *s, const char *who, size_t seen)
{
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

/* The training half of a batch whose forward and loss are done: backward, then the optimizer's step, undone when
 * it makes a parameter non-finite.  `seen` counts the examples before this batch, for messages. */
static lenet_status train_step(lenet_model *m, lenet_optimizer *o, pass_scratch *s, const char *who, size_t seen)
{
    lenet_model_zero_grad(m);
    lenet__model_backward_raw(m, s->dlogits->data);
    if (!all_finite(m->grads, m->arena_numel))
        return report_gradient_fault(m, who, seen);
    return take_step(m, o, s, who, seen);
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
    st = scratch_reserve(s, m, o != NULL, false, batch, logits->shape[1]);
    if (st != LENET_OK)
        return st;
    st = batch_loss(crit, logits, labels, loss, o ? s->dlogits : NULL);
    unsigned key;
    if (st == LENET_ENUMERIC)
        return report_forward_fault(m, batch, who, seen, &key);
    if (st == LENET_OK)
        st = count_correct(crit, logits, labels, s->classes, correct);
    if (st != LENET_OK) {
        lenet__error_prefix("%s after %zu examples: ", who, seen);
        return st;
    }
    return o ? train_step(m, o, s, who, seen) : LENET_OK;
}

/* ---- data-parallel passes ---- */

/* What the processes of a pass must hold alike, compared with rank 0's at the pass's first batch. */
enum {
    FP_VALID, FP_BATCH, FP_EXAMPLES, FP_POSITION, FP_ITER_BATCH, FP_ITER_STATE, FP_LAYERS, FP_ARCH, FP_PARAMS,
    FP_PARAM_VALUES, FP_BUFFER_VALUES, FP_STREAM, FP_OPTIMIZER, FP_OPTIM_STATE, FP_MODE, FP_STOP, FP_COUNT
};

static const struct {
    const char *what;
    bool numeric; /* the values mean something to a reader: print them */
} fp_fields[FP_COUNT] = {
    [FP_VALID] = {"", false},
    [FP_BATCH] = {"the batch size", true},
    [FP_EXAMPLES] = {"the examples per pass of the iterator", true},
    [FP_POSITION] = {"the position in the pass", true},
    [FP_ITER_BATCH] = {"the iterator's batch size", true},
    [FP_ITER_STATE] = {"the iterator's permutation, generator, shuffling or augmentation (use the same seed)", false},
    [FP_LAYERS] = {"the number of layers", true},
    [FP_ARCH] = {"the layers or their shapes", false},
    [FP_PARAMS] = {"the number of parameters", true},
    [FP_PARAM_VALUES] = {"the parameter values (initialise every rank from the same seed or checkpoint)", false},
    [FP_BUFFER_VALUES] = {"the buffers (running statistics)", false},
    [FP_STREAM] = {"the model's random stream (lenet_model_init seed, or training steps so far)", false},
    [FP_OPTIMIZER] = {"the optimizer's kind, learning rate or step count", false},
    [FP_OPTIM_STATE] = {"the optimizer's state (momentum, moments)", false},
    [FP_MODE] = {"training or evaluating", true},
    [FP_STOP] = {"whether a stop flag is installed (lenet_model_set_stop_flag on every process or on none)", true},
};

/* A running hash of bytes, 8 at a time: only compared between processes of one run. */
static uint64_t hash_bytes(uint64_t h, const void *data, size_t bytes)
{
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, sizeof w);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < bytes; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t hash_u64(uint64_t h, uint64_t v)
{
    return hash_bytes(h, &v, sizeof v);
}

static uint64_t hash_str(uint64_t h, const char *str)
{
    return hash_bytes(h, str, strlen(str) + 1);
}

/* The values of an arena laid out like the parameters (the padding between tensors holds nothing). */
static uint64_t hash_param_arena(uint64_t h, const lenet_model *m, const float *arena)
{
    for (size_t t = 0; t < m->n_params; t++)
        h = hash_bytes(h, arena + m->param_offset[t], m->param_tensors[t].numel * sizeof(float));
    return h;
}

static void fingerprint(const lenet_model *m, const lenet_optimizer *o, const lenet_iter *it, int batch,
                        uint64_t fp[FP_COUNT])
{
    const uint64_t seed = 0xcbf29ce484222325ULL;
    lenet_iter_state is;
    lenet__iter_get_state(it, &is);
    fp[FP_VALID] = 1;
    fp[FP_BATCH] = (uint64_t)batch;
    fp[FP_EXAMPLES] = is.size;
    fp[FP_POSITION] = is.position;
    fp[FP_ITER_BATCH] = (uint64_t)is.batch_size;
    uint64_t h = hash_bytes(seed, is.rng, sizeof is.rng);
    h = hash_u64(hash_u64(h, is.shuffle), is.augment);
    fp[FP_ITER_STATE] = is.order ? hash_bytes(h, is.order, is.size * sizeof *is.order) : h;
    fp[FP_LAYERS] = m->n_layers;
    h = seed;
    for (size_t i = 0; i < m->n_layers; i++)
        h = hash_u64(hash_u64(hash_str(h, m->layers[i]->ops->name), m->layers[i]->in_size), m->layers[i]->out_size);
    for (size_t t = 0; t < m->n_params; t++)
        h = hash_bytes(hash_u64(h, m->param_offset[t]), m->param_tensors[t].shape, sizeof m->param_tensors[t].shape);
    fp[FP_ARCH] = h;
    fp[FP_PARAMS] = lenet_model_param_numel(m);
    fp[FP_PARAM_VALUES] = hash_param_arena(seed, m, m->params);
    h = seed;
    for (size_t b = 0; b < m->n_buffers; b++)
        h = hash_bytes(h, m->buffer_tensors[b].data, m->buffer_tensors[b].numel * sizeof(float));
    fp[FP_BUFFER_VALUES] = h;
    fp[FP_STREAM] = hash_u64(hash_u64(seed, m->seed), m->step);
    fp[FP_OPTIMIZER] = 0;
    fp[FP_OPTIM_STATE] = 0;
    if (o) {
        uint32_t lr;
        memcpy(&lr, &o->lr, sizeof lr);
        fp[FP_OPTIMIZER] = hash_u64(hash_u64(hash_str(seed, o->ops->name), lr), o->steps);
        lenet_optimizer_state state;
        if (o->ops->state && o->ops->state(o, &state) == LENET_OK) {
            h = seed;
            for (int b = 0; b < state.n_buffers; b++)
                h = state.buffers[b] ? hash_param_arena(h, m, state.buffers[b]) : hash_u64(h, (uint64_t)b);
            for (int k = 0; k < state.n_settings; k++)
                h = hash_bytes(h, &state.settings[k], sizeof state.settings[k]);
            fp[FP_OPTIM_STATE] = h;
        }
    }
    fp[FP_MODE] = o != NULL;
    fp[FP_STOP] = o && m->stop_flag;
}

/* Compares this process's fingerprint with rank 0's: LENET_ESTATE naming the first thing that differs. */
static lenet_status compare_fingerprints(const uint64_t *mine, const uint64_t *root, int rank, int size,
                                         const char *who)
{
    for (int f = FP_VALID + 1; f < FP_COUNT; f++) {
        if (mine[f] == root[f])
            continue;
        if (fp_fields[f].numeric)
            return lenet__fail(LENET_ESTATE, "%s: the processes must train alike, but rank %d of %d differs from rank 0 "
                               "in %s (%llu, rank 0: %llu)", who, rank, size, fp_fields[f].what,
                               (unsigned long long)mine[f], (unsigned long long)root[f]);
        return lenet__fail(LENET_ESTATE, "%s: the processes must train alike, but rank %d of %d differs from rank 0 in %s",
                           who, rank, size, fp_fields[f].what);
    }
    return LENET_OK;
}

/* The end of a data-parallel step: the processes agree on its outcome (this process `stepped` or not) and, when each
 * computed the cross-entropy of its own samples (`local_loss`), gather every sample's loss term and hit in the same
 * exchange, to give the batch's loss and accuracy as one process computes them.  A step taken where another
 * process failed, or whose loss turns out beyond float range, is undone. */
static lenet_status agree_step(lenet_model *m, lenet_optimizer *o, pass_scratch *s, bool local_loss, int batch,
                               lenet_status st, unsigned key, bool stepped, const char *who, size_t seen, float *loss,
                               size_t *correct)
{
    const lenet_reducer *r = m->reducer;
    if (!local_loss) {
        st = r->agree(r->ctx, st, key);
    } else if ((st = r->agree_samples(r->ctx, st, key, s->samples, batch, 2)) == LENET_OK) {
        double total = 0.0;
        size_t hits = 0;
        for (int i = 0; i < batch; i++) {
            total += s->samples[2 * (size_t)i];
            hits += s->samples[2 * (size_t)i + 1] != 0.0;
        }
        const double mean = total / batch;
        if (isfinite((float)mean)) {
            *loss = (float)mean;
            *correct += hits;
        } else {
            st = lenet__fail(LENET_ENUMERIC, "%s after %zu examples: the loss is not finite although every layer's "
                             "output is; the parameters are unchanged", who, seen);
        }
    }
    if (st != LENET_OK && stepped)
        rollback(m, o, s);
    return st;
}

/* The training half of a data-parallel batch.  The backward is collective, so every process runs it, also one whose
 * loss failed (`st`, `key`); it then takes no step, and the processes agree. */
static lenet_status train_step_shared(lenet_model *m, lenet_optimizer *o, pass_scratch *s, bool local_loss,
                                      int batch, const char *who, size_t seen, lenet_status st, unsigned key,
                                      float *loss, size_t *correct)
{
    lenet_model_zero_grad(m);
    lenet__model_backward_raw(m, s->dlogits->data);
    bool stepped = false;
    if (st == LENET_OK && !all_finite(m->grads, m->arena_numel)) {
        st = report_gradient_fault(m, who, seen);
        key = KEY_GRADIENT;
    } else if (st == LENET_OK) {
        st = take_step(m, o, s, who, seen);
        stepped = st == LENET_OK;
        key = KEY_STEP;
    }
    return agree_step(m, o, s, local_loss, batch, st, key, stepped, who, seen, loss, correct);
}

/* Whether the processes must agree before the forward of a batch of `batch`: at a pass's first batch (which also
 * compares them), and whenever preparing it may allocate (a larger batch, more threads, another batch size for the
 * loss gradient), so that a process that fails there tells the others before any exchange.  The test reads only
 * what every process holds alike, so they all answer the same. */
static bool agree_before(const lenet_model *m, const pass_scratch *s, bool training, bool first, int batch)
{
    return first || !m->built || batch > m->batch_cap || lenet__threads() > m->threads_cap || batch > s->classes_cap ||
           (training && (!s->dlogits || s->dlogits->shape[0] != batch));
}

/* One batch of a data-parallel pass, of `batch` examples as the iterator's state says.  `st` is what the pass met
 * getting it (a failed iterator).  When agree_before() asks, the processes agree on how preparing went before the
 * forward; otherwise preparing cannot fail but for a broken iterator, and a process where it did still joins the
 * step's exchanges with whatever its buffers hold, takes no step and reports its failure when the step's outcome is
 * agreed, so that every process undoes the step. */
static lenet_status run_batch_shared(lenet_model *m, lenet_optimizer *o, const lenet_criterion *crit,
                                     pass_scratch *s, const lenet_iter *it, bool first, int batch, lenet_status st,
                                     const lenet_tensor *images, const int32_t *labels, const char *who, size_t seen,
                                     float *loss, size_t *correct)
{
    const lenet_reducer *r = m->reducer;
    const bool agree_first = agree_before(m, s, o != NULL, first, batch);
    int classes = 0, given = batch;
    unsigned key = KEY_PREPARE;
    if (st == LENET_OK)
        st = lenet__model_check_input(m, images, who, &given);
    if (st == LENET_OK && given != batch)
        st = lenet__fail(LENET_ESTATE, "%s: the iterator gave %d examples where its state promised %d", who, given,
                         batch);
    if (st == LENET_OK)
        st = lenet__model_reserve(m, batch);
    if (st == LENET_OK && r->reserve)
        st = r->reserve(r->ctx, m->arena_numel, m->batch_cap);
    if (st == LENET_OK) {
        const lenet_layer *last = m->layers[m->n_layers - 1];
        if (last->out.ndim != 1)
            st = lenet__fail(LENET_ESHAPE, "%s: the model's output must be (N, classes) logits", who);
        classes = (int)last->out_size;
    }
    if (st == LENET_OK)
        st = scratch_reserve(s, m, o != NULL, true, batch, classes);
    if (first) {
        uint64_t mine[FP_COUNT] = {0}, root[FP_COUNT];
        if (st == LENET_OK)
            fingerprint(m, o, it, batch, mine);
        memcpy(root, mine, sizeof root);
        r->broadcast(r->ctx, root, sizeof root, 0);
        if (st == LENET_OK && root[FP_VALID] && (st = compare_fingerprints(mine, root, r->rank, r->size, who)) != LENET_OK)
            key = KEY_DISAGREE;
    }
    if (agree_first && (st = r->agree(r->ctx, st, key)) != LENET_OK)
        return st;
    classes = (int)lenet__model_out_size(m);

    const bool prepared = st == LENET_OK;
    if (prepared) {
        int begin, end;
        lenet__model_own_samples(m, batch, &begin, &end);
        const size_t sample = lenet__shape_size(&m->in_shape);
        memcpy(m->acts[0] + (size_t)begin * sample, images->data + (size_t)begin * sample,
               (size_t)(end - begin) * sample * sizeof(float));
    }
    lenet__model_forward_raw(m, batch);
    const lenet_tensor *logits = &m->output;
    /* The cross-entropy (no criterion): each process computes its own samples' loss terms, gradient rows and hits,
     * and the step's agreement gathers them.  A criterion gets the whole batch's outputs, gathered, and every
     * process computes the loss, its gradient and the accuracy of the whole batch, as one process does.  Either way
     * the backward reads only this process's rows of the gradient. */
    const bool local_loss = crit == NULL;
    if (local_loss && prepared) {
        int begin, end;
        lenet__model_own_samples(m, batch, &begin, &end);
        st = lenet__cross_entropy_rows(logits, labels, begin, end, batch, s->terms, o ? s->dlogits : NULL);
        for (int i = begin; st == LENET_OK && i < end; i++) {
            s->samples[2 * (size_t)i] = s->terms[i - begin];
            s->samples[2 * (size_t)i + 1] = lenet__argmax(logits->data + (size_t)i * classes, classes) == labels[i];
        }
    } else if (!local_loss) {
        r->gather_samples(r->ctx, m->acts[m->n_layers], batch, (size_t)classes);
        if (prepared)
            st = batch_loss(crit, logits, labels, loss, o ? s->dlogits : NULL);
        if (prepared && st == LENET_OK)
            st = count_correct(crit, logits, labels, s->classes, correct);
    }
    if (prepared && st == LENET_ENUMERIC) {
        st = report_forward_fault(m, batch, who, seen, &key);
    } else if (prepared && st != LENET_OK) {
        lenet__error_prefix("%s after %zu examples: ", who, seen);
        key = KEY_LOSS;
    }
    if (!o)
        return agree_step(m, o, s, local_loss, batch, st, key, false, who, seen, loss, correct);
    return train_step_shared(m, o, s, local_loss, batch, who, seen, st, key, loss, correct);
}

/* After a training batch: LENET_STOPPED when the caller's stop flag asks for it and the pass has batches left.  The
 * processes of a data-parallel pass agree, so that all stop at the same batch (each installed a flag: the pass's
 * fingerprint compared that). */
static lenet_status check_stop(const lenet_model *m, const lenet_iter *it, bool shared)
{
    if (lenet_iter_position(it) >= lenet_iter_total(it))
        return LENET_OK;
    bool stop = *m->stop_flag != 0;
    if (shared) {
        lenet_status st = m->reducer->any(m->reducer->ctx, stop, &stop);
        if (st != LENET_OK)
            return st;
    }
    return stop ? LENET_STOPPED : LENET_OK;
}

/* What a pass does: train (with an optimizer), evaluate, or gather running statistics (lenet_update_statistics). */
typedef enum pass_kind { PASS_TRAIN, PASS_EVALUATE, PASS_STATISTICS } pass_kind;

/* One pass over `it`: a training pass steps `o`, the others take no step; training and statistics passes run in
 * training mode, evaluation in evaluation mode.  The model's mode is restored. */
static lenet_status run_pass(lenet_model *m, lenet_optimizer *o, lenet_iter *it, const lenet_criterion *crit,
                             pass_kind kind, lenet_progress_fn progress, void *user, lenet_metrics *out)
{
    const char *who = kind == PASS_TRAIN ? "train_epoch" : kind == PASS_EVALUATE ? "evaluate" : "update_statistics";
    if (!m || !it)
        return lenet__fail(LENET_EINVAL, "%s: %s is NULL", who, !m ? "model" : "iterator");
    size_t total = lenet_iter_total(it);
    if (lenet_iter_position(it) >= total) {
        lenet_status st = lenet_iter_reset(it);
        if (st != LENET_OK)
            return st;
    }
    const bool mode = m->training;
    const uint64_t step = m->step;
    m->training = kind != PASS_EVALUATE;
    /* With a communicator the engine shares each batch with the other processes for this pass. */
    const lenet_reducer *engine = m->reducer;
    if (m->comm)
        m->reducer = m->comm;
    const bool shared = m->reducer->agree != NULL;
    double start = now_seconds(), loss_sum = 0.0;
    size_t seen = 0, correct = 0;
    pass_scratch scratch = {0};
    lenet_metrics so_far = {0};
    lenet_status st;
    for (bool first = true;; first = false) {
        const lenet_tensor *images = NULL;
        const int32_t *labels = NULL;
        int count = 0;
        /* The batch the iterator owes, from its state: what the processes size their exchanges by. */
        lenet_iter_state state;
        lenet__iter_get_state(it, &state);
        const int expected = state.position >= state.size ? 0
                             : state.size - state.position < (size_t)state.batch_size ? (int)(state.size - state.position)
                                                                                      : state.batch_size;
        st = lenet_iter_next(it, &images, &labels, &count);
        if (st == LENET_DONE) {
            st = LENET_OK;
            break;
        }
        float loss;
        if (kind == PASS_STATISTICS)
            m->average_batch++;
        if (shared)
            st = run_batch_shared(m, o, crit, &scratch, it, first, expected, st, images, labels, who, seen, &loss,
                                  &correct);
        else if (st == LENET_OK)
            st = run_batch(m, o, crit, &scratch, images, labels, who, seen, &loss, &correct);
        if (st != LENET_OK)
            break;
        loss_sum += (double)loss * count;
        seen += (size_t)count;
        so_far = (lenet_metrics){loss_sum / (double)seen, (double)correct / (double)seen, now_seconds() - start, seen};
        if (progress)
            progress(user, seen, total, &so_far);
        if (o && m->stop_flag && (st = check_stop(m, it, shared)) != LENET_OK)
            break;
    }
    m->training = mode;
    m->reducer = engine;
    if (kind == PASS_STATISTICS) {
        /* Training continues with the random streams it would have drawn had the pass not run. */
        m->average_batch = 0;
        m->step = step;
    }
    scratch_free(&scratch);
    if (st == LENET_OK && o)
        lenet__optimizer_end_epoch(o); /* a complete training pass: counts the epoch for per-epoch schedules */
    if ((st == LENET_OK || st == LENET_STOPPED) && out)
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
    return run_pass(m, o, train, criterion, PASS_TRAIN, progress, user, out);
}

lenet_status lenet_evaluate(lenet_model *m, lenet_iter *test, lenet_metrics *out)
{
    return lenet_evaluate_with(m, test, NULL, out);
}

lenet_status lenet_evaluate_with(lenet_model *m, lenet_iter *test, const lenet_criterion *criterion,
                                 lenet_metrics *out)
{
    return run_pass(m, NULL, test, criterion, PASS_EVALUATE, NULL, NULL, out);
}

lenet_status lenet_update_statistics(lenet_model *m, lenet_iter *data, lenet_metrics *out)
{
    if (m && data && m->sticky == LENET_OK && !lenet__model_has_running_stats(m)) {
        if (out)
            *out = (lenet_metrics){0};
        return LENET_OK; /* nothing to gather: no pass */
    }
    return run_pass(m, NULL, data, NULL, PASS_STATISTICS, NULL, NULL, out);
}
