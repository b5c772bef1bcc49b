/* Data augmentation: a pipeline of random transforms applied to each rendered training image, in float, in place.
 *
 * Every transform maps output pixels to source pixels.  Crop (an integer shift with background fill) and flip (a
 * mirror) move pixels exactly.  Affine and elastic transforms resample bilinearly; a run of affine transforms, and
 * an elastic transform right after them, are fused into one coordinate map and sampled once, so the MNIST preset
 * (affine then elastic) blurs the image by one interpolation, not two:
 *
 *     affine:  src = c + A^-1 (p - c - t),  A = R(theta) Sh(phi) s,  c the image's centre, t the translation
 *     elastic: src = M (p + d(p)),  d = alpha * (G_sigma * U),  U uniform in [-1, 1) per pixel and axis
 *
 * where M is the pending affine map (identity if none), G_sigma a Gaussian of width sigma truncated at 4 sigma (as
 * scipy.ndimage.gaussian_filter, the usual reading of Simard et al. 2003) and the field is zero outside the image.
 * A source neighbour outside the image reads the data set's background value.
 *
 * All draws of one image come from one generator seeded by a key (the iterator derives it from its pass and the
 * image's position in the pass), in a fixed number per transform whatever the values drawn, so an image's result
 * depends on nothing else: not the thread, not the batch. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "data/internal.h"
#include "kernels/kernels.h"

typedef enum transform_kind { KIND_CROP, KIND_FLIP, KIND_AFFINE, KIND_ELASTIC } transform_kind;

typedef struct transform {
    transform_kind kind;
    int padding;        /* crop */
    float probability;  /* flip */
    float max_degrees, max_scale, max_shear_degrees, max_translate; /* affine */
    float alpha, sigma; /* elastic */
} transform;

struct lenet_augment {
    size_t count, capacity;
    transform *items;
};

/* Parameter limits, stated in data.h. */
#define MAX_PADDING 64
#define MAX_DEGREES 180.0f
#define MAX_SHEAR_DEGREES 60.0f
#define MAX_TRANSLATE 1024.0f
#define MAX_ALPHA 1000.0f
#define MAX_SIGMA 100.0f
/* The Gaussian is cut at this many sigmas (scipy's default `truncate`). */
#define GAUSS_TRUNCATE 4.0

lenet_augment *lenet_augment_create(void)
{
    lenet_augment *a = lenet__calloc(1, sizeof *a);
    if (!a)
        return lenet__oom("augmentation"), NULL;
    return a;
}

void lenet_augment_free(lenet_augment *a)
{
    if (!a)
        return;
    lenet__free(a->items);
    lenet__free(a);
}

size_t lenet_augment_count(const lenet_augment *a)
{
    return a ? a->count : 0;
}

static lenet_status append(lenet_augment *a, const transform *t)
{
    if (a->count == a->capacity) {
        size_t capacity = a->capacity ? 2 * a->capacity : 4, bytes;
        if (lenet__mul_overflows(capacity, sizeof *a->items, &bytes))
            return lenet__oom("augmentation transforms");
        transform *items = lenet__realloc(a->items, bytes);
        if (!items)
            return lenet__oom("augmentation transforms");
        a->items = items;
        a->capacity = capacity;
    }
    a->items[a->count++] = *t;
    return LENET_OK;
}

/* True when v is a number in [lo, hi]. */
static bool within(float v, float lo, float hi)
{
    return v >= lo && v <= hi; /* false for NaN */
}

lenet_status lenet_augment_add_crop(lenet_augment *a, int padding)
{
    if (!a)
        return lenet__fail(LENET_EINVAL, "augment_add_crop: augmentation is NULL");
    if (padding < 0 || padding > MAX_PADDING)
        return lenet__fail(LENET_EINVAL, "augment_add_crop: padding %d outside [0, %d]", padding, MAX_PADDING);
    return append(a, &(transform){.kind = KIND_CROP, .padding = padding});
}

