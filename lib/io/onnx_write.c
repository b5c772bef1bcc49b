/* ONNX export: a built model as one ONNX graph (operator set 13, float32), written in the protobuf wire format
 * without a protobuf library.  Every layer kind maps to standard operators that compute what the layer computes in
 * evaluation mode; LeNet-5's layers are spelled out exactly (docs/onnx.md):
 *   PartialConv2d  Conv over a dense (out, in, k, k) weight with zeros where the table has no connection
 *   Subsampling    AveragePool, Mul k*k (the window sum), Mul weight (C, 1, 1), Add bias (C, 1, 1)
 *   ScaledTanh     Mul S, Tanh, Mul A
 *   EuclideanRBF   Unsqueeze x to (N, 1, in), Sub the centres (out, in), Mul by itself, ReduceSum over axis 2
 * Parameters and running statistics are initializers under their state_dict names; the constants the patterns
 * need are initializers named "/<layer>/<what>". */
#include <stdio.h>
#include <string.h>

#include "io/internal.h"
#include "io/onnx_proto.h"
#include "io/protobuf.h"
#include "lenet/io.h"
#include "lenet/version.h"
#include "model/internal.h"

#define WHO "model_export_onnx"
#define NAME_SIZE 96

typedef struct onnx_writer {
    const lenet_model *m;
    lenet_pb_buf graph;      /* the GraphProto's fields so far: nodes and initializers */
    size_t layer;            /* the layer being exported */
    const char *kind;        /* its name, for node names */
    int nodes_in_layer;      /* numbers its nodes */
    bool last;               /* its output is the graph's output */
    char cur[NAME_SIZE];     /* the value the layer reads */
    char out[NAME_SIZE];     /* the value it writes */
} onnx_writer;

/* ---- building blocks ---- */

/* "/<layer>/<what>": a value or constant of the current layer. */
static const char *local_name(const onnx_writer *w, const char *what, char buf[NAME_SIZE])
{
    snprintf(buf, NAME_SIZE, "/%zu/%s", w->layer, what);
    return buf;
}

static void attr_begin(lenet_pb_buf *a, const char *name, int type)
{
    lenet__pb_put_string(a, ONNX_ATTR_NAME, name);
    lenet__pb_put_varint_field(a, ONNX_ATTR_TYPE, (uint64_t)type);
}

static void attr_end(lenet_pb_buf *attrs, lenet_pb_buf *a)
{
    lenet__pb_put_message(attrs, ONNX_NODE_ATTRIBUTE, a);
    lenet__pb_buf_free(a);
}

static void attr_int(lenet_pb_buf *attrs, const char *name, int64_t value)
{
    lenet_pb_buf a = {0};
    attr_begin(&a, name, ONNX_ATTR_TYPE_INT);
    lenet__pb_put_int64(&a, ONNX_ATTR_I, value);
    attr_end(attrs, &a);
}

static void attr_float(lenet_pb_buf *attrs, const char *name, float value)
{
    lenet_pb_buf a = {0};
    attr_begin(&a, name, ONNX_ATTR_TYPE_FLOAT);
    lenet__pb_put_float(&a, ONNX_ATTR_F, value);
    attr_end(attrs, &a);
}

/* An INTS attribute of `count` copies of `value` (kernel_shape, strides, pads...). */
static void attr_ints(lenet_pb_buf *attrs, const char *name, int64_t value, int count)
{
    lenet_pb_buf a = {0};
    attr_begin(&a, name, ONNX_ATTR_TYPE_INTS);
    for (int i = 0; i < count; i++)
        lenet__pb_put_int64(&a, ONNX_ATTR_INTS, value);
    attr_end(attrs, &a);
}

/* Appends a node reading `inputs` and writing `output`.  `attrs` (may be NULL) holds its encoded attributes. */
static void add_node(onnx_writer *w, const char *op, int n_inputs, const char *const *inputs, const char *output,
                     const lenet_pb_buf *attrs, const char *doc)
{
    lenet_pb_buf node = {0};
    for (int i = 0; i < n_inputs; i++)
        lenet__pb_put_string(&node, ONNX_NODE_INPUT, inputs[i]);
    lenet__pb_put_string(&node, ONNX_NODE_OUTPUT, output);
    char name[2 * NAME_SIZE];
    snprintf(name, sizeof name, "/%zu/%s/%s_%d", w->layer, w->kind, op, w->nodes_in_layer++);
    lenet__pb_put_string(&node, ONNX_NODE_NAME, name);
    lenet__pb_put_string(&node, ONNX_NODE_OP_TYPE, op);
    if (attrs)
        lenet__pb_append(&node, attrs);
    if (doc)
        lenet__pb_put_string(&node, ONNX_NODE_DOC_STRING, doc);
    lenet__pb_put_message(&w->graph, ONNX_GRAPH_NODE, &node);
    lenet__pb_buf_free(&node);
}

