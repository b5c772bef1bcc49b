/* The sequential model's state, shared with the optimizers, the training loop and checkpoints.
 * Never installed. */
#ifndef LENET_MODEL_INTERNAL_H
#define LENET_MODEL_INTERNAL_H

#include "layers/layer.h"
#include "lenet/model.h"

#define LENET_PARAM_NAME_SIZE 48
#define LENET_STICKY_ERROR_SIZE 256

/* The reduction seam: every sum over the chunks of a batch (parameter gradients, whole-batch layers' statistics)
 * goes through it, in chunk order, so that a multi-process backend (lib/mpi) can take them over and include other
 * processes' chunks without the engine knowing.
 *
 * Processes: `size` processes share each batch, this one is `rank` (0 of 1 in-process).  Every process holds the
 * whole model and the whole batch; process r runs the chunks lenet__chunk_share gives it, a contiguous block in rank
 * order, so that the rows of all processes side by side are the rows of one process running every chunk.
 *
 * sum_floats, sum_doubles: `partials` holds `chunks` rows of `count` values, row c the partial sums of chunk c, of
 * which this process has filled the rows of its own chunks (the others may be overwritten).  On every process the
 * sums over all rows, in row order (acc = row 0, acc += row 1, ...), are added into `out` (floats: out[j] += acc) or
 * stored in it (doubles), exactly as one process running every chunk would.
 * The rest is NULL in-process (a single process has nothing to exchange or agree on):
 * gather_samples: `data` holds `batch` samples of `per_sample` floats, this process having filled the samples of its
 *     own chunks; afterwards every process holds all of them.
 * agree: every process passes its status; all return the same one: LENET_OK when none is an error, otherwise the
 *     error of the failing process with the smallest `key` (then the lowest rank), with that process's message.
 * broadcast: `bytes` bytes of `buf` from process `root` to every process.
 * agree_samples: agree as agree does, and in the same exchange gather `samples`: `batch` samples of `per_sample`
 *     (at most 2) doubles, this process having filled the samples of its own chunks; on LENET_OK every process holds
 *     all of them.
 * any: every process passes whether it asks for something (a stop); all get whether any process did.
 * reserve: makes sure sum_floats can sum rows of `count` floats, and agree_samples gather `batch` samples, without
 *     allocating; called while a batch is prepared, before the processes agree on how that went (a failed exchange
 *     could not be agreed on).
 * destroy: frees the backend (collective, like every function here); called when the model lets it go.
 * A backend whose communication failed records it, skips every later exchange and reports the failure from the
 * next agree, so a training loop that agrees once per step returns it. */
typedef struct lenet_reducer {
    int rank, size;
    void (*sum_floats)(void *ctx, float *partials, int chunks, size_t count, float *out, int threads);
    void (*sum_doubles)(void *ctx, double *partials, int chunks, size_t count, double *out);
    void (*gather_samples)(void *ctx, float *data, int batch, size_t per_sample);
    lenet_status (*agree)(void *ctx, lenet_status st, unsigned key);
    void (*broadcast)(void *ctx, void *buf, size_t bytes, int root);
    lenet_status (*agree_samples)(void *ctx, lenet_status st, unsigned key, double *samples, int batch,
                                  int per_sample);
    lenet_status (*reserve)(void *ctx, size_t count, int batch);
    lenet_status (*any)(void *ctx, bool mine, bool *any);
    void (*destroy)(void *ctx);
    void *ctx;
} lenet_reducer;

/* The in-process reducer (reduce.c). */
extern const lenet_reducer lenet__local_reducer;

/* The chunks process `rank` of `size` runs of a batch of `chunks`: [*first, *first + *count), a contiguous block,
 * the first chunks % size processes taking one more.  Blocks follow each other in rank order. */
static inline void lenet__chunk_share(int chunks, int rank, int size, int *first, int *count)
{
    const int base = chunks / size, extra = chunks % size;
    *count = base + (rank < extra);
    *first = rank * base + (rank < extra ? rank : extra);
}

/* Sums rows in order over the columns [begin, end): out[j] += partials[j] + partials[stride + j] + ... for `chunks`
 * rows `stride` floats apart, on up to `threads` threads.  The in-process reducer's sum, shared with lib/mpi. */
void lenet__sum_rows(const float *partials, int chunks, size_t stride, size_t begin, size_t end, float *out,
                     int threads);
