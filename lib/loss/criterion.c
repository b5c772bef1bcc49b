/* Criteria: a loss with its gradient and a decision rule, behind one handle, so the training loop serves logits
 * (cross-entropy, largest wins), LeNet-5's RBF penalties (MAP or MSE, smallest wins) and the caller's own. */
#include <math.h>

#include "core/internal.h"
#include "kernels/kernels.h"
#include "lenet/criterion.h"
#include "lenet/lenet5.h"

typedef enum criterion_kind { KIND_CROSS_ENTROPY, KIND_RBF, KIND_CUSTOM } criterion_kind;

struct lenet_criterion {
    criterion_kind kind;
    lenet_rbf_loss_kind rbf; /* KIND_RBF */
    float j;
    lenet_loss_fn loss; /* KIND_CUSTOM */
    lenet_classify_fn classify;
    void *user;
};

static lenet_criterion *criterion_new(criterion_kind kind)
{
    lenet_criterion *c = lenet__calloc(1, sizeof *c);
    if (!c) {
        lenet__oom("criterion");
        return NULL;
    }
    c->kind = kind;
    return c;
}

lenet_criterion *lenet_criterion_cross_entropy(void)
{
    return criterion_new(KIND_CROSS_ENTROPY);
}

lenet_criterion *lenet_criterion_rbf(lenet_rbf_loss_kind kind, float j)
{
    if (kind != LENET_RBF_LOSS_MAP && kind != LENET_RBF_LOSS_MSE)
        return lenet__fail_null(LENET_EINVAL, "criterion_rbf: unknown criterion %d", (int)kind);
    if (kind == LENET_RBF_LOSS_MAP && !isfinite(j))
        return lenet__fail_null(LENET_EINVAL, "criterion_rbf: the MAP constant j (%g) must be finite", (double)j);
    lenet_criterion *c = criterion_new(KIND_RBF);
    if (c) {
        c->rbf = kind;
        c->j = j;
    }
    return c;
}

lenet_criterion *lenet_criterion_custom(lenet_loss_fn loss, lenet_classify_fn classify, void *user)
{
    if (!loss)
        return lenet__fail_null(LENET_EINVAL, "criterion_custom: the loss function is NULL");
    lenet_criterion *c = criterion_new(KIND_CUSTOM);
    if (c) {
        c->loss = loss;
        c->classify = classify;
        c->user = user;
    }
    return c;
}

void lenet_criterion_free(lenet_criterion *c)
{
    lenet__free(c);
}

lenet_status lenet_criterion_loss(const lenet_criterion *c, const lenet_tensor *y, const int32_t *labels,
                                  float *loss, lenet_tensor *dy)
{
    if (!c || !y || !labels || !loss)
        return lenet__fail(LENET_EINVAL, "criterion_loss: %s is NULL",
                           !c ? "criterion" : !y ? "output" : !labels ? "labels" : "loss");
    switch (c->kind) {
    case KIND_CROSS_ENTROPY:
        return lenet_cross_entropy(y, labels, loss, dy);
    case KIND_RBF:
        return lenet_rbf_loss(y, labels, c->rbf, c->j, loss, dy, NULL);
    case KIND_CUSTOM:
        break;
    }
    if (y->ndim != 2)
        return lenet__fail(LENET_ESHAPE, "criterion_loss: outputs must be (N, classes), got %d dimensions", y->ndim);
    if (dy && (dy->ndim != 2 || dy->shape[0] != y->shape[0] || dy->shape[1] != y->shape[1]))
        return lenet__fail(LENET_ESHAPE, "criterion_loss: the gradient must be (%d, %d) like the outputs",
                           y->shape[0], y->shape[1]);
    for (int i = 0; i < y->shape[0]; i++)
        if (labels[i] < 0 || labels[i] >= y->shape[1])
            return lenet__fail(LENET_EINVAL, "criterion_loss: label %d of sample %d is outside [0, %d)",
                               (int)labels[i], i, y->shape[1]);
    lenet_error_clear();
    lenet_status st = c->loss(c->user, y, labels, loss, dy);
    if (st != LENET_OK) {
        /* Keep a message the function may have left through a liblenet call; otherwise give one. */
        if (lenet_last_error()[0] == '\0')
            return lenet__fail(st, "the custom loss failed (%s)", lenet_status_str(st));
        lenet__error_prefix("the custom loss failed: ");
        return st;
    }
    if (!isfinite(*loss))
        return lenet__fail(LENET_ENUMERIC, "criterion_loss: the custom loss is not finite");
    return LENET_OK;
}

lenet_status lenet_criterion_classify(const lenet_criterion *c, const lenet_tensor *y, int32_t *classes)
{
    if (!c || !y || !classes)
        return lenet__fail(LENET_EINVAL, "criterion_classify: %s is NULL",
                           !c ? "criterion" : !y ? "output" : "classes");
    if (y->ndim != 2)
        return lenet__fail(LENET_ESHAPE, "criterion_classify: outputs must be (N, classes), got %d dimensions",
                           y->ndim);
    const int n = y->shape[0], k = y->shape[1];
    for (int i = 0; i < n; i++) {
        const float *row = y->data + (size_t)i * k;
        int32_t best = c->kind == KIND_RBF ? lenet__argmin(row, k)
                       : c->kind == KIND_CUSTOM && c->classify ? c->classify(c->user, row, k)
                                                               : lenet__argmax(row, k);
        if (best < 0 || best >= k)
            return lenet__fail(LENET_EINVAL, "criterion_classify: the custom rule chose class %d of sample %d, outside "
                               "[0, %d)", (int)best, i, k);
        classes[i] = best;
    }
    return LENET_OK;
}
