/* Fuzzes the plan reader (lenet_plan_load: a safetensors file holding a folded network, the plan's metadata and,
 * for int8 plans, the quantization: weights, scales, zero points, multipliers, shifts and tables).  The input is
 * one plan file.  A failure must be a negative status with a message, never LENET_ENOMEM for a small file.  A plan
 * that loads must tell its workspace size and largest batch, run a batch of 1 and of up to 3 samples in exactly
 * that workspace (ASan sees any byte written past it), refuse a workspace one byte short and a batch over its
 * largest, and save and load again to a plan that computes the same outputs bit for bit.
 *
 * Seeds (fuzz/corpus/plan/, written by make_plan_corpus): float and int8 plans of small networks that use every
 * layer kind a plan holds, BatchNorm folded and not, with and without LeNet-5's layers. */
#include <lenet/io.h>
#include <lenet/lenet.h>
#include <lenet/plan.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h" /* lenet__last_status(): which error a NULL load stands for */
#include "fuzz_common.h"
#include "model/internal.h" /* the output shape of the network a plan runs */

/* A plan whose input and output rows are at most this many floats, and whose workspace at most this many bytes,
 * is run: a file may describe a network too large to run a million times. */
#define CHEAP_SAMPLE (1u << 14)
#define CHEAP_WORKSPACE (64u << 20)

/* A tensor of n samples of the network's output shape. */
static lenet_tensor *output_tensor(const lenet_model *net, int n)
{
    const lenet_shape *last = &net->layers[net->n_layers - 1]->out;
    int dims[1 + LENET_MAX_SAMPLE_DIMS] = {n};
    for (int d = 0; d < last->ndim; d++)
        dims[1 + d] = last->dim[d];
    return lenet_tensor_create(1 + last->ndim, dims);
}

/* Runs p on n samples of a fixed pattern into a new array of n * outputs floats, or NULL when it is refused. */
static float *run(const lenet_plan *p, const lenet_model *net, int n, size_t *count)
{
    int c, h, w;
    FUZZ_CHECK(lenet_model_input_shape(net, &c, &h, &w) == LENET_OK);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){n, c, h, w});
    lenet_tensor *y = output_tensor(net, n);
    FUZZ_CHECK(x && y);
    float *data = lenet_tensor_data(x);
    for (size_t i = 0; i < lenet_tensor_numel(x); i++)
        data[i] = (float)(i % 13) / 6.0f - 1.0f;
    const size_t size = lenet_plan_workspace_size(p);
    /* Exactly the size asked for, so that a write past it is a heap overflow ASan reports. */
    void *work = malloc(size ? size : 1);
    FUZZ_CHECK(work);
    float *out = NULL;
    if (lenet_plan_run(p, work, size, x, y) == LENET_OK) {
        *count = lenet_tensor_numel(y);
        out = malloc(*count * sizeof *out);
        FUZZ_CHECK(out);
        memcpy(out, lenet_tensor_cdata(y), *count * sizeof *out);
        /* The same call one byte short: refused. */
        if (size > 0)
            FUZZ_CHECK(lenet_plan_run(p, work, size - 1, x, y) == LENET_EINVAL);
    } else {
        FUZZ_CHECK(lenet__last_status() < 0 && lenet_last_error()[0]);
    }
    free(work);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    return out;
}

static void exercise(const lenet_plan *p, const char *path)
{
    const int max_batch = lenet_plan_max_batch(p);
    FUZZ_CHECK(max_batch >= 1);
    /* A plan file is also a model file: the network the plan runs, which gives the shapes to run it on. */
    lenet_model *net = lenet_model_load(path);
    FUZZ_CHECK(net);
    int c, h, w;
    FUZZ_CHECK(lenet_model_input_shape(net, &c, &h, &w) == LENET_OK);
    const size_t in = (size_t)c * h * w, k = lenet_model_output_size(net);
    if (in > CHEAP_SAMPLE || k > CHEAP_SAMPLE || lenet_plan_workspace_size(p) > CHEAP_WORKSPACE) {
        lenet_model_free(net);
        return;
    }
    const int n = max_batch < 3 ? max_batch : 3;
    size_t count = 0, count_one = 0;
    float *one = run(p, net, 1, &count_one);
    float *out = run(p, net, n, &count);

    /* Over the largest batch: refused, nothing written. */
    if (max_batch < 64) {
        lenet_tensor *x = lenet_tensor_create(4, (int[]){max_batch + 1, c, h, w});
        lenet_tensor *y = output_tensor(net, max_batch + 1);
        FUZZ_CHECK(x && y);
        const size_t size = lenet_plan_workspace_size(p);
        void *work = malloc(size ? size : 1);
        FUZZ_CHECK(work);
        FUZZ_CHECK(lenet_plan_run(p, work, size, x, y) == LENET_ESHAPE);
        free(work);
        lenet_tensor_free(x);
        lenet_tensor_free(y);
    }

    /* Saved and loaded again: the same plan, the same outputs. */
    const char *again_path = fuzz_write_file(1, "", 0);
    FUZZ_CHECK(again_path);
    FUZZ_CHECK(lenet_plan_save(p, again_path) == LENET_OK);
    lenet_plan *again = lenet_plan_load(again_path);
    FUZZ_CHECK(again);
    FUZZ_CHECK(lenet_plan_max_batch(again) == max_batch);
    FUZZ_CHECK(lenet_plan_workspace_size(again) == lenet_plan_workspace_size(p));
    size_t count_again = 0;
    float *out_again = run(again, net, n, &count_again);
    FUZZ_CHECK((out == NULL) == (out_again == NULL));
    if (out) {
        FUZZ_CHECK(count_again == count);
        /* NaN outputs (a file may hold NaN weights) compare by their bits too. */
        FUZZ_CHECK(memcmp(out, out_again, count * sizeof *out) == 0);
    }
    free(out_again);
    lenet_plan_free(again);
    free(one);
    free(out);
    lenet_model_free(net);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_file(0, data, size);
    if (!path)
        return 0;
    lenet_error_clear();
    lenet_plan *p = lenet_plan_load(path);
    if (p) {
        exercise(p, path);
        lenet_plan_free(p);
    } else {
        lenet_status st = lenet__last_status();
        FUZZ_CHECK(st < 0 && lenet_last_error()[0]);
        FUZZ_CHECK(st != LENET_ENOMEM || size > FUZZ_MAX_INPUT);
    }
    return 0;
}
