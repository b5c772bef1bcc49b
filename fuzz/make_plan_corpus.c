/* Writes the seed corpus of fuzz_plan into the directory given as argument: float and int8 plans
 * (lenet_plan_save) of small networks that together use every layer kind a plan holds: a d2l-like LeNet, a BatchNorm
 * network (folded into its convolution and Linear, one BatchNorm left unfolded after a pooling) with Dropout, and a
 * small LeNet-5 (subsampling, C3's table, scaled tanh, the RBF bitmaps).  Run by hand:
 *   build/fuzz/make_plan_corpus fuzz/corpus/plan */
#include <lenet/lenet.h>
#include <lenet/plan.h>
#include <stdio.h>
#include <stdlib.h>

static void check(lenet_status st, const char *what)
{
    if (st != LENET_OK) {
        fprintf(stderr, "%s: %s\n", what, lenet_last_error());
        exit(1);
    }
}

static lenet_model *model(int n, lenet_layer **layers, int c, int h, int w, uint64_t seed)
{
    lenet_model *m = lenet_model_create();
    if (!m)
        check(LENET_ENOMEM, "create");
    for (int i = 0; i < n; i++)
        check(lenet_model_add(m, layers[i]), "add");
    check(lenet_model_build(m, c, h, w), "build");
    check(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, seed), "init");
    return m;
}

/* Saves the float plan and the int8 plan (calibrated on a fixed batch of 4) of m as DIR/name_float, DIR/name_int8. */
static void save_plans(lenet_model *m, const char *dir, const char *name, int max_batch)
{
    int c, h, w;
    check(lenet_model_input_shape(m, &c, &h, &w), "shape");
    lenet_tensor *x = lenet_tensor_create(4, (int[]){4, c, h, w});
    if (!x)
        check(LENET_ENOMEM, "tensor");
    float *data = lenet_tensor_data(x);
    for (size_t i = 0; i < lenet_tensor_numel(x); i++)
        data[i] = (float)((i * 7) % 11) / 5.0f - 1.0f;
    char path[1024];
    lenet_plan *p = lenet_plan_create(m, max_batch);
    if (!p)
        check(LENET_EINVAL, "plan_create");
    snprintf(path, sizeof path, "%s/%s_float", dir, name);
    check(lenet_plan_save(p, path), "plan_save");
    lenet_plan_free(p);
    p = lenet_plan_create_int8(m, max_batch, x);
    if (!p)
        check(LENET_EINVAL, "plan_create_int8");
    snprintf(path, sizeof path, "%s/%s_int8", dir, name);
    check(lenet_plan_save(p, path), "plan_save");
    lenet_plan_free(p);
    lenet_tensor_free(x);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    lenet_model *m = model(10,
                           (lenet_layer *[]){lenet_conv2d(2, 5, 1, 2), lenet_sigmoid(), lenet_avgpool2d(2, 2),
                                             lenet_conv2d(3, 3, 1, 0), lenet_relu(), lenet_maxpool2d(2, 2),
                                             lenet_flatten(), lenet_linear(5), lenet_tanh(), lenet_linear(3)},
                           1, 12, 12, 1);
    save_plans(m, argv[1], "lenet_like", 4);
    lenet_model_free(m);

    m = model(12,
              (lenet_layer *[]){lenet_conv2d(3, 3, 1, 1), lenet_batchnorm2d(1e-5f, 0.1f), lenet_relu(),
                                lenet_maxpool2d(2, 2), lenet_batchnorm2d(1e-5f, 0.1f), lenet_flatten(),
                                lenet_linear(6), lenet_batchnorm1d(1e-5f, 0.1f), lenet_relu(), lenet_dropout(0.5f),
                                lenet_linear(4), lenet_sigmoid()},
              2, 6, 6, 2);
    save_plans(m, argv[1], "batchnorm", 3);
    lenet_model_free(m);

    m = model(8,
              (lenet_layer *[]){lenet_conv2d(6, 3, 1, 0), lenet_scaled_tanh(), lenet_subsampling(2, 2),
                                lenet_lenet5_c3(), lenet_scaled_tanh(), lenet_flatten(), lenet_linear(84),
                                lenet_lenet5_rbf()},
              1, 12, 12, 3);
    save_plans(m, argv[1], "lenet5", 2);
    lenet_model_free(m);
    return 0;
}
