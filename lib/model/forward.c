/* Forward and backward passes over the layer list, and the read-only inference path.
 *
 * A batch is cut into fixed chunks of LENET_CHUNK samples.  Chunks run in parallel (lenet__parallel_for), each
 * through the network, writing only its own slices; parameter gradients go to one buffer per chunk and are
 * summed in chunk order afterwards.  The partition never depends on the thread count or on which thread takes which
 * chunk, so neither do the results.
 *
 * Whole-batch layers (BatchNorm in training) cut the network into segments: the chunks run up to such a layer and
 * each adds its partial statistics to a row of its own; the rows are summed in chunk order through the reduction
 * seam (m->reducer); the next segment starts with that layer, given the sums.  Backward goes through the same
 * segments from the top, with the gradient at each cut kept for the whole batch (m->bbuf).
 *
 * Under a multi-process reducer this process runs only its own block of the chunks (lenet__chunk_share), with their
 * global indices, so every sample sees the same chunk, offsets and random streams as in one process; the seam
 * brings in the other processes' rows.  Activations of other processes' chunks are left as they were. */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/internal.h"

int lenet__chunk_count(int batch)
{
    return (batch + LENET_CHUNK - 1) / LENET_CHUNK;
}

int lenet__threads_for(int chunks, int cap)
{
    int t = lenet__threads();
    if (t > chunks)
        t = chunks;
    if (cap > 0 && t > cap)
        t = cap;
    return t < 1 ? 1 : t;
}

size_t lenet__model_out_size(const lenet_model *m)
{
    return m->layers[m->n_layers - 1]->out_size;
}

bool lenet__model_has_running_stats(const lenet_model *m)
{
    for (size_t i = 0; i < m->n_layers; i++)
        if (m->layers[i]->ops->update_buffers)
            return true;
    return false;
}

size_t lenet__model_max_workspace(const lenet_model *m, int n)
{
    size_t most = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        size_t w = l->ops->workspace ? l->ops->workspace(l, n) : 0;
        if (w > most)
            most = w;
    }
    /* Round up to 64 bytes so each thread's slice stays aligned for vector loads. */
    return (most + 15) & ~(size_t)15;
}

/* a * b * sizeof(float) bytes, or SIZE_MAX when that overflows (an allocation of it then fails cleanly). */
static size_t float_bytes(size_t a, size_t b)
{
    size_t n;
    if (lenet__mul_overflows(a, b, &n) || lenet__mul_overflows(n, sizeof(float), &n))
        return SIZE_MAX;
    return n;
}

void lenet__model_release_buffers(lenet_model *m)
{
    if (m->acts) {
        for (size_t i = 0; i <= m->n_layers; i++)
            lenet__free_aligned(m->acts[i]);
        lenet__free(m->acts);
    }
    lenet__free_aligned(m->dbuf[0]);
    lenet__free_aligned(m->dbuf[1]);
    lenet__free_aligned(m->bbuf[0]);
    lenet__free_aligned(m->bbuf[1]);
    lenet__free_aligned(m->work);
    lenet__free_aligned(m->chunk_grads);
    lenet__free(m->partials);
    m->acts = NULL;
    m->dbuf[0] = m->dbuf[1] = m->bbuf[0] = m->bbuf[1] = m->work = m->chunk_grads = NULL;
    m->partials = NULL;
    m->work_cap = 0;
    m->threads_cap = 0;
    m->batch_cap = 0;
    m->last_batch = 0;
}

