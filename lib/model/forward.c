/* Forward and backward passes over the layer list, and the read-only inference path. */
#include <math.h>
#include <string.h>

#include "model/internal.h"

size_t lenet__model_out_size(const lenet_model *m)
{
    return m->layers[m->n_layers - 1]->out_size;
}

static size_t max_workspace(const lenet_model *m, int batch)
{
    size_t most = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        size_t w = l->ops->workspace ? l->ops->workspace(l, batch) : 0;
        if (w > most)
            most = w;
    }
    return most;
}

lenet_status lenet__model_reserve(lenet_model *m, int batch)
{
    if (batch <= m->batch_cap)
        return LENET_OK;
    size_t work = max_workspace(m, batch);
    float **acts = lenet__calloc(m->n_layers + 1, sizeof *acts);
    float *dbuf0 = lenet__malloc_aligned((size_t)batch * m->max_size * sizeof(float));
    float *dbuf1 = lenet__malloc_aligned((size_t)batch * m->max_size * sizeof(float));
    float *workspace = lenet__malloc_aligned((work ? work : 1) * sizeof(float));
    if (!acts || !dbuf0 || !dbuf1 || !workspace)
        goto fail;
    for (size_t i = 0; i <= m->n_layers; i++) {
        size_t size = i == 0 ? lenet__shape_size(&m->in_shape) : m->layers[i - 1]->out_size;
        acts[i] = lenet__malloc_aligned((size_t)batch * size * sizeof(float));
        if (!acts[i])
            goto fail;
    }
    /* Swap in the new buffers only when all of them exist, so a failure leaves the model as it was. */
    if (m->acts) {
        for (size_t i = 0; i <= m->n_layers; i++)
            lenet__free_aligned(m->acts[i]);
        lenet__free(m->acts);
    }
    lenet__free_aligned(m->dbuf[0]);
    lenet__free_aligned(m->dbuf[1]);
    lenet__free_aligned(m->work);
    m->acts = acts;
    m->dbuf[0] = dbuf0;
    m->dbuf[1] = dbuf1;
    m->work = workspace;
    m->work_cap = work;
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
    lenet__free_aligned(workspace);
    return lenet__oom("activation buffers");
}

/* Validates x against the model's input; shared by forward, predict and the training loop. */
static lenet_status check_input(const lenet_model *m, const lenet_tensor *x, const char *who, int *batch)
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
    if (!m->built && x->ndim == 4) {
        lenet_status st = lenet_model_build(m, x->shape[1], x->shape[2], x->shape[3]);
        if (st != LENET_OK)
            return st;
    }
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "%s: the model is not built", who);
    return check_input(m, x, who, batch);
}

void lenet__model_forward_raw(lenet_model *m, int batch)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        lenet_pass p = {.n = batch, .x = m->acts[i], .work = m->work};
        l->ops->forward(l, &p, m->acts[i + 1]);
    }
    m->last_batch = batch;
    const lenet_layer *last = m->layers[m->n_layers - 1];
    int shape[1 + LENET_MAX_SAMPLE_DIMS] = {batch};
    for (int d = 0; d < last->out.ndim; d++)
        shape[1 + d] = last->out.dim[d];
    lenet__tensor_view(&m->output, 1 + last->out.ndim, shape, m->acts[m->n_layers]);
}

lenet_status lenet_model_forward(lenet_model *m, const lenet_tensor *x, const lenet_tensor **y)
{
    if (!m || !x || !y)
        return lenet__fail(LENET_EINVAL, "model_forward: %s is NULL", !m ? "model" : !x ? "input" : "output pointer");
    int batch;
    lenet_status st = lenet__model_check_input(m, x, "model_forward", &batch);
    if (st == LENET_OK)
        st = lenet__model_reserve(m, batch);
    if (st != LENET_OK)
        return st;
    memcpy(m->acts[0], x->data, x->numel * sizeof(float));
    lenet__model_forward_raw(m, batch);
    *y = &m->output;
    return LENET_OK;
}

