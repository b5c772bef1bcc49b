/**
 * @file optim.h
 * @brief Optimizers over a model's parameter arena.
 */
#ifndef LENET_OPTIM_H
#define LENET_OPTIM_H

#include "lenet/export.h"
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
 * Updates the model's parameters from its gradients.
 * @return LENET_OK; LENET_EINVAL; LENET_ESTATE if the model is not built; LENET_ENOMEM on the first step.
 */
LENET_API lenet_status lenet_optimizer_step(lenet_optimizer *o);

/** Zeroes the gradients of the optimizer's model (as lenet_model_zero_grad()). */
LENET_API lenet_status lenet_optimizer_zero_grad(lenet_optimizer *o);

/** Sets the learning rate for the following steps.  @return LENET_EINVAL for NULL or a negative or NaN lr. */
LENET_API lenet_status lenet_optimizer_set_lr(lenet_optimizer *o, float lr);

/** Returns the current learning rate, or 0 for NULL. */
LENET_API float lenet_optimizer_lr(const lenet_optimizer *o);

/** Frees the optimizer and its state (not the model).  Harmless on NULL. */
LENET_API void lenet_optimizer_free(lenet_optimizer *o);

#ifdef __cplusplus
}
#endif

#endif /* LENET_OPTIM_H */
