/* ONNX import: reads a whole .onnx file, decodes the parts of ModelProto liblenet needs with a bounded protobuf
 * reader, and walks the graph from its input to its output as a chain of layers, recognising each layer's
 * operators (the forms torch.onnx.export writes for an nn.Sequential, and the patterns onnx_write.c writes for
 * LeNet-5's layers).  The layers are added to a new model, planned without allocating (every initializer's shape
 * checked against what the layer needs), built, and filled.  Nothing in the file is trusted: sizes and counts are
 * checked before use, every node must belong to the chain or fold into a constant, and an attribute this reader
 * does not know makes the operator unsupported rather than silently ignored. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/internal.h"
#include "io/onnx_proto.h"
#include "io/protobuf.h"
#include "lenet/io.h"
#include "model/internal.h"

#define WHO "model_import_onnx"
/* A LeNet graph has tens of nodes; the bounds keep the quadratic name lookups cheap on any input. */
#define MAX_NODES 4096
#define MAX_TENSORS 4096
#define MAX_IO 8            /* inputs or outputs of a node kept (more: unsupported) */
#define MAX_DIMS 8          /* dimensions of a tensor (more: unsupported) */
#define MAX_INTS 8          /* values of an INTS attribute kept */
#define MAX_SMALL 16        /* elements of an integer constant (shapes, axes) */
/* Operator set versions whose definitions of the operators below this reader follows. */
#define MIN_OPSET 7
#define MAX_OPSET 23

typedef struct str {
    const unsigned char *p;
    size_t n;
} str;

typedef struct tensor {
    str name;
    lenet_pb_msg msg; /* the TensorProto, read again to convert its values */
    int data_type;
    int ndim;
    int64_t dims[MAX_DIMS];
    size_t numel;
} tensor;

typedef struct node {
    lenet_pb_msg msg;
    str name, op, domain, doc;
    int n_in, n_out;
    str in[MAX_IO], out[MAX_IO];
    bool too_many; /* more than MAX_IO inputs or outputs */
    bool used;     /* taken into a layer or folded into a constant */
} node;

/* A constant value: an initializer, a Constant node's, or one of those reshaped by a folded node. */
typedef struct constant {
    str name;
    const tensor *t;
    int ndim;
    int64_t dims[MAX_DIMS];
} constant;

/* A layer's tensor read from the file, to be copied into the built model. */
typedef struct staged {
    size_t layer;
    int slot;     /* parameter (or buffer) number within the layer */
    bool buffer;
    int ndim;
    int dims[4];
    float *data;
    size_t numel;
} staged;

typedef struct graph {
    const char *path;
    unsigned char *bytes;
    size_t size;
    int64_t opset;
    node *nodes;
    size_t n_nodes;
    tensor *tensors; /* initializers, then Constant nodes' values */
    size_t n_tensors;
    constant *consts;
    size_t n_consts;
    str input, output;
    int input_chw[3];
    /* the model being made */
    lenet_model *m;
    staged *staged;
    size_t n_staged, cap_staged;
    int *flatten_size; /* per layer: the per-sample size a Reshape promised, 0 if none */
    size_t cap_layers;
} graph;

/* ---- messages ---- */

static lenet_status failv(lenet_status st, const char *fmt, va_list ap)
{
    char message[512];
    vsnprintf(message, sizeof message, fmt, ap);
    return lenet__fail(st, "%s", message);
}

static lenet_status format_error(const char *fmt, ...) LENET_PRINTF(1, 2);
static lenet_status format_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lenet_status st = failv(LENET_EFORMAT, fmt, ap);
    va_end(ap);
    return st;
}

static lenet_status unsupported(const char *fmt, ...) LENET_PRINTF(1, 2);
static lenet_status unsupported(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lenet_status st = failv(LENET_EUNSUPPORTED, fmt, ap);
    va_end(ap);
    return st;
}

/* For "%.*s": at most 80 bytes of a name. */
#define SHOW(s) (int)((s).n < 80 ? (s).n : 80), (const char *)(s).p

static bool str_eq(str a, const char *b)
{
    size_t n = strlen(b);
    return a.n == n && (n == 0 || memcmp(a.p, b, n) == 0);
}

static bool str_same(str a, str b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static str field_str(const lenet_pb_field *f)
{
    return (str){f->data, f->size};
}

/* Names a node in messages: its name, or its position. */
static const char *node_label(const graph *g, const node *n, char buf[128])
{
    if (n->name.n)
        snprintf(buf, 128, "%.*s (%.*s)", SHOW(n->name), SHOW(n->op));
    else
        snprintf(buf, 128, "#%zu (%.*s)", (size_t)(n - g->nodes), SHOW(n->op));
    return buf;
}

/* ---- reading the file ---- */

static lenet_status read_file(graph *g)
{
    char reason[128];
    int fd;
    lenet_status st = lenet__open_regular(g->path, &fd);
    if (st != LENET_OK)
        return st;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = lenet__fail(LENET_EIO, "cannot stat %s: %s", g->path, lenet__errno_str(errno, reason, sizeof reason));
        goto done;
    }
    if (sb.st_size < 0 || (uintmax_t)sb.st_size > (uintmax_t)LENET_PB_MAX_SIZE) {
        st = format_error("%s: %jd bytes is beyond protobuf's 2 GiB", g->path, (intmax_t)sb.st_size);
        goto done;
    }
    g->size = (size_t)sb.st_size;
    g->bytes = lenet__malloc(g->size ? g->size : 1);
    if (!g->bytes) {
        st = lenet__oom("ONNX file contents");
        goto done;
    }
    size_t got = 0;
    while (got < g->size) {
        ssize_t n = read(fd, g->bytes + got, g->size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = lenet__fail(LENET_EIO, "cannot read %s: %s", g->path, lenet__errno_str(errno, reason, sizeof reason));
            goto done;
        }
        if (n == 0) {
            st = lenet__fail(LENET_EIO, "%s shrank while it was read (%zu of %zu bytes)", g->path, got, g->size);
            goto done;
        }
        got += (size_t)n;
    }
done:
    close(fd);
    return st;
}

/* ---- decoding ---- */

static lenet_status expect_wire(const lenet_pb_field *f, lenet_pb_wire wire, const char *what)
{
    if (f->wire != wire)
        return format_error("%s: field %u has wire type %d, expected %d", what, f->number, (int)f->wire, (int)wire);
    return LENET_OK;
}

/* Values of an int64 varint field fit int64 as two's complement; a dimension must also be >= 0. */
static int64_t as_int64(uint64_t v)
{
    return v <= INT64_MAX ? (int64_t)v : -(int64_t)(~v) - 1;
}

static lenet_status parse_tensor(const lenet_pb_msg *parent, const lenet_pb_field *field, tensor *t)
{
    const char *what = "tensor";
    lenet_pb_msg msg;
    lenet_status st = lenet__pb_sub(parent, field, what, &msg);
    if (st != LENET_OK)
        return st;
    *t = (tensor){.msg = msg};
    size_t raw = 0, raw_count = 0, floats = 0, doubles = 0, int64s = 0, int32s = 0, others = 0;
    bool has_type = false;
    lenet_pb_reader r;
    lenet__pb_reader_init(&r, msg);
    lenet_pb_field f;
    int got;
    while ((got = lenet__pb_next(&r, &f, what)) == 1) {
        switch (f.number) {
        case ONNX_TENSOR_DIMS: {
            size_t count = 0;
            if ((st = lenet__pb_scalars(&f, LENET_PB_VARINT, "tensor dims", &count)) != LENET_OK)
                return st;
            uint64_t values[MAX_DIMS];
            if (count > MAX_DIMS || (size_t)t->ndim + count > MAX_DIMS)
                return unsupported("a tensor has more than %d dimensions", MAX_DIMS);
            lenet__pb_scalar_values(&f, LENET_PB_VARINT, values);
            for (size_t i = 0; i < count; i++)
                t->dims[t->ndim++] = as_int64(values[i]);
            break;
        }
        case ONNX_TENSOR_DATA_TYPE:
            if ((st = expect_wire(&f, LENET_PB_VARINT, what)) != LENET_OK)
                return st;
            if (f.value > INT32_MAX)
                return format_error("tensor data type %llu", (unsigned long long)f.value);
            t->data_type = (int)f.value;
            has_type = true;
            break;
        case ONNX_TENSOR_NAME:
            if ((st = expect_wire(&f, LENET_PB_BYTES, what)) != LENET_OK)
                return st;
            t->name = field_str(&f);
            break;
        case ONNX_TENSOR_RAW_DATA:
            if ((st = expect_wire(&f, LENET_PB_BYTES, what)) != LENET_OK)
                return st;
            raw = f.size;
            raw_count++;
            break;
        case ONNX_TENSOR_FLOAT_DATA:
            st = lenet__pb_scalars(&f, LENET_PB_FIXED32, "tensor float_data", &floats);
            break;
        case ONNX_TENSOR_DOUBLE_DATA:
            st = lenet__pb_scalars(&f, LENET_PB_FIXED64, "tensor double_data", &doubles);
            break;
        case ONNX_TENSOR_INT64_DATA:
            st = lenet__pb_scalars(&f, LENET_PB_VARINT, "tensor int64_data", &int64s);
            break;
        case ONNX_TENSOR_INT32_DATA:
            st = lenet__pb_scalars(&f, LENET_PB_VARINT, "tensor int32_data", &int32s);
            break;
        case ONNX_TENSOR_STRING_DATA:
        case ONNX_TENSOR_UINT64_DATA:
            others++;
            break;
        case ONNX_TENSOR_SEGMENT:
            return unsupported("tensor \"%.*s\" is a segment of a larger one", SHOW(t->name));
        case ONNX_TENSOR_EXTERNAL_DATA:
            return unsupported("tensor \"%.*s\" keeps its data in an external file", SHOW(t->name));
        case ONNX_TENSOR_DATA_LOCATION:
            if (f.wire != LENET_PB_VARINT || f.value != 0)
                return unsupported("tensor \"%.*s\" keeps its data in an external file", SHOW(t->name));
            break;
        default:
            break;
        }
        if (st != LENET_OK)
            return st;
    }
    if (got < 0)
        return got;
    if (!has_type)
        return format_error("tensor \"%.*s\" has no data type", SHOW(t->name));
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->dims[d] < 0)
            return format_error("tensor \"%.*s\" has dimension %lld", SHOW(t->name), (long long)t->dims[d]);
        if (lenet__mul_overflows(t->numel, (size_t)t->dims[d], &t->numel) || t->numel > LENET_PB_MAX_SIZE)
            return format_error("tensor \"%.*s\" has too many elements", SHOW(t->name));
    }
    size_t width, typed;
    switch (t->data_type) {
    case ONNX_FLOAT: width = 4, typed = floats; break;
    case ONNX_DOUBLE: width = 8, typed = doubles; break;
    case ONNX_INT64: width = 8, typed = int64s; break;
    case ONNX_INT32: width = 4, typed = int32s; break;
    default:
        return unsupported("tensor \"%.*s\" has ONNX data type %d (liblenet reads FLOAT, DOUBLE, INT64, INT32)",
                           SHOW(t->name), t->data_type);
    }
    size_t typed_total = floats + doubles + int64s + int32s + others;
    if (raw_count > 1 || (raw_count && typed_total) || typed_total != typed)
        return format_error("tensor \"%.*s\" holds its values in more than one field or in the wrong one",
                            SHOW(t->name));
    size_t bytes = t->numel * width; /* numel <= 2^31, no overflow */
    if (raw_count ? raw != bytes : typed != t->numel)
        return format_error("tensor \"%.*s\" has %zu elements but %zu %s", SHOW(t->name), t->numel,
                            raw_count ? raw : typed, raw_count ? "bytes of raw_data" : "values");
    return LENET_OK;
}

