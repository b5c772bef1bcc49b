// The public API used from C++: <lenet/lenet.h> must compile as C++ and link without name mangling.
#include <lenet/lenet.h>

#include <cstdio>
#include <cstring>
#include <memory>

namespace {
struct model_deleter {
    void operator()(lenet_model *m) const { lenet_model_free(m); }
};
}

int main()
{
    std::unique_ptr<lenet_model, model_deleter> m(lenet_model_create());
    if (!m)
        return 1;
    lenet_layer *layers[] = {lenet_conv2d(6, 5, 1, 2), lenet_sigmoid(), lenet_avgpool2d(2, 2), lenet_flatten(),
                             lenet_linear(10)};
    for (lenet_layer *l : layers)
        if (lenet_model_add(m.get(), l) != LENET_OK)
            return 1;
    if (lenet_model_build(m.get(), 1, 28, 28) != LENET_OK) {
        std::fprintf(stderr, "%s\n", lenet_last_error());
        return 1;
    }
    const int shape[] = {2, 1, 28, 28};
    lenet_tensor *x = lenet_tensor_create(4, shape);
    const lenet_tensor *y = nullptr;
    lenet_status st = lenet_model_forward(m.get(), x, &y);
    lenet_tensor_free(x);
    if (st != LENET_OK || lenet_tensor_dim(y, 0) != 2 || lenet_tensor_dim(y, 1) != 10)
        return 1;
    if (std::strcmp(lenet_model_param_name(m.get(), 0), "0.weight") != 0)
        return 1;
    std::printf("C++: %zu parameter tensors, %zu scalars\n", lenet_model_param_count(m.get()),
                lenet_model_param_numel(m.get()));
    return 0;
}
