/**
 * @file plan.h
 * @brief Read-only inference plans: a trained model compiled for deployment, run without allocating.
 *
 * A plan is made once from a built model and keeps its own copy of the weights in the layout its kernels use
 * (BatchNorm folded into the convolution or Linear before it, Dropout left out), so the model may be changed or
 * freed afterwards.  A plan never changes after creation: any number of threads may run one plan at once, each
 * with a workspace of its own of lenet_plan_workspace_size() bytes.  lenet_plan_run() allocates nothing, takes no
 * lock and starts no thread; to use several cores, run one workspace per thread.
 *
 * @code
 * lenet_plan *p = lenet_plan_create(model, 64);
 * void *work = malloc(lenet_plan_workspace_size(p));       // one per thread, reused for every call
 * lenet_plan_run(p, work, lenet_plan_workspace_size(p), images, logits);
 * @endcode
 */
#ifndef LENET_PLAN_H
#define LENET_PLAN_H

#include <stddef.h>

#include "lenet/export.h"
#include "lenet/model.h"
#include "lenet/status.h"
#include "lenet/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque, immutable inference plan. */
typedef struct lenet_plan lenet_plan;

/**
 * Compiles a built model for float32 inference on batches of 1 to @p max_batch samples, with the model's
 * evaluation-mode semantics (lenet_model_predict() gives the same outputs within float rounding: folding
 * BatchNorm into the weights rounds differently).  The model is only read, and not kept.
 * @return a new plan to free with lenet_plan_free(), or NULL: LENET_EINVAL (NULL model, max_batch < 1);
 *         LENET_ESTATE (the model is not built, or a layer could not be added to it); LENET_EUNSUPPORTED naming a
 *         layer a plan cannot hold (a layer kind outside the library); LENET_ENOMEM.
 */
LENET_API lenet_plan *lenet_plan_create(const lenet_model *m, int max_batch);

/**
 * Compiles a built model for int8 inference as TFLite's integer specification quantizes it (post-training, so a
 * model's numbers mean the same on a microcontroller): weights int8, symmetric per output channel; activations int8
 * with a scale and zero point per tensor from the range each layer's output takes on @p calibration; int32 sums
 * requantized by fixed-point multipliers; Sigmoid, Tanh and ScaledTanh by a 256-entry table per layer; pooling in
 * integers.  Layers without an integer form (EuclideanRBF, a BatchNorm that cannot be folded, ...) run in float
 * inside the plan, between a dequantization and a quantization.  The plan's input and output stay float: the input
 * is quantized on entry, the output dequantized, so lenet_plan_run() is called as for a float plan.  The integer
 * arithmetic gives the same bytes on every instruction set the library has kernels for.  docs/inference.md lists
 * what quantization costs in accuracy.
 * @param calibration (N, C, H, W), N >= 1, of the model's input shape: a few hundred typical inputs (training
 *        images) are enough.  Only read.
 * @return a new plan to free with lenet_plan_free(), or NULL: as lenet_plan_create(); LENET_EINVAL for a NULL
 *         calibration batch; LENET_ESHAPE when it is not (N, C, H, W) of the input shape; LENET_ENUMERIC when the
 *         model gives a NaN or infinity on it.
 */
LENET_API lenet_plan *lenet_plan_create_int8(const lenet_model *m, int max_batch, const lenet_tensor *calibration);

/**
 * Bytes of workspace lenet_plan_run() needs for any batch up to the plan's max_batch (0 for NULL).  The same for
 * every call: allocate it once per thread.  Any alignment will do.
 */
LENET_API size_t lenet_plan_workspace_size(const lenet_plan *p);

/** The largest batch the plan runs (0 for NULL). */
LENET_API int lenet_plan_max_batch(const lenet_plan *p);

/**
 * Runs the plan on @p x (N, C, H, W), 1 <= N <= max_batch, of the input shape the model was built for, writing
 * @p y, a tensor of N rows of the model's outputs (shape (N, ...) as lenet_model_predict() wants it).
 * Runs on the calling thread; reads the plan and x, writes only y and the workspace.  Allocates nothing.
 * @return LENET_OK; LENET_EINVAL for NULL arguments or a workspace smaller than lenet_plan_workspace_size();
 *         LENET_ESHAPE for a batch over max_batch or shapes that do not match.  Nothing is written on failure.
 */
LENET_API lenet_status lenet_plan_run(const lenet_plan *p, void *workspace, size_t workspace_size,
                                      const lenet_tensor *x, lenet_tensor *y);

/**
 * Saves a plan to @p path, replacing an existing file crash-safely as lenet_model_save() does: a safetensors file
 * with a CRC-32 that holds the plan's folded network (architecture and tensors, readable by lenet_model_load() too),
 * its max_batch and kind, and for an int8 plan the quantized weights, scales, zero points, multipliers, shifts and
 * tables (docs/inference.md describes the file).
 * @return LENET_OK; LENET_EINVAL for NULL; LENET_EIO if the file cannot be written (a file already at @p path is
 *         then left as it was); LENET_ENOMEM.
 */
LENET_API lenet_status lenet_plan_save(const lenet_plan *p, const char *path);

/**
 * Loads a plan saved by lenet_plan_save().  It computes the same outputs, bit for bit, as the plan that was saved
 * did on this machine (float plans: on the same kernels).  The file is trusted in nothing.
 * @return a new plan to free with lenet_plan_free(), or NULL with lenet_last_error() naming the file and the
 *         problem: LENET_EINVAL (NULL path); LENET_EIO (cannot read); LENET_EFORMAT (not a plan file, or truncated
 *         or corrupt: header, JSON, CRC, architecture, a tensor missing, extra or out of range);
 *         LENET_EUNSUPPORTED (a newer plan format or an unknown kind); LENET_ENOMEM.
 */
LENET_API lenet_plan *lenet_plan_load(const char *path);

/**
 * Classifies the outputs @p y of lenet_plan_run() (N rows, borrowed) as lenet_model_classify() classifies the
 * model's: for each row the class in @p classes (N entries, may be NULL) and the softmax in @p probs (N * outputs
 * floats, may be NULL), by the largest output, or the smallest when the network's last layer gives penalties
 * (LeNet-5's EuclideanRBF), whose softmax is then that of the negated outputs.  Allocates nothing; thread-safe.
 * @return LENET_OK; LENET_EINVAL for NULL; LENET_ESHAPE if @p y is not of the plan's output shape.
 */
LENET_API lenet_status lenet_plan_classify(const lenet_plan *p, const lenet_tensor *y, int32_t *classes,
                                           float *probs);

/** Frees the plan.  Harmless on NULL. */
LENET_API void lenet_plan_free(lenet_plan *p);

#ifdef __cplusplus
}
#endif

#endif /* LENET_PLAN_H */
