/* Fuzzes what a program does with the public API to define a network: the input bytes become a list of layers
 * made by every constructor of include/lenet/layer.h and lenet5.h (LeNet-5's subsampling, C3, RBF), with arguments
 * mixing small values and edge values (0, -1, INT_MAX, 1 << 30, ...), and an input shape; the model is built and,
 * when its sizes are small, initialised, run forward, backward and predict on a batch of 1 to 3 or 17 (the
 * chunked paths), trained one SGD step, summarised and saved and loaded again.
 *
 * fuzz/network.c computes the exact shapes of the same network: a constructor must refuse exactly the invalid
 * arguments, a model that builds must have exactly those shapes (so no size wrapped), a small valid model must
 * build and run, and every status is LENET_OK or negative with a message.
 *
 * Input layout (fuzz/make_corpus.py writes seeds in it):
 *   flags, flags2, channels, height, width, another channels, height, width (for a summary), then layers, each a
 *   kind byte and the kind's arguments.  An int argument is a selector byte: 0x00-0x9f small (s % 40),
 *   0xa0-0xbf one more byte, 0xc0-0xcf two more bytes (little-endian), 0xd0-0xef an edge value, 0xf0-0xff four
 *   more bytes (little-endian int32).  Missing bytes read as 1.  A float argument (BatchNorm, Dropout) is a
 *   selector byte: 0x00-0xbf an edge value (0, 1e-5, 1, NaN, infinity, ...), 0xc0-0xff four more bytes.
 *   flags:  bits 0-1 how the model is built (0, 3: lenet_model_build, 1: lenet_model_summary, 2: the first
 *           forward), bits 2-3 the init scheme (3: an invalid one first), bits 4-5 the batch (1, 2, 3, 17),
 *           bit 6 NaN and infinities among inputs and weights, bit 7 save and load again;
 *   flags2: bit 0 the Gauss-Newton backward pass, bit 1 one SGD step, bit 2 one thread instead of two, bit 3
 *           the other summary for a batch of INT_MAX (bit 7: 17, else 1), bit 5 also adds what a constructor
 *           returned when it is NULL (the model is then unusable: every later call fails with that error),
 *           bit 6 runs in evaluation mode. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "network.h"

#ifdef FUZZ_LIBFUZZER
/* A valid model may need more memory than libFuzzer allows (-malloc_limit_mb): the library must then fail with
 * LENET_ENOMEM, so large allocations return NULL here instead of ending the run. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=1000";
}
#endif

/* Kinds of the kind byte beyond fuzz_kind: LeNet-5's ready-made layers. */
enum { KIND_C3 = FUZZ_KIND_COUNT, KIND_RBF_LENET5, KIND_BYTE_COUNT };

/* A model whose parameters need at least this many floats (8 GiB) is past anything the library accepts or the
 * replay's address space allows: building it must fail, without touching that memory. */
#define HUGE_ARENA ((uint64_t)1 << 31)

/* Batches of 17 (two chunks) only for networks this cheap per sample (fuzz_ref.macs). */
#define BATCH17_MACS ((uint64_t)1 << 16)

typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader;

static int next_byte(reader *r)
{
    if (r->left == 0)
        return -1;
    r->left--;
    return *r->p++;
}

static unsigned read_le(reader *r, int bytes)
{
    unsigned v = 0;
    for (int i = 0; i < bytes; i++) {
        int b = next_byte(r);
        v |= (unsigned)(b < 0 ? 0 : b) << (8 * i);
    }
    return v;
}

static const int edge_values[32] = {
    0, -1, 1, 2, INT_MAX, INT_MAX / 2, 1 << 15, 1 << 16, 1 << 30, INT_MIN, INT_MAX - 1, (1 << 15) - 1,
    (1 << 15) + 1, (1 << 16) - 1, (1 << 16) + 1, 46340, 46341, 1 << 28, (1 << 28) + 1, 1 << 24, 3, 4, 5, 6,
    16, 28, 32, 84, 120, -2, INT_MAX / 3, (1 << 30) - 1,
};

