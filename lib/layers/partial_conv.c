/* PartialConv2d: a valid, stride-1 convolution in which output map o reads only the input maps that a
 * connection table selects: y[o] = bias[o] + sum_{i : table[o][i]} weight[o, i] * x[i].  LeNet-5's C3 is one,
 * with the table of LeCun et al. 1998, Table I (lenet_lenet5_c3()): "to break the symmetry in the network",
 * 6 maps read 3 contiguous S2 maps, 6 read 4 contiguous, 3 read 4 non-contiguous and 1 reads all 6.
 *
 * Parameters: "weight" (connections, k, k), the kernels of the table's connections numbered output-major
 * (output map 0's inputs in increasing order first), and "bias" (out_channels).  C3: 60 * 25 + 16 = 1,516.
 * The passes are a dense convolution's, through the kernels' entry point (lib/kernels/conv_plan.c) with its im2col
 * and GEMM method, over a dense (out, in, k, k) weight tensor with zeros where the table has no connection
 * (C3: 240k multiply-adds where 150k would do, but at GEMM speed). */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "layers/layer.h"

/* The table travels in the layer's constructor arguments (for checkpoints): 48 bits per double, 5 doubles. */
#define TABLE_BITS_PER_ARG 48
#define TABLE_ARGS 5
#define MAX_TABLE (TABLE_BITS_PER_ARG * TABLE_ARGS)

typedef struct partial_conv {
    lenet_layer base;
    int out_channels, in_channels, kernel_size;
    int n_conn;                   /* connections (input-output map pairs) of the table */
    int conn_in[MAX_TABLE];       /* input map of connection c */
    int conn_out[MAX_TABLE];      /* output map of connection c */
    int first[MAX_TABLE + 1];     /* connections of output map o: [first[o], first[o + 1]) */
    lenet_conv_plan plan;         /* the dense convolution, set by setup */
} partial_conv;

/* LeCun et al. 1998, Table I: rows are S2's 6 maps, columns C3's 16 maps; 'X' marks a connection. */
static const char *const lenet5_table[6] = {
    "X   XXX  XXXX XX",
    "XX   XXX  XXXX X",
    "XXX   XXX  X XXX",
    " XXX  XXXX  X XX",
    "  XXX  XXXX XX X",
    "   XXX  XXXX XXX",
};

static lenet_status partial_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    const partial_conv *pc = (const partial_conv *)l;
    lenet_status st = lenet__expect_image(l, in);
    if (st != LENET_OK)
        return st;
    if (in->dim[0] != pc->in_channels)
        return lenet__fail(LENET_ESHAPE, "PartialConv2d: input has %d maps, the connection table has %d", in->dim[0],
                           pc->in_channels);
    if (in->dim[1] < pc->kernel_size || in->dim[2] < pc->kernel_size)
        return lenet__fail(LENET_ESHAPE, "PartialConv2d: kernel %dx%d is larger than the input %dx%d",
                           pc->kernel_size, pc->kernel_size, in->dim[1], in->dim[2]);
    *out = (lenet_shape){.ndim = 3,
                         .dim = {pc->out_channels, in->dim[1] - pc->kernel_size + 1,
                                 in->dim[2] - pc->kernel_size + 1}};
    return LENET_OK;
}

static lenet_status partial_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    partial_conv *pc = (partial_conv *)l;
    const lenet_conv_geom g = {.c = pc->in_channels, .h = l->in.dim[1], .w = l->in.dim[2], .k = pc->kernel_size,
                               .s = 1, .p = 0, .oh = l->out.dim[1], .ow = l->out.dim[2]};
    pc->plan = (lenet_conv_plan){.g = g, .oc = pc->out_channels, .method = LENET_CONV_GEMM};
    int k = pc->kernel_size;
    specs[0] = (lenet_param_spec){.suffix = "weight", .ndim = 3, .shape = {pc->n_conn, k, k}, .trainable = true};
    specs[1] = (lenet_param_spec){.suffix = "bias", .ndim = 1, .shape = {pc->out_channels}, .trainable = true};
    *count = 2;
    return LENET_OK;
}

/* Each output map has its own fan-in: (inputs it reads) * k * k.  LENET_INIT_LECUN gives C3's maps that read
 * 3, 4 and 6 S2 maps the bounds 2.4/75, 2.4/100 and 2.4/150 for their kernels and their bias. */
static void partial_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    const partial_conv *pc = (const partial_conv *)l;
    size_t k2 = (size_t)pc->kernel_size * pc->kernel_size;
    /* Xavier's fan-out: the kernels reading one input map, on average. */
    size_t fan_out = ((size_t)pc->n_conn + (size_t)pc->in_channels - 1) / (size_t)pc->in_channels * k2;
    for (int o = 0; o < pc->out_channels; o++) {
        size_t fan_in = (size_t)(pc->first[o + 1] - pc->first[o]) * k2;
        /* Initialise map o alone through the shared weight/bias helper, on a view of its slice. */
        lenet_layer view = *l;
        view.param[0] = l->param[0] + (size_t)pc->first[o] * k2;
        view.param_numel[0] = fan_in;
        view.param[1] = l->param[1] + o;
        view.param_numel[1] = 1;
        lenet__init_weight_bias(&view, scheme, rng, fan_in ? fan_in : 1, fan_out);
    }
}

