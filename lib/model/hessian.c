/* The diagonal Gauss-Newton backward pass of LeCun et al. 1998 (appendix C), which SDLM uses to estimate
 * the second derivative of the loss with respect to every parameter.
 *
 * From the loss's diagonal Hessian hy = d2E/dy2 at the output, it goes back through the layers as backward goes
 * through them with gradients, dropping the off-diagonal terms and the second derivatives of the
 * nonlinearities (the Gauss-Newton approximation, always >= 0):
 *     unit a = sum_k w_k x_k:  d2E/dw_k^2 = d2E/da^2 x_k^2    d2E/dx_k^2 = sum over units d2E/da^2 w_k^2
 *     y = f(a):                d2E/da^2 = f'(a)^2 d2E/dy^2
 * A shared weight sums the terms of all its connections.  The results are added into the model's gradient
 * buffers, as backward adds gradients there.
 *
 * Each layer kind provides this pass through ops->backward_gn, or declares through ops->gn_rule which generic
 * pass is exact for it:
 *   - LENET_GN_SQUARES (Conv2d, Linear): linear in x and in the parameters, with every coefficient a parameter, so
 *     the pass is their own backward run over squared inputs and squared parameters with hy in place of dy;
 *   - LENET_GN_ONE_TO_ONE (activations, Flatten, pools whose stride is at least their kernel): every input reaches
 *     at most one output, through a slope J, so hx = backward(hy) * backward(1) = hy J^2.
 * Any other layer makes the pass fail with LENET_EUNSUPPORTED, before anything is written. */
#include <string.h>

#include "model/internal.h"

typedef enum gn_kind { GN_UNSUPPORTED, GN_OWN, GN_SQUARES, GN_ONE_TO_ONE } gn_kind;

static gn_kind gn_kind_of(const lenet_layer *l)
{
    if (l->ops->backward_gn)
        return GN_OWN;
    switch (l->ops->gn_rule ? l->ops->gn_rule(l) : LENET_GN_NONE) {
    case LENET_GN_SQUARES:
        return GN_SQUARES;
    case LENET_GN_ONE_TO_ONE:
        /* One-to-one layers have no parameters whose curvature the generic pass could account for. */
        return l->n_params > 0 ? GN_UNSUPPORTED : GN_ONE_TO_ONE;
    case LENET_GN_NONE:
        break;
    }
    return GN_UNSUPPORTED;
}

/* Scratch of one pass, freed at its end. */
typedef struct gn_scratch {
    float *h[2];          /* ping-pong curvature of activations */
    float *tmp, *ones;    /* one-to-one layers: backward(hy) and the all-ones dy */
    float *x_squared;     /* Conv2d/Linear: squared input */
    float *params_squared;
    float *work;
} gn_scratch;

static void scratch_free(gn_scratch *s)
{
    for (int i = 0; i < 2; i++)
        lenet__free_aligned(s->h[i]);
    lenet__free_aligned(s->tmp);
    lenet__free_aligned(s->ones);
    lenet__free_aligned(s->x_squared);
    lenet__free_aligned(s->params_squared);
    lenet__free_aligned(s->work);
}

static float *alloc_floats(size_t count)
{
    return lenet__malloc_aligned((count ? count : 1) * sizeof(float));
}

static lenet_status scratch_alloc(const lenet_model *m, int n, gn_scratch *s)
{
    memset(s, 0, sizeof *s);
    size_t act = (size_t)n * m->max_size, work = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        size_t w = l->ops->workspace ? l->ops->workspace(l, n) : 0;
        work = w > work ? w : work;
    }
    bool ok = true;
    for (int i = 0; i < 2; i++)
        ok &= (s->h[i] = alloc_floats(act)) != NULL;
    ok &= (s->tmp = alloc_floats(act)) != NULL;
    ok &= (s->ones = alloc_floats(act)) != NULL;
    ok &= (s->x_squared = alloc_floats(act)) != NULL;
    ok &= (s->params_squared = alloc_floats(m->arena_numel)) != NULL;
    ok &= (s->work = alloc_floats(work)) != NULL;
    if (!ok) {
        scratch_free(s);
        return lenet__oom("Gauss-Newton pass");
    }
    for (size_t i = 0; i < act; i++)
        s->ones[i] = 1.0f;
    for (size_t i = 0; i < m->arena_numel; i++)
        s->params_squared[i] = m->params[i] * m->params[i];
    return LENET_OK;
}

