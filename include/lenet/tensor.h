/**
 * @file tensor.h
 * @brief Dense float32 tensors: row-major, contiguous, NCHW for images.
 */
#ifndef LENET_TENSOR_H
#define LENET_TENSOR_H

#include <stddef.h>

#include "lenet/export.h"
#include "lenet/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Most dimensions a tensor can have. */
#define LENET_TENSOR_MAX_DIMS 8

/** An opaque float32 tensor. */
typedef struct lenet_tensor lenet_tensor;

/**
 * Creates a zero-filled tensor of the given shape.
 *
 * @param ndim  number of dimensions, 1 to LENET_TENSOR_MAX_DIMS
 * @param shape ndim sizes, each at least 1 (copied; the caller keeps ownership)
 * @return a new tensor that the caller frees with lenet_tensor_free(), or NULL on error
 *         (LENET_EINVAL for a bad shape, LENET_ENOMEM) with lenet_last_error() set.
 */
LENET_API lenet_tensor *lenet_tensor_create(int ndim, const int *shape);

/**
 * Frees a tensor made by lenet_tensor_create().  Harmless on NULL.
 * Tensors borrowed from a model (parameters, gradients, outputs) must not be freed.
 */
LENET_API void lenet_tensor_free(lenet_tensor *t);

/** Returns the number of dimensions, or 0 for NULL. */
LENET_API int lenet_tensor_ndim(const lenet_tensor *t);

/** Returns the size of dimension @p axis (negative counts from the end, as in PyTorch), or 0 if out of range. */
LENET_API int lenet_tensor_dim(const lenet_tensor *t, int axis);

/** Returns the number of elements, or 0 for NULL. */
LENET_API size_t lenet_tensor_numel(const lenet_tensor *t);

/**
 * Returns the tensor's elements for writing, row-major and contiguous.
 * Borrowed: valid while the tensor lives.  NULL for NULL.
 */
LENET_API float *lenet_tensor_data(lenet_tensor *t);

/** Returns the tensor's elements for reading.  Borrowed as lenet_tensor_data(). */
LENET_API const float *lenet_tensor_cdata(const lenet_tensor *t);

/**
 * Copies all elements of @p src into @p dst; both must have the same shape.
 * @return LENET_OK, LENET_EINVAL for NULL, LENET_ESHAPE for different shapes.
 */
LENET_API lenet_status lenet_tensor_copy(lenet_tensor *dst, const lenet_tensor *src);

#ifdef __cplusplus
}
#endif

#endif /* LENET_TENSOR_H */
