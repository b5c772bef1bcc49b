/* The int8 convolution with 8 output channels across a ymm register, included once per instruction set by
 * int8_x86.c (never on its own) with:
 *   SUFFIX     name suffix (avx2, avxvnni, avxvnni_evex)
 *   I8_VNNI    1: VPDPBUSD (four u8 x s8 products per lane at once); 0: AVX2's VPMADDWD on 16-bit values (two
 *              products per lane, each lane of an output channel split in two halves summed at the end)
 *   DPBUSD     the VPDPBUSD intrinsic (VEX or EVEX encoding), when I8_VNNI
 *   I8_MASKED  1 where AVX-512 masked stores exist (VL, BW)
 *   VMAX4, VMAX1  vectors of output channels per block of 4 rows and of 1 row (registers allow)
 * Every sum is an exact integer, so the order of the products does not change a bit of the result.
 * Never installed. */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

static inline int32_t FN(load32)(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#if I8_VNNI
typedef __m256i FN(acc_t);
typedef __m256i FN(w_t);
#define ACC_ZERO _mm256_setzero_si256()
#define W_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define X_BROADCAST(p) _mm256_set1_epi32(FN(load32)(p))
#define ACC_DOT(acc, x, w) ((acc) = DPBUSD((acc), (x), (w)))
#define ACC_FINISH(acc) (acc)
#else
typedef struct {
    __m256i lo, hi; /* channels 0-3 and 4-7, two half sums per channel */
} FN(acc_t);
typedef FN(acc_t) FN(w_t);
#define ACC_ZERO ((FN(acc_t)){_mm256_setzero_si256(), _mm256_setzero_si256()})
static inline FN(w_t) FN(w_load)(const int8_t *p)
{
    const __m256i w = _mm256_loadu_si256((const __m256i *)p);
    return (FN(w_t)){_mm256_cvtepi8_epi16(_mm256_castsi256_si128(w)), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1))};
}
#define W_LOAD(p) FN(w_load)(p)
/* Four bytes as 16-bit values, repeated in every 64-bit lane. */
#define X_BROADCAST(p) _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(FN(load32)(p))))
#define ACC_DOT(acc, x, w)                                                                                   \
    do {                                                                                                     \
        (acc).lo = _mm256_add_epi32((acc).lo, _mm256_madd_epi16((x), (w).lo));                               \
        (acc).hi = _mm256_add_epi32((acc).hi, _mm256_madd_epi16((x), (w).hi));                               \
    } while (0)
/* hadd gives channels 0 1 4 5 | 2 3 6 7; the permute puts them in order. */
#define ACC_FINISH(acc) _mm256_permute4x64_epi64(_mm256_hadd_epi32((acc).lo, (acc).hi), 0xD8)
#endif

/* requantize + zero point, clamp, table: 8 outputs of channels [o, o + 8) in [0, 255]. */
static inline __attribute__((always_inline)) __m256i FN(finish)(const lenet_i8_conv *cv, __m256i acc, int o)
{
    const __m256i multiplier = _mm256_loadu_si256((const __m256i *)(cv->multiplier + o)),
                  shift = _mm256_loadu_si256((const __m256i *)(cv->shift + o)), one = _mm256_set1_epi32(1),
                  nudge = _mm256_set1_epi64x(INT64_C(1) << 30);
    acc = _mm256_add_epi32(acc, _mm256_loadu_si256((const __m256i *)(cv->bias + o)));
    /* SaturatingRoundingDoublingHighMul: bits 31..62 of acc * multiplier + 2^30 (both lane parities) */
    const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(acc, multiplier), nudge);
    const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(acc, 32), _mm256_srli_epi64(multiplier, 32)),
                                         nudge);
    const __m256i high = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
    /* RoundingDivideByPOT */
    const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, shift), one);
    const __m256i threshold = _mm256_add_epi32(_mm256_srli_epi32(mask, 1), _mm256_srli_epi32(high, 31));
    __m256i v = _mm256_sub_epi32(_mm256_srav_epi32(high, shift),
                                 _mm256_cmpgt_epi32(_mm256_and_si256(high, mask), threshold));
    v = _mm256_add_epi32(v, _mm256_set1_epi32(cv->out_zero));
    v = _mm256_max_epi32(_mm256_min_epi32(v, _mm256_set1_epi32(cv->hi)), _mm256_set1_epi32(cv->lo));
#if !I8_MASKED /* AVX-512 tables look the table up in registers (block) */
    if (cv->table)
        v = _mm256_i32gather_epi32((const int *)cv->table, v, 4);
#endif
    return v;
}

