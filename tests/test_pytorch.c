/* liblenet against PyTorch 1.13: logits, loss, every gradient, three SGD steps and the shape summary of the same
 * networks, from fixtures written by tests/fixtures/make_pytorch_fixtures.py (see tests/fixtures/README.md).
 *
 * Tolerance: every float is compared as |lenet - torch| / max(|torch|, FLOOR * max|torch over the tensor|) and the
 * worst over a tensor must stay below TOLERANCE.  The floor stops elements that are tiny next to the rest of their
 * tensor (gradients that cancel to almost nothing) from turning float32 rounding into large relative errors; such
 * elements are held to an absolute TOLERANCE * FLOOR * max|torch|.  The references are PyTorch's float64 results
 * from the same float32 weights and inputs; PyTorch's own float32 results stay within 2.6e-5 of them by this
 * measure (printed by the script), so TOLERANCE leaves room only for float32 rounding. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define TOLERANCE 1e-4
#define FLOOR 1e-2
#define SGD_LR 0.1f
#define SGD_MOMENTUM 0.9f
#define SGD_WEIGHT_DECAY 1e-3f
#define SGD_STEPS 3

/* ---- the fixture format (make_pytorch_fixtures.py): "LNFX", version 1, count, then per array
 *      name_length, name, dtype (1 float32, 2 int32), ndim, dims[ndim], data; all little-endian ---- */

enum { FX_FLOAT32 = 1, FX_INT32 = 2, FX_MAX_DIMS = 8 };

typedef struct fx_array {
    char name[64];
    int dtype;
    int ndim;
    int dims[FX_MAX_DIMS];
    size_t numel;
    void *data; /* float or int32_t, host order */
} fx_array;

typedef struct fixture {
    char file[64];
    size_t count;
    fx_array *arrays;
} fixture;