/* The running sums of a chain of processes, each adding its rows to what the previous one passed on: over the
 * columns [begin, end), acc[j] = init[j] + row 0 + row 1 + ... (init NULL: acc[j] = row 0 + row 1 + ...), in row
 * order, `chunks` rows `stride` floats apart.  init may be acc.  Then out[j] += acc[j] at the end of the chain gives
 * bit for bit what lenet__sum_rows gives over all the rows. */
void lenet__chain_rows(const float *init, const float *rows, int chunks, size_t stride, size_t begin, size_t end,
                       float *acc, int threads);
/* The same for doubles, all `count` columns, on the calling thread, storing the sums: out[j] = row 0 + row 1 + .... */
void lenet__sum_double_rows(const double *partials, int chunks, size_t count, double *out);

/* The communicator of the training loop (lib/mpi's lenet_model_set_comm): installs `comm` (NULL: none), destroying
 * the one the model had.  The training loop, evaluation and checkpoints use it; other calls stay in-process. */
void lenet__model_set_comm(lenet_model *m, lenet_reducer *comm);
/* This process's rank in the model's communicator, 0 without one. */
int lenet__model_rank(const lenet_model *m);
/* Collective over the model's communicator (see lenet_reducer.agree); returns st unchanged without one. */
lenet_status lenet__model_agree(const lenet_model *m, lenet_status st);

struct lenet_model {
    lenet_layer **layers;
    size_t n_layers, layers_cap;

    bool built;
    bool training;          /* PyTorch's module.training: true for a new model */
    lenet_shape in_shape;   /* per sample */
    size_t max_size;        /* largest per-sample activation, input included */
    /* The first failed lenet_model_add: every later build, forward, summary and predict reports it. */
    lenet_status sticky;
    char sticky_message[LENET_STICKY_ERROR_SIZE];
    uint64_t seed;          /* of the last lenet_model_init: random layers (dropout) draw from it */
    uint64_t step;          /* training forwards so far: a new random stream for each */
    uint64_t last_seed;     /* the stream of the last forward, for its backward */
    size_t average_batch;   /* in a pass of lenet_update_statistics, the batch under way (1, 2, ...); 0 otherwise */

    /* One arena of parameters and one of gradients: tensor i views [offset[i], offset[i] + numel). */
    size_t n_params;
    size_t arena_numel;
    float *params, *grads;
    lenet_tensor *param_tensors, *grad_tensors;
    size_t *param_offset;
    size_t *param_layer;    /* index of the layer owning tensor i */
    bool *param_trainable;
    char (*param_names)[LENET_PARAM_NAME_SIZE];
    size_t *layer_first_param;
    float **grad_ptrs;      /* grad_ptrs[i] = grads + param_offset[i], in layer spec order */

    /* One arena of buffers (non-trainable state, e.g. running statistics), laid out like the parameters. */
    size_t n_buffers;
    size_t buffer_arena_numel;
    float *buffers;
    lenet_tensor *buffer_tensors;
    size_t *buffer_layer;
    bool *buffer_int64;     /* held as float counts, stored as I64 in files */
    char (*buffer_names)[LENET_PARAM_NAME_SIZE];

    lenet_tensor *act_tensors; /* n_layers views of acts[i + 1] for lenet_model_activation */

    /* Whole-batch layers: stats_offset[i] is where layer i's statistics start in fwd_stats/bwd_stats (stats_count[i]
     * doubles, 0 for the others); partials holds one row per chunk while they are reduced. */
    size_t *stats_offset, *stats_count, stats_total, stats_max;
    double *fwd_stats, *bwd_stats, *partials;
    float *bbuf[2];         /* batch-sized gradients at whole-batch layers' outputs (only when there are some) */
    const lenet_reducer *reducer; /* the engine's: in-process, or `comm` while the training loop runs */
    lenet_reducer *comm;          /* the training loop's communicator (lenet_model_set_comm), NULL for none */
    const volatile sig_atomic_t *stop_flag; /* the caller's (lenet_model_set_stop_flag), NULL for none */

    /* Training buffers, grown to the largest batch seen.  A batch is cut into chunks of LENET_CHUNK samples that
     * run in parallel; each chunk owns the slices [start, start + n) of acts and its own gradient buffer, and the
     * worker running it lends it its slices of dbuf and work, so no two threads ever write the same memory and the
     * result does not depend on the thread count. */
    int batch_cap;
    float **acts;           /* n_layers + 1: acts[0] the input copy, acts[i + 1] the output of layer i */
    float *dbuf[2];         /* ping-pong gradients of activations: threads_cap slices of LENET_CHUNK samples */
    float *work;            /* threads_cap slices of work_cap floats */
    size_t work_cap;
    int threads_cap;
    float *chunk_grads;     /* chunks of arena_numel floats */
    int last_batch;         /* batch of the last forward, 0 before any */
    lenet_tensor output;    /* view of acts[n_layers] */
};

