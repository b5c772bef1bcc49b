/**
 * @file optim.h
 * @brief Optimizers over a model's parameter arena.
 */
#ifndef LENET_OPTIM_H
#define LENET_OPTIM_H

#include <stdint.h>

#include "lenet/data.h"
#include "lenet/export.h"
#include "lenet/loss.h"
#include "lenet/model.h"
#include "lenet/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque optimizer bound to one model. */
typedef struct lenet_optimizer lenet_optimizer;

/**
 * Creates stochastic gradient descent with PyTorch's update rule (torch.optim.SGD, dampening 0, no Nesterov):
 * g = grad + weight_decay * p; with momentum, b = g on the first step and b = momentum * b + g after, g = b;
 * then p -= lr * g.
 *
 * @param m the model, borrowed: it must outlive the optimizer.  It may be unbuilt; state is allocated when
 *          the first step finds it built.
 * @return a new optimizer to free with lenet_optimizer_free(), or NULL (LENET_EINVAL for NULL, a negative or
 *         non-finite lr, momentum or weight_decay; LENET_ENOMEM).
 */
LENET_API lenet_optimizer *lenet_sgd_create(lenet_model *m, float lr, float momentum, float weight_decay);

/**
 * Creates Adam with PyTorch's update rule (torch.optim.Adam of PyTorch 1.13, amsgrad and maximize False), for
 * every trainable parameter p with gradient grad, at step t = 1, 2, ...:
 * g = grad + weight_decay * p (L2 added to the gradient; skipped when weight_decay is 0);
 * m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2  (both start at 0);
 * p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),
 * in PyTorch's order of float operations, with the scalar factors in double as Python computes them, so the
 * parameters match PyTorch's to float rounding for the same float32 hyperparameters.  PyTorch's defaults are
 * lr 1e-3, betas 0.9 and 0.999, eps 1e-8, weight_decay 0.  Checkpoints save m and v as PyTorch's state names
 * "exp_avg" and "exp_avg_sq", and the step count t.
 *
 * @param m the model, borrowed: it must outlive the optimizer.  It may be unbuilt; m and v are allocated (zero)
 *          when the first step finds it built.
 * @return a new optimizer to free with lenet_optimizer_free(), or NULL: LENET_EINVAL for a NULL model, an lr,
 *         eps or weight_decay that is negative or not finite, a beta outside [0, 1) (PyTorch's checks, and NaN
 *         refused); LENET_ENOMEM.
 */
LENET_API lenet_optimizer *lenet_adam_create(lenet_model *m, float lr, float beta1, float beta2, float eps,
                                             float weight_decay);

/**
 * Creates AdamW (torch.optim.AdamW of PyTorch 1.13, amsgrad and maximize False): Adam with decoupled weight
 * decay, p *= 1 - lr * weight_decay before each update, then the update of lenet_adam_create() on the gradient
 * without the L2 term.  PyTorch's default weight_decay is 1e-2.  Arguments, ownership and errors as
 * lenet_adam_create(); checkpoints record the kind "AdamW".
 */
LENET_API lenet_optimizer *lenet_adamw_create(lenet_model *m, float lr, float beta1, float beta2, float eps,
                                              float weight_decay);

/**
 * Updates the model's parameters from its gradients.  With a schedule, the step first sets the learning rate
 * the schedule gives for the steps (or epochs) counted so far.
 * @return LENET_OK; LENET_EINVAL; LENET_ESTATE if the model is not built; LENET_ENOMEM on the first step;
 *         LENET_ENUMERIC if the schedule's learning rate overflows a float (nothing is changed then).
 */
LENET_API lenet_status lenet_optimizer_step(lenet_optimizer *o);

/** Zeroes the gradients of the optimizer's model (as lenet_model_zero_grad()). */
LENET_API lenet_status lenet_optimizer_zero_grad(lenet_optimizer *o);

/**
 * Sets the learning rate for the following steps.  With a schedule attached, sets the base learning rate that
 * the schedule scales (so the next step uses the schedule's value for it).
 * @return LENET_EINVAL for NULL or a negative or non-finite lr (the old one stays).
 */
LENET_API lenet_status lenet_optimizer_set_lr(lenet_optimizer *o, float lr);

/**
 * Returns the learning rate the next step will use (with a schedule: its value for the steps or epochs counted
 * so far), or 0 for NULL.
 */
LENET_API float lenet_optimizer_lr(const lenet_optimizer *o);

/**
 * Returns the number of steps taken: successful lenet_optimizer_step() calls, less any that lenet_train_epoch()
 * rolled back; restored by lenet_checkpoint_load().  0 for NULL.
 */
LENET_API uint64_t lenet_optimizer_step_count(const lenet_optimizer *o);

/**
 * Returns the number of complete training passes: lenet_train_epoch() and lenet_train_epoch_with() count one
 * at the end of each pass that returns LENET_OK (a pass that fails is not counted); lenet_evaluate() counts
 * nothing.  Checkpoints save and restore it, as the step count.  0 for NULL.
 */
