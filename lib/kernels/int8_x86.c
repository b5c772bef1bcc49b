/* The x86 int8 tables: the convolution with output channels across the lanes of a vector, four output pixels (or
 * one 2x2 pooling window) at a time, compiled for
 *   avx2        VPMADDWD on 16-bit values, 8 channels a ymm register
 *   avxvnni     VPDPBUSD (VEX), 8 channels a ymm register; on a CPU with AVX-512 VNNI but no AVX-VNNI the same
 *               code in the EVEX encoding
 *   avx512vnni  VPDPBUSD, 16 channels a zmm register (layers of 8 channels or fewer take the EVEX ymm code)
 * with `#pragma GCC target`, so one binary runs on every x86-64 and int8.c chooses at run time.  Each is tested
 * against the reference (tests/test_plan_int8.c). */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kernels/int8.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(LENET_NO_WIDE_VECTORS)
#include <immintrin.h>

extern const lenet_i8_kernels lenet__i8_kernels_avx512vnni;

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("O3")
#define SUFFIX avx2
#define I8_VNNI 0
#define I8_MASKED 0
#define VMAX4 1
#define VMAX1 3
#include "kernels/int8_x86.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
#pragma GCC optimize("O3")
#define SUFFIX avxvnni
#define I8_VNNI 1
#define DPBUSD _mm256_dpbusd_avx_epi32
#define I8_MASKED 0
#define VMAX4 2
#define VMAX1 4
#include "kernels/int8_x86.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")
#pragma GCC optimize("O3")

/* A 256-entry byte table in four zmm registers, looked up with VPERMI2B (AVX-512 VBMI): 16 values at once. */
typedef struct lenet_i8_table {
    __m512i t0, t1, t2, t3;
} lenet_i8_table;

static inline lenet_i8_table lenet__i8_table_load(const uint8_t *table)
{
    return (lenet_i8_table){_mm512_loadu_si512(table), _mm512_loadu_si512(table + 64), _mm512_loadu_si512(table + 128),
                            _mm512_loadu_si512(table + 192)};
}

/* table[v] for 16 values v in [0, 255] held in 32-bit lanes. */
static inline __attribute__((always_inline)) __m512i lenet__i8_lookup16(lenet_i8_table t, __m512i v)
{
    const __m512i low = _mm512_permutex2var_epi8(t.t0, v, t.t1), high = _mm512_permutex2var_epi8(t.t2, v, t.t3);
    const __m512i bytes = _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), low, high);
    return _mm512_and_si512(bytes, _mm512_set1_epi32(0xff));
}

/* table[v] for 64 byte values. */
static inline __attribute__((always_inline)) __m512i lenet__i8_lookup64(lenet_i8_table t, __m512i v)
{
    const __m512i low = _mm512_permutex2var_epi8(t.t0, v, t.t1), high = _mm512_permutex2var_epi8(t.t2, v, t.t3);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), low, high);
}

#define SUFFIX avxvnni_evex
#define I8_VNNI 1
#define DPBUSD _mm256_dpbusd_epi32
#define I8_MASKED 1
#define VMAX4 3
#define VMAX1 4
#include "kernels/int8_x86.h"

/* ---- 16 channels a zmm register ---- */

#define ZMAX8 2 /* vectors per block of 8 rows (two pooling windows): 16 accumulators */
#define ZMAX4 4 /* vectors per block of 4 rows: 16 accumulators */
#define ZMAX1 8
#define ZROWS 8 /* the most rows a block takes */

static inline int32_t load32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) __m512i zfinish(const lenet_i8_conv *cv, __m512i acc, int o)
{
    const __m512i multiplier = _mm512_loadu_si512(cv->multiplier + o), shift = _mm512_loadu_si512(cv->shift + o),
                  one = _mm512_set1_epi32(1), nudge = _mm512_set1_epi64(INT64_C(1) << 30);
    acc = _mm512_add_epi32(acc, _mm512_loadu_si512(cv->bias + o));
    const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(acc, multiplier), nudge);
    const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(acc, 32), _mm512_srli_epi64(multiplier, 32)),
                                         nudge);
    const __m512i high = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 31), _mm512_slli_epi64(odd, 1));
    const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, shift), one);
    const __m512i threshold = _mm512_add_epi32(_mm512_srli_epi32(mask, 1), _mm512_srli_epi32(high, 31));
    const __m512i shifted = _mm512_srav_epi32(high, shift);
    __m512i v = _mm512_mask_add_epi32(shifted, _mm512_cmpgt_epi32_mask(_mm512_and_si512(high, mask), threshold),
                                      shifted, one);
    v = _mm512_add_epi32(v, _mm512_set1_epi32(cv->out_zero));
    return _mm512_max_epi32(_mm512_min_epi32(v, _mm512_set1_epi32(cv->hi)), _mm512_set1_epi32(cv->lo));
}