/* Reads a whole file into a NUL-terminated heap buffer; aborts the test if it cannot. */
static unsigned char *read_file(const char *name, size_t *size)
{
    const char *path = lenet_test_fixture(name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open fixture %s (LENET_TEST_FIXTURES?)", path);
    unsigned char *buf = NULL;
    size_t used = 0, cap = 0;
    for (;;) {
        if (cap - used < 65536) {
            cap = cap ? 2 * cap : 65536;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
        size_t got = fread(buf + used, 1, cap - used, f);
        used += got;
        if (got == 0)
            break;
    }
    ck_assert_msg(!ferror(f), "reading %s failed", path);
    fclose(f);
    buf[used] = '\0';
    *size = used;
    return buf;
}

static uint32_t get_u32(const unsigned char *buf, size_t size, size_t *pos, const char *file)
{
    ck_assert_msg(*pos <= size && size - *pos >= 4, "%s: truncated at byte %zu", file, *pos);
    const unsigned char *p = buf + *pos;
    *pos += 4;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static fixture *fixture_load(const char *file)
{
    size_t size, pos = 0;
    unsigned char *buf = read_file(file, &size);
    ck_assert_msg(size >= 12 && memcmp(buf, "LNFX", 4) == 0, "%s: not a fixture (magic)", file);
    pos = 4;
    ck_assert_msg(get_u32(buf, size, &pos, file) == 1, "%s: unknown fixture version", file);
    fixture *fx = calloc(1, sizeof *fx);
    ck_assert_ptr_nonnull(fx);
    snprintf(fx->file, sizeof fx->file, "%s", file);
    fx->count = get_u32(buf, size, &pos, file);
    ck_assert_msg(fx->count >= 1 && fx->count < 1000, "%s: %zu arrays", file, fx->count);
    fx->arrays = calloc(fx->count, sizeof *fx->arrays);
    ck_assert_ptr_nonnull(fx->arrays);
    for (size_t a = 0; a < fx->count; a++) {
        fx_array *arr = &fx->arrays[a];
        uint32_t len = get_u32(buf, size, &pos, file);
        ck_assert_msg(len >= 1 && len < sizeof arr->name && len <= size - pos, "%s: bad name length %u", file,
                      (unsigned)len);
        memcpy(arr->name, buf + pos, len);
        arr->name[len] = '\0';
        pos += len;
        arr->dtype = (int)get_u32(buf, size, &pos, file);
        ck_assert_msg(arr->dtype == FX_FLOAT32 || arr->dtype == FX_INT32, "%s: %s has dtype %d", file, arr->name,
                      arr->dtype);
        arr->ndim = (int)get_u32(buf, size, &pos, file);
        ck_assert_msg(arr->ndim >= 1 && arr->ndim <= FX_MAX_DIMS, "%s: %s has %d dims", file, arr->name, arr->ndim);
        arr->numel = 1;
        for (int d = 0; d < arr->ndim; d++) {
            arr->dims[d] = (int)get_u32(buf, size, &pos, file);
            ck_assert_msg(arr->dims[d] >= 1 && arr->dims[d] <= 1 << 20, "%s: %s dim %d", file, arr->name, d);
            arr->numel *= (size_t)arr->dims[d];
        }
        ck_assert_msg(arr->numel <= (size - pos) / 4, "%s: %s is truncated", file, arr->name);
        arr->data = malloc(arr->numel * 4);
        ck_assert_ptr_nonnull(arr->data);
        for (size_t i = 0; i < arr->numel; i++) {
            uint32_t bits = get_u32(buf, size, &pos, file);
            memcpy((char *)arr->data + 4 * i, &bits, 4); /* float32 and int32 share the host's byte order */
        }
    }
    ck_assert_msg(pos == size, "%s: %zu bytes after the last array", file, size - pos);
    free(buf);
    return fx;
}

static void fixture_free(fixture *fx)
{
    if (!fx)
        return;
    for (size_t a = 0; a < fx->count; a++)
        free(fx->arrays[a].data);
    free(fx->arrays);
    free(fx);
}

/* The array called `name`, or NULL. */
static const fx_array *fixture_find(const fixture *fx, const char *name)
{
    for (size_t a = 0; a < fx->count; a++)
        if (strcmp(fx->arrays[a].name, name) == 0)
            return &fx->arrays[a];
    return NULL;
}

/* The float32 array called `name`; aborts the test if it is missing. */
static const fx_array *fixture_floats(const fixture *fx, const char *name)
{
    const fx_array *arr = fixture_find(fx, name);
    ck_assert_msg(arr != NULL, "%s has no array %s", fx->file, name);
    ck_assert_msg(arr->dtype == FX_FLOAT32, "%s: %s is not float32", fx->file, name);
    return arr;
}

/* Asserts that a liblenet tensor has the fixture array's shape. */
static void assert_same_shape(const lenet_tensor *t, const fx_array *arr, const char *what)
{
    char ours[128] = "", theirs[128] = "";
    for (int d = 0; d < lenet_tensor_ndim(t); d++)
        snprintf(ours + strlen(ours), sizeof ours - strlen(ours), " %d", lenet_tensor_dim(t, d));
    for (int d = 0; d < arr->ndim; d++)
        snprintf(theirs + strlen(theirs), sizeof theirs - strlen(theirs), " %d", arr->dims[d]);
    ck_assert_msg(strcmp(ours, theirs) == 0, "%s: liblenet shape [%s ] but PyTorch [%s ]", what, ours, theirs);
}

/* Worst relative error of n values against the reference (see the top of the file), printed and asserted to be
 * at most `tolerance`. */
static double check_within(const char *net, const char *what, const float *ours, const float *ref, size_t n,
                           double tolerance)
{
    double max_ref = 0.0;
    for (size_t i = 0; i < n; i++)
        max_ref = fmax(max_ref, fabs((double)ref[i]));
    double denom_floor = fmax(FLOOR * max_ref, 1e-30);
    double worst = lenet_test_max_rel_err(ours, ref, n, denom_floor);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)ours[i] - (double)ref[i]) / fmax(fabs((double)ref[i]), denom_floor);
        if (!(err < worst) || isnan(err)) {
            at = i;
            break;
        }
    }
    printf("%-9s %-20s worst relative error %.3g (%zu values, floor %.3g)\n", net, what, worst, n, denom_floor);
    fflush(stdout);
    ck_assert_msg(worst <= tolerance, "%s %s: relative error %.3g > %g at element %zu: liblenet %.9g, PyTorch %.9g",
                  net, what, worst, tolerance, at, (double)ours[at], (double)ref[at]);
    return worst;
}

static double check_close(const char *net, const char *what, const float *ours, const float *ref, size_t n)
{
    return check_within(net, what, ours, ref, n, TOLERANCE);
}

/* ---- the networks of make_pytorch_fixtures.py, through the public API ---- */

