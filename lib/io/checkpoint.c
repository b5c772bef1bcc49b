/* Models, optimizer state and iterator state to and from safetensors files.  Loading stages everything in
 * scratch memory and checks it all before the first byte of a model, optimizer or iterator changes. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/internal.h"
#include "io/internal.h"
#include "layers/registry.h"
#include "lenet/io.h"
#include "lenet/version.h"
#include "optim/internal.h"

/* Version of what liblenet puts in a safetensors file (metadata keys and their JSON); readers refuse newer. */
#define LIBLENET_FORMAT_VERSION 1
#define MAX_INPUT_SIDE 65536
#define MAX_LAYERS 65536
#define TENSOR_NAME_SIZE 160

/* ---- small helpers ---- */

/* An aligned buffer of `count` floats (at least one), its byte size computed with checked arithmetic. */
static float *alloc_floats(size_t count)
{
    size_t bytes;
    if (lenet__mul_overflows(count ? count : 1, sizeof(float), &bytes))
        return NULL;
    return lenet__malloc_aligned(bytes);
}

/* Re-raises the current error with another status and a printf-style prefix, keeping its message as the cause. */
static lenet_status refail(lenet_status status, const char *fmt, ...) LENET_PRINTF(2, 3);
static lenet_status refail(lenet_status status, const char *fmt, ...)
{
    char prefix[256], cause[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    snprintf(cause, sizeof cause, "%s", lenet_last_error());
    return lenet__fail(status, "%s%s", prefix, cause);
}

/* Prefixes the current message with "who: " unless it already starts so. */
static void name_caller(const char *who)
{
    if (strncmp(lenet_last_error(), who, strlen(who)) != 0)
        lenet__error_prefix("%s: ", who);
}

static void format_shape_u64(int ndim, const uint64_t *shape, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static bool json_int(const cJSON *item, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double v = item->valuedouble;
    if (!(v >= lo && v <= hi) || v != floor(v))
        return false;
    *out = v;
    return true;
}

/* A decimal or hexadecimal (base 16) unsigned 64-bit number written as a JSON string, exactly. */
static bool json_u64_string(const cJSON *item, int base, uint64_t *out)
{
    if (!cJSON_IsString(item))
        return false;
    const char *s = item->valuestring;
    size_t len = strlen(s);
    if (len == 0 || len > (base == 16 ? 16u : 20u))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool digit = (c >= '0' && c <= '9') || (base == 16 && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')));
        if (!digit)
            return false;
    }
    errno = 0;
    unsigned long long v = strtoull(s, NULL, base);
    if (errno != 0)
        return false;
    *out = v;
    return true;
}

/* Parses a metadata value that holds JSON; EFORMAT naming the key when it is not a JSON object. */
static lenet_status parse_meta_json(const lenet_st_file *f, const char *key, cJSON **out)
{
    const char *text = lenet__st_meta(f, key);
    if (!text)
        return lenet__fail(LENET_EFORMAT, "%s: no \"%s\" metadata", f->path, key);
    char what[64];
    snprintf(what, sizeof what, "metadata \"%s\"", key);
    lenet_status st = lenet__json_parse(text, strlen(text), f->path, what, out);
    if (st != LENET_OK)
        return st;
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return lenet__fail(LENET_EFORMAT, "%s: metadata \"%s\" is not a JSON object", f->path, key);
    }
    return LENET_OK;
}

static lenet_status check_liblenet_file(const lenet_st_file *f)
{
    const char *version = lenet__st_meta(f, "liblenet_format");
    if (!version)
        return lenet__fail(LENET_EFORMAT,
                           "%s: not a liblenet checkpoint (no liblenet_format metadata); a PyTorch state_dict loads "
                           "with lenet_model_load_weights into a model built in code",
                           f->path);
    if (strcmp(version, "1") != 0)
        return lenet__fail(LENET_EUNSUPPORTED, "%s: liblenet format version \"%.16s\" is not supported (this is %d)",
                           f->path, version, LIBLENET_FORMAT_VERSION);
    if (!lenet__st_meta(f, "data_crc32"))
        return lenet__fail(LENET_EFORMAT, "%s: no data_crc32 metadata", f->path);
    return LENET_OK;
}

/* A JSON number that reads back as exactly `v`: cJSON prints 15 significant digits when they come close, which
 * does not always give back the same double. */
static cJSON *exact_number(double v)
{
    char text[40];
    snprintf(text, sizeof text, "%.17g", v);
    const char *point = localeconv()->decimal_point;
    if (point && point[0] && point[0] != '.' && !point[1])
        for (char *p = text; *p; p++)
            if (*p == point[0])
                *p = '.';
    return cJSON_CreateRaw(text);
}

static bool add_exact(cJSON *to, const char *key, double v)
{
    cJSON *number = exact_number(v);
    bool ok = number && (key ? cJSON_AddItemToObject(to, key, number) : cJSON_AddItemToArray(to, number));
    if (!ok)
        cJSON_Delete(number);
    return ok;
}

/* ---- architecture ---- */

typedef struct arch_layer {
    const char *kind; /* borrowed from the parsed JSON */
    int n_args;
    double args[LENET_MAX_LAYER_ARGS];
} arch_layer;

typedef struct architecture {
    cJSON *root;
    int input[3];
    size_t n_layers;
    arch_layer *layers;
} architecture;

static void architecture_free(architecture *a)
{
    if (a->root)
        cJSON_Delete(a->root);
    lenet__free(a->layers);
    memset(a, 0, sizeof *a);
}

static lenet_status parse_architecture(const lenet_st_file *f, architecture *a)
{
    memset(a, 0, sizeof *a);
    lenet_status st = parse_meta_json(f, "architecture", &a->root);
    if (st != LENET_OK)
        return st;
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(a->root, "input");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(a->root, "layers");
    if (!cJSON_IsArray(input) || cJSON_GetArraySize(input) != 3)
        return lenet__fail(LENET_EFORMAT, "%s: architecture: input must be [channels, height, width]", f->path);
    for (int i = 0; i < 3; i++) {
        double v;
        if (!json_int(cJSON_GetArrayItem(input, i), 1, MAX_INPUT_SIDE, &v))
            return lenet__fail(LENET_EFORMAT, "%s: architecture: input size %d is not an integer in [1, %d]", f->path,
                               i, MAX_INPUT_SIDE);
        a->input[i] = (int)v;
    }
    int n = cJSON_IsArray(layers) ? cJSON_GetArraySize(layers) : -1;
    if (n < 1 || n > MAX_LAYERS)
        return lenet__fail(LENET_EFORMAT, "%s: architecture: layers must be a list of 1 to %d layers", f->path,
                           MAX_LAYERS);
    a->layers = lenet__calloc((size_t)n, sizeof *a->layers);
    if (!a->layers)
        return lenet__oom("architecture");
    const cJSON *layer;
    cJSON_ArrayForEach(layer, layers)
    {
        arch_layer *al = &a->layers[a->n_layers];
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(layer, "kind");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(layer, "args");
        int n_args = cJSON_IsArray(args) ? cJSON_GetArraySize(args) : -1;
        if (!cJSON_IsObject(layer) || !cJSON_IsString(kind) || n_args < 0 || n_args > LENET_MAX_LAYER_ARGS)
            return lenet__fail(LENET_EFORMAT, "%s: architecture: layer %zu needs a string kind and at most %d args",
                               f->path, a->n_layers, LENET_MAX_LAYER_ARGS);
        al->kind = kind->valuestring;
        al->n_args = n_args;
        for (int i = 0; i < n_args; i++) {
            const cJSON *arg = cJSON_GetArrayItem(args, i);
            if (!cJSON_IsNumber(arg) || !isfinite(arg->valuedouble))
                return lenet__fail(LENET_EFORMAT, "%s: architecture: layer %zu (%.40s): argument %d is not a number",
                                   f->path, a->n_layers, al->kind, i);
            al->args[i] = arg->valuedouble;
        }
        a->n_layers++;
    }
    return LENET_OK;
}

static char *architecture_json(const lenet_model *m)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *input = cJSON_CreateIntArray(m->in_shape.dim, 3);
    if (!input || !root || !cJSON_AddItemToObject(root, "input", input)) {
        cJSON_Delete(input);
        goto fail;
    }
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    if (!layers)
        goto fail;
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        cJSON *layer = cJSON_CreateObject();
        if (!layer || !cJSON_AddItemToArray(layers, layer)) {
            cJSON_Delete(layer);
            goto fail;
        }
        cJSON *args = cJSON_CreateArray();
        if (!cJSON_AddStringToObject(layer, "kind", l->ops->name) || !args ||
            !cJSON_AddItemToObject(layer, "args", args)) {
            cJSON_Delete(args);
            goto fail;
        }
        for (int j = 0; j < l->n_args; j++)
            if (!add_exact(args, NULL, l->args[j]))
                goto fail;
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
fail:
    cJSON_Delete(root);
    return NULL;
}

