/* SGD with momentum and weight decay, exactly torch.optim.SGD (dampening 0, nesterov False). */
#include <math.h>
#include <string.h>

#include "optim/internal.h"

typedef struct sgd {
    lenet_optimizer base;
    float momentum, weight_decay;
    float *velocity; /* one float per arena slot, allocated at the first step */
} sgd;

/* One tensor's update, for a compile-time `decay` so that every case is one branch-free loop that vectorizes (and
 * without weight decay g is used as is, as PyTorch skips the term). */
static inline void sgd_tensor(size_t n, float *p, const float *g, float *b, bool first, float lr, float mu, float wd,
                              bool decay)
{
    if (!b) {
        for (size_t i = 0; i < n; i++)
            p[i] -= lr * (decay ? g[i] + wd * p[i] : g[i]);
    } else if (first) {
        for (size_t i = 0; i < n; i++) {
            b[i] = decay ? g[i] + wd * p[i] : g[i];
            p[i] -= lr * b[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            b[i] = mu * b[i] + (decay ? g[i] + wd * p[i] : g[i]);
            p[i] -= lr * b[i];
        }
    }
}

/* For every trainable parameter p with gradient g:
 *   g = g + wd * p;  b = first step ? g : momentum * b + g;  p = p - lr * b   (b = g without momentum) */
static lenet_status sgd_step(lenet_optimizer *o)
{
    sgd *s = (sgd *)o;
    lenet_model *m = o->model;
    if (s->momentum != 0.0f && !s->velocity) {
        s->velocity = lenet__malloc_aligned((m->arena_numel ? m->arena_numel : 1) * sizeof(float));
        if (!s->velocity)
            return lenet__oom("SGD momentum buffer");
    }
    const bool first = o->steps == 0;
    const float lr = o->lr, mu = s->momentum, wd = s->weight_decay;
    for (size_t t = 0; t < m->n_params; t++) {
        if (!m->param_trainable[t])
            continue;
        size_t off = m->param_offset[t], n = m->param_tensors[t].numel;
        float *b = s->velocity ? s->velocity + off : NULL;
        if (wd != 0.0f)
            sgd_tensor(n, m->params + off, m->grads + off, b, first, lr, mu, wd, true);
        else
            sgd_tensor(n, m->params + off, m->grads + off, b, first, lr, mu, wd, false);
    }
    return LENET_OK;
}

static void sgd_destroy(lenet_optimizer *o)
{
    lenet__free_aligned(((sgd *)o)->velocity);
}

static lenet_status sgd_state(const lenet_optimizer *o, lenet_optimizer_state *out);
static void sgd_adopt(lenet_optimizer *o, int buffer, float *data);

static const lenet_optimizer_ops sgd_ops = {.name = "SGD", .step = sgd_step, .destroy = sgd_destroy,
                                            .state = sgd_state, .adopt = sgd_adopt};

lenet_optimizer *lenet_sgd_create(lenet_model *m, float lr, float momentum, float weight_decay)
{
    if (!m)
        return lenet__fail_null(LENET_EINVAL, "sgd_create: model is NULL");
    if (!(lr >= 0.0f) || !isfinite(lr) || !(momentum >= 0.0f) || !isfinite(momentum) || !(weight_decay >= 0.0f) ||
        !isfinite(weight_decay))
        return lenet__fail_null(LENET_EINVAL, "sgd_create: lr %g, momentum %g and weight_decay %g must be finite and >= 0",
                                (double)lr, (double)momentum, (double)weight_decay);
    sgd *s = lenet__optimizer_alloc(sizeof *s, &sgd_ops, m, lr);
    if (!s)
        return NULL;
    s->momentum = momentum;
    s->weight_decay = weight_decay;
    return &s->base;
}

/* ---- state for checkpoints (lib/io) ---- */

/* The momentum buffer, with momentum only: it exists once a step ran (its content is not read on the first step). */
static lenet_status sgd_state(const lenet_optimizer *o, lenet_optimizer_state *out)
{
    const sgd *s = (const sgd *)o;
    *out = (lenet_optimizer_state){
        .n_settings = 2,
        .setting_names = {"momentum", "weight_decay"},
        .settings = {s->momentum, s->weight_decay},
    };
    if (s->momentum != 0.0f) {
        out->n_buffers = 1;
        out->buffer_names[0] = "momentum_buffer";
        out->buffers[0] = s->velocity;
    }
    lenet__schedule_settings(o, out);
    return LENET_OK;
}

static void sgd_adopt(lenet_optimizer *o, int buffer, float *data)
{
    sgd *s = (sgd *)o;
    (void)buffer;
    lenet__free_aligned(s->velocity);
    s->velocity = data;
}