static void add_modern(lenet_model *m)
{
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(8, 3, 2, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_maxpool2d(3, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(16, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(3, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(32)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(10)));
}

static void add_rgb(lenet_model *m)
{
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(4, 5, 2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_maxpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(6, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(7)));
}

typedef struct network {
    const char *name; /* pytorch_<name>.bin, pytorch_<name>_summary.txt */
    void (*add_layers)(lenet_model *m);
} network;

static const network D2L_LENET = {"d2l_lenet", lenet_test_add_d2l_layers};
static const network MODERN = {"modern", add_modern};
static const network RGB = {"rgb", add_rgb};

/* A network built for the fixture's input, with PyTorch's initial weights, and that input and labels. */
typedef struct cxt {
    const network *net;
    fixture *fx;
    lenet_model *m;
    lenet_tensor *x;
    int32_t *labels;
    int batch, classes;
} cxt;

/* Chunks of 12 to 16 samples take the per-lane kernels, smaller ones the per-sample kernels that the fixture's own
 * batch tests (lib/layers/conv2d.c): the batch repeated this many times takes the per-lane ones, and as the loss is
 * a mean over the batch, PyTorch's loss and gradients still apply. */
static int replicas_for_lanes(int batch)
{
    return (12 + batch - 1) / batch;
}

/* Loads the fixture of `net` with its batch repeated `replicas` times. */
static void cxt_open(cxt *c, const network *net, int replicas)
{
    char file[96];
    snprintf(file, sizeof file, "pytorch_%s.bin", net->name);
    c->net = net;
    c->fx = fixture_load(file);
    const fx_array *input = fixture_floats(c->fx, "input");
    const fx_array *labels = fixture_find(c->fx, "labels");
    const fx_array *logits = fixture_floats(c->fx, "logits");
    ck_assert_int_eq(input->ndim, 4);
    ck_assert_msg(labels && labels->dtype == FX_INT32 && labels->ndim == 1 && labels->dims[0] == input->dims[0],
                  "%s: labels must be int32 (N)", file);
    ck_assert_int_eq(logits->ndim, 2);
    c->batch = input->dims[0] * replicas;
    c->classes = logits->dims[1];
    c->labels = malloc((size_t)c->batch * sizeof *c->labels);
    ck_assert_ptr_nonnull(c->labels);
    for (int r = 0; r < replicas; r++)
        memcpy(c->labels + (size_t)r * input->dims[0], labels->data, (size_t)input->dims[0] * sizeof *c->labels);

    c->m = lenet_model_create();
    ck_assert_ptr_nonnull(c->m);
    net->add_layers(c->m);
    ck_assert_lenet_ok(lenet_model_build(c->m, input->dims[1], input->dims[2], input->dims[3]));

    c->x = lenet_tensor_create(4, (int[]){c->batch, input->dims[1], input->dims[2], input->dims[3]});
    ck_assert_ptr_nonnull(c->x);
    for (int r = 0; r < replicas; r++)
        memcpy(lenet_tensor_data(c->x) + (size_t)r * input->numel, input->data, input->numel * sizeof(float));

    /* Weights by state_dict name: every liblenet parameter has its PyTorch tensor of the same shape, and
     * every PyTorch parameter is used once (same count, distinct names). */
    size_t n_init = 0;
    for (size_t a = 0; a < c->fx->count; a++)
        n_init += strncmp(c->fx->arrays[a].name, "init.", 5) == 0;
    ck_assert_uint_eq(lenet_model_param_count(c->m), n_init);
    for (size_t i = 0; i < lenet_model_param_count(c->m); i++) {
        const char *name = lenet_model_param_name(c->m, i);
        ck_assert_ptr_nonnull(name);
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(name, lenet_model_param_name(c->m, j));
        char key[96];
        snprintf(key, sizeof key, "init.%s", name);
        const fx_array *w = fixture_floats(c->fx, key);
        lenet_tensor *p = lenet_model_param(c->m, i);
        assert_same_shape(p, w, key);
        assert_same_shape(lenet_model_grad(c->m, i), w, name);
        memcpy(lenet_tensor_data(p), w->data, w->numel * sizeof(float));
    }
}

static void cxt_close(cxt *c)
{
    free(c->labels);
    lenet_tensor_free(c->x);
    lenet_model_free(c->m);
    fixture_free(c->fx);
}

/* Forward, loss and (when dlogits is given) backward into zeroed gradients.  Returns the loss. */
static float forward_backward(cxt *c, const lenet_tensor **logits, lenet_tensor *dlogits)
{
    float loss = NAN;
    ck_assert_lenet_ok(lenet_model_zero_grad(c->m));
    ck_assert_lenet_ok(lenet_model_forward(c->m, c->x, logits));
    ck_assert_lenet_ok(lenet_cross_entropy(*logits, c->labels, &loss, dlogits));
    if (dlogits)
        ck_assert_lenet_ok(lenet_model_backward(c->m, dlogits));
    return loss;
}

static void check_logits_and_loss(const network *net, int replicas)
{
    cxt c;
    cxt_open(&c, net, replicas);
    const lenet_tensor *logits = NULL;
    float loss = forward_backward(&c, &logits, NULL);
    const fx_array *ref_logits = fixture_floats(c.fx, "logits");
    ck_assert_int_eq(lenet_tensor_dim(logits, 0), c.batch);
    const float *got = lenet_tensor_cdata(logits);
    for (int r = 0; r < replicas; r++)
        check_close(net->name, "logits", got + (size_t)r * ref_logits->numel, ref_logits->data, ref_logits->numel);
    const fx_array *ref_loss = fixture_floats(c.fx, "loss");
    check_close(net->name, "loss", &loss, ref_loss->data, 1);
    /* The thread-safe inference path (its own scratch) gives the same numbers. */
    lenet_tensor *predicted = lenet_tensor_create(2, (int[]){c.batch, c.classes});
    ck_assert_ptr_nonnull(predicted);
    ck_assert_lenet_ok(lenet_model_predict(c.m, c.x, predicted));
    for (int r = 0; r < replicas; r++)
        check_close(net->name, "predict", lenet_tensor_cdata(predicted) + (size_t)r * ref_logits->numel,
                    ref_logits->data, ref_logits->numel);
    lenet_tensor_free(predicted);
    cxt_close(&c);
}

static void check_gradients(const network *net, int replicas)
{
    cxt c;
    cxt_open(&c, net, replicas);
    const lenet_tensor *logits = NULL;
    lenet_tensor *dlogits = lenet_tensor_create(2, (int[]){c.batch, c.classes});
    ck_assert_ptr_nonnull(dlogits);
    forward_backward(&c, &logits, dlogits);
    for (size_t i = 0; i < lenet_model_param_count(c.m); i++) {
        char key[96];
        snprintf(key, sizeof key, "grad.%s", lenet_model_param_name(c.m, i));
        const fx_array *ref = fixture_floats(c.fx, key);
        const lenet_tensor *g = lenet_model_grad(c.m, i);
        assert_same_shape(g, ref, key);
        check_close(net->name, key, lenet_tensor_cdata(g), ref->data, ref->numel);
    }
    lenet_tensor_free(dlogits);
    cxt_close(&c);
}

static void check_sgd_steps(const network *net, int replicas)
{
    cxt c;
    cxt_open(&c, net, replicas);
    const lenet_tensor *logits = NULL;
    lenet_tensor *dlogits = lenet_tensor_create(2, (int[]){c.batch, c.classes});
    lenet_optimizer *opt = lenet_sgd_create(c.m, SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY);
    ck_assert_ptr_nonnull(dlogits);
    ck_assert_ptr_nonnull(opt);
    float losses[SGD_STEPS];
    for (int step = 0; step < SGD_STEPS; step++) {
        ck_assert_lenet_ok(lenet_optimizer_zero_grad(opt));
        losses[step] = forward_backward(&c, &logits, dlogits);
        ck_assert_lenet_ok(lenet_optimizer_step(opt));
    }
    const fx_array *ref_losses = fixture_floats(c.fx, "step_losses");
    ck_assert_uint_eq(ref_losses->numel, SGD_STEPS);
    check_close(net->name, "losses of 3 steps", losses, ref_losses->data, SGD_STEPS);
    /* The updates must have moved the weights: otherwise comparing with PyTorch would prove little. */
    const fx_array *first_init = fixture_floats(c.fx, "init.0.weight");
    const float *first = lenet_tensor_cdata(lenet_model_param(c.m, 0));
    ck_assert_msg(memcmp(first, first_init->data, first_init->numel * sizeof(float)) != 0, "SGD did not move 0.weight");
    for (size_t i = 0; i < lenet_model_param_count(c.m); i++) {
        char key[96];
        snprintf(key, sizeof key, "step3.%s", lenet_model_param_name(c.m, i));
        const fx_array *ref = fixture_floats(c.fx, key);
        const lenet_tensor *p = lenet_model_param(c.m, i);
        assert_same_shape(p, ref, key);
        check_close(net->name, key, lenet_tensor_cdata(p), ref->data, ref->numel);
    }
    lenet_optimizer_free(opt);
    lenet_tensor_free(dlogits);
    cxt_close(&c);
}

/* The batch size of a network's fixture. */
static int fixture_batch(const char *name)
{
    char file[96];
    snprintf(file, sizeof file, "pytorch_%s.bin", name);
    fixture *fx = fixture_load(file);
    int batch = fixture_floats(fx, "input")->dims[0];
    fixture_free(fx);
    return batch;
}

START_TEST(test_d2l_lenet_logits_and_loss_match_pytorch_in_lane_chunks)
{
    check_logits_and_loss(&D2L_LENET, replicas_for_lanes(fixture_batch("d2l_lenet")));
}
END_TEST

START_TEST(test_d2l_lenet_gradients_match_pytorch_in_lane_chunks)
{
    check_gradients(&D2L_LENET, replicas_for_lanes(fixture_batch("d2l_lenet")));
}
END_TEST

START_TEST(test_modern_logits_and_loss_match_pytorch_in_lane_chunks)
{
    check_logits_and_loss(&MODERN, replicas_for_lanes(fixture_batch("modern")));
}
END_TEST

START_TEST(test_modern_gradients_match_pytorch_in_lane_chunks)
{
    check_gradients(&MODERN, replicas_for_lanes(fixture_batch("modern")));
}
END_TEST

START_TEST(test_rgb_non_square_logits_and_loss_match_pytorch_in_lane_chunks)
{
    check_logits_and_loss(&RGB, replicas_for_lanes(fixture_batch("rgb")));
}
END_TEST

START_TEST(test_rgb_non_square_gradients_match_pytorch_in_lane_chunks)
{
    check_gradients(&RGB, replicas_for_lanes(fixture_batch("rgb")));
}
END_TEST

/* lenet_model_summary of an unbuilt network for a batch of 1 equals PyTorch's shape loop byte for byte. */
static void check_summary(const network *net, int channels, int height, int width)
{
    char file[96];
    snprintf(file, sizeof file, "pytorch_%s_summary.txt", net->name);
    size_t expected_size;
    unsigned char *expected = read_file(file, &expected_size);
    ck_assert_uint_gt(expected_size, 0);

    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    net->add_layers(m);
    FILE *out = tmpfile();
    ck_assert_ptr_nonnull(out);
    ck_assert_lenet_ok(lenet_model_summary(m, 1, channels, height, width, out));
    long size = ftell(out);
    ck_assert_int_ge(size, 0);
    char *got = calloc((size_t)size + 1, 1);
    ck_assert_ptr_nonnull(got);
    rewind(out);
    ck_assert_uint_eq(fread(got, 1, (size_t)size, out), (size_t)size);
    fclose(out);
    ck_assert_msg((size_t)size == expected_size && memcmp(got, expected, expected_size) == 0,
                  "%s: liblenet printed\n%s\nPyTorch printed\n%s", net->name, got, (const char *)expected);
    free(got);
    free(expected);
    lenet_model_free(m);
}

/* ---- d2l's BatchNorm LeNet (make_bn_fixtures.py): a batch of 40, so the batch statistics span three chunks ----
 *
 * BatchNorm's backward subtracts two batch means from each output gradient, and the first convolution sums those
 * nearly cancelling terms over 40 x 24 x 24 positions per weight: float32 cannot hold the result to TOLERANCE.
 * PyTorch's own float32 run is 1.2e-3 from the float64 reference on these gradients by this file's measure, and
 * 2.5e-4 on the parameters after three steps (printed by make_bn_fixtures.py); liblenet, which keeps the batch
 * statistics in double, stays within BN_TOLERANCE, several times closer than PyTorch. */
#define BN_TOLERANCE 5e-4

static double check_bn(const char *what, const float *ours, const float *ref, size_t n)
{
    return check_within("bn_lenet", what, ours, ref, n, BN_TOLERANCE);
}

static void add_bn_lenet(lenet_model *m)
{
    const lenet_layer *expect[16];
    lenet_layer *layers[] = {
        lenet_conv2d(6, 5, 1, 0), lenet_batchnorm2d(1e-5f, 0.1f), lenet_sigmoid(), lenet_avgpool2d(2, 2),
        lenet_conv2d(16, 5, 1, 0), lenet_batchnorm2d(1e-5f, 0.1f), lenet_sigmoid(), lenet_avgpool2d(2, 2),
        lenet_flatten(), lenet_linear(120), lenet_batchnorm1d(1e-5f, 0.1f), lenet_sigmoid(),
        lenet_linear(84), lenet_batchnorm1d(1e-5f, 0.1f), lenet_sigmoid(), lenet_linear(10),
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        expect[i] = layers[i];
        ck_assert_lenet_ok(lenet_model_add(m, layers[i]));
        ck_assert_ptr_eq(lenet_model_layer(m, i), expect[i]);
    }
}

/* The BN LeNet with the fixture's initial parameters and buffers (by state_dict name), and its input. */
static lenet_model *bn_open(const fixture *fx, lenet_tensor **x, int32_t **labels)
{
    const fx_array *input = fixture_floats(fx, "input"), *ref_labels = fixture_find(fx, "labels");
    ck_assert_ptr_nonnull(ref_labels);
    lenet_model *m = lenet_model_create();
    add_bn_lenet(m);
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    for (size_t i = 0; i < lenet_model_param_count(m) + lenet_model_buffer_count(m); i++) {
        const bool param = i < lenet_model_param_count(m);
        const size_t k = param ? i : i - lenet_model_param_count(m);
        lenet_tensor *t = param ? lenet_model_param(m, k) : lenet_model_buffer(m, k);
        const char *name = param ? lenet_model_param_name(m, k) : lenet_model_buffer_name(m, k);
        if (strstr(name, "num_batches_tracked"))
            continue;
        char key[96];
        snprintf(key, sizeof key, "init.%s", name);
        const fx_array *w = fixture_floats(fx, key);
        assert_same_shape(t, w, key);
        memcpy(lenet_tensor_data(t), w->data, w->numel * sizeof(float));
    }
    *x = lenet_tensor_create(4, (int[]){input->dims[0], 1, 28, 28});
    memcpy(lenet_tensor_data(*x), input->data, input->numel * sizeof(float));
    *labels = malloc((size_t)input->dims[0] * sizeof **labels);
    memcpy(*labels, ref_labels->data, (size_t)input->dims[0] * sizeof **labels);
    return m;
}

/* Every parameter (prefix.<name>) and buffer of the model against the fixture's arrays under `prefix`. */
static void check_state(const fixture *fx, lenet_model *m, const char *prefix)
{
    char key[96], what[96];
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        snprintf(key, sizeof key, "%s%s", prefix, lenet_model_param_name(m, i));
        snprintf(what, sizeof what, "%s", key);
        const fx_array *ref = fixture_floats(fx, key);
        check_bn(what, lenet_tensor_cdata(lenet_model_param(m, i)), ref->data, ref->numel);
    }
    for (size_t i = 0; i < lenet_model_buffer_count(m); i++) {
        snprintf(key, sizeof key, "%s%s", prefix, lenet_model_buffer_name(m, i));
        const fx_array *ref = fixture_find(fx, key);
        ck_assert_msg(ref != NULL, "no %s", key);
        const float *ours = lenet_tensor_cdata(lenet_model_buffer(m, i));
        if (ref->dtype == FX_INT32) {
            ck_assert_msg(ours[0] == (float)((const int32_t *)ref->data)[0], "%s: %g, PyTorch %d", key,
                          (double)ours[0], ((const int32_t *)ref->data)[0]);
            continue;
        }
        check_bn(key, ours, ref->data, ref->numel);
    }
}

START_TEST(test_bn_lenet_training_logits_loss_gradients_and_running_statistics_match_pytorch)
{
    fixture *fx = fixture_load("pytorch_bn_lenet.bin");
    lenet_tensor *x;
    int32_t *labels;
    lenet_model *m = bn_open(fx, &x, &labels);
    ck_assert(lenet_model_is_training(m));
    const lenet_tensor *logits;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &logits));
    const fx_array *ref_logits = fixture_floats(fx, "logits");
    check_bn("logits", lenet_tensor_cdata(logits), ref_logits->data, ref_logits->numel);
    lenet_tensor *dlogits = lenet_tensor_create(2, (int[]){lenet_tensor_dim(logits, 0), 10});
    float loss;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, labels, &loss, dlogits));
    check_bn("loss", &loss, fixture_floats(fx, "loss")->data, 1);
    ck_assert_lenet_ok(lenet_model_backward(m, dlogits));
    /* The biases of the layers before a BatchNorm have a zero gradient in exact arithmetic: their float gradients
     * are rounding noise, held to the scale of the model's other gradients (absolute BN_TOLERANCE * FLOOR * that). */
    double scale = 0.0;
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        char key[96];
        snprintf(key, sizeof key, "grad.%s", lenet_model_param_name(m, i));
        const fx_array *ref = fixture_floats(fx, key);
        for (size_t k = 0; k < ref->numel; k++)
            scale = fmax(scale, fabs((double)((const float *)ref->data)[k]));
    }
    for (size_t i = 0; i < lenet_model_param_count(m); i++) {
        char key[96];
        snprintf(key, sizeof key, "grad.%s", lenet_model_param_name(m, i));
        const fx_array *ref = fixture_floats(fx, key);
        const float *ours = lenet_tensor_cdata(lenet_model_grad(m, i));
        double max_ref = 0.0;
        for (size_t k = 0; k < ref->numel; k++)
            max_ref = fmax(max_ref, fabs((double)((const float *)ref->data)[k]));
        if (max_ref > 1e-6 * scale) {
            check_bn(key, ours, ref->data, ref->numel);
            continue;
        }
        for (size_t k = 0; k < ref->numel; k++)
            ck_assert_msg(fabs((double)ours[k] - ((const float *)ref->data)[k]) <= BN_TOLERANCE * FLOOR * scale,
                          "%s[%zu]: %g, PyTorch %g (a zero gradient in exact arithmetic)", key, k, (double)ours[k],
                          (double)((const float *)ref->data)[k]);
    }
    /* One training forward updated the running statistics and the batch count. */
    for (size_t i = 0; i < lenet_model_buffer_count(m); i++) {
        char key[96];
        snprintf(key, sizeof key, "train1.%s", lenet_model_buffer_name(m, i));
        const fx_array *ref = fixture_find(fx, key);
        ck_assert_ptr_nonnull(ref);
        const float *ours = lenet_tensor_cdata(lenet_model_buffer(m, i));
        if (ref->dtype == FX_INT32)
            ck_assert_float_eq(ours[0], 1.0f);
        else
            check_bn(key, ours, ref->data, ref->numel);
    }
    lenet_tensor_free(dlogits);
    lenet_tensor_free(x);
    free(labels);
    lenet_model_free(m);
    fixture_free(fx);
}
END_TEST

