/* lenet_predict: load a checkpoint and classify images.
 *
 *   lenet_predict [options] CHECKPOINT IMAGES...
 *
 * IMAGES are IDX image files (MNIST / Fashion-MNIST format, raw or gzip), PGM files (P5 or P2) or, when built
 * with cairo, PNG files; the kind is told from the file's first bytes.  For each image it prints the top
 * classes and their softmax probabilities; with --labels (an IDX labels file for one IDX images file) it also
 * prints the accuracy.  Images smaller than the model's input are centred on a background border (28x28 MNIST
 * digits into LeNet-5's 32x32).  IDX files are read by liblenet's lenet_dataset_open_idx when --labels gives the
 * labels, and otherwise under the same rules (regular files only, the data limit, nothing after the data).
 *
 *   lenet_predict d2l.safetensors --names fashion-mnist --labels t10k-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
 *   lenet_predict d2l.safetensors --invert shirt.pgm boot.png
 *
 * With --int8 it classifies with an int8 plan (lenet/plan.h, docs/inference.md): the plan CHECKPOINT holds when it
 * is a plan file (lenet_plan_save), or else the checkpoint's model quantized by lenet_plan_create_int8, calibrated on
 * the first batch of images it classifies.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <lenet/lenet.h>

#include "cli.h"
#include "tool.h"

#ifdef LENET_HAVE_CAIRO
#include <cairo.h>
#endif

#define PROG "lenet_predict"
#define BATCH 256
#define MAX_CLASSES 4096
#define MAX_SIDE 16384 /* largest image side read from an IDX file */

static const char *const fashion_mnist[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

typedef struct options {
    const char *checkpoint;
    const char *labels;
    int top;
    int show;            /* images of an IDX file to print one line for */
    bool invert;
    float background, foreground;
    char **names;        /* class names, or NULL */
    int n_names;
    char *names_buffer;  /* what names point into, when given on the command line */
    char **inputs;
    int n_inputs;
    struct int8_run *int8; /* --int8: the plan, or NULL */
} options;

/* --int8: the plan and one workspace for it; the plan is made at the first batch when CHECKPOINT is no plan file. */
typedef struct int8_run {
    lenet_plan *plan;
    void *work;
    size_t size;
} int8_run;

/* A gray or RGB image as floats in [0, 1]. */
typedef struct image {
    int channels, height, width;
    float *pixels;
} image;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " PROG " [options] CHECKPOINT IMAGES...\n"
            "Classifies IDX image files (raw or gzip), PGM (P5/P2)%s images with a liblenet checkpoint\n"
            "(lenet_model_save, lenet_checkpoint_save, or d2l_lenet --save).\n"
            "\n"
            "  --labels FILE   IDX labels for the (single) IDX images file: print the accuracy\n"
            "  --top K         print the K most probable classes (default 3)\n"
            "  --show N        print a line for the first N images of an IDX file (default 10, -1 all)\n"
            "  --invert        use 1 - pixel (dark ink on a light background, unlike MNIST)\n"
            "  --range BG FG   map pixel 0 to BG and 1 to FG (default 0 1; LeNet-5: -0.1 1.175)\n"
            "  --names LIST    class names, comma-separated, or fashion-mnist\n"
            "  --int8          classify with an int8 plan: CHECKPOINT's if it is a plan file (lenet_plan_save),\n"
            "                  else the model quantized and calibrated on the first batch of images\n"
            "  --version       print liblenet's version\n"
            "  --help          show this help\n",
#ifdef LENET_HAVE_CAIRO
            ", PNG"
#else
            ""
#endif
    );
}

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, PROG ": %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

/* ---- class names ---- */

static int parse_names(const char *list, options *o)
{
    if (strcmp(list, "fashion-mnist") == 0) {
        o->names = (char **)fashion_mnist;
        o->n_names = 10;
        return 0;
    }
    char *copy = strdup(list);
    int n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    char **names = calloc((size_t)n, sizeof *names);
    if (!copy || !names) {
        free(copy);
        free(names);
        fprintf(stderr, PROG ": out of memory\n");
        return -1;
    }
    o->names_buffer = copy;
    o->names = names;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        o->names[o->n_names++] = tok;
    return 0;
}