lenet_status lenet__model_reserve(lenet_model *m, int batch)
{
    int threads = lenet__threads();
    if (batch <= m->batch_cap && threads <= m->threads_cap)
        return LENET_OK;
    if (batch < m->batch_cap)
        batch = m->batch_cap;
    if (threads < m->threads_cap)
        threads = m->threads_cap;
    const size_t work = lenet__model_max_workspace(m, LENET_CHUNK), chunks = (size_t)lenet__chunk_count(batch);
    const size_t slices = (size_t)threads * LENET_CHUNK;
    const bool cuts = m->stats_total > 0;
    float **acts = lenet__calloc(m->n_layers + 1, sizeof *acts);
    /* Activation gradients live only while their chunk runs, so each worker needs room for one chunk, not the batch. */
    float *dbuf0 = lenet__malloc_aligned(float_bytes(slices, m->max_size));
    float *dbuf1 = lenet__malloc_aligned(float_bytes(slices, m->max_size));
    float *bbuf0 = cuts ? lenet__malloc_aligned(float_bytes((size_t)batch, m->max_size)) : NULL;
    float *bbuf1 = cuts ? lenet__malloc_aligned(float_bytes((size_t)batch, m->max_size)) : NULL;
    float *workspace = lenet__malloc_aligned(float_bytes((size_t)threads, work + 16));
    float *chunk_grads = lenet__malloc_aligned(float_bytes(chunks, m->arena_numel + 16));
    double *partials = lenet__calloc(chunks * (m->stats_max ? m->stats_max : 1), sizeof *partials);
    if (!acts || !dbuf0 || !dbuf1 || (cuts && (!bbuf0 || !bbuf1)) || !workspace || !chunk_grads || !partials)
        goto fail;
    for (size_t i = 0; i <= m->n_layers; i++) {
        size_t size = i == 0 ? lenet__shape_size(&m->in_shape) : m->layers[i - 1]->out_size;
        acts[i] = lenet__malloc_aligned(float_bytes((size_t)batch, size));
        if (!acts[i])
            goto fail;
    }
    /* Swap in the new buffers only when all of them exist, so a failure leaves the model as it was. */
    lenet__model_release_buffers(m);
    m->acts = acts;
    m->dbuf[0] = dbuf0;
    m->dbuf[1] = dbuf1;
    m->bbuf[0] = bbuf0;
    m->bbuf[1] = bbuf1;
    m->work = workspace;
    m->work_cap = work;
    m->threads_cap = threads;
    m->chunk_grads = chunk_grads;
    m->partials = partials;
    m->batch_cap = batch;
    m->last_batch = 0;
    return LENET_OK;

fail:
    if (acts)
        for (size_t i = 0; i <= m->n_layers; i++)
            lenet__free_aligned(acts[i]);
    lenet__free(acts);
    lenet__free_aligned(dbuf0);
    lenet__free_aligned(dbuf1);
    lenet__free_aligned(bbuf0);
    lenet__free_aligned(bbuf1);
    lenet__free_aligned(workspace);
    lenet__free_aligned(chunk_grads);
    lenet__free(partials);
    return lenet__oom("activation buffers");
}

/* Validates x against the model's input; shared by forward, predict and the training loop. */
lenet_status lenet__model_check_shape(const lenet_model *m, const lenet_tensor *x, const char *who, int *batch)
{
    if (x->ndim != 4) {
        char shape[96];
        lenet__shape_str(x->ndim, x->shape, shape, sizeof shape);
        return lenet__fail(LENET_ESHAPE, "%s: input must be (N, C, H, W), got %s", who, shape);
    }
    const lenet_shape *in = &m->in_shape;
    if (x->shape[1] != in->dim[0])
        return lenet__fail(LENET_ESHAPE, "%s: input has %d channels, the model was built for %d", who, x->shape[1],
                           in->dim[0]);
    if (x->shape[2] != in->dim[1] || x->shape[3] != in->dim[2])
        return lenet__fail(LENET_ESHAPE, "%s: input is %dx%d, the model was built for %dx%d", who, x->shape[2],
                           x->shape[3], in->dim[1], in->dim[2]);
    *batch = x->shape[0];
    return LENET_OK;
}

