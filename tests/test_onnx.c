/* ONNX export and import: liblenet's exports run in ONNX Runtime (tests/onnx/run.js, the npm package
 * onnxruntime-node) and give lenet_model_predict's outputs; PyTorch's own exports (tests/fixtures/onnx_*, made by
 * make_onnx_fixtures.py) import and give PyTorch's logits; an export imports back to the same layers and
 * parameters bit for bit; truncated, corrupted and crafted files fail cleanly with a message.
 * ONNX Runtime is optional: without node or the package, the tests that need it print "skipped: ..." and pass. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/internal.h"
#include "io/onnx_proto.h"
#include "io/protobuf.h"
#include "model/internal.h"
#include "testutil.h"

/* The tolerance of the comparisons with ONNX Runtime and PyTorch (relative, floored at 1% of the largest value). */
#define TOLERANCE 1e-5

/* ---- scratch files ---- */

static char tmpdir[256];

/* In /dev/shm when there is one: the corruption tests write thousands of small files. */
static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/lenet-onnx-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static const char *tmp_path(const char *name)
{
    static char path[2][512];
    static int which;
    which ^= 1;
    snprintf(path[which], sizeof path[which], "%s/%s", tmpdir, name);
    return path[which];
}

static void remove_tmpdir(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static unsigned char *read_bytes(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    rewind(f);
    unsigned char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, size, f), size);
    ck_assert_int_eq(fclose(f), 0);
}

/* ---- models ---- */

static lenet_model *model_of(lenet_layer **layers, size_t count)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    for (size_t i = 0; i < count; i++)
        ck_assert_lenet_ok(lenet_model_add(m, layers[i]));
    return m;
}

#define MODEL(...) model_of((lenet_layer *[]){__VA_ARGS__}, sizeof((lenet_layer *[]){__VA_ARGS__}) / sizeof(lenet_layer *))

/* d2l's LeNet, Xavier-initialised, on 1x28x28. */
static lenet_model *d2l_lenet(void)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, 3));
    return m;
}

/* The modern variant: ReLU, max pooling (and a Dropout, which the export leaves out). */
static lenet_model *modern_lenet(bool dropout)
{
    lenet_model *m = MODEL(lenet_conv2d(6, 5, 1, 2), lenet_relu(), lenet_maxpool2d(2, 2), lenet_conv2d(16, 5, 1, 0),
                           lenet_relu(), lenet_maxpool2d(2, 2), lenet_flatten(), lenet_linear(120), lenet_relu());
    if (dropout)
        ck_assert_lenet_ok(lenet_model_add(m, lenet_dropout(0.5f)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(84)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(10)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 4));
    return m;
}

/* d2l's BatchNorm LeNet after a few SGD steps in training mode, so that the weights and the running statistics
 * are far from their initial values. */
static lenet_model *bn_lenet(void)
{
    lenet_model *m = MODEL(lenet_conv2d(6, 5, 1, 0), lenet_batchnorm2d(1e-5f, 0.1f), lenet_sigmoid(),
                           lenet_avgpool2d(2, 2), lenet_conv2d(16, 5, 1, 0), lenet_batchnorm2d(1e-5f, 0.1f),
                           lenet_sigmoid(), lenet_avgpool2d(2, 2), lenet_flatten(), lenet_linear(120),
                           lenet_batchnorm1d(1e-5f, 0.1f), lenet_sigmoid(), lenet_linear(84),
                           lenet_batchnorm1d(1e-5f, 0.1f), lenet_sigmoid(), lenet_linear(10));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 5));
    lenet_optimizer *opt = lenet_sgd_create(m, 0.5f, 0.9f, 0.0f);
    ck_assert_ptr_nonnull(opt);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){16, 1, 28, 28});
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){16, 10});
    int32_t labels[16];
    for (int step = 0; step < 4; step++) {
        lenet_test_fill(x, 100 + (uint64_t)step, 0.0f, 2.0f);
        for (int i = 0; i < 16; i++)
            labels[i] = (i * 7 + step) % 10;
        const lenet_tensor *y;
        float loss;
        ck_assert_lenet_ok(lenet_optimizer_zero_grad(opt));
        ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
        ck_assert_lenet_ok(lenet_cross_entropy(y, labels, &loss, dy));
        ck_assert_lenet_ok(lenet_model_backward(m, dy));
        ck_assert_lenet_ok(lenet_optimizer_step(opt));
    }
    lenet_tensor_free(x);
    lenet_tensor_free(dy);
    lenet_optimizer_free(opt);
    /* The running statistics moved. */
    ck_assert_str_eq(lenet_model_buffer_name(m, 0), "1.running_mean");
    ck_assert(fabsf(lenet_tensor_cdata(lenet_model_buffer(m, 0))[0]) > 1e-3f);
    return m;
}