static uint64_t load_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static float bits_float(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static double bits_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Element values of a tensor parse_tensor accepted, in order, as doubles (float and int32 exactly; int64 exactly up
 * to 2^53, which every integer this reader uses is below, and double as stored).  `limit` bounds the count. */
static void tensor_values(const tensor *t, double *out, float *out_f)
{
    int width = (t->data_type == ONNX_FLOAT || t->data_type == ONNX_INT32) ? 4 : 8;
    lenet_pb_reader r;
    lenet__pb_reader_init(&r, t->msg);
    lenet_pb_field f;
    size_t k = 0;
    while (lenet__pb_next(&r, &f, "tensor") == 1 && k < t->numel) {
        bool raw = f.number == ONNX_TENSOR_RAW_DATA;
        bool typed = f.number == ONNX_TENSOR_FLOAT_DATA || f.number == ONNX_TENSOR_DOUBLE_DATA ||
                     f.number == ONNX_TENSOR_INT64_DATA || f.number == ONNX_TENSOR_INT32_DATA;
        if (!raw && !typed)
            continue;
        const unsigned char *p = f.data, *end = f.data + f.size;
        bool varint = !raw && (t->data_type == ONNX_INT64 || t->data_type == ONNX_INT32);
        bool single = !raw && f.wire != LENET_PB_BYTES;
        while (k < t->numel && (single || p < end)) {
            uint64_t bits;
            if (single)
                bits = f.value;
            else if (varint)
                lenet__pb_varint(&p, end, &bits); /* checked by lenet__pb_scalars */
            else
                bits = load_le(p, width), p += width;
            double v;
            float vf = 0.0f;
            switch (t->data_type) {
            case ONNX_FLOAT: vf = bits_float((uint32_t)bits), v = vf; break;
            case ONNX_DOUBLE: v = bits_double(bits), vf = (float)v; break;
            case ONNX_INT32: v = raw ? (double)(int32_t)(uint32_t)bits : (double)(int32_t)as_int64(bits); break;
            default: v = (double)as_int64(bits); break;
            }
            if (out)
                out[k] = v;
            if (out_f)
                out_f[k] = vf;
            k++;
            if (single)
                break;
        }
    }
}

static bool is_float(const tensor *t)
{
    return t->data_type == ONNX_FLOAT || t->data_type == ONNX_DOUBLE;
}

static lenet_status parse_node(const lenet_pb_msg *parent, const lenet_pb_field *field, node *n)
{
    const char *what = "node";
    lenet_pb_msg msg;
    lenet_status st = lenet__pb_sub(parent, field, what, &msg);
    if (st != LENET_OK)
        return st;
    *n = (node){.msg = msg};
    lenet_pb_reader r;
    lenet__pb_reader_init(&r, msg);
    lenet_pb_field f;
    int got;
    while ((got = lenet__pb_next(&r, &f, what)) == 1) {
        str *target = NULL;
        switch (f.number) {
        case ONNX_NODE_INPUT:
        case ONNX_NODE_OUTPUT: {
            int *count = f.number == ONNX_NODE_INPUT ? &n->n_in : &n->n_out;
            if (*count == MAX_IO) {
                n->too_many = true;
            } else {
                target = f.number == ONNX_NODE_INPUT ? &n->in[*count] : &n->out[*count];
                ++*count;
            }
            break;
        }
        case ONNX_NODE_NAME: target = &n->name; break;
        case ONNX_NODE_OP_TYPE: target = &n->op; break;
        case ONNX_NODE_DOMAIN: target = &n->domain; break;
        case ONNX_NODE_DOC_STRING: target = &n->doc; break;
        case ONNX_NODE_ATTRIBUTE:
            if ((st = expect_wire(&f, LENET_PB_BYTES, what)) != LENET_OK)
                return st;
            break;
        default: break;
        }
        if (target) {
            if ((st = expect_wire(&f, LENET_PB_BYTES, what)) != LENET_OK)
                return st;
            *target = field_str(&f);
        }
    }
    if (got < 0)
        return got;
    if (n->op.n == 0)
        return format_error("a node has no op_type");
    return LENET_OK;
}

/* ---- attributes ---- */

typedef struct attr {
    str name;
    int64_t type;
    bool has_f, has_i, has_s, has_t;
    float f;
    int64_t i;
    str s;
    lenet_pb_field t;
    int n_ints;
    int64_t ints[MAX_INTS];
    bool too_many_ints;
    size_t floats; /* FLOATS values (unused by the operators read here) */
} attr;

static lenet_status parse_attr(const lenet_pb_msg *parent, const lenet_pb_field *field, attr *a)
{
    const char *what = "attribute";
    lenet_pb_msg msg;
    lenet_status st = lenet__pb_sub(parent, field, what, &msg);
    if (st != LENET_OK)
        return st;
    *a = (attr){.type = -1};
    lenet_pb_reader r;
    lenet__pb_reader_init(&r, msg);
    lenet_pb_field f;
    int got;
    while ((got = lenet__pb_next(&r, &f, what)) == 1) {
        switch (f.number) {
        case ONNX_ATTR_NAME:
            st = expect_wire(&f, LENET_PB_BYTES, what);
            a->name = field_str(&f);
            break;
        case ONNX_ATTR_TYPE:
            st = expect_wire(&f, LENET_PB_VARINT, what);
            a->type = as_int64(f.value);
            break;
        case ONNX_ATTR_F:
            st = expect_wire(&f, LENET_PB_FIXED32, what);
            a->f = bits_float((uint32_t)f.value);
            a->has_f = true;
            break;
        case ONNX_ATTR_I:
            st = expect_wire(&f, LENET_PB_VARINT, what);
            a->i = as_int64(f.value);
            a->has_i = true;
            break;
        case ONNX_ATTR_S:
            st = expect_wire(&f, LENET_PB_BYTES, what);
            a->s = field_str(&f);
            a->has_s = true;
            break;
        case ONNX_ATTR_T:
            st = expect_wire(&f, LENET_PB_BYTES, what);
            a->t = f;
            a->has_t = true;
            break;
        case ONNX_ATTR_INTS: {
            size_t count = 0;
            if ((st = lenet__pb_scalars(&f, LENET_PB_VARINT, "attribute ints", &count)) != LENET_OK)
                break;
            if (count > MAX_INTS || (size_t)a->n_ints + count > MAX_INTS) {
                a->too_many_ints = true;
                break;
            }
            uint64_t values[MAX_INTS];
            lenet__pb_scalar_values(&f, LENET_PB_VARINT, values);
            for (size_t k = 0; k < count; k++)
                a->ints[a->n_ints++] = as_int64(values[k]);
            break;
        }
        case ONNX_ATTR_FLOATS:
            st = lenet__pb_scalars(&f, LENET_PB_FIXED32, "attribute floats", &a->floats);
            break;
        case ONNX_ATTR_REF_ATTR_NAME:
            return unsupported("attribute \"%.*s\" refers to a function's attribute", SHOW(a->name));
        default: break;
        }
        if (st != LENET_OK)
            return st;
    }
    if (got < 0)
        return got;
    if (a->type < 0)
        return format_error("attribute \"%.*s\" has no type", SHOW(a->name));
    return LENET_OK;
}

/* Checks every attribute of a node: its name among `known` (NUL-separated, ending with an empty name), no name
 * twice. */
static lenet_status check_attrs(const graph *g, const node *n, const char *known)
{
    char label[128];
    str seen[16];
    int n_seen = 0;
    lenet_pb_reader r;
    lenet__pb_reader_init(&r, n->msg);
    lenet_pb_field f;
    int got;
    while ((got = lenet__pb_next(&r, &f, "node")) == 1) {
        if (f.number != ONNX_NODE_ATTRIBUTE)
            continue;
        attr a;
        lenet_status st = parse_attr(&n->msg, &f, &a);
        if (st != LENET_OK)
            return st;
        bool ok = false;
        for (const char *k = known; *k; k += strlen(k) + 1)
            ok = ok || str_eq(a.name, k);
        if (!ok)
            return unsupported("node %s: attribute \"%.*s\" is not one liblenet reads", node_label(g, n, label),
                               SHOW(a.name));
        for (int s = 0; s < n_seen; s++)
            if (str_same(seen[s], a.name))
                return format_error("node %s: attribute \"%.*s\" appears twice", node_label(g, n, label),
                                    SHOW(a.name));
        if (n_seen < 16)
            seen[n_seen++] = a.name;
    }
    return got < 0 ? got : LENET_OK;
}

/* Finds attribute `name` (check_attrs has run: at most one): 1 found, 0 absent, or an error status. */
static int find_attr(const node *n, const char *name, attr *a)
{
    lenet_pb_reader r;
    lenet__pb_reader_init(&r, n->msg);
    lenet_pb_field f;
    int got;
    while ((got = lenet__pb_next(&r, &f, "node")) == 1) {
        if (f.number != ONNX_NODE_ATTRIBUTE)
            continue;
        lenet_status st = parse_attr(&n->msg, &f, a);
        if (st != LENET_OK)
            return st;
        if (str_eq(a->name, name))
            return 1;
    }
    return got;
}

static lenet_status attr_int(const graph *g, const node *n, const char *name, int64_t fallback, int64_t *out)
{
    char label[128];
    attr a;
    int got = find_attr(n, name, &a);
    if (got < 0)
        return got;
    *out = fallback;
    if (got == 0)
        return LENET_OK;
    if (a.type != ONNX_ATTR_TYPE_INT || !a.has_i)
        return format_error("node %s: attribute %s is not an int", node_label(g, n, label), name);
    *out = a.i;
    return LENET_OK;
}

static lenet_status attr_float(const graph *g, const node *n, const char *name, float fallback, float *out)
{
    char label[128];
    attr a;
    int got = find_attr(n, name, &a);
    if (got < 0)
        return got;
    *out = fallback;
    if (got == 0)
        return LENET_OK;
    if (a.type != ONNX_ATTR_TYPE_FLOAT || !a.has_f)
        return format_error("node %s: attribute %s is not a float", node_label(g, n, label), name);
    *out = a.f;
    return LENET_OK;
}

/* An INTS attribute with all `count` values equal; *out = fallback when absent. */
static lenet_status attr_ints_same(const graph *g, const node *n, const char *name, int count, int64_t fallback,
                                   int64_t *out)
{
    char label[128];
    attr a;
    int got = find_attr(n, name, &a);
    if (got < 0)
        return got;
    *out = fallback;
    if (got == 0)
        return LENET_OK;
    if (a.type != ONNX_ATTR_TYPE_INTS || a.too_many_ints || a.n_ints != count)
        return unsupported("node %s: attribute %s must hold %d ints", node_label(g, n, label), name, count);
    for (int k = 1; k < count; k++)
        if (a.ints[k] != a.ints[0])
            return unsupported("node %s: attribute %s must be the same along every axis (square kernels, equal "
                               "strides and padding)", node_label(g, n, label), name);
    *out = a.ints[0];
    return LENET_OK;
}

/* auto_pad, when present, must say what explicit pads say: NOTSET, or VALID with no padding. */
static lenet_status check_auto_pad(const graph *g, const node *n, int64_t pads)
{
    char label[128];
    attr a;
    int got = find_attr(n, "auto_pad", &a);
    if (got <= 0)
        return got;
    if (a.type != ONNX_ATTR_TYPE_STRING || !a.has_s)
        return format_error("node %s: auto_pad is not a string", node_label(g, n, label));
    if (str_eq(a.s, "NOTSET") || (str_eq(a.s, "VALID") && pads == 0))
        return LENET_OK;
    return unsupported("node %s: auto_pad %.*s", node_label(g, n, label), SHOW(a.s));
}

/* ---- the graph ---- */

static const constant *find_const(const graph *g, str name)
{
    if (name.n == 0)
        return NULL;
    for (size_t i = g->n_consts; i-- > 0;)
        if (str_same(g->consts[i].name, name))
            return &g->consts[i];
    return NULL;
}

static lenet_status add_const(graph *g, str name, const tensor *t, int ndim, const int64_t *dims)
{
    if (name.n == 0)
        return format_error("a constant has no name");
    if (find_const(g, name))
        return format_error("constant \"%.*s\" is defined twice", SHOW(name));
    /* consts has room for every initializer and node output (see parse_graph) */
    constant *c = &g->consts[g->n_consts++];
    *c = (constant){.name = name, .t = t, .ndim = ndim};
    memcpy(c->dims, dims, sizeof(int64_t) * (size_t)ndim);
    return LENET_OK;
}

/* The values of a small integer constant (shape, axes). */
static lenet_status small_ints(const graph *g, const node *n, const constant *c, int64_t *out, size_t *count)
{
    char label[128];
    if (c->t->data_type != ONNX_INT64 && c->t->data_type != ONNX_INT32)
        return format_error("node %s: \"%.*s\" is not an integer tensor", node_label(g, n, label), SHOW(c->name));
    if (c->t->numel > MAX_SMALL || c->ndim > 1)
        return unsupported("node %s: \"%.*s\" has more than %d values", node_label(g, n, label), SHOW(c->name),
                           MAX_SMALL);
    double values[MAX_SMALL];
    tensor_values(c->t, values, NULL);
    for (size_t i = 0; i < c->t->numel; i++) {
        if (!(fabs(values[i]) <= 1e15))
            return format_error("node %s: \"%.*s\" holds %g", node_label(g, n, label), SHOW(c->name), values[i]);
        out[i] = (int64_t)values[i];
    }
    *count = c->t->numel;
    return LENET_OK;
}

/* Folds a node whose inputs are all constants and that only reshapes (Identity, Reshape, Unsqueeze, Flatten):
 * its output becomes a constant viewing the same values.  *folded tells whether it did. */
static lenet_status fold_node(graph *g, node *n, bool *folded)
{
    char label[128];
    *folded = false;
    const constant *data = n->n_in >= 1 ? find_const(g, n->in[0]) : NULL;
    if (!data || n->too_many || n->n_out != 1 || n->domain.n)
        return LENET_OK;
    int ndim = data->ndim;
    int64_t dims[MAX_DIMS];
    memcpy(dims, data->dims, sizeof dims);
    lenet_status st;
    if (str_eq(n->op, "Identity") && n->n_in == 1) {
        /* the same */
    } else if (str_eq(n->op, "Reshape") && n->n_in == 2 && find_const(g, n->in[1])) {
        if ((st = check_attrs(g, n, "allowzero\0")) != LENET_OK)
            return st;
        int64_t shape[MAX_SMALL];
        size_t count;
        if ((st = small_ints(g, n, find_const(g, n->in[1]), shape, &count)) != LENET_OK)
            return st;
        if (count > MAX_DIMS)
            return unsupported("node %s: a shape of %zu dimensions", node_label(g, n, label), count);
        size_t known = 1;
        int infer = -1;
        for (size_t d = 0; d < count; d++) {
            if (shape[d] == 0 && d < (size_t)data->ndim)
                shape[d] = data->dims[d];
            if (shape[d] == -1 && infer < 0) {
                infer = (int)d;
                continue;
            }
            if (shape[d] < 1 || lenet__mul_overflows(known, (size_t)shape[d], &known))
                return format_error("node %s: shape value %lld", node_label(g, n, label), (long long)shape[d]);
        }
        if (infer >= 0) {
            if (known == 0 || data->t->numel % known != 0)
                return format_error("node %s: cannot reshape %zu values", node_label(g, n, label), data->t->numel);
            shape[infer] = (int64_t)(data->t->numel / known);
            known = data->t->numel;
        }
        if (known != data->t->numel)
            return format_error("node %s: reshapes %zu values to %zu", node_label(g, n, label), data->t->numel, known);
        ndim = (int)count;
        memcpy(dims, shape, sizeof(int64_t) * count);
    } else if (str_eq(n->op, "Unsqueeze") && n->n_in == 2 && find_const(g, n->in[1])) {
        int64_t axes[MAX_SMALL];
        size_t count;
        if ((st = check_attrs(g, n, "\0")) != LENET_OK ||
            (st = small_ints(g, n, find_const(g, n->in[1]), axes, &count)) != LENET_OK)
            return st;
        if ((size_t)ndim + count > MAX_DIMS)
            return unsupported("node %s: more than %d dimensions", node_label(g, n, label), MAX_DIMS);
        int out_rank = ndim + (int)count;
        bool unit[MAX_DIMS] = {false};
        for (size_t k = 0; k < count; k++) {
            int64_t axis = axes[k] < 0 ? axes[k] + out_rank : axes[k];
            if (axis < 0 || axis >= out_rank || unit[axis])
                return format_error("node %s: axis %lld", node_label(g, n, label), (long long)axes[k]);
            unit[axis] = true;
        }
        for (int d = 0, from = 0; d < out_rank; d++)
            dims[d] = unit[d] ? 1 : data->dims[from++];
        ndim = out_rank;
    } else {
        return LENET_OK;
    }
    n->used = true;
    *folded = true;
    return add_const(g, n->out[0], data->t, ndim, dims);
}

static lenet_status parse_value_info(const lenet_pb_msg *parent, const lenet_pb_field *field, str *name,
                                     lenet_pb_msg *type)
{
    const char *what = "value info";
    lenet_pb_msg msg;
    lenet_status st = lenet__pb_sub(parent, field, what, &msg);
    if (st != LENET_OK)
        return st;
    *name = (str){0};
    *type = (lenet_pb_msg){0};
    lenet_pb_reader r;
    lenet__pb_reader_init(&r, msg);
    lenet_pb_field f;
    int got;
    while ((got = lenet__pb_next(&r, &f, what)) == 1) {
        if (f.number == ONNX_VALUE_NAME) {
            if ((st = expect_wire(&f, LENET_PB_BYTES, what)) != LENET_OK)
                return st;
            *name = field_str(&f);
        } else if (f.number == ONNX_VALUE_TYPE) {
            if ((st = lenet__pb_sub(&msg, &f, what, type)) != LENET_OK)
                return st;
        }
    }
    return got < 0 ? got : LENET_OK;
}

/* The graph input's type: a float tensor (N, C, H, W) with C, H, W known. */
static lenet_status parse_input_type(graph *g, const lenet_pb_msg *type)
{
    const char *what = "input type";
    lenet_pb_msg tensor_type = {0}, shape = {0};
    int64_t elem = 0;
    lenet_pb_reader r;
    lenet_pb_field f;
    int got;
    lenet_status st;
    lenet__pb_reader_init(&r, *type);
    while ((got = lenet__pb_next(&r, &f, what)) == 1)
        if (f.number == ONNX_TYPE_TENSOR && (st = lenet__pb_sub(type, &f, what, &tensor_type)) != LENET_OK)
            return st;
    if (got < 0)
        return got;
    if (!tensor_type.data && type->size)
        return unsupported("the graph input \"%.*s\" is not a tensor", SHOW(g->input));
    lenet__pb_reader_init(&r, tensor_type);
    while ((got = lenet__pb_next(&r, &f, what)) == 1) {
        if (f.number == ONNX_TENSOR_TYPE_ELEM_TYPE && f.wire == LENET_PB_VARINT)
            elem = as_int64(f.value);
        else if (f.number == ONNX_TENSOR_TYPE_SHAPE && (st = lenet__pb_sub(&tensor_type, &f, what, &shape)) != LENET_OK)
            return st;
    }
    if (got < 0)
        return got;
    if (elem != ONNX_FLOAT)
        return unsupported("the graph input \"%.*s\" has element type %lld, not FLOAT", SHOW(g->input),
                           (long long)elem);
    int ndim = 0;
    int64_t dims[4] = {0};
    lenet__pb_reader_init(&r, shape);
    while ((got = lenet__pb_next(&r, &f, what)) == 1) {
        if (f.number != ONNX_SHAPE_DIM)
            continue;
        lenet_pb_msg dim;
        if ((st = lenet__pb_sub(&shape, &f, what, &dim)) != LENET_OK)
            return st;
        int64_t value = -1;
        lenet_pb_reader dr;
        lenet_pb_field df;
        lenet__pb_reader_init(&dr, dim);
        while ((got = lenet__pb_next(&dr, &df, what)) == 1)
            if (df.number == ONNX_DIM_VALUE && df.wire == LENET_PB_VARINT)
                value = as_int64(df.value);
        if (got < 0)
            return got;
        if (ndim < 4)
            dims[ndim] = value;
        ndim++;
    }
    if (got < 0)
        return got;
    if (ndim != 4)
        return unsupported("the graph input \"%.*s\" has %d dimensions; liblenet takes (N, C, H, W)", SHOW(g->input),
                           ndim);
    for (int d = 1; d < 4; d++) {
        if (dims[d] < 1 || dims[d] > INT_MAX)
            return unsupported("the graph input \"%.*s\" needs known C, H, W (dimension %d is %lld)", SHOW(g->input),
                               d, (long long)dims[d]);
        g->input_chw[d - 1] = (int)dims[d];
    }
    return LENET_OK;
}

static lenet_status parse_graph(graph *g, const lenet_pb_msg *gm)
{
    const char *what = "graph";
    size_t nodes = 0, inits = 0, inputs = 0, outputs = 0;
    lenet_pb_reader r;
    lenet_pb_field f;
    int got;
    lenet_status st;
    lenet__pb_reader_init(&r, *gm);
    while ((got = lenet__pb_next(&r, &f, what)) == 1) {
        switch (f.number) {
        case ONNX_GRAPH_NODE: nodes++; break;
        case ONNX_GRAPH_INITIALIZER: inits++; break;
        case ONNX_GRAPH_INPUT: inputs++; break;
        case ONNX_GRAPH_OUTPUT: outputs++; break;
        case ONNX_GRAPH_SPARSE_INITIALIZER: return unsupported("the graph has sparse initializers");
        default: break;
        }
    }
    if (got < 0)
        return got;
    if (nodes > MAX_NODES || inits > MAX_TENSORS)
        return unsupported("the graph has %zu nodes and %zu initializers (liblenet reads at most %d of each)", nodes,
                           inits, MAX_NODES);
    if (outputs != 1)
        return unsupported("the graph has %zu outputs; liblenet makes models of one", outputs);
    /* Counts are bounded above, so these products are small. */
    g->nodes = lenet__calloc(nodes ? nodes : 1, sizeof *g->nodes);
    g->tensors = lenet__calloc(inits + nodes + 1, sizeof *g->tensors);
    g->consts = lenet__calloc(inits + nodes + 1, sizeof *g->consts);
    if (!g->nodes || !g->tensors || !g->consts)
        return lenet__oom("ONNX graph");

    size_t n_inputs = 0;
    str input_names[MAX_IO];
    lenet_pb_msg input_types[MAX_IO];
    lenet__pb_reader_init(&r, *gm);
    while ((got = lenet__pb_next(&r, &f, what)) == 1) {
        if (f.number == ONNX_GRAPH_NODE) {
            st = parse_node(gm, &f, &g->nodes[g->n_nodes++]);
        } else if (f.number == ONNX_GRAPH_INITIALIZER) {
            tensor *t = &g->tensors[g->n_tensors++];
            if ((st = parse_tensor(gm, &f, t)) == LENET_OK)
                st = add_const(g, t->name, t, t->ndim, t->dims);
        } else if (f.number == ONNX_GRAPH_INPUT || f.number == ONNX_GRAPH_OUTPUT) {
            str name;
            lenet_pb_msg type;
            st = parse_value_info(gm, &f, &name, &type);
            if (st == LENET_OK && f.number == ONNX_GRAPH_OUTPUT) {
                g->output = name;
            } else if (st == LENET_OK) {
                if (n_inputs == MAX_IO)
                    return unsupported("the graph has more than %d inputs", MAX_IO);
                input_names[n_inputs] = name;
                input_types[n_inputs++] = type;
            }
        } else {
            st = LENET_OK;
        }
        if (st != LENET_OK)
            return st;
    }
    if (got < 0)
        return got;
    /* Inputs that name initializers are constants (IR < 4 listed them); the one left is the data. */
    size_t data_inputs = 0;
    for (size_t i = 0; i < n_inputs; i++) {
        if (find_const(g, input_names[i]))
            continue;
        g->input = input_names[i];
        if (data_inputs++ == 0 && (st = parse_input_type(g, &input_types[i])) != LENET_OK)
            return st;
    }
    if (data_inputs != 1)
        return unsupported("the graph has %zu inputs besides its initializers; liblenet makes models of one",
                           data_inputs);
    if (g->input.n == 0 || g->output.n == 0)
        return format_error("the graph's input or output has no name");

    /* Constant nodes and reshapes of constants. */
    for (size_t i = 0; i < g->n_nodes; i++) {
        node *n = &g->nodes[i];
        char label[128];
        if (str_eq(n->op, "Constant") && n->domain.n == 0) {
            if ((st = check_attrs(g, n, "value\0")) != LENET_OK)
                return st;
            attr a;
            int found = find_attr(n, "value", &a);
            if (found < 0)
                return found;
            if (found == 0 || a.type != ONNX_ATTR_TYPE_TENSOR || !a.has_t || n->n_out != 1 || n->n_in != 0)
                return format_error("node %s is not a Constant with one tensor value", node_label(g, n, label));
            /* Room: tensors holds inits + nodes entries. */
            tensor *t = &g->tensors[g->n_tensors++];
            if ((st = parse_tensor(&n->msg, &a.t, t)) != LENET_OK)
                return st;
            n->used = true;
            if ((st = add_const(g, n->out[0], t, t->ndim, t->dims)) != LENET_OK)
                return st;
            continue;
        }
        bool folded;
        if ((st = fold_node(g, n, &folded)) != LENET_OK)
            return st;
    }
    return LENET_OK;
}

static lenet_status parse_model(graph *g)
{
    const char *what = "model";
    lenet_pb_msg model = {.data = g->bytes, .size = g->size}, gm = {0};
    lenet_pb_reader r;
    lenet_pb_field f;
    int got, graphs = 0;
    int64_t ir_version = -1;
    lenet_status st;
    g->opset = -1;
    lenet__pb_reader_init(&r, model);
    while ((got = lenet__pb_next(&r, &f, what)) == 1) {
        if (f.number == ONNX_MODEL_IR_VERSION) {
            if ((st = expect_wire(&f, LENET_PB_VARINT, what)) != LENET_OK)
                return st;
            ir_version = as_int64(f.value);
        } else if (f.number == ONNX_MODEL_GRAPH) {
            if ((st = lenet__pb_sub(&model, &f, what, &gm)) != LENET_OK)
                return st;
            graphs++;
        } else if (f.number == ONNX_MODEL_OPSET_IMPORT) {
            lenet_pb_msg om;
            if ((st = lenet__pb_sub(&model, &f, what, &om)) != LENET_OK)
                return st;
            str domain = {0};
            int64_t version = -1;
            lenet_pb_reader or;
            lenet_pb_field of;
            lenet__pb_reader_init(&or, om);
            while ((got = lenet__pb_next(&or, &of, "opset_import")) == 1) {
                if (of.number == ONNX_OPSET_DOMAIN && (st = expect_wire(&of, LENET_PB_BYTES, "opset_import")) == LENET_OK)
                    domain = field_str(&of);
                else if (of.number == ONNX_OPSET_VERSION &&
                         (st = expect_wire(&of, LENET_PB_VARINT, "opset_import")) == LENET_OK)
                    version = as_int64(of.value);
                if (st != LENET_OK)
                    return st;
            }
            if (got < 0)
                return got;
            if (domain.n == 0 || str_eq(domain, "ai.onnx")) {
                if (g->opset >= 0)
                    return format_error("the default operator set is imported twice");
                g->opset = version;
            }
        }
    }
    if (got < 0)
        return got;
    if (graphs != 1)
        return format_error("not an ONNX model: %d graphs (a ModelProto has one)", graphs);
    if (ir_version < 3)
        return format_error("not an ONNX model: IR version %lld", (long long)ir_version);
    if (g->opset < MIN_OPSET || g->opset > MAX_OPSET)
        return unsupported("operator set %lld (liblenet reads %d to %d)", (long long)g->opset, MIN_OPSET, MAX_OPSET);
    return parse_graph(g, &gm);
}

/* ---- the chain of layers ---- */

/* The node that reads value v, the only one: 1 found, 0 none; an error for more than one. */
static int single_consumer(graph *g, str v, node **out)
{
    node *found = NULL;
    for (size_t i = 0; i < g->n_nodes; i++) {
        node *n = &g->nodes[i];
        if (n->used)
            continue;
        for (int k = 0; k < n->n_in; k++) {
            if (!str_same(n->in[k], v))
                continue;
            if (found && found != n) {
                char a[128], b[128];
                return unsupported("value \"%.*s\" feeds two nodes, %s and %s: liblenet models are chains",
                                   SHOW(v), node_label(g, found, a), node_label(g, n, b));
            }
            found = n;
        }
    }
    *out = found;
    return found != NULL;
}

/* The next node of a pattern: the only reader of n's first output, of type `op`; NULL if that is not so. */
static node *next_in_pattern(graph *g, const node *n, const char *op)
{
    node *next;
    if (n->n_out < 1 || str_same(n->out[0], g->output) || single_consumer(g, n->out[0], &next) != 1)
        return NULL;
    return str_eq(next->op, op) && next->domain.n == 0 && !next->too_many ? next : NULL;
}

/* The constant input of a binary node whose other input is `x` (in either order); NULL if it has none. */
static const constant *other_const(const graph *g, const node *n, str x)
{
    if (n->n_in != 2)
        return NULL;
    if (str_same(n->in[0], x))
        return find_const(g, n->in[1]);
    if (str_same(n->in[1], x))
        return find_const(g, n->in[0]);
    return NULL;
}

/* True if the constant is one float value equal to `value` (any shape of one element up to rank 1). */
static bool const_is_scalar(const constant *c, float value)
{
    if (!c || !is_float(c->t) || c->t->numel != 1 || c->ndim > 1)
        return false;
    float v;
    tensor_values(c->t, NULL, &v);
    return v == value;
}

/* Keeps `data` (numel floats, taken over: freed on failure too) for the tensor `slot` of layer `layer`. */
static lenet_status stage_data(graph *g, size_t layer, int slot, bool buffer, int ndim, const int *dims, float *data,
                               size_t numel)
{
    if (g->n_staged == g->cap_staged) {
        size_t cap = g->cap_staged ? 2 * g->cap_staged : 16;
        staged *grown = lenet__realloc(g->staged, cap * sizeof *grown);
        if (!grown) {
            lenet__free(data);
            return lenet__oom("ONNX tensors");
        }
        g->staged = grown;
        g->cap_staged = cap;
    }
    staged *s = &g->staged[g->n_staged++];
    *s = (staged){.layer = layer, .slot = slot, .buffer = buffer, .ndim = ndim, .data = data, .numel = numel};
    memcpy(s->dims, dims, sizeof(int) * (size_t)ndim);
    return LENET_OK;
}

/* A constant's values as floats, in a new array; NULL with the error set. */
static float *const_floats(const constant *c)
{
    if (!is_float(c->t))
        return lenet__fail_null(LENET_EFORMAT, "tensor \"%.*s\" is not a float tensor", SHOW(c->name));
    float *data = lenet__malloc((c->t->numel ? c->t->numel : 1) * sizeof(float));
    if (!data)
        return lenet__oom("ONNX tensor"), NULL;
    tensor_values(c->t, NULL, data);
    return data;
}

static lenet_status stage(graph *g, size_t layer, int slot, bool buffer, const constant *c, int ndim,
                          const int *dims)
{
    float *data = const_floats(c);
    return data ? stage_data(g, layer, slot, buffer, ndim, dims, data, c->t->numel) : lenet__last_status();
}

/* A constant's dimensions as ints, each in [1, INT_MAX]; false if there are more than `max` or one is out of range. */
static bool const_dims(const constant *c, int max, int *dims)
{
    if (c->ndim > max)
        return false;
    for (int d = 0; d < c->ndim; d++) {
        if (c->dims[d] < 1 || c->dims[d] > INT_MAX)
            return false;
        dims[d] = (int)c->dims[d];
    }
    return true;
}

/* Adds a layer made by a constructor (NULL: its error) to the model: LENET_EFORMAT naming the node when the
 * constructor refuses the values the file gave it. */
static lenet_status add_layer(graph *g, const node *n, lenet_layer *l)
{
    char label[128];
    if (!l) {
        if (lenet__last_status() == LENET_ENOMEM)
            return LENET_ENOMEM;
        lenet__error_prefix("node %s: ", node_label(g, n, label));
        return lenet__ckpt_refail(LENET_EFORMAT, "bad values");
    }
    size_t index = lenet_model_layer_count(g->m);
    if (index == g->cap_layers) {
        size_t cap = g->cap_layers ? 2 * g->cap_layers : 16;
        int *grown = lenet__realloc(g->flatten_size, cap * sizeof *grown);
        if (!grown) {
            lenet_layer_free(l);
            return lenet__oom("ONNX layers");
        }
        g->flatten_size = grown;
        g->cap_layers = cap;
    }
    g->flatten_size[index] = 0;
    return lenet_model_add(g->m, l);
}

/* Stages a weight and a bias for the layer about to be added (index = the model's layer count). */
static lenet_status stage_weight_bias(graph *g, const constant *weight, const int *wdims, int wndim,
                                      const constant *bias, int out)
{
    size_t layer = lenet_model_layer_count(g->m);
    lenet_status st = stage(g, layer, 0, false, weight, wndim, wdims);
    if (st != LENET_OK || !bias)
        return st;
    return stage(g, layer, 1, false, bias, 1, &out);
}

/* A zero bias for layers whose operator had none (a Conv, Gemm or MatMul without one). */
static lenet_status stage_zero_bias(graph *g, int out)
{
    float *zeros = lenet__calloc((size_t)out, sizeof(float));
    if (!zeros)
        return lenet__oom("ONNX bias");
    return stage_data(g, lenet_model_layer_count(g->m), 1, false, 1, &out, zeros, (size_t)out);
}

static lenet_status import_conv(graph *g, node *n, str x)
{
    char label[128];
    lenet_status st = check_attrs(g, n, "kernel_shape\0strides\0pads\0dilations\0group\0auto_pad\0");
    if (st != LENET_OK)
        return st;
    const constant *weight = n->n_in >= 2 ? find_const(g, n->in[1]) : NULL;
    const constant *bias = n->n_in >= 3 && n->in[2].n ? find_const(g, n->in[2]) : NULL;
    if (!str_same(n->in[0], x) || !weight || (n->n_in >= 3 && n->in[2].n && !bias) || n->n_in > 3 || n->n_out != 1)
        return unsupported("node %s: a Conv must read the data and constant weights (and bias)",
                           node_label(g, n, label));
    int wdims[4];
    if (weight->ndim != 4 || !const_dims(weight, 4, wdims) || wdims[2] != wdims[3])
        return unsupported("node %s: liblenet convolutions have square 2-D kernels (O, I, k, k)",
                           node_label(g, n, label));
    int64_t kernel, stride, pad, dilation, group;
    if ((st = attr_ints_same(g, n, "kernel_shape", 2, wdims[2], &kernel)) != LENET_OK ||
        (st = attr_ints_same(g, n, "strides", 2, 1, &stride)) != LENET_OK ||
        (st = attr_ints_same(g, n, "pads", 4, 0, &pad)) != LENET_OK ||
        (st = attr_ints_same(g, n, "dilations", 2, 1, &dilation)) != LENET_OK ||
        (st = attr_int(g, n, "group", 1, &group)) != LENET_OK || (st = check_auto_pad(g, n, pad)) != LENET_OK)
        return st;
    if (kernel != wdims[2] || dilation != 1 || group != 1)
        return unsupported("node %s: a Conv with dilation %lld, group %lld or a kernel_shape other than its weight's",
                           node_label(g, n, label), (long long)dilation, (long long)group);
    if (stride < 1 || stride > INT_MAX || pad < 0 || pad > INT_MAX)
        return format_error("node %s: stride %lld, padding %lld", node_label(g, n, label), (long long)stride,
                            (long long)pad);
    int out = wdims[0], in = wdims[1], k = wdims[2];
    if (bias && (bias->ndim != 1 || bias->dims[0] != out))
        return format_error("node %s: the bias does not have %d values", node_label(g, n, label), out);

    /* liblenet's own PartialConv2d: the table in the doc string, and zeros wherever it has no connection. */
    size_t mark = strlen(LENET_ONNX_PARTIAL_MARK), cells = (size_t)out * (size_t)in;
    if (n->doc.n == mark + cells && cells <= 240 && memcmp(n->doc.p, LENET_ONNX_PARTIAL_MARK, mark) == 0 &&
        stride == 1 && pad == 0 && bias && is_float(weight->t)) {
        unsigned char table[240];
        bool valid = true;
        int connections = 0;
        for (size_t c = 0; c < cells && valid; c++) {
            unsigned char digit = n->doc.p[mark + c];
            valid = digit == '0' || digit == '1';
            table[c] = digit == '1';
            connections += table[c];
        }
        float *dense = valid && connections ? const_floats(weight) : NULL;
        if (valid && connections && !dense)
            return lenet__last_status();
        const size_t k2 = (size_t)k * (size_t)k;
        if (dense) {
            for (size_t c = 0; c < cells && valid; c++)
                for (size_t t = 0; t < k2 && !table[c]; t++)
                    valid = valid && dense[c * k2 + t] == 0.0f;
        }
        if (dense && valid) {
            /* The connections' kernels, output-major, as the layer stores them. */
            size_t layer = lenet_model_layer_count(g->m), c = 0;
            for (size_t cell = 0; cell < cells; cell++)
                if (table[cell])
                    memmove(dense + k2 * c++, dense + k2 * cell, k2 * sizeof(float));
            int dims[3] = {connections, k, k};
            if ((st = stage_data(g, layer, 0, false, 3, dims, dense, (size_t)connections * k2)) != LENET_OK)
                return st;
            if ((st = stage(g, layer, 1, false, bias, 1, &out)) != LENET_OK)
                return st;
            return add_layer(g, n, lenet_partial_conv2d(out, in, k, table));
        }
        lenet__free(dense); /* not what liblenet writes: an ordinary Conv */
    }

    if ((st = stage_weight_bias(g, weight, wdims, 4, bias, out)) != LENET_OK ||
        (!bias && (st = stage_zero_bias(g, out)) != LENET_OK))
        return st;
    return add_layer(g, n, lenet_conv2d(out, k, (int)stride, (int)pad));
}

/* AveragePool or MaxPool without padding, square windows, floor mode. */
static lenet_status pool_args(graph *g, node *n, str x, int *kernel_size, int *stride)
{
    char label[128];
    bool max = str_eq(n->op, "MaxPool");
    lenet_status st = check_attrs(g, n, max ? "kernel_shape\0strides\0pads\0dilations\0ceil_mode\0storage_order\0"
                                              "auto_pad\0"
                                            : "kernel_shape\0strides\0pads\0ceil_mode\0count_include_pad\0"
                                              "auto_pad\0");
    if (st != LENET_OK)
        return st;
    if (n->n_in != 1 || !str_same(n->in[0], x) || n->n_out != 1)
        return unsupported("node %s: a pool with other inputs or outputs than its data", node_label(g, n, label));
    int64_t kernel, strides, pads, dilations, ceil_mode, storage_order;
    if ((st = attr_ints_same(g, n, "kernel_shape", 2, -1, &kernel)) != LENET_OK ||
        (st = attr_ints_same(g, n, "strides", 2, 1, &strides)) != LENET_OK ||
        (st = attr_ints_same(g, n, "pads", 4, 0, &pads)) != LENET_OK ||
        (st = attr_ints_same(g, n, "dilations", 2, 1, &dilations)) != LENET_OK ||
        (st = attr_int(g, n, "ceil_mode", 0, &ceil_mode)) != LENET_OK ||
        (st = attr_int(g, n, "storage_order", 0, &storage_order)) != LENET_OK ||
        (st = check_auto_pad(g, n, pads)) != LENET_OK)
        return st;
    if (pads != 0 || dilations != 1 || ceil_mode != 0 || storage_order != 0)
        return unsupported("node %s: a pool with padding, dilation or ceil_mode", node_label(g, n, label));
    if (kernel < 1 || kernel > INT_MAX || strides < 1 || strides > INT_MAX)
        return format_error("node %s: kernel_shape %lld, strides %lld", node_label(g, n, label), (long long)kernel,
                            (long long)strides);
    *kernel_size = (int)kernel;
    *stride = (int)strides;
    return LENET_OK;
}

/* AveragePool, and LeNet-5's Subsampling when Mul k*k, Mul (C, 1, 1), Add (C, 1, 1) follow it. */
static lenet_status import_avgpool(graph *g, node *n, str x, node **last)
{
    int k, s;
    lenet_status st = pool_args(g, n, x, &k, &s);
    if (st != LENET_OK)
        return st;
    *last = n;
    node *sum = next_in_pattern(g, n, "Mul");
    const constant *window = sum ? other_const(g, sum, n->out[0]) : NULL;
    node *scale = sum && const_is_scalar(window, (float)k * (float)k) ? next_in_pattern(g, sum, "Mul") : NULL;
    const constant *weight = scale ? other_const(g, scale, sum->out[0]) : NULL;
    node *shift = weight ? next_in_pattern(g, scale, "Add") : NULL;
    const constant *bias = shift ? other_const(g, shift, scale->out[0]) : NULL;
    int wdims[3], bdims[3];
    if (bias && weight->ndim == 3 && bias->ndim == 3 && const_dims(weight, 3, wdims) && const_dims(bias, 3, bdims) &&
        wdims[1] == 1 && wdims[2] == 1 && bdims[1] == 1 && bdims[2] == 1 && wdims[0] == bdims[0] &&
        shift->n_out == 1 && scale->n_out == 1 && sum->n_out == 1) {
        int channels = wdims[0];
        if ((st = stage_weight_bias(g, weight, &channels, 1, bias, channels)) != LENET_OK)
            return st;
        sum->used = scale->used = shift->used = true;
        *last = shift;
        return add_layer(g, n, lenet_subsampling(k, s));
    }
    return add_layer(g, n, lenet_avgpool2d(k, s));
}

/* Gemm(x, B, C) with alpha = beta = 1: Linear, the weight B (transB = 1) or B^T. */
static lenet_status import_linear(graph *g, node *n, str x, const constant *b, bool transposed,
                                  const constant *c)
{
    char label[128];
    int bdims[2];
    if (!b || b->ndim != 2 || !const_dims(b, 2, bdims) || !is_float(b->t))
        return unsupported("node %s: the weight of a linear layer must be a constant float matrix",
                           node_label(g, n, label));
    int out = transposed ? bdims[0] : bdims[1], in = transposed ? bdims[1] : bdims[0];
    if (c && !(c->t->numel == (size_t)out && (c->ndim == 1 || (c->ndim == 2 && c->dims[0] == 1))))
        return unsupported("node %s: the bias of a linear layer must hold one value per output",
                           node_label(g, n, label));
    (void)x;
    size_t layer = lenet_model_layer_count(g->m);
    int wdims[2] = {out, in};
    lenet_status st = stage(g, layer, 0, false, b, 2, wdims);
    if (st != LENET_OK)
        return st;
    if (!transposed) { /* (in, out) to (out, in) */
        staged *s = &g->staged[g->n_staged - 1];
        float *t = lenet__malloc(s->numel * sizeof(float));
        if (!t)
            return lenet__oom("linear weight");
        for (int i = 0; i < in; i++)
            for (int o = 0; o < out; o++)
                t[(size_t)o * in + i] = s->data[(size_t)i * out + o];
        lenet__free(s->data);
        s->data = t;
    }
    if (c)
        st = stage(g, layer, 1, false, c, 1, &out);
    else
        st = stage_zero_bias(g, out);
    if (st != LENET_OK)
        return st;
    return add_layer(g, n, lenet_linear(out));
}

static lenet_status import_gemm(graph *g, node *n, str x)
{
    char label[128];
    lenet_status st = check_attrs(g, n, "alpha\0beta\0transA\0transB\0");
    if (st != LENET_OK)
        return st;
    float alpha, beta;
    int64_t trans_a, trans_b;
    if ((st = attr_float(g, n, "alpha", 1.0f, &alpha)) != LENET_OK ||
        (st = attr_float(g, n, "beta", 1.0f, &beta)) != LENET_OK ||
        (st = attr_int(g, n, "transA", 0, &trans_a)) != LENET_OK ||
        (st = attr_int(g, n, "transB", 0, &trans_b)) != LENET_OK)
        return st;
    const constant *c = n->n_in >= 3 && n->in[2].n ? find_const(g, n->in[2]) : NULL;
    if (n->n_in < 2 || n->n_in > 3 || !str_same(n->in[0], x) || n->n_out != 1 || trans_a != 0 || alpha != 1.0f ||
        (c && beta != 1.0f) || (n->n_in == 3 && n->in[2].n && !c) || (trans_b != 0 && trans_b != 1))
        return unsupported("node %s: liblenet reads Gemm(x, W, b) with alpha = beta = 1 and transA = 0",
                           node_label(g, n, label));
    return import_linear(g, n, x, find_const(g, n->in[1]), trans_b == 1, c);
}

/* MatMul(x, W) and an Add of a constant bias after it, if there is one. */
static lenet_status import_matmul(graph *g, node *n, str x, node **last)
{
    char label[128];
    lenet_status st = check_attrs(g, n, "\0");
    if (st != LENET_OK)
        return st;
    if (n->n_in != 2 || !str_same(n->in[0], x) || n->n_out != 1)
        return unsupported("node %s: liblenet reads MatMul(x, W) with W a constant", node_label(g, n, label));
    *last = n;
    node *add = next_in_pattern(g, n, "Add");
    const constant *bias = add && add->n_out == 1 ? other_const(g, add, n->out[0]) : NULL;
    if (bias) {
        add->used = true;
        *last = add;
    }
    return import_linear(g, n, x, find_const(g, n->in[1]), false, bias);
}

static lenet_status import_batchnorm(graph *g, node *n, str x, int rank)
{
    char label[128];
    lenet_status st = check_attrs(g, n, "epsilon\0momentum\0training_mode\0spatial\0");
    if (st != LENET_OK)
        return st;
    float epsilon, momentum;
    int64_t training, spatial;
    if ((st = attr_float(g, n, "epsilon", 1e-5f, &epsilon)) != LENET_OK ||
        (st = attr_float(g, n, "momentum", 0.9f, &momentum)) != LENET_OK ||
        (st = attr_int(g, n, "training_mode", 0, &training)) != LENET_OK ||
        (st = attr_int(g, n, "spatial", 1, &spatial)) != LENET_OK)
        return st;
    if (training != 0 || spatial != 1)
        return unsupported("node %s: BatchNormalization in training mode or per activation",
                           node_label(g, n, label));
    const constant *c[4];
    for (int k = 0; k < 4; k++)
        c[k] = n->n_in == 5 ? find_const(g, n->in[k + 1]) : NULL;
    if (n->n_in != 5 || !str_same(n->in[0], x) || !c[0] || !c[1] || !c[2] || !c[3])
        return unsupported("node %s: BatchNormalization must read the data and four constants",
                           node_label(g, n, label));
    for (int k = 1; k < n->n_out; k++) {
        node *reader;
        int readers = n->out[k].n ? single_consumer(g, n->out[k], &reader) : 0;
        if (readers < 0)
            return readers;
        if (readers || str_same(n->out[k], g->output))
            return unsupported("node %s: BatchNormalization's running statistics are read", node_label(g, n, label));
    }
    int channels = (int)(c[0]->t->numel <= INT_MAX ? c[0]->t->numel : 0);
    for (int k = 0; k < 4; k++)
        if (c[k]->ndim != 1 || c[k]->t->numel != (size_t)channels || channels < 1)
            return format_error("node %s: BatchNormalization's constants must hold one value per channel",
                                node_label(g, n, label));
    size_t layer = lenet_model_layer_count(g->m);
    for (int k = 0; k < 4 && st == LENET_OK; k++)
        st = stage(g, layer, k % 2, k >= 2, c[k], 1, &channels);
    if (st != LENET_OK)
        return st;
    float lib_momentum = (float)(1.0 - (double)momentum);
    return add_layer(g, n, rank == 3 ? lenet_batchnorm2d(epsilon, lib_momentum)
                                     : lenet_batchnorm1d(epsilon, lib_momentum));
}

static lenet_status import_dropout(graph *g, node *n, str x)
{
    char label[128];
    lenet_status st = check_attrs(g, n, "ratio\0seed\0is_test\0");
    if (st != LENET_OK)
        return st;
    float ratio;
    if ((st = attr_float(g, n, "ratio", 0.5f, &ratio)) != LENET_OK)
        return st;
    if (n->n_in >= 2 && n->in[1].n) {
        const constant *r = find_const(g, n->in[1]);
        if (!r || !is_float(r->t) || r->t->numel != 1)
            return unsupported("node %s: Dropout's ratio must be a constant", node_label(g, n, label));
        tensor_values(r->t, NULL, &ratio);
    }
    if (n->n_in > 2 || !str_same(n->in[0], x))
        return unsupported("node %s: Dropout with a training_mode input", node_label(g, n, label));
    if (n->n_out > 1 && n->out[1].n) {
        node *reader;
        int readers = single_consumer(g, n->out[1], &reader);
        if (readers < 0)
            return readers;
        if (readers || str_same(n->out[1], g->output))
            return unsupported("node %s: Dropout's mask is read", node_label(g, n, label));
    }
    return add_layer(g, n, lenet_dropout(ratio));
}

/* Mul S, Tanh, Mul A: LeNet-5's ScaledTanh. */
static lenet_status import_scaled_tanh(graph *g, node *n, str x, node **last)
{
    char label[128];
    node *tanh_node = const_is_scalar(other_const(g, n, x), LENET_ONNX_SQUASH_S) ? next_in_pattern(g, n, "Tanh")
                                                                                 : NULL;
    node *outer = tanh_node && tanh_node->n_in == 1 ? next_in_pattern(g, tanh_node, "Mul") : NULL;
    if (!outer || !const_is_scalar(other_const(g, outer, tanh_node->out[0]), LENET_ONNX_SQUASH_A) ||
        n->n_out != 1 || tanh_node->n_out != 1 || outer->n_out != 1)
        return unsupported("node %s: a Mul that is not part of LeNet-5's 1.7159 tanh(2/3 x)",
                           node_label(g, n, label));
    lenet_status st;
    if ((st = check_attrs(g, n, "\0")) != LENET_OK || (st = check_attrs(g, tanh_node, "\0")) != LENET_OK ||
        (st = check_attrs(g, outer, "\0")) != LENET_OK)
        return st;
    tanh_node->used = outer->used = true;
    *last = outer;
    return add_layer(g, n, lenet_scaled_tanh());
}

/* The axes of a ReduceSum or Unsqueeze: an input (opset 13 on) or an attribute (before). */
static lenet_status axes_of(graph *g, node *n, int64_t *axes, size_t *count)
{
    char label[128];
    if (n->n_in >= 2 && n->in[1].n) {
        const constant *c = find_const(g, n->in[1]);
        if (!c)
            return unsupported("node %s: axes must be a constant", node_label(g, n, label));
        return small_ints(g, n, c, axes, count);
    }
    attr a;
    int got = find_attr(n, "axes", &a);
    if (got < 0)
        return got;
    *count = 0;
    if (got && (a.type != ONNX_ATTR_TYPE_INTS || a.too_many_ints))
        return format_error("node %s: bad axes", node_label(g, n, label));
    for (int k = 0; got && k < a.n_ints; k++)
        axes[(*count)++] = a.ints[k];
    return LENET_OK;
}

/* Unsqueeze axis 1, Sub the centres, Mul by itself, ReduceSum axis 2: LeNet-5's EuclideanRBF. */
static lenet_status import_rbf(graph *g, node *n, str x, node **last)
{
    char label[128];
    int64_t axes[MAX_SMALL];
    size_t count = 0;
    lenet_status st = check_attrs(g, n, "axes\0");
    if (st != LENET_OK || (st = axes_of(g, n, axes, &count)) != LENET_OK)
        return st;
    node *sub = count == 1 && axes[0] == 1 && n->n_out == 1 && str_same(n->in[0], x) ? next_in_pattern(g, n, "Sub")
                                                                                      : NULL;
    const constant *centres = sub && sub->n_in == 2 && str_same(sub->in[0], n->out[0]) ? find_const(g, sub->in[1])
                                                                                       : NULL;
    node *square = centres && sub->n_out == 1 ? next_in_pattern(g, sub, "Mul") : NULL;
    bool squares = square && square->n_in == 2 && square->n_out == 1 && str_same(square->in[0], sub->out[0]) &&
                   str_same(square->in[1], sub->out[0]);
    node *reduce = squares ? next_in_pattern(g, square, "ReduceSum") : NULL;
    int cdims[2];
    if (!reduce || reduce->n_out != 1 || centres->ndim != 2 || !const_dims(centres, 2, cdims) ||
        !is_float(centres->t))
        return unsupported("node %s: an Unsqueeze that is not part of LeNet-5's sum_j (x_j - w_ij)^2",
                           node_label(g, n, label));
    int64_t keepdims, noop;
    if ((st = check_attrs(g, sub, "\0")) != LENET_OK || (st = check_attrs(g, square, "\0")) != LENET_OK ||
        (st = check_attrs(g, reduce, "axes\0keepdims\0noop_with_empty_axes\0")) != LENET_OK ||
        (st = axes_of(g, reduce, axes, &count)) != LENET_OK ||
        (st = attr_int(g, reduce, "keepdims", 1, &keepdims)) != LENET_OK ||
        (st = attr_int(g, reduce, "noop_with_empty_axes", 0, &noop)) != LENET_OK)
        return st;
    if (count != 1 || (axes[0] != 2 && axes[0] != -1) || keepdims != 0 || !str_same(reduce->in[0], square->out[0]))
        return unsupported("node %s: the ReduceSum after an RBF's squares must sum axis 2 without keeping it",
                           node_label(g, reduce, label));
    float *values = lenet__malloc(centres->t->numel * sizeof(float));
    if (!values)
        return lenet__oom("RBF centres");
    tensor_values(centres->t, NULL, values);
    float bitmaps[10 * 84];
    lenet_lenet5_rbf_bitmaps(bitmaps);
    bool lenet5 = cdims[0] == 10 && cdims[1] == 84 && memcmp(values, bitmaps, sizeof bitmaps) == 0;
    /* A general RBF starts from zero centres: the staged tensor replaces them like any weight. */
    lenet_layer *l = lenet5 ? lenet_lenet5_rbf() : lenet_euclidean_rbf(cdims[0]);
    lenet__free(values);
    if ((st = stage(g, lenet_model_layer_count(g->m), 0, false, centres, 2, cdims)) != LENET_OK) {
        lenet_layer_free(l);
        return st;
    }
    sub->used = square->used = reduce->used = true;
    *last = reduce;
    return add_layer(g, n, l);
}

/* Flatten(axis 1), or Reshape to (N, -1) / (N, features). */
static lenet_status import_flatten(graph *g, node *n, str x)
{
    char label[128];
    bool reshape = str_eq(n->op, "Reshape");
    lenet_status st = check_attrs(g, n, reshape ? "allowzero\0" : "axis\0");
    if (st != LENET_OK)
        return st;
    int features = 0;
    if (reshape) {
        int64_t shape[MAX_SMALL], allowzero;
        size_t count;
        const constant *c = n->n_in == 2 ? find_const(g, n->in[1]) : NULL;
        if (!c)
            return unsupported("node %s: a Reshape to a shape computed in the graph", node_label(g, n, label));
        if ((st = small_ints(g, n, c, shape, &count)) != LENET_OK ||
            (st = attr_int(g, n, "allowzero", 0, &allowzero)) != LENET_OK)
            return st;
        if (count != 2 || allowzero != 0 || (shape[0] != 0 && shape[0] != -1) ||
            (shape[1] != -1 && (shape[1] < 1 || shape[1] > INT_MAX)) || (shape[0] == -1 && shape[1] == -1))
            return unsupported("node %s: a Reshape other than to (N, -1) or (N, features)", node_label(g, n, label));
        features = shape[1] == -1 ? 0 : (int)shape[1];
    } else {
        int64_t axis;
        if ((st = attr_int(g, n, "axis", 1, &axis)) != LENET_OK)
            return st;
        if (axis != 1)
            return unsupported("node %s: Flatten with axis %lld (liblenet flattens after the batch axis)",
                               node_label(g, n, label), (long long)axis);
        if (n->n_in != 1)
            return unsupported("node %s: Flatten with %d inputs", node_label(g, n, label), n->n_in);
    }
    if (!str_same(n->in[0], x) || n->n_out != 1)
        return unsupported("node %s: a reshape of something else than the data", node_label(g, n, label));
    size_t index = lenet_model_layer_count(g->m);
    if ((st = add_layer(g, n, lenet_flatten())) != LENET_OK)
        return st;
    g->flatten_size[index] = features;
    return LENET_OK;
}

/* A Pad that pads nothing (all pads 0): the identity.  Real padding has no layer of its own in liblenet. */
static lenet_status import_zero_pad(graph *g, node *n, str x)
{
    char label[128];
    lenet_status st = check_attrs(g, n, "mode\0pads\0value\0");
    if (st != LENET_OK)
        return st;
    int64_t pads[MAX_SMALL];
    size_t count = 0;
    if (n->n_in >= 2 && n->in[1].n) {
        const constant *c = find_const(g, n->in[1]);
        if (!c)
            return unsupported("node %s: pads computed in the graph", node_label(g, n, label));
        if ((st = small_ints(g, n, c, pads, &count)) != LENET_OK)
            return st;
    } else {
        attr a;
        int got = find_attr(n, "pads", &a);
        if (got < 0)
            return got;
        if (got && (a.type != ONNX_ATTR_TYPE_INTS || a.too_many_ints))
            return format_error("node %s: bad pads", node_label(g, n, label));
        for (int k = 0; got && k < a.n_ints; k++)
            pads[count++] = a.ints[k];
    }
    for (size_t k = 0; k < count; k++)
        if (pads[k] != 0)
            return unsupported("node %s: a Pad that pads (liblenet pads only inside Conv)", node_label(g, n, label));
    if (n->n_in > 3 || !str_same(n->in[0], x) || n->n_out != 1)
        return unsupported("node %s: a Pad of something else than the data", node_label(g, n, label));
    return LENET_OK;
}

/* One step of the chain: the layer starting at node n, which reads x.  *last is the layer's last node, *rank the
 * per-sample rank after it. */
static lenet_status import_node(graph *g, node *n, str x, int *rank, node **last)
{
    char label[128];
    *last = n;
    if (n->too_many)
        return unsupported("node %s: more than %d inputs or outputs", node_label(g, n, label), MAX_IO);
    if (n->domain.n && !str_eq(n->domain, "ai.onnx"))
        return unsupported("operator %.*s of domain %.*s (node %s)", SHOW(n->op), SHOW(n->domain),
                           node_label(g, n, label));
    str op = n->op;
    bool image = *rank == 3;
    if (str_eq(op, "Conv") && image)
        return import_conv(g, n, x);
    if (str_eq(op, "AveragePool") && image)
        return import_avgpool(g, n, x, last);
    if (str_eq(op, "MaxPool") && image) {
        int k, s;
        lenet_status st = pool_args(g, n, x, &k, &s);
        return st != LENET_OK ? st : add_layer(g, n, lenet_maxpool2d(k, s));
    }
    if (str_eq(op, "Relu") || str_eq(op, "Sigmoid") || str_eq(op, "Tanh")) {
        lenet_status st = check_attrs(g, n, "\0");
        if (st != LENET_OK)
            return st;
        if (n->n_in != 1 || n->n_out != 1)
            return format_error("node %s: %d inputs, %d outputs", node_label(g, n, label), n->n_in, n->n_out);
        return add_layer(g, n, str_eq(op, "Relu") ? lenet_relu() : str_eq(op, "Sigmoid") ? lenet_sigmoid()
                                                                                       : lenet_tanh());
    }
    if (str_eq(op, "Flatten") || str_eq(op, "Reshape")) {
        *rank = 1;
        return import_flatten(g, n, x);
    }
    if (str_eq(op, "Gemm") && !image)
        return import_gemm(g, n, x);
    if (str_eq(op, "MatMul") && !image)
        return import_matmul(g, n, x, last);
    if (str_eq(op, "BatchNormalization"))
        return import_batchnorm(g, n, x, *rank);
    if (str_eq(op, "Dropout"))
        return import_dropout(g, n, x);
    if (str_eq(op, "Mul"))
        return import_scaled_tanh(g, n, x, last);
    if (str_eq(op, "Unsqueeze") && !image)
        return import_rbf(g, n, x, last);
    if (str_eq(op, "Pad")) /* torch.onnx.export writes AvgPool2d as a Pad of zeros and an AveragePool */
        return import_zero_pad(g, n, x);
    if (str_eq(op, "Identity")) {
        lenet_status st = check_attrs(g, n, "\0");
        if (st == LENET_OK && (n->n_in != 1 || n->n_out != 1))
            st = format_error("node %s: %d inputs, %d outputs", node_label(g, n, label), n->n_in, n->n_out);
        return st;
    }
    static const char *const known[] = {"Conv", "AveragePool", "MaxPool", "Gemm", "MatMul", "Unsqueeze"};
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
        if (str_eq(op, known[k]))
            return unsupported("operator %.*s (node %s) on %s input", SHOW(op), node_label(g, n, label),
                               image ? "image" : "flattened");
    return unsupported("operator %.*s (node %s) has no liblenet layer", SHOW(op), node_label(g, n, label));
}

static lenet_status walk_chain(graph *g)
{
    str cur = g->input;
    int rank = 3;
    for (;;) {
        node *n;
        int found = single_consumer(g, cur, &n);
        if (found < 0)
            return found;
        if (str_same(cur, g->output)) {
            if (found)
                return unsupported("the graph's output \"%.*s\" is also read by a node", SHOW(cur));
            break;
        }
        if (!found)
            return format_error("value \"%.*s\" is read by no node and is not the graph's output", SHOW(cur));
        node *last;
        n->used = true;
        lenet_status st = import_node(g, n, cur, &rank, &last);
        if (st != LENET_OK)
            return st;
        if (last->n_out < 1 || last->out[0].n == 0)
            return format_error("a node has no output");
        cur = last->out[0];
    }
    for (size_t i = 0; i < g->n_nodes; i++) {
        char label[128];
        if (!g->nodes[i].used)
            return unsupported("node %s is not on the chain from the input to the output",
                               node_label(g, &g->nodes[i], label));
    }
    if (lenet_model_layer_count(g->m) == 0)
        return unsupported("the graph computes no layer");
    return LENET_OK;
}

/* Plans the model for the graph's input without allocating and checks every staged tensor against the layer's
 * own (and each Reshape's size), then builds it and copies the tensors in. */
static lenet_status build_model(graph *g)
{
    lenet_model *m = g->m;
    lenet_shape in = {.ndim = 3, .dim = {g->input_chw[0], g->input_chw[1], g->input_chw[2]}};
    lenet_model_plan plan;
    lenet_status st = lenet__model_plan(m, in, &plan);
    if (st != LENET_OK)
        return st == LENET_ENOMEM ? st : lenet__ckpt_refail(LENET_EFORMAT, "the graph's shapes do not fit");
    for (size_t i = 0; i < g->n_staged && st == LENET_OK; i++) {
        const staged *s = &g->staged[i];
        int count = s->buffer ? plan.n_buffers[s->layer] : plan.n_params[s->layer];
        const lenet_param_spec *spec = &plan.specs[s->layer][(s->buffer ? plan.n_params[s->layer] : 0) + s->slot];
        bool same = s->slot < count && spec->ndim == s->ndim;
        for (int d = 0; same && d < s->ndim; d++)
            same = spec->shape[d] == s->dims[d];
        if (!same) {
            char want[64], have[64];
            lenet__shape_str(spec->ndim, spec->shape, want, sizeof want);
            lenet__shape_str(s->ndim, s->dims, have, sizeof have);
            st = format_error("layer %zu (%s): %s %d is %s in the file, the layer needs %s", s->layer,
                              m->layers[s->layer]->ops->name, s->buffer ? "buffer" : "parameter", s->slot, have,
                              s->slot < count ? want : "none");
        }
    }
    for (size_t i = 0; i < m->n_layers && st == LENET_OK; i++)
        if (g->flatten_size[i] && m->layers[i]->out_size != (size_t)g->flatten_size[i])
            st = format_error("layer %zu: the Reshape asks for %d features, the input has %zu", i, g->flatten_size[i],
                              m->layers[i]->out_size);
    lenet__model_plan_free(&plan);
    if (st != LENET_OK) {
        lenet__model_forget_shapes(m);
        return st;
    }
    if ((st = lenet_model_build(m, in.dim[0], in.dim[1], in.dim[2])) != LENET_OK)
        return st;
    for (size_t i = 0; i < g->n_staged; i++) {
        const staged *s = &g->staged[i];
        lenet_tensor *t = NULL;
        if (!s->buffer) {
            t = &m->param_tensors[m->layer_first_param[s->layer] + (size_t)s->slot];
        } else {
            for (size_t b = 0, k = 0; b < m->n_buffers && !t; b++)
                if (m->buffer_layer[b] == s->layer && k++ == (size_t)s->slot)
                    t = &m->buffer_tensors[b];
        }
        memcpy(t->data, s->data, s->numel * sizeof(float));
    }
    return LENET_OK;
}

lenet_model *lenet_model_import_onnx(const char *path)
{
    if (!path)
        return lenet__fail_null(LENET_EINVAL, WHO ": path is NULL");
    graph g = {.path = path};
    lenet_status st = read_file(&g);
    if (st != LENET_OK) {
        lenet__error_prefix(WHO ": ");
        goto done;
    }
    g.m = lenet_model_create();
    if (!g.m) {
        st = LENET_ENOMEM;
        goto fail;
    }
    if ((st = parse_model(&g)) == LENET_OK && (st = walk_chain(&g)) == LENET_OK)
        st = build_model(&g);
fail:
    if (st != LENET_OK)
        lenet__error_prefix(WHO ": %s: ", path);
done:
    for (size_t i = 0; i < g.n_staged; i++)
        lenet__free(g.staged[i].data);
    lenet__free(g.staged);
    lenet__free(g.flatten_size);
    lenet__free(g.nodes);
    lenet__free(g.tensors);
    lenet__free(g.consts);
    lenet__free(g.bytes);
    if (st != LENET_OK) {
        lenet_model_free(g.m);
        return NULL;
    }
    return g.m;
}
