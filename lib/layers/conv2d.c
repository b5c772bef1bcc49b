/* Conv2d: y = W * x + b over NCHW, through direct vector kernels (dispatch.c): one sample per lane for full chunks,
 * output channels or columns across the lanes for a few samples. */
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
    specs[0] = (lenet_param_spec){.suffix = "weight", .ndim = 4, .shape = {c->out_channels, c->geom.c, k, k}, .trainable = true};
    specs[1] = (lenet_param_spec){.suffix = "bias", .ndim = 1, .shape = {c->out_channels}, .trainable = true};
    *count = 2;
    return LENET_OK;
}

static void conv2d_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    const conv2d *c = (const conv2d *)l;
    size_t k2 = (size_t)c->kernel_size * c->kernel_size;
    lenet__init_weight_bias(l, scheme, rng, (size_t)c->geom.c * k2, (size_t)c->out_channels * k2);
}

/* Output channels rounded up to the widest conv vector any kernel table uses, so workspace sizes do not depend on the
 * table chosen at run time. */
static size_t oc_padded(const conv2d *c)
{
    return ((size_t)c->out_channels + LENET_MAX_VECTOR_FLOATS - 1) / LENET_MAX_VECTOR_FLOATS * LENET_MAX_VECTOR_FLOATS;
}

/* Rows of the row-vectorized layouts: the output width rounded up to the widest row vector, plus the
 * kernel's reach; sized for the widest table so workspace does not depend on the one chosen at run time. */
static int row_stride(const lenet_conv_geom *g, int width)
{
    return (g->ow + width - 1) / width * width + g->k - 1;
}

/* Fewest samples for which the sample-vectorized kernels (one sample per lane) beat the per-sample ones: below it
 * most lanes would multiply zeros.  Fixed, so the path taken depends on the chunk, never on the thread count. */
#define LANES_MIN 12

static bool use_lanes(const lenet_conv_geom *g, int n)
{
    return g->s == 1 && n >= LANES_MIN;
}

/* Border that turns the input gradient into a forward convolution of the output gradient (k - 1 - p), when it
 * exists. */
static int dx_border(const lenet_conv_geom *g)
{
    return g->k - 1 - g->p;
}

/* Workspace layout for n samples.  Channel-vectorized path: packed weights | padded inputs | transposed output
 * gradients | packed weight gradient.  Row-vectorized path: padded inputs with wide rows | output gradients with
 * wide rows.  Both: im2col columns of one sample (for dx).  Sample-vectorized path: input lane tensor | output
 * (gradient) lane tensor, with the border dx needs | flipped weights | input gradient lane tensor. */
typedef struct conv_work {
    float *wpack, *xp, *dyt, *dwpack, *cols, *xrows, *dyrows, *xt, *yt, *wflip, *dxt;
} conv_work;

static size_t work_layout(const conv2d *c, int n, float *base, conv_work *w)
{
    const lenet_conv_geom *g = &c->geom;
    const size_t taps = (size_t)g->c * g->k * g->k, ocpad = oc_padded(c);
    const size_t xsize = (size_t)g->c * (g->h + 2 * g->p) * (g->w + 2 * g->p), ohw = (size_t)g->oh * g->ow;
    const size_t hp = (size_t)g->h + 2 * g->p, stride = (size_t)row_stride(g, LENET_MAX_VECTOR_FLOATS), dstride = stride - g->k + 1;
    const size_t q = dx_border(g) > 0 ? (size_t)dx_border(g) : 0;
    const size_t sizes[] = {(taps + 1) * ocpad, (size_t)n * xsize, (size_t)n * ohw * ocpad, (taps + 1) * ocpad,
                            taps * ohw, (size_t)n * g->c * hp * stride + LENET_MAX_VECTOR_FLOATS,
                            (size_t)n * c->out_channels * g->oh * dstride + LENET_MAX_VECTOR_FLOATS,
                            xsize * LENET_LANES,
                            (size_t)c->out_channels * (g->oh + 2 * q) * (g->ow + 2 * q) * LENET_LANES,
                            taps * c->out_channels, (size_t)g->c * g->h * g->w * LENET_LANES};
    float **slots[] = {&w->wpack, &w->xp, &w->dyt, &w->dwpack, &w->cols, &w->xrows, &w->dyrows,
                       &w->xt, &w->yt, &w->wflip, &w->dxt};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (base)
            *slots[i] = base + total;
        total += (sizes[i] + LENET_MAX_VECTOR_FLOATS - 1) / LENET_MAX_VECTOR_FLOATS * LENET_MAX_VECTOR_FLOATS;
    }
    return total;
}

