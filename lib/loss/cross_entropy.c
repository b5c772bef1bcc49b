/* Softmax cross-entropy, mean over the batch, as nn.CrossEntropyLoss; and the same over some rows of a batch, for
 * data-parallel training (loss/internal.h).  Both compute each row with the same two functions. */
#include <math.h>

#include "core/internal.h"
#include "lenet/loss.h"
#include "loss/internal.h"

/* sum_j e^(z_j - max) in double, and the row's max, which makes every term at most 1 for any magnitude.  The row's
 * logits are finite (checked by the caller). */
static double row_exp_sum(const float *z, int k, float *zmax)
{
    float top = z[0];
    for (int j = 1; j < k; j++)
        top = z[j] > top ? z[j] : top;
    double sum = 0.0;
    for (int j = 0; j < k; j++)
        sum += exp((double)z[j] - top);
    *zmax = top;
    return sum;
}

/* loss_i = log(sum_j e^(z_j - max)) - (z_label - max) */
static double row_term(const float *z, int k, int32_t label)
{
    float zmax;
    const double lse = log(row_exp_sum(z, k, &zmax));
    return lse - ((double)z[label] - zmax);
}

/* d loss / d z_ij = (softmax_ij - [j == label_i]) / n */
static void row_gradient(const float *z, int k, int32_t label, int n, float *g)
{
    float zmax;
    const double sum = row_exp_sum(z, k, &zmax);
    for (int j = 0; j < k; j++)
        g[j] = (float)((exp((double)z[j] - zmax) / sum - (j == label)) / n);
}

/* The first non-finite logit of row i: ENUMERIC naming it, or LENET_OK. */
static lenet_status check_row(const float *z, int k, int i)
{
    for (int j = 0; j < k; j++)
        if (!isfinite(z[j]))
            return lenet__fail(LENET_ENUMERIC, "cross_entropy: logit %d of sample %d is %g", j, i, (double)z[j]);
    return LENET_OK;
}

static lenet_status check_labels(const int32_t *labels, int begin, int end, int k)
{
    for (int i = begin; i < end; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return lenet__fail(LENET_EINVAL, "cross_entropy: label %d of sample %d is outside [0, %d)",
                               (int)labels[i], i, k);
    return LENET_OK;
}

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
    lenet_status st = check_labels(labels, 0, n, k);
    if (st != LENET_OK)
        return st;

    /* Accumulate in double so the batch mean does not depend on summation order beyond float rounding of each
     * term. */
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *z = logits->data + (size_t)i * k;
        if ((st = check_row(z, k, i)) != LENET_OK)
            return st;
        total += row_term(z, k, labels[i]);
    }
    double mean = total / n;
    if (!isfinite((float)mean))
        return lenet__fail(LENET_ENUMERIC, "cross_entropy: the loss %g is beyond float range", mean);
    if (dlogits)
        for (int i = 0; i < n; i++)
            row_gradient(logits->data + (size_t)i * k, k, labels[i], n, dlogits->data + (size_t)i * k);
    *loss = (float)mean;
    return LENET_OK;
}

lenet_status lenet__cross_entropy_rows(const lenet_tensor *logits, const int32_t *labels, int begin, int end,
                                       int divisor, double *terms, lenet_tensor *dlogits)
{
    const int k = logits->shape[1];
    lenet_status st = check_labels(labels, begin, end, k);
    for (int i = begin; i < end && st == LENET_OK; i++)
        st = check_row(logits->data + (size_t)i * k, k, i);
    if (st != LENET_OK)
        return st;
    for (int i = begin; i < end; i++) {
        const float *z = logits->data + (size_t)i * k;
        terms[i - begin] = row_term(z, k, labels[i]);
        if (dlogits)
            row_gradient(z, k, labels[i], divisor, dlogits->data + (size_t)i * k);
    }
    return LENET_OK;
}
