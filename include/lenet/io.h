/**
 * @file io.h
 * @brief Checkpoints: models and training state in the safetensors format, weights from and to PyTorch.
 *
 * A file is safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length,
 * a JSON header naming each tensor with its dtype, shape and byte range, then the raw little-endian data.
 * Parameters and buffers are named as in PyTorch's state_dict() of the same nn.Sequential ("0.weight", "0.bias",
 * "1.running_mean", ...), with the same dtypes (F32; I64 for BatchNorm's num_batches_tracked), so
 * `safetensors.torch.load_file()` reads liblenet's files and liblenet reads a state_dict saved as safetensors.
 * liblenet adds metadata: the architecture (layer kinds, their arguments, the input shape), the library
 * version and a CRC-32 of the data.  docs/checkpoints.md describes the format and the PyTorch round trip.
 *
 * Saving is crash-safe: the file is written under a temporary name in the same directory, flushed to disk and
 * renamed over the target, so a crash or a full disk leaves the old file or the new one, never a torn one.
 * Loading trusts nothing in the file and, when it fails, leaves the objects it was to fill as they were.
 *
 * Thread safety: these functions may run at once in several threads on different objects (a model may be
 * saved from several threads at once); a model must not be trained while it is saved.
 */
#ifndef LENET_IO_H
#define LENET_IO_H

#include <stddef.h>

#include "lenet/data.h"
#include "lenet/export.h"
#include "lenet/model.h"
#include "lenet/optim.h"
#include "lenet/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Saves a built model's architecture, parameters and buffers to @p path, replacing an existing file crash-safely.
 * Buffers PyTorch keeps as int64 (num_batches_tracked) are written as 0-dimensional I64 tensors, as PyTorch does.
 * @return LENET_OK; LENET_EINVAL for NULL, or for an int64 buffer holding anything but an integer in [0, 2^53]
 *         (nothing is written then); LENET_ESTATE if the model is not built; LENET_EUNSUPPORTED if a
 *         layer kind cannot be rebuilt from a file; LENET_EIO if the file cannot be written (a full disk, a
 *         missing directory: the message names the system error), in which case a file already at @p path is
 *         left as it was; LENET_ENOMEM.
 */
LENET_API lenet_status lenet_model_save(const lenet_model *m, const char *path);

/**
 * Loads a model saved by lenet_model_save() or lenet_checkpoint_save(): rebuilds its layers from the recorded
 * architecture, builds it for the recorded input shape and fills its parameters and buffers.  The optimizer and
 * iterator state of a training checkpoint are ignored.
 * @return a new built model to free with lenet_model_free(), or NULL with lenet_last_error() naming the file
 *         and the problem: LENET_EINVAL (NULL path); LENET_EIO (cannot read); LENET_EFORMAT (not a liblenet
 *         file, or truncated or corrupt: header length, JSON, dtype, offsets, CRC, unknown layer kind, bad layer
 *         arguments, tensors that do not fit the architecture); LENET_EUNSUPPORTED (written by a newer liblenet
 *         in a format version this one does not read); LENET_ENOMEM.
 */
LENET_API lenet_model *lenet_model_load(const char *path);

/**
 * Fills the parameters and buffers of a built model from a safetensors file by name: every parameter
 * (lenet_model_param_name()) and every buffer (lenet_model_buffer_name()) must be in the file with the same
 * shape, as PyTorch's load_state_dict(strict=True) requires every key.  This is how a PyTorch state_dict saved
 * with `safetensors.torch.save_file(net.state_dict(), path)` is loaded into the same network built in C; the
 * file needs no liblenet metadata, and its architecture, if recorded, is not compared (only names and shapes).
 * Tensors may be F32, or F64, F16 or BF16, converted to float32 (F64 rounds to nearest).  An int64 buffer
 * (num_batches_tracked, shape [] or [1]) may also be I64, I32, U32 or U64; its values must be integers in
 * [0, 2^53] and become the nearest float (exact up to 2^24).  Tensors whose names do not start with a digit (a
 * training checkpoint's optimizer and iterator state) are ignored.
 * @return LENET_OK; LENET_EINVAL for NULL; LENET_ESTATE if the model is not built; LENET_EIO; LENET_EFORMAT for
 *         a malformed file, a parameter or float buffer of a non-float dtype, or a count that is not an integer
 *         in [0, 2^53]; LENET_ESHAPE naming the tensor when a parameter or buffer is missing or has another
 *         shape, or the file has a layer tensor the model lacks; LENET_ENOMEM.
 *         On any failure the parameters and buffers are unchanged.
 */
LENET_API lenet_status lenet_model_load_weights(lenet_model *m, const char *path);

