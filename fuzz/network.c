#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include "network.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layer.h" /* struct lenet_layer: a layer's constructor arguments (no public getter has them) */

static const char *const kind_names[FUZZ_KIND_COUNT] = {
    [FUZZ_CONV2D] = "Conv2d",
    [FUZZ_AVGPOOL2D] = "AvgPool2d",
    [FUZZ_MAXPOOL2D] = "MaxPool2d",
    [FUZZ_SIGMOID] = "Sigmoid",
    [FUZZ_RELU] = "ReLU",
    [FUZZ_TANH] = "Tanh",
    [FUZZ_FLATTEN] = "Flatten",
    [FUZZ_LINEAR] = "Linear",
    [FUZZ_SUBSAMPLE2D] = "Subsampling",
    [FUZZ_PARTIAL_CONV2D] = "PartialConv2d",
    [FUZZ_RBF] = "EuclideanRBF",
    [FUZZ_SCALED_TANH] = "ScaledTanh",
    [FUZZ_BATCHNORM1D] = "BatchNorm1d",
    [FUZZ_BATCHNORM2D] = "BatchNorm2d",
    [FUZZ_DROPOUT] = "Dropout",
};

/* Integer constructor arguments of each kind (PartialConv2d's table follows its three sizes). */
static const int kind_args[FUZZ_KIND_COUNT] = {
    [FUZZ_CONV2D] = 4, [FUZZ_AVGPOOL2D] = 2, [FUZZ_MAXPOOL2D] = 2, [FUZZ_LINEAR] = 1, [FUZZ_SUBSAMPLE2D] = 2,
    [FUZZ_PARTIAL_CONV2D] = 3, [FUZZ_RBF] = 1,
};

const char *fuzz_kind_name(fuzz_kind kind)
{
    return kind < FUZZ_KIND_COUNT ? kind_names[kind] : "?";
}

int fuzz_kind_arg_count(fuzz_kind kind)
{
    return kind < FUZZ_KIND_COUNT ? kind_args[kind] : 0;
}

int fuzz_kind_float_count(fuzz_kind kind)
{
    return kind == FUZZ_BATCHNORM1D || kind == FUZZ_BATCHNORM2D ? 2 : kind == FUZZ_DROPOUT ? 1 : 0;
}

/* ---- the reference: exact sizes, saturating at UINT64_MAX ---- */

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

static uint64_t sat_mul3(uint64_t a, uint64_t b, uint64_t c)
{
    return sat_mul(sat_mul(a, b), c);
}

