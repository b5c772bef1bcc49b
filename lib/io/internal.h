/* The safetensors container: reading a whole file into memory and validating it, and writing one atomically.
 * Format: u64 little-endian header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets"}, ...,
 * "__metadata__": {string: string}}, then the data section that the offsets index.  Never installed. */
#ifndef LENET_IO_INTERNAL_H
#define LENET_IO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* The largest header accepted (the safetensors reference implementation's limit). */
#define LENET_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Most dimensions of a tensor in a file. */
#define LENET_ST_MAX_DIMS 16

typedef enum lenet_st_dtype {
    LENET_ST_BOOL, LENET_ST_U8, LENET_ST_I8, LENET_ST_F8_E5M2, LENET_ST_F8_E4M3, LENET_ST_I16, LENET_ST_U16,
    LENET_ST_F16, LENET_ST_BF16, LENET_ST_I32, LENET_ST_U32, LENET_ST_F32, LENET_ST_F64, LENET_ST_I64,
    LENET_ST_U64
} lenet_st_dtype;

/* "F32" for LENET_ST_F32, ... */
const char *lenet__st_dtype_name(lenet_st_dtype dtype);

typedef struct lenet_st_tensor {
    const char *name; /* borrowed from the parsed header */
    lenet_st_dtype dtype;
    int ndim;
    uint64_t shape[LENET_ST_MAX_DIMS];
    uint64_t numel;
    const unsigned char *data; /* inside the file's bytes */
    size_t nbytes;
} lenet_st_tensor;

typedef struct lenet_st_file {
    const char *path;   /* borrowed, for messages */
    unsigned char *bytes;
    size_t size;
    struct cJSON *header;
    const struct cJSON *metadata; /* "__metadata__", NULL if absent */
    lenet_st_tensor *tensors;
    size_t n_tensors;
    const unsigned char *data;
    size_t data_size;
} lenet_st_file;

/* Reads and validates a whole file: header length within the file and the limit, JSON an object whose every
 * entry is a tensor of a known dtype with a shape and offsets agreeing with it, metadata a map of strings,
 * offsets covering the data section exactly with no gap or overlap, and the CRC-32 in "data_crc32" when
 * present.  LENET_EIO (cannot read), LENET_EFORMAT (anything else wrong), LENET_ENOMEM; messages name the
 * file.  Close with lenet__st_close (also after a failure). */
lenet_status lenet__st_read(const char *path, lenet_st_file *f);
void lenet__st_close(lenet_st_file *f);

const lenet_st_tensor *lenet__st_find(const lenet_st_file *f, const char *name);
/* The metadata value of `key`, or NULL. */
const char *lenet__st_meta(const lenet_st_file *f, const char *key);

/* True for F64, F32, F16 and BF16: the dtypes lenet__st_to_float converts. */
bool lenet__st_is_float(lenet_st_dtype dtype);
/* Converts a float tensor (F64, F32, F16, BF16) to numel floats; F64 rounds to nearest. */
void lenet__st_to_float(const lenet_st_tensor *t, float *out);
/* True for the signed and unsigned integer dtypes lenet__st_to_u64 reads (I32, I64, U32, U64). */
bool lenet__st_is_index(lenet_st_dtype dtype);
/* Converts an index tensor to numel values; false if one is negative. */
bool lenet__st_to_u64(const lenet_st_tensor *t, uint64_t *out);

/* Parses `length` bytes of JSON text strictly (thread-safe: cJSON's error position is global): one value and
 * nothing but whitespace after it, no key twice in one object at any depth, and no key or string holding a NUL
 * (escaped \u0000 or raw) or another unescaped control character, which cJSON accepts but would cut a string at
 * or the reference safetensors parser refuses.  `path` and `what` ("the header", "metadata \"architecture\"")
 * name the text in messages.  On success *out is the tree, freed with cJSON_Delete; otherwise *out is NULL and
 * the status LENET_EFORMAT (LENET_ENOMEM when a key table cannot be allocated). */
lenet_status lenet__json_parse(const char *text, size_t length, const char *path, const char *what,
                               struct cJSON **out);

/* ---- writing ---- */

typedef struct lenet_st_writer {
    struct cJSON *header;   /* tensors in the order added */
    struct cJSON *metadata;
    unsigned char *data;
    size_t data_size, data_cap;
    bool failed;            /* an earlier call failed: commit reports it */
    lenet_status status;
} lenet_st_writer;

lenet_status lenet__st_writer_init(lenet_st_writer *w);
void lenet__st_writer_free(lenet_st_writer *w);
/* Adds a metadata entry (copied). */
lenet_status lenet__st_add_meta(lenet_st_writer *w, const char *key, const char *value);
/* Adds a float32 tensor, stored little-endian. */
lenet_status lenet__st_add_f32(lenet_st_writer *w, const char *name, int ndim, const int *shape, const float *values);
/* Adds a 1-D index tensor, as I32 when every value fits, else I64. */
lenet_status lenet__st_add_index(lenet_st_writer *w, const char *name, const size_t *values, size_t count);
/* Adds "data_crc32" and writes the file atomically (lenet__write_atomic).  `who` prefixes messages. */
lenet_status lenet__st_commit(lenet_st_writer *w, const char *path, const char *who);

/* Writes the concatenation of `count` buffers to `path` crash-safely: a new file in the same directory,
 * flushed to disk, renamed over `path`, then the directory flushed.  On failure the temporary file is removed,
 * an existing `path` is left as it was, and LENET_EIO names the step and the system error (ENOSPC...). */
lenet_status lenet__write_atomic(const char *path, const void *const *buffers, const size_t *sizes, int count,
                                 const char *who);

/* The system's message for errno value `err`, thread-safely, in `buf`. */
const char *lenet__errno_str(int err, char *buf, size_t size);

#endif /* LENET_IO_INTERNAL_H */
