/* Int8 plans: the kernels against a plain integer convolution written here, the same bytes on every kernel table,
 * outputs close to the float plan's, calibration errors, no allocation in lenet_plan_run, and plan files (float and
 * int8) that load back bit-identical and refuse corruption.
 *
 * The allocation check uses test_plan.c's malloc interposer, compiled only where nothing else replaces malloc (no
 * AddressSanitizer or ThreadSanitizer, and not under valgrind, which the test sees from LD_PRELOAD); the library's
 * own allocation counter (lenet__alloc_fail_at) checks it in every build. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/internal.h"
#include "kernels/int8.h"
#include "layers/registry.h"
#include "testutil.h"

/* ---- counting allocations ---- */

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define COUNT_MALLOC 1
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

static atomic_bool counting;
static atomic_size_t allocations;

static void count(void)
{
    if (atomic_load(&counting))
        atomic_fetch_add(&allocations, 1);
}

void *malloc(size_t size)
{
    count();
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    count();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    count();
    return __libc_realloc(p, size);
}

void *aligned_alloc(size_t alignment, size_t size)
{
    count();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size)
{
    count();
    void *p = __libc_memalign(alignment, size);
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}
#endif

/* ---- the networks ---- */

static lenet_model *model_of(lenet_layer *const *layers, size_t n, int c, int h, int w)
{
    lenet_model *m = lenet_model_create();
    for (size_t i = 0; i < n; i++)
        ck_assert_lenet_ok(lenet_model_add(m, layers[i]));
    ck_assert_lenet_ok(lenet_model_build(m, c, h, w));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 11));
    return m;
}

#define MODEL(c, h, w, ...)                                                                                    \
    model_of((lenet_layer *[]){__VA_ARGS__}, sizeof((lenet_layer *[]){__VA_ARGS__}) / sizeof(lenet_layer *), c, h, w)

static lenet_model *d2l(void)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 7));
    return m;
}

/* ReLU and MaxPool, BatchNorm folded into the convolutions, a padded second convolution, Tanh. */
static lenet_model *modern(void)
{
    lenet_model *m = MODEL(1, 28, 28, lenet_conv2d(6, 5, 1, 2), lenet_batchnorm2d(1e-5f, 0.1f), lenet_relu(),
                           lenet_maxpool2d(2, 2), lenet_conv2d(16, 5, 1, 1), lenet_tanh(), lenet_avgpool2d(2, 2),
                           lenet_flatten(), lenet_dropout(0.3f), lenet_linear(120), lenet_relu(), lenet_linear(84),
                           lenet_sigmoid(), lenet_linear(10));
    lenet_tensor *x = lenet_tensor_create(4, (int[]){32, 1, 28, 28});
    const lenet_tensor *y;
    lenet_test_fill(x, 40, 0.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y)); /* BatchNorm statistics away from 0 and 1 */
    lenet_tensor_free(x);
    return m;
}

/* LeNet-5's Subsampling and RBF through the layer registry, whose kind names and arguments plan files depend on. */
static lenet_layer *subsampling(void)
{
    return lenet__layer_create("Subsampling", 2, (const double[]){2, 2});
}

static lenet_layer *lenet5_rbf(void)
{
    return lenet__layer_create("EuclideanRBF", 3, (const double[]){10, 84, 1});
}

/* LeNet-5: Subsampling and PartialConv2d in integers, EuclideanRBF in float. */
static lenet_model *lenet5(void)
{
    return MODEL(1, 32, 32, lenet_conv2d(6, 5, 1, 0), lenet_scaled_tanh(), subsampling(), lenet_scaled_tanh(),
                 lenet_lenet5_c3(), lenet_scaled_tanh(), subsampling(), lenet_scaled_tanh(), lenet_conv2d(120, 5, 1, 0),
                 lenet_scaled_tanh(), lenet_flatten(), lenet_linear(84), lenet_scaled_tanh(), lenet5_rbf());
}

/* Strides, a 3-channel input, pooling that leaves a row out, a standalone ReLU and table, an unfoldable
 * BatchNorm (float) in the middle, and a convolution as the last layer (its image flattened: the output is
 * dequantized in PyTorch's CHW order). */
static lenet_model *odd_shapes(void)
{
    return MODEL(3, 13, 11, lenet_conv2d(5, 3, 2, 1), lenet_maxpool2d(2, 2), lenet_relu(), lenet_tanh(),
                 lenet_batchnorm2d(1e-5f, 0.1f), lenet_conv2d(20, 2, 1, 1), lenet_avgpool2d(2, 1), lenet_sigmoid(),
                 lenet_conv2d(3, 1, 1, 0), lenet_flatten());
}

typedef struct network {
    const char *name;
    lenet_model *(*make)(void);
    int c, h, w;
    float lo, hi; /* input range */
} network;

static const network NETWORKS[] = {
    {"d2l", d2l, 1, 28, 28, 0.0f, 1.0f},
    {"modern", modern, 1, 28, 28, 0.0f, 1.0f},
    {"lenet5", lenet5, 1, 32, 32, -0.1f, 1.175f},
    {"odd shapes", odd_shapes, 3, 13, 11, -1.0f, 1.0f},
};
#define N_NETWORKS (sizeof NETWORKS / sizeof NETWORKS[0])