static const char *class_name(const options *o, int k)
{
    return (o->names && k < o->n_names) ? o->names[k] : NULL;
}

/* ---- IDX files without labels, under lenet_dataset_open_idx's rules: a regular file, gzip (one member) or
 * raw, a header that declares at most lenet_dataset_max_bytes() of data, all of that data and nothing after it,
 * neither in the file nor after the gzip member. ---- */

typedef struct idx_reader {
    FILE *f;
    const char *path;
    bool gzip, stream_end;
    z_stream z;
    unsigned char in[1 << 15];
} idx_reader;

static int idx_open(idx_reader *r, const char *path, char *err, size_t err_size)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->f = tool_open_regular(path, err, err_size);
    if (!r->f)
        return -1;
    int b0 = fgetc(r->f), b1 = fgetc(r->f);
    r->gzip = b0 == 0x1f && b1 == 0x8b;
    rewind(r->f);
    if (r->gzip && inflateInit2(&r->z, 16 + MAX_WBITS) != Z_OK) { /* 16: a gzip header and trailer */
        snprintf(err, err_size, "%s: cannot start decompressing", path);
        fclose(r->f);
        return -1;
    }
    return 0;
}

static void idx_close(idx_reader *r)
{
    if (r->gzip)
        inflateEnd(&r->z);
    if (r->f)
        fclose(r->f);
}

/* Reads up to n bytes; returns how many, fewer only at the end of the data, or -1 with err set. */
static long long idx_read(idx_reader *r, unsigned char *out, size_t n, char *err, size_t err_size)
{
    if (!r->gzip) {
        size_t got = fread(out, 1, n, r->f);
        if (got < n && ferror(r->f)) {
            snprintf(err, err_size, "cannot read %s: %s", r->path, strerror(errno));
            return -1;
        }
        return (long long)got;
    }
    r->z.next_out = out;
    r->z.avail_out = (uInt)n;
    while (r->z.avail_out > 0 && !r->stream_end) {
        if (r->z.avail_in == 0) {
            size_t got = fread(r->in, 1, sizeof r->in, r->f);
            if (got == 0) {
                snprintf(err, err_size, "%s: the gzip stream is truncated", r->path);
                return -1;
            }
            r->z.next_in = r->in;
            r->z.avail_in = (uInt)got;
        }
        int zs = inflate(&r->z, Z_NO_FLUSH);
        if (zs == Z_STREAM_END) {
            r->stream_end = true;
        } else if (zs != Z_OK && zs != Z_BUF_ERROR) {
            snprintf(err, err_size, "%s: corrupt gzip data (%s)", r->path, r->z.msg ? r->z.msg : "inflate failed");
            return -1;
        }
    }
    return (long long)(n - r->z.avail_out);
}

static int idx_read_exact(idx_reader *r, unsigned char *out, size_t n, const char *what, char *err, size_t err_size)
{
    long long got = idx_read(r, out, n, err, err_size);
    if (got < 0)
        return -1;
    if ((size_t)got < n) {
        snprintf(err, err_size, "%s is truncated: it ends in the %s", r->path, what);
        return -1;
    }
    return 0;
}