/* Layer i's Gauss-Newton pass: hy (and gy, the loss gradient for the last layer, else NULL) in, hx out (NULL for
 * the first layer); adds into the model's gradient buffers. */
static void layer_gn(lenet_model *m, size_t i, int n, const float *hy, const float *gy, float *hx, gn_scratch *s)
{
    lenet_layer *l = m->layers[i];
    size_t first = l->n_params ? m->layer_first_param[i] : 0;
    lenet_pass p = {
        .n = n,
        .x = m->acts[i],
        .y = m->acts[i + 1],
        .dy = gy,
        .grads = m->grad_ptrs + first,
        .work = s->work,
    };
    size_t in_count = (size_t)n * l->in_size;
    switch (gn_kind_of(l)) {
    case GN_OWN:
        l->ops->backward_gn(l, &p, hy, hx);
        break;
    case GN_SQUARES: {
        /* backward over x^2 and w^2 with dy = hy: dW += hy x^2, db += hy, dx = (w^2)^T hy. */
        float *saved[LENET_MAX_LAYER_PARAMS];
        for (size_t k = 0; k < in_count; k++)
            s->x_squared[k] = m->acts[i][k] * m->acts[i][k];
        for (int j = 0; j < l->n_params; j++) {
            saved[j] = l->param[j];
            l->param[j] = s->params_squared + m->param_offset[first + (size_t)j];
        }
        p.x = s->x_squared;
        p.dy = hy;
        p.dx = hx;
        l->ops->backward(l, &p);
        for (int j = 0; j < l->n_params; j++)
            l->param[j] = saved[j];
        break;
    }
    case GN_ONE_TO_ONE:
        if (!hx)
            break;
        /* hx = backward(hy) * backward(1) = hy J * J */
        p.dy = hy;
        p.dx = hx;
        l->ops->backward(l, &p);
        p.dy = s->ones;
        p.dx = s->tmp;
        l->ops->backward(l, &p);
        for (size_t k = 0; k < in_count; k++)
            hx[k] *= s->tmp[k];
        break;
    case GN_UNSUPPORTED:
        break;
    }
}

lenet_status lenet_model_backward_gn(lenet_model *m, const lenet_tensor *dy, const lenet_tensor *hy)
{
    if (!m || !hy)
        return lenet__fail(LENET_EINVAL, "model_backward_gn: %s is NULL", !m ? "model" : "curvature");
    if (!m->built || m->last_batch == 0)
        return lenet__fail(LENET_ESTATE, "model_backward_gn: no forward pass to back-propagate through");
    const lenet_tensor *given[2] = {hy, dy};
    for (int t = 0; t < 2; t++) {
        const lenet_tensor *g = given[t];
        if (g && (g->ndim != m->output.ndim || memcmp(g->shape, m->output.shape, sizeof g->shape) != 0)) {
            char got[96], want[96];
            lenet__shape_str(g->ndim, g->shape, got, sizeof got);
            lenet__shape_str(m->output.ndim, m->output.shape, want, sizeof want);
            return lenet__fail(LENET_ESHAPE, "model_backward_gn: %s is %s, the last output was %s",
                               t ? "gradient" : "curvature", got, want);
        }
    }
    for (size_t i = 0; i < m->n_layers; i++)
        if (gn_kind_of(m->layers[i]) == GN_UNSUPPORTED)
            return lenet__fail(LENET_EUNSUPPORTED,
                               "model_backward_gn: layer %zu (%s) has no Gauss-Newton pass (no backward_gn op)", i,
                               m->layers[i]->ops->name);

    const int n = m->last_batch;
    gn_scratch s;
    lenet_status st = scratch_alloc(m, n, &s);
    if (st != LENET_OK)
        return st;
    const float *h_cur = hy->data;
    int cur = 0;
    for (size_t i = m->n_layers; i-- > 0;) {
        float *hx = i > 0 ? s.h[cur] : NULL;
        /* The loss gradient reaches only the last layer (the RBF's own curvature needs it there). */
        layer_gn(m, i, n, h_cur, i + 1 == m->n_layers && dy ? dy->data : NULL, hx, &s);
        h_cur = hx;
        cur ^= 1;
    }
    scratch_free(&s);
    return LENET_OK;
}
