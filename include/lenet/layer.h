/**
 * @file layer.h
 * @brief Layer constructors.  Input sizes are inferred when the model is built (like PyTorch's Lazy* modules).
 *
 * A constructor returns a new layer or NULL with lenet_last_error() set.  Pass it straight to
 * lenet_model_add(), which takes ownership even on failure and reports a constructor's NULL as an error,
 * so `lenet_model_add(m, lenet_conv2d(6, 5, 1, 2))` never leaks.
 */
#ifndef LENET_LAYER_H
#define LENET_LAYER_H

#include "lenet/export.h"
#include "lenet/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque layer. */
typedef struct lenet_layer lenet_layer;

/**
 * 2-D convolution over NCHW input (PyTorch nn.Conv2d with square kernel, stride and zero padding, bias on).
 * Output size: floor((H + 2 * padding - kernel_size) / stride) + 1.  Parameters "weight"
 * (out_channels, in_channels, k, k) and "bias" (out_channels).
 * @return NULL with LENET_EINVAL unless out_channels, kernel_size, stride >= 1 and padding >= 0.
 */
LENET_API lenet_layer *lenet_conv2d(int out_channels, int kernel_size, int stride, int padding);

/**
 * 2-D average pooling (nn.AvgPool2d, no padding, floor mode).
 * @return NULL with LENET_EINVAL unless kernel_size >= 1 and stride >= 1.
 */
LENET_API lenet_layer *lenet_avgpool2d(int kernel_size, int stride);

/**
 * 2-D max pooling (nn.MaxPool2d, no padding, floor mode).  On ties the gradient goes to the first maximum.
 * @return NULL with LENET_EINVAL unless kernel_size >= 1 and stride >= 1.
 */
LENET_API lenet_layer *lenet_maxpool2d(int kernel_size, int stride);

/** Logistic sigmoid, elementwise (nn.Sigmoid). */
LENET_API lenet_layer *lenet_sigmoid(void);

/** max(0, x), elementwise (nn.ReLU). */
LENET_API lenet_layer *lenet_relu(void);

/** tanh(x), elementwise (nn.Tanh). */
LENET_API lenet_layer *lenet_tanh(void);

/**
 * Batch normalization over the channels of (C, H, W) input (nn.BatchNorm2d, affine, tracking running statistics).
 * In training mode each channel is normalised with the mean and biased variance of the whole batch (all samples
 * and positions, however many threads share the work) and the running statistics are updated with
 * running = (1 - momentum) running + momentum batch (the variance unbiased); in evaluation mode and in
 * lenet_model_predict() the running statistics are used.  Parameters "weight" (C, initialised to 1) and "bias"
 * (C, 0); buffers "running_mean" (C, 0), "running_var" (C, 1) and "num_batches_tracked" (saved as int64), as
 * PyTorch's state_dict.  A training batch with one value per channel is LENET_ESHAPE, as PyTorch refuses it.
 * @param eps added to the variance (PyTorch: 1e-5)
 * @param momentum weight of the batch statistics in the running ones (PyTorch: 0.1)
 * @return NULL with LENET_EINVAL unless eps > 0 and 0 <= momentum <= 1 (both finite).
 */
LENET_API lenet_layer *lenet_batchnorm2d(float eps, float momentum);

/** As lenet_batchnorm2d() over the features of flattened (features) input (nn.BatchNorm1d). */
LENET_API lenet_layer *lenet_batchnorm1d(float eps, float momentum);

/**
 * Inverted dropout (nn.Dropout): in training mode each value is zeroed with probability @p p and the others are
 * scaled by 1 / (1 - p); in evaluation mode and in lenet_model_predict() it passes its input through.  The masks
 * come from the seed of the last lenet_model_init() and the number of training forwards since, so a run is
 * reproducible and bit-identical for any thread count.
 * @return NULL with LENET_EINVAL unless 0 <= p < 1.
 */
LENET_API lenet_layer *lenet_dropout(float p);

/** Flattens each sample to one dimension (nn.Flatten): (N, C, H, W) becomes (N, C*H*W). */
LENET_API lenet_layer *lenet_flatten(void);

/**
 * Fully connected layer y = x W^T + b (nn.Linear) over flattened input (N, in_features).
 * Parameters "weight" (out_features, in_features) and "bias" (out_features).
 * @return NULL with LENET_EINVAL unless out_features >= 1.
 */
LENET_API lenet_layer *lenet_linear(int out_features);

/**
 * Returns the PyTorch class name of the layer ("Conv2d", "AvgPool2d", "Sigmoid", ...).
 * A static string; "" for NULL.
 */
LENET_API const char *lenet_layer_name(const lenet_layer *l);

/**
 * Frees a layer that was never added to a model (a model frees its own layers).  Harmless on NULL.
 */
LENET_API void lenet_layer_free(lenet_layer *l);

#ifdef __cplusplus
}
#endif

#endif /* LENET_LAYER_H */