/* After the data: the end of the gzip member (its CRC-32 and length checked by zlib) and of the file. */
static int idx_check_end(idx_reader *r, char *err, size_t err_size)
{
    unsigned char extra;
    long long got = idx_read(r, &extra, 1, err, err_size);
    if (got < 0)
        return -1;
    if (got > 0) {
        snprintf(err, err_size, "%s: data follows the images the header declares", r->path);
        return -1;
    }
    if ((r->gzip && r->z.avail_in > 0) || fgetc(r->f) != EOF) {
        snprintf(err, err_size, "%s: bytes follow the %s", r->path, r->gzip ? "gzip stream" : "images");
        return -1;
    }
    return 0;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads an IDX images file (n x h x w bytes) into a new buffer. */
static unsigned char *read_idx_images(const char *path, uint32_t shape[3], char *err, size_t err_size)
{
    idx_reader *r = malloc(sizeof *r);
    unsigned char head[16], *data = NULL;
    if (!r) {
        snprintf(err, err_size, "out of memory reading %s", path);
        return NULL;
    }
    if (idx_open(r, path, err, err_size) != 0) {
        free(r);
        return NULL;
    }
    if (idx_read_exact(r, head, sizeof head, "header", err, err_size) != 0)
        goto fail;
    if (head[0] || head[1] || head[2] != 8 || head[3] != 3) {
        snprintf(err, err_size, "%s is not an IDX images file (magic %02x%02x%02x%02x, expected 00000803)", path,
                 head[0], head[1], head[2], head[3]);
        goto fail;
    }
    size_t total = 1, limit = lenet_dataset_max_bytes();
    for (int i = 0; i < 3; i++) {
        shape[i] = be32(head + 4 + 4 * i);
        if (shape[i] == 0 || (i > 0 && shape[i] > MAX_SIDE) || shape[i] > limit / total) {
            if (shape[i] == 0)
                snprintf(err, err_size, "%s holds no images (dimension %d is 0)", path, i);
            else if (i > 0 && shape[i] > MAX_SIDE)
                snprintf(err, err_size, "%s declares images with a side of %u pixels, more than %d", path, shape[i],
                         MAX_SIDE);
            else
                snprintf(err, err_size, "%s declares %u x %u x %u images, more than liblenet's data limit of %zu bytes",
                         path, be32(head + 4), be32(head + 8), be32(head + 12),
                         limit);
            goto fail;
        }
        total *= shape[i];
    }
    /* Grow while reading, so a header that promises more than the file holds cannot make us allocate it. */
    size_t have = 0, cap = 0;
    while (have < total) {
        size_t next = cap ? (cap > total / 2 ? total : cap * 2) : (total < (1u << 16) ? total : (1u << 16));
        unsigned char *grown = realloc(data, next);
        if (!grown) {
            snprintf(err, err_size, "out of memory reading %s", path);
            goto fail;
        }
        data = grown;
        cap = next;
        if (idx_read_exact(r, data + have, cap - have, "pixel data the header declares", err, err_size) != 0)
            goto fail;
        have = cap;
    }
    if (idx_check_end(r, err, err_size) != 0)
        goto fail;
    idx_close(r);
    free(r);
    return data;
fail:
    free(data);
    idx_close(r);
    free(r);
    return NULL;
}

/* ---- what a file is, from its first bytes ---- */

typedef enum kind { KIND_UNREADABLE, KIND_UNKNOWN, KIND_IDX_IMAGES, KIND_PGM, KIND_PNG } kind;

static kind file_kind(const char *path, char *err, size_t err_size)
{
    idx_reader *r = malloc(sizeof *r);
    if (!r) {
        snprintf(err, err_size, "out of memory");
        return KIND_UNREADABLE;
    }
    if (idx_open(r, path, err, err_size) != 0) {
        free(r);
        return KIND_UNREADABLE;
    }
    unsigned char head[8];
    bool gzip = r->gzip;
    long long n = idx_read(r, head, sizeof head, err, err_size);
    idx_close(r);
    free(r);
    if (n < 0)
        return KIND_UNREADABLE;
    if (n >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 8 && head[3] == 3)
        return KIND_IDX_IMAGES;
    if (!gzip && n >= 2 && head[0] == 'P' && (head[1] == '5' || head[1] == '2'))
        return KIND_PGM;
    if (!gzip && n >= 8 && memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0)
        return KIND_PNG;
    snprintf(err, err_size, "%s is not an IDX images, PGM%s file", path,
#ifdef LENET_HAVE_CAIRO
             " or PNG"
#else
             ""
#endif
    );
    return KIND_UNKNOWN;
}

/* PGM (P5 binary or P2 ASCII, maxval up to 65535), as gray floats in [0, 1]. */
static int pgm_token(FILE *f, unsigned *value)
{
    int c = fgetc(f);
    for (;;) {
        while (c != EOF && isspace(c))
            c = fgetc(f);
        if (c != '#')
            break;
        while (c != EOF && c != '\n')
            c = fgetc(f);
    }
    if (c == EOF || !isdigit(c))
        return -1;
    unsigned long v = 0;
    while (c != EOF && isdigit(c)) {
        v = v * 10 + (unsigned long)(c - '0');
        if (v > 1u << 24)
            return -1;
        c = fgetc(f);
    }
    *value = (unsigned)v; /* c, one whitespace byte, is consumed as the header's last separator */
    return 0;
}

static int read_pgm(const char *path, image *img, char *err, size_t err_size)
{
    FILE *f = tool_open_regular(path, err, err_size);
    if (!f)
        return -1;
    int rc = -1;
    char magic[2];
    unsigned w, h, maxval;
    if (fread(magic, 1, 2, f) != 2 || pgm_token(f, &w) || pgm_token(f, &h) || pgm_token(f, &maxval) || w == 0 ||
        h == 0 || w > 16384 || h > 16384 || maxval == 0 || maxval > 65535) {
        snprintf(err, err_size, "%s: bad PGM header", path);
        goto done;
    }
    img->channels = 1;
    img->height = (int)h;
    img->width = (int)w;
    img->pixels = malloc((size_t)w * h * sizeof *img->pixels);
    if (!img->pixels) {
        snprintf(err, err_size, "out of memory reading %s", path);
        goto done;
    }
    for (size_t i = 0; i < (size_t)w * h; i++) {
        unsigned v;
        if (magic[1] == '2') {
            if (pgm_token(f, &v))
                v = UINT32_MAX;
        } else if (maxval < 256) {
            int c = fgetc(f);
            v = c == EOF ? UINT32_MAX : (unsigned)c;
        } else {
            int hi = fgetc(f), lo = fgetc(f);
            v = (hi == EOF || lo == EOF) ? UINT32_MAX : (unsigned)(hi << 8 | lo);
        }
        if (v == UINT32_MAX || v > maxval) {
            snprintf(err, err_size, "%s: truncated or bad pixel data at pixel %zu", path, i);
            goto done;
        }
        img->pixels[i] = (float)v / (float)maxval;
    }
    rc = 0;
done:
    fclose(f);
    return rc;
}

#ifdef LENET_HAVE_CAIRO
static cairo_status_t read_stream(void *closure, unsigned char *data, unsigned int length)
{
    return fread(data, 1, length, closure) == length ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_READ_ERROR;
}
#endif

static int read_png(const char *path, image *img, char *err, size_t err_size)
{
#ifdef LENET_HAVE_CAIRO
    FILE *f = tool_open_regular(path, err, err_size);
    if (!f)
        return -1;
    cairo_surface_t *s = cairo_image_surface_create_from_png_stream(read_stream, f);
    fclose(f);
    int rc = -1;
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
        snprintf(err, err_size, "%s: %s", path, cairo_status_to_string(cairo_surface_status(s)));
        goto done;
    }
    cairo_format_t format = cairo_image_surface_get_format(s);
    if (format != CAIRO_FORMAT_ARGB32 && format != CAIRO_FORMAT_RGB24 && format != CAIRO_FORMAT_A8) {
        snprintf(err, err_size, "%s: unsupported PNG pixel format", path);
        goto done;
    }
    cairo_surface_flush(s);
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    int stride = cairo_image_surface_get_stride(s);
    const unsigned char *data = cairo_image_surface_get_data(s);
    img->channels = format == CAIRO_FORMAT_A8 ? 1 : 3;
    img->height = h;
    img->width = w;
    img->pixels = malloc((size_t)img->channels * w * h * sizeof *img->pixels);
    if (!img->pixels) {
        snprintf(err, err_size, "out of memory reading %s", path);
        goto done;
    }
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            if (format == CAIRO_FORMAT_A8) {
                img->pixels[(size_t)y * w + x] = data[(size_t)y * stride + x] / 255.0f;
                continue;
            }
            uint32_t px;
            memcpy(&px, data + (size_t)y * stride + 4 * (size_t)x, 4); /* native-endian 0xAARRGGBB, premultiplied */
            for (int c = 0; c < 3; c++)
                img->pixels[((size_t)c * h + y) * w + x] = (float)((px >> (16 - 8 * c)) & 0xff) / 255.0f;
        }
    }
    rc = 0;
