/* Int8 plans: post-training quantization of a plan's folded network as TFLite's integer specification does it, so
 * that the numbers mean the same on a microcontroller running TFLite Micro's reference kernels.
 *
 *   weights      int8, symmetric per output channel: zero point 0, scale max|w| / 127
 *   activations  int8, asymmetric per tensor: the range seen on the calibration batch, widened to include 0,
 *                scale (max - min) / 255 and zero point round(-128 - min / scale)
 *   bias         int32 at scale input_scale * weight_scale
 *   products     int32 sums, requantized by the fixed-point multiplier and shift of M = s_in s_w / s_out
 *                (QuantizeMultiplier, MultiplyByQuantizedMultiplier)
 *   Sigmoid, Tanh, ScaledTanh  a 256-entry table per layer, int8 in, int8 out
 *   ReLU         a clamp at the zero point (fused into the layer before it when there is one)
 *   pooling      integers: the average rounded half away from zero as TFLite's AveragePool, the maximum exact;
 *                the output keeps the input's scale and zero point
 *   Flatten      nothing (a Linear after it reads its weights in the order the pixels are stored)
 * Other layers (EuclideanRBF, an unfolded BatchNorm, any kind the integer path does not know, and products deeper
 * than LENET_I8_MAX_DEPTH) run in float inside the int8 plan: their input is dequantized, their output quantized
 * with its calibrated range, or written as it is when the layer is the last.  The plan's input is float, quantized
 * on entry; its output is float, dequantized from the last int8 layer.
 *
 * Which integer code a layer becomes is decided here by its kind's name: the layer table (lib/layers/layer.h) has
 * no slot for it yet.  The program is a chain of ops, each computing one layer with the activation and the pooling
 * after it fused in where the kernels can (lib/kernels/int8.h).  The chain depends only on the architecture, so a
 * plan file (plan_io.c) holds the quantized numbers per layer and loading lowers the same chain again. */
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/internal.h"
#include "kernels/int8.h"
#include "plan/internal.h"

/* ---- the program ---- */

/* An int8 tensor's meaning: real value = scale * (q - zero), q in [-128, 127]. */
typedef struct qparams {
    float scale;
    int32_t zero;
} qparams;

static inline int u8_zero(qparams q)
{
    return q.zero + 128; /* the kernels hold u = q + 128 */
}

typedef enum role {
    ROLE_FLOAT = 0,
    ROLE_CONV,
    ROLE_PARTIAL_CONV,
    ROLE_LINEAR,
    ROLE_SUBSAMPLE,
    ROLE_RELU,
    ROLE_TABLE,
    ROLE_AVGPOOL,
    ROLE_MAXPOOL,
    ROLE_FLATTEN,
} role;

