/* Stochastic diagonal Levenberg-Marquardt (LeCun et al. 1998, appendix C; LeCun, Bottou, Orr, Mueller,
 * "Efficient BackProp", 1998): plain stochastic gradient with one step size per parameter,
 *     w_k -= epsilon / (mu + h_kk) * dE/dw_k,
 * h_kk a Gauss-Newton estimate of d2E/dw_k^2 averaged over a few hundred patterns and re-estimated before each
 * pass.  mu keeps the step bounded where the curvature is tiny. */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "optim/internal.h"

typedef struct sdlm {
    lenet_optimizer base;
    float mu;
    float *hessian;   /* one float per arena slot, allocated with the first estimate */
    float *rate;      /* epsilon / (mu + h), recomputed when h or epsilon change */
    float rate_epsilon;
    bool rate_stale;
    size_t numel;     /* arena size they were allocated for */
} sdlm;

static lenet_status sdlm_step(lenet_optimizer *o)
{
    sdlm *s = (sdlm *)o;
    lenet_model *m = o->model;
    if (!s->hessian || s->numel != m->arena_numel)
        return lenet__fail(LENET_ESTATE, "SDLM step: estimate the Hessian first (lenet_sdlm_estimate_hessian)");
    const float epsilon = o->lr, mu = s->mu;
    if (!s->rate) { /* first step on this estimate's size, or a Hessian adopted from a checkpoint */
        s->rate = lenet__malloc_aligned((m->arena_numel ? m->arena_numel : 1) * sizeof(float));
        if (!s->rate)
            return lenet__oom("SDLM step sizes");
        s->rate_stale = true;
    }
    if (s->rate_stale || s->rate_epsilon != epsilon) {
        for (size_t i = 0; i < m->arena_numel; i++)
            s->rate[i] = epsilon / (mu + s->hessian[i]);
        s->rate_epsilon = epsilon;
        s->rate_stale = false;
    }
    for (size_t t = 0; t < m->n_params; t++) {
        if (!m->param_trainable[t])
            continue;
        size_t off = m->param_offset[t], n = m->param_tensors[t].numel;
        float *p = m->params + off;
        const float *g = m->grads + off, *rate = s->rate + off;
        for (size_t i = 0; i < n; i++)
            p[i] -= rate[i] * g[i]; /* epsilon / (mu + h) * g */
    }
    return LENET_OK;
}

static void sdlm_destroy(lenet_optimizer *o)
{
    lenet__free_aligned(((sdlm *)o)->hessian);
    lenet__free_aligned(((sdlm *)o)->rate);
}

/* Checkpoints keep mu and the Hessian estimate; the step sizes are derived from them and recomputed. */
static lenet_status sdlm_state(const lenet_optimizer *o, lenet_optimizer_state *out)
{
    const sdlm *s = (const sdlm *)o;
    *out = (lenet_optimizer_state){
        .n_settings = 1,
        .setting_names = {"mu"},
        .settings = {s->mu},
        .n_buffers = 1,
        .buffer_names = {"hessian_diagonal"},
        .buffers = {s->hessian},
    };
    lenet__schedule_settings(o, out);
    return LENET_OK;
}

static void sdlm_adopt(lenet_optimizer *o, int buffer, float *data)
{
    sdlm *s = (sdlm *)o;
    (void)buffer;
    lenet__free_aligned(s->hessian);
    s->hessian = data;
    s->numel = data ? o->model->arena_numel : 0;
    s->rate_stale = true;
}

static const lenet_optimizer_ops sdlm_ops = {.name = "SDLM", .step = sdlm_step, .destroy = sdlm_destroy,
                                             .state = sdlm_state, .adopt = sdlm_adopt};

lenet_optimizer *lenet_sdlm_create(lenet_model *m, float epsilon, float mu)
{
    if (!m)
        return lenet__fail_null(LENET_EINVAL, "sdlm_create: model is NULL");
    if (!(epsilon >= 0.0f) || !isfinite(epsilon) || !(mu > 0.0f) || !isfinite(mu))
        return lenet__fail_null(LENET_EINVAL, "sdlm_create: epsilon %g must be finite and >= 0, mu %g finite and > 0",
                                (double)epsilon, (double)mu);
    sdlm *s = lenet__optimizer_alloc(sizeof *s, &sdlm_ops, m, epsilon);
    if (!s)
        return NULL;
    s->mu = mu;
    return &s->base;
}

static sdlm *as_sdlm(const lenet_optimizer *o, const char *who)
{
    if (!o) {
        lenet__fail(LENET_EINVAL, "%s: optimizer is NULL", who);
        return NULL;
    }
    if (o->ops != &sdlm_ops) {
        lenet__fail(LENET_EINVAL, "%s: the optimizer is %s, not SDLM", who, o->ops->name);
        return NULL;
    }
    return (sdlm *)o;
}