/* TFLite's 2x2 average (sum of q = u - 128, divided by 4 half away from zero) or maximum of four outputs. */
static inline __attribute__((always_inline)) __m256i FN(pool4)(lenet_i8_pool pool, __m256i a, __m256i b, __m256i c,
                                                               __m256i d)
{
    if (pool == LENET_I8_POOL_MAX2)
        return _mm256_max_epi32(_mm256_max_epi32(a, b), _mm256_max_epi32(c, d));
    const __m256i sum = _mm256_sub_epi32(_mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d)),
                                         _mm256_set1_epi32(512));
    const __m256i magnitude = _mm256_srli_epi32(_mm256_add_epi32(_mm256_abs_epi32(sum), _mm256_set1_epi32(2)), 2);
    return _mm256_add_epi32(_mm256_sign_epi32(magnitude, sum), _mm256_set1_epi32(128));
}

/* The first `count` (1 to 8) of 8 values in [0, 255] as bytes. */
static inline void FN(store)(uint8_t *dst, __m256i v, int count)
{
#if I8_MASKED
    _mm256_mask_cvtepi32_storeu_epi8(dst, (__mmask8)((1u << count) - 1), v);
#else
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    uint64_t bytes = (uint64_t)_mm_cvtsi128_si64(_mm_packus_epi16(words, words));
    if (count == 8) {
        memcpy(dst, &bytes, 8);
        return;
    }
    if (count & 4) {
        memcpy(dst, &bytes, 4);
        dst += 4;
        bytes >>= 32;
    }
    if (count & 2) {
        memcpy(dst, &bytes, 2);
        dst += 2;
        bytes >>= 16;
    }
    if (count & 1)
        *dst = (uint8_t)bytes;
#endif
}

