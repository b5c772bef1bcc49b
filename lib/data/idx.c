/* IDX files (LeCun's MNIST format): big-endian header, then bytes, raw or gzip-compressed.
 *
 * A file is gzip when it starts with the gzip magic 1f 8b (an IDX file starts with 00) and raw otherwise.  We
 * drive zlib's inflate over the descriptor ourselves rather than use gzread, because gzread silently skips
 * whatever follows a gzip member and reads a second member as more data: here a gzip file holds exactly one
 * member, whose CRC-32 and length are checked, and nothing after it. */
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
#define INPUT_SIZE (1u << 16)
#define CHUNK_SIZE (1u << 20)

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

/* One IDX file being read: its descriptor, the bytes read from it and not used yet (zs.next_in, zs.avail_in, in
 * both modes), and for gzip the inflate state. */
typedef struct idx_file {
    const char *path;
    int fd;
    bool eof;            /* read() returned 0 */
    bool gzip;
    bool inflating;      /* inflateInit2 succeeded: inflateEnd is due */
    bool stream_end;     /* gzip: the member ended and its trailer checked out */
    uint64_t read_total; /* bytes read from fd so far */
    z_stream zs;
    unsigned char input[INPUT_SIZE];
} idx_file;

/* zlib's allocations go through ours, so allocation-failure injection reaches them too. */
static voidpf zlib_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return lenet__calloc(items, size);
}

static void zlib_free(voidpf opaque, voidpf p)
{
    (void)opaque;
    lenet__free(p);
}

/* Moves the unused input to the front of the buffer and reads more after it; sets eof when the file ends. */
static lenet_status fill(idx_file *f)
{
    uInt kept = f->zs.avail_in;
    if (kept > 0 && f->zs.next_in != f->input)
        memmove(f->input, f->zs.next_in, kept);
    f->zs.next_in = f->input;
    if (f->eof || kept == sizeof f->input)
        return LENET_OK;
    ssize_t got;
    do
        got = read(f->fd, f->input + kept, sizeof f->input - kept);
    while (got < 0 && errno == EINTR);
    if (got < 0) {
        int err = errno;
        char reason[128]; /* strerror is not thread-safe; with _POSIX_C_SOURCE this is the XSI strerror_r */
        if (strerror_r(err, reason, sizeof reason) != 0)
            snprintf(reason, sizeof reason, "error %d", err);
        return lenet__fail(LENET_EIO, "%s: cannot read: %s", f->path, reason);
    }
    if (got == 0)
        f->eof = true;
    f->zs.avail_in = kept + (uInt)got;
    f->read_total += (uint64_t)got;
    return LENET_OK;
}

/* Opens `path`, refusing anything but a regular file, and tells gzip from raw by the first two bytes. */
static lenet_status file_open(const char *path, idx_file **out)
{
    *out = NULL;
    idx_file *f = lenet__malloc(sizeof *f);
    if (!f)
        return lenet__oom("IDX reader");
    memset(f, 0, offsetof(idx_file, input));
    f->path = path;
    f->zs.next_in = f->input;
    f->zs.zalloc = zlib_alloc;
    f->zs.zfree = zlib_free;
    lenet_status st = lenet__open_regular(path, &f->fd);
    if (st != LENET_OK)
        goto fail;
    while (f->zs.avail_in < 2 && !f->eof)
        if ((st = fill(f)) != LENET_OK)
            goto fail;
    if (f->zs.avail_in >= 2 && f->input[0] == 0x1f && f->input[1] == 0x8b) {
        f->gzip = true;
        int ret = inflateInit2(&f->zs, 15 + 16); /* 32K window, gzip wrapper only */
        if (ret != Z_OK) {
            st = ret == Z_MEM_ERROR ? lenet__oom("gzip inflate state")
                                    : lenet__fail(LENET_EUNSUPPORTED, "%s: zlib cannot inflate (inflateInit2 "
                                                                      "returned %d)", path, ret);
            goto fail;
        }
        f->inflating = true;
    }
    *out = f;
    return LENET_OK;
fail:
    if (f->fd >= 0)
        close(f->fd);
    lenet__free(f);
    return st;
}

static void file_close(idx_file *f)
{
    if (!f)
        return;
    if (f->inflating)
        inflateEnd(&f->zs);
    close(f->fd);
    lenet__free(f);
}

/* Inflates into zs.next_out / zs.avail_out as far as the input allows and sets stream_end when the member's
 * trailer has been read and checked.  `what` names the data being read for messages, NULL for the end of the
 * stream after the data. */
static lenet_status inflate_some(idx_file *f, const char *what)
{
    if (f->zs.avail_in == 0) {
        lenet_status st = fill(f);
        if (st != LENET_OK)
            return st;
    }
    int ret = inflate(&f->zs, Z_NO_FLUSH);
    switch (ret) {
    case Z_OK:
        return LENET_OK;
    case Z_STREAM_END:
        f->stream_end = true;
        return LENET_OK;
    case Z_BUF_ERROR: /* no progress possible: the input is used up (avail_out is never 0 here) */
        if (!f->eof)
            return LENET_OK;
        if (!what) /* the data came out, but its CRC-32 and length were never checked */
            return lenet__fail(LENET_EFORMAT, "%s: truncated: the gzip stream ends before its trailer", f->path);
        return lenet__fail(LENET_EFORMAT, "%s: truncated: the file ends inside the %s", f->path, what);
    case Z_MEM_ERROR:
        return lenet__oom("gzip inflate window");
    default: /* Z_DATA_ERROR, Z_NEED_DICT (no gzip stream has one), Z_STREAM_ERROR */
        return lenet__fail(LENET_EFORMAT, "%s: corrupt compressed data %s%s (%s)", f->path,
                           what ? "while reading the " : "at the end of the gzip stream", what ? what : "",
                           f->zs.msg ? f->zs.msg : "invalid gzip stream");
    }
}

