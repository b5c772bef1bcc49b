/* Data-parallel training over MPI: the backend of the engine's reduction seam (lenet_reducer, lib/model/internal.h)
 * that lenet_model_set_comm installs.  The rest of the library knows nothing of MPI.
 *
 * Exactness.  One process sums every value over the chunks in chunk order (acc = row 0, acc += row 1, ...; then
 * out += acc), so the processes must add the very same rows in the very same order:
 * - Gradients (sum_floats), one of two ways, every process choosing alike:
 *   - the chain, when a few processes share many chunks (up to 4 processes, at least 2 chunks each: one machine):
 *     process 0 sums its chunks' rows, process 1 adds its rows to those running sums, and so on; the last process
 *     adds the result into `out`, and the final sums travel on to every other process.  The arena goes in blocks, so
 *     the chain pipelines a large model.  Each process sends and receives about one arena of running sums and one of
 *     final sums per step, whatever the number of chunks, in messages of at least 256 KiB; but the chain is 2N - 1
 *     hops deep.
 *   - slices, otherwise: the arena is cut into one slice per process; each process receives, for its own slice, the
 *     rows of every other process's chunks, straight into the unused rows of its chunk buffer (point-to-point with
 *     strided datatypes), sums them in chunk order with the in-process code (lenet__sum_rows), and an in-place
 *     Allgatherv of the slices gives every process the whole sum.  Each process receives about (chunks / N) arenas
 *     of rows and one arena of slices, in 2 (N - 1) messages plus the Allgatherv: one hop deep.
 *   LENET_MPI_EXCHANGE=chain or slices (rank 0's value) forces one, for measurements.
 * - BatchNorm statistics (sum_doubles): a few doubles per channel and chunk, gathered in place and summed in chunk
 *   order by every process.
 * - The samples' loss terms and hits (agree_samples), with each process's status in the same Allgatherv, added in
 *   sample order by every process; or, for a criterion, the batch's outputs (gather_samples), gathered in place.
 * Failures: agree is an Allreduce(MINLOC) of (key, rank) over the failing processes (agree_samples finds the same in
 * its records), then a broadcast of the winner's status and message.  A failed MPI call is recorded; later exchanges
 * are skipped and agree reports it.
 * A stop (any) is an Allreduce(LOR) after each batch, made only when the processes installed stop flags. */
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "lenet/mpi.h"
#include "model/internal.h"

/* Room for one message, as status.c keeps it. */
#define MESSAGE_BYTES 512
/* The tags of the gradient exchange on our private duplicate: running sums, final sums. */
#define PARTIAL_TAG 0x1e7e
#define FINAL_TAG 0x1e7f

typedef struct mpi_backend {
    lenet_reducer reducer;  /* reducer.ctx points back here */
    MPI_Comm comm;          /* our duplicate of the caller's */
    int *counts, *displs;   /* size each: Allgatherv scratch */
    /* The gradient exchange: the chain's running sums (scratch_floats floats, reserve) and requests; the slices'
     * datatypes per peer (MPI_DATATYPE_NULL where nothing goes), made for batches of types_chunks chunks of rows of
     * types_count floats; the way forced by LENET_MPI_EXCHANGE (0 for none, 1 chain, 2 slices). */
    float *scratch;
    size_t scratch_floats;
    double *records;        /* agree_samples: every process's status, key and samples (records_doubles) */
    size_t records_doubles;
    MPI_Request *requests;
    MPI_Datatype *send_types, *recv_types;
    int types_chunks;
    size_t types_count;
    int forced;
    /* The first failed MPI call (LENET_OK while none): later exchanges are skipped, agree reports it. */
    lenet_status broken;
    char broken_message[MESSAGE_BYTES];
} mpi_backend;

/* Records a failed MPI call; true if `rc` is a failure. */
static bool failed(mpi_backend *b, int rc, const char *call)
{
    if (rc == MPI_SUCCESS)
        return false;
    if (b->broken == LENET_OK) {
        char text[MPI_MAX_ERROR_STRING];
        int length = 0;
        if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS)
            snprintf(text, sizeof text, "error %d", rc);
        b->broken = LENET_EIO;
        snprintf(b->broken_message, sizeof b->broken_message,
                 "MPI: %s failed on rank %d of %d: %s; the communicator cannot be used any more", call, b->reducer.rank,
                 b->reducer.size, text);
    }
    return true;
}

