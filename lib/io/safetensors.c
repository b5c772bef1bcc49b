/* Reading and writing the safetensors container.  Nothing in a file is trusted: every length, offset, shape and
 * dtype is checked before any byte of data is used, and the whole file is read before anything is parsed, so a
 * truncated or oversized header is caught by arithmetic, not by reading past a buffer. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
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

/* cJSON records the position of a parse error in a global; parses are serialised so that concurrent loads
 * from several threads do not race on it. */
static atomic_flag parse_lock = ATOMIC_FLAG_INIT;

cJSON *lenet__json_parse(const char *text, size_t length, const char **end)
{
    while (atomic_flag_test_and_set_explicit(&parse_lock, memory_order_acquire))
        ;
    const char *stop = text;
    cJSON *root = cJSON_ParseWithLengthOpts(text, length, &stop, 0);
    atomic_flag_clear_explicit(&parse_lock, memory_order_release);
    if (end)
        *end = stop;
    return root;
}

/* ---- reading ---- */

static lenet_status read_all(const char *path, lenet_st_file *f)
{
    char reason[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lenet__fail(LENET_EIO, "cannot open %s: %s", path, lenet__errno_str(errno, reason, sizeof reason));
    lenet_status st = LENET_OK;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = lenet__fail(LENET_EIO, "cannot stat %s: %s", path, lenet__errno_str(errno, reason, sizeof reason));
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = lenet__fail(LENET_EIO, "%s is not a regular file", path);
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
    t->numel = 1;
    const cJSON *dim;
    int d = 0;
    cJSON_ArrayForEach(dim, shape)
    {
        uint64_t size;
        if (!json_uint(dim, &size))
            return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\": dimension %d is not a non-negative integer",
                               f->path, name, d);
        t->shape[d++] = size;
        if (size != 0 && t->numel > (uint64_t)(JSON_MAX_INT / (double)size))
            return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" is impossibly large", f->path, name);
        t->numel *= size;
    }
    uint64_t nbytes = t->numel * dtypes[code].size;
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
    t->data = f->data + b;
    t->nbytes = (size_t)nbytes;
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

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Offsets must tile the data section: sorted by begin, each starts where the previous ended, the last ends at
 * the end.  Names must be unique. */
static lenet_status check_layout(const lenet_st_file *f, const uint64_t *begins)
{
    size_t n = f->n_tensors;
    span *spans = lenet__malloc((n ? n : 1) * sizeof *spans);
    const char **names = lenet__malloc((n ? n : 1) * sizeof *names);
    lenet_status st = LENET_OK;
    if (!spans || !names) {
        st = lenet__oom("tensor table");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        spans[i] = (span){begins[i], begins[i] + f->tensors[i].nbytes, f->tensors[i].name};
        names[i] = f->tensors[i].name;
    }
    qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            st = lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" appears twice", f->path, names[i]);
            goto done;
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
    lenet__free(names);
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
    const char *end = text;
    f->header = lenet__json_parse(text, (size_t)n, &end);
    if (!f->header || !cJSON_IsObject(f->header))
        return lenet__fail(LENET_EFORMAT, "%s: the header is not valid JSON (error near byte %td of %llu)", path,
                           end - text, (unsigned long long)n);
    for (const char *p = end; p < text + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return lenet__fail(LENET_EFORMAT, "%s: unexpected bytes after the JSON header", path);
    f->data = f->bytes + 8 + n;
    f->data_size = f->size - 8 - (size_t)n;

    size_t count = 0;
    const cJSON *entry;
    cJSON_ArrayForEach(entry, f->header)
    {
        if (strcmp(entry->string, "__metadata__") == 0) {
            if (f->metadata)
                return lenet__fail(LENET_EFORMAT, "%s: __metadata__ appears twice", path);
            st = check_metadata(f, entry);
            if (st != LENET_OK)
                return st;
            f->metadata = entry;
        } else {
            count++;
        }
    }
    f->tensors = lenet__calloc(count ? count : 1, sizeof *f->tensors);
    uint64_t *begins = lenet__malloc((count ? count : 1) * sizeof *begins);
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

void lenet__st_to_float(const lenet_st_tensor *t, float *out)
{
    const unsigned char *p = t->data;
    for (uint64_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case LENET_ST_F32: out[i] = bits_to_float((uint32_t)load_le(p + 4 * i, 4)); break;
        case LENET_ST_F16: out[i] = half_to_float((uint16_t)load_le(p + 2 * i, 2)); break;
        case LENET_ST_BF16: out[i] = bits_to_float((uint32_t)load_le(p + 2 * i, 2) << 16); break;
        case LENET_ST_F64: {
            uint64_t bits = load_le(p + 8 * i, 8);
            double v;
            memcpy(&v, &bits, sizeof v);
            out[i] = (float)v;
            break;
        }
        default: out[i] = 0.0f; break;
        }
    }
}

bool lenet__st_is_index(lenet_st_dtype dtype)
{
    return dtype == LENET_ST_I32 || dtype == LENET_ST_I64 || dtype == LENET_ST_U32 || dtype == LENET_ST_U64;
}

bool lenet__st_to_u64(const lenet_st_tensor *t, uint64_t *out)
{
    int size = (int)dtypes[t->dtype].size;
    bool is_signed = t->dtype == LENET_ST_I32 || t->dtype == LENET_ST_I64;
    for (uint64_t i = 0; i < t->numel; i++) {
        uint64_t v = load_le(t->data + (size_t)i * size, size);
        if (is_signed && (v >> (8 * size - 1)) != 0)
            return false;
        out[i] = v;
    }
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
    if (bytes > SIZE_MAX / 2 - w->data_size)
        return NULL;
    if (w->data_size + bytes > w->data_cap) {
        size_t cap = w->data_cap ? w->data_cap : 4096;
        while (cap < w->data_size + bytes)
            cap *= 2;
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

lenet_status lenet__st_add_f32(lenet_st_writer *w, const char *name, int ndim, const int *shape, const float *values)
{
    if (w->failed)
        return w->status;
    double dims[LENET_ST_MAX_DIMS];
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        dims[i] = shape[i];
        numel *= (size_t)shape[i];
    }
    size_t begin = w->data_size;
    unsigned char *p = reserve(w, numel * 4);
    if (!p)
        return writer_fail(w, lenet__oom("safetensors data"));
    for (size_t i = 0; i < numel; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        store_le(p + 4 * i, bits, 4);
    }
    return add_entry(w, name, LENET_ST_F32, ndim, dims, begin);
}

lenet_status lenet__st_add_index(lenet_st_writer *w, const char *name, const size_t *values, size_t count)
{
    if (w->failed)
        return w->status;
    bool fits = true;
    for (size_t i = 0; i < count; i++)
        fits = fits && values[i] <= INT32_MAX;
    int size = fits ? 4 : 8;
    size_t begin = w->data_size;
    unsigned char *p = reserve(w, count * (size_t)size);
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
    size_t len = strlen(json), padded = (len + 7) & ~(size_t)7;
    unsigned char *head = lenet__malloc(8 + padded);
    if (!head) {
        cJSON_free(json);
        return lenet__oom("safetensors header");
    }
    store_le(head, padded, 8);
    memcpy(head + 8, json, len);
    memset(head + 8 + len, ' ', padded - len);
    cJSON_free(json);
    const void *buffers[2] = {head, w->data};
    size_t sizes[2] = {8 + padded, w->data_size};
    st = lenet__write_atomic(path, buffers, sizes, 2, who);
    lenet__free(head);
    return st;
}
