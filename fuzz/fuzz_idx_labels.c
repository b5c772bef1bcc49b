/* Fuzzes the IDX labels reader (raw or gzip): the input is the labels file; the images file is a valid one of
 * 5x5 images, as many as a raw labels header declares, so a well-formed input opens and is read back. */
#include <lenet/lenet.h>
#include <stdlib.h>

#include "core/internal.h"
#include "exercise.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t n = fuzz_idx_count(data, size, 1);
    if (n == 0 || n > 4096)
        n = 1;
    const uint32_t dims[3] = {n, 5, 5};
    unsigned char *images = malloc(16 + 25 * (size_t)n);
    if (!images)
        return 0;
    size_t images_size = fuzz_idx(images, 3, dims, 25 * (size_t)n, 200);
    const char *images_path = fuzz_write_file(0, images, images_size);
    const char *labels_path = fuzz_write_file(1, data, size);
    free(images);
    if (!images_path || !labels_path)
        return 0;
    lenet_error_clear();
    lenet_dataset *d = lenet_dataset_open_idx(images_path, labels_path);
    if (!d) {
        if (!lenet_last_error()[0])
            abort(); /* every failure must say why */
        if (lenet__last_status() == LENET_ENOMEM && size <= FUZZ_MAX_INPUT)
            abort(); /* the reader believed a size the file does not hold */
        return 0;
    }
    fuzz_exercise_dataset(d);
    lenet_dataset_free(d);
    return 0;
}
