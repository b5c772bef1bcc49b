/**
 * @file criterion.h
 * @brief Training criteria: how the training loop scores a batch of outputs and which class an output predicts.
 *
 * lenet_train_epoch() and lenet_evaluate() use softmax cross-entropy and the largest logit.  A criterion handle
 * lets lenet_train_epoch_with() and lenet_evaluate_with() train and evaluate other networks the same way: LeNet-5's
 * RBF outputs (a penalty per class: the MAP or MSE criterion, the smallest penalty wins) or a criterion of the
 * caller's own.
 */
#ifndef LENET_CRITERION_H
#define LENET_CRITERION_H

#include <stdint.h>

#include "lenet/export.h"
#include "lenet/loss.h"
#include "lenet/status.h"
#include "lenet/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque criterion.  Immutable once created: one handle may serve any number of threads and models at once. */
typedef struct lenet_criterion lenet_criterion;

/**
 * A caller's loss: writes the mean loss of the batch @p y (N, K) against @p labels to @p loss and, when @p dy is not
 * NULL, d loss / d y into @p dy (a tensor shaped like @p y, owned by the caller of the function).  Returns LENET_OK or
 * an error status; liblenet adds a message naming the criterion when the function fails.  All pointers are borrowed
 * for the duration of the call.
 */
typedef lenet_status (*lenet_loss_fn)(void *user, const lenet_tensor *y, const int32_t *labels, float *loss,
                                      lenet_tensor *dy);

/** A caller's decision rule: the class that one output row @p y of @p k values predicts, in [0, k). */
typedef int32_t (*lenet_classify_fn)(void *user, const float *y, int k);

/**
 * Softmax cross-entropy over logits, the largest logit wins: what lenet_train_epoch() uses.
 * @return a new criterion the caller frees with lenet_criterion_free(), or NULL (LENET_ENOMEM).
 */
LENET_API lenet_criterion *lenet_criterion_cross_entropy(void);


/**
 * A criterion made of the caller's functions.  @p user is passed to both and stays owned by the caller, who keeps it
 * alive as long as the criterion; the functions must be safe to call from the thread that trains.
 * @param classify may be NULL: the largest output wins.
 * @return a new criterion the caller frees with lenet_criterion_free(), or NULL (LENET_EINVAL for a NULL @p loss;
 *         LENET_ENOMEM).
 */
LENET_API lenet_criterion *lenet_criterion_custom(lenet_loss_fn loss, lenet_classify_fn classify, void *user);

/** Frees a criterion; NULL is a no-op. */
LENET_API void lenet_criterion_free(lenet_criterion *c);

/**
 * The mean loss of a batch of outputs @p y (N, K) against @p labels (N classes in [0, K), borrowed) and, when
 * @p dy is not NULL, its gradient into the caller-owned @p dy of the same shape.
 * @return LENET_OK; LENET_EINVAL for NULL arguments or a label out of range; LENET_ESHAPE if @p y is not 2-D or
 *         @p dy differs in shape; LENET_ENUMERIC for a non-finite output or loss; or a custom loss's status.
 */
LENET_API lenet_status lenet_criterion_loss(const lenet_criterion *c, const lenet_tensor *y, const int32_t *labels,
                                            float *loss, lenet_tensor *dy);

/**
 * The class each output row of @p y (N, K) predicts, into the caller's array @p classes of N.
 * @return LENET_OK; LENET_EINVAL for NULL arguments or a custom rule that answers outside [0, K); LENET_ESHAPE if
 *         @p y is not 2-D.
 */
LENET_API lenet_status lenet_criterion_classify(const lenet_criterion *c, const lenet_tensor *y, int32_t *classes);

#ifdef __cplusplus
}
#endif

#endif /* LENET_CRITERION_H */