/* A count for MPI, or a recorded failure when it does not fit an int. */
static bool fits_int(mpi_backend *b, size_t n, const char *what)
{
    if (n <= INT_MAX)
        return true;
    if (b->broken == LENET_OK) {
        b->broken = LENET_EUNSUPPORTED;
        snprintf(b->broken_message, sizeof b->broken_message, "MPI: %s of %zu elements is beyond an int count", what, n);
    }
    return false;
}

/* Choosing the way, and the chain's blocks, by a cost in bytes that holds on any network: a message costs its bytes
 * plus LATENCY_BYTES, its latency in bytes of bandwidth (alpha * beta: 25 us at 10 Gb/s, 2 us at 100 Gb/s and 1 us
 * over shared memory all come to a few tens of KB); a message among many posted at once costs an eighth of that.
 * Every process computes the same from the batch's chunks, the arena and the number of processes. */
#define LATENCY_BYTES 32768.0
#define MAX_BLOCKS 256

/* The chain through `holders` processes with chunks and on to all `size`, in `blocks` blocks of an arena of `bytes`:
 * the first block goes through holders + size - 2 hops before the last one arrives. */
static double chain_cost(double bytes, int holders, int size, int blocks)
{
    const double hops = holders + size - 2;
    return (1.0 + hops / blocks) * bytes + (hops + blocks) * LATENCY_BYTES;
}

/* The chain's blocks: about sqrt(hops * bytes / latency), the best of chain_cost, at least 16 floats each. */
static int chain_blocks(size_t count, int holders, int size)
{
    const double hops = holders + size - 2;
    int blocks = (int)(sqrt(hops * (double)count * sizeof(float) / LATENCY_BYTES) + 0.5);
    if (blocks > MAX_BLOCKS)
        blocks = MAX_BLOCKS;
    if ((size_t)blocks > count / 16)
        blocks = (int)(count / 16);
    return blocks < 1 ? 1 : blocks;
}

/* Slices: every process receives the other processes' rows of its slice (the most rows any process has, to stay
 * the same on every process), then the Allgatherv of the slices. */
static double slices_cost(double bytes, int chunks, int size)
{
    const int most = (chunks + size - 1) / size;
    const double share = bytes / size, rows = (double)(chunks - most) * share;
    int depth = 0;
    while ((1 << depth) < size)
        depth++;
    return rows + (size - 1) * share + (2.0 * (size - 1) / 8 + depth) * LATENCY_BYTES;
}

/* Doubles agree_samples gathers for a batch of `batch`: 2 per process (status, key) and up to 2 per sample. */
static size_t records_for(int size, int batch)
{
    return 2 * (size_t)size + 2 * (size_t)batch;
}

static lenet_status reserve(void *ctx, size_t count, int batch)
{
    mpi_backend *b = ctx;
    if (count > b->scratch_floats) {
        float *scratch = lenet__malloc_aligned(count * sizeof(float));
        if (!scratch)
            return lenet__oom("the gradient exchange's buffer");
        lenet__free_aligned(b->scratch);
        b->scratch = scratch;
        b->scratch_floats = count;
    }
    const size_t records = records_for(b->reducer.size, batch);
    if (records > b->records_doubles) {
        double *buffer = lenet__malloc(records * sizeof *buffer);
        if (!buffer)
            return lenet__oom("the agreement's buffer");
        lenet__free(b->records);
        b->records = buffer;
        b->records_doubles = records;
    }
    return LENET_OK;
}

/* Where the final sums travel: from the last process with chunks (`last`) to every other process in rank order.
 * Sets *from and *to (-1 for none) for process r. */
static void final_route(int r, int size, int last, int *from, int *to)
{
    /* The order: last, then 0, 1, ..., last - 1, last + 1, ..., size - 1. */
    int position = r == last ? 0 : r < last ? r + 1 : r;
    int prev = position - 1, next = position + 1;
    *from = prev < 0 ? -1 : prev == 0 ? last : prev - 1 < last ? prev - 1 : prev;
    *to = next >= size ? -1 : next - 1 < last ? next - 1 : next;
}

/* The gradient sum: a chain through the processes that have chunks, in rank order, block by block.  Process r takes
 * the running sums of processes 0..r-1 (none for r = 0), adds its own rows in chunk order (lenet__chain_rows) and
 * passes them on; the last one adds them into `out`, as one process would, and the final sums travel on through
 * every other process.  Blocks pipeline: process r works on block k while r - 1 works on block k + 1.  Each process
 * sends and receives about one arena of running sums and one of final sums per step. */
