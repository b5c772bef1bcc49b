/* The sequential model: layer list, build (shape inference + one parameter arena), init and parameter access. */
#include <stdio.h>
#include <string.h>

#include "model/internal.h"

lenet_model *lenet_model_create(void)
{
    lenet_model *m = lenet__calloc(1, sizeof *m);
    if (!m)
        return lenet__oom("model"), NULL;
    m->training = true;
    m->reducer = &lenet__local_reducer;
    return m;
}

static void free_params(lenet_model *m)
{
    lenet__free_aligned(m->params);
    lenet__free_aligned(m->grads);
    lenet__free(m->param_tensors);
    lenet__free(m->grad_tensors);
    lenet__free(m->param_offset);
    lenet__free(m->param_layer);
    lenet__free(m->param_trainable);
    lenet__free(m->param_names);
    lenet__free(m->layer_first_param);
    lenet__free(m->grad_ptrs);
    lenet__free_aligned(m->buffers);
    lenet__free(m->buffer_tensors);
    lenet__free(m->buffer_layer);
    lenet__free(m->buffer_int64);
    lenet__free(m->buffer_names);
    lenet__free(m->act_tensors);
    lenet__free(m->stats_offset);
    lenet__free(m->stats_count);
    lenet__free(m->fwd_stats);
    lenet__free(m->bwd_stats);
    m->params = m->grads = m->buffers = NULL;
    m->param_tensors = m->grad_tensors = m->buffer_tensors = m->act_tensors = NULL;
    m->param_offset = m->param_layer = m->layer_first_param = m->buffer_layer = NULL;
    m->stats_offset = m->stats_count = NULL;
    m->fwd_stats = m->bwd_stats = NULL;
    m->param_trainable = m->buffer_int64 = NULL;
    m->param_names = m->buffer_names = NULL;
    m->grad_ptrs = NULL;
    m->n_params = m->arena_numel = m->n_buffers = m->buffer_arena_numel = 0;
    m->stats_total = m->stats_max = 0;
}

void lenet_model_free(lenet_model *m)
{
    if (!m)
        return;
    lenet__model_set_comm(m, NULL); /* a communicator's backend (lib/mpi) frees its duplicate */
    lenet__model_release_buffers(m);
    free_params(m);
    for (size_t i = 0; i < m->n_layers; i++)
        lenet_layer_free(m->layers[i]);
    lenet__free(m->layers);
    lenet__free(m);
}

/* Makes a failed add stick: the model would otherwise build without the layer, and a caller who did not check
 * the add would never learn it. */
static lenet_status stick(lenet_model *m, lenet_status st)
{
    if (m->sticky == LENET_OK) {
        m->sticky = st;
        snprintf(m->sticky_message, sizeof m->sticky_message, "%s", lenet_last_error());
    }
    return st;
}

lenet_status lenet__model_check_sticky(const lenet_model *m, const char *who)
{
    if (m->sticky == LENET_OK)
        return LENET_OK;
    return lenet__fail(m->sticky, "%s: a layer could not be added to this model, so it cannot run: %s", who,
                       m->sticky_message);
}

lenet_status lenet_model_add(lenet_model *m, lenet_layer *l)
{
    if (!m) {
        lenet_layer_free(l);
        return lenet__fail(LENET_EINVAL, "model_add: model is NULL");
    }
    if (!l) {
        /* A constructor failed: keep its message so the caller sees why. */
        lenet_status st = lenet__last_status();
        return stick(m, st < 0 ? st : lenet__fail(LENET_EINVAL, "model_add: layer is NULL"));
    }
    if (m->sticky != LENET_OK) {
        lenet_layer_free(l);
        return lenet__model_check_sticky(m, "model_add");
    }
    if (m->built) {
        lenet_status st = lenet__fail(LENET_ESTATE, "model_add: cannot add %s after the model is built", l->ops->name);
        lenet_layer_free(l);
        return stick(m, st);
    }
    if (m->n_layers == m->layers_cap) {
        size_t cap = m->layers_cap ? 2 * m->layers_cap : 8;
        lenet_layer **layers = lenet__realloc(m->layers, cap * sizeof *layers);
        if (!layers) {
            lenet_layer_free(l);
            return stick(m, lenet__oom("model layers"));
        }
        m->layers = layers;
        m->layers_cap = cap;
    }
    m->layers[m->n_layers++] = l;
    return LENET_OK;
}

