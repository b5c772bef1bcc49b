/* Integer inference kernels: TFLite's fixed-point arithmetic, the reference convolution (the generic table), the
 * other integer layers in plain C (one code for every table), and the choice of table at run time: the widest the
 * CPU has among AVX-512 VNNI, AVX-VNNI and AVX2 (int8_x86.c), or the one LENET_ISA names. */
/* Inner loops: let the compiler vectorize them whatever the build type (as pool.c). */
#pragma GCC optimize("O3")
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/int8.h"

/* ---- fixed-point arithmetic ---- */

void lenet__i8_quantize_multiplier(double m, int32_t *multiplier, int *shift)
{
    /* TFLite's QuantizeMultiplier: m = q * 2^shift with q in [0.5, 1), q as a Q31 number rounded half away from
     * zero; a q that rounds up to 1 becomes 0.5 with the next shift; below 2^-31 everything would shift out. */
    if (!(m > 0.0)) {
        *multiplier = 0;
        *shift = 0;
        return;
    }
    int exponent;
    const double q = frexp(m, &exponent);
    int64_t fixed = (int64_t)round(q * (double)(INT64_C(1) << 31));
    if (fixed == (INT64_C(1) << 31)) {
        fixed /= 2;
        exponent++;
    }
    if (exponent < -31) {
        fixed = 0;
        exponent = 0;
    }
    *multiplier = (int32_t)fixed;
    *shift = exponent;
}

/* ---- the reference convolution ---- */

size_t lenet__i8_conv_out_size(const lenet_i8_conv *cv)
{
    const size_t oh = cv->pool ? (size_t)cv->oh / 2 : (size_t)cv->oh, ow = cv->pool ? (size_t)cv->ow / 2 : (size_t)cv->ow;
    return oh * ow * (size_t)cv->oc;
}

void lenet__i8_pack_weights(int oc, int k, int c, int groups, int ocp, const int8_t *ohwi, int8_t *out)
{
    const size_t row = (size_t)k * c;
    memset(out, 0, (size_t)k * groups * ocp * 4);
    for (int o = 0; o < oc; o++)
        for (int ky = 0; ky < k; ky++)
            for (size_t j = 0; j < row; j++)
                out[(((size_t)ky * groups + j / 4) * ocp + o) * 4 + j % 4] = ohwi[((size_t)o * k + ky) * row + j];
}

/* Requantize, add the zero point, clamp, look up: one output value in [0, 255]. */
static inline int32_t finish(const lenet_i8_conv *cv, int o, int32_t acc)
{
    int32_t v = lenet__i8_requantize(acc, cv->multiplier[o], cv->shift[o]) + cv->out_zero;
    v = v < cv->lo ? cv->lo : v > cv->hi ? cv->hi : v;
    return cv->table ? cv->table[v] : v;
}

/* The accumulator of channel o at the output pixel whose window starts at `at`. */
static int32_t dot(const lenet_i8_conv *cv, const uint8_t *at, int o)
{
    int64_t acc = cv->bias[o];
    const size_t row = (size_t)cv->w * cv->c;
    for (int ky = 0; ky < cv->k; ky++)
        for (int j = 0; j < 4 * cv->groups; j++)
            acc += (int32_t)cv->weight[(((size_t)ky * cv->groups + j / 4) * cv->ocp + o) * 4 + j % 4] *
                   (int32_t)at[ky * row + (size_t)j];
    return (int32_t)acc; /* within int32: LENET_I8_MAX_DEPTH */
}

/* The window of output pixel (oy, ox) in sample x. */
static const uint8_t *window(const lenet_i8_conv *cv, const uint8_t *x, int oy, int ox)
{
    return x + ((size_t)oy * cv->s * cv->w + (size_t)ox * cv->s) * cv->c;
}

/* TFLite's integer average: the sum of q = u - 128 over `count` values divided by count, rounded half away from
 * zero, back to u. */
static inline int32_t average(int32_t sum_u, int count)
{
    const int32_t sum = sum_u - 128 * count;
    return (sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count) + 128;
}

void lenet__i8_conv_ref(const lenet_i8_conv *cv, int n, const uint8_t *x, uint8_t *y)
{
    const size_t in_size = (size_t)cv->h * cv->w * cv->c, out_size = lenet__i8_conv_out_size(cv);
    for (int i = 0; i < n; i++) {
        const uint8_t *xs = x + (size_t)i * in_size;
        uint8_t *ys = y + (size_t)i * out_size;
        if (cv->pool == LENET_I8_POOL_NONE) {
            for (int oy = 0; oy < cv->oh; oy++)
                for (int ox = 0; ox < cv->ow; ox++)
                    for (int o = 0; o < cv->oc; o++)
                        *ys++ = (uint8_t)finish(cv, o, dot(cv, window(cv, xs, oy, ox), o));
            continue;
        }
        for (int py = 0; py < cv->oh / 2; py++) {
            for (int px = 0; px < cv->ow / 2; px++) {
                for (int o = 0; o < cv->oc; o++) {
                    int32_t v[4];
                    for (int t = 0; t < 4; t++)
                        v[t] = finish(cv, o, dot(cv, window(cv, xs, 2 * py + t / 2, 2 * px + t % 2), o));
                    int32_t out;
                    if (cv->pool == LENET_I8_POOL_AVG2) {
                        out = average(v[0] + v[1] + v[2] + v[3], 4);
                    } else {
                        out = v[0];
                        for (int t = 1; t < 4; t++)
                            out = v[t] > out ? v[t] : out;
                    }
                    *ys++ = (uint8_t)out;
                }
            }
        }
    }
}

