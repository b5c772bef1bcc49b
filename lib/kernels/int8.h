/* Integer inference kernels (int8 plans, lib/plan/plan_int8.c): TFLite's integer arithmetic over raw arrays.
 *
 * Activations are int8 values q with a scale s and zero point z (real value s * (q - z)), held here as the bytes
 * u = q + 128: unsigned operands are what the dot-product instructions (VPDPBUSD) multiply with signed weights, and
 * TFLite's int8 arithmetic carries over exactly with the zero point z + 128 (every sum is the same integer).  Images
 * are NHWC per sample (c, the fastest index, contiguous), so a kernel row of a convolution is k * c contiguous bytes.
 * Weights are int8, symmetric (zero point 0); accumulators int32; requantization is TFLite's fixed-point multiply
 * (lenet__i8_requantize), so every table computes the same bytes.
 *
 * Buffers: every activation buffer a kernel reads may be read up to LENET_I8_SLACK bytes past its end (the packed
 * weights are zero there); those bytes must be initialized.  Never installed. */
#ifndef LENET_KERNELS_INT8_H
#define LENET_KERNELS_INT8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Packed weights pad output channels to a multiple of this (the widest table's int32 lanes). */
#define LENET_I8_OC_BLOCK 16
/* Bytes past the end of an activation buffer that kernels may read. */
#define LENET_I8_SLACK 128
/* The most multiply-adds into one accumulator: |bias| <= 2^30 plus 2^14 products of at most 255 * 127 stay inside
 * int32, whatever the order of the sums. */
#define LENET_I8_MAX_DEPTH 16384
#define LENET_I8_MAX_BIAS (INT32_C(1) << 30)

/* Pooling fused into a convolution's output: 2x2 windows, stride 2, over the activated outputs (TFLite's integer
 * AveragePool: the window's int8 sum divided by 4, rounded half away from zero; MaxPool exact).  Output pixels no
 * window covers (an odd last row or column) are not computed. */
typedef enum lenet_i8_pool {
    LENET_I8_POOL_NONE = 0,
    LENET_I8_POOL_AVG2,
    LENET_I8_POOL_MAX2,
} lenet_i8_pool;

/* A convolution over uint8 NHWC images, or a Linear layer as a 1x1 convolution of a 1x1 image of `c` channels:
 *   acc[o] = bias[o] + sum over the kernel of weight * u      (int32; bias already holds -zero_in * sum of weights)
 *   v = clamp(requantize(acc[o], multiplier[o], shift[o]) + out_zero, lo, hi), then table[v] if there is a table,
 * then the fused pooling. */
typedef struct lenet_i8_conv {
    int c, h, w;    /* input per sample, padding included (the caller writes the border with the zero point) */
    int k, s;       /* square kernel, stride */
    int oh, ow, oc; /* convolution output per sample (before pooling) */
    int groups;     /* 4-byte groups per kernel row: ceil(k * c / 4) */
    int ocp;        /* oc rounded up to LENET_I8_OC_BLOCK */
    const int8_t *weight;      /* [k][groups][ocp][4]: row ky, byte 4g + t of the row, channel o; zero beyond */
    const int32_t *bias;       /* [ocp] */
    const int32_t *multiplier; /* [ocp], 0 or in [2^30, 2^31) */
    const int32_t *shift;      /* [ocp], right shifts in [0, 31] */
    int out_zero, lo, hi;      /* uint8 domain: 0 <= lo <= hi <= 255 */
    const int32_t *table;      /* NULL, or 256 outputs in [0, 255] indexed by the clamped value */
    const uint8_t *table8;     /* the same as bytes (when table is not NULL) */
    lenet_i8_pool pool;
    /* What table prepared_by's prepare made of the layer once (NULL: nothing), so its conv need not on every call;
     * other tables ignore it. */
    const void *prepared;
    const struct lenet_i8_kernels *prepared_by;
} lenet_i8_conv;

/* Bytes a table's prepare may write for one layer. */
#define LENET_I8_PREPARED_SIZE 2048

/* Output bytes per sample of a convolution: (oh, ow, oc), or (oh / 2, ow / 2, oc) when pooled. */
size_t lenet__i8_conv_out_size(const lenet_i8_conv *cv);

typedef struct lenet_i8_kernels {
    const char *isa; /* "generic", "avx2", "avxvnni", "avx512vnni" */
    /* y (n samples of lenet__i8_conv_out_size bytes) = the convolution of x (n samples of h * w * c bytes). */
    void (*conv)(const lenet_i8_conv *cv, int n, const uint8_t *x, uint8_t *y);
    /* out[j] = clamp(round(x[j] / scale) + zero, 0, 255) over count floats, as lenet__i8_quantize_row_ref. */
    void (*quantize_row)(int count, const float *x, float scale, int zero, uint8_t *out);
    /* NULL, or: writes what conv works out for a layer (its own layout of the weights) to out, LENET_I8_PREPARED_SIZE
     * bytes aligned to 64; false when the table's conv needs nothing for the layer. */
    bool (*prepare)(const lenet_i8_conv *cv, void *out);
} lenet_i8_kernels;

/* The table for this CPU, chosen once: the widest, or the one LENET_ISA names (generic, avx2, avxvnni, avx512vnni;
 * avx512 means avx512vnni, and a name this CPU lacks gives the widest it has below it).  Thread-safe. */