size_t lenet_model_layer_count(const lenet_model *m)
{
    return m ? m->n_layers : 0;
}

const lenet_layer *lenet_model_layer(const lenet_model *m, size_t i)
{
    return (m && i < m->n_layers) ? m->layers[i] : NULL;
}

bool lenet_model_is_built(const lenet_model *m)
{
    return m && m->built;
}

lenet_status lenet_model_set_training(lenet_model *m, bool training)
{
    if (!m)
        return lenet__fail(LENET_EINVAL, "model_set_training: model is NULL");
    m->training = training;
    return LENET_OK;
}

bool lenet_model_is_training(const lenet_model *m)
{
    return m && m->training;
}

lenet_status lenet_model_set_stop_flag(lenet_model *m, const volatile sig_atomic_t *flag)
{
    if (!m)
        return lenet__fail(LENET_EINVAL, "model_set_stop_flag: model is NULL");
    m->stop_flag = flag;
    return LENET_OK;
}

lenet_status lenet_model_input_shape(const lenet_model *m, int *channels, int *height, int *width)
{
    if (!m)
        return lenet__fail(LENET_EINVAL, "model_input_shape: model is NULL");
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "model_input_shape: the model is not built");
    if (channels)
        *channels = m->in_shape.dim[0];
    if (height)
        *height = m->in_shape.dim[1];
    if (width)
        *width = m->in_shape.dim[2];
    return LENET_OK;
}

size_t lenet_model_output_size(const lenet_model *m)
{
    return (m && m->built) ? m->layers[m->n_layers - 1]->out_size : 0;
}

/* ---- planning: shapes and tensor specs, without allocating ---- */

/* Adds one tensor to an arena's float count (each tensor starting 64-byte aligned) and to its unpadded element
 * count, within the model's limits. */
static lenet_status arena_add(const lenet_param_spec *spec, size_t *arena, size_t *elements)
{
    size_t count;
    lenet_status st = lenet__shape_numel(spec->ndim, spec->shape, &count);
    if (st != LENET_OK)
        return st;
    if (count > LENET_MAX_PARAM_ELEMENTS)
        return lenet__fail(LENET_ESHAPE, "%s has %zu elements, more than the %zu a parameter may have "
                           "(LENET_MAX_PARAM_ELEMENTS)", spec->suffix, count, LENET_MAX_PARAM_ELEMENTS);
    *elements += count; /* <= *arena, which the limit below bounds */
    count = (count + 15) & ~(size_t)15;
    if (lenet__add_overflows(*arena, count, arena) || *arena > LENET_MAX_MODEL_ELEMENTS)
        return lenet__fail(LENET_ESHAPE, "the parameters exceed the %zu elements a model may have "
                           "(LENET_MAX_MODEL_ELEMENTS)", LENET_MAX_MODEL_ELEMENTS);
    return LENET_OK;
}

/* Shapes and specs of layer i for input `in`; the caller prefixes errors with the layer. */
static lenet_status plan_layer(lenet_layer *l, const lenet_shape *in, lenet_shape *out, lenet_param_spec *specs,
                               int *count)
{
    lenet_status st = l->ops->infer_shape(l, in, out);
    if (st == LENET_OK)
        st = lenet__shape_check(out, "output", NULL);
    if (st != LENET_OK)
        return st;
    l->in = *in;
    l->out = *out;
    l->in_size = lenet__shape_size(in);
    l->out_size = lenet__shape_size(out);
    *count = 0;
    return l->ops->setup ? l->ops->setup(l, specs, count) : LENET_OK;
}

void lenet__model_plan_free(lenet_model_plan *plan)
{
    lenet__free(plan->specs);
    lenet__free(plan->n_params);
    lenet__free(plan->n_buffers);
    *plan = (lenet_model_plan){0};
}

