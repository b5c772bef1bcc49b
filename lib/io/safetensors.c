/* Reading and writing the safetensors container.  Nothing in a file is trusted: every length, offset, shape and
 * dtype is checked before any byte of data is used, and the whole file is read before anything is parsed, so a
 * truncated or oversized header is caught by arithmetic, not by reading past a buffer. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "io/internal.h"

/* JSON integers up to 2^53 are exact in cJSON's doubles. */
#define JSON_MAX_INT 9007199254740992.0

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [LENET_ST_BOOL] = {"BOOL", 1}, [LENET_ST_U8] = {"U8", 1},     [LENET_ST_I8] = {"I8", 1},
    [LENET_ST_F8_E5M2] = {"F8_E5M2", 1}, [LENET_ST_F8_E4M3] = {"F8_E4M3", 1},
    [LENET_ST_I16] = {"I16", 2},   [LENET_ST_U16] = {"U16", 2},   [LENET_ST_F16] = {"F16", 2},
    [LENET_ST_BF16] = {"BF16", 2}, [LENET_ST_I32] = {"I32", 4},   [LENET_ST_U32] = {"U32", 4},
    [LENET_ST_F32] = {"F32", 4},   [LENET_ST_F64] = {"F64", 8},   [LENET_ST_I64] = {"I64", 8},
    [LENET_ST_U64] = {"U64", 8},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

const char *lenet__st_dtype_name(lenet_st_dtype dtype)
{
    return (size_t)dtype < N_DTYPES ? dtypes[dtype].name : "?";
}

static uint64_t load_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void store_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)crc;
}

/* ---- strict JSON ----
 * cJSON accepts two things that let one file mean different things to different readers, which the reference
 * safetensors parser (Rust, serde_json) refuses:
 * - a key twice in one object: cJSON keeps both members and cJSON_GetObjectItem returns the first, where another
 *   reader may take the last ("dtype":"F32","dtype":"I32");
 * - a NUL inside a key or a string: cJSON's strings are NUL-terminated, so "3.bias\u0000x" silently becomes
 *   "3.bias" (and a raw 0 byte, which cJSON copies without complaint, cuts the same way).
 * Both are refused here, at every depth, for the header and for the JSON held in metadata values alike. */

/* cJSON records the position of a parse error in a global; parses are serialised so that concurrent loads
 * from several threads do not race on it. */
static atomic_flag parse_lock = ATOMIC_FLAG_INIT;

static bool is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Copies `len` bytes of JSON source into buf for a message: control bytes as \u00XX, cut with "..." if long. */
static const char *quote_source(const char *at, size_t len, char *buf, size_t size)
{
    /* Room for the longest piece (\u00XX, 6 bytes) and then "..." and the terminator. */
    size_t used = 0, i = 0;
    for (; i < len && used + 6 + 4 <= size; i++) {
        unsigned char c = (unsigned char)at[i];
        if (c < 0x20)
            used += (size_t)snprintf(buf + used, size - used, "\\u%04x", c);
        else
            buf[used++] = (char)c;
    }
    snprintf(buf + used, size - used, "%s", i < len ? "..." : "");
    return buf;
}

/* Refuses any string of the JSON text (keys included) that would not decode to exactly what it says: one that
 * holds a NUL, escaped as \u0000 or raw, or another raw control character (RFC 8259 requires those escaped;
 * serde_json refuses them, cJSON copies them).  Outside strings, a control character other than the four JSON
 * spaces is refused too (cJSON skips it as space, serde_json does not).
 *
 * Why the source text and not the parsed tree: once decoded, a string cut at a NUL looks like any shorter
 * string, and cJSON keeps no link from a node back to its source, so the decoded length cannot be compared with
 * the escaped one without decoding every string a second time.  Scanning the source is exact and simpler: a
 * decoded NUL can only come from the escape \u0000 or a raw 0 byte (every other escape, surrogate pairs included,
 * decodes to non-zero bytes), and the text has already been accepted by cJSON, so a quote outside a string opens
 * one and, inside, a backslash always starts an escape (\uXXXX or one character).  The scan keeps the last key
 * it passed so that the message can name the key a bad value belongs to. */