/* A node with one data input and constants after it: op(x, constants...) -> output. */
static void add_node1(onnx_writer *w, const char *op, const char *x, const char *c1, const char *c2,
                      const char *output, const lenet_pb_buf *attrs)
{
    const char *inputs[3] = {x, c1, c2};
    add_node(w, op, 1 + (c1 != NULL) + (c2 != NULL), inputs, output, attrs, NULL);
}

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* An initializer: `count` float32 values (or int64 values when `ints` is not NULL) of shape dims[ndim], stored
 * as little-endian raw_data. */
static void add_init(onnx_writer *w, const char *name, int ndim, const int64_t *dims, const float *floats,
                     const int64_t *ints, size_t count)
{
    lenet_pb_buf t = {0};
    for (int d = 0; d < ndim; d++)
        lenet__pb_put_int64(&t, ONNX_TENSOR_DIMS, dims[d]);
    lenet__pb_put_varint_field(&t, ONNX_TENSOR_DATA_TYPE, ints ? ONNX_INT64 : ONNX_FLOAT);
    lenet__pb_put_string(&t, ONNX_TENSOR_NAME, name);
    size_t width = ints ? 8 : 4, bytes;
    if (lenet__mul_overflows(count, width, &bytes)) {
        t.failed = true;
    } else {
        lenet__pb_put_header(&t, ONNX_TENSOR_RAW_DATA, bytes);
        for (size_t i = 0; i < count && !t.failed; i++) {
            unsigned char le[8];
            if (ints) {
                put_le(le, (uint64_t)ints[i], 8);
            } else {
                uint32_t bits;
                memcpy(&bits, &floats[i], 4);
                put_le(le, bits, 4);
            }
            lenet__pb_put_raw(&t, le, width);
        }
    }
    lenet__pb_put_message(&w->graph, ONNX_GRAPH_INITIALIZER, &t);
    lenet__pb_buf_free(&t);
}

static void add_init_tensor(onnx_writer *w, const char *name, const lenet_tensor *t)
{
    int64_t dims[LENET_TENSOR_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++)
        dims[d] = t->shape[d];
    add_init(w, name, t->ndim, dims, t->data, NULL, t->numel);
}

/* Parameter k of the current layer as an initializer; returns its state_dict name. */
static const char *param_init(onnx_writer *w, int k)
{
    size_t i = w->m->layer_first_param[w->layer] + (size_t)k;
    add_init_tensor(w, w->m->param_names[i], &w->m->param_tensors[i]);
    return w->m->param_names[i];
}

/* Buffer k of the current layer as an initializer; returns its state_dict name. */
static const char *buffer_init(onnx_writer *w, int k)
{
    for (size_t i = 0; i < w->m->n_buffers; i++) {
        if (w->m->buffer_layer[i] == w->layer && k-- == 0) {
            add_init_tensor(w, w->m->buffer_names[i], &w->m->buffer_tensors[i]);
            return w->m->buffer_names[i];
        }
    }
    return NULL; /* not reached: the layer kinds below ask only for buffers they have */
}

static const char *scalar_init(onnx_writer *w, const char *what, float value, char buf[NAME_SIZE])
{
    add_init(w, local_name(w, what, buf), 0, NULL, &value, NULL, 1);
    return buf;
}

static const char *ints_init(onnx_writer *w, const char *what, const int64_t *values, int count,
                             char buf[NAME_SIZE])
{
    int64_t dims[1] = {count};
    add_init(w, local_name(w, what, buf), 1, dims, NULL, values, (size_t)count);
    return buf;
}

static int arg(const lenet_layer *l, int k)
{
    return (int)l->args[k];
}

/* ---- the layer kinds ---- */