/* LeCun et al. 1998's LeNet-5 (as tests/test_lenet5.c builds it) on 1x32x32. */
static lenet_model *lenet5(void)
{
    lenet_model *m = MODEL(lenet_conv2d(6, 5, 1, 0), lenet_scaled_tanh(), lenet_subsampling(2, 2), lenet_scaled_tanh(),
                           lenet_lenet5_c3(), lenet_scaled_tanh(), lenet_subsampling(2, 2), lenet_scaled_tanh(),
                           lenet_conv2d(120, 5, 1, 0), lenet_scaled_tanh(), lenet_flatten(), lenet_linear(84),
                           lenet_scaled_tanh(), lenet_lenet5_rbf());
    ck_assert_lenet_ok(lenet_model_build(m, 1, 32, 32));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_LECUN, 6));
    return m;
}

/* Every kind in a few bytes: Conv2d, ScaledTanh, Subsampling (k 2 and 3), a PartialConv2d with a sparse table,
 * MaxPool, AvgPool, Tanh, Flatten, Linear, BatchNorm1d, ReLU, Sigmoid and an RBF with its own centres. */
static lenet_model *tiny_every_kind(void)
{
    static const unsigned char table[3 * 2] = {1, 0, 0, 1, 1, 1};
    float centres[2 * 4];
    for (int i = 0; i < 8; i++)
        centres[i] = (float)i / 4.0f - 1.0f;
    lenet_model *m = MODEL(lenet_conv2d(2, 3, 1, 1), lenet_scaled_tanh(), lenet_subsampling(2, 2),
                           lenet_partial_conv2d(3, 2, 2, table), lenet_batchnorm2d(1e-3f, 0.25f), lenet_tanh(),
                           lenet_maxpool2d(2, 1), lenet_subsampling(3, 3), lenet_avgpool2d(1, 1), lenet_flatten(),
                           lenet_linear(5), lenet_batchnorm1d(1e-5f, 0.5f), lenet_relu(), lenet_linear(4),
                           lenet_sigmoid(), lenet_euclidean_rbf(2));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 14, 14));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, 7));
    memcpy(lenet_tensor_data(lenet_model_param(m, lenet_model_param_count(m) - 1)), centres, sizeof centres);
    /* Running statistics that are not 0 and 1. */
    for (size_t i = 0; i < lenet_model_buffer_count(m); i++) {
        lenet_tensor *b = lenet_model_buffer(m, i);
        if (strstr(lenet_model_buffer_name(m, i), "running"))
            lenet_test_fill(b, 40 + i, 0.5f, 1.5f);
    }
    return m;
}

static lenet_tensor *random_input(const lenet_model *m, int batch, uint64_t seed)
{
    int c, h, w;
    ck_assert_lenet_ok(lenet_model_input_shape(m, &c, &h, &w));
    lenet_tensor *x = lenet_tensor_create(4, (int[]){batch, c, h, w});
    ck_assert_ptr_nonnull(x);
    lenet_test_fill(x, seed, -1.0f, 1.0f);
    return x;
}

/* A tensor for `batch` outputs of m, shaped (batch, the last layer's output shape). */
static lenet_tensor *output_tensor(const lenet_model *m, int batch)
{
    const lenet_shape *last = &m->layers[m->n_layers - 1]->out;
    int dims[1 + LENET_MAX_SAMPLE_DIMS] = {batch};
    for (int d = 0; d < last->ndim; d++)
        dims[1 + d] = last->dim[d];
    lenet_tensor *y = lenet_tensor_create(1 + last->ndim, dims);
    ck_assert_ptr_nonnull(y);
    return y;
}

static lenet_tensor *predict(const lenet_model *m, const lenet_tensor *x)
{
    lenet_tensor *y = output_tensor(m, lenet_tensor_dim(x, 0));
    ck_assert_lenet_ok(lenet_model_predict(m, x, y));
    return y;
}

static double max_abs(const float *v, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)v[i]));
    return m;
}

/* The measure of tests/test_pytorch.c: |a - b| / max(|b|, 1e-2 max|b|). */
static double rel_err(const float *got, const float *want, size_t n)
{
    return lenet_test_max_rel_err(got, want, n, 1e-2 * max_abs(want, n));
}

/* ---- ONNX Runtime through node ---- */

static const char *onnx_dir(void)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/../onnx", lenet_test_fixture(""));
    return path;
}

/* NULL when ONNX Runtime can run, else why not. */
static const char *onnxruntime_missing(void)
{
    static char why[1200];
    char cmd[1200];
    if (system("node --version >/dev/null 2>&1") != 0)
        return "node is not installed";
    snprintf(cmd, sizeof cmd, "node '%s/run.js' --check 2>/dev/null", onnx_dir());
    if (system(cmd) != 0) {
        snprintf(why, sizeof why, "onnxruntime-node is not installed in %s (scripts/install-onnxruntime.sh)",
                 onnx_dir());
        return why;
    }
    return NULL;
}

