/* Checkpoints (issue 7): safetensors round trips, PyTorch weights, resume, corrupt files, crash safety, and
 * inference from several threads on a loaded model. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/internal.h"
#include "io/internal.h"
#include "layers/registry.h"
#include "model/internal.h"
#include "optim/internal.h"
#include "testutil.h"

/* ---- a private temporary directory per test ---- */

static char tmpdir[256];

static void make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/lenet-io-XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static size_t count_dir_entries(void)
{
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
        if (remove(path) != 0)
            rmdir(path);
    }
    closedir(d);
    rmdir(tmpdir);
}

/* Path of `name` in the temporary directory, from a ring of static buffers (a test keeps at most 64 at once). */
static const char *tmp_path(const char *name)
{
    static char ring[64][512];
    static int next;
    char *p = ring[next++ % 64];
    snprintf(p, sizeof ring[0], "%s/%s", tmpdir, name);
    return p;
}

typedef struct bytes {
    unsigned char *data;
    size_t size;
} bytes;

static bytes read_bytes(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    ck_assert_int_ge(size, 0);
    rewind(f);
    bytes b = {malloc((size_t)size + 1), (size_t)size};
    ck_assert_ptr_nonnull(b.data);
    ck_assert_uint_eq(fread(b.data, 1, b.size, f), b.size);
    fclose(f);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t size)
{
    /* A new file rather than a truncated one: ext4 flushes a file truncated and rewritten when it is closed, which
     * would make the thousands of small files of the corruption tests slow. */
    remove(path);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, size, f), size);
    ck_assert_int_eq(fclose(f), 0);
}

/* Writes a safetensors file from a header of n bytes (which may hold a NUL) and a data section. */
static const char *write_st_len(const char *name, const char *header, size_t n, const void *data, size_t data_size)
{
    unsigned char *buf = malloc(8 + n + data_size + 1);
    ck_assert_ptr_nonnull(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    if (data_size)
        memcpy(buf + 8 + n, data, data_size);
    const char *path = tmp_path(name);
    write_bytes(path, buf, 8 + n + data_size);
    free(buf);
    return path;
}

/* Writes a safetensors file from a header text and a data section. */
static const char *write_st(const char *name, const char *header, const void *data, size_t data_size)
{
    return write_st_len(name, header, strlen(header), data, data_size);
}

/* Rewrites a saved file with `from` replaced by `to` in its JSON header (header length adjusted, data kept). */
static const char *edit_header(const char *src, const char *name, const char *from, const char *to)
{
    bytes b = read_bytes(src);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | b.data[i];
    char *header = malloc(n + 1);
    memcpy(header, b.data + 8, n);
    header[n] = '\0';
    char *at = strstr(header, from);
    ck_assert_msg(at != NULL, "\"%s\" not in the header", from);
    size_t new_len = n - strlen(from) + strlen(to);
    char *edited = malloc(new_len + 1);
    size_t head = (size_t)(at - header);
    memcpy(edited, header, head);
    strcpy(edited + head, to);
    strcat(edited, at + strlen(from));
    const char *path = write_st(name, edited, b.data + 8 + n, b.size - 8 - n);
    free(edited);
    free(header);
    free(b.data);
    return path;
}

/* ---- models ---- */

/* Conv2d(2, 3, 1, 1) ReLU MaxPool2d(2, 2) Flatten Linear(3) on 1x6x6: a checkpoint of about a kilobyte. */
static lenet_model *tiny_model(uint64_t seed)
{
    lenet_model *m = lenet_model_create();
    ck_assert_ptr_nonnull(m);
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(2, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_maxpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(3)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 6, 6));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, seed));
    return m;
}

static lenet_model *d2l_model(uint64_t seed)
{
    lenet_model *m = lenet_test_d2l_model();
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, seed));
    return m;
}

static void assert_params_equal(lenet_model *m, const float *expected, size_t count)
{
    size_t n;
    float *now = lenet_test_copy_tensors(m, false, &n);
    ck_assert_uint_eq(n, count);
    ck_assert_msg(memcmp(now, expected, n * sizeof *now) == 0, "parameters differ");
    free(now);
}

/* All buffers (running statistics, counts), concatenated, in a new buffer. */
static float *buffers_copy(lenet_model *m, size_t *count)
{
    size_t total = 0;
    for (size_t i = 0; i < lenet_model_buffer_count(m); i++)
        total += lenet_tensor_numel(lenet_model_buffer(m, i));
    float *out = malloc((total ? total : 1) * sizeof *out);
    ck_assert_ptr_nonnull(out);
    size_t at = 0;
    for (size_t i = 0; i < lenet_model_buffer_count(m); i++) {
        const lenet_tensor *b = lenet_model_buffer(m, i);
        memcpy(out + at, lenet_tensor_cdata(b), lenet_tensor_numel(b) * sizeof *out);
        at += lenet_tensor_numel(b);
    }
    *count = total;
    return out;
}

/* The same parameters and the same buffers, bit for bit, under the same names. */
static void assert_models_equal(lenet_model *a, lenet_model *b)
{
    size_t n, nb;
    float *pa = lenet_test_copy_tensors(a, false, &n);
    assert_params_equal(b, pa, n);
    free(pa);
    ck_assert_uint_eq(lenet_model_buffer_count(a), lenet_model_buffer_count(b));
    for (size_t i = 0; i < lenet_model_buffer_count(a); i++)
        ck_assert_str_eq(lenet_model_buffer_name(a, i), lenet_model_buffer_name(b, i));
    float *ba = buffers_copy(a, &n), *bb = buffers_copy(b, &nb);
    ck_assert_uint_eq(n, nb);
    ck_assert_msg(memcmp(ba, bb, n * sizeof *ba) == 0, "buffers differ");
    free(ba);
    free(bb);
}

/* One SGD step on a batch: forward, cross-entropy, zero_grad, backward, step. */
static void sgd_step_on(lenet_model *m, lenet_optimizer *o, const lenet_tensor *x, const int32_t *labels)
{
    const lenet_tensor *y;
    ck_assert_lenet_ok(lenet_model_forward(m, x, &y));
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){lenet_tensor_dim(y, 0), lenet_tensor_dim(y, 1)});
    float loss;
    ck_assert_lenet_ok(lenet_cross_entropy(y, labels, &loss, dy));
    ck_assert_lenet_ok(lenet_optimizer_zero_grad(o));
    ck_assert_lenet_ok(lenet_model_backward(m, dy));
    ck_assert_lenet_ok(lenet_optimizer_step(o));
    lenet_tensor_free(dy);
}

/* ---- a tiny IDX data set: 8x8 images, label = which quadrant is brightest (0-3) ---- */

enum { DATA_N = 45, DATA_SIDE = 8 };

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static lenet_dataset *tiny_dataset(void)
{
    unsigned char images[16 + DATA_N * DATA_SIDE * DATA_SIDE], labels[8 + DATA_N];
    put_be32(images, 0x803);
    put_be32(images + 4, DATA_N);
    put_be32(images + 8, DATA_SIDE);
    put_be32(images + 12, DATA_SIDE);
    put_be32(labels, 0x801);
    put_be32(labels + 4, DATA_N);
    uint64_t x = 42;
    for (int i = 0; i < DATA_N; i++) {
        int label = i % 4;
        labels[8 + i] = (unsigned char)label;
        for (int p = 0; p < DATA_SIDE * DATA_SIDE; p++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            int r = p / DATA_SIDE, c = p % DATA_SIDE;
            int quadrant = (r >= DATA_SIDE / 2) * 2 + (c >= DATA_SIDE / 2);
            images[16 + i * DATA_SIDE * DATA_SIDE + p] = (unsigned char)((x >> 59) + (quadrant == label ? 200 : 0));
        }
    }
    write_bytes(tmp_path("images.idx"), images, sizeof images);
    write_bytes(tmp_path("labels.idx"), labels, sizeof labels);
    lenet_dataset *d = lenet_dataset_open_idx(tmp_path("images.idx"), tmp_path("labels.idx"));
    ck_assert_msg(d != NULL, "%s", lenet_last_error());
    return d;
}

/* Conv2d(4, 3) Tanh AvgPool2d(2, 2) Flatten Linear(4) on 1x8x8. */
static lenet_model *data_model(uint64_t seed)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(4, 3, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_tanh()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(4)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, DATA_SIDE, DATA_SIDE));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_XAVIER_UNIFORM, seed));
    return m;
}

/* A checkpoint of the tiny model with SGD momentum state and an iterator, after two steps. */
static const char *tiny_checkpoint(const char *name)
{
    lenet_model *m = tiny_model(3);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 1e-3f);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){2, 1, 6, 6});
    lenet_test_fill(x, 9, 0.0f, 1.0f);
    int32_t labels[2] = {0, 2};
    sgd_step_on(m, o, x, labels);
    sgd_step_on(m, o, x, labels);
    unsigned char images[16 + 5 * 4], idx_labels[8 + 5] = {0};
    memset(images, 7, sizeof images);
    put_be32(images, 0x803);
    put_be32(images + 4, 5);
    put_be32(images + 8, 2);
    put_be32(images + 12, 2);
    put_be32(idx_labels, 0x801);
    put_be32(idx_labels + 4, 5);
    write_bytes(tmp_path("small-images.idx"), images, sizeof images);
    write_bytes(tmp_path("small-labels.idx"), idx_labels, sizeof idx_labels);
    lenet_dataset *d = lenet_dataset_open_idx(tmp_path("small-images.idx"), tmp_path("small-labels.idx"));
    ck_assert_ptr_nonnull(d);
    lenet_iter *it = lenet_iter_create(d, 2, true, 11);
    const lenet_tensor *images_t;
    const int32_t *labels_t;
    int count;
    ck_assert_lenet_ok(lenet_iter_next(it, &images_t, &labels_t, &count));
    const char *path = tmp_path(name);
    ck_assert_lenet_ok(lenet_checkpoint_save(m, o, it, "tiny", path));
    lenet_iter_free(it);
    lenet_dataset_free(d);
    lenet_tensor_free(x);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    return path;
}

/* ---- round trips ---- */

START_TEST(test_save_then_load_gives_bit_identical_outputs)
{
    make_tmpdir();
    lenet_model *m = d2l_model(1);
    const char *path = tmp_path("d2l.safetensors");
    ck_assert_lenet_ok(lenet_model_save(m, path));
    lenet_model *loaded = lenet_model_load(path);
    ck_assert_msg(loaded != NULL, "%s", lenet_last_error());
    ck_assert(lenet_model_is_built(loaded));
    ck_assert_uint_eq(lenet_model_layer_count(loaded), lenet_model_layer_count(m));
    for (size_t i = 0; i < lenet_model_layer_count(m); i++)
        ck_assert_str_eq(lenet_layer_name(lenet_model_layer(loaded, i)), lenet_layer_name(lenet_model_layer(m, i)));
    ck_assert_uint_eq(lenet_model_param_count(loaded), lenet_model_param_count(m));
    for (size_t i = 0; i < lenet_model_param_count(m); i++)
        ck_assert_str_eq(lenet_model_param_name(loaded, i), lenet_model_param_name(m, i));
    assert_models_equal(m, loaded);

    lenet_tensor *x = lenet_tensor_create(4, (int[]){5, 1, 28, 28});
    lenet_tensor *ya = lenet_tensor_create(2, (int[]){5, 10}), *yb = lenet_tensor_create(2, (int[]){5, 10});
    lenet_test_fill(x, 2, 0.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_predict(m, x, ya));
    ck_assert_lenet_ok(lenet_model_predict(loaded, x, yb));
    ck_assert_mem_eq(lenet_tensor_cdata(ya), lenet_tensor_cdata(yb), 50 * sizeof(float));

    /* The input shape can be read before loading. */
    int c = 0, h = 0, wd = 0;
    ck_assert_lenet_ok(lenet_checkpoint_input_shape(path, &c, &h, &wd));
    ck_assert_int_eq(c, 1);
    ck_assert_int_eq(h, 28);
    ck_assert_int_eq(wd, 28);
    ck_assert_int_eq(lenet_checkpoint_input_shape(lenet_test_fixture("pytorch_d2l_lenet.safetensors"), &c, &h, &wd),
                     LENET_EFORMAT);
    ck_assert_int_eq(lenet_checkpoint_input_shape(path, NULL, &h, &wd), LENET_EINVAL);
    ck_assert_int_eq(c, 1);

    /* And the file is plain safetensors with liblenet's metadata. */
    lenet_st_file f;
    ck_assert_lenet_ok(lenet__st_read(path, &f));
    ck_assert_str_eq(lenet__st_meta(&f, "liblenet_version"), lenet_version_string());
    ck_assert_str_eq(lenet__st_meta(&f, "liblenet_format"), "1");
    ck_assert_str_eq(lenet__st_meta(&f, "format"), "pt");
    ck_assert_ptr_nonnull(strstr(lenet__st_meta(&f, "architecture"), "{\"kind\":\"Conv2d\",\"args\":[6,5,1,2]}"));
    ck_assert_ptr_nonnull(strstr(lenet__st_meta(&f, "architecture"), "\"input\":[1,28,28]"));
    ck_assert_uint_eq(f.n_tensors, 10);
    const lenet_st_tensor *w = lenet__st_find(&f, "7.weight");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(w->dtype, LENET_ST_F32);
    ck_assert_int_eq(w->ndim, 2);
    ck_assert_uint_eq(w->shape[0], 120);
    ck_assert_uint_eq(w->shape[1], 400);
    ck_assert_uint_eq((uintptr_t)(f.data - f.bytes) % 8, 0); /* the header is padded to 8 bytes */
    lenet__st_close(&f);

    lenet_tensor_free(x);
    lenet_tensor_free(ya);
    lenet_tensor_free(yb);
    lenet_model_free(loaded);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

START_TEST(test_loaded_model_trains_on_identically)
{
    make_tmpdir();
    lenet_model *m = d2l_model(4);
    const char *path = tmp_path("d2l.safetensors");
    ck_assert_lenet_ok(lenet_model_save(m, path));
    lenet_model *loaded = lenet_model_load(path);
    ck_assert_msg(loaded != NULL, "%s", lenet_last_error());
    lenet_optimizer *oa = lenet_sgd_create(m, 0.1f, 0.9f, 1e-3f), *ob = lenet_sgd_create(loaded, 0.1f, 0.9f, 1e-3f);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){8, 1, 28, 28});
    lenet_test_fill(x, 5, 0.0f, 1.0f);
    int32_t labels[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int step = 0; step < 3; step++) {
        sgd_step_on(m, oa, x, labels);
        sgd_step_on(loaded, ob, x, labels);
    }
    assert_models_equal(m, loaded);
    size_t n;
    float *after = lenet_test_copy_tensors(m, false, &n);
    lenet_model *fresh = d2l_model(4);
    float *before = lenet_test_copy_tensors(fresh, false, &n);
    ck_assert_msg(memcmp(before, after, n * sizeof *after) != 0, "training changed nothing");
    free(before);
    free(after);
    lenet_model_free(fresh);
    lenet_tensor_free(x);
    lenet_optimizer_free(oa);
    lenet_optimizer_free(ob);
    lenet_model_free(loaded);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