lenet_status lenet_augment_add_flip(lenet_augment *a, float probability)
{
    if (!a)
        return lenet__fail(LENET_EINVAL, "augment_add_flip: augmentation is NULL");
    if (!within(probability, 0.0f, 1.0f))
        return lenet__fail(LENET_EINVAL, "augment_add_flip: probability %g outside [0, 1]", (double)probability);
    return append(a, &(transform){.kind = KIND_FLIP, .probability = probability});
}

lenet_status lenet_augment_add_affine(lenet_augment *a, float max_degrees, float max_scale, float max_shear_degrees,
                                      float max_translate)
{
    if (!a)
        return lenet__fail(LENET_EINVAL, "augment_add_affine: augmentation is NULL");
    if (!within(max_degrees, 0.0f, MAX_DEGREES))
        return lenet__fail(LENET_EINVAL, "augment_add_affine: max_degrees %g outside [0, %g]", (double)max_degrees,
                           (double)MAX_DEGREES);
    if (!(max_scale >= 0.0f && max_scale < 1.0f))
        return lenet__fail(LENET_EINVAL, "augment_add_affine: max_scale %g outside [0, 1)", (double)max_scale);
    if (!within(max_shear_degrees, 0.0f, MAX_SHEAR_DEGREES))
        return lenet__fail(LENET_EINVAL, "augment_add_affine: max_shear_degrees %g outside [0, %g]",
                           (double)max_shear_degrees, (double)MAX_SHEAR_DEGREES);
    if (!within(max_translate, 0.0f, MAX_TRANSLATE))
        return lenet__fail(LENET_EINVAL, "augment_add_affine: max_translate %g outside [0, %g] pixels",
                           (double)max_translate, (double)MAX_TRANSLATE);
    return append(a, &(transform){.kind = KIND_AFFINE, .max_degrees = max_degrees, .max_scale = max_scale,
                                  .max_shear_degrees = max_shear_degrees, .max_translate = max_translate});
}

lenet_status lenet_augment_add_elastic(lenet_augment *a, float alpha, float sigma)
{
    if (!a)
        return lenet__fail(LENET_EINVAL, "augment_add_elastic: augmentation is NULL");
    if (!within(alpha, 0.0f, MAX_ALPHA))
        return lenet__fail(LENET_EINVAL, "augment_add_elastic: alpha %g outside [0, %g]", (double)alpha,
                           (double)MAX_ALPHA);
    if (!(sigma > 0.0f && sigma <= MAX_SIGMA))
        return lenet__fail(LENET_EINVAL, "augment_add_elastic: sigma %g outside (0, %g]", (double)sigma,
                           (double)MAX_SIGMA);
    return append(a, &(transform){.kind = KIND_ELASTIC, .alpha = alpha, .sigma = sigma});
}

/* Builds a preset from `add` calls; NULL (with the failing call's message) if any fails. */
static lenet_augment *preset(const char *name, bool mnist)
{
    lenet_augment *a = lenet_augment_create();
    if (!a)
        return NULL;
    lenet_status st = mnist ? lenet_augment_add_affine(a, 10.0f, 0.1f, 10.0f, 2.0f) : lenet_augment_add_crop(a, 2);
    if (st == LENET_OK)
        st = mnist ? lenet_augment_add_elastic(a, 34.0f, 4.0f) : lenet_augment_add_flip(a, 0.5f);
    if (st != LENET_OK) {
        lenet__error_prefix("%s: ", name);
        lenet_augment_free(a);
        return NULL;
    }
    return a;
}

lenet_augment *lenet_augment_mnist(void)
{
    return preset("augment_mnist", true);
}

lenet_augment *lenet_augment_fashion(void)
{
    return preset("augment_fashion", false);
}

/* ---- internals for the iterator and checkpoints (data/internal.h) ---- */

lenet_augment *lenet__augment_copy(const lenet_augment *a)
{
    lenet_augment *copy = lenet__calloc(1, sizeof *copy);
    if (!copy)
        return lenet__oom("augmentation copy"), NULL;
    if (a->count) {
        copy->items = lenet__malloc(a->count * sizeof *copy->items); /* no overflow: a holds that many */
        if (!copy->items) {
            lenet__free(copy);
            return lenet__oom("augmentation copy"), NULL;
        }
        memcpy(copy->items, a->items, a->count * sizeof *copy->items);
    }
    copy->count = copy->capacity = a->count;
    return copy;
}