static void write_tensor(const char *path, const lenet_tensor *t)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    uint32_t ndim = (uint32_t)lenet_tensor_ndim(t);
    ck_assert_uint_eq(fwrite(&ndim, 4, 1, f), 1);
    for (int d = 0; d < (int)ndim; d++) {
        uint32_t dim = (uint32_t)lenet_tensor_dim(t, d);
        ck_assert_uint_eq(fwrite(&dim, 4, 1, f), 1);
    }
    ck_assert_uint_eq(fwrite(lenet_tensor_cdata(t), 4, lenet_tensor_numel(t), f), lenet_tensor_numel(t));
    ck_assert_int_eq(fclose(f), 0);
}

/* Runs `model` on x in ONNX Runtime; the output, shaped as ONNX Runtime gave it. */
static lenet_tensor *run_onnxruntime(const char *model, const lenet_tensor *x)
{
    const char *in = tmp_path("input.bin");
    write_tensor(in, x);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "node '%s/run.js' '%s' '%s' '%s/output.bin'", onnx_dir(), model, in, tmpdir);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "ONNX Runtime failed on %s (%d): see the output above", model, rc);
    size_t size;
    unsigned char *buf = read_bytes(tmp_path("output.bin"), &size);
    uint32_t ndim;
    ck_assert_uint_ge(size, 4);
    memcpy(&ndim, buf, 4);
    ck_assert(ndim >= 1 && ndim <= 4 && size >= 4 + 4 * ndim);
    int dims[4];
    for (uint32_t d = 0; d < ndim; d++) {
        uint32_t v;
        memcpy(&v, buf + 4 + 4 * d, 4);
        dims[d] = (int)v;
    }
    lenet_tensor *y = lenet_tensor_create((int)ndim, dims);
    ck_assert_ptr_nonnull(y);
    ck_assert_uint_eq(size, 4 + 4 * ndim + 4 * lenet_tensor_numel(y));
    memcpy(lenet_tensor_data(y), buf + 4 + 4 * ndim, 4 * lenet_tensor_numel(y));
    free(buf);
    return y;
}

/* Exports m, runs it in ONNX Runtime on batches of 1 and 5, and compares with lenet_model_predict. */
static void check_against_onnxruntime(lenet_model *m, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s", tmp_path("model.onnx"));
    ck_assert_lenet_ok(lenet_model_export_onnx(m, path));
    for (int batch = 1; batch <= 5; batch += 4) {
        lenet_tensor *x = random_input(m, batch, 77 + (uint64_t)batch);
        lenet_tensor *want = predict(m, x);
        lenet_tensor *got = run_onnxruntime(path, x);
        ck_assert_int_eq(lenet_tensor_ndim(got), 2);
        ck_assert_int_eq(lenet_tensor_dim(got, 0), batch);
        ck_assert_int_eq(lenet_tensor_dim(got, 1), lenet_tensor_dim(want, 1));
        double err = rel_err(lenet_tensor_cdata(got), lenet_tensor_cdata(want), lenet_tensor_numel(want));
        printf("onnx: %s, batch %d: ONNX Runtime vs lenet_model_predict, worst relative error %.3g\n", name, batch,
               err);
        ck_assert_msg(err <= TOLERANCE, "%s: ONNX Runtime differs from lenet_model_predict by %g", name, err);
        lenet_tensor_free(x);
        lenet_tensor_free(want);
        lenet_tensor_free(got);
    }
}

/* ---- (a) exports run in ONNX Runtime ---- */

START_TEST(test_exports_give_the_librarys_logits_in_onnx_runtime)
{
    const char *missing = onnxruntime_missing();
    if (missing) {
        printf("skipped: exports in ONNX Runtime: %s\n", missing);
        return;
    }
    make_tmpdir();
    lenet_model *models[] = {d2l_lenet(), modern_lenet(true), bn_lenet(), lenet5(), tiny_every_kind()};
    const char *names[] = {"d2l LeNet", "modern LeNet (ReLU, MaxPool, Dropout)", "BatchNorm LeNet", "LeNet-5",
                           "every kind"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        check_against_onnxruntime(models[i], names[i]);
        lenet_model_free(models[i]);
    }
    remove_tmpdir();
}
END_TEST

/* ---- (b) PyTorch's exports import ---- */

typedef struct fixture_array {
    int ndim, dims[4];
    size_t numel;
    float *data;
} fixture_array;

