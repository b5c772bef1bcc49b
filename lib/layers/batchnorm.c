/* BatchNorm1d and BatchNorm2d, as PyTorch 1.13 defines them (affine, tracking running statistics).
 *
 * Per channel c over the N values it sees (the batch, times H*W for BatchNorm2d):
 *   training:    mean = sum x / N,  var = sum (x - mean)^2 / N  (biased),  xhat = (x - mean) / sqrt(var + eps)
 *                running_mean = (1 - momentum) running_mean + momentum mean
 *                running_var  = (1 - momentum) running_var  + momentum var * N / (N - 1)   (unbiased)
 *                num_batches_tracked += 1
 *                (lenet_update_statistics: momentum 1/k at its pass's k-th batch, and num_batches_tracked = k, so the
 *                running statistics become the mean over its batches, as PyTorch's momentum=None)
 *   evaluation:  xhat = (x - running_mean) / sqrt(running_var + eps)
 *   both:        y = weight xhat + bias
 * Training needs the whole batch's mean and variance, so the layer is a whole-batch layer: each chunk sums x and
 * x^2 per channel in double, the engine adds the chunks up in chunk order, and var = E[x^2] - mean^2 (in double,
 * so the cancellation costs nothing at float precision).  Backward, in training:
 *   dweight = sum dy xhat    dbias = sum dy
 *   dx = weight / sqrt(var + eps) * (dy - mean(dy) - xhat mean(dy xhat))
 * with the two means over the whole batch, again summed per chunk and reduced by the engine. */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "layers/layer.h"

typedef struct batchnorm {
    lenet_layer base;
    float eps, momentum;
    int ndim;     /* per-sample dimensions: 1 for BatchNorm1d (F), 3 for BatchNorm2d (C, H, W) */
    int channels; /* set by setup */
    size_t plane; /* values per channel per sample: H*W, or 1 */
} batchnorm;

/* Statistics per channel: forward sum x, sum x^2; backward sum dy, sum dy xhat. */
#define STATS_PER_CHANNEL 2

static lenet_status batchnorm_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    const batchnorm *b = (const batchnorm *)l;
    if (in->ndim != b->ndim) {
        char shape[64];
        lenet__shape_format(in, shape, sizeof shape);
        return lenet__fail(LENET_ESHAPE, "%s expects %s per sample, got %s", l->ops->name,
                           b->ndim == 3 ? "(C, H, W)" : "(features)", shape);
    }
    if (l->n_params > 0 && in->dim[0] != b->channels)
        return lenet__fail(LENET_ESHAPE, "%s: input has %d %s, the layer was built for %d", l->ops->name, in->dim[0],
                           b->ndim == 3 ? "channels" : "features", b->channels);
    *out = *in;
    return LENET_OK;
}

static lenet_status batchnorm_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    batchnorm *b = (batchnorm *)l;
    b->channels = l->in.dim[0];
    b->plane = l->in_size / (size_t)b->channels;
    const int c = b->channels;
    specs[0] = (lenet_param_spec){.suffix = "weight", .ndim = 1, .shape = {c}, .trainable = true};
    specs[1] = (lenet_param_spec){.suffix = "bias", .ndim = 1, .shape = {c}, .trainable = true};
    specs[2] = (lenet_param_spec){.suffix = "running_mean", .ndim = 1, .shape = {c}, .buffer = true};
    specs[3] = (lenet_param_spec){.suffix = "running_var", .ndim = 1, .shape = {c}, .buffer = true};
    specs[4] = (lenet_param_spec){.suffix = "num_batches_tracked", .ndim = 1, .shape = {1}, .buffer = true,
                                  .int64 = true};
    *count = 5;
    return LENET_OK;
}

/* PyTorch's reset_parameters and reset_running_stats, for every scheme. */
static void batchnorm_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    (void)scheme;
    (void)rng;
    const size_t c = (size_t)((batchnorm *)l)->channels;
    for (size_t i = 0; i < c; i++) {
        l->param[0][i] = 1.0f;
        l->param[1][i] = 0.0f;
        l->buffer[0][i] = 0.0f;
        l->buffer[1][i] = 1.0f;
    }
    l->buffer[2][0] = 0.0f;
}

static size_t batchnorm_batch_stats(const lenet_layer *l, bool training)
{
    return training ? STATS_PER_CHANNEL * (size_t)((const batchnorm *)l)->channels : 0;
}

static lenet_status batchnorm_check_batch(const lenet_layer *l, int batch, bool training)
{
    const batchnorm *b = (const batchnorm *)l;
    if (training && (size_t)batch * b->plane < 2)
        return lenet__fail(LENET_ESHAPE, "%s: expected more than 1 value per channel when training, got input (%d, %d)",
                           l->ops->name, batch, b->channels);
    return LENET_OK;
}

