/* Human-readable descriptions of a model: PyTorch's per-layer shape loop and a fuller table. */
#include <stdio.h>
#include <string.h>

#include "model/internal.h"

/* "torch.Size([1, 6, 28, 28])" for a batch and a per-sample shape. */
static void torch_size(int batch, const lenet_shape *s, char *buf, size_t size)
{
    int dims[1 + LENET_MAX_SAMPLE_DIMS] = {batch};
    for (int d = 0; d < s->ndim; d++)
        dims[1 + d] = s->dim[d];
    char inner[96];
    lenet__shape_str(1 + s->ndim, dims, inner, sizeof inner);
    snprintf(buf, size, "torch.Size(%s)", inner);
}

lenet_status lenet_model_summary(lenet_model *m, int batch, int channels, int height, int width, FILE *out)
{
    if (!m || !out)
        return lenet__fail(LENET_EINVAL, "model_summary: %s is NULL", !m ? "model" : "output stream");
    lenet_status sticky = lenet__model_check_sticky(m, "model_summary");
    if (sticky != LENET_OK)
        return sticky;
    if (batch < 1 || channels < 1 || height < 1 || width < 1)
        return lenet__fail(LENET_EINVAL, "model_summary: input size %dx%dx%dx%d must be positive", batch, channels,
                           height, width);
    if (!m->built) {
        lenet_status st = lenet_model_build(m, channels, height, width);
        if (st != LENET_OK)
            return st;
    }
    /* Infer every shape first, so that nothing is printed when a layer does not fit. */
    lenet_shape *shapes = lenet__calloc(m->n_layers, sizeof *shapes);
    if (!shapes)
        return lenet__oom("summary");
    lenet_shape in = {.ndim = 3, .dim = {channels, height, width}};
    lenet_status st = lenet__shape_check(&in, "model_summary: the input", NULL);
    for (size_t i = 0; i < m->n_layers && st == LENET_OK; i++) {
        const lenet_layer *l = m->layers[i];
        st = l->ops->infer_shape(l, &in, &shapes[i]);
        if (st == LENET_OK)
            st = lenet__shape_check(&shapes[i], "output", NULL);
        if (st != LENET_OK)
            lenet__error_prefix("layer %zu (%s): ", i, l->ops->name);
        in = shapes[i];
    }
    for (size_t i = 0; i < m->n_layers && st == LENET_OK; i++) {
        char size[128];
        torch_size(batch, &shapes[i], size, sizeof size);
        if (fprintf(out, "%s output shape: \t %s\n", m->layers[i]->ops->name, size) < 0)
            st = lenet__fail(LENET_EIO, "model_summary: writing failed");
    }
    lenet__free(shapes);
    return st;
}

/* 61706 -> "61,706" */
static void with_commas(size_t v, char *buf, size_t size)
{
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%zu", v);
    size_t j = 0;
    for (int i = 0; i < n && j + 1 < size; i++) {
        if (i > 0 && (n - i) % 3 == 0 && j + 2 < size)
            buf[j++] = ',';
        buf[j++] = digits[i];
    }
    buf[j] = '\0';
}

lenet_status lenet_model_print(const lenet_model *m, FILE *out)
{
    if (!m || !out)
        return lenet__fail(LENET_EINVAL, "model_print: %s is NULL", !m ? "model" : "output stream");
    if (!m->built)
        return lenet__fail(LENET_ESTATE, "model_print: build the model first (lenet_model_build)");
    lenet_status sticky = lenet__model_check_sticky(m, "model_print");
    if (sticky != LENET_OK)
        return sticky;
    char shape[96], params[32], conns[32];
    int ok = fprintf(out, "%-5s %-14s %-22s %12s %14s\n", "Layer", "Type", "Output shape", "Params", "Connections");
    size_t total_params = 0, total_conns = 0;
    for (size_t i = 0; i < m->n_layers && ok >= 0; i++) {
        const lenet_layer *l = m->layers[i];
        size_t n = 0;
        for (int j = 0; j < l->n_params; j++)
            if (m->param_trainable[m->layer_first_param[i] + (size_t)j])
                n += l->param_numel[j];
        size_t c = l->ops->connections ? l->ops->connections(l) : 0;
        total_params += n;
        total_conns += c;
        lenet__shape_format(&l->out, shape, sizeof shape);
        with_commas(n, params, sizeof params);
        with_commas(c, conns, sizeof conns);
        ok = fprintf(out, "%-5zu %-14s %-22s %12s %14s\n", i, l->ops->name, shape, params, conns);
    }
    with_commas(total_params, params, sizeof params);
    with_commas(total_conns, conns, sizeof conns);
    if (ok >= 0)
        ok = fprintf(out, "Total trainable parameters: %s\nTotal connections: %s\n", params, conns);
    if (ok < 0)
        return lenet__fail(LENET_EIO, "model_print: writing failed");
    return LENET_OK;
}
