/* Inference plans' internals: a plan is the folded evaluation-only network (the reference every backend is built
 * from and checked against) plus a backend that runs it.  Never installed. */
#ifndef LENET_PLAN_INTERNAL_H
#define LENET_PLAN_INTERNAL_H

#include "lenet/plan.h"
#include "model/internal.h"

typedef struct lenet_plan_backend {
    const char *name; /* "layers", ... */
    /* Bytes of workspace `run` needs for batches up to p->max_batch, 64-byte aligned by the caller. */
    size_t (*workspace)(const lenet_plan *p);
    /* y = the network on `batch` samples of x (already checked against the plan), on the calling thread, writing
     * only y and the workspace; allocates nothing. */
    void (*run)(const lenet_plan *p, int batch, const float *x, float *y, void *workspace);
    /* Frees p->impl. */
    void (*destroy)(void *impl);
} lenet_plan_backend;

struct lenet_plan {
    lenet_model *net; /* built, evaluation mode, never trained: BatchNorm folded, Dropout left out */
    int max_batch;
    const lenet_plan_backend *backend;
    void *impl;       /* the backend's own state (packed weights), NULL for the layers backend */
};

/* Runs the plan's network through the layers' own forward ops, chunk by chunk: every network, no packing. */
extern const lenet_plan_backend lenet__plan_layers;

#endif /* LENET_PLAN_INTERNAL_H */
