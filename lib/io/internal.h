/* The safetensors container: reading a whole file into memory and validating it, and writing one atomically;
 * and what the checkpoint files (checkpoint.c, arch.c, tensors.c, train_state.c) share.
 * Format: u64 little-endian header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets"}, ...,
 * "__metadata__": {string: string}}, then the data section that the offsets index.  Never installed. */
#ifndef LENET_IO_INTERNAL_H
#define LENET_IO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"
#include "data/internal.h"
#include "optim/internal.h"

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
/* Element i (< numel) of a float tensor, exactly. */
double lenet__st_float_at(const lenet_st_tensor *t, size_t i);
/* True for the signed and unsigned integer dtypes lenet__st_to_u64 reads (I32, I64, U32, U64). */
bool lenet__st_is_index(lenet_st_dtype dtype);
/* Converts an index tensor to numel values; false if one is negative. */
bool lenet__st_to_u64(const lenet_st_tensor *t, uint64_t *out);
/* Element i (< numel) of an index tensor; false if it is negative. */
bool lenet__st_index_at(const lenet_st_tensor *t, size_t i, uint64_t *value);

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
/* Adds an int64 tensor (ndim 0 for a scalar, as PyTorch's num_batches_tracked), stored little-endian. */
lenet_status lenet__st_add_i64(lenet_st_writer *w, const char *name, int ndim, const int *shape, const int64_t *values);
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

/* ---- checkpoints: liblenet's metadata and tensors on top of the container ----
 * checkpoint.c   the save and load entry points, and the helpers below that the others share
 * arch.c         the architecture: JSON of layer kinds and arguments, parsed, compared, sized
 * tensors.c      the model's tensors: staged from a file, written to one
 * train_state.c  the optimizer's and the iterator's state
 * Loading stages everything in scratch memory, and the entry points copy it into the objects only once all of
 * it is valid. */

/* Version of what liblenet puts in a safetensors file (metadata keys and their JSON); readers refuse newer. */
#define LENET_CKPT_FORMAT_VERSION 1
#define LENET_CKPT_TENSOR_NAME_SIZE 160

/* An aligned buffer of `count` floats (at least one), its byte size computed with checked arithmetic; NULL
 * (no message set) when it cannot be had. */
float *lenet__ckpt_floats(size_t count);
/* Re-raises the current error with another status and a printf-style prefix, keeping its message as the cause. */
lenet_status lenet__ckpt_refail(lenet_status status, const char *fmt, ...) LENET_PRINTF(2, 3);
/* True if `item` is a JSON number that is an integer in [lo, hi]; stores it in *out. */
bool lenet__ckpt_json_int(const struct cJSON *item, double lo, double hi, double *out);
/* Parses the metadata value `key` as JSON (lenet__json_parse's rules); LENET_EFORMAT naming the key when it is
 * absent or not a JSON object.  Free *out with cJSON_Delete. */
lenet_status lenet__ckpt_meta_json(const lenet_st_file *f, const char *key, struct cJSON **out);
/* Adds `v` to an object under `key` (or to an array when key is NULL) as a number that reads back exactly. */
bool lenet__ckpt_add_exact(struct cJSON *to, const char *key, double v);
/* Adds metadata `key` holding `json` (printed by cJSON, freed here; NULL means it could not be printed). */
lenet_status lenet__ckpt_add_json_meta(lenet_st_writer *w, const char *key, char *json);
/* What every model file starts with: the format metadata ("format": "pt", the liblenet format and version) and
 * m's architecture.  A writer that fails stays failed (see lenet__st_writer_init). */
lenet_status lenet__ckpt_add_header(lenet_st_writer *w, const lenet_model *m);
/* True for the names of a model's tensors, which start with a digit ("0.weight", "1.running_mean"), unlike
 * training state ("optimizer.", "iterator."). */
bool lenet__ckpt_is_model_tensor(const char *name);

/* ---- the architecture (arch.c) ---- */

typedef struct lenet_ckpt_arch_layer {
    const char *kind; /* borrowed from the parsed JSON */
    int n_args;
    double args[LENET_MAX_LAYER_ARGS];
} lenet_ckpt_arch_layer;

typedef struct lenet_ckpt_arch {
    struct cJSON *root;
    int input[3];
    size_t n_layers;
    lenet_ckpt_arch_layer *layers;
} lenet_ckpt_arch;

/* Parses the "architecture" metadata: the input shape and each layer's kind and arguments (not yet checked
 * against the registry).  Free with lenet__ckpt_arch_free, also after a failure. */