/* Reads the float32 array `name` of an LNFX file (make_pytorch_fixtures.py). */
static fixture_array fixture_array_read(const char *file, const char *name)
{
    size_t size, pos = 12;
    unsigned char *buf = read_bytes(lenet_test_fixture(file), &size);
    ck_assert_msg(size >= 12 && memcmp(buf, "LNFX", 4) == 0, "%s is not an LNFX file", file);
    uint32_t count;
    memcpy(&count, buf + 8, 4);
    fixture_array out = {0};
    for (uint32_t a = 0; a < count; a++) {
        uint32_t len, dtype, ndim, dim;
        ck_assert(pos + 4 <= size);
        memcpy(&len, buf + pos, 4);
        ck_assert(len < 256 && pos + 4 + len + 8 <= size);
        bool match = strlen(name) == len && memcmp(buf + pos + 4, name, len) == 0;
        pos += 4 + len;
        memcpy(&dtype, buf + pos, 4);
        memcpy(&ndim, buf + pos + 4, 4);
        pos += 8;
        ck_assert(ndim >= 1 && ndim <= 4 && pos + 4 * ndim <= size);
        size_t numel = 1;
        int dims[4];
        for (uint32_t d = 0; d < ndim; d++) {
            memcpy(&dim, buf + pos + 4 * d, 4);
            dims[d] = (int)dim;
            numel *= dim;
        }
        pos += 4 * ndim;
        ck_assert(pos + 4 * numel <= size);
        if (match) {
            ck_assert_int_eq(dtype, 1);
            out.ndim = (int)ndim;
            memcpy(out.dims, dims, sizeof dims);
            out.numel = numel;
            out.data = malloc(4 * numel);
            ck_assert_ptr_nonnull(out.data);
            memcpy(out.data, buf + pos, 4 * numel);
        }
        pos += 4 * numel;
    }
    free(buf);
    ck_assert_msg(out.data != NULL, "%s has no array %s", file, name);
    return out;
}

static void check_pytorch_export(const char *onnx_file, const char *bin_file, const char *const *kinds,
                                 size_t n_kinds)
{
    lenet_model *m = lenet_model_import_onnx(lenet_test_fixture(onnx_file));
    ck_assert_msg(m != NULL, "%s: %s", onnx_file, lenet_last_error());
    ck_assert_uint_eq(lenet_model_layer_count(m), n_kinds);
    for (size_t i = 0; i < n_kinds; i++)
        ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, i)), kinds[i]);
    fixture_array input = fixture_array_read(bin_file, "input"), logits = fixture_array_read(bin_file, "logits");
    lenet_tensor *x = lenet_tensor_create(input.ndim, input.dims);
    memcpy(lenet_tensor_data(x), input.data, 4 * input.numel);
    lenet_tensor *y = predict(m, x);
    ck_assert_uint_eq(lenet_tensor_numel(y), logits.numel);
    double err = rel_err(lenet_tensor_cdata(y), logits.data, logits.numel);
    printf("onnx: %s imported: logits vs PyTorch's, worst relative error %.3g\n", onnx_file, err);
    ck_assert_msg(err <= TOLERANCE, "%s: logits differ from PyTorch's by %g", onnx_file, err);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    free(input.data);
    free(logits.data);
    lenet_model_free(m);
}

START_TEST(test_pytorch_exports_import_and_give_pytorchs_logits)
{
    /* torch.onnx.export writes AvgPool2d as Pad (of zeros) + AveragePool, and folds each Conv + BatchNorm2d of a
     * network in evaluation mode into one Conv. */
    static const char *const d2l[] = {"Conv2d", "Sigmoid", "AvgPool2d", "Conv2d",  "Sigmoid", "AvgPool2d",
                                      "Flatten", "Linear", "Sigmoid",   "Linear",  "Sigmoid", "Linear"};
    static const char *const bn_fused[] = {"Conv2d",  "Sigmoid",     "AvgPool2d", "Conv2d",  "Sigmoid",
                                           "AvgPool2d", "Flatten",   "Linear",    "BatchNorm1d", "Sigmoid",
                                           "Linear",  "BatchNorm1d", "Sigmoid",   "Linear"};
    static const char *const bn[] = {"Conv2d",  "BatchNorm2d", "Sigmoid", "AvgPool2d",   "Conv2d",
                                     "BatchNorm2d", "Sigmoid", "AvgPool2d", "Flatten",   "Linear",
                                     "BatchNorm1d", "Sigmoid", "Linear",  "BatchNorm1d", "Sigmoid", "Linear"};
    check_pytorch_export("onnx_d2l_lenet.onnx", "onnx_d2l_lenet.bin", d2l, sizeof d2l / sizeof d2l[0]);
    check_pytorch_export("onnx_bn_lenet.onnx", "onnx_bn_lenet.bin", bn_fused, sizeof bn_fused / sizeof bn_fused[0]);
    check_pytorch_export("onnx_bn_lenet_unfused.onnx", "onnx_bn_lenet.bin", bn, sizeof bn / sizeof bn[0]);
}
END_TEST

/* ---- (c) round trip ---- */

/* The same layers (kinds and arguments), input shape, parameters and buffers bit for bit.  BatchNorm's momentum
 * only matters in training and goes through ONNX's 1 - momentum, so it is compared to float precision. */
