/* Inference plans: a private, evaluation-only network made from a trained model.  Layers that are the identity in
 * evaluation mode are left out, per-channel affine layers (BatchNorm) are folded into the layer before them when it
 * can absorb them, and every other layer is rebuilt from its constructor arguments with the model's parameters
 * and buffers copied in.  A backend runs that network over a caller's workspace, on the caller's thread. */
#include <string.h>

#include "layers/registry.h"
#include "plan/internal.h"

/* Workspace beyond the scratch, so that any pointer can be rounded up to the 64 bytes the kernels want. */
#define WORKSPACE_SLACK 64

/* Copies layer `from`'s parameters and buffers into its rebuilt twin `to` (same kind, same shapes). */
static void copy_tensors(lenet_layer *to, const lenet_layer *from)
{
    for (int j = 0; j < from->n_params; j++)
        memcpy(to->param[j], from->param[j], from->param_numel[j] * sizeof(float));
    for (int j = 0; j < from->n_buffers; j++)
        memcpy(to->buffer[j], from->buffer[j], from->buffer_numel[j] * sizeof(float));
}

/* True when source layer i is folded into the kept layer before it (`kept`, NULL if none). */
static bool folds_into(const lenet_layer *l, const lenet_layer *kept)
{
    return l->ops->eval_affine && kept && kept->ops->fold_affine && kept->out.ndim >= 1 &&
           l->in.dim[0] == kept->out.dim[0];
}

/* Which source layer each of the plan's layers comes from (source[k]) and, for folded layers, the plan layer they
 * fold into (into[i], else SIZE_MAX); returns the plan's layer count. */
static size_t choose_layers(const lenet_model *m, size_t *source, size_t *into)
{
    size_t kept = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        into[i] = SIZE_MAX;
        if (l->ops->eval_identity)
            continue;
        if (kept > 0 && folds_into(l, m->layers[source[kept - 1]])) {
            into[i] = kept - 1;
            continue;
        }
        source[kept++] = i;
    }
    return kept;
}

/* Rebuilds the kept layers into `net` and builds it for the model's input. */
static lenet_status rebuild(const lenet_model *m, lenet_model *net, const size_t *source, size_t kept)
{
    for (size_t k = 0; k < kept; k++) {
        const lenet_layer *l = m->layers[source[k]];
        if (!lenet__layer_is_registered(l))
            return lenet__fail(LENET_EUNSUPPORTED, "plan_create: layer %zu (%s) is not a kind of the library, so a plan "
                               "cannot rebuild it", source[k], l->ops->name);
        lenet_status st = lenet_model_add(net, lenet__layer_create(l->ops->name, l->n_args, l->args));
        if (st != LENET_OK) {
            lenet__error_prefix("plan_create: layer %zu (%s): ", source[k], l->ops->name);
            return st;
        }
    }
    if (kept == 0)
        return lenet__fail(LENET_EUNSUPPORTED, "plan_create: every layer is the identity in evaluation mode");
    return lenet_model_build(net, m->in_shape.dim[0], m->in_shape.dim[1], m->in_shape.dim[2]);
}

/* Folds every per-channel affine layer into the plan layer chosen for it. */
static lenet_status fold(const lenet_model *m, lenet_model *net, const size_t *into)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        if (into[i] == SIZE_MAX)
            continue;
        const lenet_layer *l = m->layers[i];
        const size_t channels = (size_t)l->in.dim[0];
        float *scale = lenet__malloc(2 * channels * sizeof *scale);
        if (!scale)
            return lenet__oom("plan folding");
        int got = l->ops->eval_affine(l, scale, scale + channels);
        lenet_layer *target = net->layers[into[i]];
        bool folded = target->ops->fold_affine(target, scale, scale + channels, got);
        lenet__free(scale);
        if (!folded)
            return lenet__fail(LENET_EUNSUPPORTED, "plan_create: layer %zu (%s) cannot be folded into %s", i,
                               l->ops->name, target->ops->name);
    }
    return LENET_OK;
}

