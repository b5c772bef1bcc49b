/* The model's tensors in a file: parameters and buffers, written under their state_dict names and staged by
 * name into scratch copies of the model's arenas, every shape checked against the model's.
 *
 * Buffers PyTorch keeps as int64 (BatchNorm's num_batches_tracked) are float counts in memory, exact up to 2^24.
 * They are written as I64, a one-element one as a 0-dimensional tensor as in PyTorch's state_dict; they are read
 * from an integer tensor (I64 as PyTorch writes it, or I32, U32, U64) or from a float one holding integers, every
 * value in [0, 2^53], and become the nearest float (exact up to 2^24).  An integer tensor is never read into a
 * float buffer or a parameter. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/internal.h"

/* The largest count an int64 buffer may hold in a file: beyond it a double, hence a JSON reader, is not exact. */
#define MAX_COUNT 9007199254740992.0 /* 2^53 */

static void format_shape_u64(int ndim, const uint64_t *shape, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* The file's tensor has the model tensor's shape.  A scalar ([]) and a one-element vector ([1]) count as the
 * same shape: PyTorch's num_batches_tracked is the first, the model holds it as the second (and PyTorch's
 * load_state_dict accepts [1] for a scalar too). */
static bool same_shape(const lenet_st_tensor *t, const lenet_tensor *want)
{
    if (t->ndim == 0 && want->numel == 1)
        return true;
    bool same = t->ndim == want->ndim;
    for (int d = 0; same && d < t->ndim; d++)
        same = t->shape[d] == (uint64_t)want->shape[d];
    return same;
}

/* The tensor called `name` if it exists and has `want`'s shape; otherwise NULL with ESHAPE set. */
static const lenet_st_tensor *find_shaped(const lenet_st_file *f, const char *name, const lenet_tensor *want,
                                          const char *missing_hint)
{
    const lenet_st_tensor *t = lenet__st_find(f, name);
    if (!t) {
        lenet__fail(LENET_ESHAPE, "%s: no tensor \"%s\"%s", f->path, name, missing_hint);
        return NULL;
    }
    if (!same_shape(t, want)) {
        char got[128], expected[128];
        format_shape_u64(t->ndim, t->shape, got, sizeof got);
        lenet__shape_str(want->ndim, want->shape, expected, sizeof expected);
        lenet__fail(LENET_ESHAPE, "%s: tensor \"%s\" is %s in the file, %s in the model", f->path, name, got,
                    expected);
        return NULL;
    }
    return t;
}

static lenet_status stage_floats(const lenet_st_file *f, const lenet_st_tensor *t, const char *name, float *out)
{
    if (!lenet__st_is_float(t->dtype))
        return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" has dtype %s; F32, F64, F16 or BF16 expected", f->path,
                           name, lenet__st_dtype_name(t->dtype));
    lenet__st_to_float(t, out);
    return LENET_OK;
}

lenet_status lenet__ckpt_stage_tensor(const lenet_st_file *f, const char *name, const lenet_tensor *want, float *out)
{
    const lenet_st_tensor *t = find_shaped(f, name, want, "");
    return t ? stage_floats(f, t, name, out) : LENET_ESHAPE;
}

/* An int64 buffer: counts from an integer tensor, or from a float one whose values are integers. */
static lenet_status stage_counts(const lenet_st_file *f, const lenet_st_tensor *t, const char *name, float *out)
{
    if (lenet__st_is_float(t->dtype)) {
        for (size_t i = 0; i < t->numel; i++) {
            double v = lenet__st_float_at(t, i); /* checked before it is rounded to float */
            if (!(v >= 0.0 && v <= MAX_COUNT) || v != floor(v))
                return lenet__fail(LENET_EFORMAT,
                                   "%s: tensor \"%s\" holds %.17g, not a count (an integer in [0, 2^53])", f->path,
                                   name, v);
            out[i] = (float)v; /* the nearest float: exact up to 2^24 */
        }
        return LENET_OK;
    }
    if (!lenet__st_is_index(t->dtype))
        return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" has dtype %s; I64 (or another integer or float dtype) "
                           "expected for a count", f->path, name, lenet__st_dtype_name(t->dtype));
    for (size_t i = 0; i < t->numel; i++) {
        uint64_t v;
        if (!lenet__st_index_at(t, i, &v))
            return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" holds a negative count", f->path, name);
        if (v > (uint64_t)MAX_COUNT)
            return lenet__fail(LENET_EFORMAT, "%s: tensor \"%s\" holds %llu, more than the 2^53 a count may be",
                               f->path, name, (unsigned long long)v);
        out[i] = (float)v; /* the nearest float: exact up to 2^24 */
    }
    return LENET_OK;
}