/* Values per channel in the whole batch. */
static double count(const batchnorm *b, int batch)
{
    return (double)batch * (double)b->plane;
}

/* The batch's mean and 1/sqrt(var + eps) of channel c from the reduced sums. */
static void batch_moments(const batchnorm *b, const double *stats, int batch, int c, double *mean, double *var)
{
    const double n = count(b, batch);
    *mean = stats[STATS_PER_CHANNEL * c] / n;
    double v = stats[STATS_PER_CHANNEL * c + 1] / n - *mean * *mean;
    *var = v > 0.0 ? v : 0.0;
}

/* Channel c's values in a pass over n samples (n, C, plane), as runs for the kernels: `times` runs of `count`
 * values `stride` apart, the first at `first`, each `step` after the one before.  BatchNorm2d: one run per sample
 * (its plane); BatchNorm1d: a single run across the samples, one value per sample. */
typedef struct channel_runs {
    size_t first, count, stride, step;
    int times;
} channel_runs;

static channel_runs runs_of(const batchnorm *b, int n, int c)
{
    if (b->plane == 1)
        return (channel_runs){.first = (size_t)c, .count = (size_t)n, .stride = (size_t)b->channels, .times = 1};
    return (channel_runs){.first = (size_t)c * b->plane, .count = b->plane, .stride = 1,
                          .step = (size_t)b->channels * b->plane, .times = n};
}

static void batchnorm_forward_stats(const lenet_layer *l, const lenet_pass *p, double *partial)
{
    const batchnorm *b = (const batchnorm *)l;
    const lenet_kernels *kern = lenet__kernels();
    for (int c = 0; c < b->channels; c++) {
        const channel_runs r = runs_of(b, p->n, c);
        for (int t = 0; t < r.times; t++)
            kern->norm_moments(r.count, r.stride, p->x + r.first + (size_t)t * r.step,
                               &partial[STATS_PER_CHANNEL * c], &partial[STATS_PER_CHANNEL * c + 1]);
    }
}

static void normaliser(const lenet_layer *l, const lenet_pass *p, int c, double *mean, double *invstd);

/* y = (x - mean) * (weight / sqrt(var + eps)) + bias: centring first keeps a large mean from cancelling. */
static void batchnorm_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const batchnorm *b = (const batchnorm *)l;
    const lenet_kernels *kern = lenet__kernels();
    for (int c = 0; c < b->channels; c++) {
        double mean, invstd;
        normaliser(l, p, c, &mean, &invstd);
        const float centre = (float)mean, scale = (float)(l->param[0][c] * invstd), shift = l->param[1][c];
        const channel_runs r = runs_of(b, p->n, c);
        for (int t = 0; t < r.times; t++) {
            const size_t at = r.first + (size_t)t * r.step;
            kern->norm_affine(r.count, r.stride, p->x + at, centre, scale, shift, y + at);
        }
    }
}

static void batchnorm_update_buffers(lenet_layer *l, const double *stats, int batch, size_t average)
{
    const batchnorm *b = (const batchnorm *)l;
    const double n = count(b, batch), momentum = average > 0 ? 1.0 / (double)average : b->momentum;
    for (int c = 0; c < b->channels; c++) {
        double mean, var;
        batch_moments(b, stats, batch, c, &mean, &var);
        l->buffer[0][c] = (float)((1.0 - momentum) * l->buffer[0][c] + momentum * mean);
        l->buffer[1][c] = (float)((1.0 - momentum) * l->buffer[1][c] + momentum * var * n / (n - 1.0));
    }
    l->buffer[2][0] = average > 0 ? (float)average : l->buffer[2][0] + 1.0f;
}

/* xhat's mean and 1/sqrt(var + eps) for channel c in the pass's mode. */
static void normaliser(const lenet_layer *l, const lenet_pass *p, int c, double *mean, double *invstd)
{
    const batchnorm *b = (const batchnorm *)l;
    double var;
    if (p->training) {
        batch_moments(b, p->stats, p->batch, c, mean, &var);
    } else {
        *mean = l->buffer[0][c];
        var = l->buffer[1][c];
    }
    *invstd = 1.0 / sqrt(var + b->eps);
}