/* A checkpoint resumes only into the same network: same kinds, arguments and input. */
static lenet_status compare_architecture(const lenet_model *m, const architecture *a, const char *path)
{
    if (a->input[0] != m->in_shape.dim[0] || a->input[1] != m->in_shape.dim[1] || a->input[2] != m->in_shape.dim[2])
        return lenet__fail(LENET_ESTATE, "%s: saved for input %dx%dx%d, the model is built for %dx%dx%d", path,
                           a->input[0], a->input[1], a->input[2], m->in_shape.dim[0], m->in_shape.dim[1],
                           m->in_shape.dim[2]);
    if (a->n_layers != m->n_layers)
        return lenet__fail(LENET_ESTATE, "%s: the saved model has %zu layers, this one %zu", path, a->n_layers,
                           m->n_layers);
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        bool same = strcmp(a->layers[i].kind, l->ops->name) == 0 && a->layers[i].n_args == l->n_args;
        for (int j = 0; same && j < l->n_args; j++)
            same = a->layers[i].args[j] == l->args[j];
        if (!same)
            return lenet__fail(LENET_ESTATE, "%s: layer %zu is %.40s in the checkpoint, %s (other arguments?) in the model",
                               path, i, a->layers[i].kind, l->ops->name);
    }
    return LENET_OK;
}

