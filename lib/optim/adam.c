/* Adam and AdamW, exactly torch.optim.Adam / torch.optim.AdamW of PyTorch 1.13 (_single_tensor_adam(w), amsgrad
 * False, maximize False).  PyTorch computes the scalar factors in double (Python floats) and hands each tensor op
 * its factor rounded to float; the tensor ops then run in float, in this order and, on CPUs with AVX2 or
 * AVX-512 (where PyTorch's vec::fmadd and the compiler fuse them), with these fused multiply-adds:
 *   Adam:   g = fma(p, wd, g)                        (grad.add(param, alpha=weight_decay), only if wd != 0)
 *   AdamW:  p = p * (1 - lr * wd)                    (param.mul_(1 - lr * weight_decay), always)
 *   m = fma(g, 1 - beta1, m * beta1)                 (exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1))
 *   v = fma((1 - beta2) * g, g, v * beta2)           (exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2))
 *   denom = sqrt(v) / sqrt(1 - beta2^t) + eps        ((exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps))
 *   p = p + ((-lr / (1 - beta1^t)) * m) / denom      (param.addcdiv_(exp_avg, denom, value=-step_size))
 * fmaf is exact by definition, so the result is the same on every machine, and bit for bit PyTorch's on those
 * CPUs (tests/test_optim.c checks it against PyTorch 1.13; PyTorch's plain-C fallback, without fusion, differs by
 * a rounding here and there).  A -march with FMA turns the fmaf calls into instructions. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "optim/internal.h"

typedef struct adam {
    lenet_optimizer base;
    float beta1, beta2, eps, weight_decay;
    bool decoupled;              /* AdamW */
    float *exp_avg, *exp_avg_sq; /* m and v, one float per arena slot, allocated (zero) at the first step */
} adam;

/* A double factor as the float a tensor op receives, +-infinity beyond the float range (where the conversion
 * itself is undefined). */
static float to_float(double x)
{
    return x > FLT_MAX ? INFINITY : x < -FLT_MAX ? -INFINITY : (float)x;
}

/* A step's float factors, computed in double as PyTorch does and then rounded. */
typedef struct adam_factors {
    float beta1, one_minus_beta1, beta2, one_minus_beta2; /* the moments' decay */
    float bias_correction2_sqrt, eps;                     /* the denominator */
    float neg_step_size;                                  /* -lr / (1 - beta1^t) */
    float weight_decay;                                   /* Adam's L2 term */
} adam_factors;

/* One tensor's moments and update (after AdamW's decay, if any), for a compile-time `l2` so that each case is one
 * branch-free loop (GCC vectorizes it with -O3, FMA in -march and -fno-math-errno: with errno, sqrtf keeps a call
 * for negative inputs, which v never holds).  n, p, g, m, v: count, parameters, gradients, first and second
 * moments. */
static inline void adam_tensor(size_t n, float *restrict p, const float *restrict g, float *restrict m,
                               float *restrict v, const adam_factors *f, bool l2)
{
    const float beta1 = f->beta1, one_minus_beta1 = f->one_minus_beta1, beta2 = f->beta2,
                one_minus_beta2 = f->one_minus_beta2, bc2_sqrt = f->bias_correction2_sqrt, eps = f->eps,
                neg_step_size = f->neg_step_size, wd = f->weight_decay;
    for (size_t i = 0; i < n; i++) {
        const float grad = l2 ? fmaf(p[i], wd, g[i]) : g[i];
        m[i] = fmaf(grad, one_minus_beta1, m[i] * beta1);
        v[i] = fmaf(one_minus_beta2 * grad, grad, v[i] * beta2);
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] + neg_step_size * m[i] / denom;
    }
}

/* AdamW's decoupled decay: p = p * (1 - lr * wd). */
static inline void decay_tensor(size_t n, float *restrict p, float factor)
{
    for (size_t i = 0; i < n; i++)
        p[i] = p[i] * factor;
}

