/* The sequential model: layer list, build (shape inference + one parameter arena), init and parameter access. */
#include <stdio.h>
#include <string.h>

#include "model/internal.h"

lenet_model *lenet_model_create(void)
{
    lenet_model *m = lenet__calloc(1, sizeof *m);
    if (!m)
        return lenet__oom("model"), NULL;
    return m;
}

static void free_buffers(lenet_model *m)
{
    if (m->acts) {
        for (size_t i = 0; i <= m->n_layers; i++)
            lenet__free_aligned(m->acts[i]);
        lenet__free(m->acts);
        m->acts = NULL;
    }
    lenet__free_aligned(m->dbuf[0]);
    lenet__free_aligned(m->dbuf[1]);
    lenet__free_aligned(m->work);
    lenet__free_aligned(m->chunk_grads);
    m->dbuf[0] = m->dbuf[1] = m->work = m->chunk_grads = NULL;
    m->work_cap = 0;
    m->threads_cap = 0;
    m->batch_cap = 0;
    m->last_batch = 0;
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
    m->params = m->grads = NULL;
    m->param_tensors = m->grad_tensors = NULL;
    m->param_offset = m->param_layer = m->layer_first_param = NULL;
    m->param_trainable = NULL;
    m->param_names = NULL;
    m->grad_ptrs = NULL;
    m->n_params = m->arena_numel = 0;
}

void lenet_model_free(lenet_model *m)
{
    if (!m)
        return;
    free_buffers(m);
    free_params(m);
    for (size_t i = 0; i < m->n_layers; i++)
        lenet_layer_free(m->layers[i]);
    lenet__free(m->layers);
    lenet__free(m);
}