done:
    cairo_surface_destroy(s);
    return rc;
#else
    (void)img;
    snprintf(err, err_size, "%s: PNG support needs cairo (rebuild with libcairo2-dev), or convert it to PGM", path);
    return -1;
#endif
}

/* Writes `img` as one (C, H, W) sample of the model's input: channels matched (gray replicated, RGB averaged to
 * gray), centred on a background border if smaller, the pixel range mapped. */
static int fit_image(const image *img, const options *o, int channels, int height, int width, float *out,
                     const char *name, char *err, size_t err_size)
{
    int dy = height - img->height, dx = width - img->width;
    if (dy < 0 || dx < 0 || dy % 2 || dx % 2) {
        snprintf(err, err_size, "%s is %dx%d, the model takes %dx%d (smaller images are centred when the margins are even)",
                 name, img->height, img->width, height, width);
        return -1;
    }
    if (channels != 1 && channels != img->channels && img->channels != 1) {
        snprintf(err, err_size, "%s has %d channels, the model takes %d", name, img->channels, channels);
        return -1;
    }
    size_t plane = (size_t)img->height * img->width;
    for (int c = 0; c < channels; c++) {
        for (int y = 0; y < height; y++) {
            for (int x = 0; x < width; x++) {
                int sy = y - dy / 2, sx = x - dx / 2;
                float v = 0.0f;
                bool inside = sy >= 0 && sy < img->height && sx >= 0 && sx < img->width;
                if (inside) {
                    size_t at = (size_t)sy * img->width + sx;
                    if (img->channels == 1)
                        v = img->pixels[at];
                    else if (channels == 1)
                        v = (img->pixels[at] + img->pixels[plane + at] + img->pixels[2 * plane + at]) / 3.0f;
                    else
                        v = img->pixels[(size_t)c * plane + at];
                    if (o->invert)
                        v = 1.0f - v;
                }
                out[((size_t)c * height + y) * width + x] = o->background + (o->foreground - o->background) * v;
            }
        }
    }
    return 0;
}