static void pool_attrs(lenet_pb_buf *attrs, int kernel_size, int stride)
{
    attr_ints(attrs, "kernel_shape", kernel_size, 2);
    attr_ints(attrs, "strides", stride, 2);
    attr_ints(attrs, "pads", 0, 4);
    attr_int(attrs, "ceil_mode", 0);
}

static void conv_node(onnx_writer *w, const char *weight, const char *bias, int kernel_size, int stride,
                      int padding, const char *doc)
{
    lenet_pb_buf attrs = {0};
    attr_ints(&attrs, "dilations", 1, 2);
    attr_int(&attrs, "group", 1);
    attr_ints(&attrs, "kernel_shape", kernel_size, 2);
    attr_ints(&attrs, "pads", padding, 4);
    attr_ints(&attrs, "strides", stride, 2);
    const char *inputs[3] = {w->cur, weight, bias};
    add_node(w, "Conv", 3, inputs, w->out, &attrs, doc);
    lenet__pb_buf_free(&attrs);
}

/* Conv2d(out_channels, kernel_size, stride, padding) */
static lenet_status export_conv2d(onnx_writer *w, const lenet_layer *l)
{
    const char *weight = param_init(w, 0), *bias = param_init(w, 1);
    conv_node(w, weight, bias, arg(l, 1), arg(l, 2), arg(l, 3), NULL);
    return LENET_OK;
}

/* PartialConv2d(out, in, k, table words...): the table is 48 bits per argument (lib/layers/partial_conv.c). */
static lenet_status export_partial_conv2d(onnx_writer *w, const lenet_layer *l)
{
    const int out_channels = arg(l, 0), in_channels = arg(l, 1), k = arg(l, 2);
    const size_t k2 = (size_t)k * (size_t)k, cells = (size_t)out_channels * (size_t)in_channels;
    char doc[sizeof LENET_ONNX_PARTIAL_MARK + 240];
    size_t mark = strlen(LENET_ONNX_PARTIAL_MARK);
    memcpy(doc, LENET_ONNX_PARTIAL_MARK, mark);
    for (size_t cell = 0; cell < cells; cell++) {
        uint64_t word = (uint64_t)l->args[3 + cell / 48];
        doc[mark + cell] = (word >> (cell % 48)) & 1 ? '1' : '0';
    }
    doc[mark + cells] = '\0';

    /* The dense weight: connection c's kernel at (o, i), zeros elsewhere. */
    size_t first = w->m->layer_first_param[w->layer];
    const lenet_tensor *sparse = &w->m->param_tensors[first];
    float *dense = lenet__calloc(cells * k2, sizeof(float));
    if (!dense)
        return lenet__oom("PartialConv2d dense weight");
    size_t c = 0;
    for (size_t cell = 0; cell < cells; cell++)
        if (doc[mark + cell] == '1' && c < (size_t)sparse->shape[0])
            memcpy(dense + cell * k2, sparse->data + k2 * c++, k2 * sizeof(float));
    int64_t dims[4] = {out_channels, in_channels, k, k};
    add_init(w, w->m->param_names[first], 4, dims, dense, NULL, cells * k2);
    lenet__free(dense);
    const char *bias = param_init(w, 1);
    conv_node(w, w->m->param_names[first], bias, k, 1, 0, doc);
    return LENET_OK;
}

static lenet_status export_pool(onnx_writer *w, const lenet_layer *l, const char *op)
{
    lenet_pb_buf attrs = {0};
    pool_attrs(&attrs, arg(l, 0), arg(l, 1));
    add_node1(w, op, w->cur, NULL, NULL, w->out, &attrs);
    lenet__pb_buf_free(&attrs);
    return LENET_OK;
}

static lenet_status export_avgpool2d(onnx_writer *w, const lenet_layer *l)
{
    return export_pool(w, l, "AveragePool");
}

static lenet_status export_maxpool2d(onnx_writer *w, const lenet_layer *l)
{
    return export_pool(w, l, "MaxPool");
}

static lenet_status export_elementwise(onnx_writer *w, const char *op)
{
    add_node1(w, op, w->cur, NULL, NULL, w->out, NULL);
    return LENET_OK;
}

static lenet_status export_sigmoid(onnx_writer *w, const lenet_layer *l)
{
    (void)l;
    return export_elementwise(w, "Sigmoid");
}

static lenet_status export_relu(onnx_writer *w, const lenet_layer *l)
{
    (void)l;
    return export_elementwise(w, "Relu");
}