static inline __attribute__((always_inline)) __m512i zpool4(lenet_i8_pool pool, __m512i a, __m512i b, __m512i c,
                                                            __m512i d)
{
    if (pool == LENET_I8_POOL_MAX2)
        return _mm512_max_epi32(_mm512_max_epi32(a, b), _mm512_max_epi32(c, d));
    const __m512i sum = _mm512_sub_epi32(_mm512_add_epi32(_mm512_add_epi32(a, b), _mm512_add_epi32(c, d)),
                                         _mm512_set1_epi32(512));
    const __m512i magnitude = _mm512_srli_epi32(_mm512_add_epi32(_mm512_abs_epi32(sum), _mm512_set1_epi32(2)), 2);
    const __m512i signed_magnitude = _mm512_mask_sub_epi32(magnitude, _mm512_cmplt_epi32_mask(sum, _mm512_setzero_si512()),
                                                           _mm512_setzero_si512(), magnitude);
    return _mm512_add_epi32(signed_magnitude, _mm512_set1_epi32(128));
}

static inline void zstore(uint8_t *dst, __m512i v, int count)
{
    _mm512_mask_cvtepi32_storeu_epi8(dst, (__mmask16)((1u << count) - 1), v);
}

static inline __attribute__((always_inline)) void zblock(const lenet_i8_conv *cv, int R, int V,
                                                         const uint8_t *const *in, uint8_t *const *out, int v0)
{
    __m512i acc[ZROWS][ZMAX1];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            acc[r][v] = _mm512_setzero_si512();
    const size_t row = (size_t)cv->w * cv->c, step = (size_t)cv->ocp * 4;
    const int8_t *wp = cv->weight + (size_t)v0 * 64;
    for (int ky = 0; ky < cv->k; ky++) {
        const uint8_t *p[ZROWS];
        for (int r = 0; r < R; r++)
            p[r] = in[r] + ky * row;
        for (int g = 0; g < cv->groups; g++, wp += step) {
            __m512i w[ZMAX1];
            for (int v = 0; v < V; v++)
                w[v] = _mm512_loadu_si512(wp + 64 * v);
            for (int r = 0; r < R; r++) {
                const __m512i x = _mm512_set1_epi32(load32(p[r] + 4 * g));
                for (int v = 0; v < V; v++)
                    acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], x, w[v]);
            }
        }
    }
    lenet_i8_table table;
    if (cv->table)
        table = lenet__i8_table_load(cv->table8);
    for (int v = 0; v < V; v++) {
        const int o = 16 * (v0 + v), count = cv->oc - o < 16 ? cv->oc - o : 16;
        __m512i q[ZROWS];
        for (int r = 0; r < R; r++) {
            q[r] = zfinish(cv, acc[r][v], o);
            if (cv->table)
                q[r] = lenet__i8_lookup16(table, q[r]);
        }
        if (R % 4 == 0 && cv->pool != LENET_I8_POOL_NONE) { /* rows 4w..4w+3: pooling window w */
            for (int r = 0; r < R; r += 4)
                zstore(out[r] + o, zpool4(cv->pool, q[r], q[r + 1], q[r + 2], q[r + 3]), count);
        } else {
            for (int r = 0; r < R; r++)
                zstore(out[r] + o, q[r], count);
        }
    }
}