/* Samples per chunk: fixed, so that the partition of a batch, and hence every sum, is the same for any number of
 * threads. */
#define LENET_CHUNK 16

/* The layers' shapes and tensor specs for a per-sample input, found without allocating, within the size limits of
 * model.h.  Build and checkpoint loading share it.  Sets every layer's in/out shapes and sizes. */
typedef struct lenet_model_plan {
    lenet_param_spec (*specs)[LENET_MAX_LAYER_TENSORS]; /* per layer: parameters, then buffers */
    int *n_params, *n_buffers;                          /* per layer */
    size_t params, buffers;             /* tensors of each kind */
    size_t param_arena, buffer_arena;   /* arena floats, each tensor padded to 64 bytes */
    size_t param_elements, buffer_elements; /* unpadded, as files store them */
} lenet_model_plan;

lenet_status lenet__model_plan(lenet_model *m, lenet_shape in, lenet_model_plan *plan);
void lenet__model_plan_free(lenet_model_plan *plan);
/* Undoes what a plan recorded in the layers (for a plan that is not followed by a build). */
void lenet__model_forget_shapes(lenet_model *m);
/* The sticky error of a failed add, if any: reports it as `who` and returns it; LENET_OK otherwise. */
lenet_status lenet__model_check_sticky(const lenet_model *m, const char *who);

/* Frees the training buffers (activations, gradients, scratch); the next forward allocates them again. */
void lenet__model_release_buffers(lenet_model *m);
/* Makes sure the training buffers hold `batch` samples. */
lenet_status lenet__model_reserve(lenet_model *m, int batch);
/* Checks that x is (N, C, H, W) of the built input shape and returns N; builds an unbuilt model from x. */
lenet_status lenet__model_check_input(lenet_model *m, const lenet_tensor *x, const char *who, int *batch);
/* Forward over raw input already copied into m->acts[0] for `batch` samples. */
void lenet__model_forward_raw(lenet_model *m, int batch);
/* Backward from the gradient of the output (batch * out_size floats). */
void lenet__model_backward_raw(lenet_model *m, const float *dy);
/* The same, also writing the gradient of the input (batch * input size floats) into dx unless it is NULL. */
void lenet__model_backward_input(lenet_model *m, const float *dy, float *dx);
size_t lenet__model_out_size(const lenet_model *m);
/* Whether a layer keeps running statistics that training forwards update (BatchNorm's). */
bool lenet__model_has_running_stats(const lenet_model *m);
/* Checks that x is (N, C, H, W) of the built input shape and returns N (the model must be built). */
lenet_status lenet__model_check_shape(const lenet_model *m, const lenet_tensor *x, const char *who, int *batch);

/* Chunks of a batch and the threads to run them on (at most `cap` when cap > 0). */
int lenet__chunk_count(int batch);
int lenet__chunk_size(int batch, int start);
int lenet__threads_for(int chunks, int cap);
/* The chunks [*first, *first + *count) and the samples [*begin, *end) of a batch that this process runs under the
 * engine's current reducer (all of them in-process). */
void lenet__model_own_chunks(const lenet_model *m, int batch, int *first, int *count);
void lenet__model_own_samples(const lenet_model *m, int batch, int *begin, int *end);
/* Checks that y is (batch, the model's output shape). */
lenet_status lenet__model_check_output(const lenet_model *m, const lenet_tensor *y, int batch, const char *who);

/* lenet_model_classify's rule on n rows of k outputs `y` of the built model m: the class and the softmax of each row,
 * by the largest output, or the smallest when the last layer gives penalties.  classes and probs may be NULL. */
void lenet__classify_rows(const lenet_model *m, const float *y, int n, int k, int32_t *classes, float *probs);
/* Floats of scratch the layers need for n samples, rounded up to 64 bytes. */
size_t lenet__model_max_workspace(const lenet_model *m, int n);
/* Scratch for running one chunk through the model: two ping-pong activation buffers of *act floats and a
 * workspace of *work; returns their sum. */
size_t lenet__model_chunk_scratch(const lenet_model *m, size_t *act, size_t *work);
/* Runs chunk c of a batch of x in evaluation mode into y, with lenet__model_chunk_scratch floats of 64-byte aligned
 * scratch.  Only reads the model. */
void lenet__model_run_chunk(const lenet_model *m, int batch, int c, const float *x, float *y, float *scratch);

#endif /* LENET_MODEL_INTERNAL_H */