lenet_status lenet__ckpt_arch_parse(const lenet_st_file *f, lenet_ckpt_arch *a);
void lenet__ckpt_arch_free(lenet_ckpt_arch *a);
/* The architecture of a built model as JSON text (free with cJSON_free), NULL when out of memory. */
char *lenet__ckpt_arch_json(const lenet_model *m);
/* Creates the recorded layers and adds them to an empty model; EFORMAT naming the layer for an unknown kind or
 * arguments its constructor refuses. */
lenet_status lenet__ckpt_arch_add_layers(const lenet_ckpt_arch *a, lenet_model *m, const char *path);
/* LENET_ESTATE unless the built model has the recorded input, layer kinds and arguments. */
lenet_status lenet__ckpt_arch_compare(const lenet_model *m, const lenet_ckpt_arch *a, const char *path);
/* Refuses, before anything is allocated, an architecture that does not build within the model's size limits
 * for its input or whose tensors need another number of elements than the file's model tensors hold. */
lenet_status lenet__ckpt_arch_check_size(lenet_model *m, const lenet_ckpt_arch *a, const lenet_st_file *f);

/* ---- the model's tensors (tensors.c) ---- */

/* Converts the float tensor called `name` into `out` if it has `want`'s shape.  ESHAPE if missing or shaped
 * otherwise, EFORMAT if not a float dtype. */
lenet_status lenet__ckpt_stage_tensor(const lenet_st_file *f, const char *name, const lenet_tensor *want, float *out);

/* Staged copies of a model's parameter and buffer arenas. */
typedef struct lenet_ckpt_tensors {
    float *params, *buffers;
} lenet_ckpt_tensors;

/* Copies the model's arenas into `staged` and fills them from the file by name: every parameter and every buffer
 * must be there with the model's shape (ESHAPE), of a dtype it can be read from (EFORMAT), and the file may hold
 * no other model tensor (ESHAPE).  Free `staged` with lenet__ckpt_tensors_free, also after a failure. */
lenet_status lenet__ckpt_stage_model(const lenet_model *m, const lenet_st_file *f, lenet_ckpt_tensors *staged);
/* Copies what lenet__ckpt_stage_model staged into the model; cannot fail. */
void lenet__ckpt_commit_model(lenet_model *m, const lenet_ckpt_tensors *staged);
void lenet__ckpt_tensors_free(lenet_ckpt_tensors *staged);
/* Adds the model's parameters (F32) and buffers (F32, int64 ones as I64) to a file under their state_dict names;
 * LENET_EINVAL if an int64 buffer holds anything but an integer in [0, 2^53]. */
lenet_status lenet__ckpt_write_model(lenet_st_writer *w, const lenet_model *m);

/* ---- training state (train_state.c) ---- */

typedef struct lenet_ckpt_optimizer {
    float lr;
    unsigned long long steps, epochs;
    lenet_optimizer_state state;
    float *buffers[LENET_OPTIM_MAX_STATE]; /* staged copies of state.buffers, arena-sized */
} lenet_ckpt_optimizer;

void lenet__ckpt_optimizer_free(lenet_ckpt_optimizer *so);
/* Stages the optimizer's learning rate, step count and buffers from the file; LENET_ESTATE when the optimizer
 * differs from the saved one. */
lenet_status lenet__ckpt_stage_optimizer(lenet_optimizer *o, const lenet_st_file *f, lenet_ckpt_optimizer *so);
/* Stages the iterator's state; *order (free with lenet__free) holds the permutation is->order points to. */
lenet_status lenet__ckpt_stage_iterator(const lenet_iter *it, const lenet_st_file *f, lenet_iter_state *is,
                                        size_t **order);
/* Adds the optimizer's metadata and buffers to a file. */
lenet_status lenet__ckpt_write_optimizer(lenet_st_writer *w, const lenet_optimizer *o);
/* Adds the iterator's metadata and permutation to a file. */
lenet_status lenet__ckpt_write_iterator(lenet_st_writer *w, const lenet_iter *it);
/* The model's random stream (the seed of its last init and its count of training forwards, which Dropout's masks
 * come from), so a resumed run draws the masks it would have drawn; *present is false for files without it. */
lenet_status lenet__ckpt_write_stream(lenet_st_writer *w, const lenet_model *m);
lenet_status lenet__ckpt_stage_stream(const lenet_st_file *f, bool *present, uint64_t *seed, uint64_t *forwards);

#endif /* LENET_IO_INTERNAL_H */