/* Three steps of `o` on the fixture's batch, then the parameters, buffers and evaluation-mode logits. */
static void check_bn_steps(const char *name, lenet_optimizer *(*make)(lenet_model *))
{
    fixture *fx = fixture_load("pytorch_bn_lenet.bin");
    lenet_tensor *x;
    int32_t *labels;
    lenet_model *m = bn_open(fx, &x, &labels);
    lenet_optimizer *o = make(m);
    ck_assert_ptr_nonnull(o);
    lenet_tensor *dlogits = lenet_tensor_create(2, (int[]){lenet_tensor_dim(x, 0), 10});
    for (int step = 0; step < 3; step++) {
        const lenet_tensor *logits;
        float loss;
        ck_assert_lenet_ok(lenet_optimizer_zero_grad(o));
        ck_assert_lenet_ok(lenet_model_forward(m, x, &logits));
        ck_assert_lenet_ok(lenet_cross_entropy(logits, labels, &loss, dlogits));
        ck_assert_lenet_ok(lenet_model_backward(m, dlogits));
        ck_assert_lenet_ok(lenet_optimizer_step(o));
    }
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s.step3.", name);
    check_state(fx, m, prefix);
    ck_assert_lenet_ok(lenet_model_set_training(m, false));
    const lenet_tensor *logits;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &logits));
    char key[32];
    snprintf(key, sizeof key, "%s.eval_logits", name);
    const fx_array *ref = fixture_floats(fx, key);
    check_bn(key, lenet_tensor_cdata(logits), ref->data, ref->numel);
    lenet_tensor *predicted = lenet_tensor_create(2, (int[]){lenet_tensor_dim(x, 0), 10});
    ck_assert_lenet_ok(lenet_model_predict(m, x, predicted));
    ck_assert_mem_eq(lenet_tensor_cdata(predicted), lenet_tensor_cdata(logits), ref->numel * sizeof(float));
    lenet_tensor_free(predicted);
    lenet_tensor_free(dlogits);
    lenet_optimizer_free(o);
    lenet_tensor_free(x);
    free(labels);
    lenet_model_free(m);
    fixture_free(fx);
}