static int read_int(reader *r)
{
    int s = next_byte(r);
    if (s < 0)
        return 1;
    if (s < 0xa0)
        return s % 40;
    if (s < 0xc0)
        return (int)read_le(r, 1);
    if (s < 0xd0)
        return (int)read_le(r, 2);
    if (s < 0xf0)
        return edge_values[s - 0xd0];
    unsigned v = read_le(r, 4);
    int out;
    memcpy(&out, &v, sizeof out);
    return out;
}

static const float edge_floats[16] = {
    1e-5f, 0.1f, 0.0f, 0.5f, 1.0f, -0.1f, 0.9f, 0.99999994f, NAN, INFINITY, -0.0f, FLT_MIN, FLT_MAX, 1e-45f, 2.0f,
    1e-3f,
};

/* A float argument: a selector byte, 0x00-0xbf an edge value (s % 16), 0xc0-0xff four more bytes (the bits). */
static float read_float(reader *r)
{
    int s = next_byte(r);
    if (s < 0)
        return 0.1f;
    if (s < 0xc0)
        return edge_floats[s % 16];
    unsigned v = read_le(r, 4);
    float out;
    memcpy(&out, &v, sizeof out);
    return out;
}

/* The constructors' argument rules (include/lenet/layer.h). */
static bool args_valid(const fuzz_layer *l, bool has_table)
{
    const int *a = l->arg;
    switch (l->kind) {
    case FUZZ_CONV2D:
        return a[0] >= 1 && a[1] >= 1 && a[2] >= 1 && a[3] >= 0;
    case FUZZ_AVGPOOL2D:
    case FUZZ_MAXPOOL2D:
    case FUZZ_SUBSAMPLE2D:
        return a[0] >= 1 && a[1] >= 1;
    case FUZZ_LINEAR:
        return a[0] >= 1;
    case FUZZ_PARTIAL_CONV2D:
        return a[0] >= 1 && a[1] >= 1 && a[2] >= 1 && has_table && (long long)a[0] * a[1] <= 240 && l->links > 0;
    case FUZZ_RBF:
        return a[0] >= 1;
    case FUZZ_BATCHNORM1D:
    case FUZZ_BATCHNORM2D:
        return l->farg[0] > 0.0f && isfinite(l->farg[0]) && l->farg[1] >= 0.0f && l->farg[1] <= 1.0f;
    case FUZZ_DROPOUT:
        return l->farg[0] >= 0.0f && l->farg[0] < 1.0f;
    default:
        return true;
    }
}

