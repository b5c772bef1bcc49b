/* What every optimizer shares: the public step/lr/free entry points, the step and epoch counts, the schedule. */
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
    if (o->schedule) {
        /* From the counts, not from the last lr: right after a rollback or a checkpoint load too. */
        double lr = lenet__optimizer_scheduled_lr(o);
        if (!(lr <= FLT_MAX))
            return lenet__fail(LENET_ENUMERIC, "optimizer_step: the schedule's learning rate %g at step %llu, epoch "
                               "%llu does not fit a float", lr, o->steps, o->epochs);
        o->lr = (float)lr; /* <= FLT_MAX */
    }
    lenet_status st = o->ops->step(o);
    if (st == LENET_OK)
        o->steps++;
    if (st == LENET_OK && o->schedule)
        o->lr = lenet__lr_float(lenet__optimizer_scheduled_lr(o)); /* the next step's, for a checkpoint's record */
    return st;
}

void lenet__optimizer_end_epoch(lenet_optimizer *o)
{
    o->epochs++;
    if (o->schedule)
        o->lr = lenet__lr_float(lenet__optimizer_scheduled_lr(o));
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
    if (o->schedule) {
        o->base_lr = lr;
        o->lr = lenet__lr_float(lenet__optimizer_scheduled_lr(o));
    } else {
        o->lr = lr;
    }
    return LENET_OK;
}

float lenet_optimizer_lr(const lenet_optimizer *o)
{
    if (!o)
        return 0.0f;
    return o->schedule ? lenet__lr_float(lenet__optimizer_scheduled_lr(o)) : o->lr;
}

uint64_t lenet_optimizer_step_count(const lenet_optimizer *o)
{
    return o ? o->steps : 0;
}

uint64_t lenet_optimizer_epoch_count(const lenet_optimizer *o)
{
    return o ? o->epochs : 0;
}

void lenet_optimizer_free(lenet_optimizer *o)
{
    if (!o)
        return;
    if (o->ops->destroy)
        o->ops->destroy(o);
    lenet_schedule_free(o->schedule);
    lenet__free(o);
}
