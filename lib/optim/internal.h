/* Optimizers share one handle type; each kind fills an ops table.  Never installed. */
#ifndef LENET_OPTIM_INTERNAL_H
#define LENET_OPTIM_INTERNAL_H

#include "lenet/optim.h"
#include "model/internal.h"

typedef struct lenet_optimizer_ops {
    const char *name;
    /* Updates the parameters; the model is built. */
    lenet_status (*step)(lenet_optimizer *o);
    void (*destroy)(lenet_optimizer *o);
} lenet_optimizer_ops;

struct lenet_optimizer {
    const lenet_optimizer_ops *ops;
    lenet_model *model; /* borrowed */
    float lr;
    unsigned long long steps;
};

/* Allocates an optimizer state of `size` bytes embedding struct lenet_optimizer first. */
void *lenet__optimizer_alloc(size_t size, const lenet_optimizer_ops *ops, lenet_model *m, float lr);

#endif /* LENET_OPTIM_INTERNAL_H */