/* ---- classification ---- */

static void print_result(const options *o, const char *name, long index, const float *probs, int classes, int label)
{
    int order[MAX_CLASSES];
    for (int k = 0; k < classes; k++)
        order[k] = k;
    int top = o->top < classes ? o->top : classes;
    for (int i = 0; i < top; i++) /* partial selection sort: the top few */
        for (int j = i + 1; j < classes; j++)
            if (probs[order[j]] > probs[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    if (index >= 0)
        printf("%s[%ld]:", name, index);
    else
        printf("%s:", name);
    for (int i = 0; i < top; i++) {
        const char *cn = class_name(o, order[i]);
        printf("%s %d%s%s%s %.4f", i ? " |" : "", order[i], cn ? " (" : "", cn ? cn : "", cn ? ")" : "",
               (double)probs[order[i]]);
    }
    if (label >= 0) {
        const char *cn = class_name(o, label);
        printf("   label %d%s%s%s%s", label, cn ? " (" : "", cn ? cn : "", cn ? ")" : "",
               order[0] == label ? "" : "  WRONG");
    }
    printf("\n");
}

/* --int8: the classes and softmax probabilities of count samples by the plan (made from m, calibrated on x, at the
 * first call when the checkpoint was no plan file), as lenet_model_classify gives them. */
static lenet_status classify_int8(const lenet_model *m, int8_run *run, const lenet_tensor *x, int count, int classes,
                                  int32_t *predicted, float *probs)
{
    if (!run->plan) {
        if (!(run->plan = lenet_plan_create_int8(m, BATCH, x)))
            return LENET_EINVAL; /* lenet_last_error() says why */
        printf("int8 plan calibrated on %d images\n", count);
    }
    if (!run->work) {
        run->size = lenet_plan_workspace_size(run->plan);
        if (!(run->work = malloc(run->size)))
            return LENET_ENOMEM;
    }
    lenet_tensor *y = lenet_tensor_create(2, (int[]){count, classes});
    if (!y)
        return LENET_ENOMEM;
    lenet_status st = lenet_plan_run(run->plan, run->work, run->size, x, y);
    if (st == LENET_OK)
        st = lenet_plan_classify(run->plan, y, predicted, probs);
    lenet_tensor_free(y);
    return st;
}

/* Classifies `count` samples already in x (count <= BATCH), printing and counting. */
static int classify_batch(lenet_model *m, const options *o, lenet_tensor *x, int count, int classes, const char *name,
                          long first, const int32_t *labels, long *correct)
{
    float *probs = malloc((size_t)count * classes * sizeof *probs);
    int32_t *predicted = malloc((size_t)count * sizeof *predicted);
    if (!probs || !predicted) {
        free(probs);
        free(predicted);
        return fail("out of memory", NULL);
    }
    lenet_status st = o->int8 ? classify_int8(m, o->int8, x, count, classes, predicted, probs)
                              : lenet_model_classify(m, x, predicted, probs);
    if (st != LENET_OK) {
        free(probs);
        free(predicted);
        return fail("classification failed", tool_last_error());
    }
    for (int i = 0; i < count; i++) {
        int label = labels ? labels[i] : -1;
        if (labels && predicted[i] == label)
            (*correct)++;
        if (o->show < 0 || first + i < o->show)
            print_result(o, name, first >= 0 ? first + i : -1, probs + (size_t)i * classes, classes, label);
    }
    free(probs);
    free(predicted);
    return 0;
}

/* The images of one IDX file: read by liblenet with their labels (--labels), or by read_idx_images. */
typedef struct idx_images {
    lenet_dataset *dataset;
    unsigned char *pixels;
    size_t count;
    int height, width;
} idx_images;

static int idx_image(const idx_images *s, size_t i, float *out)
{
    if (s->dataset)
        return lenet_dataset_image(s->dataset, i, out) == LENET_OK ? 0 : -1;
    size_t plane = (size_t)s->height * (size_t)s->width;
    for (size_t p = 0; p < plane; p++)
        out[p] = s->pixels[i * plane + p] / 255.0f;
    return 0;
}

static int classify_idx(lenet_model *m, const options *o, const char *path, int c, int h, int w, int classes)
{
    char err[1024];
    idx_images s = {0};
    if (o->labels) {
        s.dataset = lenet_dataset_open_idx(path, o->labels);
        if (!s.dataset)
            return fail(tool_last_error(), NULL);
        s.count = lenet_dataset_size(s.dataset);
        s.height = lenet_dataset_height(s.dataset);
        s.width = lenet_dataset_width(s.dataset);
    } else {
        uint32_t shape[3];
        s.pixels = read_idx_images(path, shape, err, sizeof err);
        if (!s.pixels)
            return fail(err, NULL);
        s.count = shape[0];
        s.height = (int)shape[1];
        s.width = (int)shape[2];
    }
    int rc = 1;
    lenet_tensor *x = NULL;
    int32_t labels[BATCH];
    size_t sample = (size_t)c * h * w;
    long correct = 0;
    image img = {1, s.height, s.width, malloc((size_t)s.height * s.width * sizeof(float))};
    if (!img.pixels) {
        fail("out of memory", NULL);
        goto done;
    }
    for (size_t start = 0; start < s.count; start += BATCH) {
        int count = s.count - start < BATCH ? (int)(s.count - start) : BATCH;
        lenet_tensor_free(x);
        x = lenet_tensor_create(4, (int[]){count, c, h, w});
        if (!x) {
            fail("cannot allocate the batch", tool_last_error());
            goto done;
        }
        for (int i = 0; i < count; i++) {
            if (idx_image(&s, start + (size_t)i, img.pixels) != 0) {
                fail(tool_last_error(), NULL);
                goto done;
            }
            if (fit_image(&img, o, c, h, w, lenet_tensor_data(x) + (size_t)i * sample, path, err, sizeof err)) {
                fail(err, NULL);
                goto done;
            }
            labels[i] = s.dataset ? lenet_dataset_label(s.dataset, start + (size_t)i) : -1;
        }
        if (classify_batch(m, o, x, count, classes, path, (long)start, s.dataset ? labels : NULL, &correct))
            goto done;
    }
    if (s.dataset)
        printf("%s: accuracy %.4f (%ld of %zu)\n", path, (double)correct / (double)s.count, correct, s.count);
    rc = 0;
done:
    free(img.pixels);
    lenet_tensor_free(x);
    free(s.pixels);
    lenet_dataset_free(s.dataset);
    return rc;
}

static int classify_picture(lenet_model *m, const options *o, const char *path, kind k, int c, int h, int w,
                            int classes)
{
    char err[1024];
    image img = {0};
    if ((k == KIND_PGM ? read_pgm(path, &img, err, sizeof err) : read_png(path, &img, err, sizeof err)) != 0) {
        free(img.pixels);
        return fail(err, NULL);
    }
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, c, h, w});
    int rc = 1;
    long correct = 0;
    if (!x)
        fail("cannot allocate the input", tool_last_error());
    else if (fit_image(&img, o, c, h, w, lenet_tensor_data(x), path, err, sizeof err))
        fail(err, NULL);
    else
        rc = classify_batch(m, o, x, 1, classes, path, -1, NULL, &correct);
    lenet_tensor_free(x);
    free(img.pixels);
    return rc;
}