lenet_status lenet_model_add(lenet_model *m, lenet_layer *l)
{
    if (!l) {
        /* A constructor failed: keep its message so the caller sees why. */
        lenet_status st = lenet__last_status();
        return st < 0 ? st : lenet__fail(LENET_EINVAL, "model_add: layer is NULL");
    }
    if (!m) {
        lenet_layer_free(l);
        return lenet__fail(LENET_EINVAL, "model_add: model is NULL");
    }
    if (m->built) {
        lenet_status st = lenet__fail(LENET_ESTATE, "model_add: cannot add %s after the model is built", l->ops->name);
        lenet_layer_free(l);
        return st;
    }
    if (m->n_layers == m->layers_cap) {
        size_t cap = m->layers_cap ? 2 * m->layers_cap : 8;
        lenet_layer **layers = lenet__realloc(m->layers, cap * sizeof *layers);
        if (!layers) {
            lenet_layer_free(l);
            return lenet__oom("model layers");
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

/* Allocates the per-tensor tables and the two arenas for `n_params` tensors of `numel` floats in all. */
static lenet_status alloc_params(lenet_model *m, size_t n_params, size_t numel)
{
    size_t n = n_params ? n_params : 1;
    m->param_tensors = lenet__calloc(n, sizeof *m->param_tensors);
    m->grad_tensors = lenet__calloc(n, sizeof *m->grad_tensors);
    m->param_offset = lenet__calloc(n, sizeof *m->param_offset);
    m->param_layer = lenet__calloc(n, sizeof *m->param_layer);
    m->param_trainable = lenet__calloc(n, sizeof *m->param_trainable);
    m->param_names = lenet__calloc(n, sizeof *m->param_names);
    m->grad_ptrs = lenet__calloc(n, sizeof *m->grad_ptrs);
    m->layer_first_param = lenet__calloc(m->n_layers, sizeof *m->layer_first_param);
    m->params = lenet__malloc_aligned((numel ? numel : 1) * sizeof(float));
    m->grads = lenet__malloc_aligned((numel ? numel : 1) * sizeof(float));
    if (!m->param_tensors || !m->grad_tensors || !m->param_offset || !m->param_layer || !m->param_trainable ||
        !m->param_names || !m->grad_ptrs || !m->layer_first_param || !m->params || !m->grads)
        return lenet__oom("model parameters");
    memset(m->params, 0, (numel ? numel : 1) * sizeof(float));
    memset(m->grads, 0, (numel ? numel : 1) * sizeof(float));
    m->n_params = n_params;
    m->arena_numel = numel;
    return LENET_OK;
}

/* Walks the layers: shapes, then parameter specs.  With `specs` NULL it only counts. */
static lenet_status infer_layers(lenet_model *m, lenet_shape in, lenet_param_spec (*specs)[LENET_MAX_LAYER_PARAMS],
                                 int *spec_counts)
{
    lenet_status st = lenet__shape_check(&in, "model_build: the input", &m->max_size);
    if (st != LENET_OK)
        return st;
    for (size_t i = 0; i < m->n_layers; i++) {
        lenet_layer *l = m->layers[i];
        lenet_shape out;
        st = l->ops->infer_shape(l, &in, &out);
        if (st == LENET_OK)
            st = lenet__shape_check(&out, "output", NULL);
        if (st == LENET_OK) {
            l->in = in;
            l->out = out;
            l->in_size = lenet__shape_size(&in);
            l->out_size = lenet__shape_size(&out);
            spec_counts[i] = 0;
            if (l->ops->setup)
                st = l->ops->setup(l, specs[i], &spec_counts[i]);
        }
        if (st != LENET_OK) {
            lenet__error_prefix("layer %zu (%s): ", i, l->ops->name);
            return st;
        }
        if (l->out_size > m->max_size)
            m->max_size = l->out_size;
        in = out;
    }
    return LENET_OK;
}

/* Adds one parameter tensor to the arena's element count, each tensor starting 64-byte aligned, within the
 * model's limits. */
static lenet_status arena_add(const lenet_param_spec *spec, size_t *numel)
{
    size_t count;
    lenet_status st = lenet__shape_numel(spec->ndim, spec->shape, &count);
    if (st != LENET_OK)
        return st;
    if (count > LENET_MAX_PARAM_ELEMENTS)
        return lenet__fail(LENET_ESHAPE, "%s has %zu elements, more than the %zu a parameter may have "
                           "(LENET_MAX_PARAM_ELEMENTS)", spec->suffix, count, LENET_MAX_PARAM_ELEMENTS);
    count = (count + 15) & ~(size_t)15;
    if (lenet__add_overflows(*numel, count, numel) || *numel > LENET_MAX_MODEL_ELEMENTS)
        return lenet__fail(LENET_ESHAPE, "the parameters exceed the %zu elements a model may have "
                           "(LENET_MAX_MODEL_ELEMENTS)", LENET_MAX_MODEL_ELEMENTS);
    return LENET_OK;
}

static void forget_layer_shapes(lenet_model *m)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        lenet_layer *l = m->layers[i];
        memset(&l->in, 0, sizeof l->in);
        memset(&l->out, 0, sizeof l->out);
        l->n_params = 0;
    }
}

lenet_status lenet_model_build(lenet_model *m, int channels, int height, int width)
{
    if (!m)
        return lenet__fail(LENET_EINVAL, "model_build: model is NULL");
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

    lenet_status st = LENET_ENOMEM;
    lenet_param_spec (*specs)[LENET_MAX_LAYER_PARAMS] = lenet__calloc(m->n_layers, sizeof *specs);
    int *spec_counts = lenet__calloc(m->n_layers, sizeof *spec_counts);
    if (!specs || !spec_counts) {
        lenet__oom("model build");
        goto fail;
    }
    st = infer_layers(m, in, specs, spec_counts);
    if (st != LENET_OK)
        goto fail;

    size_t n_params = 0, numel = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        for (int j = 0; j < spec_counts[i]; j++) {
            st = arena_add(&specs[i][j], &numel);
            if (st != LENET_OK) {
                lenet__error_prefix("layer %zu (%s): ", i, m->layers[i]->ops->name);
                goto fail;
            }
            n_params++;
        }
    }
    st = alloc_params(m, n_params, numel);
    if (st != LENET_OK)
        goto fail;

    size_t t = 0, offset = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        lenet_layer *l = m->layers[i];
        m->layer_first_param[i] = t;
        l->n_params = spec_counts[i];
        for (int j = 0; j < spec_counts[i]; j++, t++) {
            const lenet_param_spec *sp = &specs[i][j];
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
    }
    m->in_shape = in;
    m->built = true;
    lenet__free(specs);
    lenet__free(spec_counts);
    return lenet_model_init(m, LENET_INIT_PYTORCH, 0);

fail:
    free_params(m);
    forget_layer_shapes(m);
    lenet__free(specs);
    lenet__free(spec_counts);
    return st;
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