lenet_status lenet__model_check_input(lenet_model *m, const lenet_tensor *x, const char *who, int *batch)
{
    lenet_status st = lenet__model_check_sticky(m, who);
    if (st != LENET_OK)
        return st;
    if (!m->built && x->ndim == 4) {
        st = lenet_model_build(m, x->shape[1], x->shape[2], x->shape[3]);
        if (st != LENET_OK)
            return st;
    }
    if (!m->built)
        return lenet__fail(LENET_ESHAPE, "%s: input must be (N, C, H, W) to build the model from, got %d dimensions",
                           who, x->ndim);
    st = lenet__model_check_shape(m, x, who, batch);
    for (size_t i = 0; i < m->n_layers && st == LENET_OK; i++) {
        const lenet_layer *l = m->layers[i];
        if (l->ops->check_batch && (st = l->ops->check_batch(l, *batch, m->training)) != LENET_OK)
            lenet__error_prefix("%s: layer %zu (%s): ", who, i, l->ops->name);
    }
    return st;
}

void lenet__model_own_chunks(const lenet_model *m, int batch, int *first, int *count)
{
    lenet__chunk_share(lenet__chunk_count(batch), m->reducer->rank, m->reducer->size, first, count);
}

void lenet__model_own_samples(const lenet_model *m, int batch, int *begin, int *end)
{
    int first, count;
    lenet__model_own_chunks(m, batch, &first, &count);
    *begin = first * LENET_CHUNK;
    *end = (first + count) * LENET_CHUNK < batch ? (first + count) * LENET_CHUNK : batch;
    if (*end < *begin)
        *end = *begin;
}

int lenet__chunk_size(int batch, int start)
{
    return batch - start < LENET_CHUNK ? batch - start : LENET_CHUNK;
}

/* True when layer i needs the whole batch in the model's current mode. */
static bool is_cut(const lenet_model *m, size_t i)
{
    const lenet_layer *l = m->layers[i];
    return m->stats_count[i] > 0 && l->ops->batch_stats(l, m->training) > 0;
}

/* The first whole-batch layer at or after `from`, or n_layers. */
static size_t next_cut(const lenet_model *m, size_t from)
{
    while (from < m->n_layers && !is_cut(m, from))
        from++;
    return from;
}

/* What layer i sees of chunk c, besides its data pointers. */
static lenet_pass layer_pass(const lenet_model *m, size_t i, int batch, int c, float *work)
{
    const int start = c * LENET_CHUNK;
    return (lenet_pass){
        .n = lenet__chunk_size(batch, start),
        .x = m->acts[i] + (size_t)start * m->layers[i]->in_size,
        .y = m->acts[i + 1] + (size_t)start * m->layers[i]->out_size,
        .work = work,
        .training = m->training,
        .start = start,
        .batch = batch,
        .seed = lenet__rng_mix(m->last_seed, i),
        .stats = m->fwd_stats + m->stats_offset[i],
        .grad_stats = m->bwd_stats + m->stats_offset[i],
    };
}

/* One segment of a pass: layers [first, last) (backward: from last - 1 down to first), then the partial statistics
 * of layer `cut` when it is below n_layers. */
typedef struct pass_job {
    lenet_model *m;
    int batch;
    int first_chunk;   /* this process's first chunk: task i runs chunk first_chunk + i */
    size_t first, last, cut;
    const float *dy;   /* backward: gradient at the output of layer last - 1, for the whole batch */
    float *dx;         /* backward: where layer first's input gradient goes (whole batch), NULL when first is 0 */
    bool zero_grads;   /* backward: the first segment clears the chunk's gradient row */
} pass_job;