static uint64_t float_bits(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits;
}

uint64_t lenet__augment_fingerprint(const lenet_augment *a)
{
    if (!a || a->count == 0)
        return 0;
    uint64_t h = lenet__rng_mix(0x61756731ULL /* "aug1" */, a->count);
    for (size_t i = 0; i < a->count; i++) {
        const transform *t = &a->items[i];
        const float values[] = {t->probability, t->max_degrees, t->max_scale, t->max_shear_degrees,
                                t->max_translate, t->alpha, t->sigma};
        h = lenet__rng_mix(h, (uint64_t)t->kind << 32 | (uint32_t)t->padding);
        for (size_t k = 0; k < sizeof values / sizeof *values; k++)
            h = lenet__rng_mix(h, float_bits(values[k]));
    }
    return h ? h : 1; /* 0 means no augmentation */
}

void lenet__augment_describe(const lenet_augment *a, char *buf, size_t size)
{
    if (!size)
        return;
    buf[0] = '\0';
    if (!a || a->count == 0) {
        snprintf(buf, size, "no augmentation");
        return;
    }
    size_t used = 0;
    for (size_t i = 0; i < a->count && used < size; i++) {
        const transform *t = &a->items[i];
        const char *sep = i ? ", " : "";
        int n = 0;
        switch (t->kind) {
        case KIND_CROP:
            n = snprintf(buf + used, size - used, "%scrop(%d)", sep, t->padding);
            break;
        case KIND_FLIP:
            n = snprintf(buf + used, size - used, "%sflip(%g)", sep, (double)t->probability);
            break;
        case KIND_AFFINE:
            n = snprintf(buf + used, size - used, "%saffine(%g, %g, %g, %g)", sep, (double)t->max_degrees,
                         (double)t->max_scale, (double)t->max_shear_degrees, (double)t->max_translate);
            break;
        case KIND_ELASTIC:
            n = snprintf(buf + used, size - used, "%selastic(%g, %g)", sep, (double)t->alpha, (double)t->sigma);
            break;
        }
        used = n < 0 ? size : used + (size_t)n;
    }
}

/* Half of the Gaussian kernel that reaches into an h x w image: taps 0..radius. */
static int gauss_radius(float sigma, int h, int w)
{
    int full = (int)(GAUSS_TRUNCATE * sigma + 0.5); /* sigma <= MAX_SIGMA: no overflow */
    int reach = (h > w ? h : w) - 1;                /* farther taps only ever meet the zero padding */
    return full < reach ? full : reach;
}

/* Rows of the displacement fields are padded to a multiple of 16 floats, so that the products that smooth them run
 * on whole vectors of every kernel table (8 or 16 lanes). */
static int padded_width(int w)
{
    return (w + 15) & ~15;
}

/* Where one image's scratch goes. */
typedef struct scratch_layout {
    float *source;  /* (h + 2) x (w + 2): the image with a border of background, what warps sample */
    float *field;   /* h x 2wp (wp = padded_width(w)): row y = the x displacements of row y, then its y ones */
    float *tmp;     /* h x 2wp: the field smoothed down the columns */
    float *gauss_h; /* h x h: the column Gaussian as a banded matrix (zero padding built in) */
    float *gauss_w; /* w x wp: the row Gaussian, times alpha, likewise; columns from w on are zero */
    float *taps;    /* 2 max(h, w) - 1: the 1-D Gaussian at offsets 1 - max(h, w) .. max(h, w) - 1 */
    float *rows;    /* 6 x wp: one output row's sample points (x, y) and their floors, and a row of zero
                     * displacements, for the warp */
} scratch_layout;

