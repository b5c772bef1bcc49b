/* A convolution layer's passes behind one entry point: which kernels run them, the layout of the scratch those
 * kernels read, and the packing, padding, transposing and flipping that fills it.  The layers (Conv2d,
 * PartialConv2d) keep only shapes and parameters.
 *
 * Method LENET_CONV_DIRECT takes, per call, the strategy that fills the most lanes of the table's vectors:
 *   lanes     stride 1 and at least LANES_MIN samples: one sample per lane (conv_*_lanes), whatever the layer's shape;
 *   rows      stride 1, output columns across the lanes (conv_*_rows), when that fills more of them than channels do
 *             (few channels, wide rows: LeNet's first layer);
 *   channels  output channels across the lanes (conv_forward, conv_grad_weight) otherwise.
 * The input gradient is the lanes' flipped-kernel convolution where the padding allows it (p <= k - 1), else the
 * transpose of im2col: dX = col2im(W^T . dY) per sample.
 * Method LENET_CONV_GEMM runs every pass as im2col and lenet__sgemm products, one sample at a time.
 * Letters follow the math: n samples, c input channels, oc output channels, k kernel, s stride, p padding. */
#include <string.h>

#include "kernels/kernels.h"

/* Fewest samples for which the sample-vectorized kernels (one sample per lane) beat the per-sample ones: below it
 * most lanes would multiply zeros.  Fixed, so the path taken depends on the chunk, never on the thread count. */
#define LANES_MIN 12
_Static_assert(LANES_MIN >= 1 && LANES_MIN <= LENET_LANES, "the lanes must be reachable by one chunk");

static size_t round_up(size_t count, size_t multiple)
{
    return (count + multiple - 1) / multiple * multiple;
}

/* True when the row-vectorized kernels fill more lanes than the channel-vectorized ones for this layer. */
static bool prefers_rows(const lenet_kernels *k, const lenet_conv_geom *g, int oc)
{
    if (g->s != 1)
        return false;
    const int rw = k->row_width, cw = k->vector_width;
    /* Compare the fraction of useful lanes: ow of round_up(ow, rw) against oc of round_up(oc, cw). */
    long rows_used = (long)g->ow * ((oc + cw - 1) / cw * cw), channels_used = (long)oc * ((g->ow + rw - 1) / rw * rw);
    return rows_used > channels_used;
}

lenet_conv_strategy lenet__conv_strategy(const lenet_conv_plan *cp, const lenet_kernels *k, int n)
{
    if (cp->method == LENET_CONV_GEMM)
        return LENET_CONV_IM2COL;
    if (cp->g.s == 1 && n >= LANES_MIN)
        return LENET_CONV_LANES;
    return prefers_rows(k, &cp->g, cp->oc) ? LENET_CONV_ROWS : LENET_CONV_CHANNELS;
}

/* Border that turns the input gradient into a forward convolution of the output gradient (k - 1 - p), when it
 * exists (>= 0). */
static int dx_border(const lenet_conv_geom *g)
{
    return g->k - 1 - g->p;
}

/* Rows of the row-vectorized layouts: the output width rounded up to `width` floats, plus the kernel's reach. */
static int row_stride(const lenet_conv_geom *g, int width)
{
    return (g->ow + width - 1) / width * width + g->k - 1;
}

/* ---- layout ---- */

/* The scratch of one strategy, each buffer starting on a multiple of LENET_MAX_VECTOR_FLOATS floats.
 *   lanes     xt: input lane tensor | yt: output (gradient) lane tensor, with the border dX needs | wflip: flipped
 *             weights | dxt: input gradient lane tensor | cols when dX cannot take the lanes;
 *   rows      xrows: padded inputs with wide rows | dyrows: output gradients with wide rows (a vector of slack after
 *             each) | cols;
 *   channels  wpack: packed weights and bias | xp: padded inputs | dyt: output gradients pixel-major | dwpack: packed
 *             weight gradient | cols;
 *   im2col    cols.
 * cols: the im2col columns of one sample (c*k*k rows, oh*ow columns), reused for dX's. */
typedef struct conv_work {
    float *xt, *yt, *wflip, *dxt, *xrows, *dyrows, *wpack, *xp, *dyt, *dwpack, *cols;
} conv_work;

/* Lays out strategy `s` for n samples from `base` (NULL: only counts) and returns its floats.  Sized for the widest
 * table (LENET_MAX_VECTOR_FLOATS), so the size does not depend on the table chosen at run time. */