lenet_plan *lenet_plan_create(const lenet_model *m, int max_batch)
{
    if (!m)
        return lenet__fail_null(LENET_EINVAL, "plan_create: model is NULL");
    if (max_batch < 1)
        return lenet__fail_null(LENET_EINVAL, "plan_create: max_batch %d must be >= 1", max_batch);
    if (lenet__model_check_sticky(m, "plan_create") != LENET_OK)
        return lenet__fail_null(LENET_ESTATE, "%s", lenet_last_error());
    if (!m->built)
        return lenet__fail_null(LENET_ESTATE, "plan_create: the model is not built (lenet_model_build, or a forward)");
    lenet_status st = LENET_ENOMEM;
    size_t *source = lenet__calloc(2 * m->n_layers, sizeof *source), *into = source + m->n_layers;
    lenet_plan *p = lenet__calloc(1, sizeof *p);
    if (!source || !p) {
        lenet__oom("plan");
        goto fail;
    }
    p->max_batch = max_batch;
    if (!(p->net = lenet_model_create()))
        goto fail;
    const size_t kept = choose_layers(m, source, into);
    if ((st = rebuild(m, p->net, source, kept)) != LENET_OK)
        goto fail;
    for (size_t k = 0; k < kept; k++)
        copy_tensors(p->net->layers[k], m->layers[source[k]]);
    if ((st = fold(m, p->net, into)) != LENET_OK)
        goto fail;
    p->net->training = false;
    p->backend = &lenet__plan_layers;
    if ((st = lenet__plan_use_fused(p)) != LENET_OK)
        goto fail;
    lenet__free(source);
    return p;

fail:
    lenet__free(source);
    lenet_plan_free(p);
    return NULL;
}

size_t lenet_plan_workspace_size(const lenet_plan *p)
{
    return p ? p->backend->workspace(p) + WORKSPACE_SLACK : 0;
}

int lenet_plan_max_batch(const lenet_plan *p)
{
    return p ? p->max_batch : 0;
}

lenet_status lenet_plan_run(const lenet_plan *p, void *workspace, size_t workspace_size, const lenet_tensor *x,
                            lenet_tensor *y)
{
    if (!p || !workspace || !x || !y)
        return lenet__fail(LENET_EINVAL, "plan_run: %s is NULL",
                           !p ? "plan" : !workspace ? "workspace" : !x ? "input" : "output");
    if (workspace_size < lenet_plan_workspace_size(p))
        return lenet__fail(LENET_EINVAL, "plan_run: the workspace has %zu bytes, the plan needs %zu "
                           "(lenet_plan_workspace_size)", workspace_size, lenet_plan_workspace_size(p));
    int batch;
    lenet_status st = lenet__model_check_shape(p->net, x, "plan_run", &batch);
    if (st != LENET_OK)
        return st;
    if (batch > p->max_batch)
        return lenet__fail(LENET_ESHAPE, "plan_run: a batch of %d is more than the plan's max_batch %d", batch,
                           p->max_batch);
    st = lenet__model_check_output(p->net, y, batch, "plan_run");
    if (st != LENET_OK)
        return st;
    void *aligned = (void *)(((uintptr_t)workspace + WORKSPACE_SLACK - 1) & ~(uintptr_t)(WORKSPACE_SLACK - 1));
    p->backend->run(p, batch, x->data, y->data, aligned);
    return LENET_OK;
}

lenet_status lenet_plan_classify(const lenet_plan *p, const lenet_tensor *y, int32_t *classes, float *probs)
{
    if (!p || !y)
        return lenet__fail(LENET_EINVAL, "plan_classify: %s is NULL", !p ? "plan" : "outputs");
    const int n = y->ndim > 0 ? y->shape[0] : 0;
    if (n < 1)
        return lenet__fail(LENET_ESHAPE, "plan_classify: the outputs must be (N, ...) with N >= 1");
    lenet_status st = lenet__model_check_output(p->net, y, n, "plan_classify");
    if (st != LENET_OK)
        return st;
    lenet__classify_rows(p->net, y->data, n, (int)lenet__model_out_size(p->net), classes, probs);
    return LENET_OK;
}

void lenet_plan_free(lenet_plan *p)
{
    if (!p)
        return;
    if (p->backend && p->backend->destroy)
        p->backend->destroy(p->impl);
    lenet_model_free(p->net);
    lenet__free(p);
}

/* ---- the layers backend ---- */

static size_t layers_workspace(const lenet_plan *p)
{
    size_t act, work;
    return lenet__model_chunk_scratch(p->net, &act, &work) * sizeof(float);
}

static void layers_run(const lenet_plan *p, int batch, const float *x, float *y, void *workspace)
{
    for (int c = 0; c < lenet__chunk_count(batch); c++)
        lenet__model_run_chunk(p->net, batch, c, x, y, workspace);
}

const lenet_plan_backend lenet__plan_layers = {
    .name = "layers",
    .workspace = layers_workspace,
    .run = layers_run,
};