START_TEST(test_load_weights_fills_a_model_built_in_code)
{
    make_tmpdir();
    lenet_model *m = tiny_model(1), *other = tiny_model(2);
    const char *path = tmp_path("tiny.safetensors");
    ck_assert_lenet_ok(lenet_model_save(m, path));
    ck_assert_lenet_ok(lenet_model_load_weights(other, path));
    assert_models_equal(m, other);

    lenet_model *unbuilt = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(unbuilt, lenet_linear(3)));
    ck_assert_int_eq(lenet_model_load_weights(unbuilt, path), LENET_ESTATE);
    ck_assert_int_eq(lenet_model_save(unbuilt, path), LENET_ESTATE);
    lenet_model_free(unbuilt);

    ck_assert_int_eq(lenet_model_load_weights(NULL, path), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_load_weights(m, NULL), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_save(NULL, path), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_save(m, NULL), LENET_EINVAL);
    ck_assert_ptr_null(lenet_model_load(NULL));
    ck_assert_int_eq(lenet_checkpoint_load(NULL, NULL, NULL, path, NULL, 0), LENET_EINVAL);
    ck_assert_int_eq(lenet_model_load_weights(m, tmp_path("missing.safetensors")), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "missing.safetensors") != NULL, "%s", lenet_last_error());
    ck_assert_ptr_null(lenet_model_load(tmp_path("missing.safetensors")));
    ck_assert_int_eq(lenet__last_status(), LENET_EIO);
    lenet_model_free(m);
    lenet_model_free(other);
    remove_tmpdir();
}
END_TEST

/* ---- the state of a model, optimizer and iterator, to check that a failed load changed nothing ---- */

typedef struct snapshot {
    float *params, *buffers;
    size_t n_params, n_buffer_values;
    unsigned long long steps;
    float lr;
    float *buffer;
    size_t buffer_numel;
    size_t position;
    size_t *order;
    size_t order_size;
    uint64_t rng[4];
} snapshot;

static snapshot take_snapshot(lenet_model *m, lenet_optimizer *o, lenet_iter *it)
{
    snapshot s = {0};
    s.params = lenet_test_copy_tensors(m, false, &s.n_params);
    s.buffers = buffers_copy(m, &s.n_buffer_values);
    if (o) {
        s.steps = o->steps;
        s.lr = o->lr;
        lenet_optimizer_state os;
        ck_assert_lenet_ok(o->ops->state(o, &os));
        if (os.n_buffers > 0 && os.buffers[0]) {
            s.buffer_numel = m->arena_numel;
            s.buffer = malloc(s.buffer_numel * sizeof(float));
            memcpy(s.buffer, os.buffers[0], s.buffer_numel * sizeof(float));
        }
    }
    if (it) {
        lenet_iter_state is;
        lenet__iter_get_state(it, &is);
        s.position = is.position;
        s.order_size = is.size;
        s.order = malloc((is.size ? is.size : 1) * sizeof *s.order);
        memcpy(s.order, is.order, is.size * sizeof *s.order);
        memcpy(s.rng, is.rng, sizeof s.rng);
    }
    return s;
}

static void assert_unchanged(const snapshot *s, lenet_model *m, lenet_optimizer *o, lenet_iter *it)
{
    snapshot now = take_snapshot(m, o, it);
    ck_assert_uint_eq(now.n_params, s->n_params);
    ck_assert_msg(memcmp(now.params, s->params, s->n_params * sizeof(float)) == 0, "parameters changed");
    ck_assert_uint_eq(now.n_buffer_values, s->n_buffer_values);
    ck_assert_msg(memcmp(now.buffers, s->buffers, s->n_buffer_values * sizeof(float)) == 0, "buffers changed");
    ck_assert_uint_eq(now.steps, s->steps);
    ck_assert_float_eq(now.lr, s->lr);
    ck_assert_uint_eq(now.buffer_numel, s->buffer_numel);
    if (s->buffer) {
        /* Only the trainable slices are defined. */
        for (size_t t = 0; t < m->n_params; t++)
            ck_assert_msg(memcmp(now.buffer + m->param_offset[t], s->buffer + m->param_offset[t],
                                 m->param_tensors[t].numel * sizeof(float)) == 0,
                          "momentum of %s changed", m->param_names[t]);
    }
    ck_assert_uint_eq(now.position, s->position);
    ck_assert_uint_eq(now.order_size, s->order_size);
    if (s->order)
        ck_assert_msg(memcmp(now.order, s->order, s->order_size * sizeof *s->order) == 0, "order changed");
    ck_assert_msg(memcmp(now.rng, s->rng, sizeof s->rng) == 0, "generator changed");
    free(now.params);
    free(now.buffers);
    free(now.buffer);
    free(now.order);
}

static void snapshot_free(snapshot *s)
{
    free(s->params);
    free(s->buffers);
    free(s->buffer);
    free(s->order);
}

/* ---- PyTorch ---- */

START_TEST(test_pytorch_state_dict_gives_pytorchs_logits)
{
    lenet_model *m = d2l_model(99);
    ck_assert_lenet_ok(lenet_model_load_weights(m, lenet_test_fixture("pytorch_d2l_lenet.safetensors")));
    lenet_st_file f;
    ck_assert_lenet_ok(lenet__st_read(lenet_test_fixture("pytorch_d2l_lenet_io.safetensors"), &f));
    const lenet_st_tensor *input = lenet__st_find(&f, "input"), *logits = lenet__st_find(&f, "logits");
    ck_assert_ptr_nonnull(input);
    ck_assert_ptr_nonnull(logits);
    ck_assert_int_eq(input->ndim, 4);
    ck_assert_uint_eq(input->shape[0], 4);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){4, 1, 28, 28});
    lenet_tensor *y = lenet_tensor_create(2, (int[]){4, 10});
    float expected[40];
    ck_assert_uint_eq(logits->numel, 40);
    lenet__st_to_float(input, lenet_tensor_data(x));
    lenet__st_to_float(logits, expected);
    ck_assert_lenet_ok(lenet_model_predict(m, x, y));
    double err = lenet_test_max_rel_err(lenet_tensor_cdata(y), expected, 40, 1.0);
    printf("PyTorch d2l LeNet logits: worst |lenet - torch| / max(|torch|, 1) = %.3g\n", err);
    ck_assert_msg(err <= 1e-5, "logits differ from PyTorch's by %g", err);
    /* The C model's own init was replaced: every parameter is PyTorch's. */
    lenet_st_file w;
    ck_assert_lenet_ok(lenet__st_read(lenet_test_fixture("pytorch_d2l_lenet.safetensors"), &w));
    ck_assert_ptr_null(lenet__st_meta(&w, "liblenet_format"));
    const lenet_st_tensor *b = lenet__st_find(&w, "9.bias");
    float bias[84];
    lenet__st_to_float(b, bias);
    ck_assert_mem_eq(bias, lenet_tensor_cdata(lenet_model_param(m, 7)), sizeof bias);
    ck_assert_str_eq(lenet_model_param_name(m, 7), "9.bias");
    /* A PyTorch file is no liblenet checkpoint: it has no architecture to rebuild. */
    ck_assert_ptr_null(lenet_model_load(lenet_test_fixture("pytorch_d2l_lenet.safetensors")));
    ck_assert_int_eq(lenet__last_status(), LENET_EFORMAT);
    ck_assert_msg(strstr(lenet_last_error(), "lenet_model_load_weights") != NULL, "%s", lenet_last_error());
    lenet__st_close(&w);
    lenet__st_close(&f);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_model_free(m);
}
END_TEST

START_TEST(test_float64_float16_and_bfloat16_weights_are_converted)
{
    make_tmpdir();
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 1, 3));
    /* 1.weight (2, 3) as F64: 0.5 -1.25 3 0.1 -0 1e-3; 1.bias (2) as F16: 1.0 and 2^-24 (subnormal). */
    double w64[6] = {0.5, -1.25, 3.0, 0.1, -0.0, 1e-3};
    unsigned char data[48 + 4];
    for (int i = 0; i < 6; i++) {
        uint64_t bits;
        memcpy(&bits, &w64[i], 8);
        for (int k = 0; k < 8; k++)
            data[8 * i + k] = (unsigned char)(bits >> (8 * k));
    }
    const unsigned char f16[4] = {0x00, 0x3c, 0x01, 0x00};
    memcpy(data + 48, f16, 4);
    const char *path = write_st("f64.safetensors",
                                "{\"1.weight\":{\"dtype\":\"F64\",\"shape\":[2,3],\"data_offsets\":[0,48]},"
                                "\"1.bias\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[48,52]}}",
                                data, sizeof data);
    ck_assert_lenet_ok(lenet_model_load_weights(m, path));
    const float *w = lenet_tensor_cdata(lenet_model_param(m, 0)), *b = lenet_tensor_cdata(lenet_model_param(m, 1));
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(w[i], (float)w64[i]);
    ck_assert_float_eq(b[0], 1.0f);
    ck_assert_float_eq(b[1], 0x1.0p-24f);

    /* BF16 bias: 1.0 = 0x3f80, -2.5 = 0xc020; F16 weight: -2 = 0xc000, 65504 = 0x7bff, 0.5 = 0x3800, ... */
    const unsigned char mixed[12 + 4] = {0x00, 0xc0, 0xff, 0x7b, 0x00, 0x38, 0x00, 0x80, 0x00, 0x00, 0x00, 0x3c,
                                         0x80, 0x3f, 0x20, 0xc0};
    path = write_st("bf16.safetensors",
                    "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"1.weight\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                    "\"1.bias\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[12,16]}}",
                    mixed, sizeof mixed);
    ck_assert_lenet_ok(lenet_model_load_weights(m, path));
    const float want_w[6] = {-2.0f, 65504.0f, 0.5f, -0.0f, 0.0f, 1.0f};
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(w[i], want_w[i]);
    ck_assert_float_eq(b[0], 1.0f);
    ck_assert_float_eq(b[1], -2.5f);

    /* Integers are not weights. */
    snapshot s = take_snapshot(m, NULL, NULL);
    path = write_st("i32.safetensors",
                    "{\"1.weight\":{\"dtype\":\"I32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                    "\"1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}}",
                    data, 32);
    ck_assert_int_eq(lenet_model_load_weights(m, path), LENET_EFORMAT);
    ck_assert_msg(strstr(lenet_last_error(), "I32") != NULL, "%s", lenet_last_error());
    assert_unchanged(&s, m, NULL, NULL);
    snapshot_free(&s);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* ---- buffers: running statistics and num_batches_tracked ---- */

/* Conv2d(3, 3, 1, 1) BatchNorm2d ReLU Flatten Linear(4) BatchNorm1d Linear(2) on 1x4x4, trained `steps` SGD steps
 * on a batch of 6, so that its running statistics and its num_batches_tracked (= steps) are not the initial ones. */
static lenet_model *bn_model(uint64_t seed, int steps)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(3, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, 0.1f)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(4)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-5f, 0.1f)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 4, 4));
    ck_assert_lenet_ok(lenet_model_init(m, LENET_INIT_PYTORCH, seed));
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 0.0f);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){6, 1, 4, 4});
    lenet_test_fill(x, seed + 100, 0.0f, 1.0f);
    int32_t labels[6] = {0, 1, 1, 0, 1, 0};
    for (int i = 0; i < steps; i++)
        sgd_step_on(m, o, x, labels);
    lenet_tensor_free(x);
    lenet_optimizer_free(o);
    return m;
}

