/* Flatten: (C, H, W) per sample becomes (C*H*W); the data are already in that order, so it is a copy. */
#include <string.h>

#include "layers/layer.h"

static lenet_status flatten_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    (void)l;
    size_t features;
    lenet_status st = lenet__shape_check(in, "Flatten: the input", &features);
    if (st != LENET_OK)
        return st;
    _Static_assert(LENET_MAX_SAMPLE_ELEMENTS <= 0x7fffffff, "a per-sample size fits the int of a shape");
    *out = (lenet_shape){.ndim = 1, .dim = {(int)features}};
    return LENET_OK;
}

static void flatten_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    memcpy(y, p->x, sizeof(float) * (size_t)p->n * l->in_size);
}

static void flatten_backward(const lenet_layer *l, const lenet_pass *p)
{
    if (p->dx)
        memcpy(p->dx, p->dy, sizeof(float) * (size_t)p->n * l->in_size);
}

static const lenet_layer_ops flatten_ops = {
    .name = "Flatten",
    .infer_shape = flatten_infer_shape,
    .forward = flatten_forward,
    .backward = flatten_backward,
    .gn_rule = lenet__gn_one_to_one,
};

lenet_layer *lenet_flatten(void)
{
    return lenet__layer_alloc(sizeof(lenet_layer), &flatten_ops, 0, NULL);
}