static void zrows4(const lenet_i8_conv *cv, const uint8_t *const *in, uint8_t *const *out)
{
    const int vectors = (cv->oc + 15) / 16;
    for (int v0 = 0; v0 < vectors; v0 += ZMAX4) {
        switch (vectors - v0 < ZMAX4 ? vectors - v0 : ZMAX4) {
        case 1: zblock(cv, 4, 1, in, out, v0); break;
        case 2: zblock(cv, 4, 2, in, out, v0); break;
        case 3: zblock(cv, 4, 3, in, out, v0); break;
        case 4: zblock(cv, 4, 4, in, out, v0); break;
        }
    }
}

/* Two pooling windows at once: with 16 channels (one vector) four rows keep only four multiply-add chains in flight,
 * too few to fill VPDPBUSD's pipelines; eight keep eight. */
static void zrows8(const lenet_i8_conv *cv, const uint8_t *const *in, uint8_t *const *out)
{
    const int vectors = (cv->oc + 15) / 16;
    for (int v0 = 0; v0 < vectors; v0 += ZMAX8) {
        switch (vectors - v0 < ZMAX8 ? vectors - v0 : ZMAX8) {
        case 1: zblock(cv, 8, 1, in, out, v0); break;
        case 2: zblock(cv, 8, 2, in, out, v0); break;
        }
    }
}

static void zrows1(const lenet_i8_conv *cv, const uint8_t *in, uint8_t *out)
{
    const int vectors = (cv->oc + 15) / 16;
    for (int v0 = 0; v0 < vectors; v0 += ZMAX1) {
        switch (vectors - v0 < ZMAX1 ? vectors - v0 : ZMAX1) {
        case 1: zblock(cv, 1, 1, &in, &out, v0); break;
        case 2: zblock(cv, 1, 2, &in, &out, v0); break;
        case 3: zblock(cv, 1, 3, &in, &out, v0); break;
        case 4: zblock(cv, 1, 4, &in, &out, v0); break;
        case 5: zblock(cv, 1, 5, &in, &out, v0); break;
        case 6: zblock(cv, 1, 6, &in, &out, v0); break;
        case 7: zblock(cv, 1, 7, &in, &out, v0); break;
        case 8: zblock(cv, 1, 8, &in, &out, v0); break;
        }
    }
}

/* ---- 16 output pixels of a row a zmm register: layers with few output channels (a first layer) ----
 * Lane j of an operand holds 4 bytes of the window of output pixel x0 + j; VPERMI2B picks them out of 128 bytes of
 * input, so a group of 4 taps may span kernel rows (LeNet's 5x5 first layer: 7 groups for 25 taps where rows padded
 * to a multiple of 4 take 10).  Each channel's weights for a group are broadcast. */

#define PL_MAX_GROUPS 16
#define PL_MAX_OC 8

typedef struct pixel_plan {
    int groups;
    int base[PL_MAX_GROUPS];         /* each group's 128-byte window, from lane 0's window start */
    __m512i index[PL_MAX_GROUPS];    /* lane j, byte t: the tap's byte in the window */
    int32_t weight[PL_MAX_GROUPS][PL_MAX_OC];
    __m512i out_index[2];            /* NHWC byte p * oc + o from byte 16 * o + p of the channels' vectors */
    __m512i pooled_index;            /* NHWC byte p * oc + o from byte 32 * (o / 2) + 16 * (o % 2) + p */
} pixel_plan;