/* The JSON header of a safetensors file, NUL-terminated, in a new buffer. */
static char *raw_header(const char *path)
{
    bytes b = read_bytes(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | b.data[i];
    ck_assert_uint_le(n, b.size - 8);
    char *header = malloc(n + 1);
    ck_assert_ptr_nonnull(header);
    memcpy(header, b.data + 8, n);
    header[n] = '\0';
    free(b.data);
    return header;
}

START_TEST(test_buffers_round_trip_under_their_names_with_counts_as_i64)
{
    make_tmpdir();
    lenet_model *m = bn_model(1, 3);
    const char *names[6] = {"1.running_mean", "1.running_var", "1.num_batches_tracked",
                            "5.running_mean", "5.running_var", "5.num_batches_tracked"};
    ck_assert_uint_eq(lenet_model_buffer_count(m), 6);
    for (size_t i = 0; i < 6; i++)
        ck_assert_str_eq(lenet_model_buffer_name(m, i), names[i]);
    ck_assert_float_eq(lenet_tensor_cdata(lenet_model_buffer(m, 2))[0], 3.0f);
    ck_assert_float_ne(lenet_tensor_cdata(lenet_model_buffer(m, 0))[0], 0.0f); /* trained: not the initial 0 */

    const char *path = tmp_path("bn.safetensors");
    ck_assert_lenet_ok(lenet_model_save(m, path));
    /* On file: F32 running statistics, and the counts as PyTorch keeps them, 0-dimensional I64. */
    char *header = raw_header(path);
    ck_assert_msg(strstr(header, "\"1.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],") != NULL, "%s", header);
    ck_assert_msg(strstr(header, "\"5.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],") != NULL, "%s", header);
    ck_assert_msg(strstr(header, "\"1.running_mean\":{\"dtype\":\"F32\",\"shape\":[3],") != NULL, "%s", header);
    ck_assert_msg(strstr(header, "\"5.running_var\":{\"dtype\":\"F32\",\"shape\":[4],") != NULL, "%s", header);
    free(header);
    lenet_st_file f;
    ck_assert_lenet_ok(lenet__st_read(path, &f));
    const lenet_st_tensor *count = lenet__st_find(&f, "5.num_batches_tracked");
    ck_assert_ptr_nonnull(count);
    ck_assert_int_eq(count->ndim, 0);
    ck_assert_uint_eq(count->nbytes, 8);
    uint64_t value = 0;
    ck_assert(lenet__st_index_at(count, 0, &value));
    ck_assert_uint_eq(value, 3);
    ck_assert_uint_eq(f.n_tensors, 10 + 6);
    lenet__st_close(&f);

    /* lenet_model_load rebuilds it with the same names and values; predict uses the running statistics. */
    lenet_model *loaded = lenet_model_load(path);
    ck_assert_msg(loaded != NULL, "%s", lenet_last_error());
    assert_models_equal(m, loaded);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){5, 1, 4, 4});
    lenet_tensor *ya = lenet_tensor_create(2, (int[]){5, 2}), *yb = lenet_tensor_create(2, (int[]){5, 2});
    lenet_test_fill(x, 7, 0.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_predict(m, x, ya));
    ck_assert_lenet_ok(lenet_model_predict(loaded, x, yb));
    ck_assert_mem_eq(lenet_tensor_cdata(ya), lenet_tensor_cdata(yb), 10 * sizeof(float));

    /* The size check before building counts buffers: a wider BatchNorm1d needs more than the file holds. */
    const char *wide = edit_header(path, "wide.safetensors", "{\\\"kind\\\":\\\"Linear\\\",\\\"args\\\":[4]}",
                                   "{\\\"kind\\\":\\\"Linear\\\",\\\"args\\\":[400]}");
    ck_assert_ptr_null(lenet_model_load(wide));
    ck_assert_int_eq(lenet__last_status(), LENET_EFORMAT);
    /* Conv2d 27 + 3, BatchNorm2d 6 + 7, Linear(400) 48 * 400 + 400, BatchNorm1d(400) 800 + 801, Linear(2) 802. */
    ck_assert_msg(strstr(lenet_last_error(), "needs 22046 parameter and buffer elements, the file's tensors hold 266"),
                  "%s", lenet_last_error());

    /* lenet_model_load_weights into the same network built in code, its buffers untrained. */
    lenet_model *other = bn_model(2, 0);
    ck_assert_float_eq(lenet_tensor_cdata(lenet_model_buffer(other, 2))[0], 0.0f);
    ck_assert_lenet_ok(lenet_model_load_weights(other, path));
    assert_models_equal(m, other);

    /* A training checkpoint carries them too, and training on from it gives the same running statistics. */
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 0.0f);
    const char *ckpt = tmp_path("bn.ckpt");
    ck_assert_lenet_ok(lenet_checkpoint_save(m, o, NULL, NULL, ckpt));
    lenet_model *resumed = bn_model(3, 1);
    lenet_optimizer *ro = lenet_sgd_create(resumed, 0.1f, 0.9f, 0.0f);
    ck_assert_lenet_ok(lenet_checkpoint_load(resumed, ro, NULL, ckpt, NULL, 0));
    assert_models_equal(m, resumed);
    lenet_tensor *batch = lenet_tensor_create(4, (int[]){6, 1, 4, 4});
    lenet_test_fill(batch, 8, 0.0f, 1.0f);
    int32_t labels[6] = {1, 1, 0, 0, 1, 0};
    sgd_step_on(m, o, batch, labels);
    sgd_step_on(resumed, ro, batch, labels);
    ck_assert_float_eq(lenet_tensor_cdata(lenet_model_buffer(resumed, 5))[0], 4.0f);
    assert_models_equal(m, resumed);

    /* Counts are exact up to 2^24 (what a float holds): 2^24 goes out and comes back exactly. */
    lenet_tensor_data(lenet_model_buffer(m, 2))[0] = 16777216.0f;
    ck_assert_lenet_ok(lenet_model_save(m, path));
    ck_assert_lenet_ok(lenet__st_read(path, &f));
    ck_assert(lenet__st_index_at(lenet__st_find(&f, "1.num_batches_tracked"), 0, &value));
    ck_assert_uint_eq(value, 16777216);
    lenet__st_close(&f);
    ck_assert_lenet_ok(lenet_model_load_weights(other, path));
    ck_assert_float_eq(lenet_tensor_cdata(lenet_model_buffer(other, 2))[0], 16777216.0f);

    lenet_tensor_free(batch);
    lenet_optimizer_free(ro);
    lenet_model_free(resumed);
    lenet_optimizer_free(o);
    lenet_model_free(other);
    lenet_tensor_free(x);
    lenet_tensor_free(ya);
    lenet_tensor_free(yb);
    lenet_model_free(loaded);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* One tensor of a hand-made file: `size` bytes, the first (up to 8) holding `bits` little-endian, the rest 0. */
typedef struct st_entry {
    const char *name, *dtype, *shape;
    uint64_t bits;
    size_t size;
} st_entry;

static const char *write_entries(const char *file, const st_entry *e, int n)
{
    char header[4096];
    unsigned char data[1024] = {0};
    size_t used = (size_t)snprintf(header, sizeof header, "{"), at = 0;
    for (int i = 0; i < n; i++) {
        used += (size_t)snprintf(header + used, sizeof header - used,
                                 "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}", i ? "," : "",
                                 e[i].name, e[i].dtype, e[i].shape, at, at + e[i].size);
        ck_assert_uint_lt(used, sizeof header);
        ck_assert_uint_le(at + e[i].size, sizeof data);
        for (size_t k = 0; k < e[i].size && k < 8; k++)
            data[at + k] = (unsigned char)(e[i].bits >> (8 * k));
        at += e[i].size;
    }
    snprintf(header + used, sizeof header - used, "}");
    return write_st(file, header, data, at);
}

static uint64_t f32_bits(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits;
}

/* Two floats (a [2] F32 tensor) as the 8 bytes write_entries stores. */
static uint64_t f32_pair(float a, float b)
{
    return f32_bits(a) | f32_bits(b) << 32;
}

START_TEST(test_counts_load_from_integers_and_bad_counts_or_dtypes_are_refused)
{
    make_tmpdir();
    /* Flatten BatchNorm1d on 1x1x2: 1.weight, 1.bias (2), 1.running_mean, 1.running_var (2), 1.num_batches_tracked. */
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-5f, 0.1f)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 1, 2));
    const float *mean = lenet_tensor_cdata(lenet_model_buffer(m, 0));
    const float *var = lenet_tensor_cdata(lenet_model_buffer(m, 1));
    const float *count = lenet_tensor_cdata(lenet_model_buffer(m, 2));
    st_entry e[6] = {
        {"1.weight", "F32", "[2]", f32_pair(1.5f, -2.0f), 8},
        {"1.bias", "F32", "[2]", f32_pair(0.25f, 0.5f), 8},
        {"1.running_mean", "F32", "[2]", f32_pair(0.125f, -0.5f), 8},
        {"1.running_var", "F32", "[2]", f32_pair(2.0f, 4.0f), 8},
        {"1.num_batches_tracked", "I64", "[]", 7, 8},
    };
    const struct {
        const char *dtype, *shape;
        uint64_t bits;
        size_t size;
        float count; /* what loads */
    } good[] = {
        {"I64", "[]", 7, 8, 7.0f},                       /* as PyTorch writes it */
        {"I64", "[1]", 9, 8, 9.0f},                      /* as a one-element vector */
        {"I32", "[]", 11, 4, 11.0f},
        {"U64", "[]", 12, 8, 12.0f},
        {"F32", "[]", 0x40a00000, 4, 5.0f},              /* 5.0: a float file (.float() on the whole state_dict) */
        {"F64", "[]", 0x4340000000000000, 8, 0x1p53f},   /* 2^53 */
        {"I64", "[]", 9007199254740992, 8, 0x1p53f},     /* 2^53, the largest count */
        {"I64", "[]", 16777217, 8, 16777216.0f},         /* 2^24 + 1: beyond 2^24, the nearest float */
        {"I64", "[]", 0, 8, 0.0f},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        e[4] = (st_entry){"1.num_batches_tracked", good[i].dtype, good[i].shape, good[i].bits, good[i].size};
        lenet_status st = lenet_model_load_weights(m, write_entries("good.safetensors", e, 5));
        ck_assert_msg(st == LENET_OK, "%s %s: %s", good[i].dtype, good[i].shape, lenet_last_error());
        ck_assert_float_eq(count[0], good[i].count);
        ck_assert_float_eq(mean[0], 0.125f);
        ck_assert_float_eq(mean[1], -0.5f);
        ck_assert_float_eq(var[1], 4.0f);
        ck_assert_float_eq(lenet_tensor_cdata(lenet_model_param(m, 1))[0], 0.25f);
    }

    const struct {
        int entry;
        st_entry replace;
        lenet_status status;
        const char *message;
    } bad[] = {
        {4, {"1.num_batches_tracked", "F32", "[]", 0x40200000, 4}, LENET_EFORMAT, "holds 2.5, not a count"},
        {4, {"1.num_batches_tracked", "F32", "[]", 0xbf800000, 4}, LENET_EFORMAT, "holds -1, not a count"},
        {4, {"1.num_batches_tracked", "F32", "[]", 0x7fc00000, 4}, LENET_EFORMAT, "not a count"}, /* NaN */
        {4, {"1.num_batches_tracked", "F64", "[]", 0x4340000000000001, 8}, LENET_EFORMAT, "not a count"}, /* 2^53+2 */
        {4, {"1.num_batches_tracked", "I64", "[]", UINT64_MAX, 8}, LENET_EFORMAT, "holds a negative count"}, /* -1 */
        {4, {"1.num_batches_tracked", "I64", "[]", 9007199254740993, 8}, LENET_EFORMAT,
         "holds 9007199254740993, more than the 2^53"},
        {4, {"1.num_batches_tracked", "U64", "[]", UINT64_MAX, 8}, LENET_EFORMAT, "more than the 2^53"},
        {4, {"1.num_batches_tracked", "U8", "[]", 1, 1}, LENET_EFORMAT, "has dtype U8"},
        {4, {"1.num_batches_tracked", "I64", "[2]", 1, 16}, LENET_ESHAPE, "is [2] in the file, [1] in the model"},
        {4, {"1.num_batches_tracked", "I64", "[1,1]", 1, 8}, LENET_ESHAPE, "is [1, 1] in the file"},
        /* An integer tensor is read only into a count: never into a float buffer or a parameter. */
        {2, {"1.running_mean", "I64", "[2]", 1, 16}, LENET_EFORMAT, "\"1.running_mean\" has dtype I64"},
        {3, {"1.running_var", "I32", "[2]", 1, 8}, LENET_EFORMAT, "\"1.running_var\" has dtype I32"},
        {0, {"1.weight", "I64", "[2]", 1, 16}, LENET_EFORMAT, "\"1.weight\" has dtype I64"},
        /* A buffer the file lacks fails as PyTorch's load_state_dict(strict=True) does; an unknown tensor too. */
        {4, {"2.num_batches_tracked", "I64", "[]", 1, 8}, LENET_ESHAPE, "no tensor \"1.num_batches_tracked\""},
        {2, {"1.running_man", "F32", "[2]", 0, 8}, LENET_ESHAPE, "no tensor \"1.running_mean\""},
        {5, {"1.running_std", "F32", "[2]", 0, 8}, LENET_ESHAPE, "\"1.running_std\" is not a parameter or buffer"},
    };
    e[4] = (st_entry){"1.num_batches_tracked", "I64", "[]", 42, 8};
    ck_assert_lenet_ok(lenet_model_load_weights(m, write_entries("good.safetensors", e, 5)));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st_entry edited[6];
        memcpy(edited, e, sizeof edited);
        edited[bad[i].entry] = bad[i].replace;
        int n = bad[i].entry == 5 ? 6 : 5;
        snapshot s = take_snapshot(m, NULL, NULL);
        lenet_status st = lenet_model_load_weights(m, write_entries("bad.safetensors", edited, n));
        ck_assert_msg(st == bad[i].status, "case %zu: status %d: %s", i, st, lenet_last_error());
        ck_assert_msg(strstr(lenet_last_error(), bad[i].message) != NULL, "case %zu: \"%s\" lacks \"%s\"", i,
                      lenet_last_error(), bad[i].message);
        ck_assert_msg(strstr(lenet_last_error(), "bad.safetensors") != NULL, "%s", lenet_last_error());
        assert_unchanged(&s, m, NULL, NULL);
        snapshot_free(&s);
        ck_assert_float_eq(count[0], 42.0f);
    }
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

