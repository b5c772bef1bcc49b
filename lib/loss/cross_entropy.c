/* Softmax cross-entropy, mean over the batch, as nn.CrossEntropyLoss. */
#include <math.h>

#include "core/internal.h"
#include "lenet/loss.h"

lenet_status lenet_cross_entropy(const lenet_tensor *logits, const int32_t *labels, float *loss,
                                 lenet_tensor *dlogits)
{
    if (!logits || !labels || !loss)
        return lenet__fail(LENET_EINVAL, "cross_entropy: %s is NULL", !logits ? "logits" : !labels ? "labels" : "loss");
    if (logits->ndim != 2)
        return lenet__fail(LENET_ESHAPE, "cross_entropy: logits must be (N, classes), got %d dimensions",
                           logits->ndim);
    const int n = logits->shape[0], k = logits->shape[1];
    if (dlogits && (dlogits->ndim != 2 || dlogits->shape[0] != n || dlogits->shape[1] != k))
        return lenet__fail(LENET_ESHAPE, "cross_entropy: dlogits must be (%d, %d) like the logits", n, k);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return lenet__fail(LENET_EINVAL, "cross_entropy: label %d of sample %d is outside [0, %d)",
                               (int)labels[i], i, k);

    /* loss_i = log(sum_j e^(z_j - max)) - (z_label - max): stable for any magnitude.  Accumulate in double so
     * the batch mean does not depend on summation order beyond float rounding of each term. */
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *z = logits->data + (size_t)i * k;
        float zmax = z[0];
        for (int j = 0; j < k; j++) {
            if (!isfinite(z[j]))
                return lenet__fail(LENET_ENUMERIC, "cross_entropy: logit %d of sample %d is %g", j, i, (double)z[j]);
            zmax = z[j] > zmax ? z[j] : zmax;
        }
        double sum = 0.0;
        for (int j = 0; j < k; j++)
            sum += exp((double)z[j] - zmax);
        double lse = log(sum);
        total += lse - ((double)z[labels[i]] - zmax);
    }
    double mean = total / n;
    if (!isfinite((float)mean))
        return lenet__fail(LENET_ENUMERIC, "cross_entropy: the loss %g is beyond float range", mean);

    /* d loss / d z_ij = (softmax_ij - [j == label_i]) / N */
    if (dlogits) {
        for (int i = 0; i < n; i++) {
            const float *z = logits->data + (size_t)i * k;
            float *g = dlogits->data + (size_t)i * k;
            float zmax = z[0];
            for (int j = 1; j < k; j++)
                zmax = z[j] > zmax ? z[j] : zmax;
            double sum = 0.0;
            for (int j = 0; j < k; j++)
                sum += exp((double)z[j] - zmax);
            for (int j = 0; j < k; j++)
                g[j] = (float)((exp((double)z[j] - zmax) / sum - (j == labels[i])) / n);
        }
    }
    *loss = (float)mean;
    return LENET_OK;
}
