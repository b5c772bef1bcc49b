/* The fused plan backend: the plan's network cut into stages, each a convolution or Linear layer with the
 * activation and pooling after it (or a pooling or activation alone), run by the fused kernels (lib/kernels/fused.h)
 * so that every activation is written once, straight into the layout the next stage reads.
 *
 * Batches go through in lane groups: LENET_LANES samples transposed once into a lane tensor (one sample per lane),
 * every stage on lane tensors, transposed back once at the output.  A group of fewer samples than the kernel
 * table's lanes_min (one image, the tail of a batch) runs one sample at a time instead, with output columns, output
 * channels or Linear outputs across the lanes.
 *
 * Between two stages lies a boundary: the image the first writes and the second reads, laid out for the reader
 * (the zero border its convolution's padding wants, the row length its row kernel reads).  Each boundary has its
 * own buffer in the workspace, per family, so a border zeroed once per run stays zero for every group. */
#include <assert.h>
#include <string.h>

#include "kernels/fused.h"
#include "plan/internal.h"

typedef enum stage_kind {
    STAGE_CONV,   /* Conv2d, stride 1, then its activation and 2x2 pooling if any */
    STAGE_LINEAR, /* Linear, then its activation if any */
    STAGE_MAP,    /* a pooling (any window) or an activation alone */
} stage_kind;

typedef struct stage {
    stage_kind kind;
    lenet_conv_geom g;      /* conv: the convolution; map: the window sweep (k = s = 1 for an activation alone) */
    int oc;                 /* conv: output channels */
    lenet_epilogue e;       /* conv and map; Linear's activation is e.act */
    bool rows;              /* conv, one sample: output columns across the lanes, else output channels */
    const float *weight;    /* conv: (oc, c, k, k); Linear: (out, in); both the plan network's own */
    const float *bias;      /* conv: (oc), the network's; Linear: the packed bias, ldw floats */
    const float *packed;    /* conv: packed for the channel kernel; Linear: the weight transposed (in, ldw) */
    int in, out, ldw;       /* Linear */
} stage;

/* An image between two stages, as its writer shapes it (c, h, w) and its reader lays it out: a zero border of `pad`
 * and, for one sample, rows of `row` floats.  A reader of another shape (after Flatten) only ever sees contiguous
 * boundaries (pad 0, row w). */
typedef struct boundary {
    int c, h, w, pad, row;
    size_t lanes_at, sample_at; /* offsets of its two buffers in the workspace, in floats */
} boundary;

typedef struct fused_plan {
    int n_stages;
    stage *stages;
    boundary *bounds;           /* n_stages + 1: bounds[i] is read by stage i and written by stage i - 1 */
    size_t lanes_floats;        /* the lane buffers, 0 when max_batch < LENET_FUSED_LANES_MIN */
    size_t sample_floats;       /* the per-sample buffers, after them */
    float *packed;              /* every stage's packed weights, one allocation */
} fused_plan;

/* ---- which networks: the layer kinds the fused kernels run ----
 * Recognized by their names, which STYLE.md would have be a slot of lenet_layer_ops instead (each kind saying "a
 * convolution of these sizes", "an activation", "a pooling"); lib/layers was not this backend's to change, so the
 * names stay in this one place. */

static bool is_kind(const lenet_layer *l, const char *name)
{
    return strcmp(l->ops->name, name) == 0;
}

static lenet_act act_of(const lenet_layer *l)
{
    return is_kind(l, "Sigmoid") ? LENET_ACT_SIGMOID
         : is_kind(l, "ReLU")    ? LENET_ACT_RELU
         : is_kind(l, "Tanh")    ? LENET_ACT_TANH
                                 : LENET_ACT_NONE;
}

static lenet_pool pool_of(const lenet_layer *l)
{
    return is_kind(l, "AvgPool2d") ? LENET_POOL_AVG : is_kind(l, "MaxPool2d") ? LENET_POOL_MAX : LENET_POOL_NONE;
}

/* A layer's per-sample shape as (c, h, w): (features, 1, 1) when flat. */
static void shape3(const lenet_shape *s, int *c, int *h, int *w)
{
    *c = s->dim[0];
    *h = s->ndim == 3 ? s->dim[1] : 1;
    *w = s->ndim == 3 ? s->dim[2] : 1;
}