static void sum_by_chain(mpi_backend *b, float *partials, int chunks, size_t count, float *out, int threads)
{
    const int size = b->reducer.size, me = b->reducer.rank;
    const int last = chunks < size ? chunks - 1 : size - 1; /* the last process with chunks */
    const size_t wanted = (size_t)chain_blocks(count, last + 1, size);
    size_t per = (count + wanted - 1) / wanted;
    per = (per + 15) & ~(size_t)15;
    const int blocks = (int)((count + per - 1) / per);
    int first, own, from, to;
    lenet__chunk_share(chunks, me, size, &first, &own);
    final_route(me, size, last, &from, &to);
    MPI_Request *partial_in = b->requests, *final_in = partial_in + blocks, *sends = final_in + blocks;
    int n_sends = 0;
    /* Post every receive first: running sums from the previous process, final sums from the route. */
    for (int k = 0; k < blocks; k++) {
        const size_t begin = (size_t)k * per, len = begin + per < count ? per : count - begin;
        partial_in[k] = final_in[k] = MPI_REQUEST_NULL;
        if (own > 0 && me > 0 && failed(b, MPI_Irecv(b->scratch + begin, (int)len, MPI_FLOAT, me - 1, PARTIAL_TAG,
                                                     b->comm, &partial_in[k]), "MPI_Irecv (gradients)"))
            goto finish;
        if (from >= 0 && failed(b, MPI_Irecv(out + begin, (int)len, MPI_FLOAT, from, FINAL_TAG, b->comm, &final_in[k]),
                                "MPI_Irecv (gradients)"))
            goto finish;
    }
    /* My rows: running sums block by block, passed on (or, at the end of the chain, added into out and sent round). */
    for (int k = 0; own > 0 && k < blocks; k++) {
        const size_t begin = (size_t)k * per, len = begin + per < count ? per : count - begin;
        if (me > 0 && failed(b, MPI_Wait(&partial_in[k], MPI_STATUS_IGNORE), "MPI_Wait (gradients)"))
            goto finish;
        lenet__chain_rows(me > 0 ? b->scratch : NULL, partials + (size_t)first * count, own, count, begin, begin + len,
                          b->scratch, threads);
        float *send = b->scratch + begin;
        int dest = me + 1, tag = PARTIAL_TAG;
        if (me == last) {
            for (size_t j = begin; j < begin + len; j++)
                out[j] += b->scratch[j];
            send = out + begin;
            dest = to;
            tag = FINAL_TAG;
        }
        if (dest >= 0 &&
            failed(b, MPI_Isend(send, (int)len, MPI_FLOAT, dest, tag, b->comm, &sends[n_sends++]), "MPI_Isend (gradients)"))
            goto finish;
    }
    /* The final sums, passed on along the route. */
    for (int k = 0; from >= 0 && k < blocks; k++) {
        const size_t begin = (size_t)k * per, len = begin + per < count ? per : count - begin;
        if (failed(b, MPI_Wait(&final_in[k], MPI_STATUS_IGNORE), "MPI_Wait (gradients)"))
            goto finish;
        if (to >= 0 && failed(b, MPI_Isend(out + begin, (int)len, MPI_FLOAT, to, FINAL_TAG, b->comm, &sends[n_sends++]),
                              "MPI_Isend (gradients)"))
            goto finish;
    }
finish:
    failed(b, MPI_Waitall(n_sends, sends, MPI_STATUSES_IGNORE), "MPI_Waitall (gradients)");
}

/* ---- gradients by slices ---- */

/* The slice [*begin, *begin + *len) of `count` columns that process r sums: equal slices of whole 64-byte lines. */
static void arena_slice(size_t count, int size, int r, size_t *begin, size_t *len)
{
    size_t per = (count + (size_t)size - 1) / (size_t)size;
    per = (per + 15) & ~(size_t)15;
    size_t first = (size_t)r * per < count ? (size_t)r * per : count;
    size_t end = first + per < count ? first + per : count;
    *begin = first;
    *len = end - first;
}

