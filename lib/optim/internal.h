/* Optimizers share one handle type; each kind fills an ops table.  Never installed. */
#ifndef LENET_OPTIM_INTERNAL_H
#define LENET_OPTIM_INTERNAL_H

#include <float.h>
#include <math.h>

#include "lenet/optim.h"
#include "lenet/lenet5.h"
#include "model/internal.h"

typedef struct lenet_optimizer_state lenet_optimizer_state;

typedef struct lenet_optimizer_ops {
    const char *name;
    /* Updates the parameters with o->lr (already set from the schedule, if any); the model is built.  o->steps
     * counts the steps before this one. */
    lenet_status (*step)(lenet_optimizer *o);
    void (*destroy)(lenet_optimizer *o);
    /* Checkpoints (lib/io).  state describes what a checkpoint saves and restores besides lr, steps and epochs
     * (see lenet_optimizer_state below): it only reads the optimizer, and ends with lenet__schedule_settings() so
     * that the schedule is part of every kind's settings.  adopt replaces buffer `buffer` (an index into state's
     * list) with `data`, taking ownership: an arena-sized lenet__malloc_aligned block holding the checkpoint's
     * values, or NULL to go back to "not allocated yet" (the state of a fresh optimizer); it frees the old block
     * and cannot fail.  Both NULL: the optimizer has no state beyond lr, steps and epochs (and then no schedule
     * settings either: every kind in lib/optim has both). */
    lenet_status (*state)(const lenet_optimizer *o, lenet_optimizer_state *out);
    void (*adopt)(lenet_optimizer *o, int buffer, float *data);
} lenet_optimizer_ops;

struct lenet_optimizer {
    const lenet_optimizer_ops *ops;
    lenet_model *model; /* borrowed */
    /* The learning rate of the next step.  With a schedule it is derived (lenet__optimizer_scheduled_lr()) and
     * set again before every step, so a value restored from a checkpoint is only a record. */
    float lr;
    /* Steps taken (successful lenet_optimizer_step() calls).  Checkpoints save and restore it; lenet_train_epoch()
     * puts it back when it rolls a step back. */
    unsigned long long steps;
    /* Complete training passes: lenet__optimizer_end_epoch() adds one at the end of every successful
     * lenet_train_epoch() / lenet_train_epoch_with().  Checkpoints must save and restore it like `steps` (a
     * per-epoch schedule reads it); a step does not change it, so a rollback needs not touch it. */
    unsigned long long epochs;
    /* The learning-rate schedule (owned; NULL: lr stays as set), what it counts, and the lr it scales: the
     * optimizer's lr when it was attached, or the last lenet_optimizer_set_lr().  All three are part of every
     * kind's checkpoint settings (lenet__schedule_settings()). */
    lenet_schedule *schedule;
    lenet_schedule_unit schedule_unit;
    float base_lr;
};

/* Allocates an optimizer state of `size` bytes embedding struct lenet_optimizer first. */
void *lenet__optimizer_alloc(size_t size, const lenet_optimizer_ops *ops, lenet_model *m, float lr);

/* Called by the training loop (lib/train) after a complete, successful training pass: counts the epoch, which
 * moves a per-epoch schedule on.  Cannot fail. */
void lenet__optimizer_end_epoch(lenet_optimizer *o);

/* The learning rate the schedule gives for the optimizer's current count of steps or epochs (as double, before
 * rounding to float); o->lr without a schedule. */
double lenet__optimizer_scheduled_lr(const lenet_optimizer *o);

/* A schedule's double lr as a float, infinity beyond FLT_MAX (where the conversion itself is undefined). */
static inline float lenet__lr_float(double lr)
{
    return lr > FLT_MAX ? INFINITY : (float)lr;
}

/* ---- optimizer state for checkpoints (lib/io) ---- */

#define LENET_OPTIM_MAX_STATE 4     /* buffers */
#define LENET_OPTIM_MAX_SETTINGS 12 /* a kind's own (at most 4) and a schedule's (at most 6) */

/* An optimizer's state besides lr, steps and epochs (struct lenet_optimizer), as checkpoints see it. */
struct lenet_optimizer_state {
    /* Hyperparameters fixed at creation ("momentum", "weight_decay", Adam's "beta1", ...) and the schedule
     * ("schedule_unit", "schedule_base_lr", "schedule_kind", ..., none without one): a checkpoint records them,
     * and loading it into an optimizer created with other values (or another schedule, or none) is refused. */
    int n_settings;
    const char *setting_names[LENET_OPTIM_MAX_SETTINGS];
    double settings[LENET_OPTIM_MAX_SETTINGS];
    /* Every float buffer the optimizer uses, laid out like the model's parameter arena (arena_numel floats,
     * tensor t at param_offset[t]), NULL while not allocated yet; checkpoints store the slices of trainable
     * tensors of the allocated ones under "optimizer.<name>.<parameter name>".  Names follow PyTorch's
     * optimizer.state_dict() keys ("momentum_buffer", "exp_avg", "exp_avg_sq"). */
    int n_buffers;
    const char *buffer_names[LENET_OPTIM_MAX_STATE];
    const float *buffers[LENET_OPTIM_MAX_STATE];
};

/* Appends the schedule's settings (nothing without a schedule) to a kind's state; every state function calls it
 * last. */
void lenet__schedule_settings(const lenet_optimizer *o, lenet_optimizer_state *out);

/* ---- schedules (schedule.c) ---- */

/* The learning rate `s` gives for `base_lr` after `count` steps or epochs, in double. */
double lenet__schedule_lr(const lenet_schedule *s, double base_lr, unsigned long long count);

#endif /* LENET_OPTIM_INTERNAL_H */