/**
 * Saves everything a training run needs to continue bit-identically: the model (as lenet_model_save(), running
 * statistics and other buffers included), the optimizer's state (its kind, learning rate, step count,
 * hyperparameters and buffers such as SGD's momentum) and the training iterator's state (position in the pass,
 * permutation, generator state).
 * @param m  the built model
 * @param o  the optimizer bound to @p m, or NULL to save none
 * @param it the training iterator, or NULL to save none
 * @param note a caller's string stored with the checkpoint and returned by lenet_checkpoint_load() (the epoch
 *           number, say), or NULL
 * @return as lenet_model_save(); LENET_EINVAL also if @p o is bound to another model.
 */
LENET_API lenet_status lenet_checkpoint_save(const lenet_model *m, const lenet_optimizer *o, const lenet_iter *it,
                                             const char *note, const char *path);

/**
 * Restores a checkpoint of lenet_checkpoint_save() into a built model and, when not NULL, an optimizer and an
 * iterator, made as for the saved run (same layers, same optimizer kind and hyperparameters, an iterator over a
 * data set of the same size with the same batch size and shuffling).  Training then continues exactly as the
 * saved run would have.  The learning rate is restored too.
 * @param note      if not NULL, receives the note saved with the checkpoint ("" if none), NUL-terminated
 * @param note_size bytes at @p note
 * @return LENET_OK; LENET_EINVAL for NULL model or path, an optimizer bound to another model, or a note that
 *         does not fit in @p note_size; LENET_ESTATE if the model is not built or the model, optimizer or iterator
 *         differs from the saved ones (the message says how); LENET_EIO; LENET_EFORMAT if the file is malformed
 *         or lacks the state of an object passed; LENET_EUNSUPPORTED for a newer format version; LENET_ESHAPE as
 *         lenet_model_load_weights(); LENET_ENOMEM.
 *         On any failure the model (parameters and buffers), optimizer, iterator and note are unchanged.
 */
LENET_API lenet_status lenet_checkpoint_load(lenet_model *m, lenet_optimizer *o, lenet_iter *it, const char *path,
                                             char *note, size_t note_size);

/**
 * Reads the input shape a liblenet checkpoint's model was built for, (channels, height, width), without
 * loading it: what a program needs to prepare images before lenet_model_load().
 * @return LENET_OK; LENET_EINVAL for NULL; LENET_EIO; LENET_EFORMAT as lenet_model_load() (the whole file is
 *         checked).  On failure the outputs are untouched.
 */
LENET_API lenet_status lenet_checkpoint_input_shape(const char *path, int *channels, int *height, int *width);

/* ---- ONNX: models to and from other frameworks (docs/onnx.md) ---- */

/**
 * Exports a built model as an ONNX graph (IR version 7, operator set 13, float32) for ONNX Runtime and other
 * ONNX consumers, replacing an existing file crash-safely as lenet_model_save() does.  The graph has one input
 * "input" (N, C, H, W) and one output "output" (N, ...), N a dynamic dimension named "N"; the parameters and
 * running statistics are initializers named as in lenet_model_param_name() and lenet_model_buffer_name().  It
 * computes what lenet_model_predict() computes (evaluation mode: BatchNorm with its running statistics, Dropout
 * left out); LeNet-5's layers become standard operators (docs/onnx.md lists what maps to what).
 * @return LENET_OK; LENET_EINVAL for NULL; LENET_ESTATE if the model is not built; LENET_EUNSUPPORTED naming the
 *         first layer kind that has no ONNX form, or for a model too large for one ONNX file (2 GiB); LENET_EIO if
 *         the file cannot be written (a file already at @p path is then left as it was); LENET_ENOMEM.
 */
LENET_API lenet_status lenet_model_export_onnx(const lenet_model *m, const char *path);

/**
 * Imports an ONNX model: a chain of the operators liblenet's layers map to, as torch.onnx.export writes an
 * nn.Sequential of them (Conv, Relu/Sigmoid/Tanh, AveragePool/MaxPool, Flatten or Reshape to (N, -1), Gemm or
 * MatMul + Add, BatchNormalization, Dropout, Identity) and as lenet_model_export_onnx() writes LeNet-5's layers,
 * which come back as the same layers.  The model is built for the graph input's (C, H, W) and holds the file's
 * weights and running statistics; it is in training mode, as a new model is.
 * The file is trusted in nothing: every length, count and size is checked before it is used.
 * @return a new built model to free with lenet_model_free(), or NULL with lenet_last_error() naming the file and
 *         the problem: LENET_EINVAL (NULL path); LENET_EIO (cannot read, not a regular file); LENET_EFORMAT (not
 *         ONNX, truncated or corrupt, or a graph whose tensors do not fit its operators); LENET_EUNSUPPORTED
 *         naming the operator (or data type, or graph shape) that has no liblenet layer; LENET_ENOMEM.
 */
LENET_API lenet_model *lenet_model_import_onnx(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* LENET_IO_H */