/* R rows (output pixels, windows at in[r]) times V vectors of channels from o: the sums, without the bias. */
static inline __attribute__((always_inline)) void FN(dot)(const lenet_i8_conv *cv, int R, int V,
                                                          const uint8_t *const *in, int o, __m256i out[4][VMAX1])
{
    FN(acc_t) acc[4][VMAX1];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            acc[r][v] = ACC_ZERO;
    const size_t row = (size_t)cv->w * cv->c, step = (size_t)cv->ocp * 4;
    const int8_t *wp = cv->weight + (size_t)o * 4;
    for (int ky = 0; ky < cv->k; ky++) {
        const uint8_t *p[4];
        for (int r = 0; r < R; r++)
            p[r] = in[r] + ky * row;
        for (int g = 0; g < cv->groups; g++, wp += step) {
            FN(w_t) w[VMAX1];
            for (int v = 0; v < V; v++)
                w[v] = W_LOAD(wp + 32 * v);
            for (int r = 0; r < R; r++) {
                const __m256i x = X_BROADCAST(p[r] + 4 * g);
                for (int v = 0; v < V; v++)
                    ACC_DOT(acc[r][v], x, w[v]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            out[r][v] = ACC_FINISH(acc[r][v]);
}

/* R rows, vectors [v0, v0 + V): each row's outputs to out[r], or the four rows pooled into out[0]. */
static inline __attribute__((always_inline)) void FN(block)(const lenet_i8_conv *cv, int R, int V,
                                                            const uint8_t *const *in, uint8_t *const *out, int v0)
{
    __m256i sums[4][VMAX1];
    FN(dot)(cv, R, V, in, 8 * v0, sums);
#if I8_MASKED
    lenet_i8_table table;
    if (cv->table)
        table = lenet__i8_table_load(cv->table8);
#endif
    for (int v = 0; v < V; v++) {
        const int o = 8 * (v0 + v), count = cv->oc - o < 8 ? cv->oc - o : 8;
        __m256i q[4];
        for (int r = 0; r < R; r++)
            q[r] = FN(finish)(cv, sums[r][v], o);
#if I8_MASKED
        if (cv->table) {
            for (int r = 0; r < R; r += 2) {
                const __m512i both = lenet__i8_lookup16(
                    table, _mm512_inserti64x4(_mm512_castsi256_si512(q[r]), r + 1 < R ? q[r + 1] : q[r], 1));
                q[r] = _mm512_castsi512_si256(both);
                if (r + 1 < R)
                    q[r + 1] = _mm512_extracti64x4_epi64(both, 1);
            }
        }
#endif
        if (R == 4 && cv->pool != LENET_I8_POOL_NONE) {
            FN(store)(out[0] + o, FN(pool4)(cv->pool, q[0], q[1], q[2], q[3]), count);
        } else {
            for (int r = 0; r < R; r++)
                FN(store)(out[r] + o, q[r], count);
        }
    }
}

/* All the channel vectors of R rows, VMAX4 (R = 4) or VMAX1 (R = 1) at a time. */
static void FN(rows4)(const lenet_i8_conv *cv, const uint8_t *const *in, uint8_t *const *out)
{
    const int vectors = (cv->oc + 7) / 8;
    for (int v0 = 0; v0 < vectors; v0 += VMAX4) {
        switch (vectors - v0 < VMAX4 ? vectors - v0 : VMAX4) {
        case 1: FN(block)(cv, 4, 1, in, out, v0); break;
#if VMAX4 >= 2
        case 2: FN(block)(cv, 4, 2, in, out, v0); break;
#endif
#if VMAX4 >= 3
        case 3: FN(block)(cv, 4, 3, in, out, v0); break;
#endif
        }
    }
}

static void FN(rows1)(const lenet_i8_conv *cv, const uint8_t *in, uint8_t *out)
{
    const int vectors = (cv->oc + 7) / 8;
    for (int v0 = 0; v0 < vectors; v0 += VMAX1) {
        switch (vectors - v0 < VMAX1 ? vectors - v0 : VMAX1) {
        case 1: FN(block)(cv, 1, 1, &in, &out, v0); break;
        case 2: FN(block)(cv, 1, 2, &in, &out, v0); break;
        case 3: FN(block)(cv, 1, 3, &in, &out, v0); break;
#if VMAX1 >= 4
        case 4: FN(block)(cv, 1, 4, &in, &out, v0); break;
#endif
        }
    }
}

static void FN(conv)(const lenet_i8_conv *cv, int n, const uint8_t *x, uint8_t *y)
{
    const size_t in_size = (size_t)cv->h * cv->w * cv->c, pixel = (size_t)cv->c, out_size = lenet__i8_conv_out_size(cv);
    const size_t step_y = (size_t)cv->s * cv->w * pixel, step_x = (size_t)cv->s * pixel;
    if (cv->pool != LENET_I8_POOL_NONE) {
        const int ph = cv->oh / 2, pw = cv->ow / 2;
        for (int i = 0; i < n; i++) {
            uint8_t *dst = y + (size_t)i * out_size;
            for (int py = 0; py < ph; py++) {
                for (int px = 0; px < pw; px++, dst += cv->oc) {
                    const uint8_t *at = x + (size_t)i * in_size + (size_t)(2 * py) * step_y + (size_t)(2 * px) * step_x;
                    const uint8_t *in[4] = {at, at + step_x, at + step_y, at + step_y + step_x};
                    uint8_t *out[4] = {dst, dst, dst, dst};
                    FN(rows4)(cv, in, out);
                }
            }
        }
        return;
    }
    /* Rows are the output pixels of all samples in order, 4 at a time. */
    const size_t rows = (size_t)n * cv->oh * cv->ow;
    int i = 0, oy = 0, ox = 0;
    const uint8_t *in[4];
    uint8_t *out[4];
    size_t r = 0;
    for (; r < rows; r++) {
        const size_t t = r % 4;
        in[t] = x + (size_t)i * in_size + (size_t)oy * step_y + (size_t)ox * step_x;
        out[t] = y + r * (size_t)cv->oc;
        lenet__i8_next_position(&i, &oy, &ox, cv->oh, cv->ow);
        if (t == 3)
            FN(rows4)(cv, in, out);
    }
    for (size_t t = 0; t < rows % 4; t++)
        FN(rows1)(cv, in[t], out[t]);
}

/* lenet__i8_quantize_row_ref, 8 at a time: the same IEEE division and the same exact rounding steps. */
static void FN(quantize_row)(int count, const float *x, float scale, int zero, uint8_t *out)
{
    const __m256 divisor = _mm256_set1_ps(scale), lo = _mm256_set1_ps(-512.0f), hi = _mm256_set1_ps(512.0f),
                 half = _mm256_set1_ps(0.5f), minus_half = _mm256_set1_ps(-0.5f);
    const __m256i zeros = _mm256_set1_epi32(zero), top = _mm256_set1_epi32(255);
    int j = 0;
    for (; j + 8 <= count; j += 8) {
        /* max_ps returns its second operand when the first is NaN: NaN becomes -512 as in the reference */
        const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(_mm256_loadu_ps(x + j), divisor), lo), hi);
        const __m256i t = _mm256_cvttps_epi32(v);
        const __m256 rest = _mm256_sub_ps(v, _mm256_cvtepi32_ps(t));
        __m256i u = _mm256_sub_epi32(t, _mm256_castps_si256(_mm256_cmp_ps(rest, half, _CMP_GE_OQ)));
        u = _mm256_add_epi32(u, _mm256_castps_si256(_mm256_cmp_ps(rest, minus_half, _CMP_LE_OQ)));
        u = _mm256_max_epi32(_mm256_min_epi32(_mm256_add_epi32(u, zeros), top), _mm256_setzero_si256());
        FN(store)(out + j, u, 8);
        if (j + 8 < count && j + 16 > count)
            j = count - 16; /* the last 8, overlapping: the same values again */
    }
    lenet__i8_quantize_row_ref(count - j, x + j, scale, zero, out + j);
}

#undef ACC_ZERO
#undef W_LOAD
#undef X_BROADCAST
#undef ACC_DOT
#undef ACC_FINISH
#undef FN
#undef SUFFIX
#undef I8_VNNI
#undef DPBUSD
#undef I8_MASKED
#undef VMAX4
#undef VMAX1