/* Cuts `base` (NULL: only counts) into the parts of `l` and returns the floats they take. */
static size_t layout(int h, int w, float *base, scratch_layout *l)
{
    const size_t hh = (size_t)h, ww = (size_t)w, wp = (size_t)padded_width(w), longest = hh > ww ? hh : ww;
    const size_t sizes[7] = {(hh + 2) * (ww + 2), 2 * hh * wp, 2 * hh * wp, hh * hh, ww * wp, 2 * longest - 1,
                             6 * wp};
    float **parts[7] = {&l->source, &l->field, &l->tmp, &l->gauss_h, &l->gauss_w, &l->taps, &l->rows};
    size_t used = 0;
    for (int i = 0; i < 7; i++) {
        *parts[i] = base ? base + used : NULL;
        used += (sizes[i] + 15) & ~(size_t)15; /* each part starts 64-byte aligned in an aligned slice */
    }
    return used;
}

size_t lenet__augment_scratch_floats(int h, int w)
{
    scratch_layout l;
    return layout(h, w, NULL, &l);
}

/* ---- the transforms ---- */

/* Pixel (x, y) of an h x w image, or the background outside it. */
static inline float pixel_or(const float *src, int h, int w, float background, int x, int y)
{
    return (x >= 0 && x < w && y >= 0 && y < h) ? src[(size_t)y * w + x] : background;
}

/* source = image with a one-pixel border of background, so that a bilinear sample anywhere in (-1, w) x (-1, h)
 * reads its four neighbours without bounds checks. */
static void pad_source(const float *image, int h, int w, float background, float *source)
{
    const size_t pw = (size_t)w + 2;
    for (size_t x = 0; x < pw; x++)
        source[x] = source[(size_t)(h + 1) * pw + x] = background;
    for (int y = 0; y < h; y++) {
        float *row = source + (size_t)(y + 1) * pw;
        row[0] = row[w + 1] = background;
        memcpy(row + 1, image + (size_t)y * w, (size_t)w * sizeof *row);
    }
}

/* mask (all ones or all zeros) ? a : b, on the bits: unlike ?: on floats, GCC if-converts and vectorizes it under
 * the default -ftrapping-math. */
static inline float pick(int32_t mask, float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    ia = (ia & mask) | (ib & ~mask);
    memcpy(&a, &ia, sizeof a);
    return a;
}

/* The sample points of one output row, x in [0, wp) (wp a multiple of 16, so that the loop vectorizes): where a
 * bilinear sample of the bordered source is taken, and the floors of those points.  A point outside
 * (-1, w) x (-1, h), or NaN, moves to the border's corner (-1, -1), where the sample is exactly the background;
 * inside, the floors are in [-1, w - 1] and [-1, h - 1], so the four neighbours lie in the border or the image.
 * (dx, dy): the row's displacements, zero without a field. */
static void row_points(int wp, int h, int w, float y, const float *restrict dx, const float *restrict dy,
                       const float m[6], float *restrict sx, float *restrict sy, float *restrict fx,
                       float *restrict fy)
{
    wp &= ~15; /* already a multiple of 16: tells the compiler so */
    const float width = (float)w, height = (float)h;
    for (int x = 0; x < wp; x++) {
        const float px = (float)x + dx[x], py = y + dy[x];
        const float u = m[0] * px + m[1] * py + m[2], v = m[3] * px + m[4] * py + m[5];
        const int32_t inside = -((u > -1.0f) & (u < width) & (v > -1.0f) & (v < height)); /* 0 for NaN */
        const float cu = pick(inside, u, -1.0f), cv = pick(inside, v, -1.0f);
        const float tu = (float)(int)cu, tv = (float)(int)cv; /* truncation: one too high for negative fractions */
        sx[x] = cu;
        sy[x] = cv;
        const int32_t down_u = -(tu > cu), down_v = -(tv > cv); /* -1 or 0 */
        fx[x] = tu + (float)down_u;
        fy[x] = tv + (float)down_v;
    }
}

/* An output-to-source map: src = (m[0] x + m[1] y + m[2], m[3] x + m[4] y + m[5]). */
typedef struct affine_map {
    double m[6];
} affine_map;

static const affine_map identity_map = {{1, 0, 0, 0, 1, 0}};