static uint64_t shape_numel(const fuzz_shape *s)
{
    uint64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n = sat_mul(n, (uint64_t)s->dim[d]);
    return n;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* Adds a parameter, or with trainable < 0 a buffer, to the reference. */
static void add_param(fuzz_ref *ref, int layer, const char *suffix, int trainable, int ndim, const int64_t *dims)
{
    fuzz_param *p = trainable < 0 ? &ref->buffer[ref->n_buffers++] : &ref->param[ref->n_params++];
    *p = (fuzz_param){.layer = layer, .suffix = suffix, .trainable = trainable > 0, .ndim = ndim, .numel = 1};
    for (int d = 0; d < ndim; d++) {
        p->dim[d] = dims[d];
        p->numel = sat_mul(p->numel, (uint64_t)dims[d]);
    }
    /* Each tensor starts 64-byte aligned in the arena. */
    ref->arena = sat_add(ref->arena, p->numel > UINT64_MAX - 15 ? UINT64_MAX : (p->numel + 15) & ~(uint64_t)15);
}

/* Sizes of one layer beside its output: its multiply-adds per sample, the scratch it needs for a chunk of 16
 * samples (a bound of its workspace), and its padded input. */
typedef struct layer_cost {
    uint64_t macs, scratch, padded;
} layer_cost;

/* Layer `index` applied to `in`: false if it does not fit.  `built_in` is the input it was built for, or NULL. */
static bool apply(const fuzz_layer *l, int index, const fuzz_shape *in, const fuzz_shape *built_in, fuzz_ref *ref,
                  fuzz_shape *out, layer_cost *cost)
{
    const int64_t *a = (const int64_t[4]){l->arg[0], l->arg[1], l->arg[2], l->arg[3]};
    const int64_t c = in->dim[0], h = in->dim[1], w = in->dim[2];
    *cost = (layer_cost){shape_numel(in), 0, 0};
    switch (l->kind) {
    case FUZZ_CONV2D: {
        const int64_t o = a[0], k = a[1], s = a[2], p = a[3];
        if (in->ndim != 3 || (built_in && c != built_in->dim[0]))
            return false;
        const int64_t hp = h + 2 * p, wp = w + 2 * p; /* < 2^33: exact */
        if (hp < k || wp < k)
            return false;
        const int64_t oh = (hp - k) / s + 1, ow = (wp - k) / s + 1;
        *out = (fuzz_shape){3, {o, oh, ow}};
        add_param(ref, index, "weight", true, 4, (const int64_t[]){o, c, k, k});
        add_param(ref, index, "bias", true, 1, (const int64_t[]){o});
        const uint64_t taps = sat_mul3((uint64_t)c, (uint64_t)k, (uint64_t)k);
        const uint64_t ohw = sat_mul((uint64_t)oh, (uint64_t)ow);
        cost->padded = sat_mul3((uint64_t)c, (uint64_t)hp, (uint64_t)wp);
        cost->macs = sat_mul3(taps, ohw, (uint64_t)o);
        /* The kernels' copies for 16 samples: padded inputs (also with rows widened by the kernel), output
         * gradients with a border of the kernel, and the im2col columns of one sample. */
        const uint64_t inputs = sat_mul3((uint64_t)c, (uint64_t)hp, (uint64_t)(wp + k + 16));
        const uint64_t grads = sat_mul3((uint64_t)o, (uint64_t)(oh + 2 * k), (uint64_t)(ow + 2 * k + 16));
        cost->scratch = sat_add(sat_mul(16, sat_add(inputs, grads)), sat_mul(taps, ohw));
        return true;
    }
    case FUZZ_AVGPOOL2D:
    case FUZZ_MAXPOOL2D:
    case FUZZ_SUBSAMPLE2D: {
        const int64_t k = a[0], s = a[1];
        if (in->ndim != 3 || h < k || w < k)
            return false;
        if (l->kind == FUZZ_SUBSAMPLE2D && built_in && c != built_in->dim[0])
            return false;
        *out = (fuzz_shape){3, {c, (h - k) / s + 1, (w - k) / s + 1}};
        if (l->kind == FUZZ_SUBSAMPLE2D) {
            add_param(ref, index, "weight", true, 1, (const int64_t[]){c});
            add_param(ref, index, "bias", true, 1, (const int64_t[]){c});
        }
        cost->macs = sat_add(cost->macs, sat_mul3(shape_numel(out), (uint64_t)k, (uint64_t)k));
        return true;
    }
    case FUZZ_PARTIAL_CONV2D: {
        const int64_t o = a[0], i = a[1], k = a[2];
        if (in->ndim != 3 || c != i || h < k || w < k)
            return false;
        *out = (fuzz_shape){3, {o, h - k + 1, w - k + 1}};
        add_param(ref, index, "weight", true, 3, (const int64_t[]){l->links, k, k});
        add_param(ref, index, "bias", true, 1, (const int64_t[]){o});
        const uint64_t taps = sat_mul3((uint64_t)i, (uint64_t)k, (uint64_t)k);
        const uint64_t ohw = sat_mul((uint64_t)(h - k + 1), (uint64_t)(w - k + 1));
        cost->macs = sat_mul3((uint64_t)l->links, sat_mul((uint64_t)k, (uint64_t)k), ohw);
        cost->scratch = sat_add(sat_mul3(2, taps, ohw), sat_mul3(2, taps, (uint64_t)o));
        return true;
    }
    case FUZZ_RBF:
        if (in->ndim != 1 || (a[1] && c != a[1]) || (built_in && c != built_in->dim[0]))
            return false;
        *out = (fuzz_shape){1, {a[0]}};
        add_param(ref, index, "weight", false, 2, (const int64_t[]){a[0], c});
        cost->macs = sat_mul((uint64_t)a[0], (uint64_t)c);
        return true;
    case FUZZ_LINEAR:
        if (in->ndim != 1 || (built_in && c != built_in->dim[0]))
            return false;
        *out = (fuzz_shape){1, {a[0]}};
        add_param(ref, index, "weight", true, 2, (const int64_t[]){a[0], c});
        add_param(ref, index, "bias", true, 1, (const int64_t[]){a[0]});
        cost->macs = sat_mul((uint64_t)a[0], (uint64_t)c);
        return true;
    case FUZZ_FLATTEN: {
        uint64_t n = shape_numel(in);
        *out = (fuzz_shape){1, {n > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)n}};
        return true;
    }
    case FUZZ_BATCHNORM1D:
    case FUZZ_BATCHNORM2D:
        if (in->ndim != (l->kind == FUZZ_BATCHNORM1D ? 1 : 3) || (built_in && c != built_in->dim[0]))
            return false;
        *out = *in;
        add_param(ref, index, "weight", true, 1, (const int64_t[]){c});
        add_param(ref, index, "bias", true, 1, (const int64_t[]){c});
        add_param(ref, index, "running_mean", -1, 1, (const int64_t[]){c});
        add_param(ref, index, "running_var", -1, 1, (const int64_t[]){c});
        add_param(ref, index, "num_batches_tracked", -1, 1, (const int64_t[]){1});
        cost->macs = sat_mul(8, cost->macs);
        return true;
    case FUZZ_DROPOUT:
        *out = *in;
        cost->macs = sat_mul(2, cost->macs);
        return true;
    case FUZZ_SIGMOID:
    case FUZZ_RELU:
    case FUZZ_TANH:
    case FUZZ_SCALED_TANH:
        *out = *in;
        cost->macs = sat_mul(4, cost->macs); /* an exponential is worth a few multiply-adds */
        return true;
    case FUZZ_KIND_COUNT:
        break;
    }
    return false;
}