/* Channel c's sum dy and sum dy xhat over the pass, and dx when wanted (the statistics as `backward` has them). */
static void channel_backward(const lenet_layer *l, const lenet_pass *p, int c, double dmean, double dxhat_mean,
                             float *dx, double *sum, double *dot)
{
    const batchnorm *b = (const batchnorm *)l;
    const lenet_kernels *kern = lenet__kernels();
    double mean, invstd, centred_dot = 0.0;
    normaliser(l, p, c, &mean, &invstd);
    const float gain = (float)(l->param[0][c] * invstd);
    const channel_runs r = runs_of(b, p->n, c);
    for (int t = 0; t < r.times; t++) {
        const size_t at = r.first + (size_t)t * r.step;
        kern->norm_backward(r.count, r.stride, p->x + at, p->dy + at, mean, invstd, dmean, dxhat_mean, gain,
                            dx ? dx + at : NULL, sum, &centred_dot);
    }
    *dot += centred_dot * invstd; /* sum dy xhat = invstd sum dy (x - mean) */
}

static void batchnorm_backward_stats(const lenet_layer *l, const lenet_pass *p, double *partial)
{
    const batchnorm *b = (const batchnorm *)l;
    for (int c = 0; c < b->channels; c++)
        channel_backward(l, p, c, 0.0, 0.0, NULL, &partial[STATS_PER_CHANNEL * c],
                         &partial[STATS_PER_CHANNEL * c + 1]);
}

/* dweight += sum dy xhat, dbias += sum dy over the chunk; dx as in the file comment (training) or
 * dx = weight / sqrt(running_var + eps) dy (evaluation, where the statistics are constants). */
static void batchnorm_backward(const lenet_layer *l, const lenet_pass *p)
{
    const batchnorm *b = (const batchnorm *)l;
    for (int c = 0; c < b->channels; c++) {
        double dmean = 0.0, dxhat_mean = 0.0, sum = 0.0, dot = 0.0;
        if (p->training) {
            const double n = count(b, p->batch);
            dmean = p->grad_stats[STATS_PER_CHANNEL * c] / n;
            dxhat_mean = p->grad_stats[STATS_PER_CHANNEL * c + 1] / n;
        }
        channel_backward(l, p, c, dmean, dxhat_mean, p->dx, &sum, &dot);
        p->grads[0][c] += (float)dot;
        p->grads[1][c] += (float)sum;
    }
}

/* Evaluation mode is y = scale x + shift per channel, which a plan folds into the layer before. */
static int batchnorm_eval_affine(const lenet_layer *l, float *scale, float *shift)
{
    const batchnorm *b = (const batchnorm *)l;
    for (int c = 0; c < b->channels; c++) {
        const double gain = l->param[0][c] / sqrt((double)l->buffer[1][c] + b->eps);
        scale[c] = (float)gain;
        shift[c] = (float)(l->param[1][c] - l->buffer[0][c] * gain);
    }
    return b->channels;
}

/* Each value: one multiply and one add. */
static size_t batchnorm_connections(const lenet_layer *l)
{
    return 2 * l->out_size;
}

#define BATCHNORM_OPS(kind, pytorch_name)                                                                  \
    static const lenet_layer_ops kind##_ops = {                                                            \
        .name = pytorch_name,                                                                              \
        .infer_shape = batchnorm_infer_shape,                                                              \
        .setup = batchnorm_setup,                                                                          \
        .init = batchnorm_init,                                                                            \
        .forward = batchnorm_forward,                                                                      \
        .backward = batchnorm_backward,                                                                    \
        .connections = batchnorm_connections,                                                              \
        .batch_stats = batchnorm_batch_stats,                                                              \
        .forward_stats = batchnorm_forward_stats,                                                          \
        .backward_stats = batchnorm_backward_stats,                                                        \
        .update_buffers = batchnorm_update_buffers,                                                        \
        .check_batch = batchnorm_check_batch,                                                              \
        .eval_affine = batchnorm_eval_affine,                                                              \
    };

BATCHNORM_OPS(batchnorm1d, "BatchNorm1d")
BATCHNORM_OPS(batchnorm2d, "BatchNorm2d")

static lenet_layer *batchnorm_create(const lenet_layer_ops *ops, int ndim, float eps, float momentum)
{
    if (!(eps > 0.0f) || !isfinite(eps) || !(momentum >= 0.0f && momentum <= 1.0f))
        return lenet__fail_null(LENET_EINVAL, "%s: eps %g must be finite and > 0 and momentum %g in [0, 1]",
                                ops->name, (double)eps, (double)momentum);
    double args[] = {eps, momentum};
    batchnorm *b = lenet__layer_alloc(sizeof *b, ops, 2, args);
    if (!b)
        return NULL;
    b->eps = eps;
    b->momentum = momentum;
    b->ndim = ndim;
    return &b->base;
}

lenet_layer *lenet_batchnorm1d(float eps, float momentum)
{
    return batchnorm_create(&batchnorm1d_ops, 1, eps, momentum);
}

lenet_layer *lenet_batchnorm2d(float eps, float momentum)
{
    return batchnorm_create(&batchnorm2d_ops, 3, eps, momentum);
}
