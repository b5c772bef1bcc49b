/* What every optimizer shares: the public step/lr/free entry points. */
#include <math.h>

#include "optim/internal.h"

void *lenet__optimizer_alloc(size_t size, const lenet_optimizer_ops *ops, lenet_model *m, float lr)
{
    lenet_optimizer *o = lenet__calloc(1, size);
    if (!o)
        return lenet__oom(ops->name), NULL;
    o->ops = ops;
    o->model = m;
    o->lr = lr;
    return o;
}

lenet_status lenet_optimizer_step(lenet_optimizer *o)
{
    if (!o)
        return lenet__fail(LENET_EINVAL, "optimizer_step: optimizer is NULL");
    if (!o->model->built)
        return lenet__fail(LENET_ESTATE, "optimizer_step: the model is not built");
    lenet_status st = o->ops->step(o);
    if (st == LENET_OK)
        o->steps++;
    return st;
}

lenet_status lenet_optimizer_zero_grad(lenet_optimizer *o)
{
    if (!o)
        return lenet__fail(LENET_EINVAL, "optimizer_zero_grad: optimizer is NULL");
    return lenet_model_zero_grad(o->model);
}

lenet_status lenet_optimizer_set_lr(lenet_optimizer *o, float lr)
{
    if (!o)
        return lenet__fail(LENET_EINVAL, "optimizer_set_lr: optimizer is NULL");
    if (!(lr >= 0.0f) || !isfinite(lr))
        return lenet__fail(LENET_EINVAL, "optimizer_set_lr: learning rate %g must be finite and >= 0", (double)lr);
    o->lr = lr;
    return LENET_OK;
}

float lenet_optimizer_lr(const lenet_optimizer *o)
{
    return o ? o->lr : 0.0f;
}

void lenet_optimizer_free(lenet_optimizer *o)
{
    if (!o)
        return;
    if (o->ops->destroy)
        o->ops->destroy(o);
    lenet__free(o);
}