/* Output columns across the lanes fill more of 16-float vectors than output channels do (LeNet's first layer:
 * 28 of 32 columns against 6 of 16 channels).  Decided once, for every instruction set. */
static bool prefers_rows(const lenet_conv_geom *g, int oc)
{
    const long v = LENET_FUSED_PAD, cols = (g->ow + v - 1) / v * v, chans = (oc + v - 1) / v * v;
    return (long)g->ow * chans > (long)oc * cols;
}

/* Cuts the network into stages; false when a layer is not of a kind the fused kernels run (or there is none). */
static bool cut_stages(const lenet_model *net, fused_plan *fp)
{
    const size_t n = net->n_layers;
    int count = 0;
    for (size_t i = 0; i < n;) {
        const lenet_layer *l = net->layers[i];
        stage *s = &fp->stages[count];
        memset(s, 0, sizeof *s);
        int c, h, w;
        shape3(&l->in, &c, &h, &w);
        if (is_kind(l, "Conv2d")) {
            if (l->n_args != 4 || l->args[2] != 1.0 || l->in.ndim != 3)
                return false;
            s->kind = STAGE_CONV;
            s->g = (lenet_conv_geom){.c = c, .h = h, .w = w, .k = (int)l->args[1], .s = 1, .p = (int)l->args[3],
                                     .oh = l->out.dim[1], .ow = l->out.dim[2]};
            s->oc = l->out.dim[0];
            s->weight = l->param[0];
            s->bias = l->param[1];
            s->rows = prefers_rows(&s->g, s->oc);
            i++;
            if (i < n && act_of(net->layers[i]) != LENET_ACT_NONE)
                s->e.act = act_of(net->layers[i++]);
            if (i < n && pool_of(net->layers[i]) != LENET_POOL_NONE) {
                const lenet_layer *pl = net->layers[i];
                const lenet_epilogue pe = {.pool = pool_of(pl), .pool_k = (int)pl->args[0], .pool_s = (int)pl->args[1]};
                if (lenet__fused_pools_in_registers(&pe)) {
                    s->e.pool = pe.pool;
                    s->e.pool_k = pe.pool_k;
                    s->e.pool_s = pe.pool_s;
                    i++;
                    if (i < n && act_of(net->layers[i]) != LENET_ACT_NONE)
                        s->e.act_after = act_of(net->layers[i++]);
                }
            }
        } else if (is_kind(l, "Linear")) {
            s->kind = STAGE_LINEAR;
            s->in = l->in.dim[0];
            s->out = l->out.dim[0];
            s->ldw = (s->out + LENET_FUSED_PAD - 1) / LENET_FUSED_PAD * LENET_FUSED_PAD;
            s->weight = l->param[0];
            s->bias = l->param[1];
            i++;
            if (i < n && act_of(net->layers[i]) != LENET_ACT_NONE)
                s->e.act = act_of(net->layers[i++]);
        } else if (pool_of(l) != LENET_POOL_NONE) {
            s->kind = STAGE_MAP;
            s->g = (lenet_conv_geom){.c = c, .h = h, .w = w, .k = (int)l->args[0], .s = (int)l->args[1],
                                     .oh = l->out.dim[1], .ow = l->out.dim[2]};
            s->e.pool = pool_of(l);
            s->e.pool_k = s->g.k;
            s->e.pool_s = s->g.s;
            i++;
            if (i < n && act_of(net->layers[i]) != LENET_ACT_NONE)
                s->e.act_after = act_of(net->layers[i++]);
        } else if (act_of(l) != LENET_ACT_NONE) {
            s->kind = STAGE_MAP;
            s->g = (lenet_conv_geom){.c = c, .h = h, .w = w, .k = 1, .s = 1, .oh = h, .ow = w};
            s->e.act = act_of(l);
            i++;
        } else if (is_kind(l, "Flatten")) {
            i++;
            continue; /* the data are already in that order: the next reader sees its boundary flat */
        } else {
            return false;
        }
        count++;
    }
    fp->n_stages = count;
    return count > 0;
}