static void free_types(mpi_backend *b)
{
    for (int p = 0; p < b->reducer.size; p++) {
        if (b->send_types[p] != MPI_DATATYPE_NULL)
            MPI_Type_free(&b->send_types[p]);
        if (b->recv_types[p] != MPI_DATATYPE_NULL)
            MPI_Type_free(&b->recv_types[p]);
        b->send_types[p] = b->recv_types[p] = MPI_DATATYPE_NULL;
    }
    b->types_chunks = 0;
    b->types_count = 0;
}

/* A vector of `rows` rows of `len` floats, `stride` floats apart; MPI_DATATYPE_NULL for nothing. */
static bool make_rows_type(mpi_backend *b, int rows, size_t len, size_t stride, MPI_Datatype *type)
{
    *type = MPI_DATATYPE_NULL;
    if (rows == 0 || len == 0)
        return true;
    if (failed(b, MPI_Type_vector(rows, (int)len, (int)stride, MPI_FLOAT, type), "MPI_Type_vector"))
        return false;
    return !failed(b, MPI_Type_commit(type), "MPI_Type_commit");
}

/* The datatypes of the exchange for batches of `chunks` chunks of rows of `count` floats. */
static bool prepare_types(mpi_backend *b, int chunks, size_t count)
{
    if (b->types_chunks == chunks && b->types_count == count)
        return true;
    free_types(b);
    const int size = b->reducer.size, me = b->reducer.rank;
    int my_first, my_rows;
    size_t my_begin, my_len;
    lenet__chunk_share(chunks, me, size, &my_first, &my_rows);
    arena_slice(count, size, me, &my_begin, &my_len);
    for (int p = 0; p < size; p++) {
        if (p == me)
            continue;
        int first, rows;
        size_t begin, len;
        lenet__chunk_share(chunks, p, size, &first, &rows);
        arena_slice(count, size, p, &begin, &len);
        /* From p: its rows of my slice.  To p: my rows of its slice. */
        if (!make_rows_type(b, rows, my_len, count, &b->recv_types[p]) ||
            !make_rows_type(b, my_rows, len, count, &b->send_types[p])) {
            free_types(b);
            return false;
        }
    }
    b->types_chunks = chunks;
    b->types_count = count;
    return true;
}

static void sum_by_slices(mpi_backend *b, float *partials, int chunks, size_t count, float *out, int threads)
{
    if (!prepare_types(b, chunks, count))
        return;
    const int size = b->reducer.size, me = b->reducer.rank;
    int my_first, my_rows, n = 0;
    size_t my_begin, my_len;
    lenet__chunk_share(chunks, me, size, &my_first, &my_rows);
    arena_slice(count, size, me, &my_begin, &my_len);
    for (int p = 0; p < size; p++) {
        int first, rows;
        lenet__chunk_share(chunks, p, size, &first, &rows);
        if (p != me && b->recv_types[p] != MPI_DATATYPE_NULL &&
            failed(b, MPI_Irecv(partials + (size_t)first * count + my_begin, 1, b->recv_types[p], p, PARTIAL_TAG,
                                b->comm, &b->requests[n++]), "MPI_Irecv (gradients)"))
            goto wait;
    }
    for (int p = 0; p < size; p++) {
        size_t begin, len;
        arena_slice(count, size, p, &begin, &len);
        if (p != me && b->send_types[p] != MPI_DATATYPE_NULL &&
            failed(b, MPI_Isend(partials + (size_t)my_first * count + begin, 1, b->send_types[p], p, PARTIAL_TAG,
                                b->comm, &b->requests[n++]), "MPI_Isend (gradients)"))
            goto wait;
    }
wait:
    if (failed(b, MPI_Waitall(n, b->requests, MPI_STATUSES_IGNORE), "MPI_Waitall (gradients)") ||
        b->broken != LENET_OK)
        return;
    /* Every row of my slice is here: the in-process sum, in chunk order, over my columns. */
    lenet__sum_rows(partials, chunks, count, my_begin, my_begin + my_len, out, threads);
    for (int p = 0; p < size; p++) {
        size_t begin, len;
        arena_slice(count, size, p, &begin, &len);
        b->counts[p] = (int)len;
        b->displs[p] = (int)begin;
    }
    failed(b, MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, out, b->counts, b->displs, MPI_FLOAT, b->comm),
           "MPI_Allgatherv (gradients)");
}