static lenet_optimizer *bn_sgd(lenet_model *m)
{
    return lenet_sgd_create(m, 0.1f, 0.9f, 0.0f);
}

static lenet_optimizer *bn_adam(lenet_model *m)
{
    return lenet_adam_create(m, 0.01f, 0.9f, 0.999f, 1e-2f, 1e-3f);
}

static lenet_optimizer *bn_adamw(lenet_model *m)
{
    return lenet_adamw_create(m, 0.01f, 0.9f, 0.999f, 1e-2f, 0.05f);
}

START_TEST(test_bn_lenet_three_sgd_steps_and_evaluation_match_pytorch)
{
    check_bn_steps("sgd", bn_sgd);
}
END_TEST

START_TEST(test_bn_lenet_three_adam_steps_and_evaluation_match_pytorch)
{
    check_bn_steps("adam", bn_adam);
}
END_TEST

START_TEST(test_bn_lenet_three_adamw_steps_and_evaluation_match_pytorch)
{
    check_bn_steps("adamw", bn_adamw);
}
END_TEST

/* ---- tests ---- */

START_TEST(test_d2l_lenet_logits_and_loss_match_pytorch)
{
    check_logits_and_loss(&D2L_LENET, 1);
}
END_TEST

START_TEST(test_d2l_lenet_gradients_match_pytorch)
{
    check_gradients(&D2L_LENET, 1);
}
END_TEST

