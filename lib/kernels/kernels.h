/* Numeric inner loops over raw float arrays: no handles, no allocation, no error codes.
 * Letters follow the math: n samples, c channels, h x w planes, k kernel size, s stride, p padding.
 * Never installed. */
#ifndef LENET_KERNELS_H
#define LENET_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

/* C (m x n) = alpha * op(A) op(B) + beta * C, row-major, through cblas_sgemm. */
void lenet__sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc);

/* Geometry of one convolution or pooling window sweep over one sample. */
typedef struct lenet_conv_geom {
    int c, h, w;    /* input channels and size */
    int k, s, p;    /* kernel size, stride, zero padding */
    int oh, ow;     /* output size */
} lenet_conv_geom;

/* cols (c*k*k rows, oh*ow columns) from one sample x (c, h, w); padding reads as zero. */
void lenet__im2col(const lenet_conv_geom *g, const float *x, float *cols);
/* dx (c, h, w) = sum of cols scattered back to the positions im2col read them from (overwrites dx). */
void lenet__col2im(const lenet_conv_geom *g, const float *cols, float *dx);

/* Plain direct convolution of one sample, the reference the fast paths are tested against:
 * y (oc, oh, ow) = weight (oc, c, k, k) * x + bias. */
void lenet__conv2d_ref(const lenet_conv_geom *g, int oc, const float *x, const float *weight, const float *bias,
                       float *y);

/* Pooling over planes: `planes` = n * c independent (h, w) planes, each to (oh, ow).  Uses g->h, w, k, s, oh, ow. */
void lenet__avgpool_forward(const lenet_conv_geom *g, size_t planes, const float *x, float *y);
void lenet__avgpool_backward(const lenet_conv_geom *g, size_t planes, const float *dy, float *dx);
void lenet__maxpool_forward(const lenet_conv_geom *g, size_t planes, const float *x, float *y);
/* Recomputes each window's first maximum from x, so forward needs to store nothing. */
void lenet__maxpool_backward(const lenet_conv_geom *g, size_t planes, const float *x, const float *dy,
                             float *dx);

/* Elementwise activations over `count` floats; backward takes the forward output y. */
void lenet__sigmoid_forward(size_t count, const float *x, float *y);
/* Scalar libm reference for the vector sigmoid. */
void lenet__sigmoid_forward_ref(size_t count, const float *x, float *y);
void lenet__sigmoid_backward(size_t count, const float *y, const float *dy, float *dx);
void lenet__relu_forward(size_t count, const float *x, float *y);
void lenet__relu_backward(size_t count, const float *y, const float *dy, float *dx);
void lenet__tanh_forward(size_t count, const float *x, float *y);
void lenet__tanh_backward(size_t count, const float *y, const float *dy, float *dx);

/* The index of the first largest of k values: the class a row of logits predicts. */
static inline int lenet__argmax(const float *row, int k)
{
    int best = 0;
    for (int j = 1; j < k; j++)
        if (row[j] > row[best])
            best = j;
    return best;
}

/* The index of the first smallest of k values: the class a row of penalties (LeNet-5's RBF outputs) predicts. */
static inline int lenet__argmin(const float *row, int k)
{
    int best = 0;
    for (int j = 1; j < k; j++)
        if (row[j] < row[best])
            best = j;
    return best;
}

/* y[i] += b[i / inner % outer]-style bias add: each of `rows` rows of `cols` gets bias[row % nbias]. */
void lenet__add_bias_rows(size_t rows, size_t cols, const float *bias, size_t nbias, float *y);
/* db[r % nbias] += sum of row r of dy (rows x cols). */
void lenet__sum_rows_into(size_t rows, size_t cols, const float *dy, float *db, size_t nbias);

/* ---- vector kernels, one table per instruction set (dispatch.c, simd.inc) ---- */

/* The widest vector any kernel table uses, in floats: every table's vector_width and row_width are at most this
 * (static-asserted where simd.inc builds each table), so scratch laid out for it fits whichever table runs. */
#define LENET_MAX_VECTOR_FLOATS 16

/* Samples across the lanes of the sample-vectorized kernels: a lane tensor (..., LENET_LANES) holds one sample per
 * lane.  Equal to the model's chunk, so a full chunk fills every lane; a whole number of every table's vectors
 * (static-asserted in simd.inc). */