/* Parses the command line into o; returns 0 to go on, 1 to exit 0 (--help, --version), or 2 after printing one
 * line that says what is wrong. */
static int8_run int8_state;

static int parse_options(int argc, char **argv, options *o)
{
    *o = (options){.top = 3, .show = 10, .background = 0.0f, .foreground = 1.0f};
    o->inputs = calloc((size_t)argc, sizeof *o->inputs);
    if (!o->inputs) {
        fprintf(stderr, PROG ": out of memory\n");
        return 2;
    }
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || a[1] == '\0') { /* "-" is a file name */
            if (!o->checkpoint)
                o->checkpoint = a;
            else
                o->inputs[o->n_inputs++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf(PROG " (liblenet %s)\n", lenet_version_string());
            return 1;
        }
        if (strcmp(a, "--int8") == 0) {
            o->int8 = &int8_state;
            continue;
        }
        if (strcmp(a, "--invert") == 0) {
            o->invert = true;
            continue;
        }
        int values = strcmp(a, "--range") == 0 ? 2 : 1;
        bool known = values == 2 || strcmp(a, "--labels") == 0 || strcmp(a, "--top") == 0 ||
                     strcmp(a, "--show") == 0 || strcmp(a, "--names") == 0;
        if (!known) {
            fprintf(stderr, PROG ": unknown option '%s' (" PROG " --help lists the options)\n", a);
            return 2;
        }
        if (i + values >= argc) {
            fprintf(stderr, PROG ": %s needs %s\n", a, values == 2 ? "two values, BG and FG" : "a value");
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (strcmp(a, "--labels") == 0) {
            o->labels = v;
        } else if (strcmp(a, "--top") == 0) {
            bad = cli_parse_int(PROG, a, v, 1, MAX_CLASSES, &o->top);
        } else if (strcmp(a, "--show") == 0) {
            bad = cli_parse_int(PROG, a, v, -1, 1 << 30, &o->show);
        } else if (strcmp(a, "--names") == 0) {
            if (v[0] == '\0' || strspn(v, ",") == strlen(v)) {
                fprintf(stderr, PROG ": --names: '%s' names no class\n", v);
                return 2;
            }
            if (o->names_buffer || o->names) {
                fprintf(stderr, PROG ": --names is given twice\n");
                return 2;
            }
            if (parse_names(v, o) != 0)
                return 2;
        } else { /* --range BG FG */
            bad = cli_parse_float(PROG, "--range BG", v, -1e6, 1e6, &o->background);
            if (!bad)
                bad = cli_parse_float(PROG, "--range FG", argv[++i], -1e6, 1e6, &o->foreground);
        }
        if (bad)
            return 2;
    }
    if (!o->checkpoint) {
        fprintf(stderr, PROG ": no checkpoint given (usage: " PROG " [options] CHECKPOINT IMAGES...)\n");
        return 2;
    }
    if (o->n_inputs == 0) {
        fprintf(stderr, PROG ": no images to classify after the checkpoint %s (usage: " PROG
                        " [options] CHECKPOINT IMAGES...)\n", o->checkpoint);
        return 2;
    }
    return 0;
}

