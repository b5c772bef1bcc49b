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
            if (st == LENET_ENOMEM)
                return st;
            return lenet__ckpt_refail(LENET_EFORMAT, "%s: architecture: layer %zu: ", path, i);
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

/* A crafted architecture could ask lenet_model_build for far more memory than the file holds (Linear(1 << 20)
 * after 256 features: a gigabyte), which build would allocate and clear.  The model's planning walk, the one build
 * runs, finds every layer's shapes and tensors without allocating them and refuses a network beyond the model's
 * size limits; the parameters and buffers it plans must then hold exactly as many elements as the file's model
 * tensors, which the file's size bounds. */
lenet_status lenet__ckpt_arch_check_size(lenet_model *m, const lenet_ckpt_arch *a, const lenet_st_file *f)
{
    size_t in_file = 0;
    for (size_t i = 0; i < f->n_tensors; i++)
        if (lenet__ckpt_is_model_tensor(f->tensors[i].name) &&
            lenet__add_overflows(in_file, f->tensors[i].numel, &in_file))
            return lenet__fail(LENET_EFORMAT, "%s: the model tensors hold more elements than memory", f->path);
    lenet_shape in = {.ndim = 3, .dim = {a->input[0], a->input[1], a->input[2]}};
    lenet_model_plan plan;
    lenet_status st = lenet__model_plan(m, in, &plan);
    if (st != LENET_OK)
        return st == LENET_ENOMEM ? st : lenet__ckpt_refail(LENET_EFORMAT, "%s: architecture: ", f->path);
    size_t needed;
    bool over = lenet__add_overflows(plan.param_elements, plan.buffer_elements, &needed);
    lenet__model_plan_free(&plan);
    lenet__model_forget_shapes(m); /* build plans again */
    if (over || needed != in_file)
        return lenet__fail(LENET_EFORMAT, "%s: the architecture needs %s%zu parameter and buffer elements, the file's "
                           "tensors hold %zu", f->path, over ? "more than " : "", over ? SIZE_MAX : needed, in_file);
    return LENET_OK;
}
