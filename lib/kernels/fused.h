/* Fused inference kernels for plans (lib/plan/plan_fused.c): a convolution or Linear layer together with the
 * activation and pooling after it, in one pass whose outputs are written once, straight into the layout the next
 * layer reads.  Two families:
 *   lanes   a batch, one sample per lane of a lane tensor (..., LENET_LANES) from the input to the output;
 *   sample  one image, its output columns (row kernel), output channels (channel kernel) or Linear outputs across
 *           the lanes.
 * One table per instruction set (fused.c compiles fused.inc once per set), always the set lenet__kernels() chose,
 * so LENET_ISA and lenet__kernels_force select these too.
 * Letters follow the math: c input channels, oc output channels, k kernel, p padding, oh x ow convolution output.
 * Never installed. */
#ifndef LENET_KERNELS_FUSED_H
#define LENET_KERNELS_FUSED_H

#include <stddef.h>

#include "kernels/kernels.h"

/* An elementwise activation. */
typedef enum lenet_act {
    LENET_ACT_NONE = 0,
    LENET_ACT_SIGMOID, /* 1 / (1 + e^-x), within 6 ulp of the layers' sigmoid (5 measured), saturating as they do */
    LENET_ACT_RELU,    /* x < 0 ? 0 : x: -0 and NaN pass */
    LENET_ACT_TANH,    /* within 4 ulp of tanhf (3 measured), -0 and NaN passing */
} lenet_act;

typedef enum lenet_pool {
    LENET_POOL_NONE = 0,
    LENET_POOL_AVG, /* mean of the window, summed as the layers' kernel sums 2x2 windows: (a + b) + (c + d) */
    LENET_POOL_MAX, /* first maximum of the window in row order; NaN wins, as in the layers' kernel */
} lenet_pool;

/* What becomes of each output of a convolution before it is stored: `act`, then, unless pool is NONE, the mean or
 * maximum of each window of pool_k x pool_k at stride pool_s, then `act_after` on each pooled value.  The
 * convolution kernels take only pooling of 2x2 windows at stride 2 (LeNet's, done in registers); lenet_fused_map
 * takes any window. */
typedef struct lenet_epilogue {
    lenet_act act;
    lenet_pool pool;
    int pool_k, pool_s;
    lenet_act act_after;
} lenet_epilogue;

/* True when the convolution kernels can pool for this epilogue themselves. */
static inline bool lenet__fused_pools_in_registers(const lenet_epilogue *e)
{
    return e->pool == LENET_POOL_NONE || (e->pool_k == 2 && e->pool_s == 2);
}

/* Where a kernel writes (or reads) an image of (channels, rows, columns): element (c, y, x) at
 * data[c * plane + y * row + x * col], where col is LENET_LANES for lane tensors (each element a lane group of
 * LENET_LANES floats) and 1 for one sample. */
typedef struct lenet_view {
    float *data;
    size_t plane, row;
} lenet_view;

/* Row kernels read full vectors of input columns: a one-sample input for them has rows of at least this many floats
 * (the output width rounded up to the widest vector, plus the kernel's reach), zero beyond the padded input row, and
 * LENET_MAX_VECTOR_FLOATS floats of slack after the last row. */
static inline int lenet__fused_row_stride(const lenet_conv_geom *g)
{
    const int wide = (g->ow + LENET_MAX_VECTOR_FLOATS - 1) / LENET_MAX_VECTOR_FLOATS * LENET_MAX_VECTOR_FLOATS;
    const int need = wide + g->k - 1, padded = g->w + 2 * g->p;
    return need > padded ? need : padded;
}

/* Channel kernels read weights packed tap-major with the output channels rounded up to this (lenet__conv_pack_weights
 * with vw = LENET_MAX_VECTOR_FLOATS), whatever the table's own width; Linear weights are packed transposed, (in,
 * round_up(out, LENET_MAX_VECTOR_FLOATS)), for both families. */
#define LENET_FUSED_PAD LENET_MAX_VECTOR_FLOATS

/* The fewest samples of a lane group that any table runs on lane tensors (see lanes_min). */
#define LENET_FUSED_LANES_MIN 12

typedef struct lenet_fused_kernels {
    const char *isa; /* the name of the lenet__kernels() table it goes with */
    /* Fewest samples of a group (up to LENET_LANES) for which one pass over a lane tensor costs less than that many
     * one-sample passes: a lane group costs the same whatever its count (measured on the d2l LeNet, bench/README.md,
     * at least LENET_FUSED_LANES_MIN). */
    int lanes_min;

    /* ---- lanes: LENET_LANES samples, one per lane ---- */

    /* Stride-1 convolution of the padded input lane tensor xt (c, h + 2p, w + 2p, LENET_LANES; its border zero),
     * weight (oc, c, k, k) and bias (oc) as PyTorch lays them out, then the epilogue (pooling only if
     * lenet__fused_pools_in_registers), written to y (col = LENET_LANES) at the (pooled) output positions. */
    void (*conv_lanes)(const lenet_conv_geom *g, int oc, const float *xt, const float *weight, const float *bias,
                       const lenet_epilogue *e, const lenet_view *y);
    /* yt (out, LENET_LANES) = act(bias + W x) for xt (in, LENET_LANES) and W packed transposed, (in, ldw). */
    void (*linear_lanes)(int in, int out, const float *xt, const float *wt, int ldw, const float *bias, lenet_act act,
                         float *yt);

    /* ---- one sample ---- */

    /* The same convolution and epilogue for one sample with its output columns across the lanes: xp (c, h + 2p,
     * rows of xrow >= lenet__fused_row_stride floats) with a zero border, slack as that function says; y with
     * col = 1. */
    void (*conv_rows)(const lenet_conv_geom *g, int oc, const float *xp, int xrow, const float *weight,
                      const float *bias, const lenet_epilogue *e, const lenet_view *y);
    /* The same with the output channels across the lanes: xp as for conv_rows (any xrow >= w + 2p), wpack from
     * lenet__conv_pack_weights(oc, c, k, LENET_FUSED_PAD, ...) (taps, then the bias). */
    void (*conv_channels)(const lenet_conv_geom *g, int oc, const float *xp, int xrow, const float *wpack,
                          const lenet_epilogue *e, const lenet_view *y);
    /* y (out) = act(bias + W x) for one sample x (in), W packed as for linear_lanes. */
    void (*linear_sample)(int in, int out, const float *x, const float *wt, int ldw, const float *bias, lenet_act act,
                          float *y);

    /* ---- both ---- */

    /* A pooling or activation layer on its own, or a pooling the convolution kernels cannot do:
     * y (c, oh, ow) = act_after(pool(act(x))) over windows of g->k at stride g->s (g->k = g->s = 1 and pool NONE:
     * only the activations; e->pool_k and pool_s are not read), for x (c, h, w) at x[c * xplane + y * xrow + x *
     * lanes], each element `lanes` floats (LENET_LANES or 1), y likewise with its own plane and row. */
    void (*map)(const lenet_conv_geom *g, const lenet_epilogue *e, int lanes, const float *x, size_t xplane,
                size_t xrow, const lenet_view *y);
} lenet_fused_kernels;

/* The fused table that goes with lenet__kernels(); thread-safe. */
const lenet_fused_kernels *lenet__fused_kernels(void);

#endif /* LENET_KERNELS_FUSED_H */