/* The layout of the kernel's 4-tap groups; false when the layer does not fit it. */
static bool pixel_prepare(const lenet_i8_conv *cv, pixel_plan *pl)
{
    const int row = cv->k * cv->c, taps = cv->k * row, lane_step = cv->s * cv->c;
    pl->groups = (taps + 3) / 4;
    if (cv->oc > PL_MAX_OC || pl->groups > PL_MAX_GROUPS || cv->ow < 8)
        return false;
    /* Tap t of the window is byte `within` of kernel row `ky`: offset ky * w * c + within from the window start,
     * and byte within % 4 of group within / 4 of that row in the packed weights. */
    int ky = 0, within = 0;
    for (int g = 0; g < pl->groups; g++) {
        int offset[4], lo = INT32_MAX, hi = 0;
        uint8_t w[4][PL_MAX_OC] = {{0}};
        for (int t = 0; t < 4; t++) {
            if (4 * g + t < taps) {
                offset[t] = ky * cv->w * cv->c + within;
                const int8_t *packed = cv->weight + (((size_t)ky * cv->groups + (size_t)within / 4) * (size_t)cv->ocp) * 4 +
                                       (size_t)within % 4;
                for (int o = 0; o < cv->oc; o++)
                    w[t][o] = (uint8_t)packed[4 * o];
                if (++within == row) {
                    within = 0;
                    ky++;
                }
            } else {
                offset[t] = offset[0]; /* padding: weight 0 */
            }
            lo = offset[t] < lo ? offset[t] : lo;
            hi = offset[t] > hi ? offset[t] : hi;
        }
        if (15 * lane_step + hi - lo >= 128)
            return false;
        pl->base[g] = lo;
        uint8_t index[64];
        for (int j = 0; j < 16; j++)
            for (int t = 0; t < 4; t++)
                index[4 * j + t] = (uint8_t)(j * lane_step + offset[t] - lo);
        pl->index[g] = _mm512_loadu_si512(index);
        for (int o = 0; o < cv->oc; o++) {
            const uint8_t bytes[4] = {w[0][o], w[1][o], w[2][o], w[3][o]};
            memcpy(&pl->weight[g][o], bytes, 4);
        }
    }
    uint8_t out_index[128] = {0};
    for (int p = 0, b = 0; p < 16; p++)
        for (int o = 0; o < cv->oc && b < 128; o++, b++)
            out_index[b] = (uint8_t)(16 * o + p);
    pl->out_index[0] = _mm512_loadu_si512(out_index);
    pl->out_index[1] = _mm512_loadu_si512(out_index + 64);
    uint8_t pooled_index[64] = {0};
    for (int p = 0, b = 0; p < 8; p++)
        for (int o = 0; o < cv->oc; o++, b++)
            pooled_index[b] = (uint8_t)(32 * (o / 2) + 16 * (o % 2) + p);
    pl->pooled_index = _mm512_loadu_si512(pooled_index);
    return true;
}

/* A layer's requantization in locals: stores through the byte pointers may alias anything in memory, and the
 * compiler would load every field again after each. */
typedef struct pixel_layer {
    int32_t bias[PL_MAX_OC], multiplier[PL_MAX_OC], shift[PL_MAX_OC];
    int zero, lo, hi;
    lenet_i8_pool pool;
    bool table;
} pixel_layer;

/* requantize + zero point for 16 values of channel o, as int8 (q, not u = q + 128) in 32-bit lanes, unclamped. */
static inline __attribute__((always_inline)) __m512i pixel_requantize(const pixel_layer *ly, __m512i acc, int o)
{
    const __m512i multiplier = _mm512_set1_epi32(ly->multiplier[o]), nudge = _mm512_set1_epi64(INT64_C(1) << 30);
    const int shift = ly->shift[o];
    const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(acc, multiplier), nudge);
    const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(acc, 32), multiplier), nudge);
    const __m512i high = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 31), _mm512_slli_epi64(odd, 1));
    const __m512i mask = _mm512_set1_epi32((int32_t)((INT64_C(1) << shift) - 1));
    const __m512i threshold = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(((INT64_C(1) << shift) - 1) >> 1)),
                                               _mm512_srli_epi32(high, 31));
    const __m512i shifted = _mm512_sra_epi32(high, _mm_cvtsi32_si128(shift));
    const __m512i v = _mm512_mask_add_epi32(shifted, _mm512_cmpgt_epi32_mask(_mm512_and_si512(high, mask), threshold),
                                            shifted, _mm512_set1_epi32(1));
    return _mm512_add_epi32(v, _mm512_set1_epi32(ly->zero - 128));
}

/* A pooled chunk: two rows of 16 pixels of channels o and o + 1 requantized, clamped (the narrowing saturates to
 * int8, which is the clamp to [0, 255] of u), looked up and pooled in bytes: channel o's 8 outputs in bytes 0-7,
 * channel o + 1's in bytes 16-23 (u). */
