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

#endif /* LENET_DATA_INTERNAL_H */