static lenet_tensor *inputs(const network *net, int n, uint64_t seed)
{
    lenet_tensor *x = lenet_tensor_create(4, (int[]){n, net->c, net->h, net->w});
    lenet_test_fill(x, seed, net->lo, net->hi);
    return x;
}

static lenet_tensor *outputs_for(const lenet_model *m, int n)
{
    return lenet_tensor_create(2, (int[]){n, (int)lenet_model_output_size(m)});
}

static void run(const lenet_plan *p, const lenet_tensor *x, lenet_tensor *y)
{
    const size_t size = lenet_plan_workspace_size(p);
    void *work = malloc(size);
    ck_assert_lenet_ok(lenet_plan_run(p, work, size, x, y));
    free(work);
}

static lenet_plan *int8_plan(const network *net, const lenet_model *m, int max_batch)
{
    lenet_tensor *cal = inputs(net, 64, 5);
    lenet_plan *p = lenet_plan_create_int8(m, max_batch, cal);
    ck_assert_msg(p != NULL, "%s: %s", net->name, lenet_last_error());
    lenet_tensor_free(cal);
    return p;
}

/* ---- a plain integer convolution: NCHW int8, OIHW weights, TFLite's formulas written out ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* MultiplyByQuantizedMultiplier for a right shift: round(acc * m / 2^31) with halves up, then / 2^shift with halves
 * away from zero. */
static int32_t plain_requantize(int32_t acc, int32_t multiplier, int right_shift)
{
    const int64_t high = floor_div((int64_t)acc * multiplier + (INT64_C(1) << 30), INT64_C(1) << 31);
    if (right_shift == 0)
        return (int32_t)high;
    const int64_t magnitude = ((high < 0 ? -high : high) + (INT64_C(1) << (right_shift - 1))) >> right_shift;
    return (int32_t)(high < 0 ? -magnitude : magnitude);
}

typedef struct plain_conv {
    int c, h, w, k, s, p, oc, oh, ow;
    int8_t *x;         /* (c, h, w), zero point zx */
    int8_t *weight;    /* (oc, c, k, k) */
    int32_t *bias, *multiplier, *shift;
    int zx, zy, lo, hi; /* int8 domain */
    int8_t *table;     /* NULL or 256, indexed by q + 128 */
    int pool;          /* 0 none, 1 average, 2 max */
} plain_conv;

static int plain_output(const plain_conv *pc, int o, int oy, int ox)
{
    int64_t acc = pc->bias[o];
    for (int ci = 0; ci < pc->c; ci++)
        for (int ky = 0; ky < pc->k; ky++)
            for (int kx = 0; kx < pc->k; kx++) {
                const int iy = oy * pc->s + ky - pc->p, ix = ox * pc->s + kx - pc->p;
                const int q = iy < 0 || ix < 0 || iy >= pc->h || ix >= pc->w ? pc->zx
                                                                              : pc->x[(ci * pc->h + iy) * pc->w + ix];
                acc += (int64_t)pc->weight[((o * pc->c + ci) * pc->k + ky) * pc->k + kx] * (q - pc->zx);
            }
    ck_assert(acc >= INT32_MIN && acc <= INT32_MAX);
    int v = plain_requantize((int32_t)acc, pc->multiplier[o], -pc->shift[o]) + pc->zy;
    v = v < pc->lo ? pc->lo : v > pc->hi ? pc->hi : v;
    return pc->table ? pc->table[v + 128] : v;
}