static void forward_chunk(void *ctx, int task, int worker)
{
    const pass_job *job = ctx;
    const int c = job->first_chunk + task;
    lenet_model *m = job->m;
    float *work = m->work + (size_t)worker * m->work_cap;
    for (size_t i = job->first; i < job->last; i++) {
        const lenet_layer *l = m->layers[i];
        lenet_pass p = layer_pass(m, i, job->batch, c, work);
        l->ops->forward(l, &p, (float *)p.y);
    }
    if (job->cut < m->n_layers) {
        const lenet_layer *l = m->layers[job->cut];
        double *row = m->partials + (size_t)c * m->stats_count[job->cut];
        memset(row, 0, m->stats_count[job->cut] * sizeof *row);
        lenet_pass p = layer_pass(m, job->cut, job->batch, c, work);
        l->ops->forward_stats(l, &p, row);
    }
}

/* Sums the chunks' statistics rows of layer `cut` into `out`. */
static void reduce_stats(lenet_model *m, size_t cut, int batch, double *out)
{
    m->reducer->sum_doubles(m->reducer->ctx, m->partials, lenet__chunk_count(batch), m->stats_count[cut],
                            out + m->stats_offset[cut]);
}

void lenet__model_forward_raw(lenet_model *m, int batch)
{
    int first, own;
    lenet__model_own_chunks(m, batch, &first, &own);
    const int threads = lenet__threads_for(own, m->threads_cap);
    /* Each training forward draws new random streams (dropout); evaluation draws none. */
    m->last_seed = lenet__rng_mix(m->seed, m->training ? m->step++ : UINT64_MAX);
    pass_job job = {.m = m, .batch = batch, .first_chunk = first, .first = 0, .cut = next_cut(m, 0)};
    for (;;) {
        job.last = job.cut;
        lenet__parallel_for(own, threads, forward_chunk, &job);
        if (job.cut == m->n_layers)
            break;
        lenet_layer *l = m->layers[job.cut];
        reduce_stats(m, job.cut, batch, m->fwd_stats);
        if (m->training && l->ops->update_buffers)
            l->ops->update_buffers(l, m->fwd_stats + m->stats_offset[job.cut], batch, m->average_batch);
        job.first = job.cut;
        job.cut = next_cut(m, job.cut + 1);
    }
    m->last_batch = batch;
    int shape[1 + LENET_MAX_SAMPLE_DIMS] = {batch};
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        for (int d = 0; d < l->out.ndim; d++)
            shape[1 + d] = l->out.dim[d];
        lenet__tensor_view(&m->act_tensors[i], 1 + l->out.ndim, shape, m->acts[i + 1]);
    }
    m->output = m->act_tensors[m->n_layers - 1];
}

lenet_status lenet_model_forward(lenet_model *m, const lenet_tensor *x, const lenet_tensor **y)
{
    if (!m || !x || !y)
        return lenet__fail(LENET_EINVAL, "model_forward: %s is NULL", !m ? "model" : !x ? "input" : "output pointer");
    int batch = 0;
    lenet_status st = lenet__model_check_input(m, x, "model_forward", &batch);
    if (st == LENET_OK)
        st = lenet__model_reserve(m, batch);
    if (st != LENET_OK)
        return st;
    memcpy(m->acts[0], x->data, x->numel * sizeof(float));
    lenet__model_forward_raw(m, batch);
    *y = &m->act_tensors[m->n_layers - 1];
    return LENET_OK;
}