/* ---- parameters ---- */

static bool is_parameter_name(const char *name)
{
    return name[0] >= '0' && name[0] <= '9';
}

/* Converts the tensor called `name` into `out` if it has `want`'s shape.  ESHAPE if missing or shaped otherwise,
 * EFORMAT if not a float dtype. */
static lenet_status stage_tensor(const lenet_st_file *f, const char *name, const lenet_tensor *want, float *out)
{
    const lenet_st_tensor *t = lenet__st_find(f, name);
    if (!t)
        return lenet__fail(LENET_ESHAPE, "%s: no tensor \"%s\"", f->path, name);
    if (!lenet__st_is_float(t->dtype))
        return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" has dtype %s; F32, F64, F16 or BF16 expected", f->path,
                           name, lenet__st_dtype_name(t->dtype));
    bool same = t->ndim == want->ndim;
    for (int d = 0; same && d < t->ndim; d++)
        same = t->shape[d] == (uint64_t)want->shape[d];
    if (!same) {
        char got[128], expected[128];
        format_shape_u64(t->ndim, t->shape, got, sizeof got);
        lenet__shape_str(want->ndim, want->shape, expected, sizeof expected);
        return lenet__fail(LENET_ESHAPE, "%s: tensor \"%s\" is %s in the file, %s in the model", f->path, name, got,
                           expected);
    }
    lenet__st_to_float(t, out);
    return LENET_OK;
}

/* Fills `arena` (a copy of the model's parameter arena) from the file by name. */
static lenet_status stage_params(const lenet_model *m, const lenet_st_file *f, float *arena)
{
    memcpy(arena, m->params, m->arena_numel * sizeof(float));
    for (size_t t = 0; t < m->n_params; t++) {
        lenet_status st = stage_tensor(f, m->param_names[t], &m->param_tensors[t], arena + m->param_offset[t]);
        if (st != LENET_OK)
            return st;
    }
    for (size_t i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name;
        if (!is_parameter_name(name))
            continue;
        bool known = false;
        for (size_t t = 0; t < m->n_params && !known; t++)
            known = strcmp(m->param_names[t], name) == 0;
        if (!known)
            return lenet__fail(LENET_ESHAPE, "%s: tensor \"%.60s\" is not a parameter of the model", f->path, name);
    }
    return LENET_OK;
}

/* ---- optimizer state ---- */

typedef struct staged_optimizer {
    float lr;
    unsigned long long steps;
    lenet_optimizer_state state;
    float *buffers[LENET_OPTIM_MAX_STATE]; /* staged copies of state.buffers, arena-sized */
} staged_optimizer;

static void staged_optimizer_free(staged_optimizer *so)
{
    for (int i = 0; i < LENET_OPTIM_MAX_STATE; i++)
        lenet__free_aligned(so->buffers[i]);
}