/* Output (o, y, x) after the optional 2x2 pooling, int8. */
static int plain_pooled(const plain_conv *pc, int o, int y, int x)
{
    if (pc->pool == 0)
        return plain_output(pc, o, y, x);
    int sum = 0, most = -128;
    for (int t = 0; t < 4; t++) {
        int v = plain_output(pc, o, 2 * y + t / 2, 2 * x + t % 2);
        sum += v;
        most = v > most ? v : most;
    }
    if (pc->pool == 2)
        return most;
    return sum > 0 ? (sum + 2) / 4 : (sum - 2) / 4; /* TFLite's AveragePool */
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint32_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static int random_in(int lo, int hi)
{
    return lo + (int)(next_random() % (uint32_t)(hi - lo + 1));
}

/* One random convolution through the library's layout (NHWC bytes q + 128, packed weights, folded bias), on table
 * `isa`, compared with plain_conv. */
static void check_random_conv(const lenet_i8_kernels *kernels, int trial)
{
    plain_conv pc = {.c = random_in(1, 9), .k = random_in(1, 5), .s = random_in(1, 2), .p = random_in(0, 2),
                     .oc = random_in(1, 40), .pool = random_in(0, 2)};
    if (trial % 5 == 0) { /* a Linear layer: a 1x1 image */
        pc.c = random_in(1, 700);
        pc.k = pc.s = 1;
        pc.p = pc.pool = 0;
        pc.h = pc.w = 1;
    } else if (trial % 5 == 2) { /* a first layer: few channels in and out, wide rows (AVX-512's pixel kernel) */
        pc.c = random_in(1, 3);
        pc.k = 2 * random_in(1, 2) + 1;
        pc.s = 1;
        pc.oc = random_in(1, 8);
        pc.h = pc.k + random_in(0, 9);
        pc.w = pc.k + random_in(7, 40);
    } else {
        pc.h = pc.k + random_in(0, 12);
        pc.w = pc.k + random_in(0, 12);
    }
    pc.oh = (pc.h + 2 * pc.p - pc.k) / pc.s + 1;
    pc.ow = (pc.w + 2 * pc.p - pc.k) / pc.s + 1;
    if (pc.pool && (pc.oh < 2 || pc.ow < 2))
        pc.pool = 0;
    const int n = random_in(1, 3), depth = pc.c * pc.k * pc.k;
    pc.zx = random_in(-128, 127);
    pc.zy = random_in(-128, 127);
    pc.lo = trial % 3 == 0 ? pc.zy : -128; /* a fused ReLU */
    pc.hi = 127;
    int8_t *xs = malloc((size_t)n * pc.c * pc.h * pc.w), *weight = malloc((size_t)pc.oc * depth), table[256];
    pc.bias = malloc(3 * sizeof(int32_t) * (size_t)pc.oc);
    pc.multiplier = pc.bias + pc.oc;
    pc.shift = pc.bias + 2 * pc.oc;
    for (int i = 0; i < n * pc.c * pc.h * pc.w; i++)
        xs[i] = (int8_t)random_in(-128, 127);
    for (int i = 0; i < pc.oc * depth; i++)
        weight[i] = (int8_t)random_in(-127, 127);
    for (int o = 0; o < pc.oc; o++) {
        pc.bias[o] = random_in(-100000, 100000);
        pc.multiplier[o] = o % 7 == 3 ? 0 : (int32_t)((1u << 30) + (next_random() & 0x3fffffff));
        pc.shift[o] = -random_in(4, 22);
    }
    for (int i = 0; i < 256; i++)
        table[i] = (int8_t)random_in(-128, 127);
    pc.table = trial % 4 == 1 ? table : NULL;
    pc.weight = weight;

    /* the library's layout */
    const int hp = pc.h + 2 * pc.p, wp = pc.w + 2 * pc.p, groups = (pc.k * pc.c + 3) / 4,
              ocp = (pc.oc + LENET_I8_OC_BLOCK - 1) / LENET_I8_OC_BLOCK * LENET_I8_OC_BLOCK;
    const size_t in_bytes = (size_t)hp * wp * pc.c;
    uint8_t *x = calloc((size_t)n * in_bytes + LENET_I8_SLACK, 1);
    int8_t *ohwi = malloc((size_t)pc.oc * depth), *packed = malloc((size_t)pc.k * groups * ocp * 4);
    int32_t *lib = calloc(4 * (size_t)ocp + 256, sizeof(int32_t));
    int32_t *bias = lib, *multiplier = lib + ocp, *shift = lib + 2 * ocp, *table32 = lib + 4 * ocp;
    uint8_t table8[256];
    for (int i = 0; i < n; i++)
        for (int y = 0; y < hp; y++)
            for (int xx = 0; xx < wp; xx++)
                for (int ci = 0; ci < pc.c; ci++) {
                    const int iy = y - pc.p, ix = xx - pc.p;
                    const int q = iy < 0 || ix < 0 || iy >= pc.h || ix >= pc.w
                                      ? pc.zx
                                      : xs[((i * pc.c + ci) * pc.h + iy) * pc.w + ix];
                    x[(size_t)i * in_bytes + ((size_t)y * wp + xx) * pc.c + ci] = (uint8_t)(q + 128);
                }
    for (int o = 0; o < pc.oc; o++) {
        int32_t sum = 0;
        for (int ky = 0; ky < pc.k; ky++)
            for (int kx = 0; kx < pc.k; kx++)
                for (int ci = 0; ci < pc.c; ci++) {
                    int8_t v = weight[((o * pc.c + ci) * pc.k + ky) * pc.k + kx];
                    ohwi[((o * pc.k + ky) * pc.k + kx) * pc.c + ci] = v;
                    sum += v;
                }
        bias[o] = pc.bias[o] - (pc.zx + 128) * sum;
        multiplier[o] = pc.multiplier[o];
        shift[o] = -pc.shift[o];
    }
    for (int i = 0; i < 256; i++) {
        table32[i] = table[i] + 128;
        table8[i] = (uint8_t)(table[i] + 128);
    }
    lenet__i8_pack_weights(pc.oc, pc.k, pc.c, groups, ocp, ohwi, packed);
    const lenet_i8_conv cv = {.c = pc.c, .h = hp, .w = wp, .k = pc.k, .s = pc.s, .oh = pc.oh, .ow = pc.ow,
                              .oc = pc.oc, .groups = groups, .ocp = ocp, .weight = packed, .bias = bias,
                              .multiplier = multiplier, .shift = shift, .out_zero = pc.zy + 128, .lo = pc.lo + 128,
                              .hi = pc.hi + 128, .table = pc.table ? table32 : NULL, .table8 = table8,
                              .pool = (lenet_i8_pool)pc.pool};
    const size_t out_bytes = lenet__i8_conv_out_size(&cv);
    uint8_t *y = malloc((size_t)n * out_bytes + 1);
    memset(y, 0xa5, (size_t)n * out_bytes + 1);
    kernels->conv(&cv, n, x, y);
    ck_assert_msg(y[(size_t)n * out_bytes] == 0xa5, "%s: conv wrote past its output", kernels->isa);
    const int ph = pc.pool ? pc.oh / 2 : pc.oh, pw = pc.pool ? pc.ow / 2 : pc.ow;
    for (int i = 0; i < n; i++) {
        pc.x = xs + (size_t)i * pc.c * pc.h * pc.w;
        for (int py = 0; py < ph; py++)
            for (int px = 0; px < pw; px++)
                for (int o = 0; o < pc.oc; o++) {
                    const int want = plain_pooled(&pc, o, py, px);
                    const int got = y[(size_t)i * out_bytes + ((size_t)py * pw + px) * pc.oc + o] - 128;
                    ck_assert_msg(got == want,
                                  "%s, trial %d (c %d, %dx%d, k %d, s %d, p %d, oc %d, pool %d, table %d): sample %d "
                                  "output (%d, %d, %d) is %d, the plain convolution gives %d",
                                  kernels->isa, trial, pc.c, pc.h, pc.w, pc.k, pc.s, pc.p, pc.oc, pc.pool,
                                  pc.table != NULL, i, o, py, px, got, want);
                }
    }
    free(xs);
    free(weight);
    free(pc.bias);
    free(x);
    free(ohwi);
    free(packed);
    free(lib);
    free(y);
}

START_TEST(test_requantization_is_tflites_fixed_point_multiply)
{
    /* QuantizeMultiplier: 0.75 = 0.75 * 2^0; 2^-40 flushes to zero; a q that rounds to 1 takes the next shift. */
    int32_t multiplier;
    int shift;
    lenet__i8_quantize_multiplier(0.75, &multiplier, &shift);
    ck_assert_int_eq(multiplier, 1610612736);
    ck_assert_int_eq(shift, 0);
    lenet__i8_quantize_multiplier(0x1p-40, &multiplier, &shift);
    ck_assert_int_eq(multiplier, 0);
    lenet__i8_quantize_multiplier(0.0039215686, &multiplier, &shift);
    ck_assert_int_eq(shift, -7);
    ck_assert(multiplier >= (1 << 30));
    lenet__i8_quantize_multiplier(0.5 * (1.0 - 0x1p-40), &multiplier, &shift);
    ck_assert_int_eq(multiplier, 1 << 30);
    ck_assert_int_eq(shift, 0);
    /* The rounding of both steps, at halves and at the extremes. */
    const int32_t accs[] = {0, 1, -1, 2, -2, 3, -3, 1 << 20, -(1 << 20), 123456789, -123456789, INT32_MAX, INT32_MIN};
    const int32_t multipliers[] = {0, 1 << 30, (1 << 30) + 1, 1518500250, INT32_MAX};
    for (size_t a = 0; a < sizeof accs / sizeof accs[0]; a++)
        for (size_t m = 0; m < sizeof multipliers / sizeof multipliers[0]; m++)
            for (int s = 0; s <= 31; s++)
                ck_assert_int_eq(lenet__i8_requantize(accs[a], multipliers[m], s),
                                 plain_requantize(accs[a], multipliers[m], s));
    for (int i = 0; i < 100000; i++) {
        /* The difference of two draws, wrapped in unsigned arithmetic: any int32 accumulator. */
        const int32_t acc = (int32_t)((uint32_t)next_random() - (uint32_t)next_random()),
                      m = (int32_t)((1u << 30) + (next_random() & 0x3fffffff));
        const int s = random_in(0, 31);
        ck_assert_int_eq(lenet__i8_requantize(acc, m, s), plain_requantize(acc, m, s));
    }
}
END_TEST

START_TEST(test_every_kernel_table_matches_a_plain_integer_convolution)
{
    const char *names[8];
    const size_t tables = lenet__i8_kernels_available(names, 8);
    ck_assert_uint_ge(tables, 1);
    for (size_t t = 0; t < tables; t++) {
        ck_assert(lenet__i8_kernels_force(names[t]));
        rng_state = 0x9E3779B97F4A7C15u + t;
        for (int trial = 0; trial < 300; trial++)
            check_random_conv(lenet__i8_kernels(), trial);
        printf("int8 kernels %-10s match the plain convolution on 300 random layers\n", names[t]);
    }
    ck_assert(lenet__i8_kernels_force(NULL));
}
END_TEST

START_TEST(test_every_kernel_table_quantizes_as_tflite)
{
    /* Halves round away from zero; NaN and -infinity give 0, +infinity 255; the division is IEEE's. */
    const float scale = 0.25f;
    const float special[] = {0.125f, -0.125f, 0.375f, -0.375f, 0.124999f, -0.124999f, NAN, -INFINITY, INFINITY,
                             1e30f, -1e30f, 0.0f, -0.0f, 31.875f, -32.125f, 1e-40f};
    const int want[] = {11, 9, 12, 8, 10, 10, 0, 0, 255, 255, 0, 10, 10, 138, 0, 10};
    enum { COUNT = 16 + 1000 };
    float x[COUNT];
    uint8_t expected[COUNT], got[COUNT];
    memcpy(x, special, sizeof special);
    for (int i = 16; i < COUNT; i++)
        x[i] = (float)((int)(next_random() % 4000) - 2000) / 64.0f + (float)(next_random() % 3) * 0x1p-12f;
    lenet__i8_quantize_row_ref(COUNT, x, scale, 10, expected);
    for (int i = 0; i < 16; i++)
        ck_assert_msg(expected[i] == want[i], "quantizing %g: %d, expected %d", (double)special[i], expected[i], want[i]);
    const char *names[8];
    const size_t tables = lenet__i8_kernels_available(names, 8);
    for (size_t t = 0; t < tables; t++) {
        ck_assert(lenet__i8_kernels_force(names[t]));
        for (int count = 0; count <= COUNT; count += count < 40 ? 1 : 97) {
            memset(got, 0xee, sizeof got);
            lenet__i8_kernels()->quantize_row(count, x, scale, 10, got);
            ck_assert_msg(memcmp(got, expected, (size_t)count) == 0, "%s quantizes %d values differently", names[t],
                          count);
            ck_assert(count == COUNT || got[count] == 0xee);
        }
    }
    ck_assert(lenet__i8_kernels_force(NULL));
}
END_TEST

/* ---- plans ---- */

START_TEST(test_int8_plans_give_the_same_bytes_on_every_kernel_table)
{
    const char *names[8];
    const size_t tables = lenet__i8_kernels_available(names, 8);
    const int batches[] = {1, 7, 16, 33};
    for (size_t k = 0; k < N_NETWORKS; k++) {
        const network *net = &NETWORKS[k];
        lenet_model *m = net->make();
        lenet_plan *p = int8_plan(net, m, 40);
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            lenet_tensor *x = inputs(net, batches[b], 100 + b), *want = outputs_for(m, batches[b]),
                         *got = outputs_for(m, batches[b]);
            ck_assert(lenet__i8_kernels_force("generic"));
            run(p, x, want);
            for (size_t t = 1; t < tables; t++) {
                ck_assert(lenet__i8_kernels_force(names[t]));
                memset(lenet_tensor_data(got), 0, lenet_tensor_numel(got) * sizeof(float));
                run(p, x, got);
                ck_assert_msg(memcmp(lenet_tensor_cdata(got), lenet_tensor_cdata(want),
                                     lenet_tensor_numel(want) * sizeof(float)) == 0,
                              "%s, batch %d: the %s table differs from the generic one", net->name, batches[b],
                              names[t]);
            }
            lenet_tensor_free(x);
            lenet_tensor_free(want);
            lenet_tensor_free(got);
        }
        printf("%-10s int8: the same bytes on %zu kernel tables\n", net->name, tables);
        ck_assert(lenet__i8_kernels_force(NULL));
        lenet_plan_free(p);
        lenet_model_free(m);
    }
}
END_TEST

