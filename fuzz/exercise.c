#include "exercise.h"

#include <stdlib.h>

#include "fuzz_common.h"

void fuzz_exercise_dataset(lenet_dataset *d)
{
    size_t n = lenet_dataset_size(d);
    FUZZ_CHECK(n >= 1);
    FUZZ_CHECK(lenet_dataset_set_padding(d, 2) == LENET_OK);
    int h = lenet_dataset_height(d), w = lenet_dataset_width(d);
    FUZZ_CHECK(h >= 5 && w >= 5);
    float *image = malloc((size_t)h * (size_t)w * sizeof *image);
    if (!image)
        return;
    size_t last = n - 1;
    FUZZ_CHECK(lenet_dataset_image(d, last, image) == LENET_OK);
    FUZZ_CHECK(lenet_dataset_image(d, n, image) == LENET_EINVAL);
    FUZZ_CHECK(image[0] == 0.0f); /* padding */
    for (size_t i = 0; i < (size_t)h * (size_t)w; i++)
        FUZZ_CHECK(image[i] >= 0.0f && image[i] <= 1.0f);
    int32_t label = lenet_dataset_label(d, last);
    FUZZ_CHECK(label >= 0 && label <= 255);
    FUZZ_CHECK(lenet_dataset_label(d, n) == -1);
    free(image);

    lenet_iter *it = lenet_iter_create(d, 7, true, 1);
    if (!it)
        return;
    const lenet_tensor *images;
    const int32_t *labels;
    int count;
    size_t seen = 0;
    lenet_status st;
    while ((st = lenet_iter_next(it, &images, &labels, &count)) == LENET_OK) {
        FUZZ_CHECK(count >= 1 && count <= 7);
        FUZZ_CHECK(lenet_tensor_dim(images, 0) == count && lenet_tensor_dim(images, 2) == h &&
                   lenet_tensor_dim(images, 3) == w);
        FUZZ_CHECK(labels[count - 1] >= 0 && labels[count - 1] <= 255);
        seen += (size_t)count;
    }
    FUZZ_CHECK(st == LENET_DONE && seen == n);
    lenet_iter_free(it);
}