static void sum_floats(void *ctx, float *partials, int chunks, size_t count, float *out, int threads)
{
    mpi_backend *b = ctx;
    if (b->broken != LENET_OK || count == 0)
        return;
    if (count > b->scratch_floats || !fits_int(b, count, "a gradient row")) {
        /* The training loop reserves first; nothing else calls this. */
        if (b->broken == LENET_OK) {
            b->broken = LENET_ESTATE;
            snprintf(b->broken_message, sizeof b->broken_message, "MPI: the gradient exchange was not reserved");
        }
        return;
    }
    const int size = b->reducer.size, holders = chunks < size ? chunks : size;
    const double bytes = (double)count * sizeof(float);
    const bool chain = b->forced ? b->forced == 1
                                 : chain_cost(bytes, holders, size, chain_blocks(count, holders, size)) <
                                       slices_cost(bytes, chunks, size);
    if (chain)
        sum_by_chain(b, partials, chunks, count, out, threads);
    else
        sum_by_slices(b, partials, chunks, count, out, threads);
}

static void sum_doubles(void *ctx, double *partials, int chunks, size_t count, double *out)
{
    mpi_backend *b = ctx;
    if (b->broken != LENET_OK)
        return;
    size_t total;
    if (lenet__mul_overflows((size_t)chunks, count, &total) || !fits_int(b, total, "the statistics"))
        return;
    for (int p = 0; p < b->reducer.size; p++) {
        int first, rows;
        lenet__chunk_share(chunks, p, b->reducer.size, &first, &rows);
        b->counts[p] = rows * (int)count;
        b->displs[p] = first * (int)count;
    }
    if (failed(b, MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, partials, b->counts, b->displs, MPI_DOUBLE,
                                 b->comm), "MPI_Allgatherv (statistics)"))
        return;
    lenet__sum_double_rows(partials, chunks, count, out);
}

static void gather_samples(void *ctx, float *data, int batch, size_t per_sample)
{
    mpi_backend *b = ctx;
    if (b->broken != LENET_OK || per_sample == 0 || !fits_int(b, per_sample, "a sample"))
        return;
    /* Counted in samples, so that a large batch of large samples still fits an int count. */
    MPI_Datatype sample;
    if (failed(b, MPI_Type_contiguous((int)per_sample, MPI_FLOAT, &sample), "MPI_Type_contiguous"))
        return;
    if (failed(b, MPI_Type_commit(&sample), "MPI_Type_commit")) {
        MPI_Type_free(&sample);
        return;
    }
    const int chunks = lenet__chunk_count(batch);
    for (int p = 0; p < b->reducer.size; p++) {
        int first, rows;
        lenet__chunk_share(chunks, p, b->reducer.size, &first, &rows);
        const int begin = first * LENET_CHUNK, end = (first + rows) * LENET_CHUNK;
        b->displs[p] = begin < batch ? begin : batch;
        b->counts[p] = (end < batch ? end : batch) - b->displs[p];
    }
    failed(b, MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, b->counts, b->displs, sample, b->comm),
           "MPI_Allgatherv (outputs)");
    MPI_Type_free(&sample);
}

static void broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    mpi_backend *b = ctx;
    if (b->broken != LENET_OK || !fits_int(b, bytes, "a broadcast"))
        return;
    failed(b, MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, b->comm), "MPI_Bcast");
}

static lenet_status any(void *ctx, bool mine, bool *any)
{
    mpi_backend *b = ctx;
    int in = mine, out = 0;
    if (b->broken == LENET_OK)
        failed(b, MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LOR, b->comm), "MPI_Allreduce (agreeing on a stop)");
    if (b->broken != LENET_OK)
        return lenet__fail(b->broken, "%s", b->broken_message);
    *any = out != 0;
    return LENET_OK;
}

/* The status and message that travel from the failing process to all. */
typedef struct verdict {
    int status;
    char message[MESSAGE_BYTES];
} verdict;