static size_t layout(const lenet_conv_plan *cp, lenet_conv_strategy s, int n, float *base, conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const size_t oc = (size_t)cp->oc, taps = (size_t)g->c * g->k * g->k, ohw = (size_t)g->oh * g->ow;
    const size_t hp = (size_t)g->h + 2 * g->p, wp = (size_t)g->w + 2 * g->p, xsize = (size_t)g->c * hp * wp;
    const size_t ocpad = round_up(oc, LENET_MAX_VECTOR_FLOATS), cols = taps * ohw;
    size_t sizes[5] = {0};
    float **slots[5] = {NULL};
    int count = 0;
#define SLOT(buffer, floats) (slots[count] = &w->buffer, sizes[count++] = (floats))
    switch (s) {
    case LENET_CONV_LANES: {
        const size_t q = dx_border(g) > 0 ? (size_t)dx_border(g) : 0;
        SLOT(xt, xsize * LENET_LANES);
        SLOT(yt, oc * (g->oh + 2 * q) * (g->ow + 2 * q) * LENET_LANES);
        SLOT(wflip, taps * oc);
        SLOT(dxt, (size_t)g->c * g->h * g->w * LENET_LANES);
        if (dx_border(g) < 0)
            SLOT(cols, cols);
        break;
    }
    case LENET_CONV_ROWS: {
        const size_t stride = (size_t)row_stride(g, LENET_MAX_VECTOR_FLOATS), dstride = stride - g->k + 1;
        SLOT(xrows, (size_t)n * g->c * hp * stride + LENET_MAX_VECTOR_FLOATS);
        SLOT(dyrows, (size_t)n * oc * g->oh * dstride + LENET_MAX_VECTOR_FLOATS);
        SLOT(cols, cols);
        break;
    }
    case LENET_CONV_CHANNELS:
        SLOT(wpack, (taps + 1) * ocpad);
        SLOT(xp, (size_t)n * xsize);
        SLOT(dyt, (size_t)n * ohw * ocpad);
        SLOT(dwpack, taps * ocpad);
        SLOT(cols, cols);
        break;
    case LENET_CONV_IM2COL:
        SLOT(cols, cols);
        break;
    }
#undef SLOT
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        if (base)
            *slots[i] = base + total;
        total += round_up(sizes[i], LENET_MAX_VECTOR_FLOATS);
    }
    return total;
}

size_t lenet__conv_workspace(const lenet_conv_plan *cp, int n)
{
    conv_work unused;
    if (cp->method == LENET_CONV_GEMM)
        return layout(cp, LENET_CONV_IM2COL, n, NULL, &unused);
    /* Every strategy a call with n or fewer samples can take on any table: the lanes from LANES_MIN samples on,
     * rows and channels below it when the lanes are possible (stride 1), for every n otherwise. */
    const bool lanes = cp->g.s == 1 && n >= LANES_MIN;
    const int few = lanes ? LANES_MIN - 1 : n;
    size_t need = layout(cp, LENET_CONV_CHANNELS, few, NULL, &unused);
    if (cp->g.s == 1) {
        const size_t rows = layout(cp, LENET_CONV_ROWS, few, NULL, &unused);
        need = rows > need ? rows : need;
    }
    if (lanes) {
        const size_t lanes_need = layout(cp, LENET_CONV_LANES, n, NULL, &unused);
        need = lanes_need > need ? lanes_need : need;
    }
    return need;
}

/* ---- data layouts the kernels read ---- */

void lenet__conv_pack_weights(int oc, int c, int k, int vw, const float *weight, const float *bias, float *wpack)
{
    const int ocpad = (oc + vw - 1) / vw * vw;
    const size_t taps = (size_t)c * k * k;
    memset(wpack, 0, (taps + 1) * ocpad * sizeof(float));
    for (int o = 0; o < oc; o++)
        for (size_t t = 0; t < taps; t++)
            wpack[t * ocpad + o] = weight[(size_t)o * taps + t];
    if (bias)
        memcpy(wpack + taps * ocpad, bias, (size_t)oc * sizeof(float));
}

void lenet__conv_pad_input(const lenet_conv_geom *g, const float *x, float *xp)
{
    const int hp = g->h + 2 * g->p, wp = g->w + 2 * g->p;
    if (g->p == 0) {
        memcpy(xp, x, (size_t)g->c * g->h * g->w * sizeof(float));
        return;
    }
    memset(xp, 0, (size_t)g->c * hp * wp * sizeof(float));
    for (int ci = 0; ci < g->c; ci++)
        for (int y = 0; y < g->h; y++)
            memcpy(xp + ((size_t)ci * hp + y + g->p) * wp + g->p, x + ((size_t)ci * g->h + y) * g->w,
                   (size_t)g->w * sizeof(float));
}