static lenet_status check_strings(const char *text, size_t length, const char *path, const char *what)
{
    const char *key = NULL;
    size_t key_len = 0;
    bool after_colon = false; /* the next string is the value of `key` */
    for (size_t i = 0; i < length; i++) {
        char c = text[i];
        if (c != '"') {
            if ((unsigned char)c < 0x20 && !is_json_space(c)) /* cJSON skips any byte <= 32 as if it were space */
                return lenet__fail(LENET_EFORMAT, "%s: %s: a control character (0x%02x) at byte %zu, outside any string",
                                   path, what, (unsigned)(unsigned char)c, i);
            if (c == ':')
                after_colon = true;
            else if (!is_json_space(c))
                after_colon = false;
            continue;
        }
        size_t start = ++i;
        const char *problem = NULL;
        while (i < length && text[i] != '"') {
            unsigned char b = (unsigned char)text[i];
            if (b == '\\') {
                bool unicode = i + 1 < length && text[i + 1] == 'u';
                if (unicode && !problem && i + 5 < length && memcmp(text + i + 2, "0000", 4) == 0)
                    problem = "a NUL character (\\u0000)";
                i += unicode ? 6 : 2;
                continue;
            }
            if (b == 0 && !problem)
                problem = "a raw NUL byte";
            else if (b < 0x20 && !problem)
                problem = "an unescaped control character";
            i++;
        }
        size_t end = i < length ? i : length;
        size_t next = end + 1;
        while (next < length && is_json_space(text[next]))
            next++;
        bool is_key = next < length && text[next] == ':';
        if (problem) {
            char name[96], owner[96];
            quote_source(text + start, end - start, name, sizeof name);
            if (is_key)
                return lenet__fail(LENET_EFORMAT, "%s: %s: key \"%s\" holds %s", path, what, name, problem);
            if (after_colon && key)
                return lenet__fail(LENET_EFORMAT, "%s: %s: the value of key \"%s\" (\"%s\") holds %s", path, what,
                                   quote_source(key, key_len, owner, sizeof owner), name, problem);
            return lenet__fail(LENET_EFORMAT, "%s: %s: string \"%s\" holds %s", path, what, name, problem);
        }
        if (is_key) {
            key = text + start;
            key_len = end - start;
        }
        after_colon = false;
    }
    return LENET_OK;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Scratch for check_keys: the keys of one object, reused (and grown) from object to object. */
typedef struct key_scratch {
    const char **keys;
    size_t cap;
} key_scratch;

/* Refuses a key twice in one object, in `node` and everything under it.  `owner` is the key `node` is the value
 * of (NULL at the top).  Small objects (a tensor entry's three fields) are compared pairwise, large ones (the
 * header's tensors) sorted, so a header of a million tensors stays O(n log n).  The depth is bounded by cJSON's
 * nesting limit (CJSON_NESTING_LIMIT, 1000), so the recursion is too. */
static lenet_status check_keys(const cJSON *node, const char *owner, key_scratch *s, const char *path,
                               const char *what)
{
    const char *duplicate = NULL;
    if (cJSON_IsObject(node)) {
        size_t n = 0;
        for (const cJSON *child = node->child; child; child = child->next)
            n++;
        if (n <= 8) {
            for (const cJSON *a = node->child; a && !duplicate; a = a->next)
                for (const cJSON *b = a->next; b && !duplicate; b = b->next)
                    if (strcmp(a->string, b->string) == 0)
                        duplicate = a->string;
        } else {
            if (n > s->cap) {
                size_t bytes;
                if (lenet__mul_overflows(n, sizeof *s->keys, &bytes))
                    return lenet__oom("JSON key table");
                const char **keys = lenet__realloc(s->keys, bytes);
                if (!keys)
                    return lenet__oom("JSON key table");
                s->keys = keys;
                s->cap = n;
            }
            size_t i = 0;
            for (const cJSON *child = node->child; child; child = child->next)
                s->keys[i++] = child->string;
            qsort(s->keys, n, sizeof *s->keys, key_cmp);
            for (i = 1; i < n && !duplicate; i++)
                if (strcmp(s->keys[i - 1], s->keys[i]) == 0)
                    duplicate = s->keys[i];
        }
    }
    if (duplicate) {
        if (owner)
            return lenet__fail(LENET_EFORMAT, "%s: %s: key \"%.80s\" appears twice in \"%.80s\"", path, what,
                               duplicate, owner);
        return lenet__fail(LENET_EFORMAT, "%s: %s: key \"%.80s\" appears twice", path, what, duplicate);
    }
    for (const cJSON *child = node->child; child; child = child->next) {
        if (!cJSON_IsObject(child) && !cJSON_IsArray(child))
            continue;
        lenet_status st = check_keys(child, child->string ? child->string : owner, s, path, what);
        if (st != LENET_OK)
            return st;
    }
    return LENET_OK;
}

lenet_status lenet__json_parse(const char *text, size_t length, const char *path, const char *what, cJSON **out)
{
    *out = NULL;
    while (atomic_flag_test_and_set_explicit(&parse_lock, memory_order_acquire))
        ;
    const char *end = text;
    cJSON *root = cJSON_ParseWithLengthOpts(text, length, &end, 0);
    atomic_flag_clear_explicit(&parse_lock, memory_order_release);
    if (!root)
        return lenet__fail(LENET_EFORMAT, "%s: %s is not valid JSON (error near byte %td of %zu)", path, what,
                           end - text, length);
    lenet_status st = LENET_OK;
    for (const char *p = end; p < text + length && st == LENET_OK; p++)
        if (!is_json_space(*p))
            st = lenet__fail(LENET_EFORMAT, "%s: unexpected bytes after the JSON of %s", path, what);
    if (st == LENET_OK)
        st = check_strings(text, (size_t)(end - text), path, what);
    if (st == LENET_OK) {
        key_scratch scratch = {NULL, 0};
        st = check_keys(root, NULL, &scratch, path, what);
        lenet__free(scratch.keys);
    }
    if (st != LENET_OK) {
        cJSON_Delete(root);
        return st;
    }
    *out = root;
    return LENET_OK;
}

/* ---- reading ---- */

static lenet_status read_all(const char *path, lenet_st_file *f)
{
    char reason[128];
    int fd;
    /* Not a plain open(): a FIFO would block it (or a read) forever; this refuses anything but a regular file. */
    lenet_status st = lenet__open_regular(path, &fd);
    if (st != LENET_OK)
        return st;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = lenet__fail(LENET_EIO, "cannot stat %s: %s", path, lenet__errno_str(errno, reason, sizeof reason));
        goto done;
    }
    if ((uintmax_t)sb.st_size > (uintmax_t)SIZE_MAX / 2) {
        st = lenet__fail(LENET_EFORMAT, "%s is too large (%jd bytes)", path, (intmax_t)sb.st_size);
        goto done;
    }
    f->size = (size_t)sb.st_size;
    f->bytes = lenet__malloc(f->size ? f->size : 1);
    if (!f->bytes) {
        st = lenet__oom("file contents");
        goto done;
    }
    size_t got = 0;
    while (got < f->size) {
        ssize_t n = read(fd, f->bytes + got, f->size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = lenet__fail(LENET_EIO, "cannot read %s: %s", path, lenet__errno_str(errno, reason, sizeof reason));
            goto done;
        }
        if (n == 0) {
            st = lenet__fail(LENET_EIO, "%s shrank while it was read (%zu of %zu bytes)", path, got, f->size);
            goto done;
        }
        got += (size_t)n;
    }
done:
    close(fd);
    return st;
}