/* The bound: every output within OUTPUT_STEPS steps of the float plan's, a step being the range of the outputs on
 * the calibration batch over 255, the scale the plan quantizes the last layer's output to (the networks here are run
 * on their calibration batch, so nothing is clipped).  Half a step is the output's own rounding; the rest is what
 * the roundings of the layers before it add up to, each half a step of its own tensor carried through the weights
 * (3.3 steps at most here; docs/inference.md shows what that costs trained networks in accuracy). */
#define OUTPUT_STEPS 6.0

START_TEST(test_int8_outputs_stay_within_a_few_output_steps_of_float)
{
    for (size_t k = 0; k < N_NETWORKS; k++) {
        const network *net = &NETWORKS[k];
        lenet_model *m = net->make();
        lenet_plan *pf = lenet_plan_create(m, 64), *pq = int8_plan(net, m, 64);
        lenet_tensor *x = inputs(net, 64, 5), *want = outputs_for(m, 64), *got = outputs_for(m, 64);
        run(pf, x, want);
        run(pq, x, got);
        const float *a = lenet_tensor_cdata(got), *b = lenet_tensor_cdata(want);
        double lo = 0.0, hi = 0.0, worst = 0.0;
        for (size_t i = 0; i < lenet_tensor_numel(want); i++) {
            lo = fmin(lo, b[i]);
            hi = fmax(hi, b[i]);
        }
        const double step = (hi - lo) / 255.0;
        for (size_t i = 0; i < lenet_tensor_numel(want); i++)
            worst = fmax(worst, fabs((double)a[i] - b[i]) / step);
        printf("%-10s int8 vs float: worst error %.2f output steps (a step is %.3g)\n", net->name, worst, step);
        ck_assert_msg(worst <= OUTPUT_STEPS, "%s: an output is %.2f steps of %.3g from float", net->name, worst, step);
        lenet_tensor_free(x);
        lenet_tensor_free(want);
        lenet_tensor_free(got);
        lenet_plan_free(pf);
        lenet_plan_free(pq);
        lenet_model_free(m);
    }
}
END_TEST