#define LENET_LANES 16

typedef struct lenet_kernels {
    const char *isa;   /* "generic", "avx2", "avx512" */
    int vector_width;  /* floats per vector: packed layouts pad output channels to a multiple of it */
    /* One sample: y (oc, oh, ow) from the padded input xp (c, h + 2p, w + 2p) and wpack from
     * lenet__conv_pack_weights (weights then bias). */
    void (*conv_forward)(const lenet_conv_geom *g, int oc, const float *xp, const float *wpack, float *y);
    /* n samples: dwpack (c*k*k rows of ocpad) += xp (n padded inputs) correlated with dyt (n blocks of
     * oh*ow rows of ocpad: the output gradient pixel-major). */
    void (*conv_grad_weight)(const lenet_conv_geom *g, int oc, int n, const float *xp, const float *dyt,
                             float *dwpack);
    void (*sigmoid_forward)(size_t count, const float *x, float *y);
    /* Row-vectorized stride-1 convolution: output columns across row_width lanes.  xp holds padded inputs with
     * rows of `stride` >= round_up(ow, row_width) + k - 1 floats (zero beyond the data); weight and bias in
     * PyTorch's layout; y in NCHW. */
    int row_width;
    void (*conv_forward_rows)(const lenet_conv_geom *g, int oc, const float *xp, int stride, const float *weight,
                              const float *bias, float *y);
    /* grad (oc, c, k, k) += n samples of xp (rows of `stride`) correlated with dyp ((oc, oh) rows of `dstride`
     * floats, zero beyond ow). */
    void (*conv_grad_weight_rows)(const lenet_conv_geom *g, int oc, int n, const float *xp, int stride,
                                  const float *dyp, int dstride, float *grad);
    /* Sample-vectorized stride-1 convolution: yt (oc, oh, ow, LENET_LANES) = bias (NULL: zero) + weight (oc, c, k, k)
     * * xt, with xt the padded input lane tensor (c, h + 2p, w + 2p, LENET_LANES): its border columns must be zero,
     * its border rows are never read. */
    void (*conv_forward_lanes)(const lenet_conv_geom *g, int oc, const float *xt, const float *weight,
                               const float *bias, float *yt);
    /* grad (oc, c, k, k) += sum over output pixels and lanes of dyt times xt shifted by each tap; dyt is the output
     * gradient lane tensor with a border of b pixels that is not read (oc, oh + 2b, ow + 2b, LENET_LANES). */
    void (*conv_grad_weight_lanes)(const lenet_conv_geom *g, int oc, const float *xt, const float *dyt, int b,
                                   float *grad);
    /* As lenet__to_lanes_ref and lenet__from_lanes_ref, transposing row_width x row_width tiles in registers. */
    void (*to_lanes)(int n, int planes, int h, int w, int p, const float *x, float *xt);
    void (*from_lanes)(int n, size_t count, const float *yt, float *y);
    /* C (m x n) = A (m x k) . B (k x n), row-major with leading dimensions, for small m: a chunk of samples times a
     * weight matrix.  Plain loops over the columns of C, so unlike OpenBLAS's small-matrix kernels it never
     * allocates; tested against lenet__sgemm. */
    void (*gemm_nn)(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc);
    /* BatchNorm's passes over one channel's count values at x[k * stride], sums in double, in partial sums of a
     * fixed layout (the same result for any thread count):
     * norm_moments: *sum += sum x, *squares += sum x^2;
     * norm_affine: y = (x - centre) * scale + shift (y at the same positions);
     * norm_backward: *sum += sum dy, *dot += sum dy (x - mean), and unless dx is NULL
     *   dx = gain * (dy - dmean - (x - mean) * invstd * dxhat_mean). */
    void (*norm_moments)(size_t count, size_t stride, const float *x, double *sum, double *squares);
    void (*norm_affine)(size_t count, size_t stride, const float *x, float centre, float scale, float shift,
                        float *y);
    void (*norm_backward)(size_t count, size_t stride, const float *x, const float *dy, double mean, double invstd,
                          double dmean, double dxhat_mean, float gain, float *dx, double *sum, double *dot);
    /* dx = dy y (1 - y), the same bits on every table. */
    void (*sigmoid_backward)(size_t count, const float *y, const float *dy, float *dx);
} lenet_kernels;

