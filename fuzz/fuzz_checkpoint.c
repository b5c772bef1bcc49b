/* Fuzzes the checkpoint loaders (safetensors: a little-endian length, a JSON header with liblenet's metadata, the
 * architecture as JSON text, then tensor bytes): the input is one file, given to lenet_model_load(),
 * lenet_model_load_weights() into a fixed small model, and lenet_checkpoint_load() into that model with an SGD
 * optimizer and an iterator.  A model that loads is checked against the exact shapes of its architecture
 * (fuzz/network.h: a size that wrapped shows even without a crash) and, when it is small, used as a program
 * would use it (forward, backward, predict, classify), saved and loaded again; a failed load must leave the fixed
 * objects unchanged. */
#include <lenet/io.h>
#include <lenet/lenet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h" /* lenet__last_status(): which error a NULL from lenet_model_load() stands for */
#include "fuzz_common.h"
#include "network.h"

/* The fixed objects, made once: Conv2d(2, 3) Sigmoid Flatten Linear(3) over 1x6x6, SGD with momentum, and an
 * iterator over six 6x6 images in batches of 4. */
static lenet_model *fixed;
static lenet_optimizer *fixed_sgd;
static lenet_dataset *fixed_data;
static lenet_iter *fixed_iter;

static void make_fixed(void)
{
    fixed = lenet_model_create();
    FUZZ_CHECK(fixed);
    FUZZ_CHECK(lenet_model_add(fixed, lenet_conv2d(2, 3, 1, 0)) == LENET_OK);
    FUZZ_CHECK(lenet_model_add(fixed, lenet_sigmoid()) == LENET_OK);
    FUZZ_CHECK(lenet_model_add(fixed, lenet_flatten()) == LENET_OK);
    FUZZ_CHECK(lenet_model_add(fixed, lenet_linear(3)) == LENET_OK);
    FUZZ_CHECK(lenet_model_build(fixed, 1, 6, 6) == LENET_OK);
    fixed_sgd = lenet_sgd_create(fixed, 0.1f, 0.9f, 0.0f);
    FUZZ_CHECK(fixed_sgd);
    unsigned char images[16 + 6 * 36], labels[8 + 6];
    const uint32_t idims[3] = {6, 6, 6}, ldims[1] = {6};
    size_t isize = fuzz_idx(images, 3, idims, 6 * 36, 90);
    size_t lsize = fuzz_idx(labels, 1, ldims, 6, 1);
    const char *ipath = fuzz_write_file(2, images, isize);
    const char *lpath = fuzz_write_file(3, labels, lsize);
    FUZZ_CHECK(ipath && lpath);
    fixed_data = lenet_dataset_open_idx(ipath, lpath);
    FUZZ_CHECK(fixed_data);
    fixed_iter = lenet_iter_create(fixed_data, 4, true, 5);
    FUZZ_CHECK(fixed_iter);
}

static void free_fixed(void)
{
    lenet_iter_free(fixed_iter);
    lenet_dataset_free(fixed_data);
    lenet_optimizer_free(fixed_sgd);
    lenet_model_free(fixed);
    fixed = NULL;
}

/* All parameters of a built model, one tensor after the other, in a new array of *count floats. */
static float *copy_params(lenet_model *m, size_t *count)
{
    *count = 0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        *count += lenet_tensor_numel(lenet_model_param(m, i));
    float *copy = malloc((*count ? *count : 1) * sizeof *copy), *at = copy;
    FUZZ_CHECK(copy);
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        const lenet_tensor *t = lenet_model_param(m, i);
        memcpy(at, lenet_tensor_cdata(t), lenet_tensor_numel(t) * sizeof *at);
        at += lenet_tensor_numel(t);
    }
    return copy;
}

/* True if the model's parameters are bit for bit the `count` floats of `copy`. */
static bool same_params(lenet_model *m, const float *copy, size_t count)
{
    size_t now;
    float *params = copy_params(m, &now);
    bool same = now == count && memcmp(params, copy, count * sizeof *copy) == 0;
    free(params);
    return same;
}

/* A model that loaded: its shapes must be the exact ones of its architecture; when it is small, run it as a
 * program would after loading it, and round-trip it through a file. */