static inline __attribute__((always_inline)) __m256i pixel_pool_pair(const pixel_layer *ly,
                                                                     const lenet_i8_table *table, __m512i r0a,
                                                                     __m512i r1a, __m512i r0b, __m512i r1b, int o,
                                                                     int o_next)
{
    const __m128i b0 = _mm512_cvtsepi32_epi8(pixel_requantize(ly, r0a, o)),
                  b1 = _mm512_cvtsepi32_epi8(pixel_requantize(ly, r1a, o)),
                  b2 = _mm512_cvtsepi32_epi8(pixel_requantize(ly, r0b, o_next)),
                  b3 = _mm512_cvtsepi32_epi8(pixel_requantize(ly, r1b, o_next));
    __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(b0), b1, 1)),
                                   _mm256_inserti128_si256(_mm256_castsi128_si256(b2), b3, 1), 1);
    if (ly->lo > 0 || ly->hi < 255)
        q = _mm512_min_epi8(_mm512_max_epi8(q, _mm512_set1_epi8((char)(ly->lo - 128))), _mm512_set1_epi8((char)(ly->hi - 128)));
    __m512i u = _mm512_xor_si512(q, _mm512_set1_epi8((char)0x80)); /* q + 128 */
    if (ly->table)
        u = lenet__i8_lookup64(*table, u);
    /* the other row of the same channel, block for block */
    const __m512i swapped = _mm512_shuffle_i64x2(u, u, _MM_SHUFFLE(2, 3, 0, 1));
    if (ly->pool == LENET_I8_POOL_MAX2) {
        const __m512i column = _mm512_max_epu8(u, swapped);
        return _mm512_cvtepi16_epi8(_mm512_max_epu8(column, _mm512_srli_epi16(column, 8)));
    }
    /* TFLite's average: the sum of q over the window, divided by 4 half away from zero */
    const __m512i pairs = _mm512_maddubs_epi16(u, _mm512_set1_epi8(1));
    const __m512i sum = _mm512_sub_epi16(_mm512_add_epi16(pairs, _mm512_shuffle_i64x2(pairs, pairs, _MM_SHUFFLE(2, 3, 0, 1))),
                                         _mm512_set1_epi16(512));
    const __m512i magnitude = _mm512_srli_epi16(_mm512_add_epi16(_mm512_abs_epi16(sum), _mm512_set1_epi16(2)), 2);
    const __m512i average = _mm512_mask_sub_epi16(magnitude, _mm512_cmplt_epi16_mask(sum, _mm512_setzero_si512()),
                                                  _mm512_setzero_si512(), magnitude);
    return _mm512_cvtepi16_epi8(_mm512_add_epi16(average, _mm512_set1_epi16(128)));
}

/* requantize + zero point, clamp for 16 values of channel o (u = q + 128). */
static inline __attribute__((always_inline)) __m512i pixel_finish(const pixel_layer *ly, __m512i acc, int o)
{
    const __m512i v = _mm512_add_epi32(pixel_requantize(ly, acc, o), _mm512_set1_epi32(128));
    return _mm512_max_epi32(_mm512_min_epi32(v, _mm512_set1_epi32(ly->hi)), _mm512_set1_epi32(ly->lo));
}

/* OC channels (a constant, so the accumulators stay in registers), ROWS output rows (2: the rows of a pooling
 * window) of one 16-pixel chunk whose lane-0 windows start at in[r]: the outputs of each channel as 16 int32
 * lanes, or pooled into lanes 0-7. */