/* The image stage i writes, (c, h, w). */
static void stage_output(const stage *s, int *c, int *h, int *w)
{
    switch (s->kind) {
    case STAGE_CONV:
        *c = s->oc;
        *h = s->e.pool != LENET_POOL_NONE ? s->g.oh / 2 : s->g.oh;
        *w = s->e.pool != LENET_POOL_NONE ? s->g.ow / 2 : s->g.ow;
        break;
    case STAGE_LINEAR:
        *c = s->out;
        *h = *w = 1;
        break;
    case STAGE_MAP:
        *c = s->g.c;
        *h = s->g.oh;
        *w = s->g.ow;
        break;
    }
}

static size_t round16(size_t floats)
{
    return (floats + 15) & ~(size_t)15;
}

/* Shapes, layouts and buffer offsets of every boundary; false if the workspace would not fit a size_t. */
static bool lay_out(const lenet_model *net, fused_plan *fp, int max_batch)
{
    const int n = fp->n_stages;
    for (int i = 0; i <= n; i++) {
        boundary *b = &fp->bounds[i];
        if (i == 0)
            shape3(&net->in_shape, &b->c, &b->h, &b->w);
        else
            stage_output(&fp->stages[i - 1], &b->c, &b->h, &b->w);
        const stage *reader = i < n ? &fp->stages[i] : NULL;
        b->pad = reader && reader->kind == STAGE_CONV ? reader->g.p : 0;
        b->row = b->w + 2 * b->pad;
        if (reader && reader->kind == STAGE_CONV && reader->rows)
            b->row = lenet__fused_row_stride(&reader->g);
    }
    /* Lane buffers for every boundary (the output's before from_lanes too), then per-sample ones for all but the
     * output, which goes straight to y. */
    size_t total = 0;
    for (int i = 0; i <= n; i++) {
        boundary *b = &fp->bounds[i];
        size_t floats = 0;
        if (max_batch >= LENET_FUSED_LANES_MIN &&
            (lenet__mul_overflows((size_t)b->c * (size_t)(b->h + 2 * b->pad), (size_t)(b->w + 2 * b->pad), &floats) ||
             lenet__mul_overflows(floats, LENET_LANES, &floats)))
            return false;
        b->lanes_at = total;
        if (lenet__add_overflows(total, round16(floats), &total))
            return false;
    }
    fp->lanes_floats = total;
    for (int i = 0; i < n; i++) {
        boundary *b = &fp->bounds[i];
        size_t floats;
        if (lenet__mul_overflows((size_t)b->c * (size_t)(b->h + 2 * b->pad), (size_t)b->row, &floats))
            return false;
        b->sample_at = total;
        /* Row kernels load whole vectors: slack after the last row. */
        if (lenet__add_overflows(total, round16(floats + LENET_MAX_VECTOR_FLOATS), &total))
            return false;
    }
    fp->sample_floats = total - fp->lanes_floats;
    return true;
}

/* Packs the channel kernels' and the Linear kernels' weights into one allocation. */
static lenet_status pack(fused_plan *fp)
{
    size_t total = 0;
    for (int i = 0; i < fp->n_stages; i++) {
        const stage *s = &fp->stages[i];
        if (s->kind == STAGE_CONV && !s->rows) {
            const size_t taps = (size_t)s->g.c * s->g.k * s->g.k;
            total += round16((taps + 1) * round16((size_t)s->oc));
        } else if (s->kind == STAGE_LINEAR) {
            total += round16(((size_t)s->in + 1) * (size_t)s->ldw);
        }
    }
    if (total == 0)
        return LENET_OK;
    if (!(fp->packed = lenet__malloc_aligned(total * sizeof(float))))
        return lenet__oom("fused plan weights");
    float *at = fp->packed;
    for (int i = 0; i < fp->n_stages; i++) {
        stage *s = &fp->stages[i];
        if (s->kind == STAGE_CONV && !s->rows) {
            const size_t taps = (size_t)s->g.c * s->g.k * s->g.k;
            lenet__conv_pack_weights(s->oc, s->g.c, s->g.k, LENET_FUSED_PAD, s->weight, s->bias, at);
            s->packed = at;
            at += round16((taps + 1) * round16((size_t)s->oc));
        } else if (s->kind == STAGE_LINEAR) {
            const size_t in = (size_t)s->in, out = (size_t)s->out, ldw = (size_t)s->ldw;
            memset(at, 0, (in + 1) * ldw * sizeof(float));
            for (size_t o = 0; o < out; o++)
                for (size_t j = 0; j < in; j++)
                    at[j * ldw + o] = s->weight[o * in + j];
            memcpy(at + in * ldw, s->bias, out * sizeof(float));
            s->packed = at;
            s->bias = at + in * ldw;
            at += round16((in + 1) * ldw);
        }
    }
    return LENET_OK;
}