static bool json_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double v = item->valuedouble;
    if (!(v >= 0.0) || v > JSON_MAX_INT || v != floor(v))
        return false;
    *out = (uint64_t)v;
    return true;
}

static int find_dtype(const char *name)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Parses one tensor entry: dtype, shape, data_offsets; checks sizes against the data section. */
static lenet_status parse_tensor(const lenet_st_file *f, const cJSON *entry, lenet_st_tensor *t, uint64_t *begin)
{
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return lenet__fail(LENET_EFORMAT, "%s: entry \"%s\" is not an object", f->path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offsets))
        return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" lacks a string dtype, a shape or data_offsets",
                           f->path, name);
    int code = find_dtype(dtype->valuestring);
    if (code < 0)
        return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" has unknown dtype \"%.32s\"", f->path, name,
                           dtype->valuestring);
    t->name = name;
    t->dtype = (lenet_st_dtype)code;
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > LENET_ST_MAX_DIMS)
        return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" has %d dimensions, at most %d are supported", f->path,
                           name, ndim, LENET_ST_MAX_DIMS);
    t->ndim = ndim;
    /* numel and nbytes in size_t through the checked helpers: a shape whose product (or byte size) does not fit
     * cannot describe bytes of this file, as in the reference implementation (checked_mul over the shape). */
    size_t numel = 1, nbytes;
    const cJSON *dim;
    int d = 0;
    cJSON_ArrayForEach(dim, shape)
    {
        uint64_t size;
        if (!json_uint(dim, &size))
            return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\": dimension %d is not a non-negative integer",
                               f->path, name, d);
        t->shape[d++] = size;
        if (size > SIZE_MAX || lenet__mul_overflows(numel, (size_t)size, &numel))
            return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" is impossibly large", f->path, name);
    }
    if (lenet__mul_overflows(numel, dtypes[code].size, &nbytes))
        return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" is impossibly large", f->path, name);
    t->numel = numel;
    uint64_t b, e;
    if (cJSON_GetArraySize(offsets) != 2 || !json_uint(cJSON_GetArrayItem(offsets, 0), &b) ||
        !json_uint(cJSON_GetArrayItem(offsets, 1), &e) || e < b)
        return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\": data_offsets must be [begin, end] with begin <= end",
                           f->path, name);
    if (e - b != nbytes)
        return lenet__fail(LENET_EFORMAT,
                           "%s: tensor \"%s\": data_offsets [%llu, %llu) hold %llu bytes, its dtype and shape need %llu",
                           f->path, name, (unsigned long long)b, (unsigned long long)e, (unsigned long long)(e - b),
                           (unsigned long long)nbytes);
    if (e > f->data_size)
        return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu) run past the %zu-byte data",
                           f->path, name, (unsigned long long)b, (unsigned long long)e, f->data_size);
    t->data = f->data + b; /* b <= e <= data_size */
    t->nbytes = nbytes;
    *begin = b;
    return LENET_OK;
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* Offsets must tile the data section: sorted by begin, each starts where the previous ended, the last ends at
 * the end.  (Names are unique already: the header's parser refuses a key twice.) */
static lenet_status check_layout(const lenet_st_file *f, const uint64_t *begins)
{
    size_t n = f->n_tensors, bytes;
    span *spans = NULL;
    lenet_status st = LENET_OK;
    if (lenet__mul_overflows(n ? n : 1, sizeof *spans, &bytes) || !(spans = lenet__malloc(bytes))) {
        st = lenet__oom("tensor table");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        size_t end; /* begins[i] + nbytes <= data_size, checked by parse_tensor; checked again for the sum */
        if (begins[i] > SIZE_MAX || lenet__add_overflows((size_t)begins[i], f->tensors[i].nbytes, &end)) {
            st = lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" ends beyond any file", f->path, f->tensors[i].name);
            goto done;
        }
        spans[i] = (span){begins[i], end, f->tensors[i].name};
    }
    qsort(spans, n, sizeof *spans, span_cmp);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (spans[i].begin != at) {
            st = lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" starts at byte %llu of the data, expected %llu (%s)",
                             f->path, spans[i].name, (unsigned long long)spans[i].begin, (unsigned long long)at,
                             spans[i].begin < at ? "overlap" : "gap");
            goto done;
        }
        at = spans[i].end;
    }
    if (at != f->data_size)
        st = lenet__fail(LENET_EFORMAT, "%s: the tensors cover %llu bytes of data, the file holds %zu", f->path,
                         (unsigned long long)at, f->data_size);
