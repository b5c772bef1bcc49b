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

/* ---- iterator state for checkpoints (lib/io) ---- */

/* Everything that decides the batches an iterator produces next. */
typedef struct lenet_iter_state {
    size_t size;         /* examples per pass (the data set's size) */
    int batch_size;
    bool shuffle;
    size_t position;     /* examples produced in the current pass, <= size */
    const size_t *order; /* size indices, the current pass's permutation: borrowed from the iterator by get,
                          * read by set */
    uint64_t rng[4];     /* generator state: draws the next pass's permutation */
} lenet_iter_state;

/* Reads the iterator's state; s->order borrows the iterator's array (valid until it changes). */
void lenet__iter_get_state(const lenet_iter *it, lenet_iter_state *s);
/* Checks that `s` fits `it` (same size, batch size and shuffle; position <= size; order a permutation of
 * [0, size)) without changing anything.  LENET_ESTATE when the iterator differs, LENET_EFORMAT when the state
 * itself is invalid, LENET_ENOMEM. */
lenet_status lenet__iter_check_state(const lenet_iter *it, const lenet_iter_state *s);
/* Installs a state that lenet__iter_check_state accepted; cannot fail. */
void lenet__iter_set_state(lenet_iter *it, const lenet_iter_state *s);

#endif /* LENET_DATA_INTERNAL_H */