static void fused_destroy(void *impl)
{
    fused_plan *fp = impl;
    if (!fp)
        return;
    lenet__free_aligned(fp->packed);
    lenet__free(fp);
}

lenet_status lenet__plan_use_fused(lenet_plan *p)
{
    const lenet_model *net = p->net;
    const size_t n = net->n_layers;
    /* One allocation for the state, the stages (at most one per layer) and the boundaries. */
    fused_plan *fp = lenet__calloc(1, sizeof *fp + n * sizeof(stage) + (n + 1) * sizeof(boundary));
    if (!fp)
        return lenet__oom("fused plan");
    fp->stages = (stage *)(fp + 1);
    fp->bounds = (boundary *)(fp->stages + n);
    if (!cut_stages(net, fp) || !lay_out(net, fp, p->max_batch)) {
        fused_destroy(fp); /* not for these kernels: the layers backend stays */
        return LENET_OK;
    }
    lenet_status st = pack(fp);
    if (st != LENET_OK) {
        fused_destroy(fp);
        return st;
    }
    p->backend = &lenet__plan_fused;
    p->impl = fp;
    return LENET_OK;
}

/* ---- running ---- */

/* Where stage writers put boundary b's element (c, y, x): lanes (col LENET_LANES) or one sample (col 1). */
static lenet_view lanes_view(const boundary *b, float *work)
{
    const size_t row = (size_t)(b->w + 2 * b->pad) * LENET_LANES, plane = (size_t)(b->h + 2 * b->pad) * row;
    return (lenet_view){.data = work + b->lanes_at + (size_t)b->pad * row + (size_t)b->pad * LENET_LANES,
                        .plane = plane, .row = row};
}

static lenet_view sample_view(const boundary *b, float *work)
{
    const size_t row = (size_t)b->row, plane = (size_t)(b->h + 2 * b->pad) * row;
    return (lenet_view){.data = work + b->sample_at + (size_t)b->pad * row + (size_t)b->pad, .plane = plane,
                        .row = row};
}

/* The strides of a map stage's input, read as the stage's own shape: its boundary has no border and rows of w (the
 * reader sets both), so it is contiguous and a Flatten between its writer and it changes nothing. */
static void map_strides(const stage *s, const boundary *b, int lanes, size_t *plane, size_t *row)
{
    assert(b->pad == 0 && b->row == b->w);
    (void)b;
    *row = (size_t)s->g.w * lanes;
    *plane = (size_t)s->g.h * *row;
}

/* m samples of x through every stage on lane tensors, into y. */
static void run_lanes(const fused_plan *fp, const lenet_fused_kernels *fk, const lenet_kernels *kern, int m,
                      const float *x, float *y, float *work)
{
    const boundary *in = &fp->bounds[0], *out = &fp->bounds[fp->n_stages];
    kern->to_lanes(m, in->c, in->h, in->w, in->pad, x, work + in->lanes_at);
    for (int i = 0; i < fp->n_stages; i++) {
        const stage *s = &fp->stages[i];
        const boundary *b = &fp->bounds[i];
        const lenet_view to = lanes_view(&fp->bounds[i + 1], work);
        switch (s->kind) {
        case STAGE_CONV:
            fk->conv_lanes(&s->g, s->oc, work + b->lanes_at, s->weight, s->bias, &s->e, &to);
            break;
        case STAGE_LINEAR:
            fk->linear_lanes(s->in, s->out, work + b->lanes_at, s->packed, s->ldw, s->bias, s->e.act, to.data);
            break;
        case STAGE_MAP: {
            size_t plane, row;
            map_strides(s, b, LENET_LANES, &plane, &row);
            fk->map(&s->g, &s->e, LENET_LANES, work + b->lanes_at, plane, row, &to);
            break;
        }
        }
    }
    kern->from_lanes(m, (size_t)out->c * out->h * out->w, work + out->lanes_at, y);
}

