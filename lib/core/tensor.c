#include <stdio.h>
#include <string.h>

#include "core/internal.h"

lenet_status lenet__shape_numel(int ndim, const int *shape, size_t *numel)
{
    if (ndim < 1 || ndim > LENET_TENSOR_MAX_DIMS)
        return lenet__fail(LENET_EINVAL, "tensor: %d dimensions, expected 1 to %d", ndim, LENET_TENSOR_MAX_DIMS);
    if (!shape)
        return lenet__fail(LENET_EINVAL, "tensor: shape is NULL");
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1)
            return lenet__fail(LENET_EINVAL, "tensor: dimension %d has size %d, expected >= 1", i, shape[i]);
        if (lenet__mul_overflows(n, (size_t)shape[i], &n) || n > SIZE_MAX / sizeof(float))
            return lenet__fail(LENET_EINVAL, "tensor: shape too large");
    }
    *numel = n;
    return LENET_OK;
}

void lenet__tensor_view(lenet_tensor *t, int ndim, const int *shape, float *data)
{
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < LENET_TENSOR_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 0;
    for (int i = 0; i < ndim; i++)
        t->numel *= (size_t)shape[i];
    t->data = data;
    t->owns_data = false;
}

lenet_status lenet__tensor_reshape(lenet_tensor *t, int ndim, const int *shape)
{
    size_t numel;
    lenet_status st = lenet__shape_numel(ndim, shape, &numel);
    if (st != LENET_OK)
        return st;
    t->ndim = ndim;
    for (int i = 0; i < LENET_TENSOR_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 0;
    t->numel = numel;
    return LENET_OK;
}

void lenet__shape_str(int ndim, const int *shape, char *buf, size_t size)
{
    size_t used = 0;
    int n = snprintf(buf, size, "[");
    used = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < ndim && used < size; i++) {
        n = snprintf(buf + used, size - used, "%s%d", i ? ", " : "", shape[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

lenet_tensor *lenet_tensor_create(int ndim, const int *shape)
{
    size_t numel;
    if (lenet__shape_numel(ndim, shape, &numel) != LENET_OK)
        return NULL;
    lenet_tensor *t = lenet__malloc(sizeof *t);
    if (!t)
        goto fail;
    float *data = lenet__malloc_aligned(numel * sizeof(float));
    if (!data)
        goto fail_tensor;
    memset(data, 0, numel * sizeof(float));
    lenet__tensor_view(t, ndim, shape, data);
    t->owns_data = true;
    return t;

fail_tensor:
    lenet__free(t);
fail:
    lenet__oom("tensor");
    return NULL;
}

void lenet_tensor_free(lenet_tensor *t)
{
    if (!t)
        return;
    if (t->owns_data)
        lenet__free_aligned(t->data);
    lenet__free(t);
}

int lenet_tensor_ndim(const lenet_tensor *t)
{
    return t ? t->ndim : 0;
}

int lenet_tensor_dim(const lenet_tensor *t, int axis)
{
    if (!t)
        return 0;
    if (axis < 0)
        axis += t->ndim;
    if (axis < 0 || axis >= t->ndim)
        return 0;
    return t->shape[axis];
}

size_t lenet_tensor_numel(const lenet_tensor *t)
{
    return t ? t->numel : 0;
}

float *lenet_tensor_data(lenet_tensor *t)
{
    return t ? t->data : NULL;
}

const float *lenet_tensor_cdata(const lenet_tensor *t)
{
    return t ? t->data : NULL;
}

lenet_status lenet_tensor_copy(lenet_tensor *dst, const lenet_tensor *src)
{
    if (!dst || !src)
        return lenet__fail(LENET_EINVAL, "tensor_copy: %s is NULL", dst ? "src" : "dst");
    if (dst->ndim != src->ndim || memcmp(dst->shape, src->shape, sizeof dst->shape) != 0) {
        char a[96], b[96];
        lenet__shape_str(dst->ndim, dst->shape, a, sizeof a);
        lenet__shape_str(src->ndim, src->shape, b, sizeof b);
        return lenet__fail(LENET_ESHAPE, "tensor_copy: destination %s and source %s differ", a, b);
    }
    if (dst->data != src->data)
        memcpy(dst->data, src->data, src->numel * sizeof(float));
    return LENET_OK;
}