lenet_status lenet__model_plan(lenet_model *m, lenet_shape in, lenet_model_plan *plan)
{
    *plan = (lenet_model_plan){0};
    plan->specs = lenet__calloc(m->n_layers, sizeof *plan->specs);
    plan->n_params = lenet__calloc(m->n_layers, sizeof *plan->n_params);
    plan->n_buffers = lenet__calloc(m->n_layers, sizeof *plan->n_buffers);
    if (!plan->specs || !plan->n_params || !plan->n_buffers) {
        lenet__model_plan_free(plan);
        return lenet__oom("model plan");
    }
    lenet_status st = lenet__shape_check(&in, "the input", &m->max_size);
    for (size_t i = 0; i < m->n_layers && st == LENET_OK; i++) {
        lenet_layer *l = m->layers[i];
        lenet_shape out;
        int count = 0;
        st = plan_layer(l, &in, &out, plan->specs[i], &count);
        for (int j = 0; j < count && st == LENET_OK; j++) {
            const lenet_param_spec *spec = &plan->specs[i][j];
            int *kind = spec->buffer ? &plan->n_buffers[i] : &plan->n_params[i];
            /* Parameters first, then buffers: the order the layer's views are filled in.  A layer's own bug. */
            if ((!spec->buffer && plan->n_buffers[i] > 0) ||
                *kind == (spec->buffer ? LENET_MAX_LAYER_BUFFERS : LENET_MAX_LAYER_PARAMS)) {
                st = lenet__fail(LENET_ESTATE, "tensor %d (%s) breaks the layer's tensor list", j, spec->suffix);
                break;
            }
            (*kind)++;
            if (spec->buffer) {
                plan->buffers++;
                st = arena_add(spec, &plan->buffer_arena, &plan->buffer_elements);
            } else {
                plan->params++;
                st = arena_add(spec, &plan->param_arena, &plan->param_elements);
            }
        }
        if (st != LENET_OK) {
            lenet__error_prefix("layer %zu (%s): ", i, l->ops->name);
            break;
        }
        if (l->out_size > m->max_size)
            m->max_size = l->out_size;
        in = out;
    }
    if (st != LENET_OK) {
        lenet__model_plan_free(plan);
        lenet__model_forget_shapes(m);
    }
    return st;
}

void lenet__model_forget_shapes(lenet_model *m)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        lenet_layer *l = m->layers[i];
        memset(&l->in, 0, sizeof l->in);
        memset(&l->out, 0, sizeof l->out);
        l->in_size = l->out_size = 0;
        l->n_params = l->n_buffers = 0;
    }
}

/* ---- build ---- */

/* Allocates the per-tensor tables and the arenas a plan asks for. */
static lenet_status alloc_arenas(lenet_model *m, const lenet_model_plan *plan)
{
    size_t n = plan->params ? plan->params : 1, nb = plan->buffers ? plan->buffers : 1;
    size_t numel = plan->param_arena ? plan->param_arena : 1;
    size_t bnumel = plan->buffer_arena ? plan->buffer_arena : 1;
    m->param_tensors = lenet__calloc(n, sizeof *m->param_tensors);
    m->grad_tensors = lenet__calloc(n, sizeof *m->grad_tensors);
    m->param_offset = lenet__calloc(n, sizeof *m->param_offset);
    m->param_layer = lenet__calloc(n, sizeof *m->param_layer);
    m->param_trainable = lenet__calloc(n, sizeof *m->param_trainable);
    m->param_names = lenet__calloc(n, sizeof *m->param_names);
    m->grad_ptrs = lenet__calloc(n, sizeof *m->grad_ptrs);
    m->layer_first_param = lenet__calloc(m->n_layers, sizeof *m->layer_first_param);
    m->params = lenet__malloc_aligned(numel * sizeof(float));
    m->grads = lenet__malloc_aligned(numel * sizeof(float));
    m->buffer_tensors = lenet__calloc(nb, sizeof *m->buffer_tensors);
    m->buffer_layer = lenet__calloc(nb, sizeof *m->buffer_layer);
    m->buffer_int64 = lenet__calloc(nb, sizeof *m->buffer_int64);
    m->buffer_names = lenet__calloc(nb, sizeof *m->buffer_names);
    m->buffers = lenet__malloc_aligned(bnumel * sizeof(float));
    m->act_tensors = lenet__calloc(m->n_layers, sizeof *m->act_tensors);
    m->stats_offset = lenet__calloc(m->n_layers, sizeof *m->stats_offset);
    m->stats_count = lenet__calloc(m->n_layers, sizeof *m->stats_count);
    if (!m->param_tensors || !m->grad_tensors || !m->param_offset || !m->param_layer || !m->param_trainable ||
        !m->param_names || !m->grad_ptrs || !m->layer_first_param || !m->params || !m->grads || !m->buffer_tensors ||
        !m->buffer_layer || !m->buffer_int64 || !m->buffer_names || !m->buffers || !m->act_tensors ||
        !m->stats_offset || !m->stats_count)
        return lenet__oom("model parameters");
    memset(m->params, 0, numel * sizeof(float));
    memset(m->grads, 0, numel * sizeof(float));
    memset(m->buffers, 0, bnumel * sizeof(float));
    m->n_params = plan->params;
    m->arena_numel = plan->param_arena;
    m->n_buffers = plan->buffers;
    m->buffer_arena_numel = plan->buffer_arena;
    return LENET_OK;
}