static double sigmoid(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

/* LeNet-5's squashing function (lib/layers/scaled_tanh.c): A tanh(S x). */
static double scaled_tanh(double x)
{
    return 1.7159 * tanh(2.0 / 3.0 * x);
}

static const struct {
    const char *kind;
    role role;
    double (*f)(double); /* ROLE_TABLE: the function the table samples */
} ROLES[] = {
    {"Conv2d", ROLE_CONV, NULL},          {"PartialConv2d", ROLE_PARTIAL_CONV, NULL},
    {"Linear", ROLE_LINEAR, NULL},        {"Subsampling", ROLE_SUBSAMPLE, NULL},
    {"ReLU", ROLE_RELU, NULL},            {"Sigmoid", ROLE_TABLE, sigmoid},
    {"Tanh", ROLE_TABLE, tanh},           {"ScaledTanh", ROLE_TABLE, scaled_tanh},
    {"AvgPool2d", ROLE_AVGPOOL, NULL},    {"MaxPool2d", ROLE_MAXPOOL, NULL},
    {"Flatten", ROLE_FLATTEN, NULL},
};

static size_t role_index(const lenet_layer *l)
{
    for (size_t i = 0; i < sizeof ROLES / sizeof ROLES[0]; i++)
        if (strcmp(ROLES[i].kind, l->ops->name) == 0)
            return i;
    return SIZE_MAX;
}

static role role_of(const lenet_layer *l)
{
    size_t i = role_index(l);
    return i == SIZE_MAX ? ROLE_FLOAT : ROLES[i].role;
}

typedef enum op_kind { OP_CONV, OP_SUBSAMPLE, OP_POOL, OP_TABLE, OP_RELU, OP_PAD, OP_FLOAT } op_kind;

/* An activation between ops: NHWC per sample. */
typedef struct act {
    int c, h, w;
    int pad;       /* border of its buffer (a padded convolution reads it) */
    bool flat;     /* after Flatten: c * h * w features in PyTorch's CHW order, stored NHWC */
    qparams q;
    size_t offset; /* of its buffer in the workspace */
} act;

static size_t act_bytes(const act *a)
{
    return (size_t)(a->h + 2 * a->pad) * (size_t)(a->w + 2 * a->pad) * (size_t)a->c;
}

typedef struct op {
    op_kind kind;
    size_t layer;      /* the network layer it computes */
    size_t activation; /* the activation layer fused into it, SIZE_MAX for none */
    size_t pool;       /* the pooling layer fused into it, SIZE_MAX for none */
    int in, out;       /* acts */

    /* OP_CONV (Conv2d, PartialConv2d, Linear) and OP_SUBSAMPLE: the quantized layer as files hold it */
    int oc, depth;     /* output channels, products per output */
    int weight_ndim, weight_shape[4];
    size_t weight_numel;
    int8_t *weight;    /* PyTorch's layout: (oc, c, k, k), (out, in), or (c) for Subsampling */
    float *weight_scale;
    int32_t *bias, *multiplier, *shift; /* [oc]; shift <= 0 */
    qparams requant;   /* what the accumulators are requantized to (before a fused table) */
    /* OP_CONV, OP_SUBSAMPLE with a fused table, and OP_TABLE: int8 in, int8 out, indexed by q + 128 */
    bool has_table;
    int8_t table[256];
    double (*f)(double);

    /* what the kernels read, derived by finish() */
    lenet_i8_conv cv;
    lenet_i8_subsample ss;
    int8_t *packed;
    void *prepared;
    int32_t *kbias, *kmultiplier, *kshift, *kweight;
    int32_t table32[256];
    uint8_t table8[256];
    int lo, hi;

    /* OP_POOL */
    bool average;
    int k, s;
    /* OP_FLOAT */
    const lenet_layer *layer_ptr;
} op;

typedef struct int8_plan {
    op *ops;
    size_t n_ops;
    act *acts;
    size_t n_acts;
    size_t float_in, float_out, float_work; /* floats of the float layers' scratch */
    size_t float_offset, workspace;         /* bytes */
} int8_plan;

static void plan_free(void *impl)
{
    int8_plan *q = impl;
    if (!q)
        return;
    for (size_t i = 0; i < q->n_ops; i++) {
        op *o = &q->ops[i];
        lenet__free(o->weight);
        lenet__free(o->weight_scale);
        lenet__free(o->bias);
        lenet__free(o->multiplier);
        lenet__free(o->shift);
        lenet__free_aligned(o->packed);
        lenet__free_aligned(o->prepared);
        lenet__free(o->kbias);
    }
    lenet__free(q->ops);
    lenet__free(q->acts);
    lenet__free(q);
}

/* ---- lowering: the chain of ops for a network, shapes only ---- */

static int arg(const lenet_layer *l, int i)
{
    return (int)l->args[i];
}

static bool is_pool2(const lenet_layer *l)
{
    role r = role_of(l);
    return (r == ROLE_AVGPOOL || r == ROLE_MAXPOOL) && arg(l, 0) == 2 && arg(l, 1) == 2;
}

/* Products per output of a weighted layer (for the depth limit). */
static size_t depth_of(const lenet_layer *l, role r)
{
    switch (r) {
    case ROLE_CONV:
    case ROLE_PARTIAL_CONV: return (size_t)l->in.dim[0] * (size_t)arg(l, r == ROLE_CONV ? 1 : 2) * (size_t)arg(l, r == ROLE_CONV ? 1 : 2);
    case ROLE_LINEAR: return l->in_size;
    case ROLE_SUBSAMPLE: return (size_t)arg(l, 0) * (size_t)arg(l, 0);
    default: return 0;
    }
}

static act *new_act(int8_plan *q, int c, int h, int w)
{
    act *a = &q->acts[q->n_acts++];
    *a = (act){.c = c, .h = h, .w = w};
    return a;
}

static act *shape_act(int8_plan *q, const lenet_shape *s)
{
    return s->ndim == 3 ? new_act(q, s->dim[0], s->dim[1], s->dim[2]) : new_act(q, s->dim[0], 1, 1);
}

static op *new_op(int8_plan *q, op_kind kind, size_t layer, int in)
{
    op *o = &q->ops[q->n_ops++];
    *o = (op){.kind = kind, .layer = layer, .activation = SIZE_MAX, .pool = SIZE_MAX, .in = in, .out = -1};
    return o;
}

/* The chain of ops for the network: kinds, fusions and the acts' shapes. */
static lenet_status lower(const lenet_model *net, int8_plan *q)
{
    const size_t n = net->n_layers;
    q->ops = lenet__calloc(2 * n + 1, sizeof *q->ops);
    q->acts = lenet__calloc(2 * n + 2, sizeof *q->acts);
    if (!q->ops || !q->acts)
        return lenet__oom("int8 plan");
    new_act(q, net->in_shape.dim[0], net->in_shape.dim[1], net->in_shape.dim[2]);
    int cur = 0;
    for (size_t i = 0; i < n;) {
        const lenet_layer *l = net->layers[i];
        role r = role_of(l);
        if (r == ROLE_FLATTEN) {
            q->acts[cur].flat = q->acts[cur].h * q->acts[cur].w > 1;
            i++;
            continue;
        }
        if ((r == ROLE_CONV || r == ROLE_PARTIAL_CONV || r == ROLE_LINEAR || r == ROLE_SUBSAMPLE) &&
            depth_of(l, r) > LENET_I8_MAX_DEPTH)
            r = ROLE_FLOAT;
        op *o;
        switch (r) {
        case ROLE_CONV:
        case ROLE_PARTIAL_CONV:
        case ROLE_LINEAR:
        case ROLE_SUBSAMPLE: {
            const int pad = r == ROLE_CONV ? arg(l, 3) : 0;
            if (pad > 0) {
                if (cur == 0 && q->n_ops == 0) {
                    q->acts[0].pad = pad; /* the input is quantized into a padded buffer */
                } else {
                    const act *in = &q->acts[cur];
                    o = new_op(q, OP_PAD, i, cur);
                    act *padded = new_act(q, in->c, in->h, in->w);
                    padded->pad = pad;
                    o->out = cur = (int)q->n_acts - 1;
                }
            }
            o = new_op(q, r == ROLE_SUBSAMPLE ? OP_SUBSAMPLE : OP_CONV, i, cur);
            size_t next = i + 1;
            if (next < n && (role_of(net->layers[next]) == ROLE_RELU || role_of(net->layers[next]) == ROLE_TABLE))
                o->activation = next++;
            if ((r == ROLE_CONV || r == ROLE_PARTIAL_CONV) && next < n && is_pool2(net->layers[next]))
                o->pool = next++;
            shape_act(q, &net->layers[next - 1]->out);
            i = next;
            break;
        }
        case ROLE_RELU:
        case ROLE_TABLE:
            o = new_op(q, r == ROLE_RELU ? OP_RELU : OP_TABLE, i, cur);
            shape_act(q, &l->out);
            i++;
            break;
        case ROLE_AVGPOOL:
        case ROLE_MAXPOOL:
            o = new_op(q, OP_POOL, i, cur);
            o->average = r == ROLE_AVGPOOL;
            o->k = arg(l, 0);
            o->s = arg(l, 1);
            shape_act(q, &l->out);
            i++;
            break;
        default:
            o = new_op(q, OP_FLOAT, i, cur);
            o->layer_ptr = l;
            shape_act(q, &l->out);
            i++;
            break;
        }
        o->out = cur = (int)q->n_acts - 1;
        if (o->activation != SIZE_MAX || o->kind == OP_TABLE) {
            size_t t = role_index(net->layers[o->activation != SIZE_MAX ? o->activation : o->layer]);
            o->f = ROLES[t].f; /* NULL for ReLU */
        }
    }
    if (q->n_ops == 0)
        return lenet__fail(LENET_EUNSUPPORTED, "plan_create_int8: the network has no layer to quantize");
    return LENET_OK;
}

/* ---- quantizing from a calibration batch ---- */

/* A tensor's scale and zero point from the range of its values (TFLite's nudged zero point). */
static qparams from_range(double lo, double hi)
{
    lo = lo < 0.0 ? lo : 0.0;
    hi = hi > 0.0 ? hi : 0.0;
    if (!(hi - lo > 1e-30))
        return (qparams){.scale = 1.0f, .zero = -128}; /* all zeros */
    const float scale = (float)((hi - lo) / 255.0);
    double zero = -128.0 - lo / (double)scale;
    zero = zero < -128.0 ? -128.0 : zero > 127.0 ? 127.0 : round(zero);
    return (qparams){.scale = scale > 0.0f ? scale : FLT_MIN, .zero = (int32_t)zero};
}

/* The layer outputs' ranges on the calibration batch: range[0] the input, range[i + 1] layer i's output. */
static lenet_status calibrate(const lenet_model *net, const lenet_tensor *x, int batch, double (*range)[2])
{
    size_t act_floats, work;
    const size_t scratch = lenet__model_chunk_scratch(net, &act_floats, &work);
    float *buf = lenet__malloc_aligned((scratch ? scratch : 1) * sizeof(float));
    if (!buf)
        return lenet__oom("int8 calibration");
    for (size_t i = 0; i <= net->n_layers; i++) {
        range[i][0] = INFINITY;
        range[i][1] = -INFINITY;
    }
    const size_t in_size = lenet__shape_size(&net->in_shape);
    lenet_status st = LENET_OK;
    for (int start = 0; start < batch && st == LENET_OK; start += LENET_CHUNK) {
        const int n = batch - start < LENET_CHUNK ? batch - start : LENET_CHUNK;
        const float *in = x->data + (size_t)start * in_size;
        size_t count = (size_t)n * in_size;
        for (size_t i = 0; i <= net->n_layers; i++) {
            for (size_t j = 0; j < count; j++) {
                if (!isfinite(in[j])) {
                    if (i == 0)
                        st = lenet__fail(LENET_ENUMERIC, "plan_create_int8: calibration sample %zu holds %g",
                                         (size_t)start + j / in_size, (double)in[j]);
                    else
                        st = lenet__fail(LENET_ENUMERIC, "plan_create_int8: layer %zu (%s) gives %g on the calibration "
                                         "batch", i - 1, net->layers[i - 1]->ops->name, (double)in[j]);
                    break;
                }
                range[i][0] = in[j] < range[i][0] ? in[j] : range[i][0];
                range[i][1] = in[j] > range[i][1] ? in[j] : range[i][1];
            }
            if (st != LENET_OK || i == net->n_layers)
                break;
            const lenet_layer *l = net->layers[i];
            lenet_pass p = {.n = n, .x = in, .work = buf + 2 * act_floats, .start = start, .batch = batch};
            float *out = buf + (i & 1) * act_floats;
            l->ops->forward(l, &p, out);
            in = out;
            count = (size_t)n * l->out_size;
        }
    }
    lenet__free_aligned(buf);
    return st;
}

/* round(v) half away from zero, clamped to [lo, hi]. */
static int32_t round_clamp(double v, double lo, double hi)
{
    v = round(v);
    return (int32_t)(v < lo ? lo : v > hi ? hi : v);
}

static lenet_status alloc_weighted(op *o, size_t weight_numel, int oc)
{
    o->oc = oc;
    o->weight_numel = weight_numel;
    o->weight = lenet__malloc(weight_numel);
    o->weight_scale = lenet__malloc((size_t)oc * sizeof *o->weight_scale);
    o->bias = lenet__malloc((size_t)oc * sizeof *o->bias);
    o->multiplier = lenet__malloc((size_t)oc * sizeof *o->multiplier);
    o->shift = lenet__malloc((size_t)oc * sizeof *o->shift);
    if (!o->weight || !o->weight_scale || !o->bias || !o->multiplier || !o->shift)
        return lenet__oom("int8 weights");
    return LENET_OK;
}

/* A weighted layer's weight shape as files hold it (PyTorch's; PartialConv2d's densified to a Conv2d's). */
static void weight_shape(const lenet_layer *l, op *o)
{
    switch (role_of(l)) {
    case ROLE_CONV:
    case ROLE_PARTIAL_CONV: {
        const int k = role_of(l) == ROLE_CONV ? arg(l, 1) : arg(l, 2);
        o->weight_ndim = 4;
        o->weight_shape[0] = l->out.dim[0];
        o->weight_shape[1] = l->in.dim[0];
        o->weight_shape[2] = o->weight_shape[3] = k;
        o->depth = l->in.dim[0] * k * k;
        break;
    }
    case ROLE_LINEAR:
        o->weight_ndim = 2;
        o->weight_shape[0] = l->out.dim[0];
        o->weight_shape[1] = (int)l->in_size;
        o->depth = (int)l->in_size;
        break;
    default: /* Subsampling */
        o->weight_ndim = 1;
        o->weight_shape[0] = l->in.dim[0];
        o->depth = arg(l, 0) * arg(l, 0);
        break;
    }
}

/* PartialConv2d's weights (connections, k, k) densified to (out, in, k, k): the connection table is in the layer's
 * constructor arguments (lib/layers/partial_conv.c), 48 bits per argument, cell o * in + i, connections numbered
 * output-major. */
static void densify_partial(const lenet_layer *l, float *dense)
{
    const int out = arg(l, 0), in = arg(l, 1), k = arg(l, 2);
    const size_t k2 = (size_t)k * k;
    memset(dense, 0, (size_t)out * in * k2 * sizeof *dense);
    size_t conn = 0;
    for (int o = 0; o < out; o++) {
        for (int i = 0; i < in; i++) {
            const int cell = o * in + i;
            const double word = l->args[3 + cell / 48];
            if (fmod(floor(word / ldexp(1.0, cell % 48)), 2.0) == 0.0)
                continue;
            memcpy(dense + ((size_t)o * in + i) * k2, l->param[0] + conn * k2, k2 * sizeof *dense);
            conn++;
        }
    }
}

/* Quantizes a weighted layer for input scale s_in and accumulators requantized to `out` (raised if needed so that
 * every multiplier is below 1: the requantization then only shifts right). */
static lenet_status quantize_weighted(const lenet_layer *l, op *o, float s_in, qparams out)
{
    weight_shape(l, o);
    size_t numel = 1;
    for (int d = 0; d < o->weight_ndim; d++)
        numel *= (size_t)o->weight_shape[d];
    const int oc = o->weight_shape[0];
    lenet_status st = alloc_weighted(o, numel, oc);
    if (st != LENET_OK)
        return st;
    float *dense = NULL;
    const float *w = l->param[0];
    if (role_of(l) == ROLE_PARTIAL_CONV) {
        if (!(dense = lenet__malloc(numel * sizeof *dense)))
            return lenet__oom("int8 weights");
        densify_partial(l, dense);
        w = dense;
    }
    const size_t per = numel / (size_t)oc;
    double most_product = 0.0;
    for (int c = 0; c < oc; c++) {
        double most = 0.0;
        for (size_t j = 0; j < per; j++)
            most = fmax(most, fabs((double)w[(size_t)c * per + j]));
        o->weight_scale[c] = most > 0.0 ? (float)(most / 127.0) : 1.0f;
        for (size_t j = 0; j < per; j++)
            o->weight[(size_t)c * per + j] =
                (int8_t)round_clamp((double)w[(size_t)c * per + j] / o->weight_scale[c], -127.0, 127.0);
        most_product = fmax(most_product, (double)s_in * o->weight_scale[c]);
    }
    lenet__free(dense);
    if (most_product / out.scale >= 1.0)
        out.scale = (float)(most_product * (1.0 + 0x1p-20));
    o->requant = out;
    for (int c = 0; c < oc; c++) {
        const double product_scale = (double)s_in * o->weight_scale[c];
        o->bias[c] = round_clamp((double)l->param[1][c] / product_scale, -(double)LENET_I8_MAX_BIAS,
                                 (double)LENET_I8_MAX_BIAS);
        int shift;
        lenet__i8_quantize_multiplier(product_scale / out.scale, &o->multiplier[c], &shift);
        o->shift[c] = shift;
    }
    return LENET_OK;
}

/* table[q + 128] = the int8 of f(s_in (q - z_in)) at `out`. */
static void build_table(op *o, double (*f)(double), qparams in, qparams out)
{
    for (int q = -128; q < 128; q++) {
        const double x = (double)in.scale * (q - in.zero);
        o->table[q + 128] = (int8_t)round_clamp(f(x) / out.scale + out.zero, -128.0, 127.0);
    }
    o->has_table = true;
}

static lenet_status quantize_calibrated(const lenet_model *net, int8_plan *q, double (*range)[2])
{
    q->acts[0].q = from_range(range[0][0], range[0][1]);
    for (size_t i = 0; i < q->n_ops; i++) {
        op *o = &q->ops[i];
        const qparams in = q->acts[o->in].q;
        qparams *out = &q->acts[o->out].q;
        const double *own = range[o->layer + 1];
        switch (o->kind) {
        case OP_CONV:
        case OP_SUBSAMPLE: {
            const bool relu = o->activation != SIZE_MAX && !o->f;
            const double *target = relu ? range[o->activation + 1] : own;
            lenet_status st = quantize_weighted(net->layers[o->layer], o, in.scale, from_range(target[0], target[1]));
            if (st != LENET_OK)
                return st;
            *out = o->requant;
            if (o->f) {
                const double *post = range[o->activation + 1];
                *out = from_range(post[0], post[1]);
                build_table(o, o->f, o->requant, *out);
            }
            break;
        }
        case OP_TABLE:
            *out = from_range(own[0], own[1]);
            build_table(o, o->f, in, *out);
            break;
        case OP_FLOAT: *out = from_range(own[0], own[1]); break;
        default: *out = in; break; /* pad, pooling, ReLU: the same scale and zero point */
        }
    }
    return LENET_OK;
}

/* ---- what the kernels read ---- */

/* The input feature of a Linear layer that NHWC position j holds (PyTorch's Flatten order is CHW). */
static size_t chw_index(const act *a, size_t j)
{
    if (!a->flat)
        return j;
    const size_t c = j % (size_t)a->c, pixel = j / (size_t)a->c;
    return c * (size_t)a->h * (size_t)a->w + pixel;
}

static lenet_status finish_conv(const lenet_model *net, int8_plan *q, op *o)
{
    const lenet_layer *l = net->layers[o->layer];
    const act *in = &q->acts[o->in];
    const bool linear = role_of(l) == ROLE_LINEAR;
    const int oc = o->oc, k = linear ? 1 : o->weight_shape[2], c = linear ? o->depth : in->c;
    const int groups = (k * c + 3) / 4, ocp = (oc + LENET_I8_OC_BLOCK - 1) / LENET_I8_OC_BLOCK * LENET_I8_OC_BLOCK;
    const size_t per = (size_t)o->depth, packed = (size_t)k * groups * ocp * 4;
    int8_t *ohwi = lenet__malloc(per * (size_t)oc);
    o->packed = lenet__malloc_aligned(packed);
    o->kbias = lenet__calloc((size_t)ocp * 3, sizeof *o->kbias);
    if (!ohwi || !o->packed || !o->kbias) {
        lenet__free(ohwi);
        return lenet__oom("int8 weights");
    }
    o->kmultiplier = o->kbias + ocp;
    o->kshift = o->kbias + 2 * ocp;
    const int zero_in = u8_zero(in->q);
    for (int ch = 0; ch < oc; ch++) {
        const int8_t *w = o->weight + (size_t)ch * per;
        int8_t *row = ohwi + (size_t)ch * per;
        int32_t sum = 0;
        for (size_t j = 0; j < per; j++) {
            if (linear) {
                row[j] = w[chw_index(in, j)];
            } else { /* (c, ky, kx) to (ky, kx, c) */
                const size_t kx = j / (size_t)c % (size_t)k, ky = j / ((size_t)c * k), ci = j % (size_t)c;
                row[j] = w[(ci * k + ky) * k + kx];
            }
            sum += row[j];
        }
        o->kbias[ch] = o->bias[ch] - zero_in * sum;
        o->kmultiplier[ch] = o->multiplier[ch];
        o->kshift[ch] = -o->shift[ch];
    }
    lenet__i8_pack_weights(oc, k, c, groups, ocp, ohwi, o->packed);
    lenet__free(ohwi);
    o->cv = (lenet_i8_conv){
        .c = c, .h = linear ? 1 : in->h + 2 * in->pad, .w = linear ? 1 : in->w + 2 * in->pad, .k = k,
        .s = role_of(l) == ROLE_CONV ? arg(l, 2) : 1,
        .oh = linear ? 1 : l->out.dim[1], .ow = linear ? 1 : l->out.dim[2], .oc = oc, .groups = groups, .ocp = ocp,
        .weight = o->packed, .bias = o->kbias, .multiplier = o->kmultiplier, .shift = o->kshift,
        .out_zero = u8_zero(o->requant), .lo = o->lo, .hi = o->hi, .table = o->has_table ? o->table32 : NULL,
        .table8 = o->table8, .pool = o->pool == SIZE_MAX                                   ? LENET_I8_POOL_NONE
                : role_of(net->layers[o->pool]) == ROLE_AVGPOOL ? LENET_I8_POOL_AVG2
                                                                      : LENET_I8_POOL_MAX2,
    };
    /* The running table's own layout of the layer, once (another table forced later works it out per call). */
    const lenet_i8_kernels *kernels = lenet__i8_kernels();
    if (kernels->prepare) {
        if (!(o->prepared = lenet__malloc_aligned(LENET_I8_PREPARED_SIZE)))
            return lenet__oom("int8 weights");
        o->cv.prepared = kernels->prepare(&o->cv, o->prepared) ? o->prepared : NULL;
        o->cv.prepared_by = kernels;
    }
    return LENET_OK;
}

static lenet_status finish_subsample(const lenet_model *net, int8_plan *q, op *o)
{
    const lenet_layer *l = net->layers[o->layer];
    const act *in = &q->acts[o->in];
    o->kbias = lenet__calloc((size_t)o->oc, sizeof *o->kbias * 4);
    if (!o->kbias)
        return lenet__oom("int8 weights");
    o->kweight = o->kbias + o->oc;
    o->kmultiplier = o->kbias + 2 * o->oc;
    o->kshift = o->kbias + 3 * o->oc;
    for (int ch = 0; ch < o->oc; ch++) {
        o->kbias[ch] = o->bias[ch];
        o->kweight[ch] = o->weight[ch];
        o->kmultiplier[ch] = o->multiplier[ch];
        o->kshift[ch] = -o->shift[ch];
    }
    o->ss = (lenet_i8_subsample){
        .c = in->c, .h = in->h, .w = in->w, .k = arg(l, 0), .s = arg(l, 1), .oh = l->out.dim[1], .ow = l->out.dim[2],
        .in_zero = u8_zero(in->q), .weight = o->kweight, .bias = o->kbias, .multiplier = o->kmultiplier,
        .shift = o->kshift, .out_zero = u8_zero(o->requant), .lo = o->lo, .hi = o->hi,
        .table = o->has_table ? o->table32 : NULL,
    };
    return LENET_OK;
}

static size_t round64(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

/* Derives the kernels' data and lays out the workspace. */
static lenet_status finish(const lenet_model *net, int8_plan *q)
{
    for (size_t i = 0; i < q->n_ops; i++) {
        op *o = &q->ops[i];
        o->lo = 0;
        o->hi = 255;
        if (o->activation != SIZE_MAX && !o->f)
            o->lo = u8_zero(o->requant); /* fused ReLU */
        if (o->has_table)
            for (int u = 0; u < 256; u++) {
                o->table8[u] = (uint8_t)(o->table[u] + 128);
                o->table32[u] = o->table8[u];
            }
        lenet_status st = LENET_OK;
        if (o->kind == OP_CONV)
            st = finish_conv(net, q, o);
        else if (o->kind == OP_SUBSAMPLE)
            st = finish_subsample(net, q, o);
        else if (o->kind == OP_FLOAT) {
            const lenet_layer *l = o->layer_ptr;
            const size_t in = (size_t)LENET_CHUNK * lenet__shape_size(&l->in),
                         out = (size_t)LENET_CHUNK * l->out_size,
                         work = l->ops->workspace ? l->ops->workspace(l, LENET_CHUNK) : 0;
            q->float_in = in > q->float_in ? in : q->float_in;
            q->float_out = out > q->float_out ? out : q->float_out;
            q->float_work = work > q->float_work ? work : q->float_work;
        }
        if (st != LENET_OK)
            return st;
    }
    size_t at = 0;
    for (size_t a = 0; a < q->n_acts; a++) {
        q->acts[a].offset = at;
        at += round64((size_t)LENET_CHUNK * act_bytes(&q->acts[a]) + LENET_I8_SLACK);
    }
    q->float_offset = at;
    q->float_in = round64(q->float_in * sizeof(float)) / sizeof(float);
    q->float_out = round64(q->float_out * sizeof(float)) / sizeof(float);
    q->workspace = at + (q->float_in + q->float_out + q->float_work) * sizeof(float);
    return LENET_OK;
}

/* ---- running ---- */

static void run_float(const lenet_i8_kernels *kern, const int8_plan *q, const op *o, bool first, bool last, int n,
                      const float *x, float *y, uint8_t *base)
{
    const lenet_layer *l = o->layer_ptr;
    float *fin = (float *)(base + q->float_offset), *fout = fin + q->float_in, *work = fout + q->float_out;
    const act *in = &q->acts[o->in], *out = &q->acts[o->out];
    const float *x_in = x;
    if (!first) {
        lenet__i8_dequantize(n, in->c, in->h, in->w, base + in->offset, in->q.scale, u8_zero(in->q), fin);
        x_in = fin;
    }
    lenet_pass pass = {.n = n, .x = x_in, .work = work, .batch = n};
    l->ops->forward(l, &pass, last ? y : fout);
    if (!last)
        lenet__i8_quantize(kern, n, out->c, out->h, out->w, 0, fout, out->q.scale, u8_zero(out->q),
                           base + out->offset);
}

/* One chunk of n samples: x (n inputs) to y (n outputs). */
static void run_chunk(const lenet_plan *p, const int8_plan *q, const lenet_i8_kernels *kern, int n, const float *x,
                      float *y, uint8_t *base)
{
    const act *a0 = &q->acts[0];
    if (q->ops[0].kind != OP_FLOAT) {
        lenet__i8_quantize(kern, n, a0->c, a0->h, a0->w, a0->pad, x, a0->q.scale, u8_zero(a0->q), base + a0->offset);
        memset(base + a0->offset + (size_t)n * act_bytes(a0), 0, LENET_I8_SLACK);
    }
    for (size_t i = 0; i < q->n_ops; i++) {
        const op *o = &q->ops[i];
        const act *in = &q->acts[o->in], *out = &q->acts[o->out];
        const uint8_t *src = base + in->offset;
        uint8_t *dst = base + out->offset;
        const bool last = i + 1 == q->n_ops;
        switch (o->kind) {
        case OP_CONV: kern->conv(&o->cv, n, src, dst); break;
        case OP_SUBSAMPLE: lenet__i8_subsample(&o->ss, n, src, dst); break;
        case OP_POOL:
            lenet__i8_pool(o->average, n, in->c, in->h, in->w, o->k, o->s, out->h, out->w, src, dst);
            break;
        case OP_TABLE: lenet__i8_lookup((size_t)n * act_bytes(in), o->table8, src, dst); break;
        case OP_RELU: lenet__i8_clamp_below((size_t)n * act_bytes(in), (uint8_t)u8_zero(in->q), src, dst); break;
        case OP_PAD: lenet__i8_pad(n, in->c, in->h, in->w, out->pad, src, u8_zero(in->q), dst); break;
        case OP_FLOAT: run_float(kern, q, o, i == 0, last, n, x, y, base); break;
        }
        if (o->kind != OP_FLOAT || !last)
            memset(dst + (size_t)n * act_bytes(out), 0, LENET_I8_SLACK);
    }
    const op *end = &q->ops[q->n_ops - 1];
    if (end->kind != OP_FLOAT) {
        const act *out = &q->acts[end->out];
        lenet__i8_dequantize(n, out->c, out->h, out->w, base + out->offset, out->q.scale, u8_zero(out->q), y);
    }
}

static size_t int8_workspace(const lenet_plan *p)
{
    return ((const int8_plan *)p->impl)->workspace;
}

static void int8_run(const lenet_plan *p, int batch, const float *x, float *y, void *workspace)
{
    const int8_plan *q = p->impl;
    const lenet_i8_kernels *kern = lenet__i8_kernels();
    const size_t in_size = lenet__shape_size(&p->net->in_shape), out_size = lenet__model_out_size(p->net);
    for (int start = 0; start < batch; start += LENET_CHUNK) {
        const int n = batch - start < LENET_CHUNK ? batch - start : LENET_CHUNK;
        run_chunk(p, q, kern, n, x + (size_t)start * in_size, y + (size_t)start * out_size, workspace);
    }
}

/* Replaces a float plan's backend with the int8 program q (taking it). */
static void adopt(lenet_plan *p, int8_plan *q)
{
    if (p->backend && p->backend->destroy)
        p->backend->destroy(p->impl);
    p->impl = q;
    p->backend = &lenet__plan_int8;
}

/* ---- plan files: the quantized numbers per layer, under "int8.<layer>.<what>" ----
 *   int8.input.scale, int8.input.zero_point            how the plan's input is quantized
 *   int8.L.weight (I8, PyTorch's layout), .weight_scale (F32, per channel), .bias, .multiplier, .shift (I32, per
 *       channel), .scale and .zero_point                 weighted layer L, requantized to (scale, zero_point)
 *   int8.A.table (I8 [256], indexed by q + 128), .scale, .zero_point    a table activation A and its output
 *   int8.L.scale, .zero_point                           a float layer's output (unless it is the last)
 * Scalars are 0-dimensional, zero points I32. */

/* Appends a tensor of a dtype lenet__st_add_f32 does not write, its bytes already little-endian. */
static lenet_status add_tensor(lenet_st_writer *w, const char *name, lenet_st_dtype dtype, int ndim, const int *shape,
                               const void *bytes, size_t nbytes)
{
    if (w->failed)
        return w->status;
    size_t need;
    if (lenet__add_overflows(w->data_size, nbytes, &need) || need > SIZE_MAX / 2)
        goto oom;
    if (need > w->data_cap) {
        size_t cap = w->data_cap ? w->data_cap : 4096;
        while (cap < need)
            cap *= 2;
        unsigned char *data = lenet__realloc(w->data, cap);
        if (!data)
            goto oom;
        w->data = data;
        w->data_cap = cap;
    }
    double dims[4], offsets[2] = {(double)w->data_size, (double)need};
    for (int d = 0; d < ndim; d++)
        dims[d] = shape[d];
    cJSON *entry = cJSON_CreateObject(), *shape_json = cJSON_CreateDoubleArray(dims, ndim),
          *offsets_json = cJSON_CreateDoubleArray(offsets, 2);
    bool added = entry && shape_json && offsets_json &&
                 cJSON_AddStringToObject(entry, "dtype", lenet__st_dtype_name(dtype)) &&
                 cJSON_AddItemToObject(entry, "shape", shape_json);
    if (added)
        shape_json = NULL;
    added = added && cJSON_AddItemToObject(entry, "data_offsets", offsets_json);
    if (added)
        offsets_json = NULL;
    added = added && cJSON_AddItemToObject(w->header, name, entry);
    cJSON_Delete(shape_json);
    cJSON_Delete(offsets_json);
    if (!added) {
        cJSON_Delete(entry);
        goto oom;
    }
    memcpy(w->data + w->data_size, bytes, nbytes);
    w->data_size = need;
    return LENET_OK;
oom:
    w->failed = true;
    w->status = lenet__oom("plan file");
    return w->status;
}

static lenet_status add_i32(lenet_st_writer *w, const char *name, int ndim, const int32_t *values, size_t count)
{
    unsigned char bytes[4 * 256];
    unsigned char *buf = count <= 256 ? bytes : lenet__malloc(4 * count);
    if (!buf)
        return lenet__oom("plan file");
    for (size_t i = 0; i < count; i++)
        for (int b = 0; b < 4; b++)
            buf[4 * i + (size_t)b] = (unsigned char)((uint32_t)values[i] >> (8 * b));
    const int shape[1] = {(int)count};
    lenet_status st = add_tensor(w, name, LENET_ST_I32, ndim, shape, buf, 4 * count);
    if (buf != bytes)
        lenet__free(buf);
    return st;
}

static void tensor_name(char *buf, size_t size, size_t layer, const char *what)
{
    snprintf(buf, size, "int8.%zu.%s", layer, what);
}

/* "scale" and "zero_point" of layer `layer` (SIZE_MAX: the input). */
static lenet_status save_qparams(lenet_st_writer *w, size_t layer, qparams q)
{
    char name[64];
    if (layer == SIZE_MAX)
        snprintf(name, sizeof name, "int8.input.scale");
    else
        tensor_name(name, sizeof name, layer, "scale");
    lenet_status st = lenet__st_add_f32(w, name, 0, NULL, &q.scale);
    if (layer == SIZE_MAX)
        snprintf(name, sizeof name, "int8.input.zero_point");
    else
        tensor_name(name, sizeof name, layer, "zero_point");
    return st == LENET_OK ? add_i32(w, name, 0, &q.zero, 1) : st;
}

static lenet_status int8_save(const lenet_plan *p, lenet_st_writer *w)
{
    const int8_plan *q = p->impl;
    lenet_status st = save_qparams(w, SIZE_MAX, q->acts[0].q);
    char name[64];
    for (size_t i = 0; st == LENET_OK && i < q->n_ops; i++) {
        const op *o = &q->ops[i];
        const bool last = i + 1 == q->n_ops;
        if (o->kind == OP_CONV || o->kind == OP_SUBSAMPLE) {
            const int oc[1] = {o->oc};
            tensor_name(name, sizeof name, o->layer, "weight");
            st = add_tensor(w, name, LENET_ST_I8, o->weight_ndim, o->weight_shape, o->weight, o->weight_numel);
            tensor_name(name, sizeof name, o->layer, "weight_scale");
            if (st == LENET_OK)
                st = lenet__st_add_f32(w, name, 1, oc, o->weight_scale);
            tensor_name(name, sizeof name, o->layer, "bias");
            if (st == LENET_OK)
                st = add_i32(w, name, 1, o->bias, (size_t)o->oc);
            tensor_name(name, sizeof name, o->layer, "multiplier");
            if (st == LENET_OK)
                st = add_i32(w, name, 1, o->multiplier, (size_t)o->oc);
            tensor_name(name, sizeof name, o->layer, "shift");
            if (st == LENET_OK)
                st = add_i32(w, name, 1, o->shift, (size_t)o->oc);
            if (st == LENET_OK)
                st = save_qparams(w, o->layer, o->requant);
        }
        if (st == LENET_OK && o->has_table) {
            const size_t at = o->kind == OP_TABLE ? o->layer : o->activation;
            const int shape[1] = {256};
            tensor_name(name, sizeof name, at, "table");
            st = add_tensor(w, name, LENET_ST_I8, 1, shape, o->table, 256);
            if (st == LENET_OK)
                st = save_qparams(w, at, q->acts[o->out].q);
        }
        if (st == LENET_OK && o->kind == OP_FLOAT && !last)
            st = save_qparams(w, o->layer, q->acts[o->out].q);
    }
    return st;
}

/* The tensor `name` of dtype and shape asked for, counted as used; NULL with EFORMAT set otherwise. */
static const lenet_st_tensor *expect(const lenet_st_file *f, const char *name, lenet_st_dtype dtype, int ndim,
                                     const int *shape, size_t *used)
{
    const lenet_st_tensor *t = lenet__st_find(f, name);
    if (!t) {
        lenet__fail(LENET_EFORMAT, "%s: no tensor \"%s\"", f->path, name);
        return NULL;
    }
    bool same = t->dtype == dtype && t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == (uint64_t)shape[d];
    if (!same) {
        lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" is not %s of %d dimensions as the network needs", f->path, name,
                    lenet__st_dtype_name(dtype), ndim);
        return NULL;
    }
    (*used)++;
    return t;
}

static int32_t i32_at(const lenet_st_tensor *t, size_t i)
{
    const unsigned char *b = t->data + 4 * i;
    return (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
}

static lenet_status load_qparams(const lenet_st_file *f, size_t layer, qparams *q, size_t *used)
{
    char scale_name[64], zero_name[64];
    if (layer == SIZE_MAX) {
        snprintf(scale_name, sizeof scale_name, "int8.input.scale");
        snprintf(zero_name, sizeof zero_name, "int8.input.zero_point");
    } else {
        tensor_name(scale_name, sizeof scale_name, layer, "scale");
        tensor_name(zero_name, sizeof zero_name, layer, "zero_point");
    }
    const lenet_st_tensor *scale = expect(f, scale_name, LENET_ST_F32, 0, NULL, used);
    const lenet_st_tensor *zero = scale ? expect(f, zero_name, LENET_ST_I32, 0, NULL, used) : NULL;
    if (!zero)
        return LENET_EFORMAT;
    const double s = lenet__st_float_at(scale, 0);
    const int32_t z = i32_at(zero, 0);
    if (!(s > 0.0 && s <= FLT_MAX) || z < -128 || z > 127)
        return lenet__fail(LENET_EFORMAT, "%s: \"%s\" %g and \"%s\" %d are no int8 scale and zero point", f->path,
                           scale_name, s, zero_name, (int)z);
    *q = (qparams){.scale = (float)s, .zero = z};
    return LENET_OK;
}

static lenet_status load_table(const lenet_st_file *f, op *o, size_t layer, qparams *out, size_t *used)
{
    char name[64];
    tensor_name(name, sizeof name, layer, "table");
    const lenet_st_tensor *t = expect(f, name, LENET_ST_I8, 1, (const int[]){256}, used);
    if (!t)
        return LENET_EFORMAT;
    for (int i = 0; i < 256; i++)
        o->table[i] = (int8_t)t->data[i];
    o->has_table = true;
    return load_qparams(f, layer, out, used);
}

static lenet_status load_weighted(const lenet_model *net, const lenet_st_file *f, op *o, size_t *used)
{
    const lenet_layer *l = net->layers[o->layer];
    weight_shape(l, o);
    size_t numel = 1;
    for (int d = 0; d < o->weight_ndim; d++)
        numel *= (size_t)o->weight_shape[d];
    lenet_status st = alloc_weighted(o, numel, o->weight_shape[0]);
    if (st != LENET_OK)
        return st;
    char name[64];
    const int oc[1] = {o->oc};
    const lenet_st_tensor *t[5];
    static const char *const what[5] = {"weight", "weight_scale", "bias", "multiplier", "shift"};
    for (int i = 0; i < 5; i++) {
        tensor_name(name, sizeof name, o->layer, what[i]);
        t[i] = i == 0 ? expect(f, name, LENET_ST_I8, o->weight_ndim, o->weight_shape, used)
                      : expect(f, name, i == 1 ? LENET_ST_F32 : LENET_ST_I32, 1, oc, used);
        if (!t[i])
            return LENET_EFORMAT;
    }
    for (size_t j = 0; j < numel; j++) {
        o->weight[j] = (int8_t)t[0]->data[j];
        if (o->weight[j] < -127)
            return lenet__fail(LENET_EFORMAT, "%s: layer %zu: weight -128 is outside the symmetric int8 range",
                               f->path, o->layer);
    }
    for (int c = 0; c < o->oc; c++) {
        const double scale = lenet__st_float_at(t[1], (size_t)c);
        o->weight_scale[c] = (float)scale;
        o->bias[c] = i32_at(t[2], (size_t)c);
        o->multiplier[c] = i32_at(t[3], (size_t)c);
        o->shift[c] = i32_at(t[4], (size_t)c);
        if (!(scale > 0.0 && scale <= FLT_MAX))
            return lenet__fail(LENET_EFORMAT, "%s: layer %zu: weight scale %g is not a positive number", f->path,
                               o->layer, scale);
        if (o->bias[c] < -LENET_I8_MAX_BIAS || o->bias[c] > LENET_I8_MAX_BIAS)
            return lenet__fail(LENET_EFORMAT, "%s: layer %zu: bias %ld is beyond +-2^30", f->path, o->layer,
                               (long)o->bias[c]);
        if (o->multiplier[c] != 0 && o->multiplier[c] < (INT32_C(1) << 30))
            return lenet__fail(LENET_EFORMAT, "%s: layer %zu: multiplier %ld is neither 0 nor in [2^30, 2^31)",
                               f->path, o->layer, (long)o->multiplier[c]);
        if (o->shift[c] < -31 || o->shift[c] > 0)
            return lenet__fail(LENET_EFORMAT, "%s: layer %zu: shift %ld is not a right shift in [-31, 0]", f->path,
                               o->layer, (long)o->shift[c]);
    }
    return load_qparams(f, o->layer, &o->requant, used);
}

static lenet_status load_ops(const lenet_model *net, const lenet_st_file *f, int8_plan *q, size_t *used)
{
    lenet_status st = load_qparams(f, SIZE_MAX, &q->acts[0].q, used);
    for (size_t i = 0; st == LENET_OK && i < q->n_ops; i++) {
        op *o = &q->ops[i];
        qparams *out = &q->acts[o->out].q;
        *out = q->acts[o->in].q;
        switch (o->kind) {
        case OP_CONV:
        case OP_SUBSAMPLE:
            st = load_weighted(net, f, o, used);
            *out = o->requant;
            if (st == LENET_OK && o->f)
                st = load_table(f, o, o->activation, out, used);
            break;
        case OP_TABLE: st = load_table(f, o, o->layer, out, used); break;
        case OP_FLOAT:
            if (i + 1 < q->n_ops)
                st = load_qparams(f, o->layer, out, used);
            break;
        default: break;
        }
    }
    return st;
}

lenet_status lenet__plan_int8_load(lenet_plan *p, const lenet_st_file *f)
{
    int8_plan *q = lenet__calloc(1, sizeof *q);
    if (!q)
        return lenet__oom("int8 plan");
    size_t used = 0, int8_tensors = 0;
    lenet_status st = lower(p->net, q);
    if (st == LENET_OK)
        st = load_ops(p->net, f, q, &used);
    for (size_t i = 0; st == LENET_OK && i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name;
        if (strncmp(name, "int8.", 5) == 0)
            int8_tensors++;
        else if (!lenet__ckpt_is_model_tensor(name))
            st = lenet__fail(LENET_EFORMAT, "%s: tensor \"%.60s\" belongs to no plan", f->path, name);
    }
    if (st == LENET_OK && int8_tensors != used)
        st = lenet__fail(LENET_EFORMAT, "%s: %zu int8 tensors, the network's quantization has %zu", f->path,
                         int8_tensors, used);
    if (st == LENET_OK)
        st = finish(p->net, q);
    if (st != LENET_OK) {
        plan_free(q);
        return st;
    }
    adopt(p, q);
    return LENET_OK;
}

/* ---- creating ---- */

lenet_plan *lenet_plan_create_int8(const lenet_model *m, int max_batch, const lenet_tensor *calibration)
{
    if (!calibration)
        return lenet__fail_null(LENET_EINVAL, "plan_create_int8: the calibration batch is NULL");
    lenet_plan *p = lenet_plan_create(m, max_batch);
    if (!p)
        return NULL;
    int8_plan *q = NULL;
    double (*range)[2] = NULL;
    int batch = 0;
    lenet_status st = lenet__model_check_shape(p->net, calibration, "plan_create_int8: calibration", &batch);
    if (st == LENET_OK && batch < 1)
        st = lenet__fail(LENET_ESHAPE, "plan_create_int8: the calibration batch is empty");
    if (st != LENET_OK)
        goto fail;
    range = lenet__calloc(p->net->n_layers + 1, sizeof *range);
    q = lenet__calloc(1, sizeof *q);
    if (!range || !q) {
        lenet__oom("int8 plan");
        goto fail;
    }
    if (calibrate(p->net, calibration, batch, range) != LENET_OK || lower(p->net, q) != LENET_OK ||
        quantize_calibrated(p->net, q, range) != LENET_OK || finish(p->net, q) != LENET_OK)
        goto fail;
    lenet__free(range);
    adopt(p, q);
    return p;

fail:
    lenet__free(range);
    plan_free(q);
    lenet_plan_free(p);
    return NULL;
}

const lenet_plan_backend lenet__plan_int8 = {
    .name = "int8",
    .workspace = int8_workspace,
    .run = int8_run,
    .destroy = plan_free,
    .file_kind = "int8",
    .save = int8_save,
};