void fuzz_ref_compute(const fuzz_net *net, int channels, int height, int width, const fuzz_ref *built,
                      fuzz_ref *ref)
{
    memset(ref, 0, sizeof *ref);
    ref->in = (fuzz_shape){3, {channels, height, width}};
    ref->first_bad = net->count;
    ref->largest = shape_numel(&ref->in);
    uint64_t most_padded = 0, largest_output = shape_numel(&ref->in);
    fuzz_shape in = ref->in;
    for (size_t i = 0; i < net->count; i++) {
        const fuzz_shape *built_in = built ? (i == 0 ? &built->in : &built->out[i - 1]) : NULL;
        layer_cost cost;
        bool fits = apply(&net->layer[i], (int)i, &in, built_in, ref, &ref->out[i], &cost);
        for (int d = 0; fits && d < ref->out[i].ndim; d++)
            fits = ref->out[i].dim[d] >= 1 && ref->out[i].dim[d] <= INT_MAX;
        if (!fits) {
            ref->first_bad = i;
            return;
        }
        largest_output = max_u64(largest_output, shape_numel(&ref->out[i]));
        most_padded = max_u64(most_padded, cost.padded);
        ref->macs = sat_add(ref->macs, cost.macs);
        ref->scratch = max_u64(ref->scratch, cost.scratch);
        in = ref->out[i];
    }
    ref->valid = net->count > 0;
    ref->largest = max_u64(largest_output, most_padded);
    ref->cheap = ref->valid && largest_output <= FUZZ_CHEAP_SAMPLE && most_padded <= FUZZ_CHEAP_PADDED &&
                 ref->arena <= FUZZ_CHEAP_PARAMS && ref->macs <= FUZZ_CHEAP_MACS && ref->scratch <= FUZZ_CHEAP_SCRATCH;
}

static void print_layer(const fuzz_layer *l);

void fuzz_describe(const fuzz_net *net, const fuzz_ref *ref)
{
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("LENET_FUZZ_VERBOSE") != NULL;
    if (!verbose)
        return;
    fprintf(stderr, "fuzz: input %lldx%lldx%lld:", (long long)ref->in.dim[0], (long long)ref->in.dim[1],
            (long long)ref->in.dim[2]);
    for (size_t i = 0; i < net->count; i++) {
        fprintf(stderr, " ");
        print_layer(&net->layer[i]);
    }
    if (ref->valid)
        fprintf(stderr, "\nfuzz: valid, %s: %llu parameter floats, largest activation %llu, %llu multiply-adds, "
                "scratch %llu\n", ref->cheap ? "cheap" : "not cheap", (unsigned long long)ref->arena,
                (unsigned long long)ref->largest, (unsigned long long)ref->macs, (unsigned long long)ref->scratch);
    else
        fprintf(stderr, "\nfuzz: layer %zu does not fit\n", ref->first_bad);
}