static char *optimizer_json(const lenet_optimizer *o, const lenet_optimizer_state *os)
{
    char steps[32];
    snprintf(steps, sizeof steps, "%llu", o->steps);
    cJSON *root = cJSON_CreateObject();
    cJSON *settings = root ? cJSON_AddObjectToObject(root, "settings") : NULL;
    cJSON *buffers = root ? cJSON_AddArrayToObject(root, "buffers") : NULL;
    bool ok = settings && buffers && cJSON_AddStringToObject(root, "kind", o->ops->name) &&
              add_exact(root, "lr", (double)o->lr) && cJSON_AddStringToObject(root, "steps", steps);
    for (int i = 0; ok && i < os->n_settings; i++)
        ok = add_exact(settings, os->setting_names[i], os->settings[i]);
    for (int i = 0; ok && i < os->n_buffers; i++) {
        if (!os->buffers[i])
            continue; /* not allocated yet: nothing to save */
        cJSON *name = cJSON_CreateString(os->buffer_names[i]);
        ok = name && cJSON_AddItemToArray(buffers, name);
        if (!ok)
            cJSON_Delete(name);
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

static bool json_list_has(const cJSON *list, const char *name)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        if (cJSON_IsString(item) && strcmp(item->valuestring, name) == 0)
            return true;
    }
    return false;
}

/* A copy of the optimizer's buffer (zeros if it has none yet) with the trainable slices from the file. */
static lenet_status stage_buffer(const lenet_model *m, const lenet_st_file *f, const char *buffer_name,
                                 const float *current, float *out)
{
    if (current)
        memcpy(out, current, m->arena_numel * sizeof(float));
    else
        memset(out, 0, m->arena_numel * sizeof(float));
    for (size_t t = 0; t < m->n_params; t++) {
        if (!m->param_trainable[t])
            continue;
        char name[TENSOR_NAME_SIZE];
        snprintf(name, sizeof name, "optimizer.%s.%s", buffer_name, m->param_names[t]);
        lenet_status st = stage_tensor(f, name, &m->param_tensors[t], out + m->param_offset[t]);
        if (st != LENET_OK)
            return st == LENET_ESHAPE ? refail(LENET_EFORMAT, "optimizer state: ") : st;
    }
    return LENET_OK;
}

static lenet_status stage_optimizer(lenet_optimizer *o, const lenet_st_file *f, staged_optimizer *so)
{
    const lenet_model *m = o->model;
    cJSON *root = NULL;
    lenet_status st = parse_meta_json(f, "optimizer", &root);
    if (st != LENET_OK)
        return st;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
    const cJSON *lr = cJSON_GetObjectItemCaseSensitive(root, "lr");
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(root, "settings");
    const cJSON *buffers = cJSON_GetObjectItemCaseSensitive(root, "buffers");
    uint64_t steps;
    /* lr <= FLT_MAX: converting a larger double to float is undefined behaviour, not infinity. */
    if (!cJSON_IsString(kind) || !cJSON_IsNumber(lr) || !(lr->valuedouble >= 0.0) || !(lr->valuedouble <= FLT_MAX) ||
        !json_u64_string(cJSON_GetObjectItemCaseSensitive(root, "steps"), 10, &steps) || !cJSON_IsObject(settings) ||
        !cJSON_IsArray(buffers)) {
        st = lenet__fail(LENET_EFORMAT, "%s: optimizer metadata lacks kind, lr, steps, settings or buffers", f->path);
        goto done;
    }
    if (strcmp(kind->valuestring, o->ops->name) != 0) {
        st = lenet__fail(LENET_ESTATE, "%s: holds %.40s state, the optimizer is %s", f->path, kind->valuestring,
                         o->ops->name);
        goto done;
    }
    so->lr = (float)lr->valuedouble;
    so->steps = steps;
    memset(&so->state, 0, sizeof so->state);
    if (o->ops->state) {
        st = o->ops->state(o, &so->state);
        if (st != LENET_OK)
            goto done;
    }
    const lenet_optimizer_state *os = &so->state;
    if (cJSON_GetArraySize(settings) != os->n_settings) {
        st = lenet__fail(LENET_ESTATE, "%s: the saved optimizer has %d settings, this one %d", f->path,
                         cJSON_GetArraySize(settings), os->n_settings);
        goto done;
    }
    for (int i = 0; i < os->n_settings; i++) {
        const cJSON *saved = cJSON_GetObjectItemCaseSensitive(settings, os->setting_names[i]);
        if (!cJSON_IsNumber(saved) || saved->valuedouble != os->settings[i]) {
            st = lenet__fail(LENET_ESTATE, "%s: the saved optimizer has %s %g, this one %g", f->path,
                             os->setting_names[i], cJSON_IsNumber(saved) ? saved->valuedouble : NAN, os->settings[i]);
            goto done;
        }
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, buffers)
    {
        bool known = false;
        for (int i = 0; cJSON_IsString(item) && i < os->n_buffers && !known; i++)
            known = strcmp(os->buffer_names[i], item->valuestring) == 0;
        if (!known) {
            st = lenet__fail(LENET_ESTATE, "%s: holds optimizer state %.40s that this optimizer does not keep",
                             f->path, cJSON_IsString(item) ? item->valuestring : "(not a string)");
            goto done;
        }
    }
    /* A buffer the file holds is staged; one it lacks was not allocated yet when it was saved, which only a run
     * that took no step can show: the optimizer goes back to not having it. */
    for (int i = 0; i < os->n_buffers; i++) {
        if (!json_list_has(buffers, os->buffer_names[i])) {
            if (steps > 0) {
                st = lenet__fail(LENET_EFORMAT, "%s: %llu steps were taken but the file holds no %s", f->path,
                                 (unsigned long long)steps, os->buffer_names[i]);
                goto done;
            }
            continue;
        }
        so->buffers[i] = alloc_floats(m->arena_numel);
        if (!so->buffers[i]) {
            st = lenet__oom("optimizer state");
            goto done;
        }
        st = stage_buffer(m, f, os->buffer_names[i], os->buffers[i], so->buffers[i]);
        if (st != LENET_OK)
            goto done;
    }
done:
    cJSON_Delete(root);
    return st;
}