static size_t conv2d_workspace(const lenet_layer *l, int n)
{
    return work_layout((const conv2d *)l, n, NULL, &(conv_work){0});
}

/* y = W * x + b, one sample at a time through a vector kernel: output channels across the lanes, or output
 * columns across the lanes when that fills more of them (few channels, wide rows). */
static void conv2d_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const conv2d *c = (const conv2d *)l;
    const lenet_conv_geom *g = &c->geom;
    const lenet_kernels *kern = lenet__kernels();
    conv_work w;
    work_layout(c, 1, p->work, &w);
    if (use_lanes(g, p->n)) {
        for (int i0 = 0; i0 < p->n; i0 += LENET_LANES) {
            const int m = p->n - i0 < LENET_LANES ? p->n - i0 : LENET_LANES;
            kern->to_lanes(m, g->c, g->h, g->w, g->p, p->x + (size_t)i0 * l->in_size, w.xt);
            kern->conv_forward_lanes(g, c->out_channels, w.xt, l->param[0], l->param[1], w.yt);
            kern->from_lanes(m, l->out_size, w.yt, y + (size_t)i0 * l->out_size);
        }
        return;
    }
    if (lenet__conv_prefers_rows(kern, g, c->out_channels)) {
        const int stride = row_stride(g, kern->row_width);
        for (int i = 0; i < p->n; i++) {
            lenet__conv_pad_input_rows(g, p->x + (size_t)i * l->in_size, w.xrows, stride);
            kern->conv_forward_rows(g, c->out_channels, w.xrows, stride, l->param[0], l->param[1],
                                    y + (size_t)i * l->out_size);
        }
        return;
    }
    lenet__conv_pack_weights(c->out_channels, g->c, g->k, kern->vector_width, l->param[0], l->param[1], w.wpack);
    for (int i = 0; i < p->n; i++) {
        const float *xi = p->x + (size_t)i * l->in_size;
        if (g->p > 0) {
            lenet__conv_pad_input(g, xi, w.xp);
            xi = w.xp;
        }
        kern->conv_forward(g, c->out_channels, xi, w.wpack, y + (size_t)i * l->out_size);
    }
}

/* dW through the row-vectorized kernel: inputs and output gradients copied into rows padded to the vector width. */
static void grad_weight_rows(const conv2d *c, const lenet_pass *p, const lenet_kernels *kern, const conv_work *w)
{
    const lenet_layer *l = &c->base;
    const lenet_conv_geom *g = &c->geom;
    const int oc = c->out_channels, stride = row_stride(g, kern->row_width), dstride = stride - g->k + 1;
    const size_t xsize = (size_t)g->c * (g->h + 2 * g->p) * stride, dsize = (size_t)oc * g->oh * dstride;
    memset(w->dyrows, 0, (size_t)p->n * dsize * sizeof(float));
    for (int i = 0; i < p->n; i++) {
        lenet__conv_pad_input_rows(g, p->x + (size_t)i * l->in_size, w->xrows + (size_t)i * xsize, stride);
        const float *dyi = p->dy + (size_t)i * l->out_size;
        for (int r = 0; r < oc * g->oh; r++)
            memcpy(w->dyrows + (size_t)i * dsize + (size_t)r * dstride, dyi + (size_t)r * g->ow,
                   (size_t)g->ow * sizeof(float));
    }
    kern->conv_grad_weight_rows(g, oc, p->n, w->xrows, stride, w->dyrows, dstride, p->grads[0]);
}

/* dW through the channel-vectorized kernel: output gradients transposed pixel-major, weights packed tap-major. */
static void grad_weight_channels(const conv2d *c, const lenet_pass *p, const lenet_kernels *kern, const conv_work *w)
{
    const lenet_layer *l = &c->base;
    const lenet_conv_geom *g = &c->geom;
    const int oc = c->out_channels, vw = kern->vector_width, ocpad = (oc + vw - 1) / vw * vw;
    const int ckk = g->c * g->k * g->k, ohw = g->oh * g->ow;
    const size_t xsize = (size_t)g->c * (g->h + 2 * g->p) * (g->w + 2 * g->p);
    const float *xp = p->x;
    if (g->p > 0) {
        for (int i = 0; i < p->n; i++)
            lenet__conv_pad_input(g, p->x + (size_t)i * l->in_size, w->xp + (size_t)i * xsize);
        xp = w->xp;
    }
    memset(w->dyt, 0, (size_t)p->n * ohw * ocpad * sizeof(float));
    for (int i = 0; i < p->n; i++) {
        const float *dyi = p->dy + (size_t)i * l->out_size;
        float *dti = w->dyt + (size_t)i * ohw * ocpad;
        for (int q = 0; q < ohw; q++)
            for (int o = 0; o < oc; o++)
                dti[(size_t)q * ocpad + o] = dyi[(size_t)o * ohw + q];
    }
    memset(w->dwpack, 0, (size_t)ckk * ocpad * sizeof(float));
    kern->conv_grad_weight(g, oc, p->n, xp, w->dyt, w->dwpack);
    for (int o = 0; o < oc; o++)
        for (int t = 0; t < ckk; t++)
            p->grads[0][(size_t)o * ckk + t] += w->dwpack[(size_t)t * ocpad + o];
}

