/* Inference plans' internals: a plan is the folded evaluation-only network (the reference every backend is built
 * from and checked against) plus a backend that runs it.  Never installed. */
#ifndef LENET_PLAN_INTERNAL_H
#define LENET_PLAN_INTERNAL_H

#include "lenet/plan.h"
#include "model/internal.h"

struct lenet_st_writer;
struct lenet_st_file;

typedef struct lenet_plan_backend {
    const char *name; /* "layers", ... */
    /* Bytes of workspace `run` needs for batches up to p->max_batch, 64-byte aligned by the caller. */
    size_t (*workspace)(const lenet_plan *p);
    /* y = the network on `batch` samples of x (already checked against the plan), on the calling thread, writing
     * only y and the workspace; allocates nothing. */
    void (*run)(const lenet_plan *p, int batch, const float *x, float *y, void *workspace);
    /* Frees p->impl. */
    void (*destroy)(void *impl);
    /* Plan files (plan_io.c): the kind a file records for the backend's plans ("float" when NULL), and what the
     * backend adds to the file besides the network and the plan's metadata (NULL: nothing). */
    const char *file_kind;
    lenet_status (*save)(const lenet_plan *p, struct lenet_st_writer *w);
} lenet_plan_backend;

struct lenet_plan {
    lenet_model *net; /* built, evaluation mode, never trained: BatchNorm folded, Dropout left out */
    int max_batch;
    const lenet_plan_backend *backend;
    void *impl;       /* the backend's own state (packed weights), NULL for the layers backend */
};

/* Runs the plan's network through the layers' own forward ops, chunk by chunk: every network, no packing. */
extern const lenet_plan_backend lenet__plan_layers;

/* Runs networks made only of Conv2d (stride 1), Sigmoid, ReLU, Tanh, AvgPool2d, MaxPool2d, Flatten and Linear
 * through the fused kernels (lib/kernels/fused.h): each convolution with its activation and pooling in one pass,
 * batches with a sample per lane from input to output, single images with outputs across the lanes. */
extern const lenet_plan_backend lenet__plan_fused;

/* Moves a plan whose network the fused backend runs onto it, with its packed weights in p->impl; leaves any other
 * plan on the layers backend.  Returns LENET_OK either way, or LENET_ENOMEM (the plan unchanged). */
lenet_status lenet__plan_use_fused(lenet_plan *p);

/* Integer plans (plan_int8.c): TFLite's int8 arithmetic over the folded network. */
extern const lenet_plan_backend lenet__plan_int8;
/* Turns a float plan made from a plan file's network into the int8 plan the file records (lenet_plan_load): the
 * quantized numbers are read from the file, checked, and nothing is calibrated.  On failure the plan is unchanged. */
lenet_status lenet__plan_int8_load(lenet_plan *p, const struct lenet_st_file *f);

#endif /* LENET_PLAN_INTERNAL_H */
