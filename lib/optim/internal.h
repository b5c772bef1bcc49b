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
    /* Checkpoints (lib/io).  state describes what a checkpoint saves and restores besides lr and steps (see
     * lenet_optimizer_state below): it only reads the optimizer.  adopt replaces buffer `buffer` (an index into
     * state's list) with `data`, taking ownership: an arena-sized lenet__malloc_aligned block holding the
     * checkpoint's values, or NULL to go back to "not allocated yet" (the state of a fresh optimizer); it frees
     * the old block and cannot fail.  Both NULL: the optimizer has no state beyond lr and steps. */
    lenet_status (*state)(const lenet_optimizer *o, lenet_optimizer_state *out);
    void (*adopt)(lenet_optimizer *o, int buffer, float *data);
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
    /* Every float buffer the optimizer uses, laid out like the model's parameter arena (arena_numel floats,
     * tensor t at param_offset[t]), NULL while not allocated yet; checkpoints store the slices of trainable
     * tensors of the allocated ones under "optimizer.<name>.<parameter name>".  Names follow PyTorch's
     * optimizer.state_dict() keys ("momentum_buffer", "exp_avg", "exp_avg_sq"). */
    int n_buffers;
    const char *buffer_names[LENET_OPTIM_MAX_STATE];
    const float *buffers[LENET_OPTIM_MAX_STATE];
};

#endif /* LENET_OPTIM_INTERNAL_H */
