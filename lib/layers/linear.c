/* Linear: y = x W^T + b over (n, in_features). */
#include "kernels/kernels.h"
#include "layers/layer.h"

typedef struct linear {
    lenet_layer base;
    int out_features, in_features;
} linear;

static lenet_status linear_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    const linear *li = (const linear *)l;
    if (in->ndim != 1) {
        char shape[64];
        lenet__shape_format(in, shape, sizeof shape);
        return lenet__fail(LENET_ESHAPE, "Linear expects flattened input (features) per sample, got %s: add lenet_flatten() before it",
                           shape);
    }
    if (l->n_params > 0 && in->dim[0] != li->in_features)
        return lenet__fail(LENET_ESHAPE, "Linear: input has %d features, weights expect %d", in->dim[0],
                           li->in_features);
    *out = (lenet_shape){.ndim = 1, .dim = {li->out_features}};
    return LENET_OK;
}

static lenet_status linear_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    linear *li = (linear *)l;
    li->in_features = l->in.dim[0];
    specs[0] = (lenet_param_spec){.suffix = "weight", .ndim = 2, .shape = {li->out_features, li->in_features}, .trainable = true};
    specs[1] = (lenet_param_spec){.suffix = "bias", .ndim = 1, .shape = {li->out_features}, .trainable = true};
    *count = 2;
    return LENET_OK;
}

static void linear_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    const linear *li = (const linear *)l;
    lenet__init_weight_bias(l, scheme, rng, (size_t)li->in_features, (size_t)li->out_features);
}

/* y (n, out) = x (n, in) . W^T (in, out) + b */
static void linear_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const linear *li = (const linear *)l;
    int in = li->in_features, out = li->out_features;
    lenet__sgemm(false, true, p->n, out, in, 1.0f, p->x, in, l->param[0], in, 0.0f, y, out);
    for (int i = 0; i < p->n; i++)
        for (int o = 0; o < out; o++)
            y[(size_t)i * out + o] += l->param[1][o];
}

/* dW (out, in) += dY^T . X;  db += column sums of dY;  dX (n, in) = dY . W */
static void linear_backward(const lenet_layer *l, const lenet_pass *p)
{
    const linear *li = (const linear *)l;
    int in = li->in_features, out = li->out_features;
    lenet__sgemm(true, false, out, in, p->n, 1.0f, p->dy, out, p->x, in, 1.0f, p->grads[0], in);
    for (int i = 0; i < p->n; i++) {
        const float *dyi = p->dy + (size_t)i * out;
        for (int o = 0; o < out; o++)
            p->grads[1][o] += dyi[o];
    }
    if (p->dx)
        lenet__kernels()->gemm_nn(p->n, in, out, p->dy, out, l->param[0], in, p->dx, in);
}

static size_t linear_connections(const lenet_layer *l)
{
    const linear *li = (const linear *)l;
    return (size_t)li->out_features * ((size_t)li->in_features + 1);
}

static const lenet_layer_ops linear_ops = {
    .name = "Linear",
    .infer_shape = linear_infer_shape,
    .setup = linear_setup,
    .init = linear_init,
    .forward = linear_forward,
    .backward = linear_backward,
    .connections = linear_connections,
    .fold_affine = lenet__fold_affine_weight_bias,
    .gn_rule = lenet__gn_squares,
};

lenet_layer *lenet_linear(int out_features)
{
    if (out_features < 1)
        return lenet__fail_null(LENET_EINVAL, "Linear: out_features %d must be >= 1", out_features);
    double args[] = {out_features};
    linear *li = lenet__layer_alloc(sizeof *li, &linear_ops, 1, args);
    if (!li)
        return NULL;
    li->out_features = out_features;
    return &li->base;
}