/* ---- iterator state ---- */

static char *iterator_json(const lenet_iter_state *is)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *rng = root ? cJSON_AddArrayToObject(root, "rng") : NULL;
    bool ok = rng && cJSON_AddNumberToObject(root, "size", (double)is->size) &&
              cJSON_AddNumberToObject(root, "batch_size", is->batch_size) &&
              cJSON_AddBoolToObject(root, "shuffle", is->shuffle) &&
              cJSON_AddNumberToObject(root, "position", (double)is->position);
    for (int i = 0; ok && i < 4; i++) {
        char hex[20];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)is->rng[i]);
        cJSON *word = cJSON_CreateString(hex);
        ok = word && cJSON_AddItemToArray(rng, word);
        if (!ok)
            cJSON_Delete(word);
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

static lenet_status stage_iterator(const lenet_iter *it, const lenet_st_file *f, lenet_iter_state *is,
                                   size_t **order)
{
    cJSON *root = NULL;
    uint64_t *values = NULL;
    lenet_status st = parse_meta_json(f, "iterator", &root);
    if (st != LENET_OK)
        return st;
    double size, batch, position;
    const cJSON *shuffle = cJSON_GetObjectItemCaseSensitive(root, "shuffle");
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(root, "rng");
    bool ok = json_int(cJSON_GetObjectItemCaseSensitive(root, "size"), 0, 9007199254740992.0, &size) &&
              json_int(cJSON_GetObjectItemCaseSensitive(root, "batch_size"), 1, 2147483647.0, &batch) &&
              json_int(cJSON_GetObjectItemCaseSensitive(root, "position"), 0, 9007199254740992.0, &position) &&
              cJSON_IsBool(shuffle) && cJSON_IsArray(rng) && cJSON_GetArraySize(rng) == 4;
    for (int i = 0; ok && i < 4; i++)
        ok = json_u64_string(cJSON_GetArrayItem(rng, i), 16, &is->rng[i]);
    if (!ok) {
        st = lenet__fail(LENET_EFORMAT, "%s: iterator metadata lacks size, batch_size, shuffle, position or rng",
                         f->path);
        goto done;
    }
    is->size = (size_t)size;
    is->batch_size = (int)batch;
    is->shuffle = cJSON_IsTrue(shuffle);
    is->position = (size_t)position;
    const lenet_st_tensor *t = lenet__st_find(f, "iterator.order");
    if (!t || !lenet__st_is_index(t->dtype) || t->ndim != 1 || t->shape[0] != size) {
        st = lenet__fail(LENET_EFORMAT, "%s: no integer tensor iterator.order of %zu entries", f->path, is->size);
        goto done;
    }
    size_t values_bytes, order_bytes;
    if (!lenet__mul_overflows(is->size ? is->size : 1, sizeof *values, &values_bytes) &&
        !lenet__mul_overflows(is->size ? is->size : 1, sizeof **order, &order_bytes)) {
        values = lenet__malloc(values_bytes);
        *order = lenet__malloc(order_bytes);
    }
    if (!values || !*order) {
        st = lenet__oom("iterator order");
        goto done;
    }
    if (!lenet__st_to_u64(t, values)) {
        st = lenet__fail(LENET_EFORMAT, "%s: iterator.order has a negative entry", f->path);
        goto done;
    }
    for (size_t i = 0; i < is->size; i++) {
        if (values[i] >= is->size) {
            st = lenet__fail(LENET_EFORMAT, "%s: iterator.order entry %zu is %llu, beyond %zu", f->path, i,
                             (unsigned long long)values[i], is->size);
            goto done;
        }
        (*order)[i] = (size_t)values[i];
    }
    is->order = *order;
    st = lenet__iter_check_state(it, is);
    if (st != LENET_OK)
        st = refail(st, "%s: iterator: ", f->path);
done:
    lenet__free(values);
    cJSON_Delete(root);
    return st;
}

