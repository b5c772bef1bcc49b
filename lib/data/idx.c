/* IDX files (LeCun's MNIST format): big-endian header, then bytes.  zlib's gzread reads gzip and raw files
 * alike, deciding from the bytes, not the name. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "data/internal.h"

#define IDX_UBYTE 0x08
#define MAX_SIDE 4096

/* The data limit of lenet_dataset_set_max_bytes(): process-wide, read once per open. */
static atomic_size_t data_limit = LENET_DATASET_DEFAULT_MAX_BYTES;

lenet_status lenet_dataset_set_max_bytes(size_t max_bytes)
{
    if (max_bytes == 0)
        return lenet__fail(LENET_EINVAL, "dataset_set_max_bytes: the data limit must be at least 1 byte, not 0");
    atomic_store_explicit(&data_limit, max_bytes, memory_order_relaxed);
    return LENET_OK;
}

size_t lenet_dataset_max_bytes(void)
{
    return atomic_load_explicit(&data_limit, memory_order_relaxed);
}

static lenet_status read_exact(gzFile f, const char *path, void *buf, size_t size, const char *what)
{
    unsigned char *p = buf;
    while (size > 0) {
        unsigned chunk = size > (1u << 20) ? (1u << 20) : (unsigned)size;
        int got = gzread(f, p, chunk);
        if (got < 0) {
            int err;
            const char *msg = gzerror(f, &err);
            if (err == Z_ERRNO)
                return lenet__fail(LENET_EIO, "%s: cannot read: %s", path, strerror(errno));
            return lenet__fail(LENET_EFORMAT, "%s: corrupt compressed data while reading %s (%s)", path, what, msg);
        }
        if (got == 0)
            return lenet__fail(LENET_EFORMAT, "%s: truncated: the file ends inside the %s", path, what);
        p += got;
        size -= (size_t)got;
    }
    return LENET_OK;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Refuses a header that declares more bytes than `limit`; `total` is 0 when the product overflowed. */
static lenet_status check_limit(const char *path, int dims_count, const uint32_t dims[3], size_t total,
                                size_t limit)
{
    if (total != 0 && total <= limit)
        return LENET_OK;
    char size[48];
    if (total != 0)
        snprintf(size, sizeof size, "%zu bytes", total);
    else
        snprintf(size, sizeof size, "more than %zu bytes", (size_t)SIZE_MAX);
    if (dims_count == 3)
        return lenet__fail(LENET_EFORMAT, "%s: the header declares %u images of %ux%u (%s), over the data limit of "
                                          "%zu bytes; raise it with lenet_dataset_set_max_bytes()",
                           path, dims[0], dims[1], dims[2], size, limit);
    return lenet__fail(LENET_EFORMAT, "%s: the header declares %u labels (%s), over the data limit of %zu bytes; "
                                      "raise it with lenet_dataset_set_max_bytes()",
                       path, dims[0], size, limit);
}

/* Reads a whole IDX file of unsigned bytes with `want_dims` dimensions into a new buffer, refusing one that
 * declares more than `limit` bytes. */
static lenet_status read_idx(const char *path, int want_dims, size_t limit, uint32_t dims[3], uint8_t **data)
{
    *data = NULL;
    /* Only a regular file: opening or reading a FIFO or a device could wait forever. */
    int fd;
    lenet_status st = lenet__open_regular(path, &fd);
    if (st != LENET_OK)
        return st;
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        close(fd);
        return lenet__oom("gzip reader");
    }
    unsigned char header[4 + 4 * 3];
    uint8_t *buf = NULL;
    st = read_exact(f, path, header, 4, "header");
    if (st != LENET_OK)
        goto done;
    if (header[0] != 0 || header[1] != 0 || header[2] != IDX_UBYTE || header[3] != want_dims) {
        st = lenet__fail(LENET_EFORMAT, "%s: not an IDX %s file (magic %02x%02x%02x%02x, expected 000008%02x)", path,
                         want_dims == 3 ? "images" : "labels", header[0], header[1], header[2], header[3], want_dims);
        goto done;
    }
    st = read_exact(f, path, header + 4, 4 * (size_t)want_dims, "header");
    if (st != LENET_OK)
        goto done;
    size_t total = 1;
    bool overflow = false;
    for (int i = 0; i < want_dims; i++) {
        dims[i] = be32(header + 4 + 4 * i);
        if (dims[i] == 0 || (i > 0 && dims[i] > MAX_SIDE) || dims[i] > (1u << 30)) {
            st = lenet__fail(LENET_EFORMAT, "%s: dimension %d has size %u", path, i, dims[i]);
            goto done;
        }
        overflow = overflow || lenet__mul_overflows(total, dims[i], &total);
    }
    /* Before any of the data is read: a small gzip file can declare, and inflate to, gigabytes. */
    st = check_limit(path, want_dims, dims, overflow ? 0 : total, limit);
    if (st != LENET_OK)
        goto done;
    /* Grow while reading, so a header that promises more than the file holds cannot make us allocate it. */
    size_t have = 0, cap = 0;
    while (have < total) {
        if (have == cap) {
            size_t next;
            if (cap == 0)
                next = 1u << 16;
            else if (lenet__mul_overflows(cap, 2, &next))
                next = total;
            if (next > total)
                next = total;
            uint8_t *grown = lenet__realloc(buf, next);
            if (!grown) {
                st = lenet__oom("IDX data");
                goto done;
            }
            buf = grown;
            cap = next;
        }
        st = read_exact(f, path, buf + have, cap - have,
                        want_dims == 3 ? "pixel data the header declares" : "label data the header declares");
        if (st != LENET_OK)
            goto done;
        have = cap;
    }
    unsigned char extra;
    int more = gzread(f, &extra, 1), err = Z_OK;
    gzerror(f, &err);
    if (more != 0) {
        st = lenet__fail(LENET_EFORMAT, "%s: %s after the %u items the header declares", path,
                         more > 0 ? "unexpected trailing data" : "corrupt compressed data", dims[0]);
        goto done;
    }
    /* zlib reports a gzip stream cut before its trailer (so its CRC was never checked) only as Z_BUF_ERROR. */
    if (err == Z_BUF_ERROR) {
        st = lenet__fail(LENET_EFORMAT, "%s: truncated: the gzip stream ends before its trailer", path);
        goto done;
    }
    *data = buf;
    buf = NULL;
done:
    lenet__free(buf);
    gzclose(f);
    return st;
}