static void exercise_loaded(lenet_model *m, const uint8_t *data, size_t size)
{
    FUZZ_CHECK(lenet_model_is_built(m));
    int c, h, w;
    FUZZ_CHECK(lenet_model_input_shape(m, &c, &h, &w) == LENET_OK);
    FUZZ_CHECK(lenet_model_build(m, c, h, w) == LENET_OK); /* built already: a no-op */
    fuzz_net net;
    if (!fuzz_net_from_model(m, &net))
        return;
    fuzz_ref ref;
    fuzz_ref_compute(&net, c, h, w, NULL, &ref);
    fuzz_describe(&net, &ref);
    fuzz_check_built(m, &net, &ref);
    if (!ref.cheap)
        return;
    /* A file's weights may be anything (NaN too), and a failure is allowed as long as it is reported. */
    uint64_t seed = size;
    for (size_t i = 0; i < size; i++)
        seed = seed * 31 + data[i];
    fuzz_run run = {.batch = 1 + (int)(seed % 3), .seed = seed, .specials = seed & 8,
                    .training = lenet_model_is_training(m), .strict = false};
    fuzz_run_model(m, &net, &ref, &run);

    const char *path = fuzz_write_file(1, "", 0);
    FUZZ_CHECK(path);
    lenet_status st = lenet_model_save(m, path);
    if (st == LENET_EUNSUPPORTED)
        return;
    FUZZ_CHECK(st == LENET_OK);
    lenet_model *again = lenet_model_load(path);
    FUZZ_CHECK(again);
    fuzz_check_built(again, &net, &ref);
    size_t count;
    float *params = copy_params(m, &count);
    FUZZ_CHECK(same_params(again, params, count));
    free(params);
    lenet_model_free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fixed)
        make_fixed();
    const char *path = fuzz_write_file(0, data, size);
    if (!path)
        return 0;

    lenet_error_clear();
    lenet_model *m = lenet_model_load(path);
    if (m) {
        exercise_loaded(m, data, size);
        lenet_model_free(m);
    } else {
        FUZZ_CHECK(lenet_last_error()[0]);
        FUZZ_CHECK(lenet__last_status() != LENET_ENOMEM || size > FUZZ_MAX_INPUT);
    }

    size_t count;
    float *before = copy_params(fixed, &count);
    lenet_error_clear();
    lenet_status st = lenet_model_load_weights(fixed, path);
    if (st != LENET_OK) {
        FUZZ_CHECK(st < 0 && lenet_last_error()[0]);
        FUZZ_CHECK(st != LENET_ENOMEM || size > FUZZ_MAX_INPUT);
        FUZZ_CHECK(same_params(fixed, before, count));
    }
    free(before);
    bool changed = st == LENET_OK;

    before = copy_params(fixed, &count);
    size_t position = lenet_iter_position(fixed_iter);
    float lr = lenet_optimizer_lr(fixed_sgd);
    char note[64];
    lenet_error_clear();
    st = lenet_checkpoint_load(fixed, fixed_sgd, fixed_iter, path, note, sizeof note);
    if (st == LENET_OK) {
        FUZZ_CHECK(memchr(note, '\0', sizeof note) != NULL);
        /* The restored state must be usable: one training pass. */
        lenet_metrics mt;
        lenet_status tst = lenet_train_epoch(fixed, fixed_sgd, fixed_iter, NULL, NULL, &mt);
        FUZZ_CHECK(tst == LENET_OK || tst == LENET_ENUMERIC || tst == LENET_EINVAL);
        changed = true;
    } else {
        FUZZ_CHECK(st < 0 && lenet_last_error()[0]);
        FUZZ_CHECK(st != LENET_ENOMEM || size > FUZZ_MAX_INPUT);
        FUZZ_CHECK(same_params(fixed, before, count));
        FUZZ_CHECK(lenet_iter_position(fixed_iter) == position);
        FUZZ_CHECK(lenet_optimizer_lr(fixed_sgd) == lr);
    }
    free(before);
    /* Every input starts from the same objects, so a crash replays alone. */
    if (changed)
        free_fixed();
    return 0;
}