/* Reads one layer and makes it; the description goes to *f.  NULL when the constructor refused. */
static lenet_layer *make_layer(reader *r, int kind_byte, fuzz_layer *f, uint64_t *state)
{
    memset(f, 0, sizeof *f);
    lenet_layer *l = NULL;
    bool expect_valid;
    if (kind_byte == KIND_C3) {
        unsigned char table[16 * 6];
        lenet_lenet5_c3_table(table);
        *f = (fuzz_layer){.kind = FUZZ_PARTIAL_CONV2D, .arg = {16, 6, 5}};
        for (size_t i = 0; i < sizeof table; i++)
            f->links += table[i];
        FUZZ_CHECK(f->links == 60);
        l = lenet_lenet5_c3();
        expect_valid = true;
    } else if (kind_byte == KIND_RBF_LENET5) {
        *f = (fuzz_layer){.kind = FUZZ_RBF, .arg = {10, 84}}; /* its bitmaps need 84 inputs */
        l = lenet_lenet5_rbf();
        expect_valid = true;
    } else {
        f->kind = (fuzz_kind)kind_byte;
        for (int a = 0; a < fuzz_kind_arg_count(f->kind); a++)
            f->arg[a] = read_int(r);
        for (int a = 0; a < fuzz_kind_float_count(f->kind); a++)
            f->farg[a] = read_float(r);
        const int *a = f->arg;
        switch (f->kind) {
        case FUZZ_CONV2D: l = lenet_conv2d(a[0], a[1], a[2], a[3]); break;
        case FUZZ_AVGPOOL2D: l = lenet_avgpool2d(a[0], a[1]); break;
        case FUZZ_MAXPOOL2D: l = lenet_maxpool2d(a[0], a[1]); break;
        case FUZZ_SIGMOID: l = lenet_sigmoid(); break;
        case FUZZ_RELU: l = lenet_relu(); break;
        case FUZZ_TANH: l = lenet_tanh(); break;
        case FUZZ_FLATTEN: l = lenet_flatten(); break;
        case FUZZ_LINEAR: l = lenet_linear(a[0]); break;
        case FUZZ_SUBSAMPLE2D: l = lenet_subsampling(a[0], a[1]); break;
        case FUZZ_SCALED_TANH: l = lenet_scaled_tanh(); break;
        case FUZZ_BATCHNORM1D: l = lenet_batchnorm1d(f->farg[0], f->farg[1]); break;
        case FUZZ_BATCHNORM2D: l = lenet_batchnorm2d(f->farg[0], f->farg[1]); break;
        case FUZZ_DROPOUT: l = lenet_dropout(f->farg[0]); break;
        case FUZZ_PARTIAL_CONV2D: {
            /* Table: 0 all set, 1 LeNet-5's C3 when 16x6 (else all set), 2 bits from the input, 3 none set,
             * 4 NULL.  The buffer holds 240 entries, the most the constructor reads. */
            unsigned char table[240] = {0};
            int mode = next_byte(r);
            mode = mode < 0 ? 0 : mode % 5;
            long long cells = (long long)a[0] * a[1];
            int used = cells >= 1 && cells <= 240 ? (int)cells : 0;
            if (mode == 1 && a[0] == 16 && a[1] == 6)
                lenet_lenet5_c3_table(table);
            else if (mode == 0 || mode == 1)
                memset(table, 1, (size_t)used);
            else if (mode == 2)
                for (int i = 0; i < used; i += 8) {
                    int bits = next_byte(r);
                    for (int b = 0; b < 8 && i + b < used; b++)
                        table[i + b] = (unsigned char)((bits < 0 ? 0xff : bits) >> b & 1);
                }
            for (int i = 0; i < used; i++)
                f->links += table[i];
            l = lenet_partial_conv2d(a[0], a[1], a[2], mode == 4 ? NULL : table);
            expect_valid = args_valid(f, mode != 4);
            goto made;
        }
        case FUZZ_RBF: l = lenet_euclidean_rbf(a[0]); break;
        default:
            break;
        }
        expect_valid = args_valid(f, true);
    }
made:
    if (!l) {
        FUZZ_CHECK(!expect_valid);
        FUZZ_CHECK(lenet_last_error()[0]);
    } else {
        FUZZ_CHECK(expect_valid);
        FUZZ_CHECK(strcmp(lenet_layer_name(l), fuzz_kind_name(f->kind)) == 0);
    }
    return l;
}

static FILE *devnull;

/* Saves the model, loads it back and checks that the copy is the same network with the same parameters. */
static void round_trip(lenet_model *m, const fuzz_net *net, const fuzz_ref *ref)
{
    const char *path = fuzz_write_file(1, "", 0);
    FUZZ_CHECK(path);
    lenet_error_clear();
    lenet_status st = lenet_model_save(m, path);
    FUZZ_CHECK(st == LENET_OK || (st == LENET_ENOMEM && lenet_last_error()[0]));
    if (st != LENET_OK)
        return;
    lenet_model *again = lenet_model_load(path);
    FUZZ_CHECK(again);
    fuzz_net loaded;
    FUZZ_CHECK(fuzz_net_from_model(again, &loaded));
    FUZZ_CHECK(loaded.count == net->count);
    for (size_t i = 0; i < net->count; i++) {
        FUZZ_CHECK(loaded.layer[i].kind == net->layer[i].kind && loaded.layer[i].links == net->layer[i].links);
        FUZZ_CHECK(memcmp(loaded.layer[i].arg, net->layer[i].arg, sizeof net->layer[i].arg) == 0);
        FUZZ_CHECK(memcmp(loaded.layer[i].farg, net->layer[i].farg, sizeof net->layer[i].farg) == 0);
    }
    fuzz_check_built(again, net, ref);
    for (size_t i = 0; i < ref->n_params + ref->n_buffers; i++) {
        const bool param = i < ref->n_params;
        const lenet_tensor *a = param ? lenet_model_param(m, i) : lenet_model_buffer(m, i - ref->n_params);
        const lenet_tensor *b = param ? lenet_model_param(again, i) : lenet_model_buffer(again, i - ref->n_params);
        FUZZ_CHECK(memcmp(lenet_tensor_cdata(a), lenet_tensor_cdata(b), lenet_tensor_numel(a) * sizeof(float)) == 0);
    }
    lenet_model_free(again);
}

