/* The architecture a checkpoint records: the input shape and one {"kind", "args"} per layer.  Parsed without
 * trusting it, compared with a model that is to resume from it, and sized before a model is built from it. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/internal.h"
#include "layers/registry.h"

#define MAX_INPUT_SIDE 65536
#define MAX_LAYERS 65536

void lenet__ckpt_arch_free(lenet_ckpt_arch *a)
{
    if (a->root)
        cJSON_Delete(a->root);
    lenet__free(a->layers);
    memset(a, 0, sizeof *a);
}

lenet_status lenet__ckpt_arch_parse(const lenet_st_file *f, lenet_ckpt_arch *a)
{
    memset(a, 0, sizeof *a);
    lenet_status st = lenet__ckpt_meta_json(f, "architecture", &a->root);
    if (st != LENET_OK)
        return st;
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(a->root, "input");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(a->root, "layers");
    if (!cJSON_IsArray(input) || cJSON_GetArraySize(input) != 3)
        return lenet__fail(LENET_EFORMAT, "%s: architecture: input must be [channels, height, width]", f->path);
    for (int i = 0; i < 3; i++) {
        double v;
        if (!lenet__ckpt_json_int(cJSON_GetArrayItem(input, i), 1, MAX_INPUT_SIDE, &v))
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
        lenet_ckpt_arch_layer *al = &a->layers[a->n_layers];
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

char *lenet__ckpt_arch_json(const lenet_model *m)
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
            if (!lenet__ckpt_add_exact(args, NULL, l->args[j]))
                goto fail;
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
fail:
    cJSON_Delete(root);
    return NULL;
}

lenet_status lenet__ckpt_arch_add_layers(const lenet_ckpt_arch *a, lenet_model *m, const char *path)
{
    for (size_t i = 0; i < a->n_layers; i++) {
        lenet_layer *l = lenet__layer_create(a->layers[i].kind, a->layers[i].n_args, a->layers[i].args);
        if (!l) {
            lenet_status st = lenet__last_status();
            return st == LENET_ENOMEM ? st : lenet__ckpt_refail(LENET_EFORMAT, "%s: architecture: layer %zu: ", path, i);
        }
        lenet_status st = lenet_model_add(m, l);
        if (st != LENET_OK)
            return st;
    }
    return LENET_OK;
}

/* A checkpoint resumes only into the same network: same kinds, arguments and input. */
lenet_status lenet__ckpt_arch_compare(const lenet_model *m, const lenet_ckpt_arch *a, const char *path)
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
lenet_status lenet__ckpt_arch_check_size(lenet_model *m, const lenet_ckpt_arch *a, const lenet_st_file *f)
{
    size_t in_file = 0;
    for (size_t i = 0; i < f->n_tensors; i++)
        if (lenet__ckpt_is_model_tensor(f->tensors[i].name) &&
            lenet__add_overflows(in_file, f->tensors[i].numel, &in_file))
            return lenet__fail(LENET_EFORMAT, "%s: the parameter tensors hold more elements than memory", f->path);
    lenet_shape in = {.ndim = 3, .dim = {a->input[0], a->input[1], a->input[2]}};
    size_t in_size;
    lenet_status st = lenet__shape_check(&in, "the input", &in_size);
    if (st != LENET_OK)
        return lenet__ckpt_refail(LENET_EFORMAT, "%s: architecture: ", f->path);
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
            return lenet__ckpt_refail(LENET_EFORMAT, "%s: architecture: layer %zu (%s): ", f->path, i, l->ops->name);
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