static void check_same_model(const lenet_model *a, const lenet_model *b)
{
    ck_assert_uint_eq(a->n_layers, b->n_layers);
    for (size_t i = 0; i < a->n_layers; i++) {
        const lenet_layer *la = a->layers[i], *lb = b->layers[i];
        ck_assert_str_eq(la->ops->name, lb->ops->name);
        ck_assert_int_eq(la->n_args, lb->n_args);
        bool batchnorm = strncmp(la->ops->name, "BatchNorm", 9) == 0;
        for (int k = 0; k < la->n_args; k++) {
            if (batchnorm && k == 1)
                ck_assert_double_le(fabs(la->args[k] - lb->args[k]), 1e-7);
            else
                ck_assert_msg(la->args[k] == lb->args[k], "layer %zu (%s): argument %d is %.17g, was %.17g", i,
                              la->ops->name, k, lb->args[k], la->args[k]);
        }
    }
    ck_assert(lenet__shape_equal(&a->in_shape, &b->in_shape));
    ck_assert_uint_eq(a->n_params, b->n_params);
    for (size_t i = 0; i < a->n_params; i++) {
        ck_assert_str_eq(a->param_names[i], b->param_names[i]);
        ck_assert_uint_eq(a->param_tensors[i].numel, b->param_tensors[i].numel);
        ck_assert_msg(memcmp(a->param_tensors[i].data, b->param_tensors[i].data, 4 * a->param_tensors[i].numel) == 0,
                      "parameter %s differs", a->param_names[i]);
    }
    ck_assert_uint_eq(a->n_buffers, b->n_buffers);
    for (size_t i = 0; i < a->n_buffers; i++) {
        ck_assert_str_eq(a->buffer_names[i], b->buffer_names[i]);
        if (a->buffer_int64[i])
            continue; /* num_batches_tracked: ONNX has no such thing */
        ck_assert_msg(memcmp(a->buffer_tensors[i].data, b->buffer_tensors[i].data, 4 * a->buffer_tensors[i].numel) == 0,
                      "buffer %s differs", a->buffer_names[i]);
    }
}

START_TEST(test_an_export_imports_back_to_the_same_model)
{
    make_tmpdir();
    lenet_model *models[] = {d2l_lenet(), modern_lenet(false), bn_lenet(), lenet5(), tiny_every_kind()};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        const char *path = tmp_path("model.onnx");
        ck_assert_lenet_ok(lenet_model_export_onnx(models[i], path));
        lenet_model *back = lenet_model_import_onnx(path);
        ck_assert_msg(back != NULL, "model %zu: %s", i, lenet_last_error());
        check_same_model(models[i], back);
        /* ... so it computes the same, bit for bit. */
        lenet_tensor *x = random_input(back, 3, 9);
        lenet_tensor *y1 = predict(models[i], x), *y2 = predict(back, x);
        ck_assert(memcmp(lenet_tensor_cdata(y1), lenet_tensor_cdata(y2), 4 * lenet_tensor_numel(y1)) == 0);
        lenet_tensor_free(x);
        lenet_tensor_free(y1);
        lenet_tensor_free(y2);
        lenet_model_free(back);
        lenet_model_free(models[i]);
    }
    remove_tmpdir();
}
END_TEST

START_TEST(test_dropout_is_left_out_of_an_export)
{
    make_tmpdir();
    lenet_model *m = modern_lenet(true);
    ck_assert_lenet_ok(lenet_model_export_onnx(m, tmp_path("model.onnx")));
    lenet_model *back = lenet_model_import_onnx(tmp_path("model.onnx"));
    ck_assert_ptr_nonnull(back);
    ck_assert_uint_eq(lenet_model_layer_count(back), lenet_model_layer_count(m) - 1);
    for (size_t i = 0; i < lenet_model_layer_count(back); i++)
        ck_assert_str_ne(lenet_layer_name(lenet_model_layer(back, i)), "Dropout");
    lenet_tensor *x = random_input(m, 2, 3);
    lenet_tensor *y1 = predict(m, x), *y2 = predict(back, x);
    ck_assert(memcmp(lenet_tensor_cdata(y1), lenet_tensor_cdata(y2), 4 * lenet_tensor_numel(y1)) == 0);
    lenet_tensor_free(x);
    lenet_tensor_free(y1);
    lenet_tensor_free(y2);
    lenet_model_free(back);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* ---- export errors ---- */

static lenet_status identity_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    (void)l;
    *out = *in;
    return LENET_OK;
}

static void identity_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    memcpy(y, p->x, (size_t)p->n * l->in_size * sizeof(float));
}

static const lenet_layer_ops fancy_ops = {.name = "FancyLayer", .infer_shape = identity_shape,
                                          .forward = identity_forward};