/* ---- the other integer layers ---- */

/* round(v) half away from zero for |v| <= 512, without libm (so that the loop vectorizes): the truncation and the
 * remainder are exact. */
static inline int32_t round_away(float v)
{
    const int32_t t = (int32_t)v;
    const float rest = v - (float)t;
    return t + (rest >= 0.5f) - (rest <= -0.5f);
}

void lenet__i8_quantize_row_ref(int count, const float *x, float scale, int zero, uint8_t *out)
{
    for (int j = 0; j < count; j++) {
        float v = x[j] / scale;
        v = v > -512.0f ? v : -512.0f; /* NaN too */
        v = v < 512.0f ? v : 512.0f;
        const int32_t u = round_away(v) + zero;
        out[j] = (uint8_t)(u < 0 ? 0 : u > 255 ? 255 : u);
    }
}

void lenet__i8_quantize(const lenet_i8_kernels *k, int n, int c, int h, int w, int pad, const float *x, float scale,
                        int zero, uint8_t *y)
{
    const int hp = h + 2 * pad, wp = w + 2 * pad;
    for (int i = 0; i < n; i++) {
        uint8_t *ys = y + (size_t)i * hp * wp * c;
        if (pad > 0)
            memset(ys, zero, (size_t)hp * wp * c);
        for (int ch = 0; ch < c; ch++) {
            for (int r = 0; r < h; r++) {
                const float *row = x + (((size_t)i * c + ch) * h + r) * w;
                uint8_t *out = ys + ((size_t)(r + pad) * wp + pad) * c + ch;
                if (c == 1) {
                    k->quantize_row(w, row, scale, zero, out);
                } else {
                    uint8_t bytes[256];
                    for (int col = 0; col < w; col += 256) {
                        const int count = w - col < 256 ? w - col : 256;
                        k->quantize_row(count, row + col, scale, zero, bytes);
                        for (int j = 0; j < count; j++)
                            out[(size_t)(col + j) * c] = bytes[j];
                    }
                }
            }
        }
    }
}

void lenet__i8_dequantize(int n, int c, int h, int w, const uint8_t *x, float scale, int zero, float *y)
{
    const size_t plane = (size_t)h * w;
    for (int i = 0; i < n; i++)
        for (size_t p = 0; p < plane; p++)
            for (int ch = 0; ch < c; ch++)
                y[((size_t)i * c + ch) * plane + p] = scale * (float)((int32_t)x[((size_t)i * plane + p) * c + ch] - zero);
}

void lenet__i8_pad(int n, int c, int h, int w, int pad, const uint8_t *x, int zero, uint8_t *y)
{
    const int hp = h + 2 * pad, wp = w + 2 * pad;
    const size_t row = (size_t)w * c;
    for (int i = 0; i < n; i++) {
        uint8_t *ys = y + (size_t)i * hp * wp * c;
        memset(ys, zero, (size_t)hp * wp * c);
        for (int r = 0; r < h; r++)
            memcpy(ys + ((size_t)(r + pad) * wp + pad) * c, x + ((size_t)i * h + r) * row, row);
    }
}

void lenet__i8_lookup(size_t count, const uint8_t *table, const uint8_t *x, uint8_t *y)
{
    for (size_t i = 0; i < count; i++)
        y[i] = table[x[i]];
}

void lenet__i8_clamp_below(size_t count, uint8_t lo, const uint8_t *x, uint8_t *y)
{
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] > lo ? x[i] : lo;
}

void lenet__i8_pool(bool average_pool, int n, int c, int h, int w, int k, int s, int oh, int ow, const uint8_t *x,
                    uint8_t *y)
{
    for (int i = 0; i < n; i++) {
        const uint8_t *xs = x + (size_t)i * h * w * c;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                for (int ch = 0; ch < c; ch++) {
                    int32_t sum = 0, most = 0;
                    for (int ky = 0; ky < k; ky++) {
                        for (int kx = 0; kx < k; kx++) {
                            int32_t u = xs[((size_t)(oy * s + ky) * w + (size_t)(ox * s + kx)) * c + ch];
                            sum += u;
                            most = u > most ? u : most;
                        }
                    }
                    *y++ = (uint8_t)(average_pool ? average(sum, k * k) : most);
                }
            }
        }
    }
}

