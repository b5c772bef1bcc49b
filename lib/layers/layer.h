/* The layer vtable: every layer kind is one file that fills one lenet_layer_ops table and embeds
 * struct lenet_layer as the first member of its own state.  The model loops over layers through these ops and
 * never switches on a layer kind.  Never installed. */
#ifndef LENET_LAYERS_LAYER_H
#define LENET_LAYERS_LAYER_H

#include <stddef.h>

#include "core/internal.h"
#include "lenet/layer.h"
#include "lenet/model.h"
#include "lenet/lenet5.h"

/* Per-sample shapes: (C, H, W) for images, (F) after Flatten. */
#define LENET_MAX_SAMPLE_DIMS 3
#define LENET_MAX_LAYER_PARAMS 4
#define LENET_MAX_LAYER_BUFFERS 4
/* Tensors a layer may ask for at build: its parameters, then its buffers. */
#define LENET_MAX_LAYER_TENSORS (LENET_MAX_LAYER_PARAMS + LENET_MAX_LAYER_BUFFERS)
#define LENET_MAX_LAYER_ARGS 8

typedef struct lenet_shape {
    int ndim;
    int dim[LENET_MAX_SAMPLE_DIMS];
} lenet_shape;

/* A tensor a layer asks for at build: its state_dict suffix and its shape.  Parameters come first, then buffers
 * (non-trainable state such as running statistics, kept apart from the parameters and never given gradients). */
typedef struct lenet_param_spec {
    const char *suffix; /* "weight", "bias", "running_mean", ... */
    int ndim;
    int shape[4];
    bool trainable; /* false for fixed parameters (the RBF bitmaps): kept in state_dict, never updated */
    bool buffer;    /* a buffer, not a parameter */
    bool int64;     /* a buffer PyTorch keeps as an int64 scalar (num_batches_tracked): shape (1) and a float
                     * count here, exact up to 2^24; a 0-dimensional I64 tensor in files, as in PyTorch's */
} lenet_param_spec;

/* One call's data, for a batch of n samples laid out contiguously. */
typedef struct lenet_pass {
    int n;                /* samples */
    const float *x;       /* input, n * in_size */
    const float *y;       /* output of forward, n * out_size (backward only) */
    const float *dy;      /* gradient w.r.t. y (backward only) */
    float *dx;            /* gradient w.r.t. x, overwritten; NULL when not needed (first layer) */
    float *const *grads;  /* one buffer per parameter (spec order) to accumulate into (backward only) */
    float *work;          /* scratch of ops->workspace(l, n) floats, owned by the caller */
    bool training;        /* the model's mode: training (batch statistics, dropout) or evaluation */
    int start;            /* index of the first of the n samples in the whole batch */
    int batch;            /* samples in the whole batch */
    uint64_t seed;        /* random stream of this layer for this forward (dropout masks), the same in backward */
    const double *stats;  /* whole-batch layers: the batch's statistics from forward_stats, reduced */
    const double *grad_stats; /* whole-batch layers, backward: the batch's statistics from backward_stats, reduced */
} lenet_pass;

/* The generic Gauss-Newton passes (lib/model/hessian.c) a layer kind may declare exact for itself. */
typedef enum lenet_gn_rule {
    LENET_GN_NONE = 0,
    /* Linear in x and in its parameters, every coefficient a parameter (Conv2d, Linear): the pass is the layer's
     * own backward run over squared inputs and squared parameters. */
    LENET_GN_SQUARES,
    /* Every input reaches at most one output, through a slope J (activations, Flatten, non-overlapping pools):
     * hx = hy J^2. */
    LENET_GN_ONE_TO_ONE
} lenet_gn_rule;

/* The rules for gn_rule ops, shared by the layer files. */
lenet_gn_rule lenet__gn_squares(const lenet_layer *l);
lenet_gn_rule lenet__gn_one_to_one(const lenet_layer *l);

