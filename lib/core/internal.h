/* Internal helpers shared across the library: errors, allocation, random numbers, tensor internals.
 * Never installed. */
#ifndef LENET_CORE_INTERNAL_H
#define LENET_CORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lenet/status.h"
#include "lenet/tensor.h"

#if defined(__GNUC__) || defined(__clang__)
#define LENET_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define LENET_PRINTF(f, a)
#endif

/* ---- errors (status.c) ---- */

/* Records the message for this thread and returns status, so call sites read `return lenet__fail(...)`. */
lenet_status lenet__fail(lenet_status status, const char *fmt, ...) LENET_PRINTF(2, 3);
/* As lenet__fail for constructors: records and returns NULL. */
void *lenet__fail_null(lenet_status status, const char *fmt, ...) LENET_PRINTF(2, 3);
/* Prepends context ("layer 3 (Conv2d): ") to the current message, keeping the original cause. */
void lenet__error_prefix(const char *fmt, ...) LENET_PRINTF(1, 2);
/* The status of this thread's last failure (LENET_OK if none): lets lenet_model_add report a constructor's. */
lenet_status lenet__last_status(void);
/* Records LENET_ENOMEM naming what was being allocated; never allocates itself. */
lenet_status lenet__oom(const char *what);

/* ---- allocation (alloc.c): every allocation of the library goes through these ---- */

void *lenet__malloc(size_t size);
void *lenet__calloc(size_t count, size_t size);
void *lenet__realloc(void *p, size_t size);
void lenet__free(void *p);
/* Aligned to 64 bytes for vector kernels; free with lenet__free_aligned. */
void *lenet__malloc_aligned(size_t size);
void lenet__free_aligned(void *p);
/* ---- checked arithmetic: every size, offset and count derived from input goes through these ----
 * Each returns true on overflow (leaving *out unspecified) and otherwise stores the exact result. */

static inline bool lenet__mul_overflows(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

static inline bool lenet__add_overflows(size_t a, size_t b, size_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

static inline bool lenet__int_mul_overflows(int a, int b, int *out)
{
    return __builtin_mul_overflow(a, b, out);
}

static inline bool lenet__int_add_overflows(int a, int b, int *out)
{
    return __builtin_add_overflow(a, b, out);
}

/* ---- files (file.c) ---- */

/* Opens `path` for reading, refusing anything but a regular file (a FIFO or device would block or never end)
 * without blocking on it.  On success *fd is a blocking descriptor the caller closes. */
lenet_status lenet__open_regular(const char *path, int *fd);

/* Test hook (issue: allocation-failure injection): the n-th allocation from now on fails (n >= 1),
 * 0 disables.  Returns the number of allocations counted since the last call. */
size_t lenet__alloc_fail_at(size_t n);

/* ---- threads (threads.c) ---- */

/* Threads to use for a parallel loop now (>= 1); also keeps the BLAS single-threaded. */
int lenet__threads(void);

/* One iteration of a parallel loop: `worker` in [0, threads) names the calling thread's scratch slice. */
typedef void (*lenet_task_fn)(void *ctx, int index, int worker);
/* Runs fn(ctx, i, worker) for i in [0, count) on up to `threads` threads (pool.c) and returns when all are done.
 * Which thread runs which index varies, so fn must make each index's result independent of the worker. */
void lenet__parallel_for(int count, int threads, lenet_task_fn fn, void *ctx);

/* ---- random numbers (rng.c): the same sequence on every machine ---- */

typedef struct lenet_rng {
    uint64_t s[4]; /* xoshiro256** state */
} lenet_rng;

void lenet__rng_seed(lenet_rng *r, uint64_t seed);
/* A seed derived from two values (a stream's seed and an index): streams for different indices are unrelated, so
 * per-sample random numbers need not depend on how a batch is cut. */
uint64_t lenet__rng_mix(uint64_t a, uint64_t b);
uint64_t lenet__rng_u64(lenet_rng *r);
/* Uniform in [0, 1) with 24 random bits, exactly representable as float. */
float lenet__rng_uniform(lenet_rng *r);
/* Uniform integer in [0, bound), unbiased (Lemire's method). bound >= 1. */
uint64_t lenet__rng_below(lenet_rng *r, uint64_t bound);

/* ---- tensors (tensor.c) ---- */

struct lenet_tensor {
    int ndim;
    int shape[LENET_TENSOR_MAX_DIMS];
    size_t numel;
    float *data;
    bool owns_data; /* false for views into a model's arena */
};

/* Checks a shape and computes its element count; sets the error and returns it on failure. */
lenet_status lenet__shape_numel(int ndim, const int *shape, size_t *numel);
/* Initialises a tensor struct that views caller-owned memory (no allocation). */
void lenet__tensor_view(lenet_tensor *t, int ndim, const int *shape, float *data);
/* Reshapes in place to a shape with the same element count (used for reusable batch buffers). */
lenet_status lenet__tensor_reshape(lenet_tensor *t, int ndim, const int *shape);
/* Formats "[1, 6, 28, 28]" into buf. */
void lenet__shape_str(int ndim, const int *shape, char *buf, size_t size);

#endif /* LENET_CORE_INTERNAL_H */
