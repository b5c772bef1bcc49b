/* liblenet benchmark: training examples/sec, batch inference, single-image latency, thread scaling, peak RSS and
 * the per-layer time split, each side by side with PyTorch measured in the same run (bench/pytorch_reference.py,
 * when Debian's python3-torch is installed).  Speeds are only compared as ratios within one run: these machines
 * are shared and their CPUs change.  Writes the table to stdout and, with --json FILE, as JSON. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kernels/kernels.h"
#include "lenet/lenet.h"
#include "model/internal.h"
#include "plan/internal.h"

#define BATCH 128

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double thread_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, lenet_last_error());
    exit(1);
}

static lenet_model *d2l_model(void)
{
    lenet_model *m = lenet_model_create();
    lenet_layer *layers[] = {lenet_conv2d(6, 5, 1, 2), lenet_sigmoid(), lenet_avgpool2d(2, 2), lenet_conv2d(16, 5, 1, 0),
                             lenet_sigmoid(), lenet_avgpool2d(2, 2), lenet_flatten(), lenet_linear(120),
                             lenet_sigmoid(), lenet_linear(84), lenet_sigmoid(), lenet_linear(10)};
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        if (lenet_model_add(m, layers[i]) != LENET_OK)
            die("model");
    if (lenet_model_build(m, 1, 28, 28) != LENET_OK || lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 0) != LENET_OK)
        die("build");
    return m;
}

static void fill(lenet_tensor *t, unsigned seed)
{
    float *p = lenet_tensor_data(t);
    for (size_t i = 0; i < lenet_tensor_numel(t); i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (float)((seed >> 8) & 0xffff) / 65535.0f;
    }
}

/* The training step of lenet_train_epoch on one in-memory batch, so data loading does not enter the figure. */
static double process_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double cpu_rate; /* examples per CPU-second of the last 1-thread run: immune to other processes' load */

/* d2l's BatchNorm LeNet: BatchNorm after every convolution and hidden Linear, whole-batch statistics in training. */
static lenet_model *bn_model(void)
{
    lenet_model *m = lenet_model_create();
    lenet_layer *layers[] = {lenet_conv2d(6, 5, 1, 0), lenet_batchnorm2d(1e-5f, 0.1f), lenet_sigmoid(),
                             lenet_avgpool2d(2, 2), lenet_conv2d(16, 5, 1, 0), lenet_batchnorm2d(1e-5f, 0.1f),
                             lenet_sigmoid(), lenet_avgpool2d(2, 2), lenet_flatten(), lenet_linear(120),
                             lenet_batchnorm1d(1e-5f, 0.1f), lenet_sigmoid(), lenet_linear(84),
                             lenet_batchnorm1d(1e-5f, 0.1f), lenet_sigmoid(), lenet_linear(10)};
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++)
        if (lenet_model_add(m, layers[i]) != LENET_OK)
            die("model");
    if (lenet_model_build(m, 1, 28, 28) != LENET_OK || lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 0) != LENET_OK)
        die("build");
    return m;
}

/* Training examples/sec of model m (SGD at lr, plain, in-memory batches of 128 of a fixed pattern), best of 3; the
 * best examples per CPU-second into *per_cpu unless it is NULL.  Frees m. */
static double train_rate(lenet_model *m, float lr, unsigned pattern, int threads, int batches, double *per_cpu)
{
    lenet_threads_set(threads);
    lenet_optimizer *o = lenet_sgd_create(m, lr, 0.0f, 0.0f);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){BATCH, 1, 28, 28});
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){BATCH, 10});
    int32_t labels[BATCH];
    for (int i = 0; i < BATCH; i++)
        labels[i] = i % 10;
    fill(x, pattern);
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double t = now(), c = process_cpu();
        for (int b = 0; b < batches; b++) {
            const lenet_tensor *y;
            float loss;
            if (lenet_model_forward(m, x, &y) != LENET_OK || lenet_cross_entropy(y, labels, &loss, dy) != LENET_OK)
                die("train step");
            lenet_model_zero_grad(m);
            lenet_model_backward(m, dy);
            lenet_optimizer_step(o);
        }
        double rate = batches * BATCH / (now() - t);
        best = rate > best ? rate : best;
        const double cpu = batches * BATCH / (process_cpu() - c);
        if (per_cpu && cpu > *per_cpu)
            *per_cpu = cpu;
    }
    lenet_tensor_free(x);
    lenet_tensor_free(dy);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    return best;
}

