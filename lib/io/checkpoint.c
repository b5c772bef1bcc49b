/* Models, optimizer state and iterator state to and from safetensors files: the entry points, and the helpers
 * that arch.c, tensors.c and train_state.c share.  Loading stages everything in scratch memory and checks it all
 * before the first byte of a model, optimizer or iterator changes. */
#include <cjson/cJSON.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "io/internal.h"
#include "layers/registry.h"
#include "lenet/io.h"
#include "lenet/version.h"

/* ---- shared helpers ---- */

float *lenet__ckpt_floats(size_t count)
{
    size_t bytes;
    if (lenet__mul_overflows(count ? count : 1, sizeof(float), &bytes))
        return NULL;
    return lenet__malloc_aligned(bytes);
}

lenet_status lenet__ckpt_refail(lenet_status status, const char *fmt, ...)
{
    char prefix[256], cause[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    snprintf(cause, sizeof cause, "%s", lenet_last_error());
    return lenet__fail(status, "%s%s", prefix, cause);
}

bool lenet__ckpt_json_int(const cJSON *item, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double v = item->valuedouble;
    if (!(v >= lo && v <= hi) || v != floor(v))
        return false;
    *out = v;
    return true;
}

lenet_status lenet__ckpt_meta_json(const lenet_st_file *f, const char *key, cJSON **out)
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

bool lenet__ckpt_add_exact(cJSON *to, const char *key, double v)
{
    cJSON *number = exact_number(v);
    bool ok = number && (key ? cJSON_AddItemToObject(to, key, number) : cJSON_AddItemToArray(to, number));
    if (!ok)
        cJSON_Delete(number);
    return ok;
}

lenet_status lenet__ckpt_add_json_meta(lenet_st_writer *w, const char *key, char *json)
{
    if (!json)
        return lenet__oom("checkpoint metadata");
    lenet_status st = lenet__st_add_meta(w, key, json);
    cJSON_free(json);
    return st;
}

bool lenet__ckpt_is_model_tensor(const char *name)
{
    return name[0] >= '0' && name[0] <= '9';
}

/* Prefixes the current message with "who: " unless it already starts so. */
static void name_caller(const char *who)
{
    if (strncmp(lenet_last_error(), who, strlen(who)) != 0)
        lenet__error_prefix("%s: ", who);
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
                           f->path, version, LENET_CKPT_FORMAT_VERSION);
    if (!lenet__st_meta(f, "data_crc32"))
        return lenet__fail(LENET_EFORMAT, "%s: no data_crc32 metadata", f->path);
    return LENET_OK;
}

/* ---- saving ---- */

lenet_status lenet__ckpt_add_header(lenet_st_writer *w, const lenet_model *m)
{
    char version[16];
    snprintf(version, sizeof version, "%d", LENET_CKPT_FORMAT_VERSION);
    lenet__st_add_meta(w, "format", "pt");
    lenet__st_add_meta(w, "liblenet_format", version);
    lenet__st_add_meta(w, "liblenet_version", LENET_VERSION_STRING);
    return lenet__ckpt_add_json_meta(w, "architecture", lenet__ckpt_arch_json(m));
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
    st = lenet__ckpt_add_header(&w, m);
    if (st == LENET_OK)
        st = lenet__ckpt_write_model(&w, m);
    if (st == LENET_OK && o)
        st = lenet__ckpt_write_optimizer(&w, o);
    if (st == LENET_OK && (o || it))
        st = lenet__ckpt_write_stream(&w, m);
    if (st == LENET_OK && it)
        st = lenet__ckpt_write_iterator(&w, it);
    if (st == LENET_OK && note)
        st = lenet__st_add_meta(&w, "note", note);
    if (st == LENET_OK)
        st = lenet__st_commit(&w, path, who);
    else
        name_caller(who);
    lenet__st_writer_free(&w);
    return st;
}

/* With a communicator (lenet/mpi.h), rank 0 writes and every process returns rank 0's status. */
static lenet_status save_on_rank0(const lenet_model *m, const lenet_optimizer *o, const lenet_iter *it,
                                  const char *note, const char *path, const char *who)
{
    lenet_status st = lenet__model_rank(m) == 0 ? save(m, o, it, note, path, who) : LENET_OK;
    return lenet__model_agree(m, st);
}

lenet_status lenet_model_save(const lenet_model *m, const char *path)
{
    return save_on_rank0(m, NULL, NULL, NULL, path, "model_save");
}

lenet_status lenet_checkpoint_save(const lenet_model *m, const lenet_optimizer *o, const lenet_iter *it,
                                   const char *note, const char *path)
{
    return save_on_rank0(m, o, it, note, path, "checkpoint_save");
}

/* ---- loading ---- */

