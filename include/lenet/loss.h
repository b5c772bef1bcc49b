/**
 * @file loss.h
 * @brief Loss functions.
 */
#ifndef LENET_LOSS_H
#define LENET_LOSS_H

#include <stdint.h>

#include "lenet/export.h"
#include "lenet/status.h"
#include "lenet/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Softmax cross-entropy, the mean over the batch (PyTorch nn.CrossEntropyLoss()), computed stably for
 * logits of any magnitude (log-sum-exp shifted by the row maximum).
 *
 * @param logits  (N, K) scores
 * @param labels  N class indices in [0, K), borrowed
 * @param loss    receives the mean loss
 * @param dlogits if not NULL, a caller-owned (N, K) tensor that receives d loss / d logits = (softmax - onehot) / N
 * @return LENET_OK; LENET_EINVAL for NULL or a label out of range (naming the sample); LENET_ESHAPE if logits
 *         is not 2-D or dlogits differs in shape; LENET_ENUMERIC if a logit or the loss is NaN or infinite
 *         (loss and dlogits are then not written).
 */
LENET_API lenet_status lenet_cross_entropy(const lenet_tensor *logits, const int32_t *labels, float *loss,
                                           lenet_tensor *dlogits);

/* ---- LeNet-5 (LeCun et al. 1998): criteria over RBF penalties ---- */

/**
 * The criteria for a network whose outputs are penalties y (smaller is better), such as lenet_rbf() units.
 */
typedef enum lenet_rbf_criterion {
    /** The paper's MAP criterion (eq. 9): E = mean_p [ y_{D_p} + log(e^{-j} + sum_i e^{-y_i}) ]. */
    LENET_RBF_CRITERION_MAP = 0,
    /** The plain mean-squared criterion (eq. 8): E = mean_p y_{D_p}, the squared distance to the right centre. */
    LENET_RBF_CRITERION_MSE = 1
} lenet_rbf_criterion;

/** The constant j of the MAP criterion that the liblenet examples use (the paper gives none; 3 beat 0.1 and 10 on
 * MNIST, see docs/lenet5.md). */
#define LENET_MAP_J_DEFAULT 3.0f

/**
 * Evaluates an RBF criterion over a batch of penalties, its gradient and the diagonal of its Hessian, all as
 * means over the batch.  Computed stably (log-sum-exp shifted by the smallest exponent) for penalties of any size.
 *
 * @param y      (N, K) penalties
 * @param labels N class indices in [0, K), borrowed
 * @param criterion LENET_RBF_CRITERION_MAP or LENET_RBF_CRITERION_MSE
 * @param j      the MAP constant (ignored for MSE); finite
 * @param loss   receives the mean loss (may be NULL)
 * @param dy     if not NULL, a caller-owned (N, K) tensor receiving dE/dy: MAP (onehot - q) / N with
 *               q_i = e^{-y_i} / (e^{-j} + sum_k e^{-y_k}); MSE onehot / N
 * @param hy     if not NULL, a caller-owned (N, K) tensor receiving the diagonal d2E/dy_i^2 (what
 *               lenet_model_backward_gn() takes): MAP q_i (1 - q_i) / N; MSE 0
 * @return LENET_OK; LENET_EINVAL for NULL y or labels, an unknown criterion, a non-finite j or a label out of
 *         range; LENET_ESHAPE if y is not 2-D or dy/hy differ in shape; LENET_ENUMERIC for a NaN or infinite
 *         penalty (nothing is written then).
 */
LENET_API lenet_status lenet_rbf_loss(const lenet_tensor *y, const int32_t *labels, lenet_rbf_criterion criterion,
                                      float j, float *loss, lenet_tensor *dy, lenet_tensor *hy);

/** The MAP criterion: lenet_rbf_loss() with LENET_RBF_CRITERION_MAP and no Hessian. */
LENET_API lenet_status lenet_map_loss(const lenet_tensor *y, const int32_t *labels, float j, float *loss,
                                      lenet_tensor *dy);

/** The mean-squared criterion: lenet_rbf_loss() with LENET_RBF_CRITERION_MSE and no Hessian. */
LENET_API lenet_status lenet_rbf_mse_loss(const lenet_tensor *y, const int32_t *labels, float *loss,
                                          lenet_tensor *dy);

#ifdef __cplusplus
}
#endif

#endif /* LENET_LOSS_H */