typedef struct lenet_layer_ops {
    const char *name; /* PyTorch class name */
    /* Output shape for a per-sample input shape; pure (does not change the layer), sets the error on failure. */
    lenet_status (*infer_shape)(const lenet_layer *l, const lenet_shape *in, lenet_shape *out);
    /* Called at build with the input shape (and by checkpoint loading to size a file's tensors, so possibly more
     * than once): records sizes, returns the tensors it needs in *count: its parameters, then its buffers (at most
     * LENET_MAX_LAYER_PARAMS and LENET_MAX_LAYER_BUFFERS).
     * Must not allocate.  May be NULL for layers without parameters or sizes. */
    lenet_status (*setup)(lenet_layer *l, lenet_param_spec *specs, int *count);
    /* Fills the layer's parameters (l->param) for an init scheme. NULL for layers without parameters. */
    void (*init)(lenet_layer *l, lenet_init scheme, lenet_rng *rng);
    /* Floats of scratch forward/backward need for n samples; NULL for none. */
    size_t (*workspace)(const lenet_layer *l, int n);
    /* y = f(x). Reads the layer, writes only p->y and p->work, so it may run concurrently on one layer. */
    void (*forward)(const lenet_layer *l, const lenet_pass *p, float *y);
    /* Accumulates parameter gradients into p->grads and writes p->dx when it is not NULL. */
    void (*backward)(const lenet_layer *l, const lenet_pass *p);
    /* Connections (multiply-adds incl. bias, as LeCun 1998 counts them) per sample; NULL for none. */
    size_t (*connections)(const lenet_layer *l);
    /* Frees what the layer allocated besides its struct; NULL if nothing. */
    void (*destroy)(lenet_layer *l);
    /* The diagonal Gauss-Newton pass of SDLM (LeCun et al. 1998, appendix C), driven by lib/model/hessian.c.
     * Given hy = diag d2E/dy2 (n * out_size floats, >= 0) it adds the Gauss-Newton diagonal d2E/dw2 into
     * p->grads (a shared weight sums its connections: sum hy * x^2) and writes hx = diag d2E/dx2 (sum hy * w^2,
     * times f'(x)^2 for a nonlinearity), unless hx is NULL.  For the last layer p->dy holds the loss gradient
     * dE/dy when the caller gave it, for layers whose own curvature enters (RBF: 2 * sum dy); elsewhere it is
     * NULL.  p->x, p->y, p->work as in backward.  Pure over the layer, like backward.
     * NULL: the layer's gn_rule says which generic pass of lib/model/hessian.c is exact for it. */
    void (*backward_gn)(const lenet_layer *l, const lenet_pass *p, const float *hy, float *hx);
    /* Which generic Gauss-Newton pass is exact for a layer without backward_gn (NULL: none, LENET_EUNSUPPORTED). */
    lenet_gn_rule (*gn_rule)(const lenet_layer *l);

    /* Whole-batch layers (BatchNorm in training mode) need statistics over the whole batch, not one chunk.
     * batch_stats gives how many doubles they reduce (0 or NULL: the layer works sample by sample in that mode).
     * The engine then runs the chunks up to the layer, has forward_stats add each chunk's partial statistics into a
     * zeroed row of its own, sums the rows in chunk order through the reduction seam (lib/model/reduce.c), and
     * passes the sums to forward as p->stats; backward likewise gets p->grad_stats from backward_stats (which
     * sees p->dy, p->x, p->y and p->stats).  The sums are the same for any thread count. */
    size_t (*batch_stats)(const lenet_layer *l, bool training);
    void (*forward_stats)(const lenet_layer *l, const lenet_pass *p, double *partial);
    void (*backward_stats)(const lenet_layer *l, const lenet_pass *p, double *partial);
    /* Called once per training forward with the batch's statistics, on the engine's thread: updates the layer's
     * buffers (running statistics).  `average` 0: as the layer's momentum says.  `average` k >= 1: the forward is
     * the k-th batch of a pass of lenet_update_statistics(), and the buffers become the plain mean of the k batches'
     * statistics so far (factor 1/k, whatever they held before the first), PyTorch's momentum=None.  NULL if none. */
    void (*update_buffers)(lenet_layer *l, const double *stats, int batch, size_t average);
    /* Refuses a batch the layer cannot handle in a mode (BatchNorm in training: one value per channel), before
     * anything runs; sets the error.  NULL: any batch. */
    lenet_status (*check_batch)(const lenet_layer *l, int batch, bool training);

    /* Inference plans (lib/plan).  A layer that is the identity in evaluation mode (Dropout) is left out.  One that
     * is a per-channel affine map there (BatchNorm) gives it through eval_affine: it fills scale and shift (room for
     * l->out.dim[0] floats each) and returns the channel count.  A plan folds that map into the layer before it when
     * the latter's fold_affine takes it (Conv2d, Linear: y'[c] = scale[c] y[c] + shift[c] absorbed into the weight
     * rows and the bias); fold_affine changes the layer's parameters and returns false when the channels differ. */
    bool eval_identity;
    int (*eval_affine)(const lenet_layer *l, float *scale, float *shift);
    bool (*fold_affine)(lenet_layer *l, const float *scale, const float *shift, int channels);

    /* Outputs are penalties, not scores: the smallest wins (LeNet-5's RBF distances).  lenet_model_classify then
     * picks the smallest and gives the softmax of the negated outputs, so a model ending in such a layer classifies
     * as its criterion does. */
    bool penalties;
} lenet_layer_ops;