START_TEST(test_calibration_errors_are_statuses)
{
    lenet_model *m = lenet_test_d2l_model();
    lenet_tensor *cal = lenet_tensor_create(4, (int[]){8, 1, 28, 28});
    lenet_test_fill(cal, 1, 0.0f, 1.0f);
    ck_assert_ptr_null(lenet_plan_create_int8(m, 4, cal));
    ck_assert_int_eq(lenet__last_status(), LENET_ESTATE); /* not built */
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_ptr_null(lenet_plan_create_int8(m, 4, NULL));
    ck_assert_int_eq(lenet__last_status(), LENET_EINVAL);
    ck_assert_msg(strstr(lenet_last_error(), "calibration") != NULL, "message: %s", lenet_last_error());
    ck_assert_ptr_null(lenet_plan_create_int8(NULL, 4, cal));
    ck_assert_int_eq(lenet__last_status(), LENET_EINVAL);
    ck_assert_ptr_null(lenet_plan_create_int8(m, 0, cal));
    ck_assert_int_eq(lenet__last_status(), LENET_EINVAL);
    lenet_tensor *wrong[] = {lenet_tensor_create(4, (int[]){8, 1, 32, 32}), lenet_tensor_create(4, (int[]){8, 3, 28, 28}),
                             lenet_tensor_create(3, (int[]){8, 28, 28}), lenet_tensor_create(2, (int[]){8, 784})};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        ck_assert_ptr_null(lenet_plan_create_int8(m, 4, wrong[i]));
        ck_assert_int_eq(lenet__last_status(), LENET_ESHAPE);
        ck_assert_msg(strstr(lenet_last_error(), "calibration") != NULL, "message: %s", lenet_last_error());
        lenet_tensor_free(wrong[i]);
    }
    lenet_tensor_data(cal)[100] = NAN;
    ck_assert_ptr_null(lenet_plan_create_int8(m, 4, cal));
    ck_assert_int_eq(lenet__last_status(), LENET_ENUMERIC);
    lenet_tensor_data(cal)[100] = 0.5f;
    lenet_plan *p = lenet_plan_create_int8(m, 4, cal);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(lenet_plan_max_batch(p), 4);
    /* lenet_plan_run's own checks hold for int8 plans too. */
    const size_t size = lenet_plan_workspace_size(p);
    void *work = malloc(size);
    lenet_tensor *y = lenet_tensor_create(2, (int[]){8, 10});
    ck_assert_int_eq(lenet_plan_run(p, work, size, cal, y), LENET_ESHAPE); /* 8 > max_batch */
    ck_assert_int_eq(lenet_plan_run(p, work, size - 1, cal, y), LENET_EINVAL);
    free(work);
    lenet_tensor_free(y);
    lenet_plan_free(p);
    lenet_tensor_free(cal);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_int8_plans_run_without_allocating)
{
#ifdef COUNT_MALLOC
    const char *preload = getenv("LD_PRELOAD");
    const bool interposed = !(preload && strstr(preload, "vgpreload")); /* valgrind replaces malloc itself */
#else
    const bool interposed = false;
#endif
    for (size_t k = 0; k < N_NETWORKS; k++) {
        const network *net = &NETWORKS[k];
        lenet_model *m = net->make();
        lenet_plan *p = int8_plan(net, m, 33);
        const size_t size = lenet_plan_workspace_size(p);
        void *work = malloc(size);
        lenet_tensor *x = inputs(net, 33, 3), *y = outputs_for(m, 33);
        lenet__alloc_fail_at(0);
#ifdef COUNT_MALLOC
        atomic_store(&allocations, 0);
        atomic_store(&counting, interposed);
#endif
        lenet_status st = lenet_plan_run(p, work, size, x, y);
#ifdef COUNT_MALLOC
        atomic_store(&counting, false);
        ck_assert_msg(atomic_load(&allocations) == 0, "%s: %zu allocations inside lenet_plan_run", net->name,
                      atomic_load(&allocations));
#endif
        ck_assert_lenet_ok(st);
        ck_assert_uint_eq(lenet__alloc_fail_at(0), 0);
        free(work);
        lenet_tensor_free(x);
        lenet_tensor_free(y);
        lenet_plan_free(p);
        lenet_model_free(m);
    }
    printf("int8 plans ran without allocating (%s)\n",
           interposed ? "malloc interposed" : "the library's allocations counted");
}
END_TEST