/* Elements of a parameter spec (a non-positive dimension counts as 0); false if the product overflows. */
static bool spec_numel(const lenet_param_spec *spec, size_t *numel)
{
    size_t n = 1;
    for (int d = 0; d < spec->ndim; d++)
        if (lenet__mul_overflows(n, spec->shape[d] > 0 ? (size_t)spec->shape[d] : 0, &n))
            return false;
    *numel = n;
    return true;
}

/* A crafted architecture could ask lenet_model_build for far more memory than the file holds (Linear(1 << 30)),
 * which build would allocate and clear.  This walks the layers as build does, without allocating: shapes through
 * infer_shape (each checked against the model's size limits, as build checks them, so that every size below is
 * computed from shapes known to fit), parameter specs through setup (whose effects on the layer build redoes),
 * and requires the parameter count to equal what the file's parameter tensors hold, which the file's size
 * bounds.  All the counting is checked arithmetic: an architecture that overflows it needs "more than" the file. */
static lenet_status check_architecture_size(lenet_model *m, const architecture *a, const lenet_st_file *f)
{
    size_t in_file = 0;
    for (size_t i = 0; i < f->n_tensors; i++)
        if (is_parameter_name(f->tensors[i].name) && lenet__add_overflows(in_file, f->tensors[i].numel, &in_file))
            return lenet__fail(LENET_EFORMAT, "%s: the parameter tensors hold more elements than memory", f->path);
    lenet_shape in = {.ndim = 3, .dim = {a->input[0], a->input[1], a->input[2]}};
    size_t in_size;
    lenet_status st = lenet__shape_check(&in, "the input", &in_size);
    if (st != LENET_OK)
        return refail(LENET_EFORMAT, "%s: architecture: ", f->path);
    size_t needed = 0;
    bool over = false; /* needed exceeds what size_t counts: more than the file in any case */
    for (size_t i = 0; i < m->n_layers && st == LENET_OK; i++) {
        lenet_layer *l = m->layers[i];
        lenet_shape out;
        size_t out_size = 0;
        st = l->ops->infer_shape(l, &in, &out);
        if (st == LENET_OK)
            st = lenet__shape_check(&out, "output", &out_size);
        if (st == LENET_OK && l->ops->setup) {
            lenet_param_spec specs[LENET_MAX_LAYER_PARAMS];
            int count = 0;
            l->in = in;
            l->out = out;
            l->in_size = in_size;
            l->out_size = out_size;
            st = l->ops->setup(l, specs, &count);
            memset(&l->in, 0, sizeof l->in);
            memset(&l->out, 0, sizeof l->out);
            l->in_size = l->out_size = 0;
            l->n_params = 0;
            for (int j = 0; st == LENET_OK && j < count && !over; j++) {
                size_t numel;
                over = !spec_numel(&specs[j], &numel) || lenet__add_overflows(needed, numel, &needed);
            }
        }
        if (st != LENET_OK)
            return refail(LENET_EFORMAT, "%s: architecture: layer %zu (%s): ", f->path, i, l->ops->name);
        in = out;
        in_size = out_size;
    }
    if (over || needed > in_file)
        return lenet__fail(LENET_EFORMAT, "%s: the architecture needs more than %zu parameters, the file holds %zu",
                           f->path, in_file, in_file);
    if (needed != in_file)
        return lenet__fail(LENET_EFORMAT, "%s: the architecture needs %zu parameters, the file holds %zu", f->path,
                           needed, in_file);
    return LENET_OK;
}

/* ---- saving ---- */

static lenet_status add_json_meta(lenet_st_writer *w, const char *key, char *json)
{
    if (!json)
        return lenet__oom("checkpoint metadata");
    lenet_status st = lenet__st_add_meta(w, key, json);
    cJSON_free(json);
    return st;
}