START_TEST(test_saving_refuses_a_count_that_is_not_one)
{
    make_tmpdir();
    lenet_model *m = bn_model(1, 1);
    const char *path = tmp_path("bn.safetensors");
    float *count = lenet_tensor_data(lenet_model_buffer(m, 5));
    const float not_counts[] = {-1.0f, 0.5f, NAN, INFINITY, 0x1p60f};
    for (size_t i = 0; i < sizeof not_counts / sizeof not_counts[0]; i++) {
        *count = not_counts[i];
        ck_assert_int_eq(lenet_model_save(m, path), LENET_EINVAL);
        ck_assert_msg(strstr(lenet_last_error(), "model_save: buffer \"5.num_batches_tracked\" holds") != NULL &&
                          strstr(lenet_last_error(), "not a count") != NULL,
                      "%s", lenet_last_error());
        ck_assert_uint_eq(count_dir_entries(), 0);
    }
    *count = 0x1p53f;
    ck_assert_lenet_ok(lenet_model_save(m, path));
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* d2l's BatchNorm LeNet, as tests/fixtures/make_safetensors_fixture.py builds it in PyTorch. */
static lenet_model *bn_lenet(void)
{
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(6, 5, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, 0.1f)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_conv2d(16, 5, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm2d(1e-5f, 0.1f)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_avgpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(120)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-5f, 0.1f)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(84)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_batchnorm1d(1e-5f, 0.1f)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_sigmoid()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(10)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 28, 28));
    return m;
}

/* Every tensor of `a` is in `b` under the same name with the same dtype, shape and bytes, and b has no other. */
static void assert_same_tensors(const lenet_st_file *a, const lenet_st_file *b)
{
    ck_assert_uint_eq(a->n_tensors, b->n_tensors);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const lenet_st_tensor *ta = &a->tensors[i], *tb = lenet__st_find(b, ta->name);
        ck_assert_msg(tb != NULL, "%s lacks %s", b->path, ta->name);
        ck_assert_msg(ta->dtype == tb->dtype, "%s: %s, then %s", ta->name, lenet__st_dtype_name(ta->dtype),
                      lenet__st_dtype_name(tb->dtype));
        ck_assert_int_eq(ta->ndim, tb->ndim);
        for (int d = 0; d < ta->ndim; d++)
            ck_assert_uint_eq(ta->shape[d], tb->shape[d]);
        ck_assert_uint_eq(ta->nbytes, tb->nbytes);
        ck_assert_msg(memcmp(ta->data, tb->data, ta->nbytes) == 0, "%s: other values", ta->name);
    }
}

START_TEST(test_pytorch_batchnorm_state_dict_loads_and_saves_back_the_same)
{
    make_tmpdir();
    const char *fixture = lenet_test_fixture("pytorch_bn_lenet_state.safetensors");
    lenet_st_file pt, io;
    ck_assert_lenet_ok(lenet__st_read(fixture, &pt));
    lenet_model *m = bn_lenet();
    ck_assert_lenet_ok(lenet_model_load_weights(m, fixture));

    /* Every buffer is PyTorch's, num_batches_tracked included (10 training steps). */
    ck_assert_uint_eq(lenet_model_buffer_count(m), 12);
    ck_assert_uint_eq(lenet_model_param_count(m) + lenet_model_buffer_count(m), pt.n_tensors);
    for (size_t i = 0; i < lenet_model_buffer_count(m); i++) {
        const char *name = lenet_model_buffer_name(m, i);
        const lenet_tensor *b = lenet_model_buffer(m, i);
        const lenet_st_tensor *t = lenet__st_find(&pt, name);
        ck_assert_msg(t != NULL, "no %s in the PyTorch file", name);
        ck_assert_uint_eq(t->numel, lenet_tensor_numel(b));
        if (strstr(name, "num_batches_tracked")) {
            uint64_t value;
            ck_assert_int_eq(t->dtype, LENET_ST_I64);
            ck_assert(lenet__st_index_at(t, 0, &value));
            ck_assert_uint_eq(value, 10);
            ck_assert_float_eq(lenet_tensor_cdata(b)[0], 10.0f);
        } else {
            float values[120];
            ck_assert_uint_le(t->numel, 120);
            lenet__st_to_float(t, values);
            ck_assert_mem_eq(values, lenet_tensor_cdata(b), t->numel * sizeof(float));
        }
    }

    /* Evaluation with the running statistics gives PyTorch's logits. */
    ck_assert_lenet_ok(lenet__st_read(lenet_test_fixture("pytorch_bn_lenet_io.safetensors"), &io));
    const lenet_st_tensor *input = lenet__st_find(&io, "input"), *logits = lenet__st_find(&io, "logits");
    ck_assert_ptr_nonnull(input);
    ck_assert_ptr_nonnull(logits);
    ck_assert_uint_eq(input->numel, 4 * 28 * 28);
    ck_assert_uint_eq(logits->numel, 40);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){4, 1, 28, 28});
    lenet_tensor *y = lenet_tensor_create(2, (int[]){4, 10}), *y2 = lenet_tensor_create(2, (int[]){4, 10});
    float expected[40];
    lenet__st_to_float(input, lenet_tensor_data(x));
    lenet__st_to_float(logits, expected);
    ck_assert_lenet_ok(lenet_model_predict(m, x, y));
    double err = lenet_test_max_rel_err(lenet_tensor_cdata(y), expected, 40, 1.0);
    printf("PyTorch BatchNorm LeNet logits (evaluation mode): worst |lenet - torch| / max(|torch|, 1) = %.3g\n", err);
    ck_assert_msg(err <= 1e-5, "logits differ from PyTorch's by %g", err);

    /* Saved again: the same names, dtypes (num_batches_tracked I64), shapes ([] for the counts) and bytes. */
    const char *path = tmp_path("bn_lenet.safetensors");
    ck_assert_lenet_ok(lenet_model_save(m, path));
    lenet_st_file saved;
    ck_assert_lenet_ok(lenet__st_read(path, &saved));
    assert_same_tensors(&pt, &saved);
    lenet__st_close(&saved);

    /* And that file rebuilds the network by itself. */
    lenet_model *loaded = lenet_model_load(path);
    ck_assert_msg(loaded != NULL, "%s", lenet_last_error());
    assert_models_equal(m, loaded);
    ck_assert_lenet_ok(lenet_model_predict(loaded, x, y2));
    ck_assert_mem_eq(lenet_tensor_cdata(y), lenet_tensor_cdata(y2), 40 * sizeof(float));

    lenet_model_free(loaded);
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_tensor_free(y2);
    lenet__st_close(&io);
    lenet__st_close(&pt);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* ---- untrusted files ---- */

START_TEST(test_every_truncation_is_rejected_and_changes_nothing)
{
    make_tmpdir();
    const char *full = tiny_checkpoint("tiny.ckpt");
    bytes b = read_bytes(full);
    ck_assert_uint_gt(b.size, 500);
    ck_assert_uint_lt(b.size, 4096);
    lenet_model *m = tiny_model(5);
    lenet_optimizer *o = lenet_sgd_create(m, 0.1f, 0.9f, 1e-3f);
    /* An iterator over the same 5 examples, batch 2, shuffled, as the checkpoint's. */
    lenet_dataset *d = lenet_dataset_open_idx(tmp_path("small-images.idx"), tmp_path("small-labels.idx"));
    lenet_iter *it = lenet_iter_create(d, 2, true, 1234);
    snapshot s = take_snapshot(m, o, it);
    const char *cut = tmp_path("cut.ckpt");
    for (size_t len = 0; len < b.size; len++) {
        write_bytes(cut, b.data, len);
        lenet_model *loaded = lenet_model_load(cut);
        ck_assert_msg(loaded == NULL, "a file cut to %zu of %zu bytes loaded", len, b.size);
        ck_assert_msg(lenet__last_status() == LENET_EFORMAT, "cut to %zu: status %d: %s", len, lenet__last_status(),
                      lenet_last_error());
        ck_assert_int_eq(lenet_model_load_weights(m, cut), LENET_EFORMAT);
        char note[16] = "untouched";
        lenet_status st = lenet_checkpoint_load(m, o, it, cut, note, sizeof note);
        ck_assert_msg(st == LENET_EFORMAT, "cut to %zu: checkpoint_load gave %d: %s", len, st, lenet_last_error());
        ck_assert_str_eq(note, "untouched");
    }
    assert_unchanged(&s, m, o, it);
    /* The whole file loads, and fills all three. */
    char note[16];
    ck_assert_lenet_ok(lenet_checkpoint_load(m, o, it, full, note, sizeof note));
    ck_assert_str_eq(note, "tiny");
    ck_assert_uint_eq(o->steps, 2);
    ck_assert_uint_eq(lenet_iter_position(it), 2);
    snapshot_free(&s);
    free(b.data);
    lenet_iter_free(it);
    lenet_dataset_free(d);
    lenet_optimizer_free(o);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

START_TEST(test_every_flipped_byte_fails_cleanly_or_loads)
{
    make_tmpdir();
    const char *full = tiny_checkpoint("tiny.ckpt");
    bytes b = read_bytes(full);
    lenet_model *m = tiny_model(5);
    const char *bad = tmp_path("flipped.ckpt");
    size_t rejected = 0;
    for (size_t i = 0; i < b.size; i++) {
        b.data[i] ^= 0x5a;
        write_bytes(bad, b.data, b.size);
        b.data[i] ^= 0x5a;
        snapshot s = take_snapshot(m, NULL, NULL);
        lenet_error_clear();
        lenet_model *loaded = lenet_model_load(bad);
        lenet_status st = lenet_model_load_weights(m, bad);
        if (loaded == NULL || st != LENET_OK) {
            rejected++;
            ck_assert_msg(lenet_last_error()[0] != '\0', "byte %zu: a failure without a message", i);
        }
        if (st != LENET_OK)
            assert_unchanged(&s, m, NULL, NULL);
        snapshot_free(&s);
        lenet_model_free(loaded);
    }
    /* Every byte of the data is covered by the CRC, so at least those flips are caught. */
    lenet_st_file f;
    ck_assert_lenet_ok(lenet__st_read(full, &f));
    ck_assert_uint_ge(rejected, f.data_size);
    lenet__st_close(&f);
    free(b.data);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

typedef struct bad_file {
    const char *what;
    const char *header;
    size_t data_size;
    const char *message; /* expected in the error */
} bad_file;

/* PyTorch's files carry no CRC, so there a flipped byte of the data reaches the loader: a count flipped beyond 2^53
 * is refused, any other value loads; never a crash, never a half-filled model. */
START_TEST(test_every_flipped_byte_of_a_batchnorm_file_without_crc_fails_cleanly_or_loads)
{
    make_tmpdir();
    lenet_model *src = bn_model(1, 3);
    const char *path = tmp_path("bn.safetensors");
    ck_assert_lenet_ok(lenet_model_save(src, path));
    lenet_st_file f;
    ck_assert_lenet_ok(lenet__st_read(path, &f));
    char crc[64];
    snprintf(crc, sizeof crc, ",\"data_crc32\":\"%s\"", lenet__st_meta(&f, "data_crc32"));
    lenet__st_close(&f);
    const char *plain = edit_header(path, "plain.safetensors", crc, "");
    lenet_model *m = bn_model(2, 0);
    ck_assert_lenet_ok(lenet_model_load_weights(m, plain));
    assert_models_equal(src, m);
    bytes b = read_bytes(plain);
    const char *bad = tmp_path("flipped.safetensors");
    size_t refused_counts = 0;
    for (size_t i = 0; i < b.size; i++) {
        b.data[i] ^= 0x5a;
        write_bytes(bad, b.data, b.size);
        b.data[i] ^= 0x5a;
        snapshot s = take_snapshot(m, NULL, NULL);
        lenet_error_clear();
        lenet_status st = lenet_model_load_weights(m, bad);
        if (st != LENET_OK) {
            ck_assert_msg(lenet_last_error()[0] != '\0', "byte %zu: a failure without a message", i);
            assert_unchanged(&s, m, NULL, NULL);
            refused_counts += strstr(lenet_last_error(), "more than the 2^53 a count may be") != NULL;
        } else {
            for (size_t c = 2; c < 6; c += 3) {
                float count = lenet_tensor_cdata(lenet_model_buffer(m, c))[0];
                ck_assert_msg(count >= 0.0f && count <= 0x1p53f && count == floorf(count), "byte %zu: count %g", i,
                              (double)count);
            }
        }
        snapshot_free(&s);
    }
    ck_assert_uint_eq(refused_counts, 4); /* the top two bytes of each of the two counts: 0x5a << 48 > 2^53 */
    free(b.data);
    lenet_model_free(m);
    lenet_model_free(src);
    remove_tmpdir();
}
END_TEST

START_TEST(test_malformed_containers_are_rejected_with_a_message)
{
    make_tmpdir();
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 1, 3));
    snapshot s = take_snapshot(m, NULL, NULL);
#define W "\"1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":"
#define B "\"1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":"
    const bad_file cases[] = {
        {"malformed JSON", "{" W "[0,24]}," B "[24,32]}", 32, "JSON"},
        {"not an object", "[1, 2, 3]", 0, "not a JSON object"},
        {"unknown dtype", "{" W "[0,24]}," "\"1.bias\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[24,32]}}", 32,
         "unknown dtype"},
        {"offsets beyond the data", "{" W "[0,24]}," B "[24,32]}}", 28, "run past"},
        {"offsets overlap", "{" W "[0,24]}," B "[16,24]}}", 24, "overlap"},
        {"a gap between tensors", "{" W "[0,24]}," B "[28,36]}}", 36, "gap"},
        {"data not covered", "{" W "[0,24]}," B "[24,32]}}", 40, "cover"},
        {"offsets disagree with the shape", "{" W "[0,20]}," B "[20,28]}}", 28, "need"},
        {"offsets reversed", "{" W "[24,0]}," B "[24,32]}}", 32, "begin <= end"},
        {"negative dimension", "{\"1.weight\":{\"dtype\":\"F32\",\"shape\":[-2,3],\"data_offsets\":[0,24]}," B
         "[24,32]}}", 32, "dimension 0"},
        {"fractional offset", "{" W "[0,24.5]}," B "[24,32]}}", 32, "data_offsets"},
        {"huge shape", "{\"1.weight\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,24]},"
         B "[24,32]}}", 32, "large"},
        /* 2^53 x 2^11 elements overflow 64 bits; 2^53 x 2^10 do not, but their 4-byte floats do. */
        {"element count overflows", "{\"1.weight\":{\"dtype\":\"F32\",\"shape\":[9007199254740992,2048],"
         "\"data_offsets\":[0,24]}," B "[24,32]}}", 32, "impossibly large"},
        {"byte size overflows", "{\"1.weight\":{\"dtype\":\"F32\",\"shape\":[9007199254740992,1024],"
         "\"data_offsets\":[0,24]}," B "[24,32]}}", 32, "impossibly large"},
        {"offsets at the largest exact JSON integer", "{" W "[9007199254740968,9007199254740992]}," B "[24,32]}}", 32,
         "run past"},
        {"missing shape", "{\"1.weight\":{\"dtype\":\"F32\",\"data_offsets\":[0,24]}," B "[24,32]}}", 32, "shape"},
        {"duplicate tensor", "{" W "[0,24]}," B "[24,32]}," B "[32,40]}}", 40, "key \"1.bias\" appears twice"},
        {"metadata not strings", "{\"__metadata__\":{\"a\":1}," W "[0,24]}," B "[24,32]}}", 32, "not a string"},
        {"metadata not an object", "{\"__metadata__\":[]," W "[0,24]}," B "[24,32]}}", 32, "__metadata__"},
        {"bad CRC text", "{\"__metadata__\":{\"data_crc32\":\"xyz\"}," W "[0,24]}," B "[24,32]}}", 32, "hex"},
        {"wrong CRC", "{\"__metadata__\":{\"data_crc32\":\"00000000\"}," W "[0,24]}," B "[24,32]}}", 32, "CRC"},
        {"bytes after the JSON", "{" W "[0,24]}," B "[24,32]}}xx", 32, "after the JSON"},
        {"tensor entry not an object", "{" W "[0,24]},\"1.bias\":3}", 24, "not an object"},
    };
    unsigned char data[64] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_st("bad.safetensors", cases[i].header, data, cases[i].data_size);
        lenet_status st = lenet_model_load_weights(m, path);
        ck_assert_msg(st == LENET_EFORMAT, "%s: status %d (%s)", cases[i].what, st, lenet_last_error());
        ck_assert_msg(strstr(lenet_last_error(), cases[i].message) != NULL, "%s: message \"%s\" lacks \"%s\"",
                      cases[i].what, lenet_last_error(), cases[i].message);
        ck_assert_msg(strstr(lenet_last_error(), "bad.safetensors") != NULL, "%s: message names no file: %s",
                      cases[i].what, lenet_last_error());
        assert_unchanged(&s, m, NULL, NULL);
    }
    /* The same layout with valid offsets loads: the cases above fail for their own reason. */
    const char *path = write_st("good.safetensors", "{" W "[0,24]}," B "[24,32]}}", data, 32);
    ck_assert_lenet_ok(lenet_model_load_weights(m, path));
    snapshot_free(&s);
    s = take_snapshot(m, NULL, NULL);
