/* Builds the d2l.ai LeNet and prints its layer-shape summary exactly as PyTorch does; with --full, also the
 * library's table of parameters and connections per layer. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <lenet/lenet.h>

#define PROG "lenet_summary"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " PROG " [--full]\n"
            "Builds d2l.ai's LeNet (Conv2d, Sigmoid, AvgPool2d, ..., Linear(10)) for one 1x28x28 image and prints\n"
            "each layer's output shape as PyTorch prints it (torch.Size).\n"
            "\n"
            "  --full     also print the table of output shapes, parameters and connections per layer\n"
            "  --version  print liblenet's version\n"
            "  --help     show this help\n");
}

int main(int argc, char **argv)
{
    bool full = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--full") == 0) {
            full = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf(PROG " (liblenet %s)\n", lenet_version_string());
            return 0;
        } else {
            fprintf(stderr, PROG ": %s '%s'; " PROG " --help lists the options\n",
                    argv[i][0] == '-' ? "unknown option" : "unexpected argument", argv[i]);
            return 2;
        }
    }

    lenet_model *m = lenet_model_create();
    if (!m) {
        fprintf(stderr, PROG ": %s\n", lenet_last_error());
        return 1;
    }
    /* lenet_model_add takes every layer, also the NULL of a failed constructor, and reports the first failure. */
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
    if (st == LENET_OK && full) {
        putchar('\n');
        st = lenet_model_print(m, stdout);
    }
    if (st != LENET_OK)
        fprintf(stderr, PROG ": %s\n", lenet_last_error());
    lenet_model_free(m);
    if (fflush(stdout) != 0 && st == LENET_OK) {
        perror(PROG ": writing the summary");
        return 1;
    }
    return st == LENET_OK ? 0 : 1;
}