static lenet_status save(const lenet_model *m, const lenet_optimizer *o, const lenet_iter *it, const char *note,
                         const char *path, const char *who)
{
    if (!m || !path)
        return lenet__fail(LENET_EINVAL, "%s: %s is NULL", who, !m ? "model" : "path");
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "%s: the model is not built", who);
    if (o && o->model != m)
        return lenet__fail(LENET_EINVAL, "%s: the optimizer belongs to another model", who);
    for (size_t i = 0; i < m->n_layers; i++)
        if (!lenet__layer_is_registered(m->layers[i]))
            return lenet__fail(LENET_EUNSUPPORTED,
                               "%s: layer %zu (%s) cannot be rebuilt from a file: add its kind to lib/layers/registry.c",
                               who, i, m->layers[i]->ops->name);
    lenet_st_writer w;
    lenet_status st = lenet__st_writer_init(&w);
    if (st != LENET_OK)
        return st;
    char version[16];
    snprintf(version, sizeof version, "%d", LIBLENET_FORMAT_VERSION);
    lenet__st_add_meta(&w, "format", "pt");
    lenet__st_add_meta(&w, "liblenet_format", version);
    lenet__st_add_meta(&w, "liblenet_version", LENET_VERSION_STRING);
    st = add_json_meta(&w, "architecture", architecture_json(m));
    for (size_t t = 0; st == LENET_OK && t < m->n_params; t++)
        st = lenet__st_add_f32(&w, m->param_names[t], m->param_tensors[t].ndim, m->param_tensors[t].shape,
                               m->params + m->param_offset[t]);
    if (st == LENET_OK && o) {
        lenet_optimizer_state os = {0};
        if (o->ops->state)
            st = o->ops->state(o, &os);
        if (st == LENET_OK)
            st = add_json_meta(&w, "optimizer", optimizer_json(o, &os));
        for (int b = 0; st == LENET_OK && b < os.n_buffers; b++) {
            for (size_t t = 0; st == LENET_OK && os.buffers[b] && t < m->n_params; t++) {
                if (!m->param_trainable[t])
                    continue;
                char name[TENSOR_NAME_SIZE];
                snprintf(name, sizeof name, "optimizer.%s.%s", os.buffer_names[b], m->param_names[t]);
                st = lenet__st_add_f32(&w, name, m->param_tensors[t].ndim, m->param_tensors[t].shape,
                                       os.buffers[b] + m->param_offset[t]);
            }
        }
    }
    if (st == LENET_OK && it) {
        lenet_iter_state is;
        lenet__iter_get_state(it, &is);
        st = add_json_meta(&w, "iterator", iterator_json(&is));
        if (st == LENET_OK)
            st = lenet__st_add_index(&w, "iterator.order", is.order, is.size);
    }
    if (st == LENET_OK && note)
        st = lenet__st_add_meta(&w, "note", note);
    if (st == LENET_OK)
        st = lenet__st_commit(&w, path, who);
    lenet__st_writer_free(&w);
    return st;
}

lenet_status lenet_model_save(const lenet_model *m, const char *path)
{
    return save(m, NULL, NULL, NULL, path, "model_save");
}

lenet_status lenet_checkpoint_save(const lenet_model *m, const lenet_optimizer *o, const lenet_iter *it,
                                   const char *note, const char *path)
{
    return save(m, o, it, note, path, "checkpoint_save");
}

/* ---- loading ---- */

lenet_model *lenet_model_load(const char *path)
{
    if (!path)
        return lenet__fail_null(LENET_EINVAL, "model_load: path is NULL");
    lenet_st_file f;
    architecture a = {0};
    lenet_model *m = NULL;
    float *arena = NULL;
    lenet_status st = lenet__st_read(path, &f);
    if (st == LENET_OK)
        st = check_liblenet_file(&f);
    if (st == LENET_OK)
        st = parse_architecture(&f, &a);
    if (st != LENET_OK)
        goto fail;
    m = lenet_model_create();
    if (!m)
        goto fail;
    for (size_t i = 0; i < a.n_layers; i++) {
        lenet_layer *l = lenet__layer_create(a.layers[i].kind, a.layers[i].n_args, a.layers[i].args);
        if (!l) {
            if (lenet__last_status() != LENET_ENOMEM)
                refail(LENET_EFORMAT, "%s: architecture: layer %zu: ", path, i);
            goto fail;
        }
        if (lenet_model_add(m, l) != LENET_OK)
            goto fail;
    }
    st = check_architecture_size(m, &a, &f);
    if (st != LENET_OK)
        goto fail;
    st = lenet_model_build(m, a.input[0], a.input[1], a.input[2]);
    if (st != LENET_OK) {
        if (st != LENET_ENOMEM)
            refail(LENET_EFORMAT, "%s: architecture: ", path);
        goto fail;
    }
    arena = alloc_floats(m->arena_numel);
    if (!arena) {
        lenet__oom("model parameters");
        goto fail;
    }
    st = stage_params(m, &f, arena);
    if (st != LENET_OK) {
        if (st == LENET_ESHAPE)
            refail(LENET_EFORMAT, "the tensors do not fit the architecture: ");
        goto fail;
    }
    memcpy(m->params, arena, m->arena_numel * sizeof(float));
    lenet__free_aligned(arena);
    architecture_free(&a);
    lenet__st_close(&f);
    return m;

fail:
    name_caller("model_load");
    lenet__free_aligned(arena);
    lenet_model_free(m);
    architecture_free(&a);
    lenet__st_close(&f);
    return NULL;
}