struct lenet_layer {
    const lenet_layer_ops *ops;
    /* Constructor arguments, enough to rebuild the layer (checkpoints): ints and floats by position. */
    int n_args;
    double args[LENET_MAX_LAYER_ARGS];
    /* Set by the model at build: */
    lenet_shape in, out;
    size_t in_size, out_size; /* per sample */
    int n_params;
    float *param[LENET_MAX_LAYER_PARAMS]; /* views into the model's parameter arena */
    size_t param_numel[LENET_MAX_LAYER_PARAMS];
    int n_buffers;
    float *buffer[LENET_MAX_LAYER_BUFFERS]; /* views into the model's buffer arena */
    size_t buffer_numel[LENET_MAX_LAYER_BUFFERS];
};

/* Allocates a layer state of `size` bytes (embedding struct lenet_layer first) with ops and args set.
 * Returns NULL with LENET_ENOMEM set. */
void *lenet__layer_alloc(size_t size, const lenet_layer_ops *ops, int n_args, const double *args);

/* Elements of a shape already checked by lenet__shape_check (so the product cannot overflow). */
size_t lenet__shape_size(const lenet_shape *s);
/* Checks a per-sample shape: 1 to LENET_MAX_SAMPLE_DIMS dimensions, each >= 1, at most LENET_MAX_SAMPLE_ELEMENTS
 * elements in all (computed with checked arithmetic).  `what` names it in the message ("output").  Stores the
 * element count in *size when it is not NULL. */
lenet_status lenet__shape_check(const lenet_shape *s, const char *what, size_t *size);
/* Checks that a (C, H, W) image padded by `pad` on every side stays within the limits, and stores the padded
 * height and width.  For layers whose kernels read a padded copy of their input. */
lenet_status lenet__padded_check(const lenet_layer *l, const lenet_shape *in, int pad, int *padded_h, int *padded_w);
bool lenet__shape_equal(const lenet_shape *a, const lenet_shape *b);
void lenet__shape_format(const lenet_shape *s, char *buf, size_t size);

/* Fills `n` floats uniformly in [-bound, bound). */
void lenet__fill_uniform(float *p, size_t n, float bound, lenet_rng *rng);
/* The weight/bias init shared by Conv2d and Linear (and any layer with one weight and one bias). */
void lenet__init_weight_bias(lenet_layer *l, lenet_init scheme, lenet_rng *rng, size_t fan_in, size_t fan_out);

/* fold_affine for layers whose parameter 0 holds one row per output channel and parameter 1 one bias per channel
 * (Conv2d, Linear): row c and bias c are multiplied by scale[c], then shift[c] is added to the bias. */
bool lenet__fold_affine_weight_bias(lenet_layer *l, const float *scale, const float *shift, int channels);

/* Helpers for shape errors that name the layer kind and sizes. */
lenet_status lenet__expect_image(const lenet_layer *l, const lenet_shape *in);

#endif /* LENET_LAYERS_LAYER_H */