/* ---- plan files ---- */

static char *temp_path(const char *name)
{
    static char path[4][256];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, 256, "%s/lenet_plan_int8_%ld_%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid(), name);
    return p;
}

static void check_round_trip(const network *net, lenet_plan *p, const lenet_model *m, const char *kind)
{
    const char *path = temp_path("round_trip.safetensors");
    ck_assert_lenet_ok(lenet_plan_save(p, path));
    lenet_plan *loaded = lenet_plan_load(path);
    ck_assert_msg(loaded != NULL, "%s %s: %s", net->name, kind, lenet_last_error());
    ck_assert_int_eq(lenet_plan_max_batch(loaded), lenet_plan_max_batch(p));
    ck_assert_uint_eq(lenet_plan_workspace_size(loaded), lenet_plan_workspace_size(p));
    lenet_tensor *x = inputs(net, 21, 77), *want = outputs_for(m, 21), *got = outputs_for(m, 21);
    run(p, x, want);
    run(loaded, x, got);
    ck_assert_msg(memcmp(lenet_tensor_cdata(got), lenet_tensor_cdata(want), lenet_tensor_numel(want) * sizeof(float)) ==
                      0,
                  "%s %s: the loaded plan's outputs differ", net->name, kind);
    /* A plan file is a model file of the plan's network too. */
    lenet_model *network_only = lenet_model_load(path);
    ck_assert_msg(network_only != NULL, "%s: %s", net->name, lenet_last_error());
    lenet_model_free(network_only);
    lenet_tensor_free(x);
    lenet_tensor_free(want);
    lenet_tensor_free(got);
    lenet_plan_free(loaded);
    unlink(path);
}