void lenet__conv_pad_input_rows(const lenet_conv_geom *g, const float *x, float *xp, int stride)
{
    const int hp = g->h + 2 * g->p;
    memset(xp, 0, (size_t)g->c * hp * stride * sizeof(float));
    for (int ci = 0; ci < g->c; ci++)
        for (int y = 0; y < g->h; y++)
            memcpy(xp + ((size_t)ci * hp + y + g->p) * stride + g->p, x + ((size_t)ci * g->h + y) * g->w,
                   (size_t)g->w * sizeof(float));
}

/* wflip (c, oc, k, k) = weight (oc, c, k, k) with channels swapped and each kernel turned by 180 degrees. */
static void flip_weights(const lenet_conv_geom *g, int oc, const float *weight, float *wflip)
{
    const int ch = g->c, kk = g->k * g->k;
    for (int o = 0; o < oc; o++)
        for (int ci = 0; ci < ch; ci++)
            for (int t = 0; t < kk; t++)
                wflip[((size_t)ci * oc + o) * kk + (kk - 1 - t)] = weight[((size_t)o * ch + ci) * kk + t];
}

/* ---- forward: y = W * x + b ---- */

/* Up to LENET_LANES samples at a time: to the lane layout, one convolution for all of them, back. */
static void forward_lanes(const lenet_conv_plan *cp, int n, const float *x, const float *weight, const float *bias,
                          float *y, const lenet_kernels *kern, const conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)cp->oc * g->oh * g->ow;
    for (int i0 = 0; i0 < n; i0 += LENET_LANES) {
        const int m = n - i0 < LENET_LANES ? n - i0 : LENET_LANES;
        kern->to_lanes(m, g->c, g->h, g->w, g->p, x + (size_t)i0 * in_size, w->xt);
        kern->conv_forward_lanes(g, cp->oc, w->xt, weight, bias, w->yt);
        kern->from_lanes(m, out_size, w->yt, y + (size_t)i0 * out_size);
    }
}

/* One sample at a time, output columns across the lanes: each input copied into rows padded to the vector width. */
static void forward_rows(const lenet_conv_plan *cp, int n, const float *x, const float *weight, const float *bias,
                         float *y, const lenet_kernels *kern, const conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)cp->oc * g->oh * g->ow;
    const int stride = row_stride(g, kern->row_width);
    for (int i = 0; i < n; i++) {
        lenet__conv_pad_input_rows(g, x + (size_t)i * in_size, w->xrows, stride);
        kern->conv_forward_rows(g, cp->oc, w->xrows, stride, weight, bias, y + (size_t)i * out_size);
    }
}

/* One sample at a time, output channels across the lanes: weights packed tap-major once, each input padded. */
static void forward_channels(const lenet_conv_plan *cp, int n, const float *x, const float *weight, const float *bias,
                             float *y, const lenet_kernels *kern, const conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)cp->oc * g->oh * g->ow;
    lenet__conv_pack_weights(cp->oc, g->c, g->k, kern->vector_width, weight, bias, w->wpack);
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * in_size;
        if (g->p > 0) {
            lenet__conv_pad_input(g, xi, w->xp);
            xi = w->xp;
        }
        kern->conv_forward(g, cp->oc, xi, w->wpack, y + (size_t)i * out_size);
    }
}

/* Per sample: y (oc, oh*ow) = W (oc, c*k*k) . cols (c*k*k, oh*ow) + b. */
static void forward_im2col(const lenet_conv_plan *cp, int n, const float *x, const float *weight, const float *bias,
                           float *y, const conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const int oc = cp->oc, ckk = g->c * g->k * g->k, ohw = g->oh * g->ow;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)oc * ohw;
    for (int i = 0; i < n; i++) {
        float *yi = y + (size_t)i * out_size;
        lenet__im2col(g, x + (size_t)i * in_size, w->cols);
        lenet__sgemm(false, false, oc, ohw, ckk, 1.0f, weight, ckk, w->cols, ohw, 0.0f, yi, ohw);
        lenet__add_bias_rows((size_t)oc, (size_t)ohw, bias, (size_t)oc, yi);
    }
}

