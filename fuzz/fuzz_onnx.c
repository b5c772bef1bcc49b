/* Fuzzes the ONNX importer (lenet_model_import_onnx: a protobuf ModelProto walked as a chain of layers): the input
 * is one .onnx file.  A failure must be a negative status with a message, never LENET_ENOMEM for a small file.
 * A model that imports must be built, run (predict on a batch of 2 when its activations are small), export to
 * ONNX, and import again to the same parameters and buffers bit for bit, computing the same outputs bit for bit.
 *
 * Seeds (fuzz/corpus/onnx/): liblenet's exports of small networks that use every layer kind (LeNet-5's
 * PartialConv2d, Subsampling, ScaledTanh and EuclideanRBF patterns, BatchNorm, pools, Linear), a one-node Relu
 * graph, and torch.onnx.export's files of a small Conv/BatchNorm/AvgPool/Linear network (Constant and Pad nodes,
 * Gemm, BatchNormalization), fused and unfused. */
#include <lenet/io.h>
#include <lenet/lenet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h" /* lenet__last_status(): which error a NULL import stands for */
#include "fuzz_common.h"
#include "model/internal.h"

#ifndef FUZZ_CHECK
#include <stdio.h>
/* Crashes (so the fuzzer reports it) when the library breaks its contract. */
#define FUZZ_CHECK(cond)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond, lenet_last_error()); \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)
#endif

/* A model whose largest per-sample activation is at most this many floats is run. */
#define CHEAP_SAMPLE (1u << 16)

/* All parameters and buffers (but int64 counts, which ONNX does not hold), one after the other, in a new array. */
static float *copy_state(const lenet_model *m, size_t *count)
{
    *count = 0;
    for (size_t i = 0; i < m->n_params; i++)
        *count += m->param_tensors[i].numel;
    for (size_t i = 0; i < m->n_buffers; i++)
        *count += m->buffer_int64[i] ? 0 : m->buffer_tensors[i].numel;
    float *copy = malloc((*count ? *count : 1) * sizeof *copy), *at = copy;
    FUZZ_CHECK(copy);
    for (size_t i = 0; i < m->n_params; i++) {
        memcpy(at, m->param_tensors[i].data, m->param_tensors[i].numel * sizeof *at);
        at += m->param_tensors[i].numel;
    }
    for (size_t i = 0; i < m->n_buffers; i++) {
        if (m->buffer_int64[i])
            continue;
        memcpy(at, m->buffer_tensors[i].data, m->buffer_tensors[i].numel * sizeof *at);
        at += m->buffer_tensors[i].numel;
    }
    return copy;
}

/* Outputs for a fixed batch of 2, or NULL when the model's activations are large. */
static float *outputs(const lenet_model *m, size_t *count)
{
    if (m->max_size > CHEAP_SAMPLE)
        return NULL;
    int c, h, w;
    FUZZ_CHECK(lenet_model_input_shape(m, &c, &h, &w) == LENET_OK);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){2, c, h, w});
    const lenet_shape *last = &m->layers[m->n_layers - 1]->out;
    int dims[1 + LENET_MAX_SAMPLE_DIMS] = {2};
    for (int d = 0; d < last->ndim; d++)
        dims[1 + d] = last->dim[d];
    lenet_tensor *y = lenet_tensor_create(1 + last->ndim, dims);
    FUZZ_CHECK(x && y);
    float *data = lenet_tensor_data(x);
    for (size_t i = 0; i < lenet_tensor_numel(x); i++)
        data[i] = (float)(i % 17) / 8.0f - 1.0f;
    FUZZ_CHECK(lenet_model_predict(m, x, y) == LENET_OK);
    *count = lenet_tensor_numel(y);
    float *copy = malloc(*count * sizeof *copy);
    FUZZ_CHECK(copy);
    memcpy(copy, lenet_tensor_cdata(y), *count * sizeof *copy);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    return copy;
}

static void exercise_imported(lenet_model *m)
{
    FUZZ_CHECK(lenet_model_is_built(m));
    FUZZ_CHECK(lenet_model_layer_count(m) >= 1);
    size_t n_out = 0;
    float *out = outputs(m, &n_out);

    const char *path = fuzz_write_file(1, "", 0);
    FUZZ_CHECK(path);
    lenet_status st = lenet_model_export_onnx(m, path);
    FUZZ_CHECK(st == LENET_OK);
    lenet_model *again = lenet_model_import_onnx(path);
    FUZZ_CHECK(again);
    size_t count, count_again;
    float *state = copy_state(m, &count), *state_again = copy_state(again, &count_again);
    FUZZ_CHECK(count == count_again && memcmp(state, state_again, count * sizeof *state) == 0);
    if (out) {
        size_t n_again;
        float *out_again = outputs(again, &n_again);
        FUZZ_CHECK(out_again && n_again == n_out && memcmp(out, out_again, n_out * sizeof *out) == 0);
        free(out_again);
    }
    free(state);
    free(state_again);
    free(out);
    lenet_model_free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_file(0, data, size);
    if (!path)
        return 0;
    lenet_error_clear();
    lenet_model *m = lenet_model_import_onnx(path);
    if (m) {
        exercise_imported(m);
        lenet_model_free(m);
    } else {
        lenet_status st = lenet__last_status();
        FUZZ_CHECK(st < 0 && lenet_last_error()[0]);
        FUZZ_CHECK(st != LENET_ENOMEM || size > FUZZ_MAX_INPUT);
    }
    return 0;
}
