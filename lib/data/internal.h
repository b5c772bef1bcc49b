/* Data set internals shared by the IDX reader and the iterator.  Never installed. */
#ifndef LENET_DATA_INTERNAL_H
#define LENET_DATA_INTERNAL_H

#include "core/internal.h"
#include "lenet/data.h"

struct lenet_dataset {
    size_t n;
    int h, w;               /* stored image size */
    uint8_t *pixels;        /* n * h * w */
    uint8_t *labels;        /* n */
    int pad;                /* transforms applied when a batch is made */
    float background, foreground;
};

/* Writes example i as (h + 2 pad) x (w + 2 pad) floats with the transforms applied. */
void lenet__dataset_render(const lenet_dataset *d, size_t i, float *out);

/* ---- augmentation (augment.c) ---- */

/* A deep copy of `a` (not NULL); NULL with LENET_ENOMEM recorded. */
lenet_augment *lenet__augment_copy(const lenet_augment *a);
/* Floats of scratch lenet__augment_image needs for one h x w image. */
size_t lenet__augment_scratch_floats(int h, int w);
/* Augments one h x w image in place with `a`'s transforms, all draws from a generator seeded by `key`; pixels
 * brought in from outside the image take `background`.  Reads and writes only `image` and `scratch`
 * (lenet__augment_scratch_floats(h, w) floats), so images may be augmented on as many threads at once. */
void lenet__augment_image(const lenet_augment *a, uint64_t key, float *image, int h, int w, float background,
                          float *scratch);
/* One affine warp with fixed parameters (the transform lenet_augment_add_affine draws at random), for tests:
 * turn by `degrees` counter-clockwise on screen, shear along x by `shear_degrees`, scale by `scale`, move by
 * (tx, ty) pixels, about the image's centre.  scratch: h * w floats. */
void lenet__augment_affine(float *image, int h, int w, float background, double degrees, double scale,
                           double shear_degrees, double tx, double ty, float *scratch);
/* A hash of the transforms and their parameters: equal pipelines give equal values, 0 for NULL or empty. */
uint64_t lenet__augment_fingerprint(const lenet_augment *a);
/* "crop(2), flip(0.5)", or "no augmentation", for messages; truncated to `size`. */
void lenet__augment_describe(const lenet_augment *a, char *buf, size_t size);

/* ---- iterator state for checkpoints (lib/io) ---- */

/* Everything that decides the batches an iterator produces next. */
typedef struct lenet_iter_state {
    size_t size;         /* examples per pass (the data set's size) */
    int batch_size;
    bool shuffle;
    size_t position;     /* examples produced in the current pass, <= size */
    const size_t *order; /* size indices, the current pass's permutation: borrowed from the iterator by get,
                          * read by set */
    uint64_t rng[4];     /* generator state: draws the next pass's permutation, and keys the current pass's
                          * augmentation (each image's draws are seeded by it and the image's position) */
    bool has_augment;    /* whether `augment` was recorded: get sets it; a loader that does not read it leaves it
                          * false, and check then does not compare pipelines */
    uint64_t augment;    /* lenet__augment_fingerprint of the iterator's augmentation, 0 for none */
} lenet_iter_state;

/* Reads the iterator's state; s->order borrows the iterator's array (valid until it changes). */
void lenet__iter_get_state(const lenet_iter *it, lenet_iter_state *s);
/* Checks that `s` fits `it` (same size, batch size and shuffle; the same augmentation when `s` records one;
 * position <= size; order a permutation of [0, size)) without changing anything.  LENET_ESTATE when the iterator differs, LENET_EFORMAT when the state
 * itself is invalid, LENET_ENOMEM. */
lenet_status lenet__iter_check_state(const lenet_iter *it, const lenet_iter_state *s);
/* Installs a state that lenet__iter_check_state accepted; cannot fail. */
void lenet__iter_set_state(lenet_iter *it, const lenet_iter_state *s);

#endif /* LENET_DATA_INTERNAL_H */