LENET_API uint64_t lenet_optimizer_epoch_count(const lenet_optimizer *o);

/** Frees the optimizer and its state (not the model).  Harmless on NULL. */
LENET_API void lenet_optimizer_free(lenet_optimizer *o);

/* ---- learning-rate schedules ---- */

/**
 * An opaque learning-rate schedule: a rule giving the learning rate after `count` steps or epochs from a base
 * learning rate, as PyTorch's torch.optim.lr_scheduler classes in their closed forms.  Made by one of the
 * constructors below, then attached to an optimizer with lenet_optimizer_set_schedule() (which owns it from
 * then on) or freed with lenet_schedule_free().
 */
typedef struct lenet_schedule lenet_schedule;

/** What a schedule counts. */
typedef enum lenet_schedule_unit {
    LENET_SCHEDULE_PER_STEP = 0, /**< optimizer steps: PyTorch's scheduler.step() after every optimizer.step() */
    LENET_SCHEDULE_PER_EPOCH = 1 /**< complete training passes of lenet_train_epoch(): scheduler.step() per epoch */
} lenet_schedule_unit;

/** Creates the constant schedule: lr = base_lr.  @return NULL only on LENET_ENOMEM. */
LENET_API lenet_schedule *lenet_schedule_constant(void);

/**
 * Creates a step decay (torch.optim.lr_scheduler.StepLR): lr = base_lr * gamma^floor(count / step_size).
 * @return a schedule, or NULL: LENET_EINVAL for step_size < 1 or a negative or non-finite gamma; LENET_ENOMEM.
 */
LENET_API lenet_schedule *lenet_schedule_step(int step_size, float gamma);

/**
 * Creates cosine annealing (torch.optim.lr_scheduler.CosineAnnealingLR, its closed form):
 * lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * count / t_max)) / 2, so lr falls from base_lr at count 0 to
 * eta_min at count t_max, and rises again after it as PyTorch's does (there are no restarts).
 * @return a schedule, or NULL: LENET_EINVAL for t_max < 1 or a negative or non-finite eta_min; LENET_ENOMEM.
 */
LENET_API lenet_schedule *lenet_schedule_cosine(int t_max, float eta_min);

/**
 * Creates a linear warm-up followed by @p then: lr = base_lr * (count + 1) / warmup for count < warmup (from
 * base_lr / warmup up to base_lr), then the lr of @p then for count - warmup.  In PyTorch terms,
 * SequentialLR([LinearLR(start_factor=1/warmup, total_iters=warmup-1), then], milestones=[warmup]).  Use
 * lenet_schedule_constant() as @p then to stay at base_lr after the warm-up.
 *
 * Takes ownership of @p then, also on failure.  @p then may be NULL (its constructor failed): the call then
 * returns NULL and keeps that constructor's error, so lenet_schedule_warmup(5, lenet_schedule_cosine(...)) needs
 * one check.
 * @return a schedule, or NULL: LENET_EINVAL for warmup < 1 or a @p then that is itself a warm-up; LENET_ENOMEM;
 *         the error of @p then's constructor.
 */
LENET_API lenet_schedule *lenet_schedule_warmup(int warmup, lenet_schedule *then);

/**
 * Returns the learning rate schedule @p s gives for @p base_lr after @p count steps or epochs (count 0: the first
 * step or epoch), computed in double and rounded to float; 0 for a NULL schedule.  Reads @p s only.
 */
LENET_API float lenet_schedule_lr(const lenet_schedule *s, float base_lr, uint64_t count);

/** Frees a schedule that was never attached to an optimizer.  Harmless on NULL. */
LENET_API void lenet_schedule_free(lenet_schedule *s);

/**
 * Attaches a learning-rate schedule: before every step, the optimizer sets its learning rate to the schedule's
 * value for the base learning rate (the optimizer's lr now; lenet_optimizer_set_lr() changes it later) and the
 * number of steps taken (LENET_SCHEDULE_PER_STEP) or of training passes completed by lenet_train_epoch()
 * (LENET_SCHEDULE_PER_EPOCH), as a PyTorch scheduler made together with its optimizer.  Attach it before the
 * first step, and before lenet_checkpoint_load() when resuming: a checkpoint records the schedule and refuses to
 * load into an optimizer with another schedule or none.
 *
 * Takes ownership of @p s, also on failure (a NULL @p s, from a failed constructor, returns that constructor's
 * error).
 * @return LENET_OK; LENET_EINVAL for a NULL optimizer or schedule or an unknown unit; LENET_ESTATE if the
 *         optimizer already has a schedule or has taken a step or counted an epoch.
 */
LENET_API lenet_status lenet_optimizer_set_schedule(lenet_optimizer *o, lenet_schedule *s, lenet_schedule_unit unit);

#ifdef __cplusplus
}
#endif

#endif /* LENET_OPTIM_H */