#undef W
#undef B

    /* Header lengths: beyond the file, absurd, too short a file. */
    unsigned char raw[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    write_bytes(tmp_path("absurd.safetensors"), raw, 10);
    ck_assert_int_eq(lenet_model_load_weights(m, tmp_path("absurd.safetensors")), LENET_EFORMAT);
    ck_assert_msg(strstr(lenet_last_error(), "limit") != NULL, "%s", lenet_last_error());
    unsigned char beyond[16] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(tmp_path("beyond.safetensors"), beyond, 10);
    ck_assert_int_eq(lenet_model_load_weights(m, tmp_path("beyond.safetensors")), LENET_EFORMAT);
    ck_assert_msg(strstr(lenet_last_error(), "past the end") != NULL, "%s", lenet_last_error());
    write_bytes(tmp_path("short.safetensors"), beyond, 5);
    ck_assert_int_eq(lenet_model_load_weights(m, tmp_path("short.safetensors")), LENET_EFORMAT);
    ck_assert_int_eq(lenet_model_load_weights(m, tmpdir), LENET_EIO);
    assert_unchanged(&s, m, NULL, NULL);
    snapshot_free(&s);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* The reference parser (serde_json) refuses a key twice in one object, where cJSON keeps both and we would read
 * the first ("dtype":"F32","dtype":"I32" is F32 here, maybe I32 elsewhere); and a NUL in a key or a string would
 * cut it short in C ("1.bias\u0000x" loaded as 1.bias).  Both are refused at every depth, naming the key. */
START_TEST(test_duplicate_keys_and_nul_characters_are_rejected_naming_the_key)
{
    make_tmpdir();
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 1, 3));
    snapshot s = take_snapshot(m, NULL, NULL);
#define W "\"1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define B_AT "\"shape\":[2],\"data_offsets\":[24,32]}"
#define B "\"1.bias\":{\"dtype\":\"F32\"," B_AT
#define TEN_KEYS "\"a\":\"\",\"b\":\"\",\"c\":\"\",\"d\":\"\",\"e\":\"\",\"f\":\"\",\"g\":\"\",\"h\":\"\",\"i\":\"\""
    const bad_file cases[] = {
        {"a field twice in an entry", "{" W ",\"1.bias\":{\"dtype\":\"F32\",\"dtype\":\"I32\"," B_AT "}", 32,
         "key \"dtype\" appears twice in \"1.bias\""},
        {"a field twice, once escaped", "{" W ",\"1.bias\":{\"dtype\":\"F32\",\"d\\u0074ype\":\"F32\"," B_AT "}", 32,
         "key \"dtype\" appears twice in \"1.bias\""},
        {"a tensor twice", "{" W "," B "," B "}", 32, "key \"1.bias\" appears twice"},
        {"a metadata key twice", "{\"__metadata__\":{\"format\":\"pt\",\"format\":\"np\"}," W "," B "}", 32,
         "key \"format\" appears twice in \"__metadata__\""},
        {"a metadata key twice among many (sorted, not pairwise)",
         "{\"__metadata__\":{" TEN_KEYS ",\"e\":\"\"}," W "," B "}", 32, "key \"e\" appears twice in \"__metadata__\""},
        {"__metadata__ twice", "{\"__metadata__\":{},\"__metadata__\":{}," W "," B "}", 32,
         "key \"__metadata__\" appears twice"},
        {"a key twice deep inside", "{" W ",\"1.bias\":{\"dtype\":\"F32\",\"x\":[{\"y\":1,\"y\":2}]," B_AT "}", 32,
         "key \"y\" appears twice in \"x\""},
        {"NUL in a tensor name", "{" W ",\"1.bias\\u0000x\":{\"dtype\":\"F32\"," B_AT "}", 32,
         "key \"1.bias\\u0000x\" holds a NUL character"},
        {"NUL in a field name", "{" W ",\"1.bias\":{\"dtype\\u0000\":\"I32\",\"dtype\":\"F32\"," B_AT "}", 32,
         "key \"dtype\\u0000\" holds a NUL"},
        {"NUL in a dtype", "{" W ",\"1.bias\":{\"dtype\":\"F32\\u0000I32\"," B_AT "}", 32,
         "the value of key \"dtype\" (\"F32\\u0000I32\") holds a NUL"},
        {"NUL in a metadata key", "{\"__metadata__\":{\"no\\u0000te\":\"a\"}," W "," B "}", 32,
         "key \"no\\u0000te\" holds a NUL"},
        {"NUL in a metadata value", "{\"__metadata__\":{\"note\":\"a\\u0000b\"}," W "," B "}", 32,
         "the value of key \"note\" (\"a\\u0000b\") holds a NUL"},
        {"NUL in a string of an array", "{" W ",\"1.bias\":{\"dtype\":\"F32\",\"x\":[\"a\\u0000\"]," B_AT "}", 32,
         "string \"a\\u0000\" holds a NUL"},
        {"a raw control character in a key", "{" W ",\"1.bi\x01" "as\":{\"dtype\":\"F32\"," B_AT "}", 32,
         "key \"1.bi\\u0001as\" holds an unescaped control character"},
        {"a raw control character between members", "{" W ",\x01" B "}", 32, "control character (0x01)"},
    };
    unsigned char data[32] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_st("bad.safetensors", cases[i].header, data, cases[i].data_size);
        lenet_status st = lenet_model_load_weights(m, path);
        ck_assert_msg(st == LENET_EFORMAT, "%s: status %d (%s)", cases[i].what, st, lenet_last_error());
        ck_assert_msg(strstr(lenet_last_error(), cases[i].message) != NULL, "%s: message \"%s\" lacks \"%s\"",
                      cases[i].what, lenet_last_error(), cases[i].message);
        ck_assert_msg(strstr(lenet_last_error(), "bad.safetensors") != NULL, "%s: message names no file: %s",
                      cases[i].what, lenet_last_error());
        assert_unchanged(&s, m, NULL, NULL);
    }

    /* A raw NUL byte in a key (cJSON copies it and the key ends there). */
    const char raw[] = "{" W ",\"1.bias\0x\":{\"dtype\":\"F32\"," B_AT "}";
    const char *path = write_st_len("raw.safetensors", raw, sizeof raw - 1, data, 32);
    ck_assert_int_eq(lenet_model_load_weights(m, path), LENET_EFORMAT);
    ck_assert_msg(strstr(lenet_last_error(), "key \"1.bias\\u0000x\" holds a raw NUL byte"), "%s", lenet_last_error());
    assert_unchanged(&s, m, NULL, NULL);

    /* What is not a duplicate or a NUL loads: an escape decoding to another character, an escaped backslash before
     * u0000 (text), the same key in different objects, many distinct keys. */
    const char *fine[] = {
        "{" W ",\"1.b\\u0069as\":{\"dtype\":\"F32\"," B_AT "}",
        "{\"__metadata__\":{\"note\":\"C:\\\\u0000\"}," W "," B "}",
        "{\"__metadata__\":{\"dtype\":\"F32\",\"shape\":\"shape\"}," W "," B "}",
        "{\"__metadata__\":{" TEN_KEYS "}," W "," B "}",
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        lenet_status st = lenet_model_load_weights(m, write_st("fine.safetensors", fine[i], data, 32));
        ck_assert_msg(st == LENET_OK, "%s: %s", fine[i], lenet_last_error());
    }
#undef W
#undef B_AT
#undef B
#undef TEN_KEYS
    snapshot_free(&s);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* Opening a FIFO blocks until a writer comes, which may be never; a directory is no file either.  Every loader
 * refuses both at once with LENET_EIO. */
START_TEST(test_a_fifo_or_a_directory_fails_at_once_as_not_a_regular_file)
{
    make_tmpdir();
    const char *fifo = tmp_path("fifo.safetensors");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    lenet_model *m = tiny_model(1);
    snapshot s = take_snapshot(m, NULL, NULL);
    alarm(20); /* a regression blocks in open(): SIGALRM then fails the test rather than hanging it */
    ck_assert_ptr_null(lenet_model_load(fifo));
    ck_assert_int_eq(lenet__last_status(), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "is a FIFO, not a regular file") != NULL, "%s", lenet_last_error());
    ck_assert_msg(strstr(lenet_last_error(), fifo) != NULL, "%s", lenet_last_error());
    ck_assert_int_eq(lenet_model_load_weights(m, fifo), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "not a regular file") != NULL, "%s", lenet_last_error());
    ck_assert_int_eq(lenet_checkpoint_load(m, NULL, NULL, fifo, NULL, 0), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "not a regular file") != NULL, "%s", lenet_last_error());
    int c, h, w;
    ck_assert_int_eq(lenet_checkpoint_input_shape(fifo, &c, &h, &w), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "not a regular file") != NULL, "%s", lenet_last_error());
    alarm(0);
    assert_unchanged(&s, m, NULL, NULL);

    ck_assert_ptr_null(lenet_model_load(tmpdir));
    ck_assert_int_eq(lenet__last_status(), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "is a directory, not a regular file") != NULL, "%s", lenet_last_error());
    ck_assert_int_eq(lenet_model_load_weights(m, tmpdir), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "directory") != NULL, "%s", lenet_last_error());
    assert_unchanged(&s, m, NULL, NULL);
    snapshot_free(&s);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