START_TEST(test_export_refuses_null_unbuilt_and_unknown_kinds_and_reports_io_errors)
{
    make_tmpdir();
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_int_eq(lenet_model_export_onnx(NULL, tmp_path("a.onnx")), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_export_onnx(m, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_export_onnx(m, tmp_path("a.onnx")), LENET_ESTATE);
    ck_assert_msg(strstr(lenet_last_error(), "not built"), "%s", lenet_last_error());
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_int_eq(lenet_model_export_onnx(m, tmp_path("no/such/dir/a.onnx")), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "no/such/dir"), "%s", lenet_last_error());
    /* A failed export leaves an existing file as it was. */
    write_bytes(tmp_path("old.onnx"), "old", 3);
    lenet_model *fancy = MODEL(lenet_flatten(), lenet__layer_alloc(sizeof(lenet_layer), &fancy_ops, 0, NULL),
                               lenet_linear(2));
    ck_assert_lenet_ok(lenet_model_build(fancy, 1, 2, 2));
    ck_assert_int_eq(lenet_model_export_onnx(fancy, tmp_path("old.onnx")), LENET_EUNSUPPORTED);
    ck_assert_msg(strstr(lenet_last_error(), "FancyLayer") && strstr(lenet_last_error(), "layer 1"), "%s",
                  lenet_last_error());
    size_t size;
    unsigned char *old = read_bytes(tmp_path("old.onnx"), &size);
    ck_assert(size == 3 && memcmp(old, "old", 3) == 0);
    free(old);
    lenet_model_free(fancy);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* ---- (d) broken and crafted files ---- */

/* A failed import: NULL, a message naming the file, one of the statuses a bad file may give. */
static void check_clean_failure(const char *path, lenet_status want)
{
    lenet_error_clear();
    lenet_model *m = lenet_model_import_onnx(path);
    if (m) {
        lenet_model_free(m);
        ck_abort_msg("%s imported", path);
    }
    ck_assert_msg(lenet_last_error()[0], "no message");
    if (want != LENET_OK)
        ck_assert_msg(lenet__last_status() == want, "status %d, want %d: %s", (int)lenet__last_status(), (int)want,
                      lenet_last_error());
}

START_TEST(test_every_truncation_fails_with_a_format_error)
{
    make_tmpdir();
    lenet_model *m = tiny_every_kind();
    ck_assert_lenet_ok(lenet_model_export_onnx(m, tmp_path("full.onnx")));
    size_t size;
    unsigned char *bytes = read_bytes(tmp_path("full.onnx"), &size);
    for (size_t cut = 0; cut < size; cut++) {
        write_bytes(tmp_path("cut.onnx"), bytes, cut);
        check_clean_failure(tmp_path("cut.onnx"), LENET_EFORMAT);
    }
    free(bytes);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

START_TEST(test_every_corrupted_byte_fails_cleanly_or_imports)
{
    make_tmpdir();
    lenet_model *m = tiny_every_kind();
    ck_assert_lenet_ok(lenet_model_export_onnx(m, tmp_path("full.onnx")));
    size_t size, loaded = 0;
    unsigned char *bytes = read_bytes(tmp_path("full.onnx"), &size);
    static const unsigned char masks[] = {0xff, 0x01, 0x80};
    for (size_t i = 0; i < size; i++) {
        for (size_t k = 0; k < sizeof masks; k++) {
            bytes[i] ^= masks[k];
            write_bytes(tmp_path("bad.onnx"), bytes, size);
            bytes[i] ^= masks[k];
            lenet_error_clear();
            lenet_model *back = lenet_model_import_onnx(tmp_path("bad.onnx"));
            if (back) { /* a changed weight, name or attribute that still makes sense: the model must work */
                lenet_tensor *x = random_input(back, 2, i);
                lenet_tensor *y = output_tensor(back, 2);
                ck_assert_lenet_ok(lenet_model_predict(back, x, y));
                lenet_tensor_free(x);
                lenet_tensor_free(y);
                lenet_model_free(back);
                loaded++;
                continue;
            }
            lenet_status st = lenet__last_status();
            ck_assert_msg(lenet_last_error()[0], "byte %zu: no message", i);
            ck_assert_msg(st == LENET_EFORMAT || st == LENET_EUNSUPPORTED, "byte %zu: status %d: %s", i, (int)st,
                          lenet_last_error());
        }
    }
    printf("onnx: %zu of %zu corrupted files still imported (changed values)\n", loaded, 3 * size);
    free(bytes);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* ---- crafting files ---- */

static void put_node(lenet_pb_buf *graph, const char *op, int n_in, const char *const *in, const char *out)
{
    lenet_pb_buf node = {0};
    for (int i = 0; i < n_in; i++)
        lenet__pb_put_string(&node, ONNX_NODE_INPUT, in[i]);
    lenet__pb_put_string(&node, ONNX_NODE_OUTPUT, out);
    lenet__pb_put_string(&node, ONNX_NODE_OP_TYPE, op);
    lenet__pb_put_message(graph, ONNX_GRAPH_NODE, &node);
    lenet__pb_buf_free(&node);
}

/* A float tensor (N, dims...) value info; dim < 0 writes a symbolic dimension. */
static void put_value(lenet_pb_buf *graph, uint32_t field, const char *name, int ndim, const int64_t *dims)
{
    lenet_pb_buf shape = {0}, tensor = {0}, type = {0}, value = {0};
    for (int d = 0; d < ndim; d++) {
        lenet_pb_buf dim = {0};
        if (dims[d] < 0)
            lenet__pb_put_string(&dim, ONNX_DIM_PARAM, "N");
        else
            lenet__pb_put_int64(&dim, ONNX_DIM_VALUE, dims[d]);
        lenet__pb_put_message(&shape, ONNX_SHAPE_DIM, &dim);
        lenet__pb_buf_free(&dim);
    }
    lenet__pb_put_varint_field(&tensor, ONNX_TENSOR_TYPE_ELEM_TYPE, ONNX_FLOAT);
    lenet__pb_put_message(&tensor, ONNX_TENSOR_TYPE_SHAPE, &shape);
    lenet__pb_put_message(&type, ONNX_TYPE_TENSOR, &tensor);
    lenet__pb_put_string(&value, ONNX_VALUE_NAME, name);
    lenet__pb_put_message(&value, ONNX_VALUE_TYPE, &type);
    lenet__pb_put_message(graph, field, &value);
    lenet__pb_buf_free(&shape);
    lenet__pb_buf_free(&tensor);
    lenet__pb_buf_free(&type);
    lenet__pb_buf_free(&value);
}

/* A model file around a graph's fields (opset 13), written to `name` in the scratch directory. */
static const char *write_model(const char *name, const lenet_pb_buf *graph, int64_t opset)
{
    lenet_pb_buf model = {0}, set = {0};
    lenet__pb_put_int64(&model, ONNX_MODEL_IR_VERSION, 7);
    lenet__pb_put_int64(&set, ONNX_OPSET_VERSION, opset);
    lenet__pb_put_message(&model, ONNX_MODEL_OPSET_IMPORT, &set);
    lenet__pb_put_message(&model, ONNX_MODEL_GRAPH, graph);
    ck_assert(!model.failed);
    const char *path = tmp_path(name);
    write_bytes(path, model.data, model.size);
    lenet__pb_buf_free(&model);
    lenet__pb_buf_free(&set);
    return path;
}

/* input (N, 1, 2, 2) -> op -> output; the graph's fields, to add to. */
static lenet_pb_buf one_node_graph(const char *op)
{
    lenet_pb_buf g = {0};
    put_node(&g, op, 1, (const char *[]){"input"}, "output");
    put_value(&g, ONNX_GRAPH_INPUT, "input", 4, (const int64_t[]){-1, 1, 2, 2});
    put_value(&g, ONNX_GRAPH_OUTPUT, "output", 4, (const int64_t[]){-1, 1, 2, 2});
    return g;
}

START_TEST(test_crafted_files_fail_with_a_message_naming_the_problem)
{
    make_tmpdir();
    lenet_pb_buf g = one_node_graph("Relu");
    lenet_model *m = lenet_model_import_onnx(write_model("relu.onnx", &g, 13));
    ck_assert_msg(m != NULL, "%s", lenet_last_error());
    ck_assert_str_eq(lenet_layer_name(lenet_model_layer(m, 0)), "ReLU");
    lenet_model_free(m);
    lenet__pb_buf_free(&g);

    /* an operator liblenet has no layer for, named in the message */
    g = one_node_graph("Softmax");
    check_clean_failure(write_model("softmax.onnx", &g, 13), LENET_EUNSUPPORTED);
    ck_assert_msg(strstr(lenet_last_error(), "Softmax"), "%s", lenet_last_error());
    lenet__pb_buf_free(&g);

    /* an operator set outside those the reader follows */
    g = one_node_graph("Relu");
    check_clean_failure(write_model("opset.onnx", &g, 99), LENET_EUNSUPPORTED);
    lenet__pb_buf_free(&g);

    /* an unknown attribute is not silently ignored */
    g = (lenet_pb_buf){0};
    {
        lenet_pb_buf node = {0}, a = {0};
        lenet__pb_put_string(&node, ONNX_NODE_INPUT, "input");
        lenet__pb_put_string(&node, ONNX_NODE_OUTPUT, "output");
        lenet__pb_put_string(&node, ONNX_NODE_OP_TYPE, "Relu");
        lenet__pb_put_string(&a, ONNX_ATTR_NAME, "alpha");
        lenet__pb_put_varint_field(&a, ONNX_ATTR_TYPE, ONNX_ATTR_TYPE_FLOAT);
        lenet__pb_put_float(&a, ONNX_ATTR_F, 0.1f);
        lenet__pb_put_message(&node, ONNX_NODE_ATTRIBUTE, &a);
        lenet__pb_put_message(&g, ONNX_GRAPH_NODE, &node);
        lenet__pb_buf_free(&node);
        lenet__pb_buf_free(&a);
    }
    put_value(&g, ONNX_GRAPH_INPUT, "input", 4, (const int64_t[]){-1, 1, 2, 2});
    put_value(&g, ONNX_GRAPH_OUTPUT, "output", 4, (const int64_t[]){-1, 1, 2, 2});
    check_clean_failure(write_model("attr.onnx", &g, 13), LENET_EUNSUPPORTED);
    ck_assert_msg(strstr(lenet_last_error(), "alpha"), "%s", lenet_last_error());
    lenet__pb_buf_free(&g);

    /* a branch: the input feeds two nodes */
    g = one_node_graph("Relu");
    put_node(&g, "Sigmoid", 1, (const char *[]){"input"}, "other");
    check_clean_failure(write_model("branch.onnx", &g, 13), LENET_EUNSUPPORTED);
    ck_assert_msg(strstr(lenet_last_error(), "two nodes"), "%s", lenet_last_error());
    lenet__pb_buf_free(&g);

    /* a node off the chain */
    g = one_node_graph("Relu");
    put_node(&g, "Sigmoid", 1, (const char *[]){"elsewhere"}, "other");
    check_clean_failure(write_model("off_chain.onnx", &g, 13), LENET_EUNSUPPORTED);
    lenet__pb_buf_free(&g);

    /* an input whose C, H, W are not known */
    g = (lenet_pb_buf){0};
    put_node(&g, "Relu", 1, (const char *[]){"input"}, "output");
    put_value(&g, ONNX_GRAPH_INPUT, "input", 4, (const int64_t[]){-1, 1, -1, 2});
    put_value(&g, ONNX_GRAPH_OUTPUT, "output", 4, (const int64_t[]){-1, 1, 2, 2});
    check_clean_failure(write_model("dims.onnx", &g, 13), LENET_EUNSUPPORTED);
    lenet__pb_buf_free(&g);

    /* a Gemm whose weight is missing, or whose raw data does not match its shape */
    for (int variant = 0; variant < 4; variant++) {
        g = (lenet_pb_buf){0};
        put_node(&g, "Flatten", 1, (const char *[]){"input"}, "flat");
        put_node(&g, "Gemm", 2, (const char *[]){"flat", "W"}, "output");
        lenet_pb_buf t = {0};
        int64_t dims[2] = {3, variant == 2 ? -4 : 4};
        for (int d = 0; d < 2; d++)
            lenet__pb_put_int64(&t, ONNX_TENSOR_DIMS, dims[d]);
        lenet__pb_put_varint_field(&t, ONNX_TENSOR_DATA_TYPE, variant == 3 ? 16 /* BFLOAT16 */ : ONNX_FLOAT);
        lenet__pb_put_string(&t, ONNX_TENSOR_NAME, "W");
        float w[12] = {0};
        lenet__pb_put_bytes(&t, ONNX_TENSOR_RAW_DATA, w, variant == 1 ? 44 : 48);
        if (variant > 0)
            lenet__pb_put_message(&g, ONNX_GRAPH_INITIALIZER, &t);
        lenet__pb_buf_free(&t);
        put_value(&g, ONNX_GRAPH_INPUT, "input", 4, (const int64_t[]){-1, 1, 2, 2});
        put_value(&g, ONNX_GRAPH_OUTPUT, "output", 2, (const int64_t[]){-1, 3});
        check_clean_failure(write_model("gemm.onnx", &g, 13), variant == 0 || variant == 3 ? LENET_EUNSUPPORTED
                                                                                          : LENET_EFORMAT);
        lenet__pb_buf_free(&g);
    }

    /* Wire-level damage: a varint of 11 bytes, a group, a length past the end, an empty file, a model without a
     * graph. */
    static const unsigned char long_varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const unsigned char group[] = {0x0b, 0x0c};
    static const unsigned char past_end[] = {0x3a, 0x80, 0x80, 0x04, 0x00};
    static const unsigned char no_graph[] = {0x08, 0x07};
    const struct {
        const unsigned char *bytes;
        size_t size;
    } wire[] = {{long_varint, sizeof long_varint}, {group, sizeof group}, {past_end, sizeof past_end},
                {no_graph, 0}, {no_graph, sizeof no_graph}};
    for (size_t i = 0; i < sizeof wire / sizeof wire[0]; i++) {
        write_bytes(tmp_path("wire.onnx"), wire[i].bytes, wire[i].size);
        check_clean_failure(tmp_path("wire.onnx"), LENET_EFORMAT);
    }

    /* not a file to read */
    check_clean_failure(tmp_path("missing.onnx"), LENET_EIO);
    check_clean_failure(tmpdir, LENET_EIO);
    ck_assert_int_eq(mkfifo(tmp_path("fifo.onnx"), 0600), 0);
    check_clean_failure(tmp_path("fifo.onnx"), LENET_EIO);
    ck_assert_ptr_null(lenet_model_import_onnx(NULL));
    ck_assert_int_eq(lenet__last_status(), LENET_EINVAL);
    remove_tmpdir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("onnx");
    TCase *tc = tcase_create("onnx");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_exports_give_the_librarys_logits_in_onnx_runtime);
    tcase_add_test(tc, test_pytorch_exports_import_and_give_pytorchs_logits);
    tcase_add_test(tc, test_an_export_imports_back_to_the_same_model);
    tcase_add_test(tc, test_dropout_is_left_out_of_an_export);
    tcase_add_test(tc, test_export_refuses_null_unbuilt_and_unknown_kinds_and_reports_io_errors);
    tcase_add_test(tc, test_every_truncation_fails_with_a_format_error);
    tcase_add_test(tc, test_every_corrupted_byte_fails_cleanly_or_imports);
    tcase_add_test(tc, test_crafted_files_fail_with_a_message_naming_the_problem);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