void lenet__conv_forward(const lenet_conv_plan *cp, int n, const float *x, const float *weight, const float *bias,
                         float *y, float *work)
{
    const lenet_kernels *kern = lenet__kernels();
    const lenet_conv_strategy s = lenet__conv_strategy(cp, kern, n);
    conv_work w;
    /* One sample's scratch is enough for the per-sample strategies. */
    layout(cp, s, s == LENET_CONV_LANES ? n : 1, work, &w);
    switch (s) {
    case LENET_CONV_LANES:
        forward_lanes(cp, n, x, weight, bias, y, kern, &w);
        break;
    case LENET_CONV_ROWS:
        forward_rows(cp, n, x, weight, bias, y, kern, &w);
        break;
    case LENET_CONV_CHANNELS:
        forward_channels(cp, n, x, weight, bias, y, kern, &w);
        break;
    case LENET_CONV_IM2COL:
        forward_im2col(cp, n, x, weight, bias, y, &w);
        break;
    }
}

/* ---- backward: dW += sum over samples and pixels of x (shifted by the tap) * dY;  db += sum of dY;  dX ---- */

/* dW and, when the border k - 1 - p exists, dX of up to LENET_LANES samples starting at i0.  dX is the forward
 * convolution of dY, bordered by k - 1 - p, with the weights flipped and their channels swapped:
 * dX[ci][y][x] = sum over (o, ky, kx) of W[o][ci][k-1-ky][k-1-kx] dYb[o][y + ky][x + kx]. */
static void backward_lanes_chunk(const lenet_conv_plan *cp, int n, int i0, const float *x, const float *dy,
                                 float *grad_weight, float *dx, const lenet_kernels *kern, const conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)cp->oc * g->oh * g->ow;
    const int m = n - i0 < LENET_LANES ? n - i0 : LENET_LANES, q = dx_border(g);
    const bool lanes_dx = dx && q >= 0;
    const int border = lanes_dx ? q : 0;
    kern->to_lanes(m, g->c, g->h, g->w, g->p, x + (size_t)i0 * in_size, w->xt);
    kern->to_lanes(m, cp->oc, g->oh, g->ow, border, dy + (size_t)i0 * out_size, w->yt);
    kern->conv_grad_weight_lanes(g, cp->oc, w->xt, w->yt, border, grad_weight);
    if (!lanes_dx)
        return;
    const lenet_conv_geom t = {.c = cp->oc, .h = g->oh, .w = g->ow, .k = g->k, .s = 1, .p = q, .oh = g->h, .ow = g->w};
    kern->conv_forward_lanes(&t, g->c, w->yt, w->wflip, NULL, w->dxt);
    kern->from_lanes(m, in_size, w->dxt, dx + (size_t)i0 * in_size);
}

/* dW through the row-vectorized kernel: inputs and output gradients copied into rows padded to the vector width. */
static void grad_weight_rows(const lenet_conv_plan *cp, int n, const float *x, const float *dy, float *grad_weight,
                             const lenet_kernels *kern, const conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const int oc = cp->oc, stride = row_stride(g, kern->row_width), dstride = stride - g->k + 1;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)oc * g->oh * g->ow;
    const size_t xsize = (size_t)g->c * (g->h + 2 * g->p) * stride, dsize = (size_t)oc * g->oh * dstride;
    memset(w->dyrows, 0, (size_t)n * dsize * sizeof(float));
    for (int i = 0; i < n; i++) {
        lenet__conv_pad_input_rows(g, x + (size_t)i * in_size, w->xrows + (size_t)i * xsize, stride);
        const float *dyi = dy + (size_t)i * out_size;
        for (int r = 0; r < oc * g->oh; r++)
            memcpy(w->dyrows + (size_t)i * dsize + (size_t)r * dstride, dyi + (size_t)r * g->ow,
                   (size_t)g->ow * sizeof(float));
    }
    kern->conv_grad_weight_rows(g, oc, n, w->xrows, stride, w->dyrows, dstride, grad_weight);
}

