/* Optimizers share one handle type; each kind fills an ops table.  Never installed. */
#ifndef LENET_OPTIM_INTERNAL_H
#define LENET_OPTIM_INTERNAL_H

#include "lenet/optim.h"
#include "model/internal.h"

typedef struct lenet_optimizer_state lenet_optimizer_state;

typedef struct lenet_optimizer_ops {
    const char *name;
    /* Updates the parameters; the model is built. */
    lenet_status (*step)(lenet_optimizer *o);
    void (*destroy)(lenet_optimizer *o);
    /* Describes the state a checkpoint saves and restores (see lenet_optimizer_state below).  With `allocate`,
     * first allocates every buffer the optimizer will use, so a checkpoint can be loaded into it (LENET_ENOMEM;
     * allocating must not change what the next step computes).  NULL: the optimizer has no state beyond
     * lr and steps. */
    lenet_status (*state)(lenet_optimizer *o, bool allocate, lenet_optimizer_state *out);
} lenet_optimizer_ops;

struct lenet_optimizer {
    const lenet_optimizer_ops *ops;
    lenet_model *model; /* borrowed */
    float lr;
    unsigned long long steps;
};

/* Allocates an optimizer state of `size` bytes embedding struct lenet_optimizer first. */
void *lenet__optimizer_alloc(size_t size, const lenet_optimizer_ops *ops, lenet_model *m, float lr);

/* ---- optimizer state for checkpoints (lib/io) ---- */

#define LENET_OPTIM_MAX_STATE 4

/* An optimizer's state besides lr and steps (struct lenet_optimizer), as checkpoints see it. */
struct lenet_optimizer_state {
    /* Hyperparameters fixed at creation ("momentum", "weight_decay"): a checkpoint records them, and loading
     * it into an optimizer created with other values is refused. */
    int n_settings;
    const char *setting_names[LENET_OPTIM_MAX_STATE];
    double settings[LENET_OPTIM_MAX_STATE];
    /* Float buffers laid out like the model's parameter arena (arena_numel floats, tensor t at
     * param_offset[t]); checkpoints store the slices of trainable tensors under
     * "optimizer.<name>.<parameter name>".  A buffer not yet allocated is left out (NULL is never listed).
     * Names follow PyTorch's optimizer.state_dict() keys ("momentum_buffer"). */
    int n_buffers;
    const char *buffer_names[LENET_OPTIM_MAX_STATE];
    float *buffers[LENET_OPTIM_MAX_STATE];
};

#endif /* LENET_OPTIM_INTERNAL_H */
