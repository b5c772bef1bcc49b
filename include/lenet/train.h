/**
 * @file train.h
 * @brief The training loop: one epoch of SGD over an iterator, and evaluation.
 */
#ifndef LENET_TRAIN_H
#define LENET_TRAIN_H

#include <stddef.h>

#include "lenet/criterion.h"
#include "lenet/data.h"
#include "lenet/export.h"
#include "lenet/model.h"
#include "lenet/optim.h"
#include "lenet/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Metrics of a pass: mean loss per example, accuracy, wall-clock seconds and examples seen.
 * The one public struct: plain data owned by the caller; new fields are only ever added at the end.
 */
typedef struct lenet_metrics {
    double loss;      /**< Mean loss per example: cross-entropy, or the criterion's. */
    double accuracy;  /**< Fraction of examples whose predicted class (largest logit, or the criterion's) is the label. */
    double seconds;   /**< Wall-clock time of the pass. */
    size_t examples;  /**< Examples seen. */
} lenet_metrics;

/**
 * Called after each batch with the examples done so far, the total of the pass and the running metrics.
 * @p so_far is borrowed for the duration of the call.
 */
typedef void (*lenet_progress_fn)(void *user, size_t done, size_t total, const lenet_metrics *so_far);

/**
 * Trains one pass: for each batch from @p train, forward, softmax cross-entropy, backward and an optimizer
 * step.  The pass runs from the iterator's position to its end; an exhausted iterator is first reset
 * (lenet_iter_reset()), so calling this once per epoch visits a new permutation each time.
 * @param progress may be NULL; @param out may be NULL.
 * @return LENET_OK; LENET_EINVAL; LENET_ESHAPE if the batches do not fit the model; LENET_ENUMERIC if the loss,
 *         a gradient or an updated parameter becomes NaN or infinite (the parameters and the optimizer's state,
 *         momentum or Hessian estimate included, are left as they were before that step); LENET_STOPPED (not an
 *         error) when the model's stop flag ended the pass early (lenet_model_set_stop_flag()): @p out then holds
 *         the metrics of the batches trained, and calling again continues the pass.
 */
LENET_API lenet_status lenet_train_epoch(lenet_model *m, lenet_optimizer *o, lenet_iter *train,
                                         lenet_progress_fn progress, void *user, lenet_metrics *out);

/**
 * As lenet_train_epoch(), scoring each batch with @p criterion (borrowed; NULL: softmax cross-entropy): its loss
 * and gradient drive the step, and its decision rule counts the accuracy, so LeNet-5's RBF outputs train with
 * lenet_criterion_rbf().
 * @return as lenet_train_epoch(), or the status of a custom criterion that fails (the step is then not taken).
 */
LENET_API lenet_status lenet_train_epoch_with(lenet_model *m, lenet_optimizer *o, lenet_iter *train,
                                              const lenet_criterion *criterion, lenet_progress_fn progress,
                                              void *user, lenet_metrics *out);

/**
 * Computes the mean loss and accuracy over a full pass of @p test (reset first if exhausted) without
 * changing the parameters.
 * @return as lenet_train_epoch().
 */
LENET_API lenet_status lenet_evaluate(lenet_model *m, lenet_iter *test, lenet_metrics *out);

/**
 * As lenet_evaluate(), with the loss and the decision rule of @p criterion (borrowed; NULL: cross-entropy and the
 * largest logit).
 * @return as lenet_evaluate(), or the status of a custom criterion that fails.
 */
LENET_API lenet_status lenet_evaluate_with(lenet_model *m, lenet_iter *test, const lenet_criterion *criterion,
                                           lenet_metrics *out);

/**
 * Recomputes the running statistics of every layer that keeps them (BatchNorm's running_mean and running_var) from
 * a pass over @p data, as PyTorch's torch.optim.swa_utils.update_bn does: the pass runs in training mode and takes
 * no step, and each such layer's statistics become the plain mean over the pass's batches of the batch means and
 * unbiased variances (momentum=None), whatever they held before; num_batches_tracked becomes the number of batches.
 * The parameters, the optimizer and the model's mode are unchanged, and so is the random stream later training
 * draws from (Dropout is active in the pass, as in PyTorch's, with masks of its own).
 *
 * Use it after training on augmented images: the running statistics then describe the undistorted images that
 * evaluation sees, not the distorted ones (give an iterator over the training set without augmentation).  The pass
 * starts where @p data stands (reset first if exhausted), as lenet_evaluate()'s; with a communicator
 * (lenet_model_set_comm()) every process makes it together and gets the same statistics.  A model without such
 * layers returns LENET_OK at once, without a pass.
 * @param out receives the pass's loss and accuracy, in training mode (NULL: not wanted; zeros when no pass ran).
 * @return LENET_OK; LENET_EINVAL for NULL; the errors of lenet_evaluate(), with the statistics then partly
 *         updated.
 */
LENET_API lenet_status lenet_update_statistics(lenet_model *m, lenet_iter *data, lenet_metrics *out);

#ifdef __cplusplus
}
#endif

#endif /* LENET_TRAIN_H */
