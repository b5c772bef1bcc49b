/* The model's tensors in a file: staged by name into scratch copies of the arenas, checked against the model's
 * shapes, and written under their state_dict names. */
#include <stdio.h>
#include <string.h>

#include "io/internal.h"

static void format_shape_u64(int ndim, const uint64_t *shape, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

lenet_status lenet__ckpt_stage_tensor(const lenet_st_file *f, const char *name, const lenet_tensor *want, float *out)
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

lenet_status lenet__ckpt_stage_model(const lenet_model *m, const lenet_st_file *f, float *params)
{
    memcpy(params, m->params, m->arena_numel * sizeof(float));
    for (size_t t = 0; t < m->n_params; t++) {
        lenet_status st =
            lenet__ckpt_stage_tensor(f, m->param_names[t], &m->param_tensors[t], params + m->param_offset[t]);
        if (st != LENET_OK)
            return st;
    }
    for (size_t i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name;
        if (!lenet__ckpt_is_model_tensor(name))
            continue;
        bool known = false;
        for (size_t t = 0; t < m->n_params && !known; t++)
            known = strcmp(m->param_names[t], name) == 0;
        if (!known)
            return lenet__fail(LENET_ESHAPE, "%s: tensor \"%.60s\" is not a parameter of the model", f->path, name);
    }
    return LENET_OK;
}

lenet_status lenet__ckpt_write_model(lenet_st_writer *w, const lenet_model *m)
{
    lenet_status st = LENET_OK;
    for (size_t t = 0; st == LENET_OK && t < m->n_params; t++)
        st = lenet__st_add_f32(w, m->param_names[t], m->param_tensors[t].ndim, m->param_tensors[t].shape,
                               m->params + m->param_offset[t]);
    return st;
}