START_TEST(test_d2l_lenet_three_sgd_steps_match_pytorch)
{
    check_sgd_steps(&D2L_LENET, 1);
}
END_TEST

START_TEST(test_d2l_lenet_summary_matches_pytorch_shape_loop)
{
    check_summary(&D2L_LENET, 1, 28, 28);
}
END_TEST

START_TEST(test_modern_logits_and_loss_match_pytorch)
{
    check_logits_and_loss(&MODERN, 1);
}
END_TEST

START_TEST(test_modern_gradients_match_pytorch)
{
    check_gradients(&MODERN, 1);
}
END_TEST

START_TEST(test_modern_three_sgd_steps_match_pytorch)
{
    check_sgd_steps(&MODERN, 1);
}
END_TEST

START_TEST(test_modern_summary_matches_pytorch_shape_loop)
{
    check_summary(&MODERN, 1, 32, 32);
}
END_TEST

START_TEST(test_rgb_non_square_logits_and_loss_match_pytorch)
{
    check_logits_and_loss(&RGB, 1);
}
END_TEST

START_TEST(test_rgb_non_square_gradients_match_pytorch)
{
    check_gradients(&RGB, 1);
}
END_TEST

START_TEST(test_rgb_non_square_three_sgd_steps_match_pytorch)
{
    check_sgd_steps(&RGB, 1);
}
END_TEST