static double train_examples_per_sec(int threads, int batches)
{
    return train_rate(d2l_model(), 0.9f, 1, threads, batches, threads == 1 ? &cpu_rate : NULL);
}

/* The BatchNorm LeNet at lr 0.1, as d2l trains it. */
static double bn_train_examples_per_sec(int threads, int batches)
{
    return train_rate(bn_model(), 0.1f, 5, threads, batches, NULL);
}

static double infer_images_per_sec(int threads)
{
    lenet_threads_set(threads);
    lenet_model *m = d2l_model();
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1000, 1, 28, 28});
    lenet_tensor *y = lenet_tensor_create(2, (int[]){1000, 10});
    fill(x, 2);
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t = now();
        for (int i = 0; i < 10; i++)
            if (lenet_model_predict(m, x, y) != LENET_OK)
                die("predict");
        double rate = 10 * 1000 / (now() - t);
        best = rate > best ? rate : best;
    }
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_model_free(m);
    return best;
}

static void latency(int calls, double *p50, double *p99)
{
    lenet_threads_set(1);
    lenet_model *m = d2l_model();
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, 1, 28, 28});
    lenet_tensor *y = lenet_tensor_create(2, (int[]){1, 10});
    fill(x, 3);
    double *lat = malloc(sizeof *lat * (size_t)calls);
    for (int i = 0; i < calls + 50; i++) {
        double t = now();
        if (lenet_model_predict(m, x, y) != LENET_OK)
            die("predict");
        if (i >= 50)
            lat[i - 50] = now() - t;
    }
    qsort(lat, (size_t)calls, sizeof *lat, cmp_double);
    *p50 = lat[calls / 2] * 1e6;
    *p99 = lat[(size_t)(calls * 0.99)] * 1e6;
    free(lat);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_model_free(m);
}

/* ---- inference plans: one workspace per thread, each thread running its own share of the batches ---- */

typedef struct plan_job {
    const lenet_plan *plan;
    const lenet_tensor *x;
    lenet_tensor *y;
    int runs;
} plan_job;

static void *plan_worker(void *arg)
{
    plan_job *job = arg;
    size_t size = lenet_plan_workspace_size(job->plan);
    void *work = malloc(size);
    for (int i = 0; i < job->runs; i++)
        if (lenet_plan_run(job->plan, work, size, job->x, job->y) != LENET_OK)
            die("plan_run");
    free(work);
    return NULL;
}

/* Images/sec of `threads` threads each running plans on batches of `batch`, best of 5. */
static double plan_images_per_sec(const lenet_plan *plan, int threads, int batch)
{
    enum { MAX_THREADS = 16 };
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    lenet_tensor *x = lenet_tensor_create(4, (int[]){batch, 1, 28, 28});
    fill(x, 4);
    pthread_t tid[MAX_THREADS];
    plan_job jobs[MAX_THREADS];
    lenet_tensor *ys[MAX_THREADS];
    const int runs = batch >= 256 ? 10 : 2000;
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t = now();
        for (int i = 0; i < threads; i++) {
            ys[i] = lenet_tensor_create(2, (int[]){batch, 10});
            jobs[i] = (plan_job){plan, x, ys[i], runs};
            if (pthread_create(&tid[i], NULL, plan_worker, &jobs[i]) != 0)
                die("pthread_create");
        }
        for (int i = 0; i < threads; i++) {
            pthread_join(tid[i], NULL);
            lenet_tensor_free(ys[i]);
        }
        double rate = (double)threads * runs * batch / (now() - t);
        best = rate > best ? rate : best;
    }
    lenet_tensor_free(x);
    return best;
}

/* Single-image latency of a plan on the calling thread: wall-clock p50 and p99 of single calls, and the p50 of the
 * thread's CPU time per call over blocks of 100 calls, which other processes' load distorts much less (a read of the
 * CPU-time clock is a system call of about 0.5 us on these VMs, too much to wrap around every call). */
