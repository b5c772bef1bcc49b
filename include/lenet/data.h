/**
 * @file data.h
 * @brief IDX data sets (MNIST, Fashion-MNIST) and a batch iterator.
 */
#ifndef LENET_DATA_H
#define LENET_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lenet/export.h"
#include "lenet/status.h"
#include "lenet/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque data set of images and labels held in memory as bytes. */
typedef struct lenet_dataset lenet_dataset;

/** An opaque iterator over batches of a data set. */
typedef struct lenet_iter lenet_iter;

/** The default data limit of lenet_dataset_set_max_bytes(): 1 GiB, room for EMNIST (ByClass: 697,932 x 28 x 28). */
#define LENET_DATASET_DEFAULT_MAX_BYTES ((size_t)1 << 30)

/**
 * Reads an IDX images file (magic 0x00000803, N x H x W bytes) and an IDX labels file (0x00000801, N bytes).
 * Each may be gzip-compressed (one gzip stream) or raw, told apart by its first bytes.  Everything is
 * validated: magic numbers, dimensions, equal item counts, complete data, the gzip CRC-32 and length, and that
 * nothing follows the data (neither bytes after it nor after the gzip stream).  A header that declares more
 * than lenet_dataset_max_bytes() is refused before any data is read.  A path that is not a regular file (a
 * directory, a FIFO, a device) is refused at once, without waiting on it.  Pixels stay bytes in memory and
 * become floats in [0, 1] one batch at a time.
 * @return a new data set to free with lenet_dataset_free(), or NULL with lenet_last_error() naming the file
 *         and what is wrong (LENET_EIO, LENET_EFORMAT, LENET_EINVAL, LENET_ENOMEM).
 */
LENET_API lenet_dataset *lenet_dataset_open_idx(const char *images_path, const char *labels_path);

/**
 * Sets the data limit of lenet_dataset_open_idx(): the largest number of pixel bytes an images file may declare
 * (count x height x width) and the largest number of labels a labels file may declare.  A file over it is
 * refused with LENET_EFORMAT, and a message naming the limit, before any of its data is read or allocated, so a
 * small gzip file cannot make the loader inflate and allocate gigabytes.  The default is
 * LENET_DATASET_DEFAULT_MAX_BYTES (1 GiB); raise it to load larger data sets.
 *
 * The limit is process-wide: it applies to every later lenet_dataset_open_idx() on every thread (one already
 * under way keeps the limit it started with).  Thread-safe: the value is an atomic.
 * @return LENET_OK; LENET_EINVAL for 0, leaving the limit unchanged.
 */
LENET_API lenet_status lenet_dataset_set_max_bytes(size_t max_bytes);

/** Returns the data limit of lenet_dataset_set_max_bytes() in bytes.  Thread-safe. */
LENET_API size_t lenet_dataset_max_bytes(void);

/** Returns the number of examples, 0 for NULL. */
LENET_API size_t lenet_dataset_size(const lenet_dataset *d);

/** Frees the data set.  Harmless on NULL.  Iterators over it must be freed first. */
LENET_API void lenet_dataset_free(lenet_dataset *d);

/**
 * Zero-pads every image by @p pad pixels on each side (LeNet-5 reads MNIST's 28x28 digits as 32x32: pad 2).
 * Padding takes the background value of lenet_dataset_set_range().  Set it before creating iterators.
 * @return LENET_OK; LENET_EINVAL for NULL or pad outside [0, 64].
 */
LENET_API lenet_status lenet_dataset_set_padding(lenet_dataset *d, int pad);

/**
 * Maps pixel bytes linearly so 0 becomes @p background and 255 becomes @p foreground (default 0 and 1;
 * LeNet-5 uses -0.1 and 1.175).  Set it before creating iterators.
 * @return LENET_OK; LENET_EINVAL for NULL or non-finite values.
 */
LENET_API lenet_status lenet_dataset_set_range(lenet_dataset *d, float background, float foreground);

/** Returns the height of the images the iterators produce (padding included), 0 for NULL. */
LENET_API int lenet_dataset_height(const lenet_dataset *d);

/** Returns the width of the images the iterators produce (padding included), 0 for NULL. */
LENET_API int lenet_dataset_width(const lenet_dataset *d);

/** Returns the label of example @p i, or -1 if out of range. */
LENET_API int32_t lenet_dataset_label(const lenet_dataset *d, size_t i);

/**
 * Writes example @p i as floats (1 x height x width, transforms applied) into @p out, which holds
 * lenet_dataset_height() * lenet_dataset_width() floats.
 * @return LENET_OK; LENET_EINVAL for NULL or i out of range.
 */
LENET_API lenet_status lenet_dataset_image(const lenet_dataset *d, size_t i, float *out);

/**
 * Creates an iterator over @p d in batches of @p batch_size (the last batch may be short).
 * With @p shuffle, each pass visits the examples in a permutation drawn from a generator seeded by @p seed:
 * the same seed gives the same order on every machine.
 * @param d borrowed: it must outlive the iterator.
 * @return a new iterator to free with lenet_iter_free(), or NULL (LENET_EINVAL, LENET_ENOMEM).
 */
LENET_API lenet_iter *lenet_iter_create(lenet_dataset *d, int batch_size, bool shuffle, uint64_t seed);

/**
 * Produces the next batch.
 * @param images receives an (count, C, H, W) tensor, borrowed: valid until the next call on this iterator
 * @param labels receives count labels, borrowed likewise
 * @param count  receives the batch size (the last batch may be short)
 * @return LENET_OK; LENET_DONE after the last batch (outputs untouched); LENET_EINVAL for NULL.
 */
LENET_API lenet_status lenet_iter_next(lenet_iter *it, const lenet_tensor **images, const int32_t **labels,
                                       int *count);

/** Starts the next pass: a new permutation from the same generator stream.  @return LENET_OK, LENET_EINVAL. */
LENET_API lenet_status lenet_iter_reset(lenet_iter *it);

/** Returns the number of examples one pass visits (the data set's size), 0 for NULL. */
LENET_API size_t lenet_iter_total(const lenet_iter *it);

/** Returns how many examples the current pass has produced so far (equal to the total once it is exhausted). */
LENET_API size_t lenet_iter_position(const lenet_iter *it);

/** Frees the iterator (not its data set).  Harmless on NULL. */
LENET_API void lenet_iter_free(lenet_iter *it);

#ifdef __cplusplus
}
#endif

#endif /* LENET_DATA_H */
