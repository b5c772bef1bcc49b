/* The parts of ONNX's schema (onnx/onnx.proto) that liblenet reads and writes: message field numbers and enum
 * values, shared by onnx_write.c and onnx_read.c.  Never installed. */
#ifndef LENET_IO_ONNX_PROTO_H
#define LENET_IO_ONNX_PROTO_H

/* ModelProto */
enum {
    ONNX_MODEL_IR_VERSION = 1,
    ONNX_MODEL_PRODUCER_NAME = 2,
    ONNX_MODEL_PRODUCER_VERSION = 3,
    ONNX_MODEL_GRAPH = 7,
    ONNX_MODEL_OPSET_IMPORT = 8,
    ONNX_MODEL_FUNCTIONS = 25
};
/* OperatorSetIdProto */
enum { ONNX_OPSET_DOMAIN = 1, ONNX_OPSET_VERSION = 2 };
/* GraphProto */
enum {
    ONNX_GRAPH_NODE = 1,
    ONNX_GRAPH_NAME = 2,
    ONNX_GRAPH_INITIALIZER = 5,
    ONNX_GRAPH_INPUT = 11,
    ONNX_GRAPH_OUTPUT = 12,
    ONNX_GRAPH_SPARSE_INITIALIZER = 15
};
/* NodeProto */
enum {
    ONNX_NODE_INPUT = 1,
    ONNX_NODE_OUTPUT = 2,
    ONNX_NODE_NAME = 3,
    ONNX_NODE_OP_TYPE = 4,
    ONNX_NODE_ATTRIBUTE = 5,
    ONNX_NODE_DOC_STRING = 6,
    ONNX_NODE_DOMAIN = 7
};
/* AttributeProto */
enum {
    ONNX_ATTR_NAME = 1,
    ONNX_ATTR_F = 2,
    ONNX_ATTR_I = 3,
    ONNX_ATTR_S = 4,
    ONNX_ATTR_T = 5,
    ONNX_ATTR_FLOATS = 7,
    ONNX_ATTR_INTS = 8,
    ONNX_ATTR_TYPE = 20,
    ONNX_ATTR_REF_ATTR_NAME = 21
};
/* AttributeProto.AttributeType */
enum {
    ONNX_ATTR_TYPE_FLOAT = 1,
    ONNX_ATTR_TYPE_INT = 2,
    ONNX_ATTR_TYPE_STRING = 3,
    ONNX_ATTR_TYPE_TENSOR = 4,
    ONNX_ATTR_TYPE_FLOATS = 6,
    ONNX_ATTR_TYPE_INTS = 7
};
/* TensorProto */
enum {
    ONNX_TENSOR_DIMS = 1,
    ONNX_TENSOR_DATA_TYPE = 2,
    ONNX_TENSOR_SEGMENT = 3,
    ONNX_TENSOR_FLOAT_DATA = 4,
    ONNX_TENSOR_INT32_DATA = 5,
    ONNX_TENSOR_STRING_DATA = 6,
    ONNX_TENSOR_INT64_DATA = 7,
    ONNX_TENSOR_NAME = 8,
    ONNX_TENSOR_RAW_DATA = 9,
    ONNX_TENSOR_DOUBLE_DATA = 10,
    ONNX_TENSOR_UINT64_DATA = 11,
    ONNX_TENSOR_EXTERNAL_DATA = 13,
    ONNX_TENSOR_DATA_LOCATION = 14
};
/* TensorProto.DataType */
enum { ONNX_FLOAT = 1, ONNX_INT32 = 6, ONNX_INT64 = 7, ONNX_DOUBLE = 11 };
/* ValueInfoProto, TypeProto, TypeProto.Tensor, TensorShapeProto, TensorShapeProto.Dimension */
enum { ONNX_VALUE_NAME = 1, ONNX_VALUE_TYPE = 2 };
enum { ONNX_TYPE_TENSOR = 1 };
enum { ONNX_TENSOR_TYPE_ELEM_TYPE = 1, ONNX_TENSOR_TYPE_SHAPE = 2 };
enum { ONNX_SHAPE_DIM = 1 };
enum { ONNX_DIM_VALUE = 1, ONNX_DIM_PARAM = 2 };

/* What liblenet writes: IR version 7 (ONNX 1.8) with operator set 13. */
#define LENET_ONNX_IR_VERSION 7
#define LENET_ONNX_OPSET 13

/* The marker a PartialConv2d's Conv node carries in its doc_string, followed by its connection table as
 * out_channels * in_channels digits '0'/'1' (table[o * in_channels + i]), so that the importer rebuilds the
 * layer exactly, even where a connection's kernel happens to be all zeros. */
#define LENET_ONNX_PARTIAL_MARK "liblenet PartialConv2d table "

/* LeNet-5's squashing function A tanh(S x), the constants of lib/layers/scaled_tanh.c. */
#define LENET_ONNX_SQUASH_A 1.7159f
#define LENET_ONNX_SQUASH_S (2.0f / 3.0f)

#endif /* LENET_IO_ONNX_PROTO_H */