static inline __attribute__((always_inline)) void pixel_chunk(const pixel_layer *ly, const lenet_i8_table *table,
                                                              const pixel_plan *pl, int OC, int ROWS,
                                                              const uint8_t *const *in, __m512i *out)
{
    __m512i acc[2][PL_MAX_OC];
    for (int r = 0; r < ROWS; r++)
        for (int o = 0; o < OC; o++)
            acc[r][o] = _mm512_set1_epi32(ly->bias[o]);
    for (int g = 0; g < pl->groups; g++) {
        __m512i x[2];
        for (int r = 0; r < ROWS; r++) {
            const uint8_t *at = in[r] + pl->base[g];
            x[r] = _mm512_permutex2var_epi8(_mm512_loadu_si512(at), pl->index[g], _mm512_loadu_si512(at + 64));
        }
        for (int o = 0; o < OC; o++) {
            const __m512i w = _mm512_set1_epi32(pl->weight[g][o]);
            for (int r = 0; r < ROWS; r++)
                acc[r][o] = _mm512_dpbusd_epi32(acc[r][o], x[r], w);
        }
    }
    if (ROWS == 2) { /* pooled: bytes all the way */
        __m256i pooled[PL_MAX_OC / 2];
        for (int o = 0; o < OC; o += 2) {
            const int next = o + 1 < OC ? o + 1 : o;
            pooled[o / 2] = pixel_pool_pair(ly, table, acc[0][o], acc[1][o], acc[0][next], acc[1][next], o, next);
        }
        __m512i src[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
        for (int k = 0; k < (OC + 1) / 2; k++)
            src[k / 2] = _mm512_inserti64x4(src[k / 2], pooled[k], k % 2);
        out[0] = _mm512_permutex2var_epi8(src[0], pl->pooled_index, src[1]);
        return;
    }
    const __m512i even_lanes = _mm512_set_epi32(14, 12, 10, 8, 6, 4, 2, 0, 14, 12, 10, 8, 6, 4, 2, 0);
    for (int o = 0; o < OC; o++) {
        __m512i q[2];
        for (int r = 0; r < ROWS; r++) {
            q[r] = pixel_finish(ly, acc[r][o], o);
            if (ly->table)
                q[r] = lenet__i8_lookup16(*table, q[r]);
        }
        if (ROWS == 1) {
            out[o] = q[0];
        } else if (ly->pool == LENET_I8_POOL_MAX2) {
            const __m512i column = _mm512_max_epi32(q[0], q[1]);
            out[o] = _mm512_permutexvar_epi32(even_lanes,
                                              _mm512_max_epi32(column, _mm512_alignr_epi32(column, column, 1)));
        } else {
            const __m512i column = _mm512_add_epi32(q[0], q[1]);
            const __m512i sum = _mm512_sub_epi32(_mm512_add_epi32(column, _mm512_alignr_epi32(column, column, 1)),
                                                 _mm512_set1_epi32(512));
            const __m512i magnitude = _mm512_srli_epi32(_mm512_add_epi32(_mm512_abs_epi32(sum), _mm512_set1_epi32(2)), 2);
            const __m512i average = _mm512_add_epi32(
                _mm512_mask_sub_epi32(magnitude, _mm512_cmplt_epi32_mask(sum, _mm512_setzero_si512()),
                                      _mm512_setzero_si512(), magnitude),
                _mm512_set1_epi32(128));
            out[o] = _mm512_permutexvar_epi32(even_lanes, average);
        }
    }
}

/* The channels' vectors as NHWC bytes: `pixels` pixels of `oc` channels at dst. */
static inline void pixel_store(const pixel_plan *pl, int oc, const __m512i *values, int pixels, uint8_t *dst)
{
    __m512i src[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int o = 0; o < oc; o++) {
        const __m128i bytes = _mm512_cvtepi32_epi8(values[o]);
        switch (o) {
        case 0: src[0] = _mm512_inserti32x4(src[0], bytes, 0); break;
        case 1: src[0] = _mm512_inserti32x4(src[0], bytes, 1); break;
        case 2: src[0] = _mm512_inserti32x4(src[0], bytes, 2); break;
        case 3: src[0] = _mm512_inserti32x4(src[0], bytes, 3); break;
        case 4: src[1] = _mm512_inserti32x4(src[1], bytes, 0); break;
        case 5: src[1] = _mm512_inserti32x4(src[1], bytes, 1); break;
        case 6: src[1] = _mm512_inserti32x4(src[1], bytes, 2); break;
        default: src[1] = _mm512_inserti32x4(src[1], bytes, 3); break;
        }
    }
    const int total = pixels * oc;
    const __mmask64 first = total >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << total) - 1);
    _mm512_mask_storeu_epi8(dst, first, _mm512_permutex2var_epi8(src[0], pl->out_index[0], src[1]));
    if (total > 64)
        _mm512_mask_storeu_epi8(dst + 64, ((__mmask64)1 << (total - 64)) - 1,
                                _mm512_permutex2var_epi8(src[0], pl->out_index[1], src[1]));
}

