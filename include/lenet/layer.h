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

/* ---- LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998): the layers of the original network ---- */

/**
 * LeNet-5's trainable subsampling (S2, S4; PyTorch has no such module, name "Subsampling"): each output unit
 * adds the kernel_size x kernel_size inputs of its window, multiplies the sum by one trainable coefficient per
 * map and adds one trainable bias per map.  No padding, floor mode, like lenet_avgpool2d().  Parameters
 * "weight" (C) and "bias" (C).  The squashing function is a separate layer (lenet_scaled_tanh()).
 * @return NULL with LENET_EINVAL unless kernel_size >= 1 and stride >= 1.
 */
LENET_API lenet_layer *lenet_subsample2d(int kernel_size, int stride);

/**
 * A valid, stride-1 convolution in which output map o reads only the input maps i with
 * table[o * in_channels + i] != 0 (name "PartialConv2d").  The input must have in_channels maps.
 * Parameters "weight" (connections, k, k), the kernels of the table's connections numbered output-major
 * (map 0's inputs in increasing order, then map 1's, ...), and "bias" (out_channels).  LENET_INIT_LECUN uses
 * each output map's own fan-in (its inputs * k * k).
 * @param table out_channels * in_channels flags, copied (the caller keeps it); at most 240 entries.
 * @return NULL with LENET_EINVAL for sizes < 1, a NULL or empty table, or a table of more than 240 entries.
 */
LENET_API lenet_layer *lenet_partial_conv2d(int out_channels, int in_channels, int kernel_size,
                                            const unsigned char *table);

/**
 * Writes LeNet-5's C3 connection table (the paper's Table I) as lenet_partial_conv2d() takes it:
 * table[o * 6 + i] is 1 when C3 map o reads S2 map i, else 0.  Harmless on NULL.
 */
LENET_API void lenet_lenet5_c3_table(unsigned char table[16 * 6]);

/** LeNet-5's C3: lenet_partial_conv2d(16, 6, 5, Table I): 1,516 parameters, 151,600 connections. */
LENET_API lenet_layer *lenet_lenet5_c3(void);

/**
 * Euclidean radial basis function units (name "EuclideanRBF"): y_i = sum_j (x_j - w_ij)^2 over flattened input
 * of in_features.  The smaller y_i, the better the input matches unit i (a penalty, not a score).
 * The centres are fixed: the parameter "weight" (out_features, in_features) is not trainable (it is in the
 * state_dict and settable through lenet_model_param(), but counts no trainable parameter and no optimizer
 * changes it); every lenet_model_init() scheme writes @p centers.
 * @param centers out_features * in_features values, copied; NULL for zeros.
 * @return NULL with LENET_EINVAL unless both sizes are >= 1; LENET_ENOMEM.
 */
LENET_API lenet_layer *lenet_rbf(int out_features, int in_features, const float *centers);

/**
 * Writes LeNet-5's RBF centres: for digit d, centers[d * 84 + 7 * r + c] is +1 where the 7x12 bitmap of the
 * stylised digit (the paper's Fig. 3) has ink at row r, column c, else -1.  The bitmaps are drawn for liblenet
 * after the paper (docs/lenet5.md shows them).  Harmless on NULL.
 */
LENET_API void lenet_rbf_lenet5_bitmaps(float centers[10 * 84]);

/** LeNet-5's output layer: lenet_rbf(10, 84, the bitmaps of lenet_rbf_lenet5_bitmaps()); 840 connections. */
LENET_API lenet_layer *lenet_rbf_lenet5(void);

/**
 * LeNet-5's squashing function f(a) = A tanh(S a) with A = 1.7159 and S = 2/3, elementwise
 * (name "ScaledTanh"; f(1) = 1, f(-1) = -1).
 */
LENET_API lenet_layer *lenet_scaled_tanh(void);

#ifdef __cplusplus
}
#endif

#endif /* LENET_LAYER_H */
