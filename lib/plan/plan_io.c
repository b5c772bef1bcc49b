/* Plan files: a plan's folded network written as lenet_model_save() writes a model (so lenet_model_load() reads a
 * plan file as the network it runs), the plan's own metadata, and what its backend adds (an int8 plan's
 * quantization, plan_int8.c).  Loading builds the network from the file, makes the float plan of it again, and lets
 * the recorded kind's backend take it over; nothing in the file is trusted. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "io/internal.h"
#include "plan/internal.h"

/* Version of the "liblenet_plan" metadata and of what the backends add; readers refuse newer ones. */
#define PLAN_FORMAT_VERSION 1

static const char *kind_of(const lenet_plan *p)
{
    return p->backend->file_kind ? p->backend->file_kind : "float";
}

static char *plan_json(const lenet_plan *p)
{
    cJSON *root = cJSON_CreateObject();
    char *text = NULL;
    if (root && cJSON_AddNumberToObject(root, "version", PLAN_FORMAT_VERSION) &&
        cJSON_AddStringToObject(root, "kind", kind_of(p)) && cJSON_AddNumberToObject(root, "max_batch", p->max_batch))
        text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

lenet_status lenet_plan_save(const lenet_plan *p, const char *path)
{
    if (!p || !path)
        return lenet__fail(LENET_EINVAL, "plan_save: %s is NULL", !p ? "plan" : "path");
    lenet_st_writer w;
    lenet_status st = lenet__st_writer_init(&w);
    if (st != LENET_OK)
        return st;
    st = lenet__ckpt_add_header(&w, p->net);
    if (st == LENET_OK)
        st = lenet__ckpt_add_json_meta(&w, "liblenet_plan", plan_json(p));
    if (st == LENET_OK)
        st = lenet__ckpt_write_model(&w, p->net);
    if (st == LENET_OK && p->backend->save)
        st = p->backend->save(p, &w);
    if (st == LENET_OK)
        st = lenet__st_commit(&w, path, "plan_save");
    else if (strncmp(lenet_last_error(), "plan_save", 9) != 0)
        lenet__error_prefix("plan_save: ");
    lenet__st_writer_free(&w);
    return st;
}

/* The plan metadata: version, kind and max_batch. */
static lenet_status read_plan_meta(const lenet_st_file *f, char *kind, size_t kind_size, int *max_batch)
{
    cJSON *root = NULL;
    lenet_status st = lenet__ckpt_meta_json(f, "liblenet_plan", &root);
    if (st != LENET_OK)
        return st; /* EFORMAT: "no \"liblenet_plan\" metadata" says it is no plan file */
    double version, batch;
    const cJSON *kind_json = cJSON_GetObjectItemCaseSensitive(root, "kind");
    if (!lenet__ckpt_json_int(cJSON_GetObjectItemCaseSensitive(root, "version"), 1, 1e9, &version))
        st = lenet__fail(LENET_EFORMAT, "%s: plan metadata: version is not a positive integer", f->path);
    else if (version > PLAN_FORMAT_VERSION)
        st = lenet__fail(LENET_EUNSUPPORTED, "%s: plan format version %.0f is newer than this liblenet's (%d)",
                         f->path, version, PLAN_FORMAT_VERSION);
    else if (!cJSON_IsString(kind_json) || strlen(kind_json->valuestring) >= kind_size)
        st = lenet__fail(LENET_EFORMAT, "%s: plan metadata: kind is not a short string", f->path);
    else if (!lenet__ckpt_json_int(cJSON_GetObjectItemCaseSensitive(root, "max_batch"), 1, INT_MAX, &batch))
        st = lenet__fail(LENET_EFORMAT, "%s: plan metadata: max_batch is not an integer in [1, %d]", f->path, INT_MAX);
    if (st == LENET_OK) {
        snprintf(kind, kind_size, "%s", kind_json->valuestring);
        *max_batch = (int)batch;
    }
    cJSON_Delete(root);
    return st;
}

/* The network a plan file holds, built and filled. */
static lenet_status read_network(const lenet_st_file *f, lenet_model **out)
{
    lenet_ckpt_arch a = {0};
    lenet_ckpt_tensors staged = {0};
    lenet_model *m = NULL;
    lenet_status st = lenet__ckpt_arch_parse(f, &a);
    if (st == LENET_OK && !(m = lenet_model_create()))
        st = LENET_ENOMEM;
    if (st == LENET_OK)
        st = lenet__ckpt_arch_add_layers(&a, m, f->path);
    if (st == LENET_OK)
        st = lenet__ckpt_arch_check_size(m, &a, f);
    if (st == LENET_OK && (st = lenet_model_build(m, a.input[0], a.input[1], a.input[2])) != LENET_OK &&
        st != LENET_ENOMEM)
        st = lenet__ckpt_refail(LENET_EFORMAT, "%s: architecture: ", f->path);
    if (st == LENET_OK && (st = lenet__ckpt_stage_model(m, f, &staged)) == LENET_ESHAPE)
        st = lenet__ckpt_refail(LENET_EFORMAT, "the tensors do not fit the architecture: ");
    if (st == LENET_OK) {
        lenet__ckpt_commit_model(m, &staged);
        *out = m;
        m = NULL;
    }
    lenet_model_free(m);
    lenet__ckpt_tensors_free(&staged);
    lenet__ckpt_arch_free(&a);
    return st;
}

lenet_plan *lenet_plan_load(const char *path)
{
    if (!path)
        return lenet__fail_null(LENET_EINVAL, "plan_load: path is NULL");
    lenet_st_file f;
    lenet_model *net = NULL;
    lenet_plan *p = NULL;
    char kind[16];
    int max_batch = 0;
    lenet_status st = lenet__st_read(path, &f);
    if (st == LENET_OK) {
        const char *version = lenet__st_meta(&f, "liblenet_format");
        if (!version || !lenet__st_meta(&f, "data_crc32"))
            st = lenet__fail(LENET_EFORMAT, "%s: not a liblenet plan file (no liblenet_format or data_crc32 metadata)",
                             path);
        else if (strcmp(version, "1") != 0)
            st = lenet__fail(LENET_EUNSUPPORTED, "%s: liblenet format version \"%.16s\" is not supported (this is %d)",
                             path, version, LENET_CKPT_FORMAT_VERSION);
    }
    if (st == LENET_OK)
        st = read_plan_meta(&f, kind, sizeof kind, &max_batch);
    if (st == LENET_OK && strcmp(kind, "float") != 0 && strcmp(kind, "int8") != 0)
        st = lenet__fail(LENET_EUNSUPPORTED, "%s: plan kind \"%s\" is not one this liblenet runs (float, int8)", path,
                         kind);
    for (size_t i = 0; st == LENET_OK && strcmp(kind, "float") == 0 && i < f.n_tensors; i++)
        if (!lenet__ckpt_is_model_tensor(f.tensors[i].name))
            st = lenet__fail(LENET_EFORMAT, "%s: a float plan holds only its network, not \"%.60s\"", path,
                             f.tensors[i].name);
    if (st == LENET_OK)
        st = read_network(&f, &net);
    if (st == LENET_OK && !(p = lenet_plan_create(net, max_batch))) {
        st = lenet__last_status();
        if (st != LENET_ENOMEM)
            st = lenet__ckpt_refail(LENET_EFORMAT, "%s: the network cannot be planned: ", path);
    }
    if (st == LENET_OK && strcmp(kind, "int8") == 0)
        st = lenet__plan_int8_load(p, &f);
    lenet_model_free(net);
    lenet__st_close(&f);
    if (st == LENET_OK)
        return p;
    lenet_plan_free(p);
    if (strncmp(lenet_last_error(), "plan_load", 9) != 0)
        lenet__error_prefix("plan_load: ");
    return NULL;
}
