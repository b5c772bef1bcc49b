/**
 * @file data.h
 * @brief IDX data sets (MNIST, Fashion-MNIST), a batch iterator and data augmentation.
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

/* ---- augmentation ---- */

/**
 * An opaque pipeline of random image transforms (data augmentation) for an iterator's training batches.
 *
 * Build one with lenet_augment_create() and the lenet_augment_add_*() functions (or take a preset,
 * lenet_augment_mnist(), lenet_augment_fashion()), then give it to lenet_iter_set_augment(), which copies it.
 * The transforms run in the order they were added, on each image after the data set's padding and pixel range
 * (lenet_dataset_set_padding(), lenet_dataset_set_range()) are applied; pixels brought in from outside the image
 * take the data set's background value.  A run of affine transforms, and an elastic transform right after them,
 * are sampled together in one bilinear interpolation.
 *
 * Not thread-safe while it is being built; once built it may be read (given to iterators) from any thread.
 */
typedef struct lenet_augment lenet_augment;

/**
 * Creates an empty pipeline (no transform: the identity).
 * @return a new pipeline to free with lenet_augment_free(), or NULL (LENET_ENOMEM).
 */
LENET_API lenet_augment *lenet_augment_create(void);

/** Frees the pipeline.  Harmless on NULL.  Iterators it was given to keep their own copies. */
LENET_API void lenet_augment_free(lenet_augment *a);

/** Returns the number of transforms in the pipeline, 0 for NULL. */
LENET_API size_t lenet_augment_count(const lenet_augment *a);

/**
 * Appends a random crop with padding: the image is padded by @p padding background pixels on each side and a
 * window of its own size is cut at a uniformly random offset, i.e. it moves by whole pixels (dx, dy), each
 * uniform in [-padding, padding], with background filling what moves in.  Exact: no interpolation.
 * torchvision's RandomCrop(size, padding).  0 is the identity.
 * @return LENET_OK; LENET_EINVAL for NULL or padding outside [0, 64]; LENET_ENOMEM.
 */
LENET_API lenet_status lenet_augment_add_crop(lenet_augment *a, int padding);

/**
 * Appends a horizontal flip (left-right mirror) applied with probability @p probability to each image.
 * Not for digits or text, whose mirror images are not examples of the same class.
 * @return LENET_OK; LENET_EINVAL for NULL or probability outside [0, 1] (or NaN); LENET_ENOMEM.
 */
LENET_API lenet_status lenet_augment_add_flip(lenet_augment *a, float probability);

/**
 * Appends a random affine transform about the image's centre, resampled bilinearly.  Per image it draws, each
 * uniformly: a rotation in [-max_degrees, max_degrees] (positive turns counter-clockwise on screen), a scale
 * factor in [1 - max_scale, 1 + max_scale] (above 1 enlarges the content), a horizontal shear of
 * [-max_shear_degrees, max_shear_degrees] and a translation of [-max_translate, max_translate] pixels along each
 * axis.  All zero is the identity, bit for bit.  These are the planar affine distortions of LeCun et al. 1998
 * (translation, scaling, squeezing, shearing), and torchvision's RandomAffine with the translation in pixels.
 * @return LENET_OK; LENET_EINVAL for NULL or a value outside its range (max_degrees [0, 180], max_scale [0, 1),
 *         max_shear_degrees [0, 60], max_translate [0, 1024]) or NaN, with a message naming it; LENET_ENOMEM.
 */
LENET_API lenet_status lenet_augment_add_affine(lenet_augment *a, float max_degrees, float max_scale,
                                                float max_shear_degrees, float max_translate);

/**
 * Appends Simard's elastic distortion (Simard, Steinkraus and Platt 2003): two fields of displacements, uniform in
 * [-1, 1) at every pixel, are smoothed by a Gaussian of standard deviation @p sigma pixels (truncated at 4 sigma,
 * zero outside the image, as scipy.ndimage.gaussian_filter) and scaled by @p alpha; each output pixel then takes
 * the input at its own position plus its displacement, interpolated bilinearly.  Simard used alpha 34 and
 * sigma 4 on 28x28 MNIST digits.  alpha 0 is the identity, bit for bit.
 * @return LENET_OK; LENET_EINVAL for NULL, alpha outside [0, 1000], sigma outside (0, 100] or NaN; LENET_ENOMEM.
 */
LENET_API lenet_status lenet_augment_add_elastic(lenet_augment *a, float alpha, float sigma);

/**
 * Creates the preset for MNIST-like digits: lenet_augment_add_affine(a, 10, 0.1, 10, 2) (rotation up to 10
 * degrees, scale 0.9 to 1.1, shear up to 10 degrees, translation up to 2 pixels) followed by Simard's
 * lenet_augment_add_elastic(a, 34, 4), sampled together in one interpolation.  No flip: a mirrored digit is not
 * a digit.
 * @return a new pipeline to free with lenet_augment_free(), or NULL (LENET_ENOMEM).
 */
LENET_API lenet_augment *lenet_augment_mnist(void);

/**
 * Creates the preset for Fashion-MNIST-like images: lenet_augment_add_crop(a, 2) then
 * lenet_augment_add_flip(a, 0.5), the usual augmentation of small natural images (clothes are left-right
 * symmetric classes).
 * @return a new pipeline to free with lenet_augment_free(), or NULL (LENET_ENOMEM).
 */
LENET_API lenet_augment *lenet_augment_fashion(void);

/**
 * Makes the iterator augment every image it produces from its next batch on, with a copy of @p a (the caller
 * keeps @p a and may change or free it at once); NULL or an empty pipeline turns augmentation off.  Iterators do
 * not augment unless asked, so leave test and validation iterators alone.
 *
 * Each image's random draws come from a generator seeded by the iterator's pass (its seed and the number of
 * passes) and the image's position in the pass: the batches are the same, bit for bit, for any thread count
 * (lenet_threads_set()) and any batch size, a new pass draws new transforms, and a checkpoint
 * (lenet_checkpoint_save()) that holds the iterator's state resumes with the same augmented images provided the
 * resumed iterator is given the same pipeline.  The images are augmented in parallel on the library's threads.
 *
 * Not thread-safe for one iterator, like every call on it.
 * @return LENET_OK; LENET_EINVAL for a NULL iterator; LENET_ENOMEM, leaving the previous pipeline in place.
 */
LENET_API lenet_status lenet_iter_set_augment(lenet_iter *it, const lenet_augment *a);

#ifdef __cplusplus
}
#endif

#endif /* LENET_DATA_H */