START_TEST(test_saved_plans_load_back_bit_identical)
{
    for (size_t k = 0; k < N_NETWORKS; k++) {
        const network *net = &NETWORKS[k];
        lenet_model *m = net->make();
        lenet_plan *pf = lenet_plan_create(m, 25), *pq = int8_plan(net, m, 30);
        check_round_trip(net, pf, m, "float");
        check_round_trip(net, pq, m, "int8");
        lenet_plan_free(pf);
        lenet_plan_free(pq);
        lenet_model_free(m);
    }
    ck_assert_int_eq(lenet_plan_save(NULL, "x"), LENET_EINVAL);
    ck_assert_ptr_null(lenet_plan_load(NULL));
    ck_assert_int_eq(lenet__last_status(), LENET_EINVAL);
    ck_assert_ptr_null(lenet_plan_load("/nonexistent/plan.safetensors"));
    ck_assert_int_eq(lenet__last_status(), LENET_EIO);
}
END_TEST

/* A saved file's bytes, to edit. */
typedef struct file_bytes {
    unsigned char *bytes;
    size_t size, header_end; /* the data section starts at header_end */
} file_bytes;

static file_bytes read_bytes(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    file_bytes fb = {.size = (size_t)ftell(f)};
    fseek(f, 0, SEEK_SET);
    fb.bytes = malloc(fb.size);
    ck_assert_uint_eq(fread(fb.bytes, 1, fb.size, f), fb.size);
    fclose(f);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | fb.bytes[i];
    fb.header_end = 8 + (size_t)n;
    return fb;
}

static void write_bytes(const char *path, const unsigned char *bytes, size_t size)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bytes, 1, size, f), size);
    fclose(f);
}

/* Rewrites the header's data_crc32 (8 hex digits, in place) for the data as it is now. */
static void fix_crc(file_bytes *fb)
{
    char *at = memmem(fb->bytes, fb->header_end, "\"data_crc32\":\"", 14);
    ck_assert_ptr_nonnull(at);
    char hex[9];
    snprintf(hex, sizeof hex, "%08lx",
             crc32(crc32(0L, Z_NULL, 0), fb->bytes + fb->header_end, (uInt)(fb->size - fb->header_end)));
    memcpy(at + 14, hex, 8);
}

/* The data bytes of tensor `name` in the file. */
static unsigned char *tensor_bytes(file_bytes *fb, const char *name)
{
    cJSON *header = cJSON_ParseWithLength((const char *)fb->bytes + 8, fb->header_end - 8);
    ck_assert_ptr_nonnull(header);
    cJSON *offsets = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(header, name), "data_offsets");
    ck_assert_msg(cJSON_IsArray(offsets), "no tensor %s", name);
    size_t begin = (size_t)cJSON_GetArrayItem(offsets, 0)->valuedouble;
    cJSON_Delete(header);
    return fb->bytes + fb->header_end + begin;
}

/* Loading the edited bytes fails with `want`, naming something of `what`. */
static void expect_refused(const file_bytes *fb, lenet_status want, const char *what, const char *edit)
{
    const char *path = temp_path("edited.safetensors");
    write_bytes(path, fb->bytes, fb->size);
    lenet_plan *p = lenet_plan_load(path);
    ck_assert_msg(p == NULL, "%s: the edited file loaded", edit);
    ck_assert_msg(lenet__last_status() == want, "%s: status %d (%s), expected %d", edit, (int)lenet__last_status(),
                  lenet_last_error(), (int)want);
    ck_assert_msg(strstr(lenet_last_error(), what) != NULL, "%s: message \"%s\" lacks \"%s\"", edit,
                  lenet_last_error(), what);
    unlink(path);
}

static void set_i32(unsigned char *at, int32_t v)
{
    for (int b = 0; b < 4; b++)
        at[b] = (unsigned char)((uint32_t)v >> (8 * b));
}