START_TEST(test_rgb_non_square_summary_matches_pytorch_shape_loop)
{
    check_summary(&RGB, 3, 20, 27);
}
END_TEST

START_TEST(test_cross_entropy_of_logits_near_1000_matches_pytorch)
{
    fixture *fx = fixture_load("pytorch_cross_entropy.bin");
    const fx_array *z = fixture_floats(fx, "logits");
    const fx_array *labels = fixture_find(fx, "labels");
    const fx_array *ref_loss = fixture_floats(fx, "loss");
    const fx_array *ref_dlogits = fixture_floats(fx, "dlogits");
    ck_assert_ptr_nonnull(labels);
    ck_assert_int_eq(labels->dtype, FX_INT32);
    ck_assert_int_eq(z->ndim, 2);
    /* The fixture is what its name says: logits beyond what a naive exp() survives, and a large loss. */
    float zmax = 0.0f;
    for (size_t i = 0; i < z->numel; i++)
        zmax = fmaxf(zmax, fabsf(((const float *)z->data)[i]));
    ck_assert_float_gt(zmax, 900.0f);
    ck_assert_float_gt(((const float *)ref_loss->data)[0], 100.0f);

    lenet_tensor *logits = lenet_tensor_create(2, z->dims);
    lenet_tensor *dlogits = lenet_tensor_create(2, z->dims);
    ck_assert_ptr_nonnull(logits);
    ck_assert_ptr_nonnull(dlogits);
    memcpy(lenet_tensor_data(logits), z->data, z->numel * sizeof(float));
    float loss = NAN;
    ck_assert_lenet_ok(lenet_cross_entropy(logits, labels->data, &loss, dlogits));
    check_close("logits1e3", "loss", &loss, ref_loss->data, 1);
    check_close("logits1e3", "dlogits", lenet_tensor_cdata(dlogits), ref_dlogits->data, ref_dlogits->numel);
    lenet_tensor_free(logits);
    lenet_tensor_free(dlogits);
    fixture_free(fx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pytorch");
    TCase *tc = tcase_create("pytorch");
    tcase_add_test(tc, test_d2l_lenet_logits_and_loss_match_pytorch);
    tcase_add_test(tc, test_d2l_lenet_gradients_match_pytorch);
    tcase_add_test(tc, test_d2l_lenet_three_sgd_steps_match_pytorch);
    tcase_add_test(tc, test_d2l_lenet_summary_matches_pytorch_shape_loop);
    tcase_add_test(tc, test_modern_logits_and_loss_match_pytorch);
    tcase_add_test(tc, test_modern_gradients_match_pytorch);
    tcase_add_test(tc, test_modern_three_sgd_steps_match_pytorch);
    tcase_add_test(tc, test_modern_summary_matches_pytorch_shape_loop);
    tcase_add_test(tc, test_rgb_non_square_logits_and_loss_match_pytorch);
    tcase_add_test(tc, test_rgb_non_square_gradients_match_pytorch);
    tcase_add_test(tc, test_rgb_non_square_three_sgd_steps_match_pytorch);
    tcase_add_test(tc, test_rgb_non_square_summary_matches_pytorch_shape_loop);
    tcase_add_test(tc, test_d2l_lenet_logits_and_loss_match_pytorch_in_lane_chunks);
    tcase_add_test(tc, test_d2l_lenet_gradients_match_pytorch_in_lane_chunks);
    tcase_add_test(tc, test_modern_logits_and_loss_match_pytorch_in_lane_chunks);
    tcase_add_test(tc, test_modern_gradients_match_pytorch_in_lane_chunks);
    tcase_add_test(tc, test_rgb_non_square_logits_and_loss_match_pytorch_in_lane_chunks);
    tcase_add_test(tc, test_rgb_non_square_gradients_match_pytorch_in_lane_chunks);
    tcase_add_test(tc, test_cross_entropy_of_logits_near_1000_matches_pytorch);
    tcase_add_test(tc, test_bn_lenet_training_logits_loss_gradients_and_running_statistics_match_pytorch);
    tcase_add_test(tc, test_bn_lenet_three_sgd_steps_and_evaluation_match_pytorch);
    tcase_add_test(tc, test_bn_lenet_three_adam_steps_and_evaluation_match_pytorch);
    tcase_add_test(tc, test_bn_lenet_three_adamw_steps_and_evaluation_match_pytorch);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