static lenet_status adam_step(lenet_optimizer *o)
{
    adam *s = (adam *)o;
    lenet_model *m = o->model;
    const bool decoupled = s->decoupled;
    if (!s->exp_avg || !s->exp_avg_sq) {
        size_t bytes = (m->arena_numel ? m->arena_numel : 1) * sizeof(float);
        float *exp_avg = s->exp_avg ? s->exp_avg : lenet__malloc_aligned(bytes);
        float *exp_avg_sq = s->exp_avg_sq ? s->exp_avg_sq : lenet__malloc_aligned(bytes);
        if (!exp_avg || !exp_avg_sq) {
            if (exp_avg != s->exp_avg)
                lenet__free_aligned(exp_avg);
            if (exp_avg_sq != s->exp_avg_sq)
                lenet__free_aligned(exp_avg_sq);
            return lenet__oom(decoupled ? "AdamW moments" : "Adam moments");
        }
        if (!s->exp_avg)
            memset(exp_avg, 0, bytes);
        if (!s->exp_avg_sq)
            memset(exp_avg_sq, 0, bytes);
        s->exp_avg = exp_avg;
        s->exp_avg_sq = exp_avg_sq;
    }
    /* PyTorch: step = step_t.item(); bias_correction = 1 - beta ** step; step_size = lr / bias_correction1;
     * bias_correction2_sqrt = math.sqrt(bias_correction2), all in double. */
    const double lr = o->lr, beta1 = s->beta1, beta2 = s->beta2, wd = s->weight_decay;
    const double t = (double)(o->steps + 1);
    const double bias_correction1 = 1.0 - pow(beta1, t), bias_correction2 = 1.0 - pow(beta2, t);
    const adam_factors f = {
        .beta1 = s->beta1,
        .one_minus_beta1 = (float)(1.0 - beta1),
        .beta2 = s->beta2,
        .one_minus_beta2 = (float)(1.0 - beta2),
        .bias_correction2_sqrt = (float)sqrt(bias_correction2),
        .eps = s->eps,
        .neg_step_size = to_float(-lr / bias_correction1),
        .weight_decay = s->weight_decay,
    };
    const float decay = to_float(1.0 - lr * wd);
    for (size_t k = 0; k < m->n_params; k++) {
        if (!m->param_trainable[k])
            continue;
        size_t off = m->param_offset[k], n = m->param_tensors[k].numel;
        float *p = m->params + off, *exp_avg = s->exp_avg + off, *exp_avg_sq = s->exp_avg_sq + off;
        const float *g = m->grads + off;
        if (decoupled)
            decay_tensor(n, p, decay);
        if (!decoupled && s->weight_decay != 0.0f)
            adam_tensor(n, p, g, exp_avg, exp_avg_sq, &f, true);
        else
            adam_tensor(n, p, g, exp_avg, exp_avg_sq, &f, false);
    }
    return LENET_OK;
}

static void adam_destroy(lenet_optimizer *o)
{
    lenet__free_aligned(((adam *)o)->exp_avg);
    lenet__free_aligned(((adam *)o)->exp_avg_sq);
}

static lenet_status adam_state(const lenet_optimizer *o, lenet_optimizer_state *out);
static void adam_adopt(lenet_optimizer *o, int buffer, float *data);

static const lenet_optimizer_ops adam_ops = {.name = "Adam", .step = adam_step, .destroy = adam_destroy,
                                             .state = adam_state, .adopt = adam_adopt};
static const lenet_optimizer_ops adamw_ops = {.name = "AdamW", .step = adam_step, .destroy = adam_destroy,
                                              .state = adam_state, .adopt = adam_adopt};

static lenet_optimizer *create(const lenet_optimizer_ops *ops, const char *who, lenet_model *m, float lr, float beta1,
                               float beta2, float eps, float weight_decay)
{
    if (!m)
        return lenet__fail_null(LENET_EINVAL, "%s: model is NULL", who);
    /* PyTorch's checks, written so that NaN fails them, plus finiteness. */
    if (!(lr >= 0.0f) || !isfinite(lr))
        return lenet__fail_null(LENET_EINVAL, "%s: learning rate %g must be finite and >= 0", who, (double)lr);
    if (!(eps >= 0.0f) || !isfinite(eps))
        return lenet__fail_null(LENET_EINVAL, "%s: eps %g must be finite and >= 0", who, (double)eps);
    if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
        return lenet__fail_null(LENET_EINVAL, "%s: betas %g and %g must be in [0, 1)", who, (double)beta1,
                                (double)beta2);
    if (!(weight_decay >= 0.0f) || !isfinite(weight_decay))
        return lenet__fail_null(LENET_EINVAL, "%s: weight_decay %g must be finite and >= 0", who,
                                (double)weight_decay);
    adam *s = lenet__optimizer_alloc(sizeof *s, ops, m, lr);
    if (!s)
        return NULL;
    s->beta1 = beta1;
    s->beta2 = beta2;
    s->eps = eps;
    s->weight_decay = weight_decay;
    s->decoupled = ops == &adamw_ops;
    return &s->base;
}

lenet_optimizer *lenet_adam_create(lenet_model *m, float lr, float beta1, float beta2, float eps, float weight_decay)
{
    return create(&adam_ops, "adam_create", m, lr, beta1, beta2, eps, weight_decay);
}

lenet_optimizer *lenet_adamw_create(lenet_model *m, float lr, float beta1, float beta2, float eps, float weight_decay)
{
    return create(&adamw_ops, "adamw_create", m, lr, beta1, beta2, eps, weight_decay);
}

/* ---- state for checkpoints (lib/io) ---- */

/* The hyperparameters, and m and v (PyTorch's exp_avg and exp_avg_sq), which exist once a step ran; the step
 * count t is the optimizer's own steps. */
static lenet_status adam_state(const lenet_optimizer *o, lenet_optimizer_state *out)
{
    const adam *s = (const adam *)o;
    *out = (lenet_optimizer_state){
        .n_settings = 4,
        .setting_names = {"beta1", "beta2", "eps", "weight_decay"},
        .settings = {s->beta1, s->beta2, s->eps, s->weight_decay},
        .n_buffers = 2,
        .buffer_names = {"exp_avg", "exp_avg_sq"},
        .buffers = {s->exp_avg, s->exp_avg_sq},
    };
    lenet__schedule_settings(o, out);
    return LENET_OK;
}

static void adam_adopt(lenet_optimizer *o, int buffer, float *data)
{
    adam *s = (adam *)o;
    float **slot = buffer == 0 ? &s->exp_avg : &s->exp_avg_sq;
    lenet__free_aligned(*slot);
    *slot = data;
}
