/* Inference on a built model: lenet_model_predict and lenet_model_classify only read the model, in evaluation mode,
 * with scratch of their own, so any number of threads may run them on one model at once. */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/internal.h"

typedef struct predict_job {
    const lenet_model *m;
    int batch;
    const float *x;
    float *y, *scratch;
    size_t act, work;
} predict_job;

lenet_status lenet__model_check_output(const lenet_model *m, const lenet_tensor *y, int batch, const char *who)
{
    const lenet_layer *last = m->layers[m->n_layers - 1];
    bool same = y->ndim == 1 + last->out.ndim && y->shape[0] == batch;
    for (int d = 0; same && d < last->out.ndim; d++)
        same = y->shape[1 + d] == last->out.dim[d];
    if (same)
        return LENET_OK;
    char got[96];
    lenet__shape_str(y->ndim, y->shape, got, sizeof got);
    return lenet__fail(LENET_ESHAPE, "%s: output tensor is %s, expected (%d, %zu) elements per sample", who, got, batch,
                       last->out_size);
}

size_t lenet__model_chunk_scratch(const lenet_model *m, size_t *act, size_t *work)
{
    *act = ((size_t)LENET_CHUNK * m->max_size + 15) & ~(size_t)15;
    *work = lenet__model_max_workspace(m, LENET_CHUNK);
    return 2 * *act + *work;
}

void lenet__model_run_chunk(const lenet_model *m, int batch, int c, const float *x, float *y, float *scratch)
{
    size_t act, work;
    lenet__model_chunk_scratch(m, &act, &work);
    const int start = c * LENET_CHUNK, n = lenet__chunk_size(batch, start);
    float *buf[2] = {scratch, scratch + act};
    float *workspace = scratch + 2 * act;
    const float *in = x + (size_t)start * lenet__shape_size(&m->in_shape);
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        lenet_pass p = {.n = n, .x = in, .work = workspace, .start = start, .batch = batch};
        float *out = (i + 1 == m->n_layers) ? y + (size_t)start * l->out_size : buf[i & 1];
        l->ops->forward(l, &p, out);
        in = out;
    }
}

/* Each worker owns its slice of the scratch (two chunk-sized ping-pong activation buffers and a workspace), so the
 * scratch grows with the thread count, not with the batch, and stays in cache. */
static void predict_chunk(void *ctx, int c, int worker)
{
    const predict_job *job = ctx;
    lenet__model_run_chunk(job->m, job->batch, c, job->x, job->y,
                           job->scratch + (size_t)worker * (2 * job->act + job->work));
}

lenet_status lenet_model_predict(const lenet_model *m, const lenet_tensor *x, lenet_tensor *y)
{
    if (!m || !x || !y)
        return lenet__fail(LENET_EINVAL, "model_predict: %s is NULL", !m ? "model" : !x ? "input" : "output");
    lenet_status st = lenet__model_check_sticky(m, "model_predict");
    if (st != LENET_OK)
        return st;
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "model_predict: the model is not built (lenet_model_build, or a forward)");
    int batch = 0;
    st = lenet__model_check_shape(m, x, "model_predict", &batch);
    if (st != LENET_OK)
        return st;
    st = lenet__model_check_output(m, y, batch, "model_predict");
    if (st != LENET_OK)
        return st;
    /* Private scratch per worker, so the model is only read and any number of threads may predict at once. */
    const int chunks = lenet__chunk_count(batch);
    const int threads = lenet__threads_for(chunks, 0);
    size_t act, work;
    lenet__model_chunk_scratch(m, &act, &work);
    float *scratch = lenet__malloc_aligned(((size_t)threads * (2 * act + work) + 16) * sizeof(float));
    if (!scratch)
        return lenet__oom("prediction scratch");
    predict_job job = {.m = m, .batch = batch, .x = x->data, .y = y->data, .scratch = scratch, .act = act,
                       .work = work};
    lenet__parallel_for(chunks, threads, predict_chunk, &job);
    lenet__free_aligned(scratch);
    return LENET_OK;
}

lenet_status lenet_model_classify(const lenet_model *m, const lenet_tensor *x, int32_t *classes, float *probs)
{
    if (!m || !x)
        return lenet__fail(LENET_EINVAL, "model_classify: %s is NULL", !m ? "model" : "input");
    lenet_status st = lenet__model_check_sticky(m, "model_classify");
    if (st != LENET_OK)
        return st;
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "model_classify: the model is not built (lenet_model_build, or a forward)");
    if (x->ndim != 4)
        return lenet__fail(LENET_ESHAPE, "model_classify: input must be (N, C, H, W)");
    const lenet_layer *last = m->layers[m->n_layers - 1];
    const int n = x->shape[0], k = (int)last->out_size;
    int full[1 + LENET_MAX_SAMPLE_DIMS] = {n};
    for (int d = 0; d < last->out.ndim; d++)
        full[1 + d] = last->out.dim[d];
    lenet_tensor *y = lenet_tensor_create(1 + last->out.ndim, full);
    if (!y)
        return LENET_ENOMEM;
    st = lenet_model_predict(m, x, y);
    if (st == LENET_OK)
        lenet__classify_rows(m, y->data, n, k, classes, probs);
    lenet_tensor_free(y);
    return st;
}

void lenet__classify_rows(const lenet_model *m, const float *y, int n, int k, int32_t *classes, float *probs)
{
    /* Scores: the class is the largest and probs their softmax; penalties: the smallest, and the softmax of -y. */
    const bool penalties = m->layers[m->n_layers - 1]->ops->penalties;
    const double sign = penalties ? -1.0 : 1.0;
    for (int i = 0; i < n; i++) {
        const float *row = y + (size_t)i * k;
        const int best = penalties ? lenet__argmin(row, k) : lenet__argmax(row, k);
        if (classes)
            classes[i] = best;
        if (probs) {
            double sum = 0.0;
            for (int j = 0; j < k; j++)
                sum += exp(sign * ((double)row[j] - row[best]));
            for (int j = 0; j < k; j++)
                probs[(size_t)i * k + j] = (float)(exp(sign * ((double)row[j] - row[best])) / sum);
        }
    }
}