static void plan_latency(const lenet_plan *plan, int calls, double *p50, double *p99, double *cpu_p50)
{
    enum { BLOCK = 100 };
    lenet_tensor *x = lenet_tensor_create(4, (int[]){1, 1, 28, 28});
    lenet_tensor *y = lenet_tensor_create(2, (int[]){1, 10});
    fill(x, 3);
    size_t size = lenet_plan_workspace_size(plan);
    void *work = malloc(size);
    const int blocks = calls / BLOCK > 0 ? calls / BLOCK : 1;
    double *lat = malloc(sizeof *lat * (size_t)calls), *cpu = malloc(sizeof *cpu * (size_t)blocks);
    for (int i = 0; i < calls + 50; i++) {
        double t = now();
        if (lenet_plan_run(plan, work, size, x, y) != LENET_OK)
            die("plan_run");
        if (i >= 50)
            lat[i - 50] = now() - t;
    }
    for (int b = 0; b < blocks; b++) {
        double c = thread_cpu();
        for (int i = 0; i < BLOCK; i++)
            if (lenet_plan_run(plan, work, size, x, y) != LENET_OK)
                die("plan_run");
        cpu[b] = (thread_cpu() - c) / BLOCK;
    }
    qsort(lat, (size_t)calls, sizeof *lat, cmp_double);
    qsort(cpu, (size_t)blocks, sizeof *cpu, cmp_double);
    *p50 = lat[calls / 2] * 1e6;
    *p99 = lat[(size_t)(calls * 0.99)] * 1e6;
    *cpu_p50 = cpu[blocks / 2] * 1e6;
    free(cpu);
    free(lat);
    free(work);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
}

/* Images per CPU-second of the calling thread running the plan on batches of `batch`, best of 5. */
static double plan_images_per_cpu_sec(const lenet_plan *plan, int batch)
{
    lenet_tensor *x = lenet_tensor_create(4, (int[]){batch, 1, 28, 28});
    lenet_tensor *y = lenet_tensor_create(2, (int[]){batch, 10});
    fill(x, 4);
    size_t size = lenet_plan_workspace_size(plan);
    void *work = malloc(size);
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double c = thread_cpu();
        for (int i = 0; i < 4; i++)
            if (lenet_plan_run(plan, work, size, x, y) != LENET_OK)
                die("plan_run");
        double rate = 4.0 * batch / (thread_cpu() - c);
        best = rate > best ? rate : best;
    }
    free(work);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    return best;
}

typedef struct plan_figures {
    const char *backend;
    double p50, p99, cpu_p50, batch_rate, cpu_rate;
} plan_figures;

static plan_figures measure_plan_backend(const lenet_plan *plan, int threads)
{
    plan_figures f = {.backend = plan->backend->name};
    plan_latency(plan, 2000, &f.p50, &f.p99, &f.cpu_p50);
    f.batch_rate = plan_images_per_sec(plan, threads, 1000);
    f.cpu_rate = plan_images_per_cpu_sec(plan, 1000);
    return f;
}

/* The d2l LeNet's plan (max_batch 1000) on the backend lenet_plan_create chose for it, the same plan on the layers
 * backend, and its int8 plan (calibrated on 256 inputs of the benchmark's pattern: the speed does not depend on the
 * ranges), measured in the same run so that their ratios hold on a loaded machine. */
static plan_figures measure_plan(int threads, plan_figures *layers, plan_figures *int8)
{
    lenet_model *m = d2l_model();
    lenet_tensor *calibration = lenet_tensor_create(4, (int[]){256, 1, 28, 28});
    if (!calibration)
        die("calibration");
    fill(calibration, 11);
    lenet_plan *quantized = lenet_plan_create_int8(m, 1000, calibration);
    if (!quantized)
        die("plan_create_int8");
    *int8 = measure_plan_backend(quantized, threads);
    lenet_plan_free(quantized);
    lenet_tensor_free(calibration);
    lenet_plan *plan = lenet_plan_create(m, 1000);
    if (!plan)
        die("plan_create");
    plan_figures f = measure_plan_backend(plan, threads);
    const lenet_plan_backend *chosen = plan->backend;
    void *impl = plan->impl;
    plan->backend = &lenet__plan_layers;
    plan->impl = NULL;
    *layers = measure_plan_backend(plan, threads);
    plan->backend = chosen;
    plan->impl = impl;
    lenet_plan_free(plan);
    lenet_model_free(m);
    return f;
}