/* One sample x through every stage, into y. */
static void run_sample(const fused_plan *fp, const lenet_fused_kernels *fk, const float *x, float *y, float *work)
{
    const boundary *in = &fp->bounds[0], *out = &fp->bounds[fp->n_stages];
    const lenet_view first = sample_view(in, work);
    if (in->pad == 0 && in->row == in->w) {
        memcpy(first.data, x, (size_t)in->c * in->h * in->w * sizeof(float));
    } else {
        for (int c = 0; c < in->c; c++)
            for (int r = 0; r < in->h; r++)
                memcpy(first.data + c * first.plane + r * first.row, x + ((size_t)c * in->h + r) * in->w,
                       (size_t)in->w * sizeof(float));
    }
    for (int i = 0; i < fp->n_stages; i++) {
        const stage *s = &fp->stages[i];
        const boundary *b = &fp->bounds[i];
        const lenet_view to = i + 1 < fp->n_stages
                                  ? sample_view(&fp->bounds[i + 1], work)
                                  : (lenet_view){.data = y, .plane = (size_t)out->h * out->w, .row = (size_t)out->w};
        switch (s->kind) {
        case STAGE_CONV:
            if (s->rows)
                fk->conv_rows(&s->g, s->oc, work + b->sample_at, b->row, s->weight, s->bias, &s->e, &to);
            else
                fk->conv_channels(&s->g, s->oc, work + b->sample_at, b->row, s->packed, &s->e, &to);
            break;
        case STAGE_LINEAR:
            fk->linear_sample(s->in, s->out, work + b->sample_at, s->packed, s->ldw, s->bias, s->e.act, to.data);
            break;
        case STAGE_MAP: {
            size_t plane, row;
            map_strides(s, b, 1, &plane, &row);
            fk->map(&s->g, &s->e, 1, work + b->sample_at, plane, row, &to);
            break;
        }
        }
    }
}

static size_t fused_workspace(const lenet_plan *p)
{
    const fused_plan *fp = p->impl;
    return (fp->lanes_floats + fp->sample_floats) * sizeof(float);
}

/* Zeroes the lane buffers of the boundaries between stages that have a border (the input's is written by
 * to_lanes, the rest by the stages), or every per-sample buffer whose rows are longer than the data. */
static void zero_borders(const fused_plan *fp, bool lanes, float *work)
{
    for (int i = lanes ? 1 : 0; i < fp->n_stages; i++) {
        const boundary *b = &fp->bounds[i];
        if (lanes && b->pad > 0)
            memset(work + b->lanes_at, 0,
                   (size_t)b->c * (b->h + 2 * b->pad) * (b->w + 2 * b->pad) * LENET_LANES * sizeof(float));
        if (!lanes && (b->pad > 0 || b->row > b->w))
            memset(work + b->sample_at, 0,
                   ((size_t)b->c * (b->h + 2 * b->pad) * b->row + LENET_MAX_VECTOR_FLOATS) * sizeof(float));
    }
}

static void fused_run(const lenet_plan *p, int batch, const float *x, float *y, void *workspace)
{
    const fused_plan *fp = p->impl;
    const lenet_fused_kernels *fk = lenet__fused_kernels();
    const lenet_kernels *kern = lenet__kernels();
    const boundary *in = &fp->bounds[0], *out = &fp->bounds[fp->n_stages];
    const size_t in_size = (size_t)in->c * in->h * in->w, out_size = (size_t)out->c * out->h * out->w;
    float *work = workspace;
    bool lanes_ready = false, sample_ready = false;
    for (int i0 = 0; i0 < batch; i0 += LENET_LANES) {
        const int m = batch - i0 < LENET_LANES ? batch - i0 : LENET_LANES;
        if (m >= fk->lanes_min && fp->lanes_floats > 0) {
            if (!lanes_ready)
                zero_borders(fp, true, work);
            lanes_ready = true;
            run_lanes(fp, fk, kern, m, x + (size_t)i0 * in_size, y + (size_t)i0 * out_size, work);
            continue;
        }
        if (!sample_ready)
            zero_borders(fp, false, work);
        sample_ready = true;
        for (int i = i0; i < i0 + m; i++)
            run_sample(fp, fk, x + (size_t)i * in_size, y + (size_t)i * out_size, work);
    }
}

const lenet_plan_backend lenet__plan_fused = {
    .name = "fused",
    .workspace = fused_workspace,
    .run = fused_run,
    .destroy = fused_destroy,
};