static lenet_status export_tanh(onnx_writer *w, const lenet_layer *l)
{
    (void)l;
    return export_elementwise(w, "Tanh");
}

static lenet_status export_flatten(onnx_writer *w, const lenet_layer *l)
{
    (void)l;
    lenet_pb_buf attrs = {0};
    attr_int(&attrs, "axis", 1);
    add_node1(w, "Flatten", w->cur, NULL, NULL, w->out, &attrs);
    lenet__pb_buf_free(&attrs);
    return LENET_OK;
}

/* Linear: Gemm(x, W, b, transB = 1) = x W^T + b, as torch.onnx.export writes nn.Linear. */
static lenet_status export_linear(onnx_writer *w, const lenet_layer *l)
{
    (void)l;
    const char *weight = param_init(w, 0), *bias = param_init(w, 1);
    lenet_pb_buf attrs = {0};
    attr_float(&attrs, "alpha", 1.0f);
    attr_float(&attrs, "beta", 1.0f);
    attr_int(&attrs, "transB", 1);
    add_node1(w, "Gemm", w->cur, weight, bias, w->out, &attrs);
    lenet__pb_buf_free(&attrs);
    return LENET_OK;
}

/* BatchNorm1d/2d(eps, momentum) in inference form.  ONNX's momentum weighs the running statistics, PyTorch's the
 * batch's: 1 - momentum, as torch.onnx.export writes it (only training would use it). */
static lenet_status export_batchnorm(onnx_writer *w, const lenet_layer *l)
{
    const char *inputs[5] = {w->cur, param_init(w, 0), param_init(w, 1), buffer_init(w, 0), buffer_init(w, 1)};
    lenet_pb_buf attrs = {0};
    attr_float(&attrs, "epsilon", (float)l->args[0]);
    attr_float(&attrs, "momentum", (float)(1.0 - l->args[1]));
    add_node(w, "BatchNormalization", 5, inputs, w->out, &attrs, NULL);
    lenet__pb_buf_free(&attrs);
    return LENET_OK;
}

/* Subsampling(k, s): y = weight[c] * (window sum) + bias[c].  AveragePool gives the window's mean, Mul k*k its sum
 * (exactly when k*k is a power of two), then the per-map coefficient and bias, reshaped to (C, 1, 1) to broadcast
 * over (N, C, H, W). */
static lenet_status export_subsampling(onnx_writer *w, const lenet_layer *l)
{
    const int k = arg(l, 0);
    char pooled[NAME_SIZE], window[NAME_SIZE], sum[NAME_SIZE], shape[NAME_SIZE], weight_c11[NAME_SIZE],
        bias_c11[NAME_SIZE], scaled[NAME_SIZE];
    const char *weight = param_init(w, 0), *bias = param_init(w, 1);
    const int64_t c11[3] = {l->in.dim[0], 1, 1};
    ints_init(w, "shape_c11", c11, 3, shape);
    scalar_init(w, "window_size", (float)k * (float)k, window);
    add_node1(w, "Reshape", weight, shape, NULL, local_name(w, "weight_c11", weight_c11), NULL);
    add_node1(w, "Reshape", bias, shape, NULL, local_name(w, "bias_c11", bias_c11), NULL);
    lenet_pb_buf attrs = {0};
    pool_attrs(&attrs, k, arg(l, 1));
    add_node1(w, "AveragePool", w->cur, NULL, NULL, local_name(w, "window_mean", pooled), &attrs);
    lenet__pb_buf_free(&attrs);
    add_node1(w, "Mul", pooled, window, NULL, local_name(w, "window_sum", sum), NULL);
    add_node1(w, "Mul", sum, weight_c11, NULL, local_name(w, "scaled", scaled), NULL);
    add_node1(w, "Add", scaled, bias_c11, NULL, w->out, NULL);
    return LENET_OK;
}

/* ScaledTanh: A tanh(S x). */
static lenet_status export_scaled_tanh(onnx_writer *w, const lenet_layer *l)
{
    (void)l;
    char s[NAME_SIZE], a[NAME_SIZE], sx[NAME_SIZE], t[NAME_SIZE];
    scalar_init(w, "S", LENET_ONNX_SQUASH_S, s);
    scalar_init(w, "A", LENET_ONNX_SQUASH_A, a);
    add_node1(w, "Mul", w->cur, s, NULL, local_name(w, "Sx", sx), NULL);
    add_node1(w, "Tanh", sx, NULL, NULL, local_name(w, "tanh", t), NULL);
    add_node1(w, "Mul", t, a, NULL, w->out, NULL);
    return LENET_OK;
}