/* ---- a built model through the public API ---- */

void fuzz_check_error(lenet_status st)
{
    FUZZ_CHECK(st < 0);
    FUZZ_CHECK(lenet_last_error()[0] != '\0');
}

bool fuzz_status_ok(lenet_status st)
{
    if (st == LENET_OK)
        return true;
    fuzz_check_error(st);
    return false;
}

static int arg_int(const lenet_layer *l, int i)
{
    FUZZ_CHECK(i < l->n_args);
    FUZZ_CHECK(l->args[i] >= INT_MIN && l->args[i] <= INT_MAX);
    return (int)l->args[i];
}

bool fuzz_net_from_model(const lenet_model *m, fuzz_net *net)
{
    memset(net, 0, sizeof *net);
    net->count = lenet_model_layer_count(m);
    if (net->count > FUZZ_MAX_LAYERS)
        return false;
    for (size_t i = 0; i < net->count; i++) {
        const lenet_layer *l = lenet_model_layer(m, i);
        FUZZ_CHECK(l);
        fuzz_layer *f = &net->layer[i];
        const char *name = lenet_layer_name(l);
        int kind = 0;
        while (kind < FUZZ_KIND_COUNT && strcmp(name, kind_names[kind]) != 0)
            kind++;
        if (kind == FUZZ_KIND_COUNT) {
            static bool told;
            if (!told)
                fprintf(stderr, "fuzz: layer kind \"%s\" is unknown to fuzz/network.c: its models go unchecked\n",
                        name);
            told = true;
            return false;
        }
        f->kind = (fuzz_kind)kind;
        for (int a = 0; a < fuzz_kind_arg_count(f->kind); a++)
            f->arg[a] = arg_int(l, a);
        for (int a = 0; a < fuzz_kind_float_count(f->kind); a++) {
            FUZZ_CHECK(a < l->n_args);
            f->farg[a] = (float)l->args[a];
        }
        if (kind == FUZZ_RBF) {
            /* (out_features, 0, centres): centres 1 for LeNet-5's bitmaps, over 84 inputs. */
            FUZZ_CHECK(l->n_args == 3 && (l->args[2] == 0 || l->args[2] == 1));
            f->arg[1] = l->args[2] == 1 ? 84 : 0;
        }
        if (kind == FUZZ_PARTIAL_CONV2D) {
            /* The table, as 48-bit words after the three sizes. */
            for (int a = 3; a < l->n_args; a++) {
                FUZZ_CHECK(l->args[a] >= 0 && l->args[a] < 0x1p48 && l->args[a] == floor(l->args[a]));
                f->links += __builtin_popcountll((unsigned long long)l->args[a]);
            }
        }
    }
    return true;
}

static bool shape_matches(const lenet_tensor *t, int batch, const fuzz_shape *s)
{
    int first = batch > 0 ? 1 : 0;
    if (lenet_tensor_ndim(t) != first + s->ndim)
        return false;
    if (batch > 0 && lenet_tensor_dim(t, 0) != batch)
        return false;
    for (int d = 0; d < s->ndim; d++)
        if (lenet_tensor_dim(t, first + d) != s->dim[d])
            return false;
    return true;
}

/* Checks lenet_model_summary()'s lines, "Conv2d output shape: \t torch.Size([1, 6, 28, 28])", against the
 * reference. */