lenet_status lenet_sdlm_update_hessian_from_grads(lenet_optimizer *o, double count, float gamma)
{
    sdlm *s = as_sdlm(o, "sdlm_update_hessian_from_grads");
    if (!s)
        return LENET_EINVAL;
    if (!(count > 0.0) || !isfinite(count) || !(gamma > 0.0f) || !(gamma <= 1.0f))
        return lenet__fail(LENET_EINVAL, "sdlm_update_hessian_from_grads: count %g must be finite and > 0, gamma %g in (0, 1]",
                           count, (double)gamma);
    lenet_model *m = o->model;
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "sdlm_update_hessian_from_grads: the model is not built");
    if (!s->hessian || s->numel != m->arena_numel) {
        /* The step sizes are derived: sdlm_step allocates them again for the new size. */
        lenet__free_aligned(s->hessian);
        lenet__free_aligned(s->rate);
        s->rate = NULL;
        s->numel = 0;
        s->hessian = lenet__malloc_aligned((m->arena_numel ? m->arena_numel : 1) * sizeof(float));
        if (!s->hessian)
            return lenet__oom("SDLM Hessian");
        s->numel = m->arena_numel;
        gamma = 1.0f; /* the first estimate replaces nothing */
    }
    s->rate_stale = true;
    /* h <- (1 - gamma) h + gamma * max(0, grads / count) */
    for (size_t i = 0; i < m->arena_numel; i++) {
        float h = (float)(m->grads[i] / count);
        h = h > 0.0f ? h : 0.0f;
        s->hessian[i] = gamma >= 1.0f ? h : (1.0f - gamma) * s->hessian[i] + gamma * h;
    }
    return LENET_OK;
}

lenet_status lenet_sdlm_estimate_hessian(lenet_optimizer *o, lenet_iter *it, size_t samples,
                                         lenet_rbf_loss_kind criterion, float j)
{
    sdlm *s = as_sdlm(o, "sdlm_estimate_hessian");
    if (!s)
        return LENET_EINVAL;
    if (!it || samples == 0)
        return lenet__fail(LENET_EINVAL, "sdlm_estimate_hessian: %s", !it ? "iterator is NULL" : "samples is 0");
    lenet_model *m = o->model;
    lenet_tensor *dy = NULL, *hy = NULL;
    lenet_status st = lenet_model_zero_grad(m);
    size_t done = 0;
    while (st == LENET_OK && done < samples) {
        const lenet_tensor *images, *y;
        const int32_t *labels;
        int count;
        st = lenet_iter_next(it, &images, &labels, &count);
        if (st == LENET_DONE) {
            st = lenet_iter_reset(it);
            if (st == LENET_OK && lenet_iter_total(it) == 0)
                st = lenet__fail(LENET_EINVAL, "sdlm_estimate_hessian: the iterator has no examples");
            continue;
        }
        if (st != LENET_OK)
            break;
        /* Take only as many patterns as are still wanted: a view of the batch's first ones. */
        if ((size_t)count > samples - done)
            count = (int)(samples - done);
        lenet_tensor batch;
        int shape[LENET_TENSOR_MAX_DIMS];
        memcpy(shape, images->shape, sizeof shape);
        shape[0] = count;
        lenet__tensor_view(&batch, images->ndim, shape, images->data);
        st = lenet_model_forward(m, &batch, &y);
        if (st != LENET_OK)
            break;
        if (!dy || dy->shape[0] != y->shape[0]) {
            lenet_tensor_free(dy);
            lenet_tensor_free(hy);
            dy = lenet_tensor_create(y->ndim, y->shape);
            hy = lenet_tensor_create(y->ndim, y->shape);
            if (!dy || !hy) {
                st = LENET_ENOMEM;
                break;
            }
        }
        st = lenet_rbf_loss(y, labels, criterion, j, NULL, dy, hy);
        if (st != LENET_OK)
            break;
        /* The loss is a batch mean: scale back to per-pattern sums, averaged over all patterns at the end. */
        for (size_t i = 0; i < dy->numel; i++) {
            dy->data[i] *= (float)count;
            hy->data[i] *= (float)count;
        }
        st = lenet_model_backward_gn(m, dy, hy);
        done += (size_t)count;
    }
    if (st == LENET_OK)
        st = lenet_sdlm_update_hessian_from_grads(o, (double)done, 1.0f);
    lenet_tensor_free(dy);
    lenet_tensor_free(hy);
    lenet_model_zero_grad(m);
    return st;
}

lenet_status lenet_sdlm_hessian(const lenet_optimizer *o, size_t i, lenet_tensor *out)
{
    const sdlm *s = as_sdlm(o, "sdlm_hessian");
    if (!s)
        return LENET_EINVAL;
    const lenet_model *m = o->model;
    if (!out || i >= m->n_params)
        return lenet__fail(LENET_EINVAL, "sdlm_hessian: %s", !out ? "output is NULL" : "parameter index out of range");
    if (!s->hessian || s->numel != m->arena_numel)
        return lenet__fail(LENET_ESTATE, "sdlm_hessian: no estimate yet (lenet_sdlm_estimate_hessian)");
    if (out->numel != m->param_tensors[i].numel)
        return lenet__fail(LENET_ESHAPE, "sdlm_hessian: output has %zu elements, parameter %zu has %zu", out->numel,
                           i, m->param_tensors[i].numel);
    memcpy(out->data, s->hessian + m->param_offset[i], out->numel * sizeof(float));
    return LENET_OK;
}

float lenet_sdlm_paper_epsilon(int pass)
{
    if (pass < 2)
        return 0.0005f;
    if (pass < 5)
        return 0.0002f;
    if (pass < 8)
        return 0.0001f;
    if (pass < 12)
        return 0.00005f;
    return 0.00001f;
}
