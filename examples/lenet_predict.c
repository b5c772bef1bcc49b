/* lenet_predict: load a checkpoint and classify images.
 *
 *   lenet_predict [options] CHECKPOINT IMAGES...
 *
 * IMAGES are IDX image files (MNIST / Fashion-MNIST format, raw or gzip), PGM files (P5 or P2) or, when built
 * with cairo, PNG files; the kind is told from the file's first bytes.  For each image it prints the top
 * classes and their softmax probabilities; with --labels (an IDX labels file for one IDX images file) it also
 * prints the accuracy.  Images smaller than the model's input are centred on a background border (28x28 MNIST
 * digits into LeNet-5's 32x32).
 *
 *   lenet_predict d2l.safetensors --names fashion-mnist --labels t10k-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
 *   lenet_predict d2l.safetensors --invert shirt.pgm boot.png
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

#ifdef LENET_HAVE_CAIRO
#include <cairo.h>
#endif

#define BATCH 256
#define MAX_CLASSES 4096

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
} options;

/* A gray or RGB image as floats in [0, 1]. */
typedef struct image {
    int channels, height, width;
    float *pixels;
} image;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: lenet_predict [options] CHECKPOINT IMAGES...\n"
            "Classifies IDX image files (raw or gzip), PGM (P5/P2)%s images with a liblenet checkpoint.\n"
            "  --labels FILE   IDX labels for the (single) IDX images file: print the accuracy\n"
            "  --top K         print the K most probable classes (default 3)\n"
            "  --show N        print a line for the first N images of an IDX file (default 10, -1 all)\n"
            "  --invert        use 1 - pixel (dark ink on a light background, unlike MNIST)\n"
            "  --range BG FG   map pixel 0 to BG and 1 to FG (default 0 1; LeNet-5: -0.1 1.175)\n"
            "  --names LIST    class names, comma-separated, or fashion-mnist\n",
#ifdef LENET_HAVE_CAIRO
            ", PNG"
#else
            ""
#endif
    );
}

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "lenet_predict: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
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
    if (!copy)
        return -1;
    o->names_buffer = copy;
    int n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    o->names = calloc((size_t)n, sizeof *o->names);
    if (!o->names)
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        o->names[o->n_names++] = tok;
    return 0;
}

static const char *class_name(const options *o, int k)
{
    return (o->names && k < o->n_names) ? o->names[k] : NULL;
}

/* ---- files ---- */

typedef enum kind { KIND_UNKNOWN, KIND_IDX_IMAGES, KIND_PGM, KIND_PNG } kind;

/* Reads up to `size` leading bytes, decompressing gzip (gzread passes raw files through). */
static int peek(const char *path, unsigned char *buf, int size)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return -1;
    int n = gzread(f, buf, (unsigned)size);
    gzclose(f);
    return n;
}