/* The sample-vectorized backward of up to LENET_LANES samples starting at i0.  dW as in conv2d_backward; dX as the
 * forward convolution of dY, bordered by k - 1 - p, with the weights flipped and their channels swapped:
 * dX[ci][y][x] = sum over (o, ky, kx) of W[o][ci][k-1-ky][k-1-kx] dYb[o][y + ky][x + kx]. */
static void backward_lanes(const conv2d *c, const lenet_pass *p, int i0, const lenet_kernels *kern,
                           const conv_work *w)
{
    const lenet_layer *l = &c->base;
    const lenet_conv_geom *g = &c->geom;
    const int m = p->n - i0 < LENET_LANES ? p->n - i0 : LENET_LANES, q = dx_border(g);
    const bool lanes_dx = p->dx && q >= 0;
    const int border = lanes_dx ? q : 0;
    kern->to_lanes(m, g->c, g->h, g->w, g->p, p->x + (size_t)i0 * l->in_size, w->xt);
    kern->to_lanes(m, c->out_channels, g->oh, g->ow, border, p->dy + (size_t)i0 * l->out_size, w->yt);
    kern->conv_grad_weight_lanes(g, c->out_channels, w->xt, w->yt, border, p->grads[0]);
    if (!lanes_dx)
        return;
    const lenet_conv_geom t = {.c = c->out_channels, .h = g->oh, .w = g->ow, .k = g->k, .s = 1, .p = q,
                               .oh = g->h, .ow = g->w};
    kern->conv_forward_lanes(&t, g->c, w->yt, w->wflip, NULL, w->dxt);
    kern->from_lanes(m, l->in_size, w->dxt, p->dx + (size_t)i0 * l->in_size);
}

/* wflip (c, oc, k, k) = weight (oc, c, k, k) with channels swapped and each kernel turned by 180 degrees. */
static void flip_weights(const conv2d *c, const float *weight, float *wflip)
{
    const int oc = c->out_channels, ch = c->geom.c, k = c->geom.k, kk = k * k;
    for (int o = 0; o < oc; o++)
        for (int ci = 0; ci < ch; ci++)
            for (int t = 0; t < kk; t++)
                wflip[((size_t)ci * oc + o) * kk + (kk - 1 - t)] = weight[((size_t)o * ch + ci) * kk + t];
}

/* dW += sum over samples and pixels of x (shifted by the tap) * dY;  db += sum of dY;
 * dX = col2im(W^T . dY) per sample, or the flipped-kernel convolution of backward_lanes. */
static void conv2d_backward(const lenet_layer *l, const lenet_pass *p)
{
    const conv2d *c = (const conv2d *)l;
    const lenet_conv_geom *g = &c->geom;
    const lenet_kernels *kern = lenet__kernels();
    const int oc = c->out_channels, ckk = g->c * g->k * g->k, ohw = g->oh * g->ow;
    conv_work w;
    work_layout(c, p->n, p->work, &w);

    lenet__sum_rows_into((size_t)p->n * oc, (size_t)ohw, p->dy, p->grads[1], (size_t)oc);
    /* dX through the lanes needs a non-negative border k - 1 - p; wider padding takes the GEMM below. */
    const bool lanes = use_lanes(g, p->n), lanes_dx = lanes && dx_border(g) >= 0;
    if (lanes) {
        if (p->dx && lanes_dx)
            flip_weights(c, l->param[0], w.wflip);
        for (int i0 = 0; i0 < p->n; i0 += LENET_LANES)
            backward_lanes(c, p, i0, kern, &w);
    } else if (lenet__conv_prefers_rows(kern, g, oc)) {
        grad_weight_rows(c, p, kern, &w);
    } else {
        grad_weight_channels(c, p, kern, &w);
    }
    if (p->dx && !lanes_dx) {
        for (int i = 0; i < p->n; i++) {
            const float *dyi = p->dy + (size_t)i * l->out_size;
            lenet__sgemm(true, false, ckk, ohw, oc, 1.0f, l->param[0], ckk, dyi, ohw, 0.0f, w.cols, ohw);
            lenet__col2im(g, w.cols, p->dx + (size_t)i * l->in_size);
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