void lenet__model_backward_raw(lenet_model *m, const float *dy)
{
    int cur = 0;
    for (size_t i = m->n_layers; i-- > 0;) {
        const lenet_layer *l = m->layers[i];
        lenet_pass p = {
            .n = m->last_batch,
            .x = m->acts[i],
            .y = m->acts[i + 1],
            .dy = dy,
            .dx = i > 0 ? m->dbuf[cur] : NULL,
            .grads = m->grad_ptrs + (l->n_params ? m->layer_first_param[i] : 0),
            .work = m->work,
        };
        l->ops->backward(l, &p);
        dy = m->dbuf[cur];
        cur ^= 1;
    }
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

lenet_status lenet_model_predict(const lenet_model *m, const lenet_tensor *x, lenet_tensor *y)
{
    if (!m || !x || !y)
        return lenet__fail(LENET_EINVAL, "model_predict: %s is NULL", !m ? "model" : !x ? "input" : "output");
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "model_predict: the model is not built");
    int batch;
    lenet_status st = check_input(m, x, "model_predict", &batch);
    if (st != LENET_OK)
        return st;
    const lenet_layer *last = m->layers[m->n_layers - 1];
    bool same = y->ndim == 1 + last->out.ndim && y->shape[0] == batch;
    for (int d = 0; same && d < last->out.ndim; d++)
        same = y->shape[1 + d] == last->out.dim[d];
    if (!same) {
        char got[96];
        lenet__shape_str(y->ndim, y->shape, got, sizeof got);
        return lenet__fail(LENET_ESHAPE, "model_predict: output tensor is %s, expected (%d, %zu) elements per sample",
                           got, batch, last->out_size);
    }
    /* Private scratch: two ping-pong activation buffers and the layers' workspace. */
    size_t act = (size_t)batch * m->max_size, work = max_workspace(m, batch);
    float *scratch = lenet__malloc_aligned((2 * act + work + 1) * sizeof(float));
    if (!scratch)
        return lenet__oom("prediction scratch");
    float *buf[2] = {scratch, scratch + act};
    const float *in = x->data;
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        lenet_pass p = {.n = batch, .x = in, .work = scratch + 2 * act};
        float *out = (i + 1 == m->n_layers) ? y->data : buf[i & 1];
        l->ops->forward(l, &p, out);
        in = out;
    }
    lenet__free_aligned(scratch);
    return LENET_OK;
}

lenet_status lenet_model_classify(const lenet_model *m, const lenet_tensor *x, int32_t *classes, float *probs)
{
    if (!m || !x)
        return lenet__fail(LENET_EINVAL, "model_classify: %s is NULL", !m ? "model" : "input");
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "model_classify: the model is not built");
    if (x->ndim != 4)
        return lenet__fail(LENET_ESHAPE, "model_classify: input must be (N, C, H, W)");
    const lenet_layer *last = m->layers[m->n_layers - 1];
    int shape[2] = {x->shape[0], (int)last->out_size};
    int ndim = 1 + last->out.ndim, full[1 + LENET_MAX_SAMPLE_DIMS] = {x->shape[0]};
    for (int d = 0; d < last->out.ndim; d++)
        full[1 + d] = last->out.dim[d];
    lenet_tensor *y = lenet_tensor_create(ndim, full);
    if (!y)
        return LENET_ENOMEM;
    lenet_status st = lenet_model_predict(m, x, y);
    if (st != LENET_OK)
        goto done;
    for (int i = 0; i < shape[0]; i++) {
        const float *row = y->data + (size_t)i * shape[1];
        int best = 0;
        for (int k = 1; k < shape[1]; k++)
            if (row[k] > row[best])
                best = k;
        if (classes)
            classes[i] = best;
        if (probs) {
            double sum = 0.0;
            for (int k = 0; k < shape[1]; k++)
                sum += exp((double)row[k] - row[best]);
            for (int k = 0; k < shape[1]; k++)
                probs[(size_t)i * shape[1] + k] = (float)(exp((double)row[k] - row[best]) / sum);
        }
    }
done:
    lenet_tensor_free(y);
    return st;
}