lenet_model *lenet_model_load(const char *path)
{
    if (!path)
        return lenet__fail_null(LENET_EINVAL, "model_load: path is NULL");
    lenet_st_file f;
    lenet_ckpt_arch a = {0};
    lenet_model *m = NULL;
    lenet_ckpt_tensors staged = {0};
    lenet_status st = lenet__st_read(path, &f);
    if (st == LENET_OK)
        st = check_liblenet_file(&f);
    if (st == LENET_OK)
        st = lenet__ckpt_arch_parse(&f, &a);
    if (st != LENET_OK)
        goto fail;
    m = lenet_model_create();
    if (!m)
        goto fail;
    st = lenet__ckpt_arch_add_layers(&a, m, path);
    if (st == LENET_OK)
        st = lenet__ckpt_arch_check_size(m, &a, &f);
    if (st != LENET_OK)
        goto fail;
    st = lenet_model_build(m, a.input[0], a.input[1], a.input[2]);
    if (st != LENET_OK) {
        if (st != LENET_ENOMEM)
            lenet__ckpt_refail(LENET_EFORMAT, "%s: architecture: ", path);
        goto fail;
    }
    st = lenet__ckpt_stage_model(m, &f, &staged);
    if (st != LENET_OK) {
        if (st == LENET_ESHAPE)
            lenet__ckpt_refail(LENET_EFORMAT, "the tensors do not fit the architecture: ");
        goto fail;
    }
    lenet__ckpt_commit_model(m, &staged);
    lenet__ckpt_tensors_free(&staged);
    lenet__ckpt_arch_free(&a);
    lenet__st_close(&f);
    return m;

fail:
    name_caller("model_load");
    lenet__ckpt_tensors_free(&staged);
    lenet_model_free(m);
    lenet__ckpt_arch_free(&a);
    lenet__st_close(&f);
    return NULL;
}

static lenet_status load_into(lenet_model *m, lenet_optimizer *o, lenet_iter *it, const char *path, char *note,
                              size_t note_size, bool checkpoint, const char *who)
{
    /* With a communicator (lenet/mpi.h) every process loads, and the processes agree on the outcome before any
     * commits, so either all of them change or none. */
    if (!m || !path)
        return lenet__model_agree(m, lenet__fail(LENET_EINVAL, "%s: %s is NULL", who, !m ? "model" : "path"));
    if (!m->built)
        return lenet__model_agree(m, lenet__fail(LENET_ESTATE, "%s: build the model first (lenet_model_build)", who));
    if (o && o->model != m)
        return lenet__model_agree(m, lenet__fail(LENET_EINVAL, "%s: the optimizer belongs to another model", who));
    lenet_st_file f;
    lenet_ckpt_arch a = {0};
    lenet_ckpt_optimizer so = {0};
    lenet_iter_state is = {0};
    size_t *order = NULL;
    const char *saved_note = NULL;
    lenet_ckpt_tensors staged = {0};
    lenet_status st = lenet__st_read(path, &f);
    if (st == LENET_OK && checkpoint) {
        st = check_liblenet_file(&f);
        if (st == LENET_OK)
            st = lenet__ckpt_arch_parse(&f, &a);
        if (st == LENET_OK)
            st = lenet__ckpt_arch_compare(m, &a, path);
    }
    if (st == LENET_OK)
        st = lenet__ckpt_stage_model(m, &f, &staged);
    if (st == LENET_OK && o)
        st = lenet__ckpt_stage_optimizer(o, &f, &so);
    if (st == LENET_OK && it)
        st = lenet__ckpt_stage_iterator(it, &f, &is, &order);
    bool stream = false;
    uint64_t stream_seed = 0, stream_forwards = 0;
    if (st == LENET_OK && checkpoint)
        st = lenet__ckpt_stage_stream(&f, &stream, &stream_seed, &stream_forwards);
    if (st == LENET_OK && note) {
        saved_note = lenet__st_meta(&f, "note");
        size_t need = (saved_note ? strlen(saved_note) : 0) + 1;
        if (need > note_size)
            st = lenet__fail(LENET_EINVAL, "%s: the note needs %zu bytes, the buffer has %zu", who, need, note_size);
    }
    if (st != LENET_OK)
        name_caller(who);
    if ((st = lenet__model_agree(m, st)) != LENET_OK)
        goto done;

    /* Everything is checked: commit.  Nothing below can fail. */
    lenet__ckpt_commit_model(m, &staged);
    if (o) {
        for (int i = 0; o->ops->adopt && i < so.state.n_buffers; i++) {
            o->ops->adopt(o, i, so.buffers[i]);
            so.buffers[i] = NULL;
        }
        o->lr = so.lr;
        o->steps = so.steps;
        o->epochs = so.epochs;
    }
    if (stream) {
        m->seed = stream_seed;
        m->step = stream_forwards;
    }
    if (it)
        lenet__iter_set_state(it, &is);
    if (note)
        snprintf(note, note_size, "%s", saved_note ? saved_note : "");
done:
    lenet__free(order);
    lenet__ckpt_optimizer_free(&so);
    lenet__ckpt_arch_free(&a);
    lenet__ckpt_tensors_free(&staged);
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
    lenet_ckpt_arch a = {0};
    lenet_status st = lenet__st_read(path, &f);
    if (st == LENET_OK)
        st = check_liblenet_file(&f);
    if (st == LENET_OK)
        st = lenet__ckpt_arch_parse(&f, &a);
    if (st == LENET_OK) {
        *channels = a.input[0];
        *height = a.input[1];
        *width = a.input[2];
    } else {
        name_caller("checkpoint_input_shape");
    }
    lenet__ckpt_arch_free(&a);
    lenet__st_close(&f);
    return st;
}