lenet_dataset *lenet_dataset_open_idx(const char *images_path, const char *labels_path)
{
    if (!images_path || !labels_path)
        return lenet__fail_null(LENET_EINVAL, "dataset_open_idx: %s path is NULL", images_path ? "labels" : "images");
    lenet_dataset *d = lenet__calloc(1, sizeof *d);
    if (!d)
        return lenet__oom("dataset"), NULL;
    /* One limit for both files, even if another thread changes it meanwhile. */
    size_t limit = lenet_dataset_max_bytes();
    uint32_t idims[3] = {0}, ldims[3] = {0};
    if (read_idx(images_path, 3, limit, idims, &d->pixels) != LENET_OK)
        goto fail;
    if (read_idx(labels_path, 1, limit, ldims, &d->labels) != LENET_OK)
        goto fail;
    if (idims[0] != ldims[0]) {
        lenet__fail(LENET_EFORMAT, "%s holds %u images but %s holds %u labels", images_path, idims[0], labels_path,
                    ldims[0]);
        goto fail;
    }
    d->n = idims[0];
    d->h = (int)idims[1];
    d->w = (int)idims[2];
    d->background = 0.0f;
    d->foreground = 1.0f;
    return d;
fail:
    lenet_dataset_free(d);
    return NULL;
}

size_t lenet_dataset_size(const lenet_dataset *d)
{
    return d ? d->n : 0;
}

void lenet_dataset_free(lenet_dataset *d)
{
    if (!d)
        return;
    lenet__free(d->pixels);
    lenet__free(d->labels);
    lenet__free(d);
}

lenet_status lenet_dataset_set_padding(lenet_dataset *d, int pad)
{
    if (!d)
        return lenet__fail(LENET_EINVAL, "dataset_set_padding: dataset is NULL");
    if (pad < 0 || pad > 64)
        return lenet__fail(LENET_EINVAL, "dataset_set_padding: pad %d outside [0, 64]", pad);
    d->pad = pad;
    return LENET_OK;
}

lenet_status lenet_dataset_set_range(lenet_dataset *d, float background, float foreground)
{
    if (!d)
        return lenet__fail(LENET_EINVAL, "dataset_set_range: dataset is NULL");
    if (!isfinite(background) || !isfinite(foreground) || !isfinite(foreground - background))
        return lenet__fail(LENET_EINVAL, "dataset_set_range: background %g and foreground %g must be finite and so "
                                         "must their difference", (double)background, (double)foreground);
    d->background = background;
    d->foreground = foreground;
    return LENET_OK;
}

int lenet_dataset_height(const lenet_dataset *d)
{
    return d ? d->h + 2 * d->pad : 0;
}

int lenet_dataset_width(const lenet_dataset *d)
{
    return d ? d->w + 2 * d->pad : 0;
}

int32_t lenet_dataset_label(const lenet_dataset *d, size_t i)
{
    return (d && i < d->n) ? d->labels[i] : -1;
}

void lenet__dataset_render(const lenet_dataset *d, size_t i, float *out)
{
    const int oh = d->h + 2 * d->pad, ow = d->w + 2 * d->pad;
    const float scale = (d->foreground - d->background) / 255.0f;
    const uint8_t *src = d->pixels + i * (size_t)d->h * d->w;
    for (int y = 0; y < oh; y++) {
        int sy = y - d->pad;
        for (int x = 0; x < ow; x++) {
            int sx = x - d->pad;
            bool inside = sy >= 0 && sy < d->h && sx >= 0 && sx < d->w;
            out[y * ow + x] = inside ? d->background + scale * src[sy * d->w + sx] : d->background;
        }
    }
}

lenet_status lenet_dataset_image(const lenet_dataset *d, size_t i, float *out)
{
    if (!d || !out)
        return lenet__fail(LENET_EINVAL, "dataset_image: %s is NULL", d ? "output" : "dataset");
    if (i >= d->n)
        return lenet__fail(LENET_EINVAL, "dataset_image: index %zu outside [0, %zu)", i, d->n);
    lenet__dataset_render(d, i, out);
    return LENET_OK;
}
