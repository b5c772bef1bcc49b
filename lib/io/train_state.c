/* Training state in a checkpoint: the optimizer's kind, learning rate, step count, hyperparameters and buffers,
 * and the training iterator's position, permutation and generator state. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/internal.h"

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

/* ---- optimizer state ---- */

void lenet__ckpt_optimizer_free(lenet_ckpt_optimizer *so)
{
    for (int i = 0; i < LENET_OPTIM_MAX_STATE; i++)
        lenet__free_aligned(so->buffers[i]);
}

static char *optimizer_json(const lenet_optimizer *o, const lenet_optimizer_state *os)
{
    char steps[32], epochs[32];
    snprintf(steps, sizeof steps, "%llu", o->steps);
    snprintf(epochs, sizeof epochs, "%llu", o->epochs);
    cJSON *root = cJSON_CreateObject();
    cJSON *settings = root ? cJSON_AddObjectToObject(root, "settings") : NULL;
    cJSON *buffers = root ? cJSON_AddArrayToObject(root, "buffers") : NULL;
    bool ok = settings && buffers && cJSON_AddStringToObject(root, "kind", o->ops->name) &&
              lenet__ckpt_add_exact(root, "lr", (double)o->lr) && cJSON_AddStringToObject(root, "steps", steps) &&
              cJSON_AddStringToObject(root, "epochs", epochs);
    for (int i = 0; ok && i < os->n_settings; i++)
        ok = lenet__ckpt_add_exact(settings, os->setting_names[i], os->settings[i]);
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

lenet_status lenet__ckpt_write_optimizer(lenet_st_writer *w, const lenet_optimizer *o)
{
    const lenet_model *m = o->model;
    lenet_optimizer_state os = {0};
    lenet_status st = LENET_OK;
    if (o->ops->state)
        st = o->ops->state(o, &os);
    if (st == LENET_OK)
        st = lenet__ckpt_add_json_meta(w, "optimizer", optimizer_json(o, &os));
    for (int b = 0; st == LENET_OK && b < os.n_buffers; b++) {
        for (size_t t = 0; st == LENET_OK && os.buffers[b] && t < m->n_params; t++) {
            if (!m->param_trainable[t])
                continue;
            char name[LENET_CKPT_TENSOR_NAME_SIZE];
            snprintf(name, sizeof name, "optimizer.%s.%s", os.buffer_names[b], m->param_names[t]);
            st = lenet__st_add_f32(w, name, m->param_tensors[t].ndim, m->param_tensors[t].shape,
                                   os.buffers[b] + m->param_offset[t]);
        }
    }
    return st;
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
        char name[LENET_CKPT_TENSOR_NAME_SIZE];
        snprintf(name, sizeof name, "optimizer.%s.%s", buffer_name, m->param_names[t]);
        lenet_status st = lenet__ckpt_stage_tensor(f, name, &m->param_tensors[t], out + m->param_offset[t]);
        if (st != LENET_OK)
            return st == LENET_ESHAPE ? lenet__ckpt_refail(LENET_EFORMAT, "optimizer state: ") : st;
    }
    return LENET_OK;
}

lenet_status lenet__ckpt_stage_optimizer(lenet_optimizer *o, const lenet_st_file *f, lenet_ckpt_optimizer *so)
{
    const lenet_model *m = o->model;
    cJSON *root = NULL;
    lenet_status st = lenet__ckpt_meta_json(f, "optimizer", &root);
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
    /* Files from before epochs were counted have none: they carry no schedule either, so 0 is what they mean. */
    const cJSON *epochs = cJSON_GetObjectItemCaseSensitive(root, "epochs");
    uint64_t epoch_count = 0;
    if (epochs && !json_u64_string(epochs, 10, &epoch_count)) {
        st = lenet__fail(LENET_EFORMAT, "%s: the optimizer's epoch count is not a decimal string", f->path);
        goto done;
    }
    so->lr = (float)lr->valuedouble;
    so->steps = steps;
    so->epochs = epoch_count;
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
        so->buffers[i] = lenet__ckpt_floats(m->arena_numel);
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

/* ---- the model's random stream (Dropout masks): the seed of its init and the training forwards since ---- */

lenet_status lenet__ckpt_write_stream(lenet_st_writer *w, const lenet_model *m)
{
    char seed[32], forwards[32];
    snprintf(seed, sizeof seed, "%llx", (unsigned long long)m->seed);
    snprintf(forwards, sizeof forwards, "%llu", (unsigned long long)m->step);
    cJSON *root = cJSON_CreateObject();
    bool ok = root && cJSON_AddStringToObject(root, "seed", seed) && cJSON_AddStringToObject(root, "forwards", forwards);
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return lenet__ckpt_add_json_meta(w, "random_stream", json);
}

lenet_status lenet__ckpt_stage_stream(const lenet_st_file *f, bool *present, uint64_t *seed, uint64_t *forwards)
{
    *present = lenet__st_meta(f, "random_stream") != NULL;
    if (!*present)
        return LENET_OK;
    cJSON *root = NULL;
    lenet_status st = lenet__ckpt_meta_json(f, "random_stream", &root);
    if (st != LENET_OK)
        return st;
    if (!json_u64_string(cJSON_GetObjectItemCaseSensitive(root, "seed"), 16, seed) ||
        !json_u64_string(cJSON_GetObjectItemCaseSensitive(root, "forwards"), 10, forwards))
        st = lenet__fail(LENET_EFORMAT, "%s: random_stream lacks a hexadecimal seed or a decimal count of forwards",
                         f->path);
    cJSON_Delete(root);
    return st;
}

lenet_status lenet__ckpt_write_iterator(lenet_st_writer *w, const lenet_iter *it)
{
    lenet_iter_state is;
    lenet__iter_get_state(it, &is);
    lenet_status st = lenet__ckpt_add_json_meta(w, "iterator", iterator_json(&is));
    if (st == LENET_OK)
        st = lenet__st_add_index(w, "iterator.order", is.order, is.size);
    return st;
}

lenet_status lenet__ckpt_stage_iterator(const lenet_iter *it, const lenet_st_file *f, lenet_iter_state *is,
                                        size_t **order)
{
    cJSON *root = NULL;
    uint64_t *values = NULL;
    lenet_status st = lenet__ckpt_meta_json(f, "iterator", &root);
    if (st != LENET_OK)
        return st;
    double size, batch, position;
    const cJSON *shuffle = cJSON_GetObjectItemCaseSensitive(root, "shuffle");
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(root, "rng");
    bool ok = lenet__ckpt_json_int(cJSON_GetObjectItemCaseSensitive(root, "size"), 0, 9007199254740992.0, &size) &&
              lenet__ckpt_json_int(cJSON_GetObjectItemCaseSensitive(root, "batch_size"), 1, 2147483647.0, &batch) &&
              lenet__ckpt_json_int(cJSON_GetObjectItemCaseSensitive(root, "position"), 0, 9007199254740992.0,
                                   &position) &&
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
        st = lenet__ckpt_refail(st, "%s: iterator: ", f->path);
done:
    lenet__free(values);
    cJSON_Delete(root);
    return st;
}
