/* The in-process reduction: sums per-chunk partial results in chunk order, so the result is the same for any
 * thread count.  The engine calls it only through lenet_reducer (model/internal.h), the seam a multi-process
 * backend replaces. */
#include "model/internal.h"

/* Values summed per task: large enough to amortize the hand-out, small enough to balance. */
#define REDUCE_BLOCK 4096

typedef struct float_job {
    const float *partials;
    int chunks;
    size_t count;
    float *out;
} float_job;

static void sum_block(void *ctx, int b, int worker)
{
    (void)worker;
    const float_job *job = ctx;
    const size_t begin = (size_t)b * REDUCE_BLOCK;
    const size_t end = begin + REDUCE_BLOCK < job->count ? begin + REDUCE_BLOCK : job->count;
    for (size_t j = begin; j < end; j++) {
        float acc = job->partials[j];
        for (int c = 1; c < job->chunks; c++)
            acc += job->partials[(size_t)c * job->count + j];
        job->out[j] += acc;
    }
}

static void sum_floats(void *ctx, const float *partials, int chunks, size_t count, float *out, int threads)
{
    (void)ctx;
    float_job job = {partials, chunks, count, out};
    const int blocks = (int)((count + REDUCE_BLOCK - 1) / REDUCE_BLOCK);
    lenet__parallel_for(blocks, threads, sum_block, &job);
}

/* Statistics are a few values per channel: summed on the calling thread. */
static void sum_doubles(void *ctx, const double *partials, int chunks, size_t count, double *out)
{
    (void)ctx;
    for (size_t j = 0; j < count; j++) {
        double acc = partials[j];
        for (int c = 1; c < chunks; c++)
            acc += partials[(size_t)c * count + j];
        out[j] = acc;
    }
}

const lenet_reducer lenet__local_reducer = {sum_floats, sum_doubles, NULL};
