/* What the model-level fuzz targets share: a network described as plain data (layer kinds and the constructors'
 * arguments), an exact reference of what building it must give (every shape in 64-bit arithmetic, so a size the
 * library wrapped or truncated shows up as a difference even when nothing crashes), the checks of a built model
 * against that reference through the public API, and the calls a user makes on a model once it is built.
 *
 * The reference knows each layer kind's shape rule (include/lenet/layer.h, lenet5.h).  It is the oracle:
 * - a model whose exact sizes are all small (fuzz_ref.cheap) must build, and then forward, backward and predict;
 * - a model that built must have exactly the reference's shapes (so every size fits an int: no wrap-around);
 * - a model the reference rejects (a kernel larger than its input, a size beyond INT_MAX) must not build.
 * Between the two the library may refuse a model as too large, with a negative status and a message. */
#ifndef LENET_FUZZ_NETWORK_H
#define LENET_FUZZ_NETWORK_H

#include <lenet/lenet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

#define FUZZ_MAX_LAYERS 32

/* The layer kinds of include/lenet/layer.h and lenet5.h. */
typedef enum fuzz_kind {
    FUZZ_CONV2D,          /* out_channels, kernel_size, stride, padding */
    FUZZ_AVGPOOL2D,       /* kernel_size, stride */
    FUZZ_MAXPOOL2D,       /* kernel_size, stride */
    FUZZ_SIGMOID,
    FUZZ_RELU,
    FUZZ_TANH,
    FUZZ_FLATTEN,
    FUZZ_LINEAR,          /* out_features */
    FUZZ_SUBSAMPLE2D,     /* kernel_size, stride */
    FUZZ_PARTIAL_CONV2D,  /* out_channels, in_channels, kernel_size; links: connections of the table */
    FUZZ_RBF,             /* out_features; arg[1]: the inputs it requires (84 for LeNet-5's bitmaps) or 0 */
    FUZZ_SCALED_TANH,
    FUZZ_BATCHNORM1D,     /* eps, momentum (floats) */
    FUZZ_BATCHNORM2D,     /* eps, momentum (floats) */
    FUZZ_DROPOUT,         /* p (float) */
    FUZZ_KIND_COUNT
} fuzz_kind;

/* One layer: its kind and the constructor's arguments in order. */
typedef struct fuzz_layer {
    fuzz_kind kind;
    int arg[4];
    float farg[2]; /* the float arguments (BatchNorm, Dropout) */
    int links;     /* FUZZ_PARTIAL_CONV2D: table entries that are set */
} fuzz_layer;

/* A sequential network as added to a model (layers whose constructor failed are not in it). */
typedef struct fuzz_net {
    size_t count;
    fuzz_layer layer[FUZZ_MAX_LAYERS];
} fuzz_net;

/* A per-sample shape in exact arithmetic. */
typedef struct fuzz_shape {
    int ndim;
    int64_t dim[3];
} fuzz_shape;

/* A parameter or buffer tensor the reference expects. */
typedef struct fuzz_param {
    int layer;
    const char *suffix; /* "weight", "bias" */
    bool trainable;
    int ndim;
    int64_t dim[4];
    uint64_t numel; /* saturating */
} fuzz_param;

/* What building a fuzz_net for one input must give. */
typedef struct fuzz_ref {
    bool valid;          /* every layer fits its input and every dimension fits an int */
    size_t first_bad;    /* the layer that does not fit (count when valid) */
    fuzz_shape in;
    fuzz_shape out[FUZZ_MAX_LAYERS];
    size_t n_params, n_buffers;
    fuzz_param param[2 * FUZZ_MAX_LAYERS];
    fuzz_param buffer[3 * FUZZ_MAX_LAYERS];
    /* Sizes, in floats, saturating at UINT64_MAX: */
    uint64_t arena;      /* all parameters and buffers, each tensor rounded up to 16 floats as the library lays
                          * them out */
    uint64_t largest;    /* the largest per-sample activation: the input, any output, a convolution's padded input */
    uint64_t macs;       /* multiply-adds of a forward pass, per sample */
    uint64_t scratch;    /* the most scratch a layer needs for a chunk of 16 samples (a bound) */
    bool cheap;          /* valid and every size above small: building and running it takes milliseconds */
} fuzz_ref;