static inline __attribute__((always_inline)) void pixel_conv_oc(const lenet_i8_conv *cv, const pixel_plan *pl,
                                                                int OC, int n, const uint8_t *x, uint8_t *y)
{
    const size_t in_size = (size_t)cv->h * cv->w * cv->c, out_size = lenet__i8_conv_out_size(cv);
    const size_t step_y = (size_t)cv->s * cv->w * cv->c, step_x = (size_t)cv->s * cv->c;
    const bool pooled = cv->pool != LENET_I8_POOL_NONE;
    const int out_h = pooled ? cv->oh / 2 : cv->oh, out_w = pooled ? cv->ow / 2 : cv->ow;
    const int per_chunk = pooled ? 8 : 16; /* output pixels of a 16-lane chunk */
    __m512i values[PL_MAX_OC];
    pixel_layer ly = {.zero = cv->out_zero, .lo = cv->lo, .hi = cv->hi, .pool = cv->pool, .table = cv->table != NULL};
    for (int o = 0; o < OC; o++) {
        ly.bias[o] = cv->bias[o];
        ly.multiplier[o] = cv->multiplier[o];
        ly.shift[o] = cv->shift[o];
    }
    lenet_i8_table table;
    if (cv->table)
        table = lenet__i8_table_load(cv->table8);
    for (int i = 0; i < n; i++) {
        const uint8_t *xs = x + (size_t)i * in_size;
        uint8_t *ys = y + (size_t)i * out_size;
        for (int py = 0; py < out_h; py++) {
            for (int p0 = 0; p0 < out_w; p0 += per_chunk) {
                const int pixels = out_w - p0 < per_chunk ? out_w - p0 : per_chunk;
                uint8_t *dst = ys + ((size_t)py * out_w + (size_t)p0) * (size_t)OC;
                if (pooled) {
                    const uint8_t *at = xs + (size_t)(2 * py) * step_y + (size_t)(2 * p0) * step_x;
                    const uint8_t *in[2] = {at, at + step_y};
                    pixel_chunk(&ly, &table, pl, OC, 2, in, values);
                    const int total = pixels * OC;
                    _mm512_mask_storeu_epi8(dst, total >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << total) - 1), values[0]);
                    continue;
                } else {
                    const uint8_t *in[1] = {xs + (size_t)py * step_y + (size_t)p0 * step_x};
                    pixel_chunk(&ly, &table, pl, OC, 1, in, values);
                }
                pixel_store(pl, OC, values, pixels, dst);
            }
        }
    }
}

static void pixel_conv(const lenet_i8_conv *cv, const pixel_plan *pl, int n, const uint8_t *x, uint8_t *y)
{
    switch (cv->oc) {
    case 1: pixel_conv_oc(cv, pl, 1, n, x, y); break;
    case 2: pixel_conv_oc(cv, pl, 2, n, x, y); break;
    case 3: pixel_conv_oc(cv, pl, 3, n, x, y); break;
    case 4: pixel_conv_oc(cv, pl, 4, n, x, y); break;
    case 5: pixel_conv_oc(cv, pl, 5, n, x, y); break;
    case 6: pixel_conv_oc(cv, pl, 6, n, x, y); break;
    case 7: pixel_conv_oc(cv, pl, 7, n, x, y); break;
    default: pixel_conv_oc(cv, pl, 8, n, x, y); break;
    }
}

/* lenet__i8_quantize_row_ref 16 at a time, the tail masked. */
static void quantize_row_avx512vnni(int count, const float *x, float scale, int zero, uint8_t *out)
{
    const __m512 divisor = _mm512_set1_ps(scale), lo = _mm512_set1_ps(-512.0f), hi = _mm512_set1_ps(512.0f),
                 half = _mm512_set1_ps(0.5f), minus_half = _mm512_set1_ps(-0.5f);
    const __m512i zeros = _mm512_set1_epi32(zero), one = _mm512_set1_epi32(1);
    for (int j = 0; j < count; j += 16) {
        const __mmask16 valid = count - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (count - j)) - 1);
        /* max_ps returns its second operand when the first is NaN: NaN becomes -512 as in the reference */
        const __m512 v = _mm512_min_ps(
            _mm512_max_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(valid, x + j), divisor), lo), hi);
        const __m512i t = _mm512_cvttps_epi32(v);
        const __m512 rest = _mm512_sub_ps(v, _mm512_cvtepi32_ps(t));
        __m512i u = _mm512_mask_add_epi32(t, _mm512_cmp_ps_mask(rest, half, _CMP_GE_OQ), t, one);
        u = _mm512_mask_sub_epi32(u, _mm512_cmp_ps_mask(rest, minus_half, _CMP_LE_OQ), u, one);
        u = _mm512_max_epi32(_mm512_min_epi32(_mm512_add_epi32(u, zeros), _mm512_set1_epi32(255)),
                             _mm512_setzero_si512());
        _mm512_mask_cvtepi32_storeu_epi8(out + j, valid, u);
    }
}