static bool is_identity(const affine_map *a)
{
    for (int k = 0; k < 6; k++)
        if (a->m[k] != identity_map.m[k]) /* numerically: -0 counts as 0 */
            return false;
    return true;
}

/* cos and sin of an angle in degrees, exact at multiples of 90 degrees. */
static void cos_sin_degrees(double degrees, double *c, double *s)
{
    double quarter = degrees / 90.0;
    if (quarter == floor(quarter) && fabs(quarter) < 1e6) {
        static const double cos_q[4] = {1, 0, -1, 0}, sin_q[4] = {0, 1, 0, -1};
        int q = (int)fmod(quarter, 4.0);
        q = (q + 4) % 4;
        *c = cos_q[q];
        *s = sin_q[q];
        return;
    }
    const double radians = degrees * (3.14159265358979323846 / 180.0);
    *c = cos(radians);
    *s = sin(radians);
}

/* The source map of an affine transform about the centre of an h x w image: the content turns by `degrees`
 * counter-clockwise on screen (rows grow downwards), is sheared along x by `shear_degrees`, scaled by `scale` and
 * moved by (tx, ty) pixels. */
static affine_map affine_source_map(int h, int w, double degrees, double scale, double shear_degrees, double tx,
                                    double ty)
{
    double c, s, shear_c, shear_s;
    cos_sin_degrees(degrees, &c, &s);
    cos_sin_degrees(shear_degrees, &shear_c, &shear_s);
    const double shear = shear_s / shear_c; /* |shear| <= 60 degrees */
    /* Forward A = R Sh S with R = [c s; -s c] (counter-clockwise with y down), Sh = [1 k; 0 1], S = scale I.
     * Inverse A^-1 = S^-1 Sh^-1 R^T = (1 / scale) [1 -k; 0 1] [c -s; s c]. */
    const double inv = 1.0 / scale;
    const double a00 = inv * (c - shear * s), a01 = inv * (-s - shear * c);
    const double a10 = inv * s, a11 = inv * c;
    const double cx = 0.5 * (w - 1), cy = 0.5 * (h - 1);
    /* src = c + A^-1 (p - c - t) */
    const double ox = -cx - tx, oy = -cy - ty;
    return (affine_map){{a00, a01, cx + a00 * ox + a01 * oy, a10, a11, cy + a10 * ox + a11 * oy}};
}

/* first(second(p)): the map of applying `first`'s transform to the image, then `second`'s. */
static affine_map compose(const affine_map *first, const affine_map *second)
{
    const double *f = first->m, *g = second->m;
    return (affine_map){{f[0] * g[0] + f[1] * g[3], f[0] * g[1] + f[1] * g[4], f[0] * g[2] + f[1] * g[5] + f[2],
                         f[3] * g[0] + f[4] * g[3], f[3] * g[1] + f[4] * g[4], f[3] * g[2] + f[4] * g[5] + f[5]}};
}

/* image = image(map(p)) for every p, sampled bilinearly from a bordered copy in l->source: a neighbour outside the
 * image reads the border's background, at integer points the sample is the pixel exactly (weights 1 and 0).  The
 * field, if given (h x 2wp as in scratch_layout), displaces p first: image = image(map(p + d(p))). */
static void warp(float *image, int h, int w, float background, const affine_map *map, const float *field,
                 const scratch_layout *l)
{
    pad_source(image, h, w, background, l->source);
    const float m[6] = {(float)map->m[0], (float)map->m[1], (float)map->m[2],
                        (float)map->m[3], (float)map->m[4], (float)map->m[5]};
    const int wp = padded_width(w);
    const size_t stride = (size_t)w + 2;
    float *sx = l->rows, *sy = sx + wp, *fx = sy + wp, *fy = fx + wp, *zeros = fy + wp;
    if (!field)
        memset(zeros, 0, 2 * (size_t)wp * sizeof *zeros);
    for (int y = 0; y < h; y++) {
        const float *dx = field ? field + (size_t)y * 2 * wp : zeros, *dy = dx + wp;
        row_points(wp, h, w, (float)y, dx, dy, m, sx, sy, fx, fy);
        float *out = image + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            const float ax = sx[x] - fx[x], ay = sy[x] - fy[x];
            const float *top = l->source + (size_t)((int)fy[x] + 1) * stride + (size_t)((int)fx[x] + 1);
            const float *bottom = top + stride;
            const float upper = (1.0f - ax) * top[0] + ax * top[1], lower = (1.0f - ax) * bottom[0] + ax * bottom[1];
            out[x] = (1.0f - ay) * upper + ay * lower;
        }
    }
}

