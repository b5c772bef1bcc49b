/* EuclideanRBF: LeNet-5's output layer (LeCun et al. 1998, section II.B, eq. 7).  Each output unit computes
 * the squared Euclidean distance between the input vector and its parameter vector,
 *     y_i = sum_j (x_j - w_ij)^2,
 * a penalty: the smaller, the better the input matches class i.  In LeNet-5 the parameters are fixed, chosen
 * "by hand" as the +1/-1 pixels of 7x12 bitmaps of stylised digits (the paper's Fig. 3, the ASCII set), so the
 * parameter "weight" (out_features, in_features) is declared not trainable: it is kept in the state_dict, counts
 * no trainable parameters and is never updated by an optimizer (its gradient is still computed).
 *
 * The bitmaps below are drawn for this library after the description and figure of the paper: each digit in
 * the top ten rows of the 7-wide, 12-high cell (the two bottom rows are the descender zone, empty for digits),
 * with strokes two pixels wide, in the manner of the 7x12 codes used by the public LeNet-5 re-implementations.
 * '#' is +1 (ink), '.' is -1 (background); row-major, so F6's unit 7 * r + c codes row r, column c. */
#include <string.h>

#include "layers/layer.h"

#define LENET5_RBF_ROWS 12
#define LENET5_RBF_COLS 7

static const char *const lenet5_bitmaps[10][LENET5_RBF_ROWS] = {
    {".......", "..###..", ".##.##.", "##...##", "##...##", "##...##", "##...##", "##...##", ".##.##.", "..###..",
     ".......", "......."},
    {".......", "...##..", "..###..", ".####..", "...##..", "...##..", "...##..", "...##..", "...##..", ".######",
     ".......", "......."},
    {".......", ".#####.", "##...##", ".....##", "....##.", "...##..", "..##...", ".##....", "##.....", "#######",
     ".......", "......."},
    {".......", "#######", ".....##", "....##.", "...##..", "..####.", ".....##", ".....##", "##...##", ".#####.",
     ".......", "......."},
    {".......", "....##.", "...###.", "..####.", ".##.##.", "##..##.", "#######", "....##.", "....##.", "....##.",
     ".......", "......."},
    {".......", "#######", "##.....", "##.....", "######.", ".....##", ".....##", ".....##", "##...##", ".#####.",
     ".......", "......."},
    {".......", "..####.", ".##....", "##.....", "######.", "##...##", "##...##", "##...##", "##...##", ".#####.",
     ".......", "......."},
    {".......", "#######", ".....##", "....##.", "....##.", "...##..", "...##..", "..##...", "..##...", "..##...",
     ".......", "......."},
    {".......", ".#####.", "##...##", "##...##", "##...##", ".#####.", "##...##", "##...##", "##...##", ".#####.",
     ".......", "......."},
    {".......", ".#####.", "##...##", "##...##", "##...##", "##...##", ".######", ".....##", "....##.", ".####..",
     ".......", "......."},
};

typedef struct rbf {
    lenet_layer base;
    int out_features;
    bool lenet5;     /* LeNet-5's bitmaps as the centres (then 84 inputs), else zeros until the caller sets them */
    int in_features; /* set by setup */
} rbf;

static lenet_status rbf_infer_shape(const lenet_layer *l, const lenet_shape *in, lenet_shape *out)
{
    const rbf *r = (const rbf *)l;
    if (in->ndim != 1) {
        char shape[64];
        lenet__shape_format(in, shape, sizeof shape);
        return lenet__fail(LENET_ESHAPE, "EuclideanRBF expects flattened input (features) per sample, got %s", shape);
    }
    if (r->lenet5 && in->dim[0] != LENET5_RBF_ROWS * LENET5_RBF_COLS)
        return lenet__fail(LENET_ESHAPE, "EuclideanRBF: LeNet-5's bitmaps have %d pixels, the input has %d features",
                           LENET5_RBF_ROWS * LENET5_RBF_COLS, in->dim[0]);
    if (l->n_params > 0 && in->dim[0] != r->in_features)
        return lenet__fail(LENET_ESHAPE, "EuclideanRBF: input has %d features, the centres have %d", in->dim[0],
                           r->in_features);
    *out = (lenet_shape){.ndim = 1, .dim = {r->out_features}};
    return LENET_OK;
}

static lenet_status rbf_setup(lenet_layer *l, lenet_param_spec *specs, int *count)
{
    rbf *r = (rbf *)l;
    r->in_features = l->in.dim[0];
    specs[0] = (lenet_param_spec){.suffix = "weight", .ndim = 2, .shape = {r->out_features, r->in_features}};
    *count = 1;
    return LENET_OK;
}

/* The centres are fixed: every scheme writes LeNet-5's bitmaps, or zeros for the caller to replace. */
static void rbf_init(lenet_layer *l, lenet_init scheme, lenet_rng *rng)
{
    (void)scheme;
    (void)rng;
    const rbf *r = (const rbf *)l;
    if (r->lenet5)
        lenet_lenet5_rbf_bitmaps(l->param[0]);
    else
        memset(l->param[0], 0, sizeof(float) * l->param_numel[0]);
}

/* y[n][i] = sum_j (x[n][j] - w[i][j])^2 */
static void rbf_forward(const lenet_layer *l, const lenet_pass *p, float *y)
{
    const rbf *r = (const rbf *)l;
    const int in = r->in_features, out = r->out_features;
    for (int n = 0; n < p->n; n++) {
        const float *x = p->x + (size_t)n * in;
        for (int i = 0; i < out; i++) {
            const float *w = l->param[0] + (size_t)i * in;
            float sum = 0.0f;
            for (int j = 0; j < in; j++) {
                float d = x[j] - w[j];
                sum += d * d;
            }
            y[(size_t)n * out + i] = sum;
        }
    }
}

