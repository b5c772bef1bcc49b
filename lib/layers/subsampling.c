/* Subsampling: LeNet-5's trainable S2/S4 layers (LeCun et al. 1998, section II.B).  Each unit adds the
 * k x k inputs of its window, multiplies the sum by one trainable coefficient per map and adds one trainable
 * bias per map: y[c][i][j] = weight[c] * sum_{window(i, j)} x[c] + bias[c].  The squashing function is a layer
 * of its own (ScaledTanh).  PyTorch has no such module; the parameters are "weight" (C) and "bias" (C). */
#include <string.h>

#include "layers/layer.h"

typedef struct subsample {
    lenet_layer base;
    int kernel_size, stride;
    int channels, h, w, oh, ow; /* set by setup */
} subsample;

static lenet_status subsample_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    const subsample *s = (const subsample *)l;
    lenet_status st = lenet__expect_image(l, in);
    if (st != LENET_OK)
        return st;
    if (in->dim[1] < s->kernel_size || in->dim[2] < s->kernel_size)
        return lenet__fail(LENET_ESHAPE, "Subsampling: window %dx%d is larger than the input %dx%d", s->kernel_size,
                           s->kernel_size, in->dim[1], in->dim[2]);
    if (l->n_params > 0 && in->dim[0] != s->channels)
        return lenet__fail(LENET_ESHAPE, "Subsampling: input has %d maps, coefficients expect %d", in->dim[0],
                           s->channels);
    *out = (lenet_shape){.ndim = 3,
                         .dim = {in->dim[0], (in->dim[1] - s->kernel_size) / s->stride + 1,
                                 (in->dim[2] - s->kernel_size) / s->stride + 1}};
    return LENET_OK;
}

static lenet_status subsample_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    subsample *s = (subsample *)l;
    s->channels = l->in.dim[0];
    s->h = l->in.dim[1];
    s->w = l->in.dim[2];
    s->oh = l->out.dim[1];
    s->ow = l->out.dim[2];
    specs[0] = (lenet_param_spec){.suffix = "weight", .ndim = 1, .shape = {s->channels}, .trainable = true};
    specs[1] = (lenet_param_spec){.suffix = "bias", .ndim = 1, .shape = {s->channels}, .trainable = true};
    *count = 2;
    return LENET_OK;
}

/* The fan-in of a unit is its k * k inputs (LENET_INIT_LECUN: +-2.4 / 4 for LeNet-5's 2x2 windows). */
static void subsample_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    const subsample *s = (const subsample *)l;
    lenet__init_weight_bias(l, scheme, rng, (size_t)s->kernel_size * s->kernel_size, 1);
}

/* Sum of the window of output (i, j) in one plane x (h x w). */
static inline float window_sum(const subsample *s, const float *x, int i, int j)
{
    float sum = 0.0f;
    for (int u = 0; u < s->kernel_size; u++) {
        const float *row = x + (size_t)(i * s->stride + u) * s->w + (size_t)j * s->stride;
        for (int v = 0; v < s->kernel_size; v++)
            sum += row[v];
    }
    return sum;
}

/* y[c][i][j] = weight[c] * sum_window x[c] + bias[c] */
static void subsample_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const subsample *s = (const subsample *)l;
    size_t plane_in = (size_t)s->h * s->w, plane_out = (size_t)s->oh * s->ow;
    for (int n = 0; n < p->n; n++) {
        for (int c = 0; c < s->channels; c++) {
            const float *x = p->x + ((size_t)n * s->channels + c) * plane_in;
            float *yc = y + ((size_t)n * s->channels + c) * plane_out;
            float weight = l->param[0][c], bias = l->param[1][c];
            for (int i = 0; i < s->oh; i++)
                for (int j = 0; j < s->ow; j++)
                    yc[i * s->ow + j] = weight * window_sum(s, x, i, j) + bias;
        }
    }
}

/* The backward pass, and with `squared` its Gauss-Newton twin (the layer is linear in x and in its parameters,
 * so the GN pass is the same loops over squared inputs and coefficients, with hy in place of dy):
 *   dweight[c] += sum dy * s,  dbias[c] += sum dy,  dx[window] += dy * weight[c],  s = sum_window x
 *   hweight[c] += sum hy * s^2, hbias[c] += sum hy, hx[window] += hy * weight[c]^2 */
static void subsample_pass(const subsample *s, const lenet_pass *p, const float *dy, float *dx, bool squared)
{
    const lenet_layer *l = &s->base;
    size_t plane_in = (size_t)s->h * s->w, plane_out = (size_t)s->oh * s->ow;
    if (dx)
        memset(dx, 0, sizeof(float) * (size_t)p->n * l->in_size);
    for (int n = 0; n < p->n; n++) {
        for (int c = 0; c < s->channels; c++) {
            const float *x = p->x + ((size_t)n * s->channels + c) * plane_in;
            const float *dyc = dy + ((size_t)n * s->channels + c) * plane_out;
            float weight = l->param[0][c];
            if (squared)
                weight *= weight;
            double grad_weight = 0.0, grad_bias = 0.0;
            for (int i = 0; i < s->oh; i++) {
                for (int j = 0; j < s->ow; j++) {
                    float g = dyc[i * s->ow + j], sum = window_sum(s, x, i, j);
                    grad_weight += (double)g * (squared ? sum * sum : sum);
                    grad_bias += g;
                    if (!dx)
                        continue;
                    float *dxc = dx + ((size_t)n * s->channels + c) * plane_in;
                    for (int u = 0; u < s->kernel_size; u++) {
                        float *row = dxc + (size_t)(i * s->stride + u) * s->w + (size_t)j * s->stride;
                        for (int v = 0; v < s->kernel_size; v++)
                            row[v] += g * weight;
                    }
                }
            }
            p->grads[0][c] += (float)grad_weight;
            p->grads[1][c] += (float)grad_bias;
        }
    }
}

static void subsample_backward(const lenet_layer *l, const lenet_pass *p)
{
    subsample_pass((const subsample *)l, p, p->dy, p->dx, false);
}

static void subsample_backward_gn(const lenet_layer *l, const lenet_pass *p, const float *hy, float *hx)
{
    subsample_pass((const subsample *)l, p, hy, hx, true);
}

/* Each unit: k * k inputs plus the bias (S2: 6 * 14 * 14 * 5 = 5,880). */
static size_t subsample_connections(const lenet_layer *l)
{
    const subsample *s = (const subsample *)l;
    return l->out_size * ((size_t)s->kernel_size * s->kernel_size + 1);
}

static const lenet_layer_ops subsample_ops = {
    .name = "Subsampling",
    .infer_shape = subsample_infer_shape,
    .setup = subsample_setup,
    .init = subsample_init,
    .forward = subsample_forward,
    .backward = subsample_backward,
    .connections = subsample_connections,
    .backward_gn = subsample_backward_gn,
};

lenet_layer *lenet_subsampling(int kernel_size, int stride)
{
    if (kernel_size < 1 || stride < 1)
        return lenet__fail_null(LENET_EINVAL, "Subsampling: kernel_size %d and stride %d must be >= 1", kernel_size,
                                stride);
    double args[] = {kernel_size, stride};
    subsample *s = lenet__layer_alloc(sizeof *s, &subsample_ops, 2, args);
    if (!s)
        return NULL;
    s->kernel_size = kernel_size;
    s->stride = stride;
    return &s->base;
}
