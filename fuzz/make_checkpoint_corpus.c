/* Writes the seed corpus of fuzz_checkpoint into the directory given as argument: models saved by
 * lenet_model_save() (the fuzz target's fixed model, a d2l-like LeNet, convolutions alone and a small LeNet-5) and
 * training checkpoints of lenet_checkpoint_save(), with and without optimizer and iterator.  Run by hand:
 *   build/fuzz/make_checkpoint_corpus fuzz/corpus/checkpoint */
#include <lenet/io.h>
#include <lenet/lenet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

static void check(lenet_status st, const char *what)
{
    if (st != LENET_OK) {
        fprintf(stderr, "%s: %s\n", what, lenet_last_error());
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    char path[1024];
    lenet_model *m = lenet_model_create();
    check(lenet_model_add(m, lenet_conv2d(2, 3, 1, 0)), "add");
    check(lenet_model_add(m, lenet_sigmoid()), "add");
    check(lenet_model_add(m, lenet_flatten()), "add");
    check(lenet_model_add(m, lenet_linear(3)), "add");
    check(lenet_model_build(m, 1, 6, 6), "build");
    snprintf(path, sizeof path, "%s/small_model", argv[1]);
    check(lenet_model_save(m, path), "save");

    unsigned char images[16 + 6 * 36], labels[8 + 6];
    const uint32_t idims[3] = {6, 6, 6}, ldims[1] = {6};
    size_t isize = fuzz_idx(images, 3, idims, 6 * 36, 90);
    size_t lsize = fuzz_idx(labels, 1, ldims, 6, 1);
    const char *ipath = fuzz_write_file(2, images, isize);
    const char *lpath = fuzz_write_file(3, labels, lsize);
    lenet_dataset *d = lenet_dataset_open_idx(ipath, lpath);
    lenet_iter *it = lenet_iter_create(d, 4, true, 5);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 0.0f);
    if (!d || !it || !o)
        check(LENET_ENOMEM, "data");
    check(lenet_train_epoch(m, o, it, NULL, NULL, NULL), "train");
    const lenet_tensor *x;
    const int32_t *y;
    int count;
    check(lenet_iter_reset(it), "reset");
    check(lenet_iter_next(it, &x, &y, &count), "next");
    snprintf(path, sizeof path, "%s/small_checkpoint", argv[1]);
    check(lenet_checkpoint_save(m, o, it, "epoch 1", path), "checkpoint");
    snprintf(path, sizeof path, "%s/small_checkpoint_model_only", argv[1]);
    check(lenet_checkpoint_save(m, NULL, NULL, NULL, path), "checkpoint");
    lenet_iter_free(it);
    lenet_optimizer_free(o);
    lenet_dataset_free(d);
    lenet_model_free(m);

    m = lenet_model_create();
    check(lenet_model_add(m, lenet_conv2d(2, 5, 1, 2)), "add");
    check(lenet_model_add(m, lenet_sigmoid()), "add");
    check(lenet_model_add(m, lenet_avgpool2d(2, 2)), "add");
    check(lenet_model_add(m, lenet_conv2d(3, 3, 1, 0)), "add");
    check(lenet_model_add(m, lenet_relu()), "add");
    check(lenet_model_add(m, lenet_maxpool2d(2, 2)), "add");
    check(lenet_model_add(m, lenet_flatten()), "add");
    check(lenet_model_add(m, lenet_linear(5)), "add");
    check(lenet_model_add(m, lenet_tanh()), "add");
    check(lenet_model_add(m, lenet_linear(3)), "add");
    check(lenet_model_build(m, 1, 12, 12), "build");
    snprintf(path, sizeof path, "%s/lenet_like_model", argv[1]);
    check(lenet_model_save(m, path), "save");
    lenet_model_free(m);

    /* A network that ends in its convolution: its parameters do not depend on the input size, so a mutated
     * padding, stride or input shape still loads and reaches the shape arithmetic behind lenet_model_load(). */
    m = lenet_model_create();
    check(lenet_model_add(m, lenet_conv2d(2, 3, 1, 1)), "add");
    check(lenet_model_add(m, lenet_relu()), "add");
    check(lenet_model_add(m, lenet_maxpool2d(2, 2)), "add");
    check(lenet_model_add(m, lenet_conv2d(1, 1, 1, 0)), "add");
    check(lenet_model_build(m, 1, 6, 6), "build");
    snprintf(path, sizeof path, "%s/conv_only_model", argv[1]);
    check(lenet_model_save(m, path), "save");
    lenet_model_free(m);

    /* LeNet-5's own layers (subsampling, C3's table, the RBF bitmaps), on a smaller input than the paper's. */
    m = lenet_model_create();
    check(lenet_model_add(m, lenet_conv2d(6, 3, 1, 0)), "add");
    check(lenet_model_add(m, lenet_scaled_tanh()), "add");
    check(lenet_model_add(m, lenet_subsampling(2, 2)), "add");
    check(lenet_model_add(m, lenet_lenet5_c3()), "add");
    check(lenet_model_add(m, lenet_scaled_tanh()), "add");
    check(lenet_model_add(m, lenet_flatten()), "add");
    check(lenet_model_add(m, lenet_linear(84)), "add");
    check(lenet_model_add(m, lenet_lenet5_rbf()), "add");
    check(lenet_model_build(m, 1, 12, 12), "build");
    check(lenet_model_init(m, LENET_INIT_LECUN, 1), "init");
    snprintf(path, sizeof path, "%s/lenet5_model", argv[1]);
    check(lenet_model_save(m, path), "save");
    lenet_model_free(m);
    return 0;
}