/* Per-layer forward and backward CPU time over one thread, through the internal vtable. */
static void layer_split(FILE *out, FILE *json)
{
    lenet_threads_set(1);
    lenet_model *m = d2l_model();
    if (lenet__model_reserve(m, BATCH) != LENET_OK)
        die("reserve");
    size_t ws = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        size_t w = l->ops->workspace ? l->ops->workspace(l, LENET_CHUNK) : 0;
        ws = w > ws ? w : ws;
    }
    float *work = malloc((ws + 16) * sizeof(float));
    for (size_t i = 0; i < (size_t)BATCH * 784; i++)
        m->acts[0][i] = (float)(i % 255) / 255.0f;
    double fwd[64] = {0}, bwd[64] = {0};
    const int reps = 20;
    for (int r = 0; r < reps; r++) {
        for (int c = 0; c < BATCH; c += LENET_CHUNK) {
            for (size_t i = 0; i < m->n_layers; i++) {
                const lenet_layer *l = m->layers[i];
                lenet_pass p = {.n = LENET_CHUNK, .x = m->acts[i] + (size_t)c * l->in_size, .work = work};
                double t = thread_cpu();
                l->ops->forward(l, &p, m->acts[i + 1] + (size_t)c * l->out_size);
                fwd[i] += thread_cpu() - t;
            }
            const float *dy = m->acts[m->n_layers] + (size_t)c * 10;
            int cur = 0;
            for (size_t i = m->n_layers; i-- > 0;) {
                const lenet_layer *l = m->layers[i];
                float *grads[LENET_MAX_LAYER_PARAMS];
                for (int j = 0; j < l->n_params; j++)
                    grads[j] = m->grads + m->param_offset[m->layer_first_param[i] + (size_t)j];
                lenet_pass p = {.n = LENET_CHUNK, .x = m->acts[i] + (size_t)c * l->in_size,
                                .y = m->acts[i + 1] + (size_t)c * l->out_size, .dy = dy,
                                .dx = i > 0 ? m->dbuf[cur] : NULL, .grads = grads, .work = work};
                double t = thread_cpu();
                l->ops->backward(l, &p);
                bwd[i] += thread_cpu() - t;
                dy = m->dbuf[cur];
                cur ^= 1;
            }
        }
    }
    double total = 0.0;
    for (size_t i = 0; i < m->n_layers; i++)
        total += fwd[i] + bwd[i];
    fprintf(out, "\nPer-layer CPU time, one thread, per batch of %d (kernels: %s)\n", BATCH, lenet__kernels()->isa);
    fprintf(out, "%-3s %-10s %10s %10s %7s\n", "#", "layer", "fwd us", "bwd us", "share");
    if (json)
        fprintf(json, "  \"layers\": [\n");
    for (size_t i = 0; i < m->n_layers; i++) {
        double f = fwd[i] / reps * 1e6, b = bwd[i] / reps * 1e6;
        fprintf(out, "%-3zu %-10s %10.1f %10.1f %6.1f%%\n", i, lenet_layer_name(m->layers[i]), f, b,
                100.0 * (fwd[i] + bwd[i]) / total);
        if (json)
            fprintf(json, "    {\"index\": %zu, \"name\": \"%s\", \"forward_us\": %.1f, \"backward_us\": %.1f}%s\n", i,
                    lenet_layer_name(m->layers[i]), f, b, i + 1 < m->n_layers ? "," : "");
    }
    if (json)
        fprintf(json, "  ],\n");
    fprintf(out, "total %.1f us per batch on one thread (%.0f examples/sec of pure layer time)\n", total / reps * 1e6,
            BATCH / (total / reps));
    free(work);
    lenet_model_free(m);
}

typedef struct torch_figures {
    double train, infer, p50, p99, bn_train;
    int found;
} torch_figures;

static torch_figures run_pytorch(const char *script, int threads, int batches)
{
    torch_figures f = {0};
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s --threads %d --batches %d 2>/dev/null", script, threads, batches);
    FILE *p = popen(cmd, "r");
    if (!p)
        return f;
    char key[64];
    double v;
    while (fscanf(p, "%63s %lf", key, &v) == 2) {
        if (!strcmp(key, "train_examples_per_sec"))
            f.train = v, f.found = 1;
        else if (!strcmp(key, "infer_images_per_sec"))
            f.infer = v;
        else if (!strcmp(key, "bn_train_examples_per_sec"))
            f.bn_train = v;
        else if (!strcmp(key, "latency_p50_us"))
            f.p50 = v;
        else if (!strcmp(key, "latency_p99_us"))
            f.p99 = v;
    }
    pclose(p);
    return f;
}