/* EuclideanRBF: y[n][i] = sum_j (x[n][j] - w[i][j])^2, the differences formed by broadcasting (N, 1, in) against
 * (out, in), so the sum is the layer's own, not an expansion into x^2 - 2 x w + w^2 that would cancel. */
static lenet_status export_rbf(onnx_writer *w, const lenet_layer *l)
{
    (void)l;
    char axis1[NAME_SIZE], axis2[NAME_SIZE], x3[NAME_SIZE], diff[NAME_SIZE], square[NAME_SIZE];
    const char *centres = param_init(w, 0);
    ints_init(w, "axis_1", (const int64_t[]){1}, 1, axis1);
    ints_init(w, "axis_2", (const int64_t[]){2}, 1, axis2);
    add_node1(w, "Unsqueeze", w->cur, axis1, NULL, local_name(w, "x", x3), NULL);
    add_node1(w, "Sub", x3, centres, NULL, local_name(w, "difference", diff), NULL);
    const char *inputs[2] = {diff, diff};
    add_node(w, "Mul", 2, inputs, local_name(w, "square", square), NULL, NULL);
    lenet_pb_buf attrs = {0};
    attr_int(&attrs, "keepdims", 0);
    add_node1(w, "ReduceSum", square, axis2, NULL, w->out, &attrs);
    lenet__pb_buf_free(&attrs);
    return LENET_OK;
}

/* The ONNX form of each layer kind, by the kind's name.  Dropout has none to write: it is the identity in
 * evaluation mode.  A kind missing here is LENET_EUNSUPPORTED. */
static const struct {
    const char *kind;
    lenet_status (*export)(onnx_writer *w, const lenet_layer *l);
} exporters[] = {
    {"Conv2d", export_conv2d},       {"PartialConv2d", export_partial_conv2d},
    {"AvgPool2d", export_avgpool2d}, {"MaxPool2d", export_maxpool2d},
    {"Sigmoid", export_sigmoid},     {"ReLU", export_relu},
    {"Tanh", export_tanh},           {"Flatten", export_flatten},
    {"Linear", export_linear},       {"BatchNorm1d", export_batchnorm},
    {"BatchNorm2d", export_batchnorm}, {"Subsampling", export_subsampling},
    {"ScaledTanh", export_scaled_tanh}, {"EuclideanRBF", export_rbf},
    {"Dropout", NULL},
};

/* ValueInfoProto for a float tensor (N, per-sample shape), N a symbolic dimension. */
static void value_info(lenet_pb_buf *graph, uint32_t field, const char *name, const lenet_shape *sample)
{
    lenet_pb_buf shape = {0}, dim = {0}, tensor = {0}, type = {0}, value = {0};
    lenet__pb_put_string(&dim, ONNX_DIM_PARAM, "N");
    lenet__pb_put_message(&shape, ONNX_SHAPE_DIM, &dim);
    for (int d = 0; d < sample->ndim; d++) {
        dim.size = 0;
        lenet__pb_put_int64(&dim, ONNX_DIM_VALUE, sample->dim[d]);
        lenet__pb_put_message(&shape, ONNX_SHAPE_DIM, &dim);
    }
    lenet__pb_put_varint_field(&tensor, ONNX_TENSOR_TYPE_ELEM_TYPE, ONNX_FLOAT);
    lenet__pb_put_message(&tensor, ONNX_TENSOR_TYPE_SHAPE, &shape);
    lenet__pb_put_message(&type, ONNX_TYPE_TENSOR, &tensor);
    lenet__pb_put_string(&value, ONNX_VALUE_NAME, name);
    lenet__pb_put_message(&value, ONNX_VALUE_TYPE, &type);
    lenet__pb_put_message(graph, field, &value);
    lenet__pb_buf_free(&shape);
    lenet__pb_buf_free(&dim);
    lenet__pb_buf_free(&tensor);
    lenet__pb_buf_free(&type);
    lenet__pb_buf_free(&value);
}