START_TEST(test_corrupt_and_crafted_plan_files_fail_cleanly)
{
    const network *net = &NETWORKS[0];
    lenet_model *m = net->make();
    lenet_plan *p = int8_plan(net, m, 8);
    const char *path = temp_path("good.safetensors");
    ck_assert_lenet_ok(lenet_plan_save(p, path));
    const file_bytes good = read_bytes(path);
    file_bytes fb = {.bytes = malloc(good.size), .size = good.size, .header_end = good.header_end};

    /* Truncated anywhere, or a data byte flipped: the reader's checks (lengths, JSON, CRC). */
    for (size_t cut = 0; cut < good.size; cut += good.size / 37 + 1) {
        memcpy(fb.bytes, good.bytes, good.size);
        fb.size = cut;
        expect_refused(&fb, LENET_EFORMAT, "", "truncated");
    }
    fb.size = good.size;
    for (size_t at = good.header_end; at < good.size; at += (good.size - good.header_end) / 13 + 1) {
        memcpy(fb.bytes, good.bytes, good.size);
        fb.bytes[at] ^= 0x10;
        expect_refused(&fb, LENET_EFORMAT, "CRC", "a data byte flipped");
    }
    /* Every byte of the header flipped: refused or loaded, never a crash (valgrind and the sanitizers watch). */
    for (size_t at = 8; at < good.header_end; at++) {
        memcpy(fb.bytes, good.bytes, good.size);
        fb.bytes[at] ^= 0x01;
        const char *edited = temp_path("flipped.safetensors");
        write_bytes(edited, fb.bytes, fb.size);
        lenet_plan_free(lenet_plan_load(edited));
        unlink(edited);
    }

    /* Crafted values with a valid CRC: each one out of its range. */
    struct {
        const char *tensor;
        size_t index;
        int32_t value;
        const char *message;
    } crafted[] = {
        {"int8.0.shift", 2, 3, "right shift"},
        {"int8.0.shift", 0, -32, "right shift"},
        {"int8.3.multiplier", 1, 12345, "multiplier"},
        {"int8.3.multiplier", 0, -5, "multiplier"},
        {"int8.3.bias", 4, INT32_MAX, "bias"},
        {"int8.0.zero_point", 0, 128, "zero point"},
        {"int8.input.zero_point", 0, -129, "zero point"},
        {"int8.0.scale", 0, (int32_t)0xff800000u, "zero point"}, /* -infinity as a scale */
        {"int8.0.weight_scale", 3, 0, "weight scale"},
        {"int8.7.weight", 0, (int32_t)0x80808080u, "-128"},
    };
    for (size_t i = 0; i < sizeof crafted / sizeof crafted[0]; i++) {
        memcpy(fb.bytes, good.bytes, good.size);
        set_i32(tensor_bytes(&fb, crafted[i].tensor) + 4 * crafted[i].index, crafted[i].value);
        fix_crc(&fb);
        expect_refused(&fb, LENET_EFORMAT, crafted[i].message, crafted[i].tensor);
    }
    /* Renamed tensors and edited metadata (same lengths, so the offsets hold). */
    struct {
        const char *from, *to;
        lenet_status status;
        const char *message;
    } edits[] = {
        {"\"int8.0.shift\"", "\"int8.0.shifx\"", LENET_EFORMAT, "int8.0.shift"},
        {"\"int8.4.table\"", "\"int8.9.table\"", LENET_EFORMAT, "int8.4.table"},
        {"\\\"kind\\\":\\\"int8\\\"", "\\\"kind\\\":\\\"int9\\\"", LENET_EUNSUPPORTED, "int9"},
        {"\\\"kind\\\":\\\"int8\\\"", "\\\"kind\\\":\\\"float\\\"", LENET_EFORMAT, "int8."},
        {"\\\"version\\\":1", "\\\"version\\\":7", LENET_EUNSUPPORTED, "version 7"},
        {"\\\"max_batch\\\":8", "\\\"max_batch\\\":0", LENET_EFORMAT, "max_batch"},
        {"\"liblenet_plan\"", "\"liblenet_plax\"", LENET_EFORMAT, "liblenet_plan"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        const size_t from = strlen(edits[i].from), to = strlen(edits[i].to);
        const size_t grow = to - from; /* 0 or 1 */
        unsigned char *bytes = malloc(good.size + grow);
        unsigned char *at = memmem(good.bytes, good.header_end, edits[i].from, from);
        ck_assert_msg(at != NULL, "no %s in the header", edits[i].from);
        const size_t offset = (size_t)(at - good.bytes);
        memcpy(bytes, good.bytes, offset);
        memcpy(bytes + offset, edits[i].to, to);
        memcpy(bytes + offset + to, good.bytes + offset + from, good.size - offset - from);
        file_bytes edited = {.bytes = bytes, .size = good.size + grow, .header_end = good.header_end + grow};
        if (grow) { /* the header length grows by one */
            uint64_t n = edited.header_end - 8;
            for (int b = 0; b < 8; b++)
                bytes[b] = (unsigned char)(n >> (8 * b));
        }
        expect_refused(&edited, edits[i].status, edits[i].message, edits[i].to);
        free(bytes);
    }
    free(fb.bytes);
    free(good.bytes);
    unlink(path);
    lenet_plan_free(p);
    lenet_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan_int8");
    TCase *tc = tcase_create("plan_int8");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_requantization_is_tflites_fixed_point_multiply);
    tcase_add_test(tc, test_every_kernel_table_matches_a_plain_integer_convolution);
    tcase_add_test(tc, test_every_kernel_table_quantizes_as_tflite);
    tcase_add_test(tc, test_int8_plans_give_the_same_bytes_on_every_kernel_table);
    tcase_add_test(tc, test_int8_outputs_stay_within_a_few_output_steps_of_float);
    tcase_add_test(tc, test_calibration_errors_are_statuses);
    tcase_add_test(tc, test_int8_plans_run_without_allocating);
    tcase_add_test(tc, test_saved_plans_load_back_bit_identical);
    tcase_add_test(tc, test_corrupt_and_crafted_plan_files_fail_cleanly);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