/* The table for this CPU (the widest supported, or LENET_ISA's), chosen once; thread-safe. */
const lenet_kernels *lenet__kernels(void);
/* Selects a table by name ("generic", "avx2", "avx512"; NULL: back to the default); false if this CPU or build
 * lacks it.  For tests and benchmarks, not while other threads run kernels. */
bool lenet__kernels_force(const char *isa);

/* The data layouts the channel- and row-vectorized kernels read (conv_plan.c):
 * wpack (c*k*k + 1 rows of ocpad = oc rounded up to vw): weight (oc, c, k, k) transposed tap-major, then bias. */
void lenet__conv_pack_weights(int oc, int c, int k, int vw, const float *weight, const float *bias, float *wpack);
/* xp (c, h + 2p, w + 2p) = x with a zero border. */
void lenet__conv_pad_input(const lenet_conv_geom *g, const float *x, float *xp);
/* As lenet__conv_pad_input with rows of `stride` >= w + 2p floats, zero beyond the padded row. */
void lenet__conv_pad_input_rows(const lenet_conv_geom *g, const float *x, float *xp, int stride);
/* Lane tensor (planes, h + 2p, w + 2p, LENET_LANES) from n <= LENET_LANES samples x (n, planes, h, w): sample i in
 * lane i, zero in the border and in the lanes past n. */
void lenet__to_lanes_ref(int n, int planes, int h, int w, int p, const float *x, float *xt);
/* y (n, count) from the first n lanes of the lane tensor yt (count, LENET_LANES). */
void lenet__from_lanes_ref(int n, size_t count, const float *yt, float *y);

/* ---- convolution layers: one entry point over the vector kernels' strategies (conv_plan.c) ---- */

/* How a convolution runs. */
typedef enum lenet_conv_method {
    /* The table's vector kernels, with the strategy lenet__conv_strategy chooses for each call. */
    LENET_CONV_DIRECT = 0,
    /* im2col and lenet__sgemm, one sample at a time: PartialConv2d's path, over its table densified with zeros. */
    LENET_CONV_GEMM,
} lenet_conv_method;

/* Which kernels a call runs (conv_plan.c describes each). */
typedef enum lenet_conv_strategy {
    LENET_CONV_LANES,    /* samples across the lanes (stride 1, at least LANES_MIN = 12 samples) */
    LENET_CONV_ROWS,     /* output columns across the lanes (stride 1, few channels, wide rows) */
    LENET_CONV_CHANNELS, /* output channels across the lanes */
    LENET_CONV_IM2COL,   /* im2col and GEMM (method LENET_CONV_GEMM) */
} lenet_conv_strategy;

/* A convolution layer as the entry points see it, fixed when the layer is built. */
typedef struct lenet_conv_plan {
    lenet_conv_geom g; /* one sample: input (c, h, w), kernel, stride, padding, output (oh, ow) */
    int oc;            /* output channels */
    lenet_conv_method method;
} lenet_conv_plan;

/* Floats of scratch that lenet__conv_forward and lenet__conv_backward need for any batch of up to n samples, on any
 * kernel table. */
size_t lenet__conv_workspace(const lenet_conv_plan *cp, int n);
/* The strategy the passes over a batch of n samples take on kernel table k. */
lenet_conv_strategy lenet__conv_strategy(const lenet_conv_plan *cp, const lenet_kernels *k, int n);
/* y (n, oc, oh, ow) = weight (oc, c, k, k) * x (n, c, h, w) + bias (oc), on the selected kernel table.  work is
 * lenet__conv_workspace(cp, n) floats or more of scratch: read only after being written, left undefined. */
void lenet__conv_forward(const lenet_conv_plan *cp, int n, const float *x, const float *weight, const float *bias,
                         float *y, float *work);
/* The gradients of lenet__conv_forward for the output gradient dy (n, oc, oh, ow): adds dW into grad_weight
 * (oc, c, k, k) and db into grad_bias (oc), and writes dX = W^T dY into dx (n, c, h, w) unless dx is NULL.  The
 * sums run in an order fixed by cp, n and the table, so results repeat bit for bit.  work as for forward. */
void lenet__conv_backward(const lenet_conv_plan *cp, int n, const float *x, const float *dy, const float *weight,
                          float *grad_weight, float *grad_bias, float *dx, float *work);

#endif /* LENET_KERNELS_H */
