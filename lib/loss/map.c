/* The criteria of LeNet-5 over RBF penalties (LeCun et al. 1998, section II.C):
 *   MSE (eq. 8): E = mean_p y_{D_p}
 *   MAP (eq. 9): E = mean_p [ y_{D_p} + log(e^{-j} + sum_i e^{-y_i}) ]
 * The MAP term pulls down the penalty of the correct class and pushes up those of the others (a
 * "competitive" criterion, like maximum mutual information); the constant j keeps it from pushing penalties
 * that are already large.  Gradients and the diagonal Hessian (for SDLM's Gauss-Newton pass) come with it. */
#include <math.h>

#include "core/internal.h"
#include "lenet/lenet5.h"
#include "lenet/loss.h"

lenet_status lenet_rbf_loss(const lenet_tensor *y, const int32_t *labels, lenet_rbf_loss_kind criterion, float j,
                            float *loss, lenet_tensor *dy, lenet_tensor *hy)
{
    if (!y || !labels)
        return lenet__fail(LENET_EINVAL, "rbf_loss: %s is NULL", !y ? "penalties" : "labels");
    if (criterion != LENET_RBF_LOSS_MAP && criterion != LENET_RBF_LOSS_MSE)
        return lenet__fail(LENET_EINVAL, "rbf_loss: unknown criterion %d", (int)criterion);
    if (criterion == LENET_RBF_LOSS_MAP && !isfinite(j))
        return lenet__fail(LENET_EINVAL, "rbf_loss: the MAP constant j (%g) must be finite", (double)j);
    if (y->ndim != 2)
        return lenet__fail(LENET_ESHAPE, "rbf_loss: penalties must be (N, classes), got %d dimensions", y->ndim);
    const int n = y->shape[0], k = y->shape[1];
    const lenet_tensor *outs[2] = {dy, hy};
    for (int t = 0; t < 2; t++)
        if (outs[t] && (outs[t]->ndim != 2 || outs[t]->shape[0] != n || outs[t]->shape[1] != k))
            return lenet__fail(LENET_ESHAPE, "rbf_loss: %s must be (%d, %d) like the penalties", t ? "hy" : "dy", n,
                               k);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return lenet__fail(LENET_EINVAL, "rbf_loss: label %d of sample %d is outside [0, %d)", (int)labels[i], i,
                               k);
    for (size_t i = 0; i < y->numel; i++)
        if (!isfinite(y->data[i]))
            return lenet__fail(LENET_ENUMERIC, "rbf_loss: penalty %zu of sample %zu is not finite", i % (size_t)k,
                               i / (size_t)k);

    const bool map = criterion == LENET_RBF_LOSS_MAP;
    double total = 0.0;
    for (int s = 0; s < n; s++) {
        const float *ys = y->data + (size_t)s * k;
        const int label = labels[s];
        float *dys = dy ? dy->data + (size_t)s * k : NULL;
        float *hys = hy ? hy->data + (size_t)s * k : NULL;
        total += ys[label];
        if (!map) {
            for (int i = 0; i < k; i++) {
                if (dys)
                    dys[i] = (i == label) ? 1.0f / (float)n : 0.0f;
                if (hys)
                    hys[i] = 0.0f;
            }
            continue;
        }
        /* log(e^{-j} + sum e^{-y_i}) = -low + log(e^{-(j - low)} + sum e^{-(y_i - low)}), low the smallest
         * exponent, so every exponential is <= 1 and one of them is 1. */
        double low = j;
        for (int i = 0; i < k; i++)
            low = ys[i] < low ? ys[i] : low;
        double z = exp(-((double)j - low));
        for (int i = 0; i < k; i++)
            z += exp(-((double)ys[i] - low));
        total += -low + log(z);
        /* dE/dy_i = [i == D] - q_i,  d2E/dy_i^2 = q_i (1 - q_i),  q_i = e^{-y_i} / (e^{-j} + sum e^{-y_k}) */
        for (int i = 0; i < k; i++) {
            double q = exp(-((double)ys[i] - low)) / z;
            if (dys)
                dys[i] = (float)(((i == label) - q) / n);
            if (hys)
                hys[i] = (float)(q * (1.0 - q) / n);
        }
    }
    double mean = total / n;
    if (!isfinite(mean))
        return lenet__fail(LENET_ENUMERIC, "rbf_loss: the loss is not finite");
    if (loss)
        *loss = (float)mean;
    return LENET_OK;
}