/* The bounds of fuzz_ref.cheap. */
#define FUZZ_CHEAP_SAMPLE (1u << 16)   /* floats of the input and of each layer output */
#define FUZZ_CHEAP_PADDED (1u << 18)   /* floats of a convolution's padded input */
#define FUZZ_CHEAP_PARAMS (1u << 20)   /* floats of all parameters */
#define FUZZ_CHEAP_MACS (1u << 19)     /* fuzz_ref.macs (d2l's LeNet: 436,036) */
#define FUZZ_CHEAP_SCRATCH (1u << 22)  /* fuzz_ref.scratch */

/* The library's name of a kind ("Conv2d"). */
const char *fuzz_kind_name(fuzz_kind kind);

/* The number of int arguments of the kind's constructor (PartialConv2d: 3, its table apart). */
int fuzz_kind_arg_count(fuzz_kind kind);

/* The number of float arguments of the kind's constructor. */
int fuzz_kind_float_count(fuzz_kind kind);

/* Computes the reference of `net` on a per-sample input (channels, height, width), each >= 1.  With `built` (the
 * reference of the build), the layers keep the input sizes their parameters were made for, as a built model's
 * summary for another input does. */
void fuzz_ref_compute(const fuzz_net *net, int channels, int height, int width, const fuzz_ref *built,
                      fuzz_ref *ref);

/* Describes a built model's layers as a fuzz_net: kinds by lenet_layer_name(), arguments from the layers' stored
 * constructor arguments (internal: no public getter has them).  False for a kind this file does not know. */
bool fuzz_net_from_model(const lenet_model *m, fuzz_net *net);

/* Checks a built model against the reference of its build through the public getters: input shape, output size,
 * every parameter's name and shape, every layer's output shape as lenet_model_summary() prints it. */
void fuzz_check_built(lenet_model *m, const fuzz_net *net, const fuzz_ref *ref);

/* Summarises a built model for another input and checks the printed shapes against the reference, or, when the
 * library refuses, that the input is not a cheap one. */
void fuzz_check_summary(lenet_model *m, const fuzz_net *net, const fuzz_ref *built, int batch, int channels,
                        int height, int width);

/* Options of fuzz_run_model(). */
typedef struct fuzz_run {
    int batch;            /* samples */
    uint64_t seed;        /* of the input values */
    bool specials;        /* put NaN, infinities and huge values among the inputs */
    bool training;        /* the model is in training mode (BatchNorm refuses one value per channel) */
    bool strict;          /* every call must succeed (the model is cheap and valid); else a failure may be refused */
    bool hessian;         /* also lenet_model_backward_gn() */
} fuzz_run;

/* What a user does with a built, cheap model: one forward, backward, predict and classify on a batch of its own
 * input shape; every status is LENET_OK or a negative one with a message, the outputs have the reference's
 * shape and classify's classes are in range. */
void fuzz_run_model(lenet_model *m, const fuzz_net *net, const fuzz_ref *ref, const fuzz_run *run);

/* Prints the network, the input and what the reference says of it to stderr, when the environment variable
 * LENET_FUZZ_VERBOSE is set (to see what a crashing input is). */
void fuzz_describe(const fuzz_net *net, const fuzz_ref *ref);

/* Checks that `st` is LENET_OK or a negative status with lenet_last_error() set; returns st == LENET_OK. */
bool fuzz_status_ok(lenet_status st);

/* Checks that `st` is a negative status with lenet_last_error() set. */
void fuzz_check_error(lenet_status st);

/* A small deterministic generator for input values. */
uint64_t fuzz_next_random(uint64_t *state);

#endif /* LENET_FUZZ_NETWORK_H */