/* Puts NaN, infinities or huge values into a few weights. */
static void poison_params(lenet_model *m, uint64_t *state)
{
    static const float special[] = {NAN, INFINITY, -INFINITY, 1e30f, -FLT_MAX};
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        lenet_tensor *t = lenet_model_param(m, i);
        uint64_t r = fuzz_next_random(state);
        if (r & 1)
            lenet_tensor_data(t)[(r >> 8) % lenet_tensor_numel(t)] = special[(r >> 4) % 5];
    }
}

/* The built, cheap model as a user runs it. */
static void use_model(lenet_model *m, const fuzz_net *net, const fuzz_ref *ref, int flags, int flags2,
                      uint64_t *state)
{
    const int scheme = (flags >> 2) & 3;
    if (scheme == 3)
        FUZZ_CHECK(lenet_model_init(m, (lenet_init)3, 1) == LENET_EINVAL && lenet_last_error()[0]);
    FUZZ_CHECK(lenet_model_init(m, scheme == 3 ? LENET_INIT_LECUN : (lenet_init)scheme, *state) == LENET_OK);
    const bool specials = flags & 0x40;
    if (specials)
        poison_params(m, state);

    static const int batches[4] = {1, 2, 3, 17};
    int batch = batches[(flags >> 4) & 3];
    if (batch == 17 && ref->macs > BATCH17_MACS)
        batch = 3;
    const bool training = !(flags2 & 0x40);
    FUZZ_CHECK(lenet_model_set_training(m, training) == LENET_OK && lenet_model_is_training(m) == training);
    fuzz_run run = {.batch = batch, .seed = *state, .specials = specials, .training = training, .strict = true,
                    .hessian = flags2 & 1};
    fuzz_run_model(m, net, ref, &run);

    if (flags2 & 2) {
        lenet_optimizer *o = lenet_sgd_create(m, 0.01f, 0.9f, 1e-4f);
        FUZZ_CHECK(o);
        if (!fuzz_status_ok(lenet_optimizer_step(o)))
            FUZZ_CHECK(specials); /* a non-finite gradient may be refused */
        FUZZ_CHECK(lenet_optimizer_zero_grad(o) == LENET_OK);
        lenet_optimizer_free(o);
    }
    FUZZ_CHECK(lenet_model_summary(m, batch, (int)ref->in.dim[0], (int)ref->in.dim[1], (int)ref->in.dim[2],
                                   devnull) == LENET_OK);
    if (flags & 0x80)
        round_trip(m, net, ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!devnull) {
        devnull = fopen("/dev/null", "w");
        FUZZ_CHECK(devnull);
    }
    reader r = {data, size};
    int flags = next_byte(&r), flags2 = next_byte(&r);
    flags = flags < 0 ? 0 : flags;
    flags2 = flags2 < 0 ? 0 : flags2;
    int in[3], other[3];
    for (int i = 0; i < 3; i++)
        in[i] = read_int(&r);
    for (int i = 0; i < 3; i++)
        other[i] = read_int(&r);
    uint64_t state = 0x243f6a8885a308d3u;
    for (size_t i = 0; i < size; i++)
        state = (state ^ data[i]) * 0x100000001b3u;
    FUZZ_CHECK(lenet_threads_set(flags2 & 4 ? 1 : 2) == LENET_OK);

    lenet_model *m = lenet_model_create();
    FUZZ_CHECK(m);
    fuzz_net net = {0};
    lenet_status sticky = LENET_OK;
    int kind_byte;
    while (net.count < FUZZ_MAX_LAYERS && (kind_byte = next_byte(&r)) >= 0) {
        lenet_error_clear();
        lenet_layer *l = make_layer(&r, kind_byte % KIND_BYTE_COUNT, &net.layer[net.count], &state);
        if (!l && !(flags2 & 0x20))
            continue; /* a program that checks what the constructor returned */
        lenet_status st = lenet_model_add(m, l);
        if (sticky != LENET_OK) {
            FUZZ_CHECK(st == sticky && lenet_last_error()[0]); /* a failed add is sticky */
        } else if (l) {
            FUZZ_CHECK(st == LENET_OK);
            net.count++;
        } else {
            FUZZ_CHECK(st < 0 && lenet_last_error()[0]); /* the constructor's error */
            sticky = st;
        }
    }

    lenet_error_clear();
    if (sticky != LENET_OK) {
        FUZZ_CHECK(lenet_model_build(m, in[0], in[1], in[2]) == sticky && lenet_last_error()[0]);
        FUZZ_CHECK(lenet_model_summary(m, 1, 1, 1, 1, devnull) == sticky);
        FUZZ_CHECK(!lenet_model_is_built(m));
        lenet_model_free(m);
        return 0;
    }
    if (in[0] < 1 || in[1] < 1 || in[2] < 1 || net.count == 0) {
        FUZZ_CHECK(lenet_model_build(m, in[0], in[1], in[2]) == LENET_EINVAL && lenet_last_error()[0]);
        FUZZ_CHECK(!lenet_model_is_built(m));
        lenet_model_free(m);
        return 0;
    }
    fuzz_ref ref;
    fuzz_ref_compute(&net, in[0], in[1], in[2], NULL, &ref);
    fuzz_describe(&net, &ref);
    /* A valid model with parameters between small and huge would really take gigabytes: not built. */
    if (ref.valid && ref.arena > FUZZ_CHEAP_PARAMS && ref.arena < HUGE_ARENA) {
        lenet_model_free(m);
        return 0;
    }

    lenet_status st;
    const int how = flags & 3;
    if (how == 1) {
        st = lenet_model_summary(m, 1, in[0], in[1], in[2], devnull);
    } else if (how == 2 && ref.cheap) {
        /* Two samples: a BatchNorm refuses one value per channel in training mode (a new model's mode). */
        int shape[4] = {2, in[0], in[1], in[2]};
        lenet_tensor *x = lenet_tensor_create(4, shape);
        FUZZ_CHECK(x);
        const lenet_tensor *y;
        st = lenet_model_forward(m, x, &y);
        lenet_tensor_free(x);
    } else {
        st = lenet_model_build(m, in[0], in[1], in[2]);
    }
    if (st != LENET_OK) {
        fuzz_check_error(st);
        if (ref.cheap)
            fprintf(stderr, "fuzz: a small valid model did not build: %s\n", lenet_last_error());
        FUZZ_CHECK(!ref.cheap);
        FUZZ_CHECK(!lenet_model_is_built(m));
        FUZZ_CHECK(lenet_model_input_shape(m, NULL, NULL, NULL) == LENET_ESTATE);
        lenet_model_free(m);
        return 0;
    }

    fuzz_check_built(m, &net, &ref);
    FUZZ_CHECK(lenet_model_build(m, in[0], in[1], in[2]) == LENET_OK);
    if (other[0] != in[0] || other[1] != in[1] || other[2] != in[2])
        FUZZ_CHECK(lenet_model_build(m, other[0], other[1], other[2]) < 0 && lenet_last_error()[0]);
    fuzz_check_summary(m, &net, &ref, flags2 & 8 ? INT_MAX : flags2 & 0x80 ? 17 : 1, other[0], other[1], other[2]);
    FUZZ_CHECK(lenet_model_print(m, devnull) == LENET_OK);
    if (ref.cheap)
        use_model(m, &net, &ref, flags, flags2, &state);
    /* Adding to a built model fails, and stickily. */
    FUZZ_CHECK(lenet_model_add(m, lenet_relu()) == LENET_ESTATE);
    FUZZ_CHECK(lenet_model_summary(m, 1, in[0], in[1], in[2], devnull) == LENET_ESTATE && lenet_last_error()[0]);
    lenet_model_free(m);
    return 0;
}