static lenet_status load_into(lenet_model *m, lenet_optimizer *o, lenet_iter *it, const char *path, char *note,
                              size_t note_size, bool checkpoint, const char *who)
{
    if (!m || !path)
        return lenet__fail(LENET_EINVAL, "%s: %s is NULL", who, !m ? "model" : "path");
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "%s: build the model first (lenet_model_build)", who);
    if (o && o->model != m)
        return lenet__fail(LENET_EINVAL, "%s: the optimizer belongs to another model", who);
    lenet_st_file f;
    architecture a = {0};
    staged_optimizer so = {0};
    lenet_iter_state is = {0};
    size_t *order = NULL;
    const char *saved_note = NULL;
    float *arena = alloc_floats(m->arena_numel);
    lenet_status st = lenet__st_read(path, &f);
    if (st == LENET_OK && !arena)
        st = lenet__oom("model parameters");
    if (st == LENET_OK && checkpoint) {
        st = check_liblenet_file(&f);
        if (st == LENET_OK)
            st = parse_architecture(&f, &a);
        if (st == LENET_OK)
            st = compare_architecture(m, &a, path);
    }
    if (st == LENET_OK)
        st = stage_params(m, &f, arena);
    if (st == LENET_OK && o)
        st = stage_optimizer(o, &f, &so);
    if (st == LENET_OK && it)
        st = stage_iterator(it, &f, &is, &order);
    if (st == LENET_OK && note) {
        saved_note = lenet__st_meta(&f, "note");
        size_t need = (saved_note ? strlen(saved_note) : 0) + 1;
        if (need > note_size)
            st = lenet__fail(LENET_EINVAL, "%s: the note needs %zu bytes, the buffer has %zu", who, need, note_size);
    }
    if (st != LENET_OK) {
        name_caller(who);
        goto done;
    }

    /* Everything is checked: commit.  Nothing below can fail. */
    memcpy(m->params, arena, m->arena_numel * sizeof(float));
    if (o) {
        for (int i = 0; o->ops->adopt && i < so.state.n_buffers; i++) {
            o->ops->adopt(o, i, so.buffers[i]);
            so.buffers[i] = NULL;
        }
        o->lr = so.lr;
        o->steps = so.steps;
    }
    if (it)
        lenet__iter_set_state(it, &is);
    if (note)
        snprintf(note, note_size, "%s", saved_note ? saved_note : "");
done:
    lenet__free(order);
    staged_optimizer_free(&so);
    architecture_free(&a);
    lenet__free_aligned(arena);
    lenet__st_close(&f);
    return st;
}

lenet_status lenet_model_load_weights(lenet_model *m, const char *path)
{
    return load_into(m, NULL, NULL, path, NULL, 0, false, "model_load_weights");
}

lenet_status lenet_checkpoint_load(lenet_model *m, lenet_optimizer *o, lenet_iter *it, const char *path, char *note,
                                   size_t note_size)
{
    return load_into(m, o, it, path, note, note_size, true, "checkpoint_load");
}

lenet_status lenet_checkpoint_input_shape(const char *path, int *channels, int *height, int *width)
{
    if (!path || !channels || !height || !width)
        return lenet__fail(LENET_EINVAL, "checkpoint_input_shape: %s is NULL", !path ? "path" : "an output");
    lenet_st_file f;
    architecture a = {0};
    lenet_status st = lenet__st_read(path, &f);
    if (st == LENET_OK)
        st = check_liblenet_file(&f);
    if (st == LENET_OK)
        st = parse_architecture(&f, &a);
    if (st == LENET_OK) {
        *channels = a.input[0];
        *height = a.input[1];
        *width = a.input[2];
    } else {
        name_caller("checkpoint_input_shape");
    }
    architecture_free(&a);
    lenet__st_close(&f);
    return st;
}
