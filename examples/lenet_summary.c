/* Builds the d2l.ai LeNet and prints its layer-shape summary exactly as PyTorch does, then the full table. */
#include <stdio.h>
#include <string.h>

#include <lenet/lenet.h>

int main(int argc, char **argv)
{
    lenet_model *m = lenet_model_create();
    if (!m) {
        fprintf(stderr, "lenet_summary: %s\n", lenet_last_error());
        return 1;
    }
    lenet_status st = LENET_OK;
    lenet_layer *layers[] = {
        lenet_conv2d(6, 5, 1, 2), lenet_sigmoid(), lenet_avgpool2d(2, 2),
        lenet_conv2d(16, 5, 1, 0), lenet_sigmoid(), lenet_avgpool2d(2, 2), lenet_flatten(),
        lenet_linear(120), lenet_sigmoid(), lenet_linear(84), lenet_sigmoid(), lenet_linear(10),
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        lenet_status added = lenet_model_add(m, layers[i]);
        if (added != LENET_OK && st == LENET_OK)
            st = added;
    }
    if (st == LENET_OK)
        st = lenet_model_summary(m, 1, 1, 28, 28, stdout);
    if (st == LENET_OK && argc > 1 && strcmp(argv[1], "--full") == 0) {
        putchar('\n');
        st = lenet_model_print(m, stdout);
    }
    if (st != LENET_OK)
        fprintf(stderr, "lenet_summary: %s\n", lenet_last_error());
    lenet_model_free(m);
    return st == LENET_OK ? 0 : 1;
}