const lenet_i8_kernels *lenet__i8_kernels(void);
/* Selects a table by name (NULL: back to the default); false if this CPU or build lacks it.  For tests and
 * benchmarks, not while other threads run kernels. */
bool lenet__i8_kernels_force(const char *isa);
/* The names of the tables this CPU and build can run, narrowest first; returns how many (at most max). */
size_t lenet__i8_kernels_available(const char **names, size_t max);

/* Steps (i, y, x) to the next of a batch's h x w positions in order (x fastest, then y, then the sample i): the
 * kernels walk a batch's output pixels or pooling windows as one sequence, so groups of them span rows and samples. */
static inline void lenet__i8_next_position(int *i, int *y, int *x, int h, int w)
{
    if (++*x == w) {
        *x = 0;
        if (++*y == h) {
            *y = 0;
            ++*i;
        }
    }
}

/* ---- TFLite's fixed-point arithmetic (int8.c) ---- */

/* QuantizeMultiplier: m (>= 0) = multiplier * 2^(shift - 31) with multiplier 0 or in [2^30, 2^31); multipliers
 * below 2^-31 become 0.  *shift is negative for m < 0.5 (right shifts). */
void lenet__i8_quantize_multiplier(double m, int32_t *multiplier, int *shift);
/* MultiplyByQuantizedMultiplier for right shifts: RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc,
 * multiplier), right_shift), right_shift in [0, 31]. */
static inline int32_t lenet__i8_requantize(int32_t acc, int32_t multiplier, int right_shift)
{
    /* The doubling high multiply rounds half away from zero; with multiplier >= 0 it never saturates. */
    const int64_t product = (int64_t)acc * multiplier;
    const int64_t nudge = product >= 0 ? (INT64_C(1) << 30) : 1 - (INT64_C(1) << 30);
    const int32_t high = (int32_t)((product + nudge) / (INT64_C(1) << 31));
    /* Rounding arithmetic shift: half away from zero. */
    const int32_t mask = (int32_t)((INT64_C(1) << right_shift) - 1);
    const int32_t remainder = high & mask, threshold = (mask >> 1) + (high < 0);
    return (high >> right_shift) + (remainder > threshold);
}

/* ---- the reference convolution, and the layouts ---- */

/* The plain C convolution every table is tested against (the generic table's). */
void lenet__i8_conv_ref(const lenet_i8_conv *cv, int n, const uint8_t *x, uint8_t *y);
/* Packs weights given per output channel as (k, k, c) rows (OHWI, TFLite's layout) into cv->weight's layout:
 * out has k * groups * ocp * 4 bytes. */
void lenet__i8_pack_weights(int oc, int k, int c, int groups, int ocp, const int8_t *ohwi, int8_t *out);

/* ---- the other integer layers: plain C, the same code on every table ---- */

/* u = clamp(round(x / scale) + zero, 0, 255) over count floats: x / scale rounded half away from zero as TFLite's
 * Quantize, after clamping it to [-512, 512] (NaN to -512, so it gives 0). */
void lenet__i8_quantize_row_ref(int count, const float *x, float scale, int zero, uint8_t *out);
/* x (n, c, h, w) floats to y (n, h + 2 pad, w + 2 pad, c) bytes with table k's quantize_row, the border `zero`. */
void lenet__i8_quantize(const lenet_i8_kernels *k, int n, int c, int h, int w, int pad, const float *x, float scale,
                        int zero, uint8_t *y);
/* x (n, h, w, c) bytes to y (n, c, h, w) floats: y = scale * (u - zero). */
void lenet__i8_dequantize(int n, int c, int h, int w, const uint8_t *x, float scale, int zero, float *y);
/* x (n, h, w, c) to y (n, h + 2 pad, w + 2 pad, c) with a border of `zero`. */
void lenet__i8_pad(int n, int c, int h, int w, int pad, const uint8_t *x, int zero, uint8_t *y);
/* y = table[x] over count bytes. */
void lenet__i8_lookup(size_t count, const uint8_t *table, const uint8_t *x, uint8_t *y);
/* y = max(x, lo) over count bytes: ReLU with the input's own scale and zero point (lo). */
void lenet__i8_clamp_below(size_t count, uint8_t lo, const uint8_t *x, uint8_t *y);
/* Pooling of NHWC images x (n, h, w, c) with k x k windows of stride s into (n, oh, ow, c): max, or TFLite's integer
 * average (window sum of q = u - 128 divided by k * k, rounded half away from zero). */
void lenet__i8_pool(bool average, int n, int c, int h, int w, int k, int s, int oh, int ow, const uint8_t *x,
                    uint8_t *y);

/* LeNet-5's subsampling in integers: per channel o of an NHWC image, k x k windows of stride s,
 *   acc = bias[o] + weight[o] * (window sum of u - k * k * in_zero),
 * then requantized, clamped and looked up as lenet_i8_conv's outputs (bias without the zero-point term). */
typedef struct lenet_i8_subsample {
    int c, h, w, k, s, oh, ow;
    int in_zero;
    const int32_t *weight, *bias, *multiplier, *shift; /* [c]; weight in [-127, 127] */
    int out_zero, lo, hi;
    const int32_t *table; /* NULL or 256 */
} lenet_i8_subsample;

void lenet__i8_subsample(const lenet_i8_subsample *ss, int n, const uint8_t *x, uint8_t *y);

#endif /* LENET_KERNELS_INT8_H */