static void free_options(options *o)
{
    if (o->names_buffer) {
        free(o->names_buffer);
        free(o->names);
    }
    free(o->inputs);
}

/* Loads the checkpoint; on failure says whether the file is not a checkpoint at all or what is wrong with it. */
static lenet_model *load_model(const char *path, int *c, int *h, int *w)
{
    char err[1024];
    FILE *f = tool_open_regular(path, err, sizeof err); /* a FIFO or a directory: say so, never wait on it */
    if (!f) {
        fail(err, NULL);
        return NULL;
    }
    fclose(f);
    lenet_status st = lenet_checkpoint_input_shape(path, c, h, w);
    lenet_model *m = st == LENET_OK ? lenet_model_load(path) : NULL;
    if (!m) {
        lenet_status why = st != LENET_OK ? st : LENET_EFORMAT;
        if (why == LENET_EFORMAT || why == LENET_EUNSUPPORTED)
            fprintf(stderr, PROG ": %s is not a liblenet checkpoint (%s)\n", path,
                    tool_last_error());
        else
            fprintf(stderr, PROG ": cannot load the checkpoint %s: %s\n", path, tool_last_error());
    }
    return m;
}

int main(int argc, char **argv)
{
    options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed != 0) {
        free_options(&o);
        return parsed == 1 ? 0 : 2;
    }

    int c, h, w, rc = 1;
    lenet_model *m = load_model(o.checkpoint, &c, &h, &w);
    if (!m)
        goto done;
    /* The number of classes: the output size of one forward pass. */
    lenet_tensor *probe = lenet_tensor_create(4, (int[]){1, c, h, w});
    const lenet_tensor *y = NULL;
    if (!probe || lenet_model_forward(m, probe, &y) != LENET_OK || lenet_tensor_ndim(y) != 2) {
        lenet_tensor_free(probe);
        fail("the model does not produce (N, classes) outputs", tool_last_error());
        goto done;
    }
    int classes = lenet_tensor_dim(y, 1);
    lenet_tensor_free(probe);
    if (classes > MAX_CLASSES) {
        fprintf(stderr, PROG ": the model has %d classes, more than the %d this program prints\n", classes,
                MAX_CLASSES);
        goto done;
    }

    /* Every input is checked before any is classified, so a typo in the last name does not cost the run. */
    char err[1024];
    kind *kinds = calloc((size_t)o.n_inputs, sizeof *kinds);
    if (!kinds) {
        fail("out of memory", NULL);
        goto done;
    }
    int idx_files = 0;
    for (int i = 0; i < o.n_inputs; i++) {
        kinds[i] = file_kind(o.inputs[i], err, sizeof err);
        if (kinds[i] == KIND_UNREADABLE || kinds[i] == KIND_UNKNOWN) {
            fail(err, NULL);
            free(kinds);
            goto done;
        }
        idx_files += kinds[i] == KIND_IDX_IMAGES;
    }
    if (o.labels && (idx_files != 1 || o.n_inputs != 1)) {
        fprintf(stderr, PROG ": --labels goes with exactly one IDX images file, and %d files are given\n",
                o.n_inputs);
        free(kinds);
        goto done;
    }
    printf("model %s: input %dx%dx%d, %d classes, %zu parameters\n", o.checkpoint, c, h, w, classes,
           lenet_model_param_numel(m));
    if (o.int8) { /* a plan file runs as saved; any other checkpoint is quantized at the first batch */
        if ((int8_state.plan = lenet_plan_load(o.checkpoint)) != NULL) {
            printf("plan %s\n", o.checkpoint);
        } else if (!strstr(tool_last_error(), "liblenet_plan")) {
            fprintf(stderr, PROG ": cannot load the plan %s: %s\n", o.checkpoint, tool_last_error());
            free(kinds);
            rc = 1;
            goto done;
        }
    }
    rc = 0;
    for (int i = 0; i < o.n_inputs && rc == 0; i++) {
        if (kinds[i] == KIND_IDX_IMAGES)
            rc = classify_idx(m, &o, o.inputs[i], c, h, w, classes);
        else
            rc = classify_picture(m, &o, o.inputs[i], kinds[i], c, h, w, classes);
    }
    free(kinds);
done:
    lenet_plan_free(int8_state.plan);
    free(int8_state.work);
    lenet_model_free(m);
    free_options(&o);
    return rc;
}