/* Agreement over `comm` (see lenet_reducer.agree); `b` records MPI failures and may be NULL. */
static lenet_status agree_on(MPI_Comm comm, int rank, int size, mpi_backend *b, lenet_status st, unsigned key)
{
    /* The failing process with the smallest key, then the lowest rank: MINLOC keeps the lower rank on ties. */
    int mine[2] = {st < 0 ? (int)(key < INT_MAX ? key : INT_MAX - 1) : INT_MAX, rank}, first[2];
    int rc = MPI_Allreduce(mine, first, 1, MPI_2INT, MPI_MINLOC, comm);
    if (rc != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING];
        int length = 0;
        if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS)
            snprintf(text, sizeof text, "error %d", rc);
        if (b)
            failed(b, rc, "MPI_Allreduce (agreeing on a status)");
        return lenet__fail(LENET_EIO, "MPI: MPI_Allreduce failed on rank %d of %d: %s", rank, size, text);
    }
    if (first[0] == INT_MAX)
        return st;
    verdict v = {.status = st};
    if (first[1] == rank)
        snprintf(v.message, sizeof v.message, "%s", lenet_last_error());
    rc = MPI_Bcast(&v, (int)sizeof v, MPI_BYTE, first[1], comm);
    if (rc != MPI_SUCCESS) {
        if (b)
            failed(b, rc, "MPI_Bcast (sharing an error)");
        return lenet__fail(LENET_EIO, "MPI: MPI_Bcast failed on rank %d of %d while sharing rank %d's error", rank,
                           size, first[1]);
    }
    v.message[sizeof v.message - 1] = '\0';
    return lenet__fail((lenet_status)v.status, "rank %d of %d: %s", first[1], size, v.message);
}

static lenet_status agree(void *ctx, lenet_status st, unsigned key)
{
    mpi_backend *b = ctx;
    if (b->broken != LENET_OK)
        return lenet__fail(b->broken, "%s", b->broken_message);
    return agree_on(b->comm, b->reducer.rank, b->reducer.size, b, st, key);
}

/* One Allgatherv of every process's record: its status and key, then its samples. */
static lenet_status agree_samples(void *ctx, lenet_status st, unsigned key, double *samples, int batch,
                                  int per_sample)
{
    mpi_backend *b = ctx;
    if (b->broken != LENET_OK)
        return lenet__fail(b->broken, "%s", b->broken_message);
    const int size = b->reducer.size, me = b->reducer.rank, chunks = lenet__chunk_count(batch);
    if (per_sample < 0 || per_sample > 2 || records_for(size, batch) > b->records_doubles)
        return lenet__fail(LENET_ESTATE, "MPI: the agreement was not reserved for %d samples", batch);
    int at = 0, winner = -1;
    for (int p = 0; p < size; p++) {
        int first, rows;
        lenet__chunk_share(chunks, p, size, &first, &rows);
        const int begin = first * LENET_CHUNK < batch ? first * LENET_CHUNK : batch;
        const int end = (first + rows) * LENET_CHUNK < batch ? (first + rows) * LENET_CHUNK : batch;
        b->displs[p] = at;
        b->counts[p] = 2 + (end - begin) * per_sample;
        if (p == me) {
            b->records[at] = (double)st;
            b->records[at + 1] = st < 0 ? (double)(key < INT_MAX ? key : INT_MAX - 1) : (double)INT_MAX;
            memcpy(b->records + at + 2, samples + (size_t)begin * per_sample,
                   (size_t)(end - begin) * per_sample * sizeof *samples);
        }
        at += b->counts[p];
    }
    if (failed(b, MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, b->records, b->counts, b->displs, MPI_DOUBLE,
                                 b->comm), "MPI_Allgatherv (agreeing on a step)"))
        return lenet__fail(b->broken, "%s", b->broken_message);
    /* The failing process with the smallest key, then the lowest rank. */
    for (int p = 0; p < size; p++)
        if (b->records[b->displs[p]] < 0 &&
            (winner < 0 || b->records[b->displs[p] + 1] < b->records[b->displs[winner] + 1]))
            winner = p;
    if (winner >= 0) {
        verdict v = {.status = (int)b->records[b->displs[winner]]};
        if (winner == me)
            snprintf(v.message, sizeof v.message, "%s", lenet_last_error());
        if (failed(b, MPI_Bcast(&v, (int)sizeof v, MPI_BYTE, winner, b->comm), "MPI_Bcast (sharing an error)"))
            return lenet__fail(b->broken, "%s", b->broken_message);
        v.message[sizeof v.message - 1] = '\0';
        return lenet__fail((lenet_status)v.status, "rank %d of %d: %s", winner, size, v.message);
    }
    for (int p = 0, begin = 0; p < size; p++) {
        const int n = (b->counts[p] - 2) / (per_sample ? per_sample : 1);
        if (per_sample)
            memcpy(samples + (size_t)begin * per_sample, b->records + b->displs[p] + 2,
                   (size_t)n * per_sample * sizeof *samples);
        begin += per_sample ? n : 0;
    }
    return st;
}