START_TEST(test_wrong_crc_is_rejected)
{
    make_tmpdir();
    lenet_model *m = tiny_model(1);
    const char *path = tmp_path("tiny.safetensors");
    ck_assert_lenet_ok(lenet_model_save(m, path));
    bytes b = read_bytes(path);
    b.data[b.size - 3] ^= 1; /* a bit of the last bias */
    write_bytes(path, b.data, b.size);
    ck_assert_ptr_null(lenet_model_load(path));
    ck_assert_int_eq(lenet__last_status(), LENET_EFORMAT);
    ck_assert_msg(strstr(lenet_last_error(), "CRC") != NULL, "%s", lenet_last_error());
    free(b.data);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

START_TEST(test_bad_architectures_are_rejected)
{
    make_tmpdir();
    lenet_model *m = d2l_model(1);
    const char *path = tmp_path("d2l.safetensors");
    ck_assert_lenet_ok(lenet_model_save(m, path));
    const struct {
        const char *from, *to, *message;
        lenet_status status;
    } cases[] = {
        {"\\\"kind\\\":\\\"Sigmoid\\\"", "\\\"kind\\\":\\\"Sigmoidal\\\"", "unknown layer kind", LENET_EFORMAT},
        {"[6,5,1,2]", "[6,0,1,2]", "Conv2d", LENET_EFORMAT},
        {"[6,5,1,2]", "[6,5.5,1,2]", "not a valid int", LENET_EFORMAT},
        {"[6,5,1,2]", "[6,5,1]", "takes 4 arguments", LENET_EFORMAT},
        /* The tensors disagree with the architecture: refused before anything is allocated. */
        {"[6,5,1,2]", "[7,5,1,2]", "needs 62132 parameter and buffer elements, the file's tensors hold 61706",
         LENET_EFORMAT},
        {"[120]", "[100000]", "needs 48503506 parameter and buffer elements", LENET_EFORMAT}, /* 194 MB */
        {"[120]", "[100000000]", "more than the 268435456 a parameter may have", LENET_EFORMAT}, /* 100 GB */
        {"[6,5,1,2]", "[5,5,1,2]", "needs 61280", LENET_EFORMAT},
        {"\"9.bias\"", "\"9.biaz\"", "do not fit the architecture", LENET_EFORMAT},
        {"\\\"input\\\":[1,28,28]", "\\\"input\\\":[1,4,4]", "architecture", LENET_EFORMAT}, /* does not build */
        {"\\\"input\\\":[1,28,28]", "\\\"input\\\":[1,28]", "input", LENET_EFORMAT},
        {"\\\"input\\\":[1,28,28]", "\\\"input\\\":[1,28,0]", "input", LENET_EFORMAT},
        {"\\\"layers\\\":[", "\\\"layerz\\\":[", "layers", LENET_EFORMAT},
        {"\"architecture\":\"{", "\"architecture\":\"x{", "architecture", LENET_EFORMAT},
        {"\"architecture\"", "\"architectur\"", "architecture", LENET_EFORMAT},
        {"\"liblenet_format\":\"1\"", "\"liblenet_format\":\"2\"", "not supported", LENET_EUNSUPPORTED},
        {"\"liblenet_format\":\"1\"", "\"liblenet_formal\":\"1\"", "not a liblenet", LENET_EFORMAT},
        /* The JSON inside a metadata value is held to the header's rules: no key twice, no NUL in a string. */
        {"\\\"input\\\":[1,28,28]", "\\\"input\\\":[1,28,28],\\\"input\\\":[1,4,4]",
         "metadata \"architecture\": key \"input\" appears twice", LENET_EFORMAT},
        {"{\\\"kind\\\":\\\"Sigmoid\\\",", "{\\\"kind\\\":\\\"Sigmoid\\\",\\\"kind\\\":\\\"ReLU\\\",",
         "key \"kind\" appears twice in \"layers\"", LENET_EFORMAT},
        {"\\\"kind\\\":\\\"Sigmoid\\\"", "\\\"kind\\\":\\\"Sigmoid\\\\u0000x\\\"",
         "the value of key \"kind\" (\"Sigmoid\\u0000x\") holds a NUL", LENET_EFORMAT},
        /* An escaped backslash before u0000 is text, not a NUL: the kind is then merely unknown. */
        {"\\\"kind\\\":\\\"Sigmoid\\\"", "\\\"kind\\\":\\\"Sigmoid\\\\\\\\u0000x\\\"",
         "unknown layer kind", LENET_EFORMAT},
        {"}]}\",\"data_crc32\"", "}]} x\",\"data_crc32\"", "unexpected bytes after the JSON of metadata",
         LENET_EFORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *bad = edit_header(path, "bad.safetensors", cases[i].from, cases[i].to);
        ck_assert_ptr_null(lenet_model_load(bad));
        ck_assert_msg(lenet__last_status() == cases[i].status, "%s -> %s: status %d: %s", cases[i].from, cases[i].to,
                      lenet__last_status(), lenet_last_error());
        ck_assert_msg(strstr(lenet_last_error(), cases[i].message) != NULL, "%s -> %s: message \"%s\" lacks \"%s\"",
                      cases[i].from, cases[i].to, lenet_last_error(), cases[i].message);
    }
    /* An edit that keeps the file valid loads (so the edits above are what fails). */
    const char *same = edit_header(path, "same.safetensors", "\"format\":\"pt\"", "\"format\":\"pt\"");
    lenet_model *loaded = lenet_model_load(same);
    ck_assert_msg(loaded != NULL, "%s", lenet_last_error());
    lenet_model_free(loaded);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* Constructor arguments come from the file as JSON numbers.  One that is not an int (beyond INT_MAX, fractional,
 * 1e300) is refused before any constructor runs; one that is an int but makes the geometry overflow (Conv2d
 * padding INT_MAX: the padded side 6 + 2 * INT_MAX) or exceed the model's size limits is refused when the network
 * is built.  Either way lenet_model_load fails with a message: never a crash, a wrapped size or an allocation. */
START_TEST(test_architecture_arguments_that_overflow_fail_to_load_with_a_message)
{
    make_tmpdir();
    lenet_model *m = tiny_model(1); /* Conv2d(2, 3, 1, 1) ReLU MaxPool2d(2, 2) Flatten Linear(3) on 1x6x6 */
    const char *path = tmp_path("tiny.safetensors");
    ck_assert_lenet_ok(lenet_model_save(m, path));
    const struct {
        const char *from, *to, *message;
    } cases[] = {
        {"[2,3,1,1]", "[2,3,1,2147483647]", "padding 2147483647 on a 6x6 input overflows"},
        {"[2,3,1,1]", "[2,3,1,1073741824]", "padding 1073741824 on a 6x6 input overflows"},
        {"[2,3,1,1]", "[2,3,1,100000]", "elements"},      /* no overflow, but a padded input of 4e10 floats */
        {"[2,3,1,1]", "[2,2147483647,1,1]", "kernel 2147483647x2147483647 is larger than the padded input"},
        {"[2,3,1,1]", "[2147483647,3,1,1]", "elements"},  /* 2^31 - 1 channels of 6x6 */
        {"[2,3,1,1]", "[2,3,2147483647,1]", "MaxPool2d"}, /* a 1x1 output that the pooling cannot take */
        {"[2,3,1,1]", "[2,3,1,2147483648]", "argument 3 (2.14748e+09) is not a valid int"},
        {"[2,3,1,1]", "[2,3,1,4294967297]", "is not a valid int"}, /* would wrap to 1 in a 32-bit cast */
        {"[2,3,1,1]", "[2,3,1,-2147483649]", "is not a valid int"},
        {"[2,3,1,1]", "[2,3,1,1e300]", "is not a valid int"},
        {"[2,3,1,1]", "[2,3,1,1.5]", "is not a valid int"},
        {"[2,2]", "[2147483647,2147483647]", "MaxPool2d"},
        {"\\\"args\\\":[3]", "\\\"args\\\":[2147483647]", "output [2147483647] has more than"},
        {"\\\"args\\\":[3]", "\\\"args\\\":[268435456]", "more than the 268435456 a parameter may have"}, /* 4.8e9 */
        {"\\\"args\\\":[3]", "\\\"args\\\":[1000000]", "needs 19000020 parameter and buffer elements"}, /* 76 MB */
        {"\\\"args\\\":[3]", "\\\"args\\\":[2147483648]", "is not a valid int"},
        {"\\\"input\\\":[1,6,6]", "\\\"input\\\":[2147483647,6,6]", "input size 0 is not an integer"},
        {"\\\"input\\\":[1,6,6]", "\\\"input\\\":[65536,65536,1]", "the input [65536, 65536, 1] has more than"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *bad = edit_header(path, "bad.safetensors", cases[i].from, cases[i].to);
        lenet_model *loaded = lenet_model_load(bad);
        ck_assert_msg(loaded == NULL, "%s -> %s loaded", cases[i].from, cases[i].to);
        ck_assert_msg(lenet__last_status() == LENET_EFORMAT, "%s -> %s: status %d: %s", cases[i].from, cases[i].to,
                      lenet__last_status(), lenet_last_error());
        ck_assert_msg(strstr(lenet_last_error(), cases[i].message) != NULL, "%s -> %s: message \"%s\" lacks \"%s\"",
                      cases[i].from, cases[i].to, lenet_last_error(), cases[i].message);
        ck_assert_msg(strstr(lenet_last_error(), "bad.safetensors") != NULL, "%s", lenet_last_error());
    }
    /* The same edit with a value that fits loads: the file is otherwise valid, CRC included. */
    lenet_model *loaded = lenet_model_load(edit_header(path, "same.safetensors", "[2,3,1,1]", "[2,3,1,1]"));
    ck_assert_msg(loaded != NULL, "%s", lenet_last_error());
    lenet_model_free(loaded);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

START_TEST(test_shape_mismatches_leave_the_model_untouched)
{
    make_tmpdir();
    lenet_model *m = tiny_model(1);
    const char *path = tmp_path("tiny.safetensors");
    ck_assert_lenet_ok(lenet_model_save(m, path));

    /* Another number of output channels: 0.weight is [2, 1, 3, 3] in the file, [4, 1, 3, 3] in the model. */
    lenet_model *wide = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(wide, lenet_conv2d(4, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(wide, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(wide, lenet_maxpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(wide, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(wide, lenet_linear(3)));
    ck_assert_lenet_ok(lenet_model_build(wide, 1, 6, 6));
    snapshot s = take_snapshot(wide, NULL, NULL);
    ck_assert_int_eq(lenet_model_load_weights(wide, path), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "\"0.weight\" is [2, 1, 3, 3] in the file, [4, 1, 3, 3] in the model"),
                  "%s", lenet_last_error());
    assert_unchanged(&s, wide, NULL, NULL);
    snapshot_free(&s);

    /* A model with one more Linear: the file lacks 5.weight. */
    lenet_model *deeper = tiny_model(1);
    lenet_model_free(deeper);
    deeper = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(deeper, lenet_conv2d(2, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_add(deeper, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(deeper, lenet_maxpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(deeper, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(deeper, lenet_linear(3)));
    ck_assert_lenet_ok(lenet_model_add(deeper, lenet_linear(3)));
    ck_assert_lenet_ok(lenet_model_build(deeper, 1, 6, 6));
    s = take_snapshot(deeper, NULL, NULL);
    ck_assert_int_eq(lenet_model_load_weights(deeper, path), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "no tensor \"5.weight\""), "%s", lenet_last_error());
    assert_unchanged(&s, deeper, NULL, NULL);
    snapshot_free(&s);

    /* A model without the Linear: the file has 4.weight that the model lacks. */
    lenet_model *shallow = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(shallow, lenet_conv2d(2, 3, 1, 1)));
    ck_assert_lenet_ok(lenet_model_build(shallow, 1, 6, 6));
    s = take_snapshot(shallow, NULL, NULL);
    ck_assert_int_eq(lenet_model_load_weights(shallow, path), LENET_ESHAPE);
    ck_assert_msg(strstr(lenet_last_error(), "\"4.weight\" is not a parameter"), "%s", lenet_last_error());
    assert_unchanged(&s, shallow, NULL, NULL);
    snapshot_free(&s);

    lenet_model_free(shallow);
    lenet_model_free(deeper);
    lenet_model_free(wide);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

/* ---- crash safety ---- */

START_TEST(test_failed_save_leaves_the_old_file_and_no_temporary)
{
    make_tmpdir();
    lenet_model *small = tiny_model(1), *big = d2l_model(1);
    const char *path = tmp_path("model.safetensors");
    ck_assert_lenet_ok(lenet_model_save(small, path));
    bytes old = read_bytes(path);
    ck_assert_uint_eq(count_dir_entries(), 1);

    /* A full disk, simulated by a file size limit: writes fail with EFBIG as they would with ENOSPC. */
    struct rlimit saved, limit;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*previous)(int) = signal(SIGXFSZ, SIG_IGN);
    limit = saved;
    limit.rlim_cur = 64 * 1024;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &limit), 0);
    lenet_status st = lenet_model_save(big, path);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, previous);
    ck_assert_int_eq(st, LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "cannot write") != NULL, "%s", lenet_last_error());
    bytes now = read_bytes(path);
    ck_assert_uint_eq(now.size, old.size);
    ck_assert_mem_eq(now.data, old.data, old.size);
    free(now.data);
    ck_assert_uint_eq(count_dir_entries(), 1); /* the temporary file is gone */

    /* A directory in the way of the rename. */
    ck_assert_int_eq(mkdir(tmp_path("dir.safetensors"), 0700), 0);
    ck_assert_int_eq(lenet_model_save(small, tmp_path("dir.safetensors")), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "rename") != NULL, "%s", lenet_last_error());
    ck_assert_uint_eq(count_dir_entries(), 2);

    /* A missing directory. */
    ck_assert_int_eq(lenet_model_save(small, tmp_path("nowhere/model.safetensors")), LENET_EIO);
    ck_assert_msg(strstr(lenet_last_error(), "nowhere") != NULL, "%s", lenet_last_error());

    /* Saving over an existing file replaces it whole. */
    ck_assert_lenet_ok(lenet_model_save(big, path));
    lenet_model *loaded = lenet_model_load(path);
    ck_assert_ptr_nonnull(loaded);
    assert_models_equal(big, loaded);
    ck_assert_uint_eq(count_dir_entries(), 2);
    lenet_model_free(loaded);
    free(old.data);
    lenet_model_free(small);
    lenet_model_free(big);
    remove_tmpdir();
}
END_TEST

/* ---- resume ---- */

typedef struct run {
    lenet_dataset *data;
    lenet_model *model;
    lenet_optimizer *opt;
    lenet_iter *iter;
} run;

static run run_create(uint64_t model_seed, uint64_t iter_seed, int batch, float momentum)
{
    run r;
    r.data = tiny_dataset();
    r.model = data_model(model_seed);
    r.opt = lenet_sgd_create(r.model, 0.05f, momentum, 1e-4f);
    r.iter = lenet_iter_create(r.data, batch, true, iter_seed);
    ck_assert_ptr_nonnull(r.opt);
    ck_assert_ptr_nonnull(r.iter);
    return r;
}

static void run_free(run *r)
{
    lenet_iter_free(r->iter);
    lenet_optimizer_free(r->opt);
    lenet_model_free(r->model);
    lenet_dataset_free(r->data);
}

static void run_epoch(run *r)
{
    ck_assert_lenet_ok(lenet_train_epoch(r->model, r->opt, r->iter, NULL, NULL, NULL));
}

/* Steps on the next `batches` batches of the iterator, by hand, stopping inside a pass. */
static void run_batches(run *r, int batches)
{
    for (int i = 0; i < batches; i++) {
        const lenet_tensor *x;
        const int32_t *labels;
        int count;
        ck_assert_lenet_ok(lenet_iter_next(r->iter, &x, &labels, &count));
        sgd_step_on(r->model, r->opt, x, labels);
    }
}

START_TEST(test_resume_after_an_epoch_is_bit_identical)
{
    make_tmpdir();
    run straight = run_create(1, 7, 6, 0.9f);
    run_epoch(&straight);
    run_epoch(&straight);
    size_t n;
    float *expected = lenet_test_copy_tensors(straight.model, false, &n);

    run first = run_create(1, 7, 6, 0.9f);
    run_epoch(&first);
    const char *path = tmp_path("resume.ckpt");
    ck_assert_lenet_ok(lenet_checkpoint_save(first.model, first.opt, first.iter, "epoch 1", path));
    run_free(&first);

    /* Fresh objects with another init and another iterator seed: the checkpoint decides everything. */
    run resumed = run_create(2, 99, 6, 0.9f);
    char note[32];
    ck_assert_lenet_ok(lenet_checkpoint_load(resumed.model, resumed.opt, resumed.iter, path, note, sizeof note));
    ck_assert_str_eq(note, "epoch 1");
    run_epoch(&resumed);
    assert_params_equal(resumed.model, expected, n);
    /* And the two keep going together. */
    run_epoch(&straight);
    run_epoch(&resumed);
    assert_models_equal(straight.model, resumed.model);

    free(expected);
    run_free(&resumed);
    run_free(&straight);
    remove_tmpdir();
}
END_TEST

/* BatchNorm, Dropout, AdamW with a per-epoch cosine schedule: everything that draws or counts. */
static run modern_run_create(uint64_t model_seed, uint64_t iter_seed)
{
    run r;
    r.data = tiny_dataset();
    r.model = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(r.model, lenet_conv2d(4, 3, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(r.model, lenet_batchnorm2d(1e-5f, 0.1f)));
    ck_assert_lenet_ok(lenet_model_add(r.model, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(r.model, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(r.model, lenet_dropout(0.3f)));
    ck_assert_lenet_ok(lenet_model_add(r.model, lenet_linear(4)));
    ck_assert_lenet_ok(lenet_model_build(r.model, 1, DATA_SIDE, DATA_SIDE));
    ck_assert_lenet_ok(lenet_model_init(r.model, LENET_INIT_XAVIER_UNIFORM, model_seed));
    r.opt = lenet_adamw_create(r.model, 0.01f, 0.9f, 0.999f, 1e-8f, 0.01f);
    ck_assert_ptr_nonnull(r.opt);
    ck_assert_lenet_ok(lenet_optimizer_set_schedule(r.opt, lenet_schedule_cosine(4, 0.0f), LENET_SCHEDULE_PER_EPOCH));
    r.iter = lenet_iter_create(r.data, 5, true, iter_seed);
    ck_assert_ptr_nonnull(r.iter);
    return r;
}

START_TEST(test_resume_with_batchnorm_dropout_adamw_and_a_schedule_is_bit_identical)
{
    make_tmpdir();
    run straight = modern_run_create(1, 7);
    for (int e = 0; e < 3; e++)
        run_epoch(&straight);

    run first = modern_run_create(1, 7);
    run_epoch(&first);
    run_epoch(&first);
    const char *path = tmp_path("modern.ckpt");
    ck_assert_lenet_ok(lenet_checkpoint_save(first.model, first.opt, first.iter, NULL, path));
    run_free(&first);

    /* Another init seed: the checkpoint also decides the Dropout masks to come. */
    run resumed = modern_run_create(5, 99);
    ck_assert_lenet_ok(lenet_checkpoint_load(resumed.model, resumed.opt, resumed.iter, path, NULL, 0));
    ck_assert_uint_eq(lenet_optimizer_epoch_count(resumed.opt), 2);
    /* Cosine over 4 epochs from 0.01, after 2: 0.01 (1 + cos(pi / 2)) / 2. */
    ck_assert_float_eq_tol(lenet_optimizer_lr(resumed.opt), 0.005f, 1e-9f);
    run_epoch(&resumed);
    assert_models_equal(straight.model, resumed.model);
    ck_assert_uint_eq(lenet_optimizer_epoch_count(resumed.opt), 3);
    run_free(&resumed);
    run_free(&straight);
    remove_tmpdir();
}
END_TEST

START_TEST(test_resume_inside_an_epoch_is_bit_identical)
{
    make_tmpdir();
    run straight = run_create(3, 8, 4, 0.5f);
    run_batches(&straight, 3);
    run_epoch(&straight); /* the rest of the pass */
    run_epoch(&straight);

    run first = run_create(3, 8, 4, 0.5f);
    run_batches(&first, 3);
    const char *path = tmp_path("resume.ckpt");
    ck_assert_lenet_ok(lenet_checkpoint_save(first.model, first.opt, first.iter, NULL, path));
    ck_assert_lenet_ok(lenet_checkpoint_save(first.model, first.opt, first.iter, NULL, path)); /* idempotent */
    run_free(&first);

    run resumed = run_create(4, 5, 4, 0.5f);
    char note[4] = "x";
    ck_assert_lenet_ok(lenet_checkpoint_load(resumed.model, resumed.opt, resumed.iter, path, note, sizeof note));
    ck_assert_str_eq(note, "");
    ck_assert_uint_eq(lenet_iter_position(resumed.iter), 12);
    run_epoch(&resumed);
    run_epoch(&resumed);
    assert_models_equal(straight.model, resumed.model);
    run_free(&resumed);
    run_free(&straight);
    remove_tmpdir();
}
END_TEST

START_TEST(test_resume_before_any_step_and_without_momentum)
{
    make_tmpdir();
    /* Saved before the first step: no momentum buffer exists yet. */
    run straight = run_create(5, 6, 8, 0.9f);
    run_epoch(&straight);
    run first = run_create(5, 6, 8, 0.9f);
    const char *path = tmp_path("start.ckpt");
    ck_assert_lenet_ok(lenet_checkpoint_save(first.model, first.opt, first.iter, NULL, path));
    run_free(&first);
    run resumed = run_create(6, 1, 8, 0.9f);
    run_batches(&resumed, 1); /* its momentum buffer exists: loading drops it again */
    ck_assert_lenet_ok(lenet_checkpoint_load(resumed.model, resumed.opt, resumed.iter, path, NULL, 0));
    lenet_optimizer_state os;
    ck_assert_lenet_ok(resumed.opt->ops->state(resumed.opt, &os));
    ck_assert_int_eq(os.n_buffers, 1);
    ck_assert_ptr_null(os.buffers[0]);
    ck_assert_uint_eq(resumed.opt->steps, 0);
    run_epoch(&resumed);
    assert_models_equal(straight.model, resumed.model);
    run_free(&resumed);
    run_free(&straight);

    /* Plain SGD: only lr and steps. */
    run plain = run_create(5, 6, 8, 0.0f);
    run_epoch(&plain);
    ck_assert_lenet_ok(lenet_checkpoint_save(plain.model, plain.opt, plain.iter, NULL, path));
    run_epoch(&plain);
    run again = run_create(7, 2, 8, 0.0f);
    ck_assert_lenet_ok(lenet_optimizer_set_lr(again.opt, 3.0f));
    ck_assert_lenet_ok(lenet_checkpoint_load(again.model, again.opt, again.iter, path, NULL, 0));
    ck_assert_float_eq(lenet_optimizer_lr(again.opt), 0.05f); /* restored */
    run_epoch(&again);
    assert_models_equal(plain.model, again.model);
    run_free(&again);
    run_free(&plain);
    remove_tmpdir();
}
END_TEST

/* SDLM's Hessian estimate travels with a checkpoint: the resumed optimizer takes the same steps. */
START_TEST(test_sdlm_checkpoint_keeps_the_hessian_estimate)
{
    make_tmpdir();
    lenet_model *a = tiny_model(3), *b = tiny_model(4);
    lenet_optimizer *oa = lenet_sdlm_create(a, 0.01f, 0.02f), *ob = lenet_sdlm_create(b, 0.05f, 0.02f);
    ck_assert_ptr_nonnull(oa);
    ck_assert_ptr_nonnull(ob);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){5, 1, 6, 6});
    lenet_tensor *dy = lenet_tensor_create(2, (int[]){5, 3});
    int32_t labels[5] = {0, 1, 2, 1, 0};
    lenet_test_fill(x, 21, 0.0f, 1.0f);
    const lenet_tensor *y;
    float loss;
    /* Any positive curvature will do: squared gradients of one batch. */
    ck_assert_lenet_ok(lenet_model_forward(a, x, &y));
    ck_assert_lenet_ok(lenet_cross_entropy(y, labels, &loss, dy));
    ck_assert_lenet_ok(lenet_model_zero_grad(a));
    ck_assert_lenet_ok(lenet_model_backward(a, dy));
    for (size_t i = 0; i < lenet_model_param_count(a); i++) {
        float *g = lenet_tensor_data(lenet_model_grad(a, i));
        for (size_t k = 0; k < lenet_tensor_numel(lenet_model_grad(a, i)); k++)
            g[k] = g[k] * g[k] * 100.0f;
    }
    ck_assert_lenet_ok(lenet_sdlm_update_hessian_from_grads(oa, 1.0, 1.0f));
    const char *path = tmp_path("sdlm.ckpt");
    ck_assert_lenet_ok(lenet_checkpoint_save(a, oa, NULL, "sdlm", path));
    ck_assert_lenet_ok(lenet_checkpoint_load(b, ob, NULL, path, NULL, 0));
    ck_assert_float_eq(lenet_optimizer_lr(ob), 0.01f);
    for (size_t i = 0; i < lenet_model_param_count(a); i++) {
        lenet_tensor *ha = lenet_tensor_create(1, (int[]){(int)lenet_tensor_numel(lenet_model_param(a, i))});
        lenet_tensor *hb = lenet_tensor_create(1, (int[]){(int)lenet_tensor_numel(lenet_model_param(a, i))});
        ck_assert_lenet_ok(lenet_sdlm_hessian(oa, i, ha));
        ck_assert_lenet_ok(lenet_sdlm_hessian(ob, i, hb));
        ck_assert_mem_eq(lenet_tensor_cdata(ha), lenet_tensor_cdata(hb), lenet_tensor_numel(ha) * sizeof(float));
        lenet_tensor_free(ha);
        lenet_tensor_free(hb);
    }
    for (int step = 0; step < 3; step++) {
        lenet_model *ms[2] = {a, b};
        lenet_optimizer *os[2] = {oa, ob};
        for (int k = 0; k < 2; k++) {
            ck_assert_lenet_ok(lenet_model_forward(ms[k], x, &y));
            ck_assert_lenet_ok(lenet_cross_entropy(y, labels, &loss, dy));
            ck_assert_lenet_ok(lenet_model_zero_grad(ms[k]));
            ck_assert_lenet_ok(lenet_model_backward(ms[k], dy));
            ck_assert_lenet_ok(lenet_optimizer_step(os[k]));
        }
    }
    assert_models_equal(a, b);
    lenet_tensor_free(x);
    lenet_tensor_free(dy);
    lenet_optimizer_free(oa);
    lenet_optimizer_free(ob);
    lenet_model_free(a);
    lenet_model_free(b);
    remove_tmpdir();
}
END_TEST

START_TEST(test_checkpoint_load_refuses_other_objects_and_changes_nothing)
{
    make_tmpdir();
    run saved = run_create(1, 7, 6, 0.9f);
    run_batches(&saved, 2);
    const char *path = tmp_path("run.ckpt");
    ck_assert_lenet_ok(lenet_checkpoint_save(saved.model, saved.opt, saved.iter, "a note", path));
    const char *weights = tmp_path("weights.safetensors");
    ck_assert_lenet_ok(lenet_model_save(saved.model, weights));

    run other = run_create(2, 3, 5, 0.9f); /* batch 5, not 6 */
    run_batches(&other, 1);
    snapshot s = take_snapshot(other.model, other.opt, other.iter);
    ck_assert_int_eq(lenet_checkpoint_load(other.model, other.opt, other.iter, path, NULL, 0), LENET_ESTATE);
    ck_assert_msg(strstr(lenet_last_error(), "batch size 6") != NULL, "%s", lenet_last_error());
    assert_unchanged(&s, other.model, other.opt, other.iter);

    lenet_optimizer *slow = lenet_sgd_create(other.model, 0.05f, 0.8f, 1e-4f);
    ck_assert_int_eq(lenet_checkpoint_load(other.model, slow, NULL, path, NULL, 0), LENET_ESTATE);
    ck_assert_msg(strstr(lenet_last_error(), "momentum") != NULL, "%s", lenet_last_error());
    lenet_optimizer_free(slow);
    assert_unchanged(&s, other.model, other.opt, other.iter);

    char small[4] = "abc";
    ck_assert_int_eq(lenet_checkpoint_load(other.model, NULL, NULL, path, small, sizeof small), LENET_EINVAL);
    ck_assert_str_eq(small, "abc");
    ck_assert_int_eq(lenet_checkpoint_load(other.model, other.opt, NULL, weights, NULL, 0), LENET_EFORMAT);
    ck_assert_msg(strstr(lenet_last_error(), "optimizer") != NULL, "%s", lenet_last_error());
    ck_assert_int_eq(lenet_checkpoint_load(other.model, NULL, other.iter, weights, NULL, 0), LENET_EFORMAT);
    ck_assert_msg(strstr(lenet_last_error(), "iterator") != NULL, "%s", lenet_last_error());
    ck_assert_int_eq(lenet_checkpoint_load(other.model, NULL, NULL, lenet_test_fixture("pytorch_d2l_lenet.safetensors"),
                                           NULL, 0),
                     LENET_EFORMAT);
    assert_unchanged(&s, other.model, other.opt, other.iter);

    /* A model of another architecture (same parameter shapes, ReLU for Tanh) is refused for resuming. */
    lenet_model *relu = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(relu, lenet_conv2d(4, 3, 1, 0)));
    ck_assert_lenet_ok(lenet_model_add(relu, lenet_relu()));
    ck_assert_lenet_ok(lenet_model_add(relu, lenet_avgpool2d(2, 2)));
    ck_assert_lenet_ok(lenet_model_add(relu, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(relu, lenet_linear(4)));
    ck_assert_lenet_ok(lenet_model_build(relu, 1, DATA_SIDE, DATA_SIDE));
    ck_assert_int_eq(lenet_checkpoint_load(relu, NULL, NULL, path, NULL, 0), LENET_ESTATE);
    ck_assert_msg(strstr(lenet_last_error(), "Tanh") != NULL, "%s", lenet_last_error());
    ck_assert_lenet_ok(lenet_model_load_weights(relu, path)); /* weights alone move across */
    assert_models_equal(saved.model, relu);
    lenet_model_free(relu);

    /* An optimizer of another model. */
    ck_assert_int_eq(lenet_checkpoint_load(other.model, saved.opt, NULL, path, NULL, 0), LENET_EINVAL);
    ck_assert_int_eq(lenet_checkpoint_save(other.model, saved.opt, NULL, NULL, path), LENET_EINVAL);

    /* Corrupt iterator and optimizer state in an otherwise valid file, loaded into objects that fit it. */
    snapshot_free(&s);
    run_free(&other);
    other = run_create(2, 3, 6, 0.9f);
    run_batches(&other, 1);
    s = take_snapshot(other.model, other.opt, other.iter);
    const struct {
        const char *from, *to;
        lenet_status status;
    } edits[] = {
        {"\\\"position\\\":12", "\\\"position\\\":99", LENET_EFORMAT},
        {"\\\"position\\\":12", "\\\"position\\\":-1", LENET_EFORMAT},
        {"\"steps\\\":\\\"2\\\"", "\"steps\\\":\\\"x\\\"", LENET_EFORMAT},
        {"\"kind\\\":\\\"SGD\\\"", "\"kind\\\":\\\"Adam\\\"", LENET_ESTATE},
        {"[\\\"momentum_buffer\\\"]", "[\\\"hessian\\\"]", LENET_ESTATE},
        {"[\\\"momentum_buffer\\\"]", "[]", LENET_EFORMAT},
        {"\"optimizer.momentum_buffer.0.weight\"", "\"optimizer.momentum_buffer.0.weighs\"", LENET_EFORMAT},
        {"\"iterator.order\"", "\"iterator.ordex\"", LENET_EFORMAT},
        {"\\\"lr\\\":0.05", "\\\"lr\\\":1e300,\\\"x\\\":0.05", LENET_EFORMAT}, /* beyond float */
        {"\"steps\\\":\\\"2\\\"", "\"steps\\\":\\\"2\\\",\\\"steps\\\":\\\"0\\\"", LENET_EFORMAT},
        {"\\\"position\\\":12", "\\\"position\\\":12,\\\"position\\\":0", LENET_EFORMAT},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        const char *bad = edit_header(path, "bad.ckpt", edits[i].from, edits[i].to);
        lenet_status st = lenet_checkpoint_load(other.model, other.opt, other.iter, bad, NULL, 0);
                ck_assert_msg(st == edits[i].status, "%s -> %s: %d %s", edits[i].from, edits[i].to, st, lenet_last_error());
        assert_unchanged(&s, other.model, other.opt, other.iter);
    }
    snapshot_free(&s);
    run_free(&other);
    run_free(&saved);
    remove_tmpdir();
}
END_TEST

/* ---- what can be saved ---- */

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

static void identity_backward(const lenet_layer *l, const lenet_pass *p)
{
    if (p->dx)
        memcpy(p->dx, p->dy, (size_t)p->n * l->in_size * sizeof(float));
}

static const lenet_layer_ops identity_ops = {
    .name = "TestIdentity", .infer_shape = identity_shape, .forward = identity_forward, .backward = identity_backward};

START_TEST(test_unregistered_layer_kinds_cannot_be_saved)
{
    make_tmpdir();
    lenet_model *m = lenet_model_create();
    ck_assert_lenet_ok(lenet_model_add(m, lenet__layer_alloc(sizeof(lenet_layer), &identity_ops, 0, NULL)));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_flatten()));
    ck_assert_lenet_ok(lenet_model_add(m, lenet_linear(2)));
    ck_assert_lenet_ok(lenet_model_build(m, 1, 2, 2));
    ck_assert_int_eq(lenet_model_save(m, tmp_path("x.safetensors")), LENET_EUNSUPPORTED);
    ck_assert_msg(strstr(lenet_last_error(), "TestIdentity") != NULL, "%s", lenet_last_error());
    ck_assert_uint_eq(count_dir_entries(), 0);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST

START_TEST(test_registry_builds_every_kind_under_its_own_name)
{
    ck_assert_uint_ge(lenet__layer_kind_count(), 8);
    for (size_t i = 0; i < lenet__layer_kind_count(); i++) {
        const lenet_layer_kind *kind = lenet__layer_kind_at(i);
        ck_assert_ptr_eq(lenet__layer_kind_find(kind->name), kind);
        double args[LENET_MAX_LAYER_ARGS];
        int n = (int)strlen(kind->arg_types);
        for (int a = 0; a < n; a++)
            args[a] = 2.0;
        lenet_layer *l = lenet__layer_create(kind->name, n, args);
        if (!l)
            continue; /* a kind that refuses 2s: its argument checks are its own tests' business */
        ck_assert_str_eq(lenet_layer_name(l), kind->name);
        ck_assert_int_eq(l->n_args, n);
        for (int a = 0; a < n; a++)
            ck_assert_double_eq(l->args[a], args[a]);
        ck_assert(lenet__layer_is_registered(l));
        lenet_layer_free(l);
    }
    ck_assert_ptr_null(lenet__layer_kind_at(lenet__layer_kind_count()));
    ck_assert_ptr_null(lenet__layer_create("NoSuchLayer", 0, NULL));
    ck_assert_msg(strstr(lenet_last_error(), "NoSuchLayer") != NULL, "%s", lenet_last_error());
    ck_assert_ptr_null(lenet__layer_create("Linear", 2, (double[]){3, 4}));
    ck_assert_ptr_null(lenet__layer_create("Linear", 1, (double[]){3e10}));
    ck_assert_ptr_null(lenet__layer_create("Linear", 1, (double[]){0}));
    lenet_layer *l = lenet__layer_create("Conv2d", 4, (double[]){6, 5, 1, 2});
    ck_assert_ptr_nonnull(l);
    ck_assert_str_eq(lenet_layer_name(l), "Conv2d");
    lenet_layer_free(l);
}
END_TEST

/* ---- inference from threads on a loaded model ---- */

enum { THREADS = 4, CALLS = 50, BATCH = 3 };

typedef struct worker {
    const lenet_model *m;
    const lenet_tensor *x;
    const float *expected;
    int mismatches, failures;
} worker;

static void *predict_loop(void *arg)
{
    worker *w = arg;
    lenet_tensor *y = lenet_tensor_create(2, (int[]){BATCH, 10});
    for (int i = 0; i < CALLS; i++) {
        if (lenet_model_predict(w->m, w->x, y) != LENET_OK)
            w->failures++;
        else if (memcmp(lenet_tensor_cdata(y), w->expected, BATCH * 10 * sizeof(float)) != 0)
            w->mismatches++;
    }
    lenet_tensor_free(y);
    return NULL;
}

START_TEST(test_threads_predicting_on_a_loaded_model_agree_with_one_thread)
{
    make_tmpdir();
    lenet_model *m = d2l_model(8);
    ck_assert_lenet_ok(lenet_model_save(m, tmp_path("d2l.safetensors")));
    lenet_model_free(m);
    m = lenet_model_load(tmp_path("d2l.safetensors"));
    ck_assert_ptr_nonnull(m);
    lenet_tensor *x = lenet_tensor_create(4, (int[]){BATCH, 1, 28, 28});
    lenet_tensor *y = lenet_tensor_create(2, (int[]){BATCH, 10});
    lenet_test_fill(x, 3, 0.0f, 1.0f);
    ck_assert_lenet_ok(lenet_model_predict(m, x, y));
    worker w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){m, x, lenet_tensor_cdata(y), 0, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, predict_loop, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
        ck_assert_int_eq(w[i].failures, 0);
        ck_assert_int_eq(w[i].mismatches, 0);
    }
    lenet_tensor_free(x);
    lenet_tensor_free(y);
    lenet_model_free(m);
    remove_tmpdir();
}
END_TEST


int main(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("io");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_save_then_load_gives_bit_identical_outputs);
    tcase_add_test(tc, test_loaded_model_trains_on_identically);
    tcase_add_test(tc, test_load_weights_fills_a_model_built_in_code);
    tcase_add_test(tc, test_pytorch_state_dict_gives_pytorchs_logits);
    tcase_add_test(tc, test_float64_float16_and_bfloat16_weights_are_converted);
    tcase_add_test(tc, test_buffers_round_trip_under_their_names_with_counts_as_i64);
    tcase_add_test(tc, test_counts_load_from_integers_and_bad_counts_or_dtypes_are_refused);
    tcase_add_test(tc, test_saving_refuses_a_count_that_is_not_one);
    tcase_add_test(tc, test_pytorch_batchnorm_state_dict_loads_and_saves_back_the_same);
    tcase_add_test(tc, test_every_truncation_is_rejected_and_changes_nothing);
    tcase_add_test(tc, test_every_flipped_byte_fails_cleanly_or_loads);
    tcase_add_test(tc, test_every_flipped_byte_of_a_batchnorm_file_without_crc_fails_cleanly_or_loads);
    tcase_add_test(tc, test_malformed_containers_are_rejected_with_a_message);
    tcase_add_test(tc, test_duplicate_keys_and_nul_characters_are_rejected_naming_the_key);
    tcase_add_test(tc, test_a_fifo_or_a_directory_fails_at_once_as_not_a_regular_file);
    tcase_add_test(tc, test_wrong_crc_is_rejected);
    tcase_add_test(tc, test_bad_architectures_are_rejected);
    tcase_add_test(tc, test_architecture_arguments_that_overflow_fail_to_load_with_a_message);
    tcase_add_test(tc, test_shape_mismatches_leave_the_model_untouched);
    tcase_add_test(tc, test_failed_save_leaves_the_old_file_and_no_temporary);
    tcase_add_test(tc, test_resume_after_an_epoch_is_bit_identical);
    tcase_add_test(tc, test_resume_with_batchnorm_dropout_adamw_and_a_schedule_is_bit_identical);
    tcase_add_test(tc, test_resume_inside_an_epoch_is_bit_identical);
    tcase_add_test(tc, test_resume_before_any_step_and_without_momentum);
    tcase_add_test(tc, test_sdlm_checkpoint_keeps_the_hessian_estimate);
    tcase_add_test(tc, test_checkpoint_load_refuses_other_objects_and_changes_nothing);
    tcase_add_test(tc, test_unregistered_layer_kinds_cannot_be_saved);
    tcase_add_test(tc, test_registry_builds_every_kind_under_its_own_name);
    tcase_add_test(tc, test_threads_predicting_on_a_loaded_model_agree_with_one_thread);
    suite_add_tcase(s, tc);
    return lenet_test_run(s);
}