/* dx[j] = sum_i 2 dy[i] (x[j] - w[i][j]);  dw[i][j] += -2 dy[i] (x[j] - w[i][j]) */
static void rbf_backward(const lenet_layer *l, const lenet_pass *p)
{
    const rbf *r = (const rbf *)l;
    const int in = r->in_features, out = r->out_features;
    for (int n = 0; n < p->n; n++) {
        const float *x = p->x + (size_t)n * in;
        const float *dy = p->dy + (size_t)n * out;
        float *dx = p->dx ? p->dx + (size_t)n * in : NULL;
        if (dx)
            memset(dx, 0, sizeof(float) * (size_t)in);
        for (int i = 0; i < out; i++) {
            const float *w = l->param[0] + (size_t)i * in;
            float *dw = p->grads[0] + (size_t)i * in;
            float g = 2.0f * dy[i];
            for (int j = 0; j < in; j++) {
                float d = g * (x[j] - w[j]);
                dw[j] -= d;
                if (dx)
                    dx[j] += d;
            }
        }
    }
}

/* Gauss-Newton with the unit's own curvature (y_i is quadratic in x, so this is the exact diagonal of the
 * Hessian when hy is the loss's exact diagonal and the loss Hessian is diagonal):
 *   hx[j] = sum_i hy[i] * 4 (x[j] - w[i][j])^2 + 2 dy[i],  hw[i][j] += the same term of unit i.
 * For the MAP and mean-squared criteria sum_i dy[i] >= 0, so hx >= 0; without dy the second term is left out. */
static void rbf_backward_gn(const lenet_layer *l, const lenet_pass *p, const float *hy, float *hx)
{
    const rbf *r = (const rbf *)l;
    const int in = r->in_features, out = r->out_features;
    for (int n = 0; n < p->n; n++) {
        const float *x = p->x + (size_t)n * in;
        const float *hyn = hy + (size_t)n * out;
        const float *dy = p->dy ? p->dy + (size_t)n * out : NULL;
        float *hxn = hx ? hx + (size_t)n * in : NULL;
        if (hxn)
            memset(hxn, 0, sizeof(float) * (size_t)in);
        for (int i = 0; i < out; i++) {
            const float *w = l->param[0] + (size_t)i * in;
            float *hw = p->grads[0] + (size_t)i * in;
            float own = dy ? 2.0f * dy[i] : 0.0f;
            for (int j = 0; j < in; j++) {
                float d = x[j] - w[j];
                float term = 4.0f * hyn[i] * d * d + own;
                hw[j] += term;
                if (hxn)
                    hxn[j] += term;
            }
        }
    }
}

/* One connection per (unit, input): LeNet-5's output layer has 10 * 84 = 840. */
static size_t rbf_connections(const lenet_layer *l)
{
    const rbf *r = (const rbf *)l;
    return (size_t)r->out_features * (size_t)r->in_features;
}

static const lenet_layer_ops rbf_ops = {
    .name = "EuclideanRBF",
    .penalties = true,
    .infer_shape = rbf_infer_shape,
    .setup = rbf_setup,
    .init = rbf_init,
    .forward = rbf_forward,
    .backward = rbf_backward,
    .connections = rbf_connections,
    .backward_gn = rbf_backward_gn,
};

/* Arguments, as checkpoints store them: (out_features, 0, centres) with centres 1 for LeNet-5's bitmaps, 0 for
 * zeros.  The middle one held in_features before it was inferred; files that give it still load. */
static lenet_layer *rbf_create(int out_features, bool lenet5)
{
    if (out_features < 1)
        return lenet__fail_null(LENET_EINVAL, "EuclideanRBF: out_features %d must be >= 1", out_features);
    double args[] = {out_features, 0, lenet5};
    rbf *r = lenet__layer_alloc(sizeof *r, &rbf_ops, 3, args);
    if (!r)
        return NULL;
    r->out_features = out_features;
    r->lenet5 = lenet5;
    return &r->base;
}

lenet_layer *lenet_euclidean_rbf(int out_features)
{
    return rbf_create(out_features, false);
}

void lenet_lenet5_rbf_bitmaps(float centers[10 * 84])
{
    if (!centers)
        return;
    for (int d = 0; d < 10; d++)
        for (int row = 0; row < LENET5_RBF_ROWS; row++)
            for (int col = 0; col < LENET5_RBF_COLS; col++)
                centers[d * 84 + row * LENET5_RBF_COLS + col] = lenet5_bitmaps[d][row][col] == '#' ? 1.0f : -1.0f;
}

lenet_layer *lenet_lenet5_rbf(void)
{
    return rbf_create(10, true);
}

/* For the layer registry (checkpoints). */
lenet_layer *lenet__rbf_from_args(const double *args);

lenet_layer *lenet__rbf_from_args(const double *args)
{
    if (args[2] == 1 && args[0] == 10 && (args[1] == 84 || args[1] == 0))
        return lenet_lenet5_rbf();
    if (args[2] != 0)
        return lenet__fail_null(LENET_EINVAL, "EuclideanRBF: unknown centres %g for %g outputs", args[2], args[0]);
    return lenet_euclidean_rbf((int)args[0]);
}
