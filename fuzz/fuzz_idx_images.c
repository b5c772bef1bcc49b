/* Fuzzes the IDX images reader (raw or gzip, told apart by the bytes): the input is the images file; the labels
 * file is a valid one with as many labels as a raw header declares, so a well-formed input opens and is then
 * read back through every accessor and an iterator. */
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
    unsigned char *labels = malloc(8 + (size_t)n);
    if (!labels)
        return 0;
    size_t labels_size = fuzz_idx(labels, 1, &n, n, 3);
    const char *images_path = fuzz_write_file(0, data, size);
    const char *labels_path = fuzz_write_file(1, labels, labels_size);
    free(labels);
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