/* Whole-batch layers' statistics: where each layer's start, and room for the forward and backward sums. */
static lenet_status alloc_stats(lenet_model *m)
{
    size_t total = 0, most = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const lenet_layer *l = m->layers[i];
        size_t count = l->ops->batch_stats ? l->ops->batch_stats(l, true) : 0;
        m->stats_offset[i] = total;
        m->stats_count[i] = count;
        total += count; /* a layer's statistics are per channel or feature, so within the sample limit */
        if (count > most)
            most = count;
    }
    m->stats_total = total;
    m->stats_max = most;
    m->fwd_stats = lenet__calloc(total ? total : 1, sizeof *m->fwd_stats);
    m->bwd_stats = lenet__calloc(total ? total : 1, sizeof *m->bwd_stats);
    return (m->fwd_stats && m->bwd_stats) ? LENET_OK : lenet__oom("batch statistics");
}

/* Points the tensors and the layers' views into the arenas, tensor by tensor in layer order. */
static void lay_out_tensors(lenet_model *m, const lenet_model_plan *plan)
{
    size_t t = 0, b = 0, offset = 0, boffset = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        lenet_layer *l = m->layers[i];
        m->layer_first_param[i] = t;
        l->n_params = plan->n_params[i];
        l->n_buffers = plan->n_buffers[i];
        for (int j = 0; j < l->n_params; j++, t++) {
            const lenet_param_spec *sp = &plan->specs[i][j];
            lenet__tensor_view(&m->param_tensors[t], sp->ndim, sp->shape, m->params + offset);
            lenet__tensor_view(&m->grad_tensors[t], sp->ndim, sp->shape, m->grads + offset);
            m->param_offset[t] = offset;
            m->param_layer[t] = i;
            m->param_trainable[t] = sp->trainable;
            m->grad_ptrs[t] = m->grads + offset;
            snprintf(m->param_names[t], LENET_PARAM_NAME_SIZE, "%zu.%s", i, sp->suffix);
            l->param[j] = m->params + offset;
            l->param_numel[j] = m->param_tensors[t].numel;
            offset += (m->param_tensors[t].numel + 15) & ~(size_t)15;
        }
        for (int j = 0; j < l->n_buffers; j++, b++) {
            const lenet_param_spec *sp = &plan->specs[i][l->n_params + j];
            lenet__tensor_view(&m->buffer_tensors[b], sp->ndim, sp->shape, m->buffers + boffset);
            m->buffer_layer[b] = i;
            m->buffer_int64[b] = sp->int64;
            snprintf(m->buffer_names[b], LENET_PARAM_NAME_SIZE, "%zu.%s", i, sp->suffix);
            l->buffer[j] = m->buffers + boffset;
            l->buffer_numel[j] = m->buffer_tensors[b].numel;
            boffset += (m->buffer_tensors[b].numel + 15) & ~(size_t)15;
        }
    }
}

