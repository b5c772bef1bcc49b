/* The table of layer kinds a checkpoint can name.  A kind is one X(...) line below: an identifier, the kind's
 * ops->name, one letter per constructor argument ('i' int, 'f' float, 'd' double) and the constructor call,
 * reading its arguments with I(k), F(k) or D(k).  The arguments are the ones the constructor stores in
 * l->args, in the same order. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "layers/registry.h"

#define I(k) ((int)args[k])
#define F(k) ((float)args[k])
#define D(k) (args[k])

/* LeNet-5's kinds whose arguments need decoding (lib/layers/partial_conv.c, rbf.c). */
lenet_layer *lenet__partial_conv2d_from_args(const double *args);
lenet_layer *lenet__rbf_from_args(const double *args);

#define LENET_LAYER_KINDS(X)                                                   \
    X(conv2d, "Conv2d", "iiii", lenet_conv2d(I(0), I(1), I(2), I(3)))          \
    X(avgpool2d, "AvgPool2d", "ii", lenet_avgpool2d(I(0), I(1)))               \
    X(maxpool2d, "MaxPool2d", "ii", lenet_maxpool2d(I(0), I(1)))               \
    X(sigmoid, "Sigmoid", "", lenet_sigmoid())                                 \
    X(relu, "ReLU", "", lenet_relu())                                          \
    X(tanh, "Tanh", "", lenet_tanh())                                          \
    X(flatten, "Flatten", "", lenet_flatten())                                 \
    X(linear, "Linear", "i", lenet_linear(I(0)))                               \
    X(batchnorm1d, "BatchNorm1d", "ff", lenet_batchnorm1d(F(0), F(1)))         \
    X(batchnorm2d, "BatchNorm2d", "ff", lenet_batchnorm2d(F(0), F(1)))         \
    X(dropout, "Dropout", "f", lenet_dropout(F(0)))                            \
    X(subsampling, "Subsampling", "ii", lenet_subsampling(I(0), I(1)))         \
    X(partial_conv2d, "PartialConv2d", "iiiddddd", lenet__partial_conv2d_from_args(args)) \
    X(euclidean_rbf, "EuclideanRBF", "iii", lenet__rbf_from_args(args))        \
    X(scaled_tanh, "ScaledTanh", "", lenet_scaled_tanh())

#define DEFINE_CREATE(id, name, types, call)                                   \
    static lenet_layer *create_##id(const double *args)                        \
    {                                                                          \
        (void)args;                                                            \
        return call;                                                           \
    }
LENET_LAYER_KINDS(DEFINE_CREATE)

#define TABLE_ENTRY(id, name, types, call) {name, types, create_##id},
static const lenet_layer_kind kinds[] = {LENET_LAYER_KINDS(TABLE_ENTRY)};

size_t lenet__layer_kind_count(void)
{
    return sizeof kinds / sizeof kinds[0];
}

const lenet_layer_kind *lenet__layer_kind_at(size_t i)
{
    return i < lenet__layer_kind_count() ? &kinds[i] : NULL;
}

const lenet_layer_kind *lenet__layer_kind_find(const char *name)
{
    for (size_t i = 0; name && i < lenet__layer_kind_count(); i++)
        if (strcmp(kinds[i].name, name) == 0)
            return &kinds[i];
    return NULL;
}

static bool arg_fits(char type, double value)
{
    switch (type) {
    case 'i': return value >= INT_MIN && value <= INT_MAX && value == floor(value);
    case 'f': return isfinite(value) && fabs(value) <= FLT_MAX;
    case 'd': return isfinite(value);
    }
    return false;
}

lenet_layer *lenet__layer_create(const char *name, int n_args, const double *args)
{
    const lenet_layer_kind *kind = lenet__layer_kind_find(name);
    if (!kind)
        return lenet__fail_null(LENET_EINVAL, "unknown layer kind \"%s\"", name ? name : "(null)");
    int expected = (int)strlen(kind->arg_types);
    if (n_args != expected)
        return lenet__fail_null(LENET_EINVAL, "%s takes %d arguments, got %d", kind->name, expected, n_args);
    if (n_args > 0 && !args)
        return lenet__fail_null(LENET_EINVAL, "%s: arguments are NULL", kind->name);
    for (int i = 0; i < n_args; i++)
        if (!arg_fits(kind->arg_types[i], args[i]))
            return lenet__fail_null(LENET_EINVAL, "%s: argument %d (%g) is not a valid %s", kind->name, i, args[i],
                                    kind->arg_types[i] == 'i' ? "int" : "finite number");
    return kind->create(args);
}

bool lenet__layer_is_registered(const lenet_layer *l)
{
    const lenet_layer_kind *kind = l ? lenet__layer_kind_find(l->ops->name) : NULL;
    return kind && (int)strlen(kind->arg_types) == l->n_args;
}