done:
    lenet__free(spans);
    return st;
}

static lenet_status check_metadata(const lenet_st_file *f, const cJSON *meta)
{
    if (!cJSON_IsObject(meta))
        return lenet__fail(LENET_EFORMAT, "%s: __metadata__ is not an object", f->path);
    const cJSON *item;
    cJSON_ArrayForEach(item, meta)
    {
        if (!cJSON_IsString(item))
            return lenet__fail(LENET_EFORMAT, "%s: metadata \"%s\" is not a string", f->path, item->string);
    }
    return LENET_OK;
}

static lenet_status check_crc(const lenet_st_file *f)
{
    const char *text = lenet__st_meta(f, "data_crc32");
    if (!text)
        return LENET_OK;
    char *end = NULL;
    errno = 0;
    unsigned long want = strtoul(text, &end, 16);
    bool hex = strlen(text) == 8;
    for (int i = 0; hex && i < 8; i++)
        hex = (text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f') ||
              (text[i] >= 'A' && text[i] <= 'F');
    if (!hex || errno != 0 || *end != '\0')
        return lenet__fail(LENET_EFORMAT, "%s: data_crc32 \"%.16s\" is not 8 hex digits", f->path, text);
    uint32_t got = crc32_of(f->data, f->data_size);
    if (got != (uint32_t)want)
        return lenet__fail(LENET_EFORMAT, "%s: data CRC-32 is %08x, the header says %08lx: the data is corrupt",
                           f->path, (unsigned)got, want);
    return LENET_OK;
}

lenet_status lenet__st_read(const char *path, lenet_st_file *f)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    lenet_status st = read_all(path, f);
    if (st != LENET_OK)
        return st;
    if (f->size < 8)
        return lenet__fail(LENET_EFORMAT, "%s: %zu bytes, too short for a safetensors file", path, f->size);
    uint64_t n = load_le(f->bytes, 8);
    if (n > LENET_ST_MAX_HEADER)
        return lenet__fail(LENET_EFORMAT, "%s: header length %llu exceeds the %llu-byte limit", path,
                           (unsigned long long)n, (unsigned long long)LENET_ST_MAX_HEADER);
    if (n > f->size - 8)
        return lenet__fail(LENET_EFORMAT, "%s: header length %llu runs past the end of the %zu-byte file", path,
                           (unsigned long long)n, f->size);
    const char *text = (const char *)f->bytes + 8;
    if (n < 2 || text[0] != '{')
        return lenet__fail(LENET_EFORMAT, "%s: the header is not a JSON object", path);
    /* Every key of the header is unique from here on (tensor names, fields, metadata keys), and none is cut short
     * by a NUL: lenet__json_parse refuses both. */
    st = lenet__json_parse(text, (size_t)n, path, "the header", &f->header);
    if (st != LENET_OK)
        return st;
    if (!cJSON_IsObject(f->header))
        return lenet__fail(LENET_EFORMAT, "%s: the header is not a JSON object", path);
    size_t data_at;
    if (lenet__add_overflows(8, (size_t)n, &data_at))
        return lenet__fail(LENET_EFORMAT, "%s: header length %llu is impossibly large", path, (unsigned long long)n);
    f->data = f->bytes + data_at;
    f->data_size = f->size - data_at;

    size_t count = 0;
    const cJSON *entry;
    cJSON_ArrayForEach(entry, f->header)
    {
        if (strcmp(entry->string, "__metadata__") == 0) {
            st = check_metadata(f, entry);
            if (st != LENET_OK)
                return st;
            f->metadata = entry;
        } else {
            count++;
        }
    }
    size_t begins_bytes;
    if (lenet__mul_overflows(count ? count : 1, sizeof(uint64_t), &begins_bytes))
        return lenet__oom("tensor table");
    f->tensors = lenet__calloc(count ? count : 1, sizeof *f->tensors);
    uint64_t *begins = lenet__malloc(begins_bytes);
    if (!f->tensors || !begins) {
        lenet__free(begins);
        return lenet__oom("tensor table");
    }
    cJSON_ArrayForEach(entry, f->header)
    {
        if (entry == f->metadata)
            continue;
        st = parse_tensor(f, entry, &f->tensors[f->n_tensors], &begins[f->n_tensors]);
        if (st != LENET_OK)
            break;
        f->n_tensors++;
    }
    if (st == LENET_OK)
        st = check_layout(f, begins);
    lenet__free(begins);
    if (st == LENET_OK)
        st = check_crc(f);
    return st;
}

