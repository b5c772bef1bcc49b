/* The in-process reduction: sums per-chunk partial results in chunk order, so the result is the same for any
 * thread count.  The engine calls it only through lenet_reducer (model/internal.h), the seam a multi-process
 * backend (lib/mpi) replaces; that backend sums its share of the columns with lenet__sum_rows too, so both add in
 * the same order.  Also the model's hold on such a backend: installing, releasing, agreeing. */
#include "model/internal.h"

/* Values summed per task: large enough to amortize the hand-out, small enough to balance. */
#define REDUCE_BLOCK 4096

typedef struct float_job {
    const float *partials;
    int chunks;
    size_t stride, begin, end;
    float *out;
} float_job;

/* Columns summed together: a tile of accumulators the compiler keeps in vector registers, so the rows stream through
 * contiguously.  Each column still adds its rows one by one in row order. */
#define REDUCE_TILE 64

static void sum_block(void *ctx, int b, int worker)
{
    (void)worker;
    const float_job *job = ctx;
    const float *rows = job->partials;
    const size_t stride = job->stride;
    const int chunks = job->chunks;
    float *out = job->out;
    const size_t begin = job->begin + (size_t)b * REDUCE_BLOCK;
    const size_t end = begin + REDUCE_BLOCK < job->end ? begin + REDUCE_BLOCK : job->end;
    size_t j = begin;
    for (; j + REDUCE_TILE <= end; j += REDUCE_TILE) {
        float acc[REDUCE_TILE];
        for (int k = 0; k < REDUCE_TILE; k++)
            acc[k] = rows[j + k];
        for (int c = 1; c < chunks; c++) {
            const float *row = rows + (size_t)c * stride + j;
            for (int k = 0; k < REDUCE_TILE; k++)
                acc[k] += row[k];
        }
        for (int k = 0; k < REDUCE_TILE; k++)
            out[j + k] += acc[k];
    }
    for (; j < end; j++) {
        float acc = rows[j];
        for (int c = 1; c < chunks; c++)
            acc += rows[(size_t)c * stride + j];
        out[j] += acc;
    }
}

void lenet__sum_rows(const float *partials, int chunks, size_t stride, size_t begin, size_t end, float *out,
                     int threads)
{
    if (end <= begin || chunks < 1)
        return;
    float_job job = {partials, chunks, stride, begin, end, out};
    const int blocks = (int)((end - begin + REDUCE_BLOCK - 1) / REDUCE_BLOCK);
    lenet__parallel_for(blocks, threads, sum_block, &job);
}

/* A span of the running sums of lenet__chain_rows. */
typedef struct chain_job {
    const float *init, *rows;
    int chunks;
    size_t stride, begin, end;
    float *acc;
} chain_job;

static void chain_block(void *ctx, int b, int worker)
{
    (void)worker;
    const chain_job *job = ctx;
    const size_t begin = job->begin + (size_t)b * REDUCE_BLOCK;
    const size_t end = begin + REDUCE_BLOCK < job->end ? begin + REDUCE_BLOCK : job->end;
    const float *rows = job->rows, *init = job->init ? job->init : job->rows;
    const int first_row = job->init ? 0 : 1;
    size_t j = begin;
    for (; j + REDUCE_TILE <= end; j += REDUCE_TILE) {
        float acc[REDUCE_TILE];
        for (int k = 0; k < REDUCE_TILE; k++)
            acc[k] = init[j + k];
        for (int c = first_row; c < job->chunks; c++) {
            const float *row = rows + (size_t)c * job->stride + j;
            for (int k = 0; k < REDUCE_TILE; k++)
                acc[k] += row[k];
        }
        for (int k = 0; k < REDUCE_TILE; k++)
            job->acc[j + k] = acc[k];
    }
    for (; j < end; j++) {
        float acc = init[j];
        for (int c = first_row; c < job->chunks; c++)
            acc += rows[(size_t)c * job->stride + j];
        job->acc[j] = acc;
    }
}

void lenet__chain_rows(const float *init, const float *rows, int chunks, size_t stride, size_t begin, size_t end,
                       float *acc, int threads)
{
    if (end <= begin)
        return;
    chain_job job = {init, rows, chunks, stride, begin, end, acc};
    const int blocks = (int)((end - begin + REDUCE_BLOCK - 1) / REDUCE_BLOCK);
    lenet__parallel_for(blocks, threads, chain_block, &job);
}

static void sum_floats(void *ctx, float *partials, int chunks, size_t count, float *out, int threads)
{
    (void)ctx;
    lenet__sum_rows(partials, chunks, count, 0, count, out, threads);
}

/* Statistics are a few values per channel: summed on the calling thread. */
void lenet__sum_double_rows(const double *partials, int chunks, size_t count, double *out)
{
    for (size_t j = 0; j < count; j++) {
        double acc = partials[j];
        for (int c = 1; c < chunks; c++)
            acc += partials[(size_t)c * count + j];
        out[j] = acc;
    }
}

static void sum_doubles(void *ctx, double *partials, int chunks, size_t count, double *out)
{
    (void)ctx;
    lenet__sum_double_rows(partials, chunks, count, out);
}

const lenet_reducer lenet__local_reducer = {
    .rank = 0, .size = 1, .sum_floats = sum_floats, .sum_doubles = sum_doubles,
};

void lenet__model_set_comm(lenet_model *m, lenet_reducer *comm)
{
    lenet_reducer *old = m->comm;
    m->comm = comm;
    m->reducer = &lenet__local_reducer;
    if (old && old->destroy)
        old->destroy(old->ctx);
}

int lenet__model_rank(const lenet_model *m)
{
    return m && m->comm ? m->comm->rank : 0;
}

lenet_status lenet__model_agree(const lenet_model *m, lenet_status st)
{
    if (!m || !m->comm || !m->comm->agree)
        return st;
    return m->comm->agree(m->comm->ctx, st, 0);
}
