/* Layer kinds by name: a checkpoint's architecture ("Conv2d" with args [6, 5, 1, 2]) becomes a new layer through
 * the public constructors.  Adding a kind is one line in the table of registry.c.  Never installed. */
#ifndef LENET_LAYERS_REGISTRY_H
#define LENET_LAYERS_REGISTRY_H

#include "layers/layer.h"

/* One constructible layer kind. */
typedef struct lenet_layer_kind {
    const char *name;      /* the kind's ops->name, unique in the table ("Conv2d") */
    const char *arg_types; /* one letter per constructor argument, in order: 'i' int, 'f' float, 'd' double */
    lenet_layer *(*create)(const double *args); /* args already checked against arg_types */
} lenet_layer_kind;

/* The kind called `name`, or NULL. */
const lenet_layer_kind *lenet__layer_kind_find(const char *name);

/* Number of registered kinds and kind i (for listing them in messages and tests). */
size_t lenet__layer_kind_count(void);
const lenet_layer_kind *lenet__layer_kind_at(size_t i);

/* Checks `n_args` arguments against the kind's types (count; ints integral and in int range; floats finite and in
 * float range) and calls its constructor.  Returns a new layer, or NULL with the error set: LENET_EINVAL for an
 * unknown kind, a wrong count or a bad value (the constructor's own message when it refuses the values). */
lenet_layer *lenet__layer_create(const char *name, int n_args, const double *args);

/* True if the layer can be rebuilt by lenet__layer_create(l->ops->name, l->n_args, l->args). */
bool lenet__layer_is_registered(const lenet_layer *l);

#endif /* LENET_LAYERS_REGISTRY_H */
