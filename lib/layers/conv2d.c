/* Conv2d: y = W * x + b over NCHW, through im2col and sgemm per sample. */
#include <stdio.h>
#include <string.h>

#include "kernels/kernels.h"
#include "layers/layer.h"

typedef struct conv2d {
    lenet_layer base;
    int out_channels, kernel_size, stride, padding;
    lenet_conv_geom geom; /* set by setup */
} conv2d;

static lenet_status conv2d_geometry(const conv2d *c, const lenet_shape *in, lenet_conv_geom *g)
{
    lenet_status st = lenet__expect_image(&c->base, in);
    if (st != LENET_OK)
        return st;
    *g = (lenet_conv_geom){.c = in->dim[0], .h = in->dim[1], .w = in->dim[2],
                           .k = c->kernel_size, .s = c->stride, .p = c->padding};
    int padded_h = g->h + 2 * g->p, padded_w = g->w + 2 * g->p;
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
    if (l->n_params > 0 && in->dim[0] != c->geom.c)
        return lenet__fail(LENET_ESHAPE, "Conv2d: input has %d channels, weights expect %d", in->dim[0], c->geom.c);
    *out = (lenet_shape){.ndim = 3, .dim = {c->out_channels, g.oh, g.ow}};
    return LENET_OK;
}

static lenet_status conv2d_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    conv2d *c = (conv2d *)l;
    lenet_status st = conv2d_geometry(c, &l->in, &c->geom);
    if (st != LENET_OK)
        return st;
    int k = c->kernel_size;
    specs[0] = (lenet_param_spec){"weight", 4, {c->out_channels, c->geom.c, k, k}, true};
    specs[1] = (lenet_param_spec){"bias", 1, {c->out_channels}, true};
    *count = 2;
    return LENET_OK;
}

static void conv2d_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    const conv2d *c = (const conv2d *)l;
    size_t k2 = (size_t)c->kernel_size * c->kernel_size;
    lenet__init_weight_bias(l, scheme, rng, (size_t)c->geom.c * k2, (size_t)c->out_channels * k2);
}

static size_t cols_size(const conv2d *c)
{
    const lenet_conv_geom *g = &c->geom;
    return (size_t)g->c * g->k * g->k * g->oh * g->ow;
}

static size_t conv2d_workspace(const lenet_layer *l, int n)
{
    (void)n;
    return cols_size((const conv2d *)l);
}

/* Per sample: cols = im2col(x); y (oc, oh*ow) = W (oc, c*k*k) . cols + b */
static void conv2d_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const conv2d *c = (const conv2d *)l;
    const lenet_conv_geom *g = &c->geom;
    int ckk = g->c * g->k * g->k, ohw = g->oh * g->ow;
    for (int i = 0; i < p->n; i++) {
        float *yi = y + (size_t)i * l->out_size;
        lenet__im2col(g, p->x + (size_t)i * l->in_size, p->work);
        lenet__sgemm(false, false, c->out_channels, ohw, ckk, 1.0f, l->param[0], ckk, p->work, ohw, 0.0f, yi, ohw);
        lenet__add_bias_rows((size_t)c->out_channels, (size_t)ohw, l->param[1], (size_t)c->out_channels, yi);
    }
}

/* Per sample: dW += dY . cols^T;  db += sum over positions of dY;  dcols = W^T . dY, dx = col2im(dcols). */
static void conv2d_backward(const lenet_layer *l, const lenet_pass *p)
{
    const conv2d *c = (const conv2d *)l;
    const lenet_conv_geom *g = &c->geom;
    int ckk = g->c * g->k * g->k, ohw = g->oh * g->ow, oc = c->out_channels;
    for (int i = 0; i < p->n; i++) {
        const float *dyi = p->dy + (size_t)i * l->out_size;
        lenet__im2col(g, p->x + (size_t)i * l->in_size, p->work);
        lenet__sgemm(false, true, oc, ckk, ohw, 1.0f, dyi, ohw, p->work, ohw, 1.0f, p->grads[0], ckk);
        lenet__sum_rows_into((size_t)oc, (size_t)ohw, dyi, p->grads[1], (size_t)oc);
        if (p->dx) {
            lenet__sgemm(true, false, ckk, ohw, oc, 1.0f, l->param[0], ckk, dyi, ohw, 0.0f, p->work, ohw);
            lenet__col2im(g, p->work, p->dx + (size_t)i * l->in_size);
        }
    }
}

/* Each output unit reads c*k*k inputs plus the bias. */
static size_t conv2d_connections(const lenet_layer *l)
{
    const conv2d *c = (const conv2d *)l;
    return l->out_size * ((size_t)c->geom.c * c->kernel_size * c->kernel_size + 1);
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