static void check_summary_text(const char *text, const fuzz_net *net, const fuzz_ref *ref, int batch)
{
    const char *p = text;
    for (size_t i = 0; i < net->count; i++) {
        const char *name = fuzz_kind_name(net->layer[i].kind);
        size_t len = strlen(name);
        const char *middle = " output shape: \t torch.Size([";
        FUZZ_CHECK(strncmp(p, name, len) == 0);
        p += len;
        FUZZ_CHECK(strncmp(p, middle, strlen(middle)) == 0);
        p += strlen(middle);
        int64_t dims[1 + 3];
        int n = 0;
        for (;;) {
            char *end;
            long long v = strtoll(p, &end, 10);
            FUZZ_CHECK(end != p && n < 4);
            dims[n++] = v;
            p = end;
            if (strncmp(p, ", ", 2) == 0) {
                p += 2;
                continue;
            }
            FUZZ_CHECK(strncmp(p, "])\n", 3) == 0);
            p += 3;
            break;
        }
        const fuzz_shape *s = &ref->out[i];
        bool same = n == 1 + s->ndim && dims[0] == batch;
        for (int d = 0; same && d < s->ndim; d++)
            same = dims[1 + d] == s->dim[d];
        if (!same) {
            fprintf(stderr, "fuzz: layer %zu (%s): the library's output shape differs from the exact one (%d dims:",
                    i, name, s->ndim);
            for (int d = 0; d < s->ndim; d++)
                fprintf(stderr, " %lld", (long long)s->dim[d]);
            fprintf(stderr, ")\n%s", text);
        }
        FUZZ_CHECK(same);
    }
    FUZZ_CHECK(*p == '\0');
}

/* Runs lenet_model_summary() into memory; returns its status and, on success, the text in *text (free it). */
static lenet_status summary_text(lenet_model *m, int batch, int channels, int height, int width, char **text)
{
    size_t size = 0;
    *text = NULL;
    FILE *f = open_memstream(text, &size);
    FUZZ_CHECK(f);
    lenet_error_clear();
    lenet_status st = lenet_model_summary(m, batch, channels, height, width, f);
    FUZZ_CHECK(fclose(f) == 0);
    if (st != LENET_OK)
        FUZZ_CHECK(size == 0); /* nothing is printed on error */
    return st;
}

/* "Conv2d(2, 3, 1, 0)" */
static void print_layer(const fuzz_layer *l)
{
    fprintf(stderr, "%s(", fuzz_kind_name(l->kind));
    for (int a = 0; a < fuzz_kind_arg_count(l->kind); a++)
        fprintf(stderr, "%s%d", a ? ", " : "", l->arg[a]);
    for (int a = 0; a < fuzz_kind_float_count(l->kind); a++)
        fprintf(stderr, "%s%g", a ? ", " : "", (double)l->farg[a]);
    if (l->kind == FUZZ_PARTIAL_CONV2D)
        fprintf(stderr, ", %d links", l->links);
    if (l->kind == FUZZ_RBF && l->arg[1])
        fprintf(stderr, "; LeNet-5's bitmaps over %d inputs", l->arg[1]);
    fprintf(stderr, ")");
}

static void report_bad_layer(const char *what, const fuzz_net *net, const fuzz_ref *ref)
{
    if (ref->first_bad < net->count) {
        fprintf(stderr, "fuzz: %s although layer %zu, ", what, ref->first_bad);
        print_layer(&net->layer[ref->first_bad]);
        fprintf(stderr, ", does not fit its input or has an output dimension beyond INT_MAX (model input "
                "%dx%dx%d)\n", (int)ref->in.dim[0], (int)ref->in.dim[1], (int)ref->in.dim[2]);
    }
}