static void destroy(void *ctx)
{
    mpi_backend *b = ctx;
    if (!b)
        return;
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (!finalized) {
        if (b->send_types && b->recv_types)
            free_types(b);
        if (b->comm != MPI_COMM_NULL)
            MPI_Comm_free(&b->comm);
    }
    lenet__free(b->counts);
    lenet__free(b->displs);
    lenet__free_aligned(b->scratch);
    lenet__free(b->records);
    lenet__free(b->requests);
    lenet__free(b->send_types);
    lenet__free(b->recv_types);
    lenet__free(b);
}

/* A backend over `comm` (taken over, freed by destroy), or NULL when out of memory (comm then left to the caller). */
static mpi_backend *backend_create(MPI_Comm comm, int rank, int size)
{
    mpi_backend *b = lenet__calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->comm = MPI_COMM_NULL;
    b->reducer = (lenet_reducer){
        .rank = rank, .size = size, .sum_floats = sum_floats, .sum_doubles = sum_doubles,
        .gather_samples = gather_samples, .agree = agree, .broadcast = broadcast, .agree_samples = agree_samples,
        .reserve = reserve, .any = any,
        .destroy = destroy, .ctx = b,
    };
    b->counts = lenet__calloc((size_t)size, sizeof *b->counts);
    b->displs = lenet__calloc((size_t)size, sizeof *b->displs);
    b->send_types = lenet__malloc((size_t)size * sizeof *b->send_types);
    b->recv_types = lenet__malloc((size_t)size * sizeof *b->recv_types);
    b->requests = lenet__malloc((4 * MAX_BLOCKS + 2 * (size_t)size) * sizeof *b->requests);
    if (!b->counts || !b->displs || !b->send_types || !b->recv_types || !b->requests) {
        destroy(b);
        return NULL;
    }
    for (int p = 0; p < size; p++)
        b->send_types[p] = b->recv_types[p] = MPI_DATATYPE_NULL;
    b->comm = comm;
    return b;
}

lenet_status lenet_model_set_comm(lenet_model *m, MPI_Comm comm)
{
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized)
        return lenet__fail(LENET_ESTATE, "model_set_comm: MPI is %s", finalized ? "already finalised" : "not initialised");
    if (comm == MPI_COMM_NULL) {
        if (!m)
            return lenet__fail(LENET_EINVAL, "model_set_comm: model is NULL");
        lenet__model_set_comm(m, NULL);
        return LENET_OK;
    }
    int inter = 0;
    int rc = MPI_Comm_test_inter(comm, &inter);
    if (rc == MPI_SUCCESS && inter)
        return lenet__fail(LENET_EINVAL, "model_set_comm: an intercommunicator cannot share batches; merge it first "
                           "(MPI_Intercomm_merge)");
    MPI_Comm dup = MPI_COMM_NULL;
    int rank = 0, size = 1;
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_dup(comm, &dup);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_rank(dup, &rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(dup, &size);
    if (rc != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING];
        int length = 0;
        if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS)
            snprintf(text, sizeof text, "error %d", rc);
        if (dup != MPI_COMM_NULL)
            MPI_Comm_free(&dup);
        return lenet__fail(LENET_EIO, "model_set_comm: duplicating the communicator failed: %s", text);
    }
    mpi_backend *b = backend_create(dup, rank, size);
    /* LENET_MPI_EXCHANGE as rank 0 reads it: every process must exchange the same way. */
    const char *way = getenv("LENET_MPI_EXCHANGE");
    int forced = way && !strcmp(way, "chain") ? 1 : way && !strcmp(way, "slices") ? 2 : 0;
    rc = MPI_Bcast(&forced, 1, MPI_INT, 0, dup);
    if (b)
        b->forced = rc == MPI_SUCCESS ? forced : 0;
    lenet_status st = LENET_OK;
    if (!m)
        st = lenet__fail(LENET_EINVAL, "model_set_comm: model is NULL");
    else if (!b)
        st = lenet__oom("model_set_comm: the communicator's buffers");
    st = agree_on(dup, rank, size, b, st, 0);
    if (st != LENET_OK) {
        if (b)
            destroy(b); /* frees dup too */
        else
            MPI_Comm_free(&dup);
        return st;
    }
    lenet__model_set_comm(m, &b->reducer);
    return LENET_OK;
}