void lenet__i8_subsample(const lenet_i8_subsample *ss, int n, const uint8_t *x, uint8_t *y)
{
    const int32_t window_zero = ss->k * ss->k * ss->in_zero;
    for (int i = 0; i < n; i++) {
        const uint8_t *xs = x + (size_t)i * ss->h * ss->w * ss->c;
        for (int oy = 0; oy < ss->oh; oy++) {
            for (int ox = 0; ox < ss->ow; ox++) {
                for (int o = 0; o < ss->c; o++) {
                    int32_t sum = 0;
                    for (int ky = 0; ky < ss->k; ky++)
                        for (int kx = 0; kx < ss->k; kx++)
                            sum += xs[((size_t)(oy * ss->s + ky) * ss->w + (size_t)(ox * ss->s + kx)) * ss->c + o];
                    int32_t acc = ss->bias[o] + ss->weight[o] * (sum - window_zero);
                    int32_t v = lenet__i8_requantize(acc, ss->multiplier[o], ss->shift[o]) + ss->out_zero;
                    v = v < ss->lo ? ss->lo : v > ss->hi ? ss->hi : v;
                    *y++ = (uint8_t)(ss->table ? ss->table[v] : v);
                }
            }
        }
    }
}

/* ---- choosing a table ---- */

static const lenet_i8_kernels generic = {.isa = "generic", .conv = lenet__i8_conv_ref,
                                         .quantize_row = lenet__i8_quantize_row_ref};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(LENET_NO_WIDE_VECTORS)
#define HAVE_X86 1
/* int8_x86.c */
extern const lenet_i8_kernels lenet__i8_kernels_avx2, lenet__i8_kernels_avxvnni, lenet__i8_kernels_avxvnni_evex,
    lenet__i8_kernels_avx512vnni;
#endif

/* The tables by width: LENET_ISA names one, and a CPU without it gets the widest below. */
static const char *const levels[] = {"generic", "avx2", "avxvnni", "avx512vnni"};
#define N_LEVELS (sizeof levels / sizeof levels[0])

static const lenet_i8_kernels *at_level(size_t level)
{
    if (level == 0)
        return &generic;
#ifdef HAVE_X86
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                        __builtin_cpu_supports("avx512vbmi");
    switch (level) {
    case 1: return avx2 ? &lenet__i8_kernels_avx2 : NULL;
    /* AVX-VNNI is the VEX encoding of VPDPBUSD on ymm registers; a CPU with AVX-512 VNNI but without it runs the
     * same code with the EVEX encoding, so the path is tested wherever either exists. */
    case 2: return avx2 && __builtin_cpu_supports("avxvnni") ? &lenet__i8_kernels_avxvnni
                   : avx512                                   ? &lenet__i8_kernels_avxvnni_evex
                                                              : NULL;
    case 3: return avx512 ? &lenet__i8_kernels_avx512vnni : NULL;
    }
#endif
    return NULL;
}

static size_t level_of(const char *isa)
{
    if (strcmp(isa, "avx512") == 0)
        return N_LEVELS - 1;
    for (size_t i = 0; i < N_LEVELS; i++)
        if (strcmp(isa, levels[i]) == 0)
            return i;
    return SIZE_MAX;
}

/* The widest table at or below `level`. */
static const lenet_i8_kernels *widest_up_to(size_t level)
{
    for (size_t i = level + 1; i-- > 0;) {
        const lenet_i8_kernels *k = at_level(i);
        if (k)
            return k;
    }
    return &generic;
}

static const lenet_i8_kernels *best(void)
{
    const char *env = getenv("LENET_ISA");
    size_t level = env && *env ? level_of(env) : SIZE_MAX;
    return widest_up_to(level == SIZE_MAX ? N_LEVELS - 1 : level);
}

static _Atomic(const lenet_i8_kernels *) selected;

const lenet_i8_kernels *lenet__i8_kernels(void)
{
    const lenet_i8_kernels *k = atomic_load_explicit(&selected, memory_order_acquire);
    if (!k) {
        k = best();
        atomic_store_explicit(&selected, k, memory_order_release);
    }
    return k;
}

bool lenet__i8_kernels_force(const char *isa)
{
    const lenet_i8_kernels *k;
    if (isa) {
        size_t level = level_of(isa);
        k = level == SIZE_MAX ? NULL : at_level(level);
    } else {
        k = best();
    }
    if (!k)
        return false;
    atomic_store_explicit(&selected, k, memory_order_release);
    return true;
}

size_t lenet__i8_kernels_available(const char **names, size_t max)
{
    size_t count = 0;
    for (size_t i = 0; i < N_LEVELS && count < max; i++)
        if (at_level(i))
            names[count++] = levels[i];
    return count;
}