/* After the gzip member ended: whether any byte follows it in the file. */
static lenet_status bytes_follow(idx_file *f, bool *follow)
{
    lenet_status st = LENET_OK;
    if (f->zs.avail_in < 2 && !f->eof)
        st = fill(f);
    *follow = f->zs.avail_in > 0;
    return st;
}

static lenet_status read_exact(idx_file *f, void *buf, size_t size, const char *what)
{
    unsigned char *p = buf;
    while (size > 0) {
        if (!f->gzip) {
            if (f->zs.avail_in == 0) {
                lenet_status st = fill(f);
                if (st != LENET_OK)
                    return st;
                if (f->zs.avail_in == 0)
                    return lenet__fail(LENET_EFORMAT, "%s: truncated: the file ends inside the %s", f->path, what);
            }
            size_t take = size < f->zs.avail_in ? size : f->zs.avail_in;
            memcpy(p, f->zs.next_in, take);
            f->zs.next_in += take;
            f->zs.avail_in -= (uInt)take;
            p += take;
            size -= take;
            continue;
        }
        if (f->stream_end) {
            bool follow;
            lenet_status st = bytes_follow(f, &follow);
            if (st != LENET_OK)
                return st;
            return lenet__fail(LENET_EFORMAT, "%s: truncated: the gzip stream ends inside the %s%s", f->path, what,
                               follow ? " (bytes follow it, but an IDX file must be one gzip stream, not several)"
                                      : "");
        }
        uInt chunk = size > CHUNK_SIZE ? CHUNK_SIZE : (uInt)size;
        f->zs.next_out = p;
        f->zs.avail_out = chunk;
        lenet_status st = inflate_some(f, what);
        size_t produced = chunk - f->zs.avail_out;
        p += produced;
        size -= produced;
        if (st != LENET_OK)
            return st;
    }
    return LENET_OK;
}

/* Checks that the file ends right after the `count` items its header declares: no more data, and for gzip the
 * member's trailer checked and nothing after the member. */
static lenet_status read_end(idx_file *f, uint32_t count)
{
    lenet_status st;
    if (f->gzip) {
        unsigned char extra;
        while (!f->stream_end) {
            f->zs.next_out = &extra;
            f->zs.avail_out = 1;
            st = inflate_some(f, NULL);
            if (f->zs.avail_out == 0)
                return lenet__fail(LENET_EFORMAT, "%s: unexpected trailing data after the %u items the header "
                                                  "declares", f->path, count);
            if (st != LENET_OK)
                return st;
        }
    }
    bool follow;
    st = bytes_follow(f, &follow);
    if (st != LENET_OK || !follow)
        return st;
    if (!f->gzip)
        return lenet__fail(LENET_EFORMAT, "%s: unexpected trailing data after the %u items the header declares",
                           f->path, count);
    uint64_t stream_size = f->read_total - f->zs.avail_in;
    bool another = f->zs.avail_in >= 2 && f->zs.next_in[0] == 0x1f && f->zs.next_in[1] == 0x8b;
    return lenet__fail(LENET_EFORMAT, "%s: unexpected trailing data after the gzip stream, which is the first %llu "
                                      "bytes of the file: %s", f->path, (unsigned long long)stream_size,
                       another ? "a second gzip stream (an IDX file must be one gzip stream, not several)"
                               : "bytes that are not gzip data (an IDX file must be one gzip stream and nothing "
                                 "after it)");
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
    idx_file *f;
    lenet_status st = file_open(path, &f);
    if (st != LENET_OK)
        return st;
    unsigned char header[4 + 4 * 3];
    uint8_t *buf = NULL;
    st = read_exact(f, header, 4, "header");
    if (st != LENET_OK)
        goto done;
    if (header[0] != 0 || header[1] != 0 || header[2] != IDX_UBYTE || header[3] != want_dims) {
        st = lenet__fail(LENET_EFORMAT, "%s: not an IDX %s file (magic %02x%02x%02x%02x, expected 000008%02x)", path,
                         want_dims == 3 ? "images" : "labels", header[0], header[1], header[2], header[3], want_dims);
        goto done;
    }
    st = read_exact(f, header + 4, 4 * (size_t)want_dims, "header");
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
        st = read_exact(f, buf + have, cap - have,
                        want_dims == 3 ? "pixel data the header declares" : "label data the header declares");
        if (st != LENET_OK)
            goto done;
        have = cap;
    }
    st = read_end(f, dims[0]);
    if (st != LENET_OK)
        goto done;
    *data = buf;
    buf = NULL;
done:
    lenet__free(buf);
    file_close(f);
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