void lenet__augment_affine(float *image, int h, int w, float background, double degrees, double scale,
                           double shear_degrees, double tx, double ty, float *scratch)
{
    scratch_layout l;
    layout(h, w, scratch, &l);
    const affine_map map = affine_source_map(h, w, degrees, scale, shear_degrees, tx, ty);
    warp(image, h, w, background, &map, NULL, &l);
}

/* image = shifted by (shift_x, shift_y) pixels, background where nothing moves in.  scratch: h * w floats. */
static void shift(float *image, int h, int w, float background, int shift_x, int shift_y, float *scratch)
{
    if (shift_x == 0 && shift_y == 0)
        return;
    memcpy(scratch, image, (size_t)h * w * sizeof *image);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            image[(size_t)y * w + x] = pixel_or(scratch, h, w, background, x - shift_x, y - shift_y);
}

static void flip_rows(float *image, int h, int w)
{
    for (int y = 0; y < h; y++) {
        float *row = image + (size_t)y * w;
        for (int x = 0, mirror = w - 1; x < mirror; x++, mirror--) {
            float t = row[x];
            row[x] = row[mirror];
            row[mirror] = t;
        }
    }
}

/* g (rows x stride) = the matrix of a 1-D convolution with `taps` (centred at taps[centre], zero beyond the
 * Gaussian's radius) over `rows` samples with zero padding: g[j][i] = taps[centre + i - j] for i < rows, 0 for the
 * padding columns.  Each row is a slice of the taps. */
static void banded(float *g, int rows, int stride, const float *taps, int centre)
{
    for (int j = 0; j < rows; j++) {
        float *row = g + (size_t)j * stride;
        memcpy(row, taps + centre - j, (size_t)rows * sizeof *row);
        for (int i = rows; i < stride; i++)
            row[i] = 0.0f;
    }
}

/* splitmix64's output function: a well-mixed 64-bit value from a counter. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Simard's displacement field into l->field (h x 2wp, row y: x displacements then y displacements, w of each):
 * uniform [-1, 1) values, smoothed by G_sigma with zero padding down the columns and then along the rows (two
 * small matrix products), times alpha (folded into the row pass).  The values are 24-bit halves of a counter hash
 * of one draw from the image's generator (the pixel's x value in the high bits, its y value in the low), so the
 * field costs one generator draw. */