static size_t dense_size(const partial_conv *pc)
{
    return (size_t)pc->out_channels * pc->in_channels * pc->kernel_size * pc->kernel_size;
}

/* Scratch of one call on n samples: the dense weights (out, in, k, k) with zeros where the table has no connection,
 * their gradient, the squared inputs of the Gauss-Newton pass, then the convolution's own. */
typedef struct partial_work {
    float *dense, *ddense, *x_squared, *conv;
} partial_work;

/* Floats rounded up to whole vectors, so each buffer starts where the previous one's last vector ends. */
static size_t whole_vectors(size_t floats)
{
    return (floats + LENET_MAX_VECTOR_FLOATS - 1) / LENET_MAX_VECTOR_FLOATS * LENET_MAX_VECTOR_FLOATS;
}

static size_t work_layout(const partial_conv *pc, int n, float *base, partial_work *w)
{
    const size_t dense = whole_vectors(dense_size(pc)), x_squared = whole_vectors((size_t)n * pc->base.in_size);
    if (base)
        *w = (partial_work){.dense = base, .ddense = base + dense, .x_squared = base + 2 * dense,
                            .conv = base + 2 * dense + x_squared};
    return 2 * dense + x_squared + lenet__conv_workspace(&pc->plan, n);
}

static size_t partial_workspace(const lenet_layer *l, int n)
{
    return work_layout((const partial_conv *)l, n, NULL, NULL);
}

/* dense[o][i][t] = weight[c][t] (squared when asked) for each connection c = (o, i), else 0. */
static void densify(const partial_conv *pc, const float *weight, float *dense, bool squared)
{
    const size_t k2 = (size_t)pc->kernel_size * pc->kernel_size, row = (size_t)pc->in_channels * k2;
    memset(dense, 0, sizeof(float) * dense_size(pc));
    for (int c = 0; c < pc->n_conn; c++) {
        const float *src = weight + (size_t)c * k2;
        float *dst = dense + (size_t)pc->conn_out[c] * row + (size_t)pc->conn_in[c] * k2;
        for (size_t t = 0; t < k2; t++)
            dst[t] = squared ? src[t] * src[t] : src[t];
    }
}

/* y = dense * x + bias */
static void partial_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const partial_conv *pc = (const partial_conv *)l;
    partial_work w;
    work_layout(pc, p->n, p->work, &w);
    densify(pc, l->param[0], w.dense, false);
    lenet__conv_forward(&pc->plan, p->n, p->x, w.dense, l->param[1], y, w.conv);
}

/* Backward, and with `squared` its Gauss-Newton twin (linear in x and in the weights: the same products over
 * squared inputs and weights, with hy in place of dy): the dense convolution's
 *   ddense += dy correlated with x,  dbias[o] += sum dy[o],  dx = dense^T dy,
 * then the connections' gradients gathered from ddense. */
static void partial_pass(const partial_conv *pc, const lenet_pass *p, const float *dy, float *dx, bool squared)
{
    const lenet_layer *l = &pc->base;
    const size_t k2 = (size_t)pc->kernel_size * pc->kernel_size, ckk = (size_t)pc->in_channels * k2;
    partial_work w;
    work_layout(pc, p->n, p->work, &w);
    densify(pc, l->param[0], w.dense, squared);
    const float *x = p->x;
    if (squared) {
        const size_t count = (size_t)p->n * l->in_size;
        for (size_t t = 0; t < count; t++)
            w.x_squared[t] = x[t] * x[t];
        x = w.x_squared;
    }
    memset(w.ddense, 0, sizeof(float) * dense_size(pc));
    lenet__conv_backward(&pc->plan, p->n, x, dy, w.dense, w.ddense, p->grads[1], dx, w.conv);
    for (int c = 0; c < pc->n_conn; c++) {
        const float *src = w.ddense + (size_t)pc->conn_out[c] * ckk + (size_t)pc->conn_in[c] * k2;
        float *grad = p->grads[0] + (size_t)c * k2;
        for (size_t t = 0; t < k2; t++)
            grad[t] += src[t];
    }
}

static void partial_backward(const lenet_layer *l, const lenet_pass *p)
{
    partial_pass((const partial_conv *)l, p, p->dy, p->dx, false);
}

static void partial_backward_gn(const lenet_layer *l, const lenet_pass *p, const float *hy, float *hx)
{
    partial_pass((const partial_conv *)l, p, hy, hx, true);
}