static lenet_status find_exporter(const lenet_layer *l, size_t index, size_t *which)
{
    for (size_t k = 0; k < sizeof exporters / sizeof exporters[0]; k++) {
        if (strcmp(exporters[k].kind, l->ops->name) == 0) {
            *which = k;
            return LENET_OK;
        }
    }
    return lenet__fail(LENET_EUNSUPPORTED, WHO ": layer %zu (%s) has no ONNX form", index, l->ops->name);
}

lenet_status lenet_model_export_onnx(const lenet_model *m, const char *path)
{
    if (!m || !path)
        return lenet__fail(LENET_EINVAL, WHO ": %s is NULL", m ? "path" : "model");
    lenet_status st = lenet__model_check_sticky(m, WHO);
    if (st != LENET_OK)
        return st;
    if (!m->built)
        return lenet__fail(LENET_ESTATE, WHO ": the model is not built");
    /* Every kind first, so that nothing is written for a model that cannot be exported; and the last layer that
     * writes a node writes the graph's output. */
    size_t last_writer = m->n_layers, which;
    for (size_t i = 0; i < m->n_layers; i++) {
        if ((st = find_exporter(m->layers[i], i, &which)) != LENET_OK)
            return st;
        if (exporters[which].export)
            last_writer = i;
    }

    onnx_writer w = {.m = m};
    snprintf(w.cur, sizeof w.cur, "input");
    for (size_t i = 0; i < m->n_layers; i++) {
        find_exporter(m->layers[i], i, &which);
        if (!exporters[which].export)
            continue;
        w.layer = i;
        w.kind = m->layers[i]->ops->name;
        w.nodes_in_layer = 0;
        w.last = i == last_writer;
        if (w.last)
            snprintf(w.out, sizeof w.out, "output");
        else
            local_name(&w, "output", w.out);
        if ((st = exporters[which].export(&w, m->layers[i])) != LENET_OK)
            goto done;
        memcpy(w.cur, w.out, sizeof w.cur);
    }
    if (last_writer == m->n_layers) { /* nothing but Dropout: the identity */
        w.kind = "Identity";
        add_node1(&w, "Identity", "input", NULL, NULL, "output", NULL);
    }
    lenet__pb_put_string(&w.graph, ONNX_GRAPH_NAME, "liblenet");
    const lenet_shape *out_shape = &m->layers[m->n_layers - 1]->out;
    value_info(&w.graph, ONNX_GRAPH_INPUT, "input", &m->in_shape);
    value_info(&w.graph, ONNX_GRAPH_OUTPUT, "output", out_shape);

    lenet_pb_buf head = {0}, opset = {0};
    lenet__pb_put_int64(&head, ONNX_MODEL_IR_VERSION, LENET_ONNX_IR_VERSION);
    lenet__pb_put_string(&head, ONNX_MODEL_PRODUCER_NAME, "liblenet");
    lenet__pb_put_string(&head, ONNX_MODEL_PRODUCER_VERSION, LENET_VERSION_STRING);
    lenet__pb_put_string(&opset, ONNX_OPSET_DOMAIN, "");
    lenet__pb_put_int64(&opset, ONNX_OPSET_VERSION, LENET_ONNX_OPSET);
    lenet__pb_put_message(&head, ONNX_MODEL_OPSET_IMPORT, &opset);
    lenet__pb_buf_free(&opset);
    /* The graph's bytes follow the header directly in the file, not copied into the model message. */
    if (w.graph.failed) {
        head.failed = true;
    } else {
        lenet__pb_put_header(&head, ONNX_MODEL_GRAPH, w.graph.size);
        if (!head.failed && head.size > LENET_PB_MAX_SIZE - w.graph.size)
            head.failed = true;
    }
    if (head.failed) {
        /* Either allocation failed or the model is beyond protobuf's 2 GiB: tell them apart by the size. */
        size_t bytes = lenet_model_param_numel(m);
        st = bytes > LENET_PB_MAX_SIZE / 4
                 ? lenet__fail(LENET_EUNSUPPORTED, WHO ": the model is too large for one ONNX file (2 GiB)")
                 : lenet__oom("ONNX graph");
    } else {
        const void *buffers[2] = {head.data, w.graph.data};
        const size_t sizes[2] = {head.size, w.graph.size};
        st = lenet__write_atomic(path, buffers, sizes, 2, WHO);
    }
    lenet__pb_buf_free(&head);
done:
    lenet__pb_buf_free(&w.graph);
    return st;
}