static void elastic_field(lenet_rng *rng, int h, int w, float alpha, float sigma, const scratch_layout *l)
{
    const int wp = padded_width(w), longest = h > w ? h : w;
    const uint64_t base = lenet__rng_u64(rng);
    for (int y = 0; y < h; y++) {
        float *dx = l->field + (size_t)y * 2 * wp, *dy = dx + wp;
        const uint64_t row = base + 0x9e3779b97f4a7c15ULL * (uint64_t)y * (uint64_t)w;
        for (int x = 0; x < w; x++) {
            const uint64_t bits = mix64(row + 0x9e3779b97f4a7c15ULL * (uint64_t)(x + 1));
            dx[x] = (float)(uint32_t)(bits >> 40) * 0x1.0p-23f - 1.0f;
            dy[x] = (float)(uint32_t)((bits >> 8) & 0xffffffu) * 0x1.0p-23f - 1.0f;
        }
        for (int x = w; x < wp; x++) /* the padding columns: never read by the row pass, but kept finite */
            dx[x] = dy[x] = 0.0f;
    }
    /* taps exp(-k^2 / (2 sigma^2)) by the recurrence g(k + 1) = g(k) * a * b^k, a = exp(-1 / (2 sigma^2)),
     * b = a^2, normalized over the whole truncated kernel (taps beyond the image only ever meet the padding) */
    const int radius = gauss_radius(sigma, h, w);
    const int full = (int)(GAUSS_TRUNCATE * sigma + 0.5);
    const double a = exp(-1.0 / (2.0 * (double)sigma * (double)sigma)), b = a * a;
    float *centre = l->taps + longest - 1;
    double g = 1.0, step = a, sum = 1.0;
    centre[0] = 1.0f;
    for (int k = 1; k <= full; k++) {
        g *= step;
        step *= b;
        sum += 2.0 * g;
        if (k < longest)
            centre[k] = (float)g;
    }
    for (int k = 0; k < longest; k++) {
        centre[k] = k <= radius ? (float)((double)centre[k] / sum) : 0.0f;
        centre[-k] = centre[k];
    }
    banded(l->gauss_h, h, h, l->taps, longest - 1);
    for (int k = 1 - longest; k < longest; k++)
        centre[k] *= alpha;
    banded(l->gauss_w, w, wp, l->taps, longest - 1);
    const lenet_kernels *kernels = lenet__kernels();
    /* tmp (h x 2wp) = G_h (h x h) . field (h x 2wp): both fields down their columns at once */
    kernels->gemm_nn(h, 2 * wp, h, l->gauss_h, h, l->field, 2 * wp, l->tmp, 2 * wp);
    /* field (2h x wp) = tmp (2h rows of wp: the same memory, rows of x then of y displacements; their first w
     * columns) . alpha G_w (w x wp) */
    kernels->gemm_nn(2 * h, wp, w, l->tmp, wp, l->gauss_w, wp, l->field, wp);
}

void lenet__augment_image(const lenet_augment *a, uint64_t key, float *image, int h, int w, float background,
                          float *scratch)
{
    scratch_layout l;
    layout(h, w, scratch, &l);
    lenet_rng rng;
    lenet__rng_seed(&rng, key);
    affine_map pending = identity_map; /* affine maps not yet sampled */
    for (size_t i = 0; i < a->count; i++) {
        const transform *t = &a->items[i];
        if (t->kind == KIND_AFFINE) {
            /* five draws: angle, scale, shear, x and y translation, each uniform in [-max, max] */
            const double u[5] = {lenet__rng_uniform(&rng), lenet__rng_uniform(&rng), lenet__rng_uniform(&rng),
                                 lenet__rng_uniform(&rng), lenet__rng_uniform(&rng)};
            const affine_map map = affine_source_map(
                h, w, (2.0 * u[0] - 1.0) * t->max_degrees, 1.0 + (2.0 * u[1] - 1.0) * t->max_scale,
                (2.0 * u[2] - 1.0) * t->max_shear_degrees, (2.0 * u[3] - 1.0) * t->max_translate,
                (2.0 * u[4] - 1.0) * t->max_translate);
            pending = compose(&pending, &map);
            continue;
        }
        if (t->kind == KIND_ELASTIC) {
            elastic_field(&rng, h, w, t->alpha, t->sigma, &l);
            warp(image, h, w, background, &pending, l.field, &l);
            pending = identity_map;
            continue;
        }
        if (!is_identity(&pending)) {
            warp(image, h, w, background, &pending, NULL, &l);
            pending = identity_map;
        }
        if (t->kind == KIND_CROP) {
            /* two draws: the window's offset in the padded image, rows then columns */
            const int span = 2 * t->padding + 1;
            const int shift_y = t->padding - (int)lenet__rng_below(&rng, (uint64_t)span);
            const int shift_x = t->padding - (int)lenet__rng_below(&rng, (uint64_t)span);
            shift(image, h, w, background, shift_x, shift_y, l.source);
        } else { /* KIND_FLIP: one draw */
            if (lenet__rng_uniform(&rng) < t->probability)
                flip_rows(image, h, w);
        }
    }
    if (!is_identity(&pending))
        warp(image, h, w, background, &pending, NULL, &l);
}
