/* Dropout, as PyTorch's nn.Dropout: in training mode each value is zeroed with probability p and the kept ones are
 * scaled by 1 / (1 - p) (inverted dropout), so evaluation is the identity.
 *
 * The mask of sample s in a forward is drawn from its own generator, seeded from the forward's stream (the model's
 * seed, the training step and the layer index, p->seed) and s's index in the batch: it depends neither on how the
 * batch is cut into chunks nor on the thread count, and backward draws the same mask again instead of storing it. */
#include <string.h>

#include "layers/layer.h"

typedef struct dropout {
    lenet_layer base;
    float p;
} dropout;

static lenet_status same_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    (void)l;
    *out = *in;
    return LENET_OK;
}

/* out[k] = in[k] * (kept ? 1 / (1 - p) : 0) for one sample's `size` values, with the mask of sample `sample`. */
static void apply_mask(const dropout *d, const lenet_pass *p, int sample, size_t size, const float *in, float *out)
{
    lenet_rng rng;
    lenet__rng_seed(&rng, lenet__rng_mix(p->seed, (uint64_t)sample));
    const float scale = 1.0f / (1.0f - d->p);
    for (size_t k = 0; k < size; k++)
        out[k] = lenet__rng_uniform(&rng) < d->p ? 0.0f : in[k] * scale;
}

static void dropout_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const dropout *d = (const dropout *)l;
    if (!p->training || d->p == 0.0f) {
        memcpy(y, p->x, (size_t)p->n * l->in_size * sizeof(float));
        return;
    }
    for (int i = 0; i < p->n; i++)
        apply_mask(d, p, p->start + i, l->in_size, p->x + (size_t)i * l->in_size, y + (size_t)i * l->in_size);
}

/* dx = dy * mask / (1 - p), the same mask as forward's. */
static void dropout_backward(const lenet_layer *l, const lenet_pass *p)
{
    const dropout *d = (const dropout *)l;
    if (!p->dx)
        return;
    if (!p->training || d->p == 0.0f) {
        memcpy(p->dx, p->dy, (size_t)p->n * l->in_size * sizeof(float));
        return;
    }
    for (int i = 0; i < p->n; i++)
        apply_mask(d, p, p->start + i, l->in_size, p->dy + (size_t)i * l->in_size, p->dx + (size_t)i * l->in_size);
}

static const lenet_layer_ops dropout_ops = {
    .name = "Dropout",
    .infer_shape = same_shape,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .eval_identity = true,
};

lenet_layer *lenet_dropout(float p)
{
    if (!(p >= 0.0f && p < 1.0f))
        return lenet__fail_null(LENET_EINVAL, "Dropout: p %g must be in [0, 1)", (double)p);
    double args[] = {p};
    dropout *d = lenet__layer_alloc(sizeof *d, &dropout_ops, 1, args);
    if (!d)
        return NULL;
    d->p = p;
    return &d->base;
}
