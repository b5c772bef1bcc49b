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

#ifdef __cplusplus
}
#endif

#endif /* LENET_LOSS_H */
