/* Data-parallel training speed (bench/mpi_bench.sh runs it under mpirun): the d2l LeNet, or the same network ten
 * times wider (--width 10: 60 and 160 channels, 1200 and 840 units), trained with SGD on synthetic 28x28 batches
 * written as IDX files, over MPI_COMM_WORLD when there is more than one process.
 *
 * Rank 0 prints one line of key=value pairs: the training speed (examples per second of wall time over the timed
 * epoch), and, with more than one process, the time of the gradient exchange alone, measured by running the engine's
 * gradient reduction (the same call a step makes) on the same buffers 30 times: the median, and the fastest, which
 * is what bench/mpi_cost_model.py predicts (the others include the waits of a machine shared with other work). */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lenet/lenet.h>
#include <lenet/mpi.h>

#include "model/internal.h" /* the communicator's reducer, for timing the exchange alone */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(int rank, const char *what)
{
    fprintf(stderr, "mpi_train: rank %d: %s: %s\n", rank, what, lenet_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void put_be32(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Writes n random 28x28 images and labels as IDX files into dir. */
static void write_data(const char *dir, unsigned n, char *images, char *labels, size_t size)
{
    snprintf(images, size, "%s/images", dir);
    snprintf(labels, size, "%s/labels", dir);
    FILE *fi = fopen(images, "wb"), *fl = fopen(labels, "wb");
    if (!fi || !fl) {
        perror("mpi_train: data");
        exit(1);
    }
    unsigned char header[16];
    put_be32(header, 0x803);
    put_be32(header + 4, n);
    put_be32(header + 8, 28);
    put_be32(header + 12, 28);
    fwrite(header, 1, 16, fi);
    put_be32(header, 0x801);
    put_be32(header + 4, n);
    fwrite(header, 1, 8, fl);
    unsigned long long state = 12345;
    unsigned char image[28 * 28];
    for (unsigned i = 0; i < n; i++) {
        for (int p = 0; p < 28 * 28; p++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            image[p] = (unsigned char)(state >> 56);
        }
        unsigned char label = (unsigned char)(i % 10);
        fwrite(image, 1, sizeof image, fi);
        fwrite(&label, 1, 1, fl);
    }
    fclose(fi);
    fclose(fl);
}

int main(int argc, char **argv)
{
    int provided, rank, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int width = 1, batch = 128, batches = 40, threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--width"))
            width = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch"))
            batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batches"))
            batches = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
    }
    if (width < 1 || batch < 1 || batches < 1 || threads < 1) {
        if (rank == 0)
            fprintf(stderr, "usage: mpi_train [--width W] [--batch B] [--batches K] [--threads T]\n");
        MPI_Finalize();
        return 2;
    }
    lenet_threads_set(threads);

    char dir[] = "/tmp/lenet-mpi-bench-XXXXXX", images[256], labels[256];
    if (!mkdtemp(dir)) {
        perror("mpi_train: mkdtemp");
        return 1;
    }
    write_data(dir, (unsigned)(batch * batches), images, labels, sizeof images);
    lenet_dataset *d = lenet_dataset_open_idx(images, labels);
    if (!d)
        die(rank, "dataset");

    lenet_model *m = lenet_model_create();
    lenet_model_add(m, lenet_conv2d(6 * width, 5, 1, 2));
    lenet_model_add(m, lenet_sigmoid());
    lenet_model_add(m, lenet_avgpool2d(2, 2));
    lenet_model_add(m, lenet_conv2d(16 * width, 5, 1, 0));
    lenet_model_add(m, lenet_sigmoid());
    lenet_model_add(m, lenet_avgpool2d(2, 2));
    lenet_model_add(m, lenet_flatten());
    lenet_model_add(m, lenet_linear(120 * width));
    lenet_model_add(m, lenet_sigmoid());
    lenet_model_add(m, lenet_linear(84 * width));
    lenet_model_add(m, lenet_sigmoid());
    lenet_model_add(m, lenet_linear(10));
    if (lenet_model_build(m, 1, 28, 28) != LENET_OK || lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 0) != LENET_OK)
        die(rank, "model");
    if (size > 1 && lenet_model_set_comm(m, MPI_COMM_WORLD) != LENET_OK)
        die(rank, "set_comm");
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.0f, 0.0f);
    lenet_iter *it = lenet_iter_create(d, batch, true, 0);
    if (!o || !it)
        die(rank, "optimizer or iterator");

    /* One epoch to warm up (buffers, pages, the thread pool), one timed. */
    lenet_metrics warm, timed;
    if (lenet_train_epoch(m, o, it, NULL, NULL, &warm) != LENET_OK)
        die(rank, "warm-up epoch");
    MPI_Barrier(MPI_COMM_WORLD);
    double start = now();
    if (lenet_train_epoch(m, o, it, NULL, NULL, &timed) != LENET_OK)
        die(rank, "timed epoch");
    double seconds = now() - start;
    MPI_Barrier(MPI_COMM_WORLD);

    /* The exchanges of one step alone: the gradient reduction over the same chunk buffers, repeated, each call
     * started together on every process; the fastest call is what the machine's load leaves out. */
    double exchange_ms = 0.0, exchange_min_ms = 0.0;
    if (m->comm) {
        enum { REPEATS = 30 };
        const int chunks = (batch + LENET_CHUNK - 1) / LENET_CHUNK;
        double times[REPEATS];
        for (int r = 0; r < REPEATS; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = now();
            m->comm->sum_floats(m->comm->ctx, m->chunk_grads, chunks, m->arena_numel, m->grads, threads);
            times[r] = now() - t0;
        }
        for (int i = 1; i < REPEATS; i++)
            for (int j = i; j > 0 && times[j - 1] > times[j]; j--) {
                double t = times[j];
                times[j] = times[j - 1];
                times[j - 1] = t;
            }
        exchange_ms = 1e3 * times[REPEATS / 2];
        exchange_min_ms = 1e3 * times[0];
    }
    double slowest = seconds;
    MPI_Reduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("ranks=%d threads=%d width=%d batch=%d params=%zu arena_bytes=%zu examples_per_sec=%.0f step_ms=%.3f "
               "grad_exchange_ms=%.3f grad_exchange_min_ms=%.3f loss=%.9g\n",
               size, threads, width, batch, lenet_model_param_numel(m), m->arena_numel * sizeof(float),
               (double)timed.examples / slowest,
               1e3 * slowest / batches, exchange_ms, exchange_min_ms, timed.loss);

    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    lenet_dataset_free(d);
    unlink(images);
    unlink(labels);
    rmdir(dir);
    MPI_Finalize();
    return 0;
}