void fuzz_check_built(lenet_model *m, const fuzz_net *net, const fuzz_ref *ref)
{
    FUZZ_CHECK(lenet_model_is_built(m));
    if (!ref->valid)
        report_bad_layer("the model built", net, ref);
    FUZZ_CHECK(ref->valid);
    int c = 0, h = 0, w = 0;
    FUZZ_CHECK(lenet_model_input_shape(m, &c, &h, &w) == LENET_OK);
    FUZZ_CHECK(c == ref->in.dim[0] && h == ref->in.dim[1] && w == ref->in.dim[2]);
    FUZZ_CHECK(lenet_model_layer_count(m) == net->count);
    FUZZ_CHECK(lenet_model_output_size(m) == shape_numel(&ref->out[net->count - 1]));

    FUZZ_CHECK(lenet_model_param_count(m) == ref->n_params);
    uint64_t trainable = 0;
    for (size_t i = 0; i < ref->n_params; i++) {
        const fuzz_param *p = &ref->param[i];
        char name[64];
        snprintf(name, sizeof name, "%d.%s", p->layer, p->suffix);
        FUZZ_CHECK(lenet_model_param_name(m, i) && strcmp(lenet_model_param_name(m, i), name) == 0);
        const lenet_tensor *t = lenet_model_param(m, i), *g = lenet_model_grad(m, i);
        FUZZ_CHECK(t && g && lenet_tensor_ndim(t) == p->ndim && lenet_tensor_ndim(g) == p->ndim);
        for (int d = 0; d < p->ndim; d++)
            FUZZ_CHECK(lenet_tensor_dim(t, d) == p->dim[d] && lenet_tensor_dim(g, d) == p->dim[d]);
        FUZZ_CHECK(lenet_tensor_numel(t) == p->numel && lenet_tensor_numel(g) == p->numel);
        if (p->trainable)
            trainable += p->numel;
    }
    FUZZ_CHECK(lenet_model_param(m, ref->n_params) == NULL && lenet_model_param_name(m, ref->n_params) == NULL);
    FUZZ_CHECK(lenet_model_param_numel(m) == trainable);

    FUZZ_CHECK(lenet_model_buffer_count(m) == ref->n_buffers);
    for (size_t i = 0; i < ref->n_buffers; i++) {
        const fuzz_param *p = &ref->buffer[i];
        char name[64];
        snprintf(name, sizeof name, "%d.%s", p->layer, p->suffix);
        FUZZ_CHECK(lenet_model_buffer_name(m, i) && strcmp(lenet_model_buffer_name(m, i), name) == 0);
        const lenet_tensor *t = lenet_model_buffer(m, i);
        FUZZ_CHECK(t && lenet_tensor_ndim(t) == p->ndim && lenet_tensor_numel(t) == p->numel);
        for (int d = 0; d < p->ndim; d++)
            FUZZ_CHECK(lenet_tensor_dim(t, d) == p->dim[d]);
    }
    FUZZ_CHECK(lenet_model_buffer(m, ref->n_buffers) == NULL);

    /* The summary for the input it was built for infers the same shapes again. */
    char *text;
    FUZZ_CHECK(summary_text(m, 1, c, h, w, &text) == LENET_OK);
    check_summary_text(text, net, ref, 1);
    free(text);
}

void fuzz_check_summary(lenet_model *m, const fuzz_net *net, const fuzz_ref *built, int batch, int channels,
                        int height, int width)
{
    char *text;
    lenet_status st = summary_text(m, batch, channels, height, width, &text);
    if (batch < 1 || channels < 1 || height < 1 || width < 1) {
        FUZZ_CHECK(st == LENET_EINVAL && lenet_last_error()[0]);
        free(text);
        return;
    }
    fuzz_ref ref;
    fuzz_ref_compute(net, channels, height, width, built, &ref);
    if (st == LENET_OK) {
        if (!ref.valid)
            report_bad_layer("lenet_model_summary() succeeded", net, &ref);
        FUZZ_CHECK(ref.valid);
        check_summary_text(text, net, &ref, batch);
    } else {
        fuzz_check_error(st);
        FUZZ_CHECK(!ref.cheap);
    }
    free(text);
}

/* ---- running a model ---- */

uint64_t fuzz_next_random(uint64_t *state)
{
    /* splitmix64 */
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void fill(lenet_tensor *t, uint64_t *state, bool specials, bool nonnegative)
{
    static const float special[] = {NAN, INFINITY, -INFINITY, 1e30f, -1e30f, FLT_MIN / 2, -0.0f, FLT_MAX};
    float *data = lenet_tensor_data(t);
    size_t n = lenet_tensor_numel(t);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = fuzz_next_random(state);
        float v = (float)(r >> 40) / (float)(1u << 24) * 4.0f - 2.0f;
        if (specials && (r & 15) == 0)
            v = special[(r >> 4) % (sizeof special / sizeof special[0])];
        data[i] = nonnegative ? fabsf(v) : v;
    }
}

