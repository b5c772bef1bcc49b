/* Conv2d: y = W * x + b over NCHW.  The passes run through the kernels' convolution entry point
 * (lib/kernels/conv_plan.c), which picks the vector kernels for each batch and lays out their scratch. */
#include "kernels/kernels.h"
#include "layers/layer.h"

typedef struct conv2d {
    lenet_layer base;
    int out_channels, kernel_size, stride, padding;
    lenet_conv_plan plan; /* set by setup */
} conv2d;

static lenet_status conv2d_geometry(const conv2d *c, const lenet_shape *in, lenet_conv_geom *g)
{
    lenet_status st = lenet__expect_image(&c->base, in);
    if (st != LENET_OK)
        return st;
    *g = (lenet_conv_geom){.c = in->dim[0], .h = in->dim[1], .w = in->dim[2],
                           .k = c->kernel_size, .s = c->stride, .p = c->padding};
    int padded_h, padded_w;
    st = lenet__padded_check(&c->base, in, g->p, &padded_h, &padded_w);
    if (st != LENET_OK)
        return st;
    if (padded_h < g->k || padded_w < g->k)
        return lenet__fail(LENET_ESHAPE, "Conv2d: kernel %dx%d is larger than the padded input %dx%d (input %dx%d, padding %d)",
                           g->k, g->k, padded_h, padded_w, g->h, g->w, g->p);
    g->oh = (padded_h - g->k) / g->s + 1;
    g->ow = (padded_w - g->k) / g->s + 1;
    return LENET_OK;
}

static lenet_status conv2d_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    const conv2d *c = (const conv2d *)l;
    lenet_conv_geom g;
    lenet_status st = conv2d_geometry(c, in, &g);
    if (st != LENET_OK)
        return st;
    if (l->n_params > 0 && in->dim[0] != c->plan.g.c)
        return lenet__fail(LENET_ESHAPE, "Conv2d: input has %d channels, weights expect %d", in->dim[0], c->plan.g.c);
    *out = (lenet_shape){.ndim = 3, .dim = {c->out_channels, g.oh, g.ow}};
    return LENET_OK;
}

static lenet_status conv2d_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    conv2d *c = (conv2d *)l;
    lenet_conv_geom g;
    lenet_status st = conv2d_geometry(c, &l->in, &g);
    if (st != LENET_OK)
        return st;
    c->plan = (lenet_conv_plan){.g = g, .oc = c->out_channels, .method = LENET_CONV_DIRECT};
    int k = c->kernel_size;
    specs[0] = (lenet_param_spec){.suffix = "weight", .ndim = 4, .shape = {c->out_channels, g.c, k, k}, .trainable = true};
    specs[1] = (lenet_param_spec){.suffix = "bias", .ndim = 1, .shape = {c->out_channels}, .trainable = true};
    *count = 2;
    return LENET_OK;
}

static void conv2d_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    const conv2d *c = (const conv2d *)l;
    size_t k2 = (size_t)c->kernel_size * c->kernel_size;
    lenet__init_weight_bias(l, scheme, rng, (size_t)c->plan.g.c * k2, (size_t)c->out_channels * k2);
}

/* Scratch, strategy and data layout are the kernels' (lib/kernels/conv_plan.c). */
static size_t conv2d_workspace(const lenet_layer *l, int n)
{
    return lenet__conv_workspace(&((const conv2d *)l)->plan, n);
}

/* y = W * x + b */
static void conv2d_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    lenet__conv_forward(&((const conv2d *)l)->plan, p->n, p->x, l->param[0], l->param[1], y, p->work);
}

/* dW += sum over samples and pixels of x (shifted by the tap) * dY;  db += sum of dY;  dX = W^T . dY */
static void conv2d_backward(const lenet_layer *l, const lenet_pass *p)
{
    lenet__conv_backward(&((const conv2d *)l)->plan, p->n, p->x, p->dy, l->param[0], p->grads[0], p->grads[1], p->dx,
                         p->work);
}

/* Each output unit reads c*k*k inputs plus the bias. */
static size_t conv2d_connections(const lenet_layer *l)
{
    const conv2d *c = (const conv2d *)l;
    return l->out_size * ((size_t)c->plan.g.c * c->kernel_size * c->kernel_size + 1);
}

static const lenet_layer_ops conv2d_ops = {
    .name = "Conv2d",
    .infer_shape = conv2d_infer_shape,
    .setup = conv2d_setup,
    .init = conv2d_init,
    .workspace = conv2d_workspace,
    .forward = conv2d_forward,
    .backward = conv2d_backward,
    .connections = conv2d_connections,
    .fold_affine = lenet__fold_affine_weight_bias,
    .gn_rule = lenet__gn_squares,
};

lenet_layer *lenet_conv2d(int out_channels, int kernel_size, int stride, int padding)
{
    if (out_channels < 1 || kernel_size < 1 || stride < 1 || padding < 0)
        return lenet__fail_null(LENET_EINVAL,
                                "Conv2d: out_channels %d, kernel_size %d, stride %d must be >= 1 and padding %d >= 0",
                                out_channels, kernel_size, stride, padding);
    double args[] = {out_channels, kernel_size, stride, padding};
    conv2d *c = lenet__layer_alloc(sizeof *c, &conv2d_ops, 4, args);
    if (!c)
        return NULL;
    c->out_channels = out_channels;
    c->kernel_size = kernel_size;
    c->stride = stride;
    c->padding = padding;
    return &c->base;
}