/* Each unit of map o reads (its inputs) * k * k values plus the bias: C3 has 100 * (60 * 25 + 16) = 151,600. */
static size_t partial_connections(const lenet_layer *l)
{
    const partial_conv *pc = (const partial_conv *)l;
    size_t plane_out = (size_t)pc->plan.g.oh * pc->plan.g.ow, k2 = (size_t)pc->kernel_size * pc->kernel_size;
    return plane_out * ((size_t)pc->n_conn * k2 + (size_t)pc->out_channels);
}

static const lenet_layer_ops partial_ops = {
    .name = "PartialConv2d",
    .infer_shape = partial_infer_shape,
    .setup = partial_setup,
    .init = partial_init,
    .workspace = partial_workspace,
    .forward = partial_forward,
    .backward = partial_backward,
    .connections = partial_connections,
    .backward_gn = partial_backward_gn,
};

lenet_layer *lenet_partial_conv2d(int out_channels, int in_channels, int kernel_size, const unsigned char *table)
{
    if (out_channels < 1 || in_channels < 1 || kernel_size < 1 || !table)
        return lenet__fail_null(LENET_EINVAL,
                                "PartialConv2d: out_channels %d, in_channels %d, kernel_size %d must be >= 1 and the "
                                "table not NULL",
                                out_channels, in_channels, kernel_size);
    if ((long)out_channels * in_channels > MAX_TABLE)
        return lenet__fail_null(LENET_EINVAL, "PartialConv2d: a %dx%d table exceeds the %d entries supported",
                                out_channels, in_channels, MAX_TABLE);
    double args[3 + TABLE_ARGS] = {out_channels, in_channels, kernel_size};
    int cells = out_channels * in_channels;
    for (int a = 0; a < TABLE_ARGS; a++) {
        double word = 0.0, bit = 1.0;
        for (int b = 0; b < TABLE_BITS_PER_ARG; b++, bit *= 2.0) {
            int cell = a * TABLE_BITS_PER_ARG + b;
            if (cell < cells && table[cell])
                word += bit;
        }
        args[3 + a] = word;
    }
    partial_conv *pc = lenet__layer_alloc(sizeof *pc, &partial_ops, 3 + TABLE_ARGS, args);
    if (!pc)
        return NULL;
    pc->out_channels = out_channels;
    pc->in_channels = in_channels;
    pc->kernel_size = kernel_size;
    for (int o = 0; o < out_channels; o++) {
        pc->first[o] = pc->n_conn;
        for (int i = 0; i < in_channels; i++) {
            if (table[o * in_channels + i]) {
                pc->conn_in[pc->n_conn] = i;
                pc->conn_out[pc->n_conn] = o;
                pc->n_conn++;
            }
        }
    }
    pc->first[out_channels] = pc->n_conn;
    if (pc->n_conn == 0) {
        lenet_layer_free(&pc->base);
        return lenet__fail_null(LENET_EINVAL, "PartialConv2d: the connection table connects nothing");
    }
    return &pc->base;
}

/* For the layer registry (checkpoints): rebuilds the layer from its 8 constructor arguments. */
lenet_layer *lenet__partial_conv2d_from_args(const double *args);

lenet_layer *lenet__partial_conv2d_from_args(const double *args)
{
    int out_channels = (int)args[0], in_channels = (int)args[1];
    if (out_channels < 1 || in_channels < 1 || (long)out_channels * in_channels > MAX_TABLE)
        return lenet__fail_null(LENET_EINVAL, "PartialConv2d: bad table size %dx%d", out_channels, in_channels);
    unsigned char table[MAX_TABLE] = {0};
    int cells = out_channels * in_channels;
    for (int a = 0; a < TABLE_ARGS; a++) {
        double word = args[3 + a];
        if (!(word >= 0.0) || word != floor(word) || word >= ldexp(1.0, TABLE_BITS_PER_ARG))
            return lenet__fail_null(LENET_EINVAL, "PartialConv2d: table word %d (%g) is not a %d-bit integer", a, word,
                                    TABLE_BITS_PER_ARG);
        for (int b = 0; b < TABLE_BITS_PER_ARG; b++) {
            int bit = (int)fmod(floor(word / ldexp(1.0, b)), 2.0);
            int cell = a * TABLE_BITS_PER_ARG + b;
            if (bit && cell >= cells)
                return lenet__fail_null(LENET_EINVAL, "PartialConv2d: table bit %d is outside the %dx%d table", cell,
                                        out_channels, in_channels);
            if (bit)
                table[cell] = 1;
        }
    }
    return lenet_partial_conv2d(out_channels, in_channels, (int)args[2], table);
}

void lenet_lenet5_c3_table(unsigned char table[16 * 6])
{
    if (!table)
        return;
    for (int o = 0; o < 16; o++)
        for (int i = 0; i < 6; i++)
            table[o * 6 + i] = lenet5_table[i][o] == 'X';
}

lenet_layer *lenet_lenet5_c3(void)
{
    unsigned char table[16 * 6];
    lenet_lenet5_c3_table(table);
    return lenet_partial_conv2d(16, 6, 5, table);
}
