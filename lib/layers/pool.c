/* AvgPool2d and MaxPool2d: one state struct and shape logic, two ops tables. */
#include "kernels/kernels.h"
#include "layers/layer.h"

typedef struct pool2d {
    lenet_layer base;
    int kernel_size, stride;
    lenet_conv_geom geom;
} pool2d;

static lenet_status pool_geometry(const pool2d *pl, const lenet_shape *in, lenet_conv_geom *g)
{
    lenet_status st = lenet__expect_image(&pl->base, in);
    if (st != LENET_OK)
        return st;
    *g = (lenet_conv_geom){.c = in->dim[0], .h = in->dim[1], .w = in->dim[2], .k = pl->kernel_size,
                           .s = pl->stride, .p = 0};
    if (g->h < g->k || g->w < g->k)
        return lenet__fail(LENET_ESHAPE, "%s: kernel %dx%d is larger than the input %dx%d", pl->base.ops->name, g->k,
                           g->k, g->h, g->w);
    g->oh = (g->h - g->k) / g->s + 1;
    g->ow = (g->w - g->k) / g->s + 1;
    return LENET_OK;
}

static lenet_status pool_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    lenet_conv_geom g;
    lenet_status st = pool_geometry((const pool2d *)l, in, &g);
    if (st != LENET_OK)
        return st;
    *out = (lenet_shape){.ndim = 3, .dim = {g.c, g.oh, g.ow}};
    return LENET_OK;
}

static lenet_status pool_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    (void)specs;
    *count = 0;
    pool2d *pl = (pool2d *)l;
    return pool_geometry(pl, &l->in, &pl->geom);
}

static size_t pool_connections(const lenet_layer *l)
{
    const pool2d *pl = (const pool2d *)l;
    return l->out_size * (size_t)pl->kernel_size * pl->kernel_size;
}

static void avgpool_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const pool2d *pl = (const pool2d *)l;
    lenet__avgpool_forward(&pl->geom, (size_t)p->n * pl->geom.c, p->x, y);
}

/* dx = dy / k^2 spread over each window */
static void avgpool_backward(const lenet_layer *l, const lenet_pass *p)
{
    const pool2d *pl = (const pool2d *)l;
    if (p->dx)
        lenet__avgpool_backward(&pl->geom, (size_t)p->n * pl->geom.c, p->dy, p->dx);
}

static void maxpool_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const pool2d *pl = (const pool2d *)l;
    lenet__maxpool_forward(&pl->geom, (size_t)p->n * pl->geom.c, p->x, y);
}

/* dx = dy routed to each window's (first) maximum */
static void maxpool_backward(const lenet_layer *l, const lenet_pass *p)
{
    const pool2d *pl = (const pool2d *)l;
    if (p->dx)
        lenet__maxpool_backward(&pl->geom, (size_t)p->n * pl->geom.c, p->x, p->dy, p->dx);
}

/* Without overlap (stride >= kernel) every input reaches at most one output. */
static lenet_gn_rule pool_gn_rule(const lenet_layer *l)
{
    const pool2d *pl = (const pool2d *)l;
    return pl->stride >= pl->kernel_size ? LENET_GN_ONE_TO_ONE : LENET_GN_NONE;
}

static const lenet_layer_ops avgpool_ops = {
    .name = "AvgPool2d",
    .infer_shape = pool_infer_shape,
    .setup = pool_setup,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .connections = pool_connections,
    .gn_rule = pool_gn_rule,
};

static const lenet_layer_ops maxpool_ops = {
    .name = "MaxPool2d",
    .infer_shape = pool_infer_shape,
    .setup = pool_setup,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .connections = pool_connections,
    .gn_rule = pool_gn_rule,
};

static lenet_layer *pool_create(const lenet_layer_ops *ops, int kernel_size, int stride)
{
    if (kernel_size < 1 || stride < 1)
        return lenet__fail_null(LENET_EINVAL, "%s: kernel_size %d and stride %d must be >= 1", ops->name, kernel_size,
                                stride);
    double args[] = {kernel_size, stride};
    pool2d *pl = lenet__layer_alloc(sizeof *pl, ops, 2, args);
    if (!pl)
        return NULL;
    pl->kernel_size = kernel_size;
    pl->stride = stride;
    return &pl->base;
}

lenet_layer *lenet_avgpool2d(int kernel_size, int stride)
{
    return pool_create(&avgpool_ops, kernel_size, stride);
}

lenet_layer *lenet_maxpool2d(int kernel_size, int stride)
{
    return pool_create(&maxpool_ops, kernel_size, stride);
}
