/* The sequential model's state, shared with the optimizers, the training loop and checkpoints.
 * Never installed. */
#ifndef LENET_MODEL_INTERNAL_H
#define LENET_MODEL_INTERNAL_H

#include "layers/layer.h"
#include "lenet/model.h"

#define LENET_PARAM_NAME_SIZE 48

struct lenet_model {
    lenet_layer **layers;
    size_t n_layers, layers_cap;

    bool built;
    lenet_shape in_shape;   /* per sample */
    size_t max_size;        /* largest per-sample activation, input included */

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

/* Makes sure the training buffers hold `batch` samples. */
lenet_status lenet__model_reserve(lenet_model *m, int batch);
/* Checks that x is (N, C, H, W) of the built input shape and returns N; builds an unbuilt model from x. */
lenet_status lenet__model_check_input(lenet_model *m, const lenet_tensor *x, const char *who, int *batch);
/* Forward over raw input already copied into m->acts[0] for `batch` samples. */
void lenet__model_forward_raw(lenet_model *m, int batch);
/* Backward from the gradient of the output (batch * out_size floats). */
void lenet__model_backward_raw(lenet_model *m, const float *dy);
size_t lenet__model_out_size(const lenet_model *m);

#endif /* LENET_MODEL_INTERNAL_H */