static kind file_kind(const char *path)
{
    unsigned char head[8];
    int n = peek(path, head, sizeof head);
    if (n >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 8 && head[3] == 3)
        return KIND_IDX_IMAGES;
    if (n >= 2 && head[0] == 'P' && (head[1] == '5' || head[1] == '2'))
        return KIND_PGM;
    if (n >= 8 && memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0)
        return KIND_PNG;
    return KIND_UNKNOWN;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads an IDX file of the given type (3: images n x h x w, 1: labels n) into a new byte buffer. */
static unsigned char *read_idx(const char *path, int dims, uint32_t *shape, char *err, size_t err_size)
{
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char head[16];
    size_t head_size = 4 + 4 * (size_t)dims;
    unsigned char *data = NULL;
    if (gzread(f, head, (unsigned)head_size) != (int)head_size || head[0] || head[1] || head[2] != 8 ||
        head[3] != dims) {
        snprintf(err, err_size, "%s is not an IDX %s file", path, dims == 3 ? "images" : "labels");
        goto done;
    }
    size_t total = 1;
    for (int i = 0; i < dims; i++) {
        shape[i] = be32(head + 4 + 4 * i);
        if (shape[i] == 0 || shape[i] > (1u << 24)) {
            snprintf(err, err_size, "%s: dimension %d is %u", path, i, shape[i]);
            goto done;
        }
        total *= shape[i];
    }
    data = malloc(total);
    if (!data) {
        snprintf(err, err_size, "out of memory reading %s", path);
        goto done;
    }
    size_t got = 0;
    while (got < total) {
        int n = gzread(f, data + got, (unsigned)(total - got > (1u << 30) ? (1u << 30) : total - got));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got != total) {
        snprintf(err, err_size, "%s is truncated (%zu of %zu bytes of data)", path, got, total);
        free(data);
        data = NULL;
    }
done:
    gzclose(f);
    return data;
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
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
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

static int read_png(const char *path, image *img, char *err, size_t err_size)
{
#ifdef LENET_HAVE_CAIRO
    cairo_surface_t *s = cairo_image_surface_create_from_png(path);
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

/* Classifies `count` samples already in x (count <= BATCH), printing and counting. */
static int classify_batch(lenet_model *m, const options *o, lenet_tensor *x, int count, int classes, const char *name,
                          long first, const unsigned char *labels, long *correct)
{
    float *probs = malloc((size_t)count * classes * sizeof *probs);
    int32_t *predicted = malloc((size_t)count * sizeof *predicted);
    if (!probs || !predicted) {
        free(probs);
        free(predicted);
        return fail("out of memory", NULL);
    }
    lenet_status st = lenet_model_classify(m, x, predicted, probs);
    if (st != LENET_OK) {
        free(probs);
        free(predicted);
        return fail("classification failed", lenet_last_error());
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

static int classify_idx(lenet_model *m, const options *o, const char *path, int c, int h, int w, int classes)
{
    char err[512];
    uint32_t shape[3], label_count = 0;
    unsigned char *pixels = read_idx(path, 3, shape, err, sizeof err), *labels = NULL;
    if (!pixels)
        return fail(err, NULL);
    int rc = 1;
    lenet_tensor *x = NULL;
    if (o->labels) {
        labels = read_idx(o->labels, 1, &label_count, err, sizeof err);
        if (!labels) {
            fail(err, NULL);
            goto done;
        }
        if (label_count != shape[0]) {
            fprintf(stderr, "lenet_predict: %s holds %u images but %s holds %u labels\n", path, shape[0], o->labels,
                    label_count);
            goto done;
        }
    }
    size_t sample = (size_t)c * h * w, plane = (size_t)shape[1] * shape[2];
    long correct = 0;
    image img = {1, (int)shape[1], (int)shape[2], malloc(plane * sizeof(float))};
    if (!img.pixels) {
        fail("out of memory", NULL);
        goto done;
    }
    for (uint32_t start = 0; start < shape[0]; start += BATCH) {
        int count = shape[0] - start < BATCH ? (int)(shape[0] - start) : BATCH;
        lenet_tensor_free(x);
        x = lenet_tensor_create(4, (int[]){count, c, h, w});
        if (!x) {
            fail("cannot allocate the batch", lenet_last_error());
            goto done_img;
        }
        for (int i = 0; i < count; i++) {
            for (size_t p = 0; p < plane; p++)
                img.pixels[p] = pixels[(start + (size_t)i) * plane + p] / 255.0f;
            if (fit_image(&img, o, c, h, w, lenet_tensor_data(x) + (size_t)i * sample, path, err, sizeof err)) {
                fail(err, NULL);
                goto done_img;
            }
        }
        if (classify_batch(m, o, x, count, classes, path, start, labels ? labels + start : NULL, &correct))
            goto done_img;
    }
    if (labels)
        printf("%s: accuracy %.4f (%ld of %u)\n", path, (double)correct / shape[0], correct, shape[0]);
    rc = 0;
done_img:
    free(img.pixels);
done:
    lenet_tensor_free(x);
    free(pixels);
    free(labels);
    return rc;
}

static int classify_picture(lenet_model *m, const options *o, const char *path, kind k, int c, int h, int w,
                            int classes)
{
    char err[512];
    image img = {0};
    if ((k == KIND_PGM ? read_pgm(path, &img, err, sizeof err) : read_png(path, &img, err, sizeof err)) != 0) {
        free(img.pixels);
        return fail(err, NULL);
    }
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, c, h, w});
    int rc = 1;
    long correct = 0;
    if (!x)
        fail("cannot allocate the input", lenet_last_error());
    else if (fit_image(&img, o, c, h, w, lenet_tensor_data(x), path, err, sizeof err))
        fail(err, NULL);
    else
        rc = classify_batch(m, o, x, 1, classes, path, -1, NULL, &correct);
    lenet_tensor_free(x);
    free(img.pixels);
    return rc;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !isfinite(v))
        return -1;
    *out = (float)v;
    return 0;
}

int main(int argc, char **argv)
{
    options o = {.top = 3, .show = 10, .background = 0.0f, .foreground = 1.0f};
    char **inputs = calloc((size_t)argc, sizeof *inputs);
    int n_inputs = 0, rc = 0;
    if (!inputs)
        return fail("out of memory", NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            free(inputs);
            return 0;
        } else if (strcmp(a, "--labels") == 0 && has_value) {
            o.labels = argv[++i];
        } else if (strcmp(a, "--top") == 0 && has_value) {
            o.top = atoi(argv[++i]);
        } else if (strcmp(a, "--show") == 0 && has_value) {
            o.show = atoi(argv[++i]);
        } else if (strcmp(a, "--invert") == 0) {
            o.invert = true;
        } else if (strcmp(a, "--range") == 0 && i + 2 < argc) {
            if (parse_float(argv[i + 1], &o.background) || parse_float(argv[i + 2], &o.foreground)) {
                usage(stderr);
                free(inputs);
                return 2;
            }
            i += 2;
        } else if (strcmp(a, "--names") == 0 && has_value) {
            if (parse_names(argv[++i], &o)) {
                free(inputs);
                return fail("out of memory", NULL);
            }
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "lenet_predict: unknown option or missing value: %s\n", a);
            usage(stderr);
            return 2;
        } else if (!o.checkpoint) {
            o.checkpoint = a;
        } else {
            inputs[n_inputs++] = argv[i];
        }
    }
    if (!o.checkpoint || n_inputs == 0 || o.top < 1) {
        usage(stderr);
        return 2;
    }

    int c, h, w;
    if (lenet_checkpoint_input_shape(o.checkpoint, &c, &h, &w) != LENET_OK)
        return fail("cannot read the checkpoint", lenet_last_error());
    lenet_model *m = lenet_model_load(o.checkpoint);
    if (!m)
        return fail("cannot load the checkpoint", lenet_last_error());
    /* The number of classes: the output size of one forward pass. */
    lenet_tensor *probe = lenet_tensor_create(4, (int[]){1, c, h, w});
    const lenet_tensor *y = NULL;
    if (!probe || lenet_model_forward(m, probe, &y) != LENET_OK || lenet_tensor_ndim(y) != 2) {
        lenet_tensor_free(probe);
        lenet_model_free(m);
        return fail("the model does not produce (N, classes) outputs", lenet_last_error());
    }
    int classes = lenet_tensor_dim(y, 1);
    lenet_tensor_free(probe);
    if (classes > MAX_CLASSES) {
        lenet_model_free(m);
        return fail("too many classes", NULL);
    }
    printf("model %s: input %dx%dx%d, %d classes, %zu parameters\n", o.checkpoint, c, h, w, classes,
           lenet_model_param_numel(m));

    int idx_files = 0;
    for (int i = 0; i < n_inputs; i++)
        idx_files += file_kind(inputs[i]) == KIND_IDX_IMAGES;
    if (o.labels && (idx_files != 1 || n_inputs != 1)) {
        rc = fail("--labels goes with exactly one IDX images file", NULL);
        n_inputs = 0;
    }
    for (int i = 0; i < n_inputs && rc == 0; i++) {
        kind k = file_kind(inputs[i]);
        if (k == KIND_IDX_IMAGES)
            rc = classify_idx(m, &o, inputs[i], c, h, w, classes);
        else if (k == KIND_PGM || k == KIND_PNG)
            rc = classify_picture(m, &o, inputs[i], k, c, h, w, classes);
        else
            rc = fail(inputs[i], peek(inputs[i], (unsigned char[1]){0}, 1) < 0
                                     ? strerror(errno)
                                     : "not an IDX images, PGM or PNG file");
    }
    lenet_model_free(m);
    if (o.names_buffer) {
        free(o.names_buffer);
        free(o.names);
    }
    free(inputs);
    return rc;
}
