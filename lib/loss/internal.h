/* Losses' internals shared with the training loop.  Never installed. */
#ifndef LENET_LOSS_INTERNAL_H
#define LENET_LOSS_INTERNAL_H

#include <stdint.h>

#include "lenet/status.h"
#include "lenet/tensor.h"

/* Softmax cross-entropy of the rows [begin, end) of a batch whose loss is a mean over `divisor` samples, for a
 * process that holds only those rows (data-parallel training): terms[i - begin] receives sample i's loss before the
 * division, and rows [begin, end) of dlogits (unless NULL) (softmax - onehot) / divisor.  The batch's loss is the sum
 * of every sample's term, in sample order, over divisor: bit for bit what lenet_cross_entropy() gives for the whole
 * batch, whose rows it computes the same way.  Messages name samples by their index in the batch.
 * LENET_EINVAL for a label outside the classes, LENET_ENUMERIC for a non-finite logit (nothing written then). */
lenet_status lenet__cross_entropy_rows(const lenet_tensor *logits, const int32_t *labels, int begin, int end,
                                       int divisor, double *terms, lenet_tensor *dlogits);

#endif /* LENET_LOSS_INTERNAL_H */