void lenet__st_close(lenet_st_file *f)
{
    if (f->header)
        cJSON_Delete(f->header);
    lenet__free(f->tensors);
    lenet__free(f->bytes);
    memset(f, 0, sizeof *f);
}

const lenet_st_tensor *lenet__st_find(const lenet_st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *lenet__st_meta(const lenet_st_file *f, const char *key)
{
    if (!f->metadata)
        return NULL;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(f->metadata, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

bool lenet__st_is_float(lenet_st_dtype dtype)
{
    return dtype == LENET_ST_F32 || dtype == LENET_ST_F64 || dtype == LENET_ST_F16 || dtype == LENET_ST_BF16;
}

static float bits_to_float(uint32_t bits)
{
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* IEEE binary16 to binary32, exactly (every half is a float). */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    if (exponent == 0x1f)
        return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) {
        float v = (float)mantissa * 0x1.0p-24f; /* subnormal or zero */
        return sign ? -v : v;
    }
    return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

double lenet__st_float_at(const lenet_st_tensor *t, size_t i)
{
    const unsigned char *p = t->data; /* i < numel: inside the tensor's bytes */
    switch (t->dtype) {
    case LENET_ST_F32: return bits_to_float((uint32_t)load_le(p + 4 * i, 4));
    case LENET_ST_F16: return half_to_float((uint16_t)load_le(p + 2 * i, 2));
    case LENET_ST_BF16: return bits_to_float((uint32_t)load_le(p + 2 * i, 2) << 16);
    case LENET_ST_F64: {
        uint64_t bits = load_le(p + 8 * i, 8);
        double v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    default: return 0.0;
    }
}

void lenet__st_to_float(const lenet_st_tensor *t, float *out)
{
    /* Every F32, F16 and BF16 value is a double exactly, so only F64 is rounded, once. */
    for (size_t i = 0; i < t->numel; i++)
        out[i] = (float)lenet__st_float_at(t, i);
}

bool lenet__st_is_index(lenet_st_dtype dtype)
{
    return dtype == LENET_ST_I32 || dtype == LENET_ST_I64 || dtype == LENET_ST_U32 || dtype == LENET_ST_U64;
}

bool lenet__st_index_at(const lenet_st_tensor *t, size_t i, uint64_t *value)
{
    int size = (int)dtypes[t->dtype].size;
    bool is_signed = t->dtype == LENET_ST_I32 || t->dtype == LENET_ST_I64;
    uint64_t v = load_le(t->data + i * (size_t)size, size); /* i < numel: inside the tensor's bytes */
    if (is_signed && (v >> (8 * size - 1)) != 0)
        return false;
    *value = v;
    return true;
}

bool lenet__st_to_u64(const lenet_st_tensor *t, uint64_t *out)
{
    for (size_t i = 0; i < t->numel; i++)
        if (!lenet__st_index_at(t, i, &out[i]))
            return false;
    return true;
}

/* ---- writing ---- */

lenet_status lenet__st_writer_init(lenet_st_writer *w)
{
    memset(w, 0, sizeof *w);
    w->header = cJSON_CreateObject();
    w->metadata = w->header ? cJSON_AddObjectToObject(w->header, "__metadata__") : NULL;
    if (!w->metadata) {
        lenet__st_writer_free(w);
        return lenet__oom("safetensors header");
    }
    return LENET_OK;
}

void lenet__st_writer_free(lenet_st_writer *w)
{
    if (w->header)
        cJSON_Delete(w->header);
    lenet__free(w->data);
    memset(w, 0, sizeof *w);
}

/* Remembers the first failure so that a sequence of adds can be checked once, at commit. */
static lenet_status writer_fail(lenet_st_writer *w, lenet_status st)
{
    if (!w->failed) {
        w->failed = true;
        w->status = st;
    }
    return st;
}

lenet_status lenet__st_add_meta(lenet_st_writer *w, const char *key, const char *value)
{
    if (w->failed)
        return w->status;
    if (!cJSON_AddStringToObject(w->metadata, key, value))
        return writer_fail(w, lenet__oom("safetensors metadata"));
    return LENET_OK;
}

static unsigned char *reserve(lenet_st_writer *w, size_t bytes)
{
    size_t need;
    if (lenet__add_overflows(w->data_size, bytes, &need) || need > SIZE_MAX / 2)
        return NULL;
    if (need > w->data_cap) {
        size_t cap = w->data_cap ? w->data_cap : 4096;
        while (cap < need)
            cap *= 2; /* need <= SIZE_MAX / 2, so cap stays below SIZE_MAX */
        unsigned char *data = lenet__realloc(w->data, cap);
        if (!data)
            return NULL;
        w->data = data;
        w->data_cap = cap;
    }
    unsigned char *at = w->data + w->data_size;
    w->data_size += bytes;
    return at;
}

static lenet_status add_entry(lenet_st_writer *w, const char *name, lenet_st_dtype dtype, int ndim,
                              const double *shape, size_t begin)
{
    cJSON *entry = cJSON_CreateObject();
    if (!entry || !cJSON_AddItemToObject(w->header, name, entry)) {
        cJSON_Delete(entry);
        return writer_fail(w, lenet__oom("safetensors header"));
    }
    double offsets[2] = {(double)begin, (double)w->data_size};
    cJSON *shape_json = cJSON_CreateDoubleArray(shape, ndim);
    cJSON *offsets_json = cJSON_CreateDoubleArray(offsets, 2);
    if (!cJSON_AddStringToObject(entry, "dtype", lenet__st_dtype_name(dtype)) || !shape_json ||
        !cJSON_AddItemToObject(entry, "shape", shape_json)) {
        cJSON_Delete(shape_json);
        cJSON_Delete(offsets_json);
        return writer_fail(w, lenet__oom("safetensors header"));
    }
    if (!offsets_json || !cJSON_AddItemToObject(entry, "data_offsets", offsets_json)) {
        cJSON_Delete(offsets_json);
        return writer_fail(w, lenet__oom("safetensors header"));
    }
    return LENET_OK;
}

/* Room for a tensor of `shape` with elements of `width` bytes at the end of the data: its element count, its
 * dimensions as the header writes them and where it begins; NULL (the writer failed) for a failed writer, an
 * impossible shape or no memory. */
static unsigned char *reserve_tensor(lenet_st_writer *w, const char *name, int ndim, const int *shape, size_t width,
                                     double *dims, size_t *numel, size_t *begin)
{
    if (w->failed)
        return NULL;
    size_t bytes;
    bool overflow = ndim < 0 || ndim > LENET_ST_MAX_DIMS;
    *numel = 1;
    for (int i = 0; i < ndim && !overflow; i++) {
        dims[i] = shape[i];
        overflow = shape[i] < 0 || lenet__mul_overflows(*numel, (size_t)shape[i], numel);
    }
    if (overflow || lenet__mul_overflows(*numel, width, &bytes)) {
        writer_fail(w, lenet__fail(LENET_EINVAL, "tensor \"%s\" has an impossible shape", name));
        return NULL;
    }
    *begin = w->data_size;
    unsigned char *p = reserve(w, bytes);
    if (!p)
        writer_fail(w, lenet__oom("safetensors data"));
    return p;
}

lenet_status lenet__st_add_f32(lenet_st_writer *w, const char *name, int ndim, const int *shape, const float *values)
{
    double dims[LENET_ST_MAX_DIMS];
    size_t numel, begin;
    unsigned char *p = reserve_tensor(w, name, ndim, shape, 4, dims, &numel, &begin);
    if (!p)
        return w->status;
    for (size_t i = 0; i < numel; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        store_le(p + 4 * i, bits, 4);
    }
    return add_entry(w, name, LENET_ST_F32, ndim, dims, begin);
}

lenet_status lenet__st_add_i64(lenet_st_writer *w, const char *name, int ndim, const int *shape, const int64_t *values)
{
    double dims[LENET_ST_MAX_DIMS];
    size_t numel, begin;
    unsigned char *p = reserve_tensor(w, name, ndim, shape, 8, dims, &numel, &begin);
    if (!p)
        return w->status;
    for (size_t i = 0; i < numel; i++)
        store_le(p + 8 * i, (uint64_t)values[i], 8); /* two's complement, as int64_t is */
    return add_entry(w, name, LENET_ST_I64, ndim, dims, begin);
}

lenet_status lenet__st_add_index(lenet_st_writer *w, const char *name, const size_t *values, size_t count)
{
    if (w->failed)
        return w->status;
    bool fits = true;
    for (size_t i = 0; i < count; i++)
        fits = fits && values[i] <= INT32_MAX;
    int size = fits ? 4 : 8;
    size_t begin = w->data_size, bytes;
    if (lenet__mul_overflows(count, (size_t)size, &bytes))
        return writer_fail(w, lenet__oom("safetensors data"));
    unsigned char *p = reserve(w, bytes);
    if (!p)
        return writer_fail(w, lenet__oom("safetensors data"));
    for (size_t i = 0; i < count; i++)
        store_le(p + (size_t)size * i, values[i], size);
    double dims[1] = {(double)count};
    return add_entry(w, name, fits ? LENET_ST_I32 : LENET_ST_I64, 1, dims, begin);
}

lenet_status lenet__st_commit(lenet_st_writer *w, const char *path, const char *who)
{
    if (w->failed)
        return w->status;
    char crc[16];
    snprintf(crc, sizeof crc, "%08x", (unsigned)crc32_of(w->data, w->data_size));
    lenet_status st = lenet__st_add_meta(w, "data_crc32", crc);
    if (st != LENET_OK)
        return st;
    char *json = cJSON_PrintUnformatted(w->header);
    if (!json)
        return lenet__oom("safetensors header");
    /* The header is padded with spaces to a multiple of 8. */
    size_t len = strlen(json), padded = 0, head_size = 0;
    unsigned char *head = NULL;
    if (!lenet__add_overflows(len, 7, &padded)) {
        padded &= ~(size_t)7;
        if (!lenet__add_overflows(8, padded, &head_size))
            head = lenet__malloc(head_size);
    }
    if (!head) {
        cJSON_free(json);
        return lenet__oom("safetensors header");
    }
    store_le(head, padded, 8);
    memcpy(head + 8, json, len);
    memset(head + 8 + len, ' ', padded - len);
    cJSON_free(json);
    const void *buffers[2] = {head, w->data};
    size_t sizes[2] = {head_size, w->data_size};
    st = lenet__write_atomic(path, buffers, sizes, 2, who);
    lenet__free(head);
    return st;
}