/* Back-propagates one chunk through one segment into its own gradient row. */
static void backward_chunk(void *ctx, int task, int worker)
{
    const pass_job *job = ctx;
    const int c = job->first_chunk + task;
    lenet_model *m = job->m;
    float *grads = m->chunk_grads + (size_t)c * m->arena_numel, *work = m->work + (size_t)worker * m->work_cap;
    float *grad_ptrs[LENET_MAX_LAYER_PARAMS];
    const size_t slice = (size_t)worker * LENET_CHUNK * m->max_size;
    const int start = c * LENET_CHUNK;
    const float *dy = job->dy + (size_t)start * m->layers[job->last - 1]->out_size;
    int cur = 0;
    if (job->zero_grads)
        memset(grads, 0, m->arena_numel * sizeof(float));
    for (size_t i = job->last; i-- > job->first;) {
        const lenet_layer *l = m->layers[i];
        for (int j = 0; j < l->n_params; j++)
            grad_ptrs[j] = grads + m->param_offset[m->layer_first_param[i] + (size_t)j];
        lenet_pass p = layer_pass(m, i, job->batch, c, work);
        p.dy = dy;
        p.grads = grad_ptrs;
        if (i > job->first)
            p.dx = m->dbuf[cur] + slice;
        else
            p.dx = job->dx ? job->dx + (size_t)start * l->in_size : NULL;
        l->ops->backward(l, &p);
        dy = p.dx;
        cur ^= 1;
    }
    if (job->cut < m->n_layers) {
        const lenet_layer *l = m->layers[job->cut];
        double *row = m->partials + (size_t)c * m->stats_count[job->cut];
        memset(row, 0, m->stats_count[job->cut] * sizeof *row);
        lenet_pass p = layer_pass(m, job->cut, job->batch, c, work);
        p.dy = dy;
        l->ops->backward_stats(l, &p, row);
    }
}

/* The last whole-batch layer below `below`, or n_layers when there is none. */
static size_t prev_cut(const lenet_model *m, size_t below)
{
    while (below-- > 0)
        if (is_cut(m, below))
            return below;
    return m->n_layers;
}

void lenet__model_backward_raw(lenet_model *m, const float *dy)
{
    lenet__model_backward_input(m, dy, NULL);
}

void lenet__model_backward_input(lenet_model *m, const float *dy, float *dx)
{
    const int batch = m->last_batch, chunks = lenet__chunk_count(batch);
    int first, own;
    lenet__model_own_chunks(m, batch, &first, &own);
    const int threads = lenet__threads_for(own, m->threads_cap);
    pass_job job = {.m = m, .batch = batch, .first_chunk = first, .last = m->n_layers, .dy = dy, .zero_grads = true};
    int boundary = 0;
    size_t below = m->n_layers; /* the next cut is searched below this layer */
    for (;;) {
        job.cut = prev_cut(m, below);
        job.first = job.cut < m->n_layers ? job.cut + 1 : 0;
        /* The gradient at the cut's output is needed for the whole batch, after every chunk got there. */
        job.dx = job.first > 0 ? m->bbuf[boundary] : dx;
        if (job.first == job.last) {
            /* Nothing between two cuts (or the top): the cut's output gradient is the one coming in. */
            job.dx = (float *)job.dy;
        }
        lenet__parallel_for(own, threads, backward_chunk, &job);
        job.zero_grads = false;
        if (job.cut == m->n_layers)
            break;
        reduce_stats(m, job.cut, batch, m->bwd_stats);
        job.dy = job.dx;
        job.last = job.cut + 1;
        below = job.cut;
        if (job.dx == m->bbuf[boundary])
            boundary ^= 1;
    }
    m->reducer->sum_floats(m->reducer->ctx, m->chunk_grads, chunks, m->arena_numel, m->grads, threads);
}

lenet_status lenet_model_backward(lenet_model *m, const lenet_tensor *dy)
{
    if (!m || !dy)
        return lenet__fail(LENET_EINVAL, "model_backward: %s is NULL", !m ? "model" : "gradient");
    if (!m->built || m->last_batch == 0)
        return lenet__fail(LENET_ESTATE, "model_backward: no forward pass to back-propagate through");
    if (dy->ndim != m->output.ndim || memcmp(dy->shape, m->output.shape, sizeof dy->shape) != 0) {
        char got[96], want[96];
        lenet__shape_str(dy->ndim, dy->shape, got, sizeof got);
        lenet__shape_str(m->output.ndim, m->output.shape, want, sizeof want);
        return lenet__fail(LENET_ESHAPE, "model_backward: gradient is %s, the last output was %s", got, want);
    }
    lenet__model_backward_raw(m, dy->data);
    return LENET_OK;
}

