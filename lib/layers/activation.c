/* Elementwise activations: the shape passes through; each kind is a forward/backward kernel pair. */
#include "kernels/kernels.h"
#include "layers/layer.h"

static lenet_status same_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    (void)l;
    *out = *in;
    return LENET_OK;
}

#define ACTIVATION(kind, pytorch_name)                                                                    \
    static void kind##_forward(const lenet_layer *l, const lenet_pass *p, float *y)                       \
    {                                                                                                     \
        lenet__##kind##_forward((size_t)p->n * l->in_size, p->x, y);                                      \
    }                                                                                                     \
    static void kind##_backward(const lenet_layer *l, const lenet_pass *p)                                \
    {                                                                                                     \
        if (p->dx)                                                                                        \
            lenet__##kind##_backward((size_t)p->n * l->in_size, p->y, p->dy, p->dx);                      \
    }                                                                                                     \
    static const lenet_layer_ops kind##_ops = {                                                           \
        .name = pytorch_name,                                                                             \
        .infer_shape = same_shape,                                                                        \
        .forward = kind##_forward,                                                                        \
        .backward = kind##_backward,                                                                      \
        .gn_rule = lenet__gn_one_to_one,                                                                  \
    };                                                                                                    \
    lenet_layer *lenet_##kind(void)                                                                       \
    {                                                                                                     \
        return lenet__layer_alloc(sizeof(lenet_layer), &kind##_ops, 0, NULL);                             \
    }

ACTIVATION(sigmoid, "Sigmoid")
ACTIVATION(relu, "ReLU")
ACTIVATION(tanh, "Tanh")
