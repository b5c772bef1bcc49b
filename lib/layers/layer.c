/* What every layer kind shares: allocation, shape helpers, the public name/free, parameter init. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layers/layer.h"

void *lenet__layer_alloc(size_t size, const lenet_layer_ops *ops, int n_args, const double *args)
{
    lenet_layer *l = lenet__calloc(1, size);
    if (!l) {
        lenet__oom(ops->name);
        return NULL;
    }
    l->ops = ops;
    l->n_args = n_args;
    for (int i = 0; i < n_args; i++)
        l->args[i] = args[i];
    return l;
}

lenet_gn_rule lenet__gn_squares(const lenet_layer *l)
{
    (void)l;
    return LENET_GN_SQUARES;
}

lenet_gn_rule lenet__gn_one_to_one(const lenet_layer *l)
{
    (void)l;
    return LENET_GN_ONE_TO_ONE;
}

bool lenet__fold_affine_weight_bias(lenet_layer *l, const float *scale, const float *shift, int channels)
{
    if (l->n_params < 2 || channels < 1 || l->param_numel[1] != (size_t)channels)
        return false;
    const size_t row = l->param_numel[0] / (size_t)channels;
    for (int c = 0; c < channels; c++) {
        for (size_t k = 0; k < row; k++)
            l->param[0][(size_t)c * row + k] *= scale[c];
        l->param[1][c] = l->param[1][c] * scale[c] + shift[c];
    }
    return true;
}

const char *lenet_layer_name(const lenet_layer *l)
{
    return l ? l->ops->name : "";
}

void lenet_layer_free(lenet_layer *l)
{
    if (!l)
        return;
    if (l->ops->destroy)
        l->ops->destroy(l);
    lenet__free(l);
}

size_t lenet__shape_size(const lenet_shape *s)
{
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= (size_t)s->dim[i];
    return n;
}

lenet_status lenet__shape_check(const lenet_shape *s, const char *what, size_t *size)
{
    if (s->ndim < 1 || s->ndim > LENET_MAX_SAMPLE_DIMS)
        return lenet__fail(LENET_ESHAPE, "%s has %d dimensions per sample, expected 1 to %d", what, s->ndim,
                           LENET_MAX_SAMPLE_DIMS);
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++) {
        if (s->dim[i] < 1)
            return lenet__fail(LENET_ESHAPE, "%s dimension %d has size %d, expected >= 1", what, i, s->dim[i]);
        if (lenet__mul_overflows(n, (size_t)s->dim[i], &n) || n > LENET_MAX_SAMPLE_ELEMENTS) {
            char shape[64];
            lenet__shape_format(s, shape, sizeof shape);
            return lenet__fail(LENET_ESHAPE, "%s %s has more than the %zu elements per sample a model supports "
                               "(LENET_MAX_SAMPLE_ELEMENTS)", what, shape, LENET_MAX_SAMPLE_ELEMENTS);
        }
    }
    if (size)
        *size = n;
    return LENET_OK;
}

lenet_status lenet__padded_check(const lenet_layer *l, const lenet_shape *in, int pad, int *padded_h, int *padded_w)
{
    int border, h, w;
    if (lenet__int_mul_overflows(pad, 2, &border) || lenet__int_add_overflows(in->dim[1], border, &h) ||
        lenet__int_add_overflows(in->dim[2], border, &w))
        return lenet__fail(LENET_ESHAPE, "%s: padding %d on a %dx%d input overflows", l->ops->name, pad, in->dim[1],
                           in->dim[2]);
    lenet_shape padded = {.ndim = 3, .dim = {in->dim[0], h, w}};
    char what[64];
    snprintf(what, sizeof what, "%s: the padded input", l->ops->name);
    lenet_status st = lenet__shape_check(&padded, what, NULL);
    if (st != LENET_OK)
        return st;
    *padded_h = h;
    *padded_w = w;
    return LENET_OK;
}

bool lenet__shape_equal(const lenet_shape *a, const lenet_shape *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->dim[i] != b->dim[i])
            return false;
    return true;
}

void lenet__shape_format(const lenet_shape *s, char *buf, size_t size)
{
    lenet__shape_str(s->ndim, s->dim, buf, size);
}

lenet_status lenet__expect_image(const lenet_layer *l, const lenet_shape *in)
{
    if (in->ndim == 3)
        return LENET_OK;
    char shape[64];
    lenet__shape_format(in, shape, sizeof shape);
    return lenet__fail(LENET_ESHAPE, "%s expects (C, H, W) input per sample, got %s", l->ops->name, shape);
}

void lenet__fill_uniform(float *p, size_t n, float bound, lenet_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (2.0f * lenet__rng_uniform(rng) - 1.0f) * bound;
}

void lenet__init_weight_bias(lenet_layer *l, lenet_init scheme, lenet_rng *rng, size_t fan_in, size_t fan_out)
{
    /* PyTorch: kaiming_uniform(a=sqrt(5)) on the weight gives bound sqrt(6 / ((1 + 5) * fan_in)) = 1/sqrt(fan_in);
     * the bias bound is also 1/sqrt(fan_in).  d2l's xavier init replaces only the weights. */
    float pytorch_bound = 1.0f / sqrtf((float)fan_in);
    float weight_bound = pytorch_bound, bias_bound = pytorch_bound;
    if (scheme == LENET_INIT_XAVIER_UNIFORM) {
        weight_bound = sqrtf(6.0f / (float)(fan_in + fan_out));
    } else if (scheme == LENET_INIT_LECUN) {
        weight_bound = bias_bound = 2.4f / (float)fan_in;
    }
    lenet__fill_uniform(l->param[0], l->param_numel[0], weight_bound, rng);
    lenet__fill_uniform(l->param[1], l->param_numel[1], bias_bound, rng);
}
