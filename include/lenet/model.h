/**
 * @file model.h
 * @brief A sequential model: layers in order, one parameter arena, forward and backward passes.
 *
 * Thread safety: a model may be used by one thread at a time, except lenet_model_predict(), which only reads
 * the model and may run on one shared model from many threads at once (as long as no thread trains it).
 */
#ifndef LENET_MODEL_H
#define LENET_MODEL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lenet/export.h"
#include "lenet/layer.h"
#include "lenet/status.h"
#include "lenet/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @name Size limits
 * The largest networks a model accepts, checked when it is built (from lenet_model_build(), the first forward,
 * or a checkpoint), so that every size computed from them afterwards fits without overflow.  A model over a
 * limit fails to build with LENET_ESHAPE naming the layer; nothing is allocated for it.
 * @{
 */
/** Elements of one sample's activation at any point of the network: the input, every layer's output, and the
 *  padded input a convolution reads (2^28, 1 GiB of floats). */
#define LENET_MAX_SAMPLE_ELEMENTS ((size_t)1 << 28)
/** Elements of one parameter tensor (2^28). */
#define LENET_MAX_PARAM_ELEMENTS ((size_t)1 << 28)
/** Elements of all parameter tensors of one model together (2^30, 4 GiB of floats). */
#define LENET_MAX_MODEL_ELEMENTS ((size_t)1 << 30)
/** @} */

/** An opaque sequential model (PyTorch nn.Sequential). */
typedef struct lenet_model lenet_model;

/** Weight initialisation schemes for lenet_model_init(). */
typedef enum lenet_init {
    /** PyTorch's default: weights and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5)). */
    LENET_INIT_PYTORCH = 0,
    /** Weights xavier-uniform, +-sqrt(6 / (fan_in + fan_out)); biases keep the PyTorch default (as d2l does). */
    LENET_INIT_XAVIER_UNIFORM,
    /** LeCun et al. 1998: every weight and bias uniform in +-2.4 / fan_in. */
    LENET_INIT_LECUN
} lenet_init;

/** Creates an empty model.  Free it with lenet_model_free().  NULL on allocation failure. */
LENET_API lenet_model *lenet_model_create(void);

/** Frees the model, its layers, parameters and buffers.  Harmless on NULL. */
LENET_API void lenet_model_free(lenet_model *m);

/**
 * Appends a layer.  Always takes ownership of @p l, also when it fails (the layer is then freed).
 * A NULL layer returns the error of the constructor that produced it (its message is kept).
 * A failed add is sticky: the model would otherwise run without that layer, so from then on every
 * lenet_model_add(), build, forward, summary, print, predict, classify and training call on this model returns
 * the same status with the first failure's message, until the model is freed.
 * @return LENET_OK; LENET_EINVAL for NULL; LENET_ESTATE once the model is built; LENET_ENOMEM.
 */
LENET_API lenet_status lenet_model_add(lenet_model *m, lenet_layer *l);

/** Returns the number of layers, 0 for NULL. */
LENET_API size_t lenet_model_layer_count(const lenet_model *m);

/** Returns layer @p i (borrowed, owned by the model), or NULL if out of range. */
LENET_API const lenet_layer *lenet_model_layer(const lenet_model *m, size_t i);

/**
 * Infers every layer's input size from a per-sample input of (channels, height, width), allocates the
 * parameters (one contiguous arena) and initialises them with LENET_INIT_PYTORCH from seed 0.
 * A model is built once; building again with the same shape is a no-op, with another shape LENET_ESTATE.
 * @return LENET_OK; LENET_EINVAL (NULL, sizes < 1, no layers); LENET_ESHAPE naming the layer and sizes
 *         when a layer does not fit its input; LENET_ENOMEM.  On failure the model stays unbuilt.
 */
LENET_API lenet_status lenet_model_build(lenet_model *m, int channels, int height, int width);

/**
 * Sets training or evaluation mode, as PyTorch's module.train() / module.eval().  A new model is in training
 * mode.  In training mode BatchNorm normalises with the batch's statistics and updates its running statistics,
 * and Dropout drops; in evaluation mode BatchNorm uses its running statistics and Dropout passes its input
 * through.  lenet_model_forward() runs in the current mode; lenet_train_epoch() trains in training mode and
 * lenet_evaluate() runs in evaluation mode, each restoring the mode it found; lenet_model_predict() and
 * lenet_model_classify() always run in evaluation mode and never change the model.
 * @return LENET_OK; LENET_EINVAL for a NULL model.
 */
LENET_API lenet_status lenet_model_set_training(lenet_model *m, bool training);

/** Returns true when the model is in training mode (false for NULL). */
LENET_API bool lenet_model_is_training(const lenet_model *m);

/**
 * Lets a training pass stop between two batches, for Ctrl-C or a time limit.  While @p flag is installed,
 * lenet_train_epoch() and lenet_train_epoch_with() read `*flag` after each batch's step (and its progress call);
 * when it is non-zero and the pass has batches left, they return LENET_STOPPED: the batch under way was finished
 * and stepped, the iterator stands at the next batch (so lenet_checkpoint_save() then resumes mid-pass, and the
 * next lenet_train_epoch() call continues the pass where it stopped), the metrics are those of the batches this
 * call trained, and the pass does not count as an epoch for per-epoch schedules.  A pass whose last batch is done
 * returns LENET_OK as usual.  A pass trains at least one batch whatever the flag says; evaluation reads no flag.
 *
 * The flag is the caller's (borrowed; it must outlive its installation) and the library never writes it: a signal
 * handler may set it, since reading a `volatile sig_atomic_t` is all the library does with it, and the caller
 * clears it.  Install or remove it between passes, not from a progress callback.  With a communicator
 * (lenet_model_set_comm()) every process must install a flag; after each batch the processes then agree, and all
 * of them stop at the same batch when any one's flag is set.
 * @param flag the flag to read, or NULL to remove it.
 * @return LENET_OK; LENET_EINVAL for a NULL model.
 */
LENET_API lenet_status lenet_model_set_stop_flag(lenet_model *m, const volatile sig_atomic_t *flag);

/** Returns true once lenet_model_build() (or the first forward or summary) has succeeded. */
LENET_API bool lenet_model_is_built(const lenet_model *m);

/**
 * Gives the per-sample input shape the model was built for.  Any output pointer may be NULL.
 * @return LENET_OK; LENET_EINVAL for a NULL model; LENET_ESTATE if the model is not built (outputs untouched).
 */
LENET_API lenet_status lenet_model_input_shape(const lenet_model *m, int *channels, int *height, int *width);

/** Returns the number of outputs per sample (10 for the d2l LeNet), 0 if unbuilt or NULL. */
LENET_API size_t lenet_model_output_size(const lenet_model *m);

/**
 * (Re)initialises all parameters with @p scheme from @p seed; the same seed gives the same weights on
 * every machine.  Gradients are zeroed.
 * @return LENET_OK; LENET_EINVAL; LENET_ESTATE if the model is not built.
 */
LENET_API lenet_status lenet_model_init(lenet_model *m, lenet_init scheme, uint64_t seed);

/**
 * Prints each layer's output shape for an input of (batch, channels, height, width), exactly as a PyTorch
 * loop `for layer in net: X = layer(X); print(layer.__class__.__name__, 'output shape: \\t', X.shape)`:
 * "Conv2d output shape: \\t torch.Size([1, 6, 28, 28])".  Builds the model from that input if it is not built;
 * a built model may be summarised for any input size its layers accept.  Nothing is printed on error.
 * @return LENET_OK; LENET_EINVAL; LENET_ESHAPE naming the layer that does not fit; LENET_EIO if writing fails.
 */
LENET_API lenet_status lenet_model_summary(lenet_model *m, int batch, int channels, int height, int width,
                                           FILE *out);

/**
 * Prints a table of the layers with output shape, parameter count and connection count, and the totals
 * (61,706 parameters for the d2l LeNet).  The model must be built.
 * @return LENET_OK; LENET_EINVAL; LENET_ESTATE if not built; LENET_EIO if writing fails.
 */
LENET_API lenet_status lenet_model_print(const lenet_model *m, FILE *out);

/** Returns the number of parameter tensors (2 per Conv2d/Linear), 0 if unbuilt or NULL. */
LENET_API size_t lenet_model_param_count(const lenet_model *m);

/** Returns the total number of trainable scalars (61,706 for the d2l LeNet), 0 if unbuilt or NULL. */
LENET_API size_t lenet_model_param_numel(const lenet_model *m);

/**
 * Returns parameter tensor @p i, numbered as PyTorch's state_dict() of the same nn.Sequential.
 * Borrowed: valid until the model is freed; writable, to set weights.  NULL if out of range.
 */
LENET_API lenet_tensor *lenet_model_param(lenet_model *m, size_t i);

/** Returns the gradient of parameter @p i, same shape.  Borrowed as lenet_model_param(). */
LENET_API lenet_tensor *lenet_model_grad(lenet_model *m, size_t i);

/** Returns the state_dict name of parameter @p i ("0.weight", "0.bias", "3.weight", ...), or NULL. */
LENET_API const char *lenet_model_param_name(const lenet_model *m, size_t i);

/**
 * Returns the number of buffers: non-trainable state such as BatchNorm's running statistics, kept beside the
 * parameters (never given gradients or updated by an optimizer).  0 for NULL or an unbuilt model.
 */
LENET_API size_t lenet_model_buffer_count(const lenet_model *m);

/**
 * Returns buffer @p i, numbered as PyTorch's state_dict() orders a layer's buffers after its parameters.
 * Borrowed: valid until the model is freed; writable, to set running statistics.  A buffer that PyTorch keeps
 * as int64 (num_batches_tracked) holds its count as a float here (exact up to 2^24) and is saved as I64.
 * NULL if out of range.
 */
LENET_API lenet_tensor *lenet_model_buffer(lenet_model *m, size_t i);

/** Returns the state_dict name of buffer @p i ("1.running_mean", "1.running_var", ...), or NULL. */
LENET_API const char *lenet_model_buffer_name(const lenet_model *m, size_t i);

/**
 * Runs the forward pass, in the model's current mode, on a batch @p x of shape (N, C, H, W) and keeps the
 * activations for backward and lenet_model_activation().  Builds the model from x's shape on first use.
 * @param y receives the output (N, ...), borrowed from the model: valid until the next lenet_model_forward(),
 *          lenet_train_epoch*() or lenet_evaluate*() call on this model, or until it is freed (those calls reuse
 *          the activation buffers).  lenet_model_backward(), lenet_model_predict() and lenet_model_classify()
 *          leave it valid.
 * @return LENET_OK; LENET_EINVAL for NULL; LENET_ESHAPE if x does not match the built input shape; the error of
 *         a failed lenet_model_add(); LENET_ENOMEM.
 */
LENET_API lenet_status lenet_model_forward(lenet_model *m, const lenet_tensor *x, const lenet_tensor **y);

/**
 * Returns layer @p i's output from the last forward pass (lenet_model_forward(), or the last batch of
 * lenet_train_epoch*() / lenet_evaluate*()), shaped (N, ...) like the output.  Borrowed from the model: valid as
 * the output of lenet_model_forward() is, until the next forward, train, evaluate or free.  NULL before any
 * forward pass or if @p i is out of range.
 */
LENET_API const lenet_tensor *lenet_model_activation(const lenet_model *m, size_t i);

/**
 * Back-propagates @p dy (the loss gradient w.r.t. the last forward's output, same shape) and adds the
 * parameter gradients into the model's gradients (call lenet_model_zero_grad() between steps).
 * @return LENET_OK; LENET_EINVAL; LENET_ESTATE without a preceding forward; LENET_ESHAPE if dy's shape differs.
 */
LENET_API lenet_status lenet_model_backward(lenet_model *m, const lenet_tensor *dy);

/** Sets all gradients to zero.  @return LENET_OK, LENET_EINVAL for NULL. */
LENET_API lenet_status lenet_model_zero_grad(lenet_model *m);

/**
 * Computes the outputs for @p x into @p y without changing the model: it allocates its own scratch, so any
 * number of threads may call it at once on one shared, built model (none may train it meanwhile).
 * @param y a tensor of the output shape (N, ...) owned by the caller.
 * @return LENET_OK; LENET_EINVAL; LENET_ESTATE if not built; LENET_ESHAPE; LENET_ENOMEM.
 */
LENET_API lenet_status lenet_model_predict(const lenet_model *m, const lenet_tensor *x, lenet_tensor *y);

/**
 * Classifies a batch: for each sample the index of the largest output in @p classes (may be NULL) and the
 * softmax of the outputs in @p probs (N * outputs floats, may be NULL).  A model whose last layer gives penalties
 * rather than scores (LeNet-5's EuclideanRBF, see lenet/lenet5.h) is classified by the smallest output, and @p probs
 * is then the softmax of the negated outputs.  Thread-safe as lenet_model_predict().
 * @return as lenet_model_predict().
 */
LENET_API lenet_status lenet_model_classify(const lenet_model *m, const lenet_tensor *x, int32_t *classes,
                                            float *probs);

#ifdef __cplusplus
}
#endif

#endif /* LENET_MODEL_H */