/* True if a training forward of `batch` samples must be refused: a BatchNorm would see one value per channel. */
static bool batchnorm_starved(const fuzz_net *net, const fuzz_ref *ref, int batch)
{
    for (size_t i = 0; i < net->count; i++) {
        if (net->layer[i].kind != FUZZ_BATCHNORM1D && net->layer[i].kind != FUZZ_BATCHNORM2D)
            continue;
        const fuzz_shape *in = i == 0 ? &ref->in : &ref->out[i - 1];
        if ((uint64_t)batch * (shape_numel(in) / (uint64_t)in->dim[0]) < 2)
            return true;
    }
    return false;
}

void fuzz_run_model(lenet_model *m, const fuzz_net *net, const fuzz_ref *ref, const fuzz_run *run)
{
    const size_t last = lenet_model_layer_count(m) - 1;
    const fuzz_shape *out = &ref->out[last];
    const int batch = run->batch;
    uint64_t state = run->seed;
    int in_shape[4] = {batch, (int)ref->in.dim[0], (int)ref->in.dim[1], (int)ref->in.dim[2]};
    int out_shape[4] = {batch};
    for (int d = 0; d < out->ndim; d++)
        out_shape[1 + d] = (int)out->dim[d];
    lenet_tensor *x = lenet_tensor_create(4, in_shape);
    lenet_tensor *dy = lenet_tensor_create(1 + out->ndim, out_shape);
    lenet_tensor *hy = lenet_tensor_create(1 + out->ndim, out_shape);
    lenet_tensor *y2 = lenet_tensor_create(1 + out->ndim, out_shape);
    lenet_tensor *flat = lenet_tensor_create(3, in_shape + 1);
    const size_t k = (size_t)shape_numel(out);
    int32_t *classes = malloc((size_t)batch * sizeof *classes);
    float *probs = malloc((size_t)batch * k * sizeof *probs);
    FUZZ_CHECK(x && dy && hy && y2 && flat && classes && probs);
    fill(x, &state, run->specials, false);
    fill(dy, &state, run->specials, false);
    fill(hy, &state, false, true);

    /* Forward, then back-propagate through it. */
    const lenet_tensor *y = NULL;
    lenet_error_clear();
    lenet_status st = lenet_model_forward(m, x, &y);
    if (run->training && batchnorm_starved(net, ref, batch))
        FUZZ_CHECK(st == LENET_ESHAPE && lenet_last_error()[0]);
    else
        FUZZ_CHECK(fuzz_status_ok(st) || !run->strict);
    if (st == LENET_OK) {
        FUZZ_CHECK(y && shape_matches(y, batch, out));
        for (size_t i = 0; i <= last; i++) {
            const lenet_tensor *a = lenet_model_activation(m, i);
            FUZZ_CHECK(a && shape_matches(a, batch, &ref->out[i]));
        }
        FUZZ_CHECK(lenet_model_activation(m, last + 1) == NULL);
        st = lenet_model_backward(m, dy);
        FUZZ_CHECK(fuzz_status_ok(st) || !run->strict);
        if (run->hessian) {
            FUZZ_CHECK(lenet_model_zero_grad(m) == LENET_OK);
            st = lenet_model_backward_gn(m, dy, hy);
            FUZZ_CHECK(fuzz_status_ok(st) || st == LENET_EUNSUPPORTED || !run->strict);
        }
        FUZZ_CHECK(lenet_model_zero_grad(m) == LENET_OK);
    }
    /* A (C, H, W) tensor is no batch. */
    const lenet_tensor *ignored;
    FUZZ_CHECK(lenet_model_forward(m, flat, &ignored) == LENET_ESHAPE && lenet_last_error()[0]);

    /* The read-only paths. */
    lenet_error_clear();
    st = lenet_model_predict(m, x, y2);
    FUZZ_CHECK(fuzz_status_ok(st) || !run->strict);
    lenet_error_clear();
    st = lenet_model_classify(m, x, classes, probs);
    FUZZ_CHECK(fuzz_status_ok(st) || !run->strict);
    if (st == LENET_OK)
        for (int i = 0; i < batch; i++)
            FUZZ_CHECK(classes[i] >= 0 && (size_t)classes[i] < k);

    free(probs);
    free(classes);
    lenet_tensor_free(flat);
    lenet_tensor_free(y2);
    lenet_tensor_free(hy);
    lenet_tensor_free(dy);
    lenet_tensor_free(x);
}