_Static_assert(sizeof(pixel_plan) <= LENET_I8_PREPARED_SIZE, "a pixel plan fits the prepared data");

static bool prepare_avx512vnni(const lenet_i8_conv *cv, void *out)
{
    return pixel_prepare(cv, out);
}

static void conv_avx512vnni(const lenet_i8_conv *cv, int n, const uint8_t *x, uint8_t *y)
{
    pixel_plan local;
    const pixel_plan *pl = cv->prepared_by == &lenet__i8_kernels_avx512vnni ? cv->prepared
                           : pixel_prepare(cv, &local)                      ? &local
                                                                            : NULL;
    if (pl) {
        pixel_conv(cv, pl, n, x, y);
        return;
    }
    if (cv->oc <= 8) { /* a ymm register holds them all */
        conv_avxvnni_evex(cv, n, x, y);
        return;
    }
    const size_t in_size = (size_t)cv->h * cv->w * cv->c, pixel = (size_t)cv->c;
    const size_t step_y = (size_t)cv->s * cv->w * pixel, step_x = (size_t)cv->s * pixel;
    if (cv->pool != LENET_I8_POOL_NONE) {
        /* The windows of the whole batch in output order, two at a time (a row of 5 windows pairs across rows). */
        const int ph = cv->oh / 2, pw = cv->ow / 2;
        const size_t windows = (size_t)n * ph * pw;
        const uint8_t *in[8];
        uint8_t *out[8];
        int i = 0, py = 0, px = 0;
        for (size_t wi = 0; wi < windows; wi++) {
            const size_t t = 4 * (wi % 2);
            const uint8_t *at = x + (size_t)i * in_size + (size_t)(2 * py) * step_y + (size_t)(2 * px) * step_x;
            in[t] = at;
            in[t + 1] = at + step_x;
            in[t + 2] = at + step_y;
            in[t + 3] = at + step_y + step_x;
            out[t] = out[t + 1] = out[t + 2] = out[t + 3] = y + wi * (size_t)cv->oc;
            lenet__i8_next_position(&i, &py, &px, ph, pw);
            if (t == 4)
                zrows8(cv, in, out);
        }
        if (windows % 2)
            zrows4(cv, in, out);
        return;
    }
    const size_t rows = (size_t)n * cv->oh * cv->ow;
    int i = 0, oy = 0, ox = 0;
    const uint8_t *in[4];
    uint8_t *out[4];
    for (size_t r = 0; r < rows; r++) {
        const size_t t = r % 4;
        in[t] = x + (size_t)i * in_size + (size_t)oy * step_y + (size_t)ox * step_x;
        out[t] = y + r * (size_t)cv->oc;
        lenet__i8_next_position(&i, &oy, &ox, cv->oh, cv->ow);
        if (t == 3)
            zrows4(cv, in, out);
    }
    for (size_t t = 0; t < rows % 4; t++)
        zrows1(cv, in[t], out[t]);
}
#pragma GCC pop_options

const lenet_i8_kernels lenet__i8_kernels_avx2 = {.isa = "avx2", .conv = conv_avx2, .quantize_row = quantize_row_avx2};
const lenet_i8_kernels lenet__i8_kernels_avxvnni = {.isa = "avxvnni", .conv = conv_avxvnni,
                                                   .quantize_row = quantize_row_avxvnni};
const lenet_i8_kernels lenet__i8_kernels_avxvnni_evex = {.isa = "avxvnni", .conv = conv_avxvnni_evex,
                                                        .quantize_row = quantize_row_avxvnni_evex};
const lenet_i8_kernels lenet__i8_kernels_avx512vnni = {.isa = "avx512vnni", .conv = conv_avx512vnni,
                                                      .quantize_row = quantize_row_avx512vnni,
                                                      .prepare = prepare_avx512vnni};
#endif