lenet_status lenet_model_build(lenet_model *m, int channels, int height, int width)
{
    if (!m)
        return lenet__fail(LENET_EINVAL, "model_build: model is NULL");
    lenet_status st = lenet__model_check_sticky(m, "model_build");
    if (st != LENET_OK)
        return st;
    if (channels < 1 || height < 1 || width < 1)
        return lenet__fail(LENET_EINVAL, "model_build: input size %dx%dx%d must be positive", channels, height,
                           width);
    lenet_shape in = {.ndim = 3, .dim = {channels, height, width}};
    if (m->built) {
        if (lenet__shape_equal(&in, &m->in_shape))
            return LENET_OK;
        return lenet__fail(LENET_ESTATE, "model_build: already built for input %dx%dx%d, not %dx%dx%d",
                           m->in_shape.dim[0], m->in_shape.dim[1], m->in_shape.dim[2], channels, height, width);
    }
    if (m->n_layers == 0)
        return lenet__fail(LENET_EINVAL, "model_build: the model has no layers");

    lenet_model_plan plan;
    st = lenet__model_plan(m, in, &plan);
    if (st != LENET_OK) {
        lenet__error_prefix("model_build: ");
        return st;
    }
    st = alloc_arenas(m, &plan);
    if (st == LENET_OK)
        st = alloc_stats(m);
    if (st != LENET_OK) {
        free_params(m);
        lenet__model_forget_shapes(m);
        lenet__model_plan_free(&plan);
        return st;
    }
    lay_out_tensors(m, &plan);
    lenet__model_plan_free(&plan);
    m->in_shape = in;
    m->built = true;
    return lenet_model_init(m, LENET_INIT_PYTORCH, 0);
}

lenet_status lenet_model_init(lenet_model *m, lenet_init scheme, uint64_t seed)
{
    if (!m)
        return lenet__fail(LENET_EINVAL, "model_init: model is NULL");
    if (scheme != LENET_INIT_PYTORCH && scheme != LENET_INIT_XAVIER_UNIFORM && scheme != LENET_INIT_LECUN)
        return lenet__fail(LENET_EINVAL, "model_init: unknown scheme %d", (int)scheme);
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "model_init: build the model first (lenet_model_build)");
    lenet_rng rng;
    lenet__rng_seed(&rng, seed);
    m->seed = seed;
    m->step = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        lenet_layer *l = m->layers[i];
        if (l->ops->init)
            l->ops->init(l, scheme, &rng);
    }
    return lenet_model_zero_grad(m);
}

lenet_status lenet_model_zero_grad(lenet_model *m)
{
    if (!m)
        return lenet__fail(LENET_EINVAL, "model_zero_grad: model is NULL");
    if (m->grads)
        memset(m->grads, 0, m->arena_numel * sizeof(float));
    return LENET_OK;
}

size_t lenet_model_param_count(const lenet_model *m)
{
    return m ? m->n_params : 0;
}

size_t lenet_model_param_numel(const lenet_model *m)
{
    size_t total = 0;
    for (size_t i = 0; m && i < m->n_params; i++)
        if (m->param_trainable[i])
            total += m->param_tensors[i].numel;
    return total;
}

lenet_tensor *lenet_model_param(lenet_model *m, size_t i)
{
    return (m && i < m->n_params) ? &m->param_tensors[i] : NULL;
}

lenet_tensor *lenet_model_grad(lenet_model *m, size_t i)
{
    return (m && i < m->n_params) ? &m->grad_tensors[i] : NULL;
}

const char *lenet_model_param_name(const lenet_model *m, size_t i)
{
    return (m && i < m->n_params) ? m->param_names[i] : NULL;
}

size_t lenet_model_buffer_count(const lenet_model *m)
{
    return m ? m->n_buffers : 0;
}

lenet_tensor *lenet_model_buffer(lenet_model *m, size_t i)
{
    return (m && i < m->n_buffers) ? &m->buffer_tensors[i] : NULL;
}

const char *lenet_model_buffer_name(const lenet_model *m, size_t i)
{
    return (m && i < m->n_buffers) ? m->buffer_names[i] : NULL;
}

const lenet_tensor *lenet_model_activation(const lenet_model *m, size_t i)
{
    return (m && m->built && m->last_batch > 0 && i < m->n_layers) ? &m->act_tensors[i] : NULL;
}