/* Where tensor `t` of an arena starts, from the view the model keeps of it. */
static size_t arena_offset(const float *arena, const lenet_tensor *t)
{
    return (size_t)(t->data - arena);
}

void lenet__ckpt_tensors_free(lenet_ckpt_tensors *staged)
{
    lenet__free_aligned(staged->params);
    lenet__free_aligned(staged->buffers);
    staged->params = staged->buffers = NULL;
}

lenet_status lenet__ckpt_stage_model(const lenet_model *m, const lenet_st_file *f, lenet_ckpt_tensors *staged)
{
    staged->params = lenet__ckpt_floats(m->arena_numel);
    staged->buffers = lenet__ckpt_floats(m->buffer_arena_numel);
    if (!staged->params || !staged->buffers)
        return lenet__oom("model parameters and buffers");
    memcpy(staged->params, m->params, m->arena_numel * sizeof(float));
    memcpy(staged->buffers, m->buffers, m->buffer_arena_numel * sizeof(float));
    for (size_t i = 0; i < m->n_params; i++) {
        lenet_status st = lenet__ckpt_stage_tensor(f, m->param_names[i], &m->param_tensors[i],
                                                   staged->params + m->param_offset[i]);
        if (st != LENET_OK)
            return st;
    }
    /* Buffers are required as parameters are, as PyTorch's load_state_dict (strict=True) requires every key. */
    for (size_t b = 0; b < m->n_buffers; b++) {
        const lenet_tensor *want = &m->buffer_tensors[b];
        const char *name = m->buffer_names[b];
        const lenet_st_tensor *t = find_shaped(f, name, want, " (a buffer of the model: a file needs them all)");
        if (!t)
            return LENET_ESHAPE;
        float *out = staged->buffers + arena_offset(m->buffers, want);
        lenet_status st = m->buffer_int64[b] ? stage_counts(f, t, name, out) : stage_floats(f, t, name, out);
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
        for (size_t b = 0; b < m->n_buffers && !known; b++)
            known = strcmp(m->buffer_names[b], name) == 0;
        if (!known)
            return lenet__fail(LENET_ESHAPE, "%s: tensor \"%.60s\" is not a parameter or buffer of the model", f->path,
                               name);
    }
    return LENET_OK;
}

void lenet__ckpt_commit_model(lenet_model *m, const lenet_ckpt_tensors *staged)
{
    memcpy(m->params, staged->params, m->arena_numel * sizeof(float));
    memcpy(m->buffers, staged->buffers, m->buffer_arena_numel * sizeof(float));
}

/* An int64 buffer as I64: every value must be a count (an integer in [0, 2^53]); one element is written as a
 * scalar, as PyTorch's num_batches_tracked. */
static lenet_status write_counts(lenet_st_writer *w, const char *name, const lenet_tensor *t)
{
    size_t bytes;
    if (lenet__mul_overflows(t->numel ? t->numel : 1, sizeof(int64_t), &bytes))
        return lenet__oom("int64 buffer");
    int64_t *values = lenet__malloc(bytes);
    if (!values)
        return lenet__oom("int64 buffer");
    lenet_status st = LENET_OK;
    for (size_t i = 0; i < t->numel && st == LENET_OK; i++) {
        float v = t->data[i];
        if (!(v >= 0.0f && v <= (float)MAX_COUNT) || v != floorf(v))
            st = lenet__fail(LENET_EINVAL, "buffer \"%s\" holds %g, not a count (an integer in [0, 2^53])", name,
                             (double)v);
        else
            values[i] = (int64_t)v;
    }
    if (st == LENET_OK)
        st = lenet__st_add_i64(w, name, t->numel == 1 ? 0 : t->ndim, t->shape, values);
    lenet__free(values);
    return st;
}

lenet_status lenet__ckpt_write_model(lenet_st_writer *w, const lenet_model *m)
{
    lenet_status st = LENET_OK;
    for (size_t i = 0; st == LENET_OK && i < m->n_params; i++)
        st = lenet__st_add_f32(w, m->param_names[i], m->param_tensors[i].ndim, m->param_tensors[i].shape,
                               m->params + m->param_offset[i]);
    for (size_t b = 0; st == LENET_OK && b < m->n_buffers; b++) {
        const lenet_tensor *t = &m->buffer_tensors[b];
        st = m->buffer_int64[b] ? write_counts(w, m->buffer_names[b], t)
                                : lenet__st_add_f32(w, m->buffer_names[b], t->ndim, t->shape, t->data);
    }
    return st;
}