/* dW through the channel-vectorized kernel: output gradients transposed pixel-major, the gradient packed tap-major. */
static void grad_weight_channels(const lenet_conv_plan *cp, int n, const float *x, const float *dy, float *grad_weight,
                                 const lenet_kernels *kern, const conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const int oc = cp->oc, vw = kern->vector_width, ocpad = (oc + vw - 1) / vw * vw;
    const int ckk = g->c * g->k * g->k, ohw = g->oh * g->ow;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)oc * ohw;
    const size_t xsize = (size_t)g->c * (g->h + 2 * g->p) * (g->w + 2 * g->p);
    const float *xp = x;
    if (g->p > 0) {
        for (int i = 0; i < n; i++)
            lenet__conv_pad_input(g, x + (size_t)i * in_size, w->xp + (size_t)i * xsize);
        xp = w->xp;
    }
    memset(w->dyt, 0, (size_t)n * ohw * ocpad * sizeof(float));
    for (int i = 0; i < n; i++) {
        const float *dyi = dy + (size_t)i * out_size;
        float *dti = w->dyt + (size_t)i * ohw * ocpad;
        for (int q = 0; q < ohw; q++)
            for (int o = 0; o < oc; o++)
                dti[(size_t)q * ocpad + o] = dyi[(size_t)o * ohw + q];
    }
    memset(w->dwpack, 0, (size_t)ckk * ocpad * sizeof(float));
    kern->conv_grad_weight(g, oc, n, xp, w->dyt, w->dwpack);
    for (int o = 0; o < oc; o++)
        for (int t = 0; t < ckk; t++)
            grad_weight[(size_t)o * ckk + t] += w->dwpack[(size_t)t * ocpad + o];
}

/* Per sample: dW (oc, c*k*k) += dY (oc, oh*ow) . cols^T. */
static void grad_weight_im2col(const lenet_conv_plan *cp, int i, const float *x, const float *dy, float *grad_weight,
                               const conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const int oc = cp->oc, ckk = g->c * g->k * g->k, ohw = g->oh * g->ow;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)oc * ohw;
    lenet__im2col(g, x + (size_t)i * in_size, w->cols);
    lenet__sgemm(false, true, oc, ckk, ohw, 1.0f, dy + (size_t)i * out_size, ohw, w->cols, ohw, 1.0f, grad_weight, ckk);
}

/* Per sample: dX = col2im(W^T (c*k*k, oc) . dY (oc, oh*ow)). */
static void grad_input_im2col(const lenet_conv_plan *cp, int i, const float *dy, const float *weight, float *dx,
                              const conv_work *w)
{
    const lenet_conv_geom *g = &cp->g;
    const int oc = cp->oc, ckk = g->c * g->k * g->k, ohw = g->oh * g->ow;
    const size_t in_size = (size_t)g->c * g->h * g->w, out_size = (size_t)oc * ohw;
    lenet__sgemm(true, false, ckk, ohw, oc, 1.0f, weight, ckk, dy + (size_t)i * out_size, ohw, 0.0f, w->cols, ohw);
    lenet__col2im(g, w->cols, dx + (size_t)i * in_size);
}

void lenet__conv_backward(const lenet_conv_plan *cp, int n, const float *x, const float *dy, const float *weight,
                          float *grad_weight, float *grad_bias, float *dx, float *work)
{
    const lenet_conv_geom *g = &cp->g;
    const lenet_kernels *kern = lenet__kernels();
    const lenet_conv_strategy s = lenet__conv_strategy(cp, kern, n);
    conv_work w;
    layout(cp, s, n, work, &w);

    lenet__sum_rows_into((size_t)n * cp->oc, (size_t)g->oh * g->ow, dy, grad_bias, (size_t)cp->oc);
    /* dX through the lanes needs a non-negative border k - 1 - p; wider padding takes im2col's transpose. */
    bool dx_done = false;
    switch (s) {
    case LENET_CONV_LANES:
        dx_done = dx && dx_border(g) >= 0;
        if (dx_done)
            flip_weights(g, cp->oc, weight, w.wflip);
        for (int i0 = 0; i0 < n; i0 += LENET_LANES)
            backward_lanes_chunk(cp, n, i0, x, dy, grad_weight, dx, kern, &w);
        break;
    case LENET_CONV_ROWS:
        grad_weight_rows(cp, n, x, dy, grad_weight, kern, &w);
        break;
    case LENET_CONV_CHANNELS:
        grad_weight_channels(cp, n, x, dy, grad_weight, kern, &w);
        break;
    case LENET_CONV_IM2COL:
        /* One sample at a time through one buffer of columns: its dW product, then its dX. */
        for (int i = 0; i < n; i++) {
            grad_weight_im2col(cp, i, x, dy, grad_weight, &w);
            if (dx)
                grad_input_im2col(cp, i, dy, weight, dx, &w);
        }
        dx_done = true;
        break;
    }
    if (dx && !dx_done)
        for (int i = 0; i < n; i++)
            grad_input_im2col(cp, i, dy, weight, dx, &w);
}