static void cpu_model(char *buf, size_t size)
{
    snprintf(buf, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                snprintf(buf, size, "%s", colon + 2);
                buf[strcspn(buf, "\n")] = '\0';
            }
            break;
        }
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    const char *json_path = NULL, *script = "bench/pytorch_reference.py";
    int batches = 100, threads = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json_path = argv[++i];
        else if (!strcmp(argv[i], "--pytorch") && i + 1 < argc)
            script = argv[++i];
        else if (!strcmp(argv[i], "--batches") && i + 1 < argc)
            batches = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--batches N] [--threads N] [--json FILE] [--pytorch SCRIPT|none]\n", argv[0]);
            return 2;
        }
    }
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    FILE *json = json_path ? fopen(json_path, "w") : NULL;
    if (json_path && !json) {
        perror(json_path);
        return 1;
    }
    printf("liblenet %s, kernels %s, CPU %s\n", lenet_version_string(), lenet__kernels()->isa, cpu);

    torch_figures torch = {0};
    if (strcmp(script, "none") != 0)
        torch = run_pytorch(script, threads, batches);
    double train1 = train_examples_per_sec(1, batches);
    double trainN = train_examples_per_sec(threads, batches);
    double bn_trainN = bn_train_examples_per_sec(threads, batches);
    double infer = infer_images_per_sec(threads);
    double p50, p99;
    latency(1000, &p50, &p99);
    plan_figures plan_layers, plan_int8, plan = measure_plan(threads, &plan_layers, &plan_int8);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);

    printf("\n%-34s %14s %14s %8s\n", "d2l LeNet, batch 128", "liblenet", "PyTorch", "ratio");
    printf("%-34s %14.0f %14s %8s\n", "train examples/sec, 1 thread", train1, "", "");
    printf("%-34s %14.0f %14s %8s\n", "train examples/CPU-sec, 1 thread", cpu_rate, "", "");
    if (torch.found) {
        printf("%-34s %14.0f %14.0f %7.2fx\n", "train examples/sec, N threads", trainN, torch.train, trainN / torch.train);
        printf("%-34s %14.0f %14.0f %7.2fx\n", "BatchNorm LeNet train ex/s, N thr", bn_trainN, torch.bn_train,
               torch.bn_train > 0 ? bn_trainN / torch.bn_train : 0.0);
        printf("%-34s %14.0f %14.0f %7.2fx\n", "inference images/sec (batch 1000)", infer, torch.infer,
               infer / torch.infer);
        printf("%-34s %14.1f %14.1f %7.2fx\n", "latency batch 1, p50 us", p50, torch.p50, torch.p50 / p50);
        printf("%-34s %14.1f %14.1f %7.2fx\n", "latency batch 1, p99 us", p99, torch.p99, torch.p99 / p99);
    } else {
        printf("%-34s %14.0f %14s\n", "train examples/sec, N threads", trainN, "n/a");
        printf("%-34s %14.0f %14s\n", "BatchNorm LeNet train ex/s, N thr", bn_trainN, "n/a");
        printf("%-34s %14.0f %14s\n", "inference images/sec (batch 1000)", infer, "n/a");
        printf("%-34s %14.1f %14s\n", "latency batch 1, p50 us", p50, "n/a");
        printf("%-34s %14.1f %14s\n", "latency batch 1, p99 us", p99, "n/a");
    }
    /* Ratios are speed-ups: of the chosen float backend over the layers backend, and of int8 over that float plan. */
    printf("\n%-34s %9s %9s %9s %8s %8s\n", "d2l LeNet plan, max_batch 1000", plan.backend, plan_layers.backend,
           "int8", "vs lay.", "int8 vs");
    printf("%-34s %9.1f %9.1f %9.1f %7.2fx %7.2fx\n", "plan latency batch 1, p50 us", plan.p50, plan_layers.p50,
           plan_int8.p50, plan_layers.p50 / plan.p50, plan.p50 / plan_int8.p50);
    printf("%-34s %9.1f %9.1f %9.1f %7.2fx %7.2fx\n", "plan latency batch 1, p99 us", plan.p99, plan_layers.p99,
           plan_int8.p99, plan_layers.p99 / plan.p99, plan.p99 / plan_int8.p99);
    printf("%-34s %9.2f %9.2f %9.2f %7.2fx %7.2fx\n", "plan latency batch 1, CPU p50 us", plan.cpu_p50,
           plan_layers.cpu_p50, plan_int8.cpu_p50, plan_layers.cpu_p50 / plan.cpu_p50,
           plan.cpu_p50 / plan_int8.cpu_p50);
    printf("%-34s %9.0f %9.0f %9.0f %7.2fx %7.2fx\n", "plan images/sec (batch 1000, N ws)", plan.batch_rate,
           plan_layers.batch_rate, plan_int8.batch_rate, plan.batch_rate / plan_layers.batch_rate,
           plan_int8.batch_rate / plan.batch_rate);
    printf("%-34s %9.0f %9.0f %9.0f %7.2fx %7.2fx\n", "plan images/CPU-sec, 1 thread", plan.cpu_rate,
           plan_layers.cpu_rate, plan_int8.cpu_rate, plan.cpu_rate / plan_layers.cpu_rate,
           plan_int8.cpu_rate / plan.cpu_rate);
    printf("%-34s %14.2f\n", "thread scaling (N / 1 thread)", trainN / train1);
    printf("%-34s %14ld\n", "peak RSS of this benchmark, KB", ru.ru_maxrss);
    printf("(N = %d threads; PyTorch %s)\n", threads, torch.found ? "measured in this run" : "not installed");
    if (json)
        fprintf(json,
                "{\n  \"cpu\": \"%s\",\n  \"kernels\": \"%s\",\n  \"threads\": %d,\n"
                "  \"train_examples_per_sec_1_thread\": %.1f,\n  \"train_examples_per_cpu_sec_1_thread\": %.1f,\n"
                "  \"train_examples_per_sec\": %.1f,\n"
                "  \"infer_images_per_sec\": %.1f,\n  \"latency_p50_us\": %.2f,\n  \"latency_p99_us\": %.2f,\n"
                "  \"plan_latency_p50_us\": %.2f,\n  \"plan_latency_p99_us\": %.2f,\n"
                "  \"plan_images_per_sec\": %.1f,\n"
                "  \"plan_backend\": \"%s\",\n  \"plan_cpu_latency_p50_us\": %.2f,\n"
                "  \"plan_images_per_cpu_sec\": %.1f,\n"
                "  \"plan_layers_latency_p50_us\": %.2f,\n  \"plan_layers_cpu_latency_p50_us\": %.2f,\n"
                "  \"plan_layers_images_per_sec\": %.1f,\n  \"plan_layers_images_per_cpu_sec\": %.1f,\n"
                "  \"peak_rss_kb\": %ld,\n  \"pytorch\": {\"train_examples_per_sec\": %.1f, \"infer_images_per_sec\": "
                "%.1f, \"latency_p50_us\": %.2f, \"latency_p99_us\": %.2f},\n",
                cpu, lenet__kernels()->isa, threads, train1, cpu_rate, trainN, infer, p50, p99, plan.p50, plan.p99,
                plan.batch_rate, plan.backend, plan.cpu_p50, plan.cpu_rate, plan_layers.p50, plan_layers.cpu_p50,
                plan_layers.batch_rate, plan_layers.cpu_rate, ru.ru_maxrss, torch.train,
                torch.infer, torch.p50, torch.p99);
    layer_split(stdout, json);
    if (json) {
        fprintf(json, "  \"bn_train_examples_per_sec\": %.1f,\n  \"pytorch_bn_train_examples_per_sec\": %.1f,\n",
                bn_trainN, torch.bn_train);
        fprintf(json,
                "  \"plan_int8_latency_p50_us\": %.2f,\n  \"plan_int8_cpu_latency_p50_us\": %.2f,\n"
                "  \"plan_int8_images_per_sec\": %.1f,\n  \"plan_int8_images_per_cpu_sec\": %.1f,\n",
                plan_int8.p50, plan_int8.cpu_p50, plan_int8.batch_rate, plan_int8.cpu_rate);
        fprintf(json, "  \"ratio_train\": %.3f\n}\n", torch.found ? trainN / torch.train : 0.0);
        fclose(json);
    }
    return 0;
}
