/* The protobuf wire format (https://protobuf.dev/programming-guides/encoding/), enough for ONNX files: a reader
 * that walks the fields of one message held in memory, trusting nothing (every varint, length and nesting level is
 * bounded), and a writer that appends fields to a growing buffer.  No schema: callers know their field numbers.
 * Never installed. */
#ifndef LENET_IO_PROTOBUF_H
#define LENET_IO_PROTOBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* Messages nested deeper than this are refused (ONNX needs 6: model, graph, node, attribute, tensor, ...). */
#define LENET_PB_MAX_DEPTH 16
/* The largest message protobuf itself allows (2 GiB - 1): lengths above it are refused, and nothing larger is
 * written. */
#define LENET_PB_MAX_SIZE ((size_t)INT32_MAX)

typedef enum lenet_pb_wire {
    LENET_PB_VARINT = 0,
    LENET_PB_FIXED64 = 1,
    LENET_PB_BYTES = 2, /* length-delimited: strings, bytes, messages, packed repeated scalars */
    LENET_PB_FIXED32 = 5
} lenet_pb_wire;

/* ---- reading ---- */

/* The bytes of one message and how deep it is nested (0 for the file). */
typedef struct lenet_pb_msg {
    const unsigned char *data;
    size_t size;
    int depth;
} lenet_pb_msg;

/* One field as read: its number, wire type and value (varint or fixed values in `value`, the bytes of a
 * length-delimited field in data/size, pointing into the message). */
typedef struct lenet_pb_field {
    uint32_t number;
    lenet_pb_wire wire;
    uint64_t value;
    const unsigned char *data;
    size_t size;
} lenet_pb_field;

/* A cursor over a message's fields. */
typedef struct lenet_pb_reader {
    lenet_pb_msg msg;
    size_t pos;
} lenet_pb_reader;

void lenet__pb_reader_init(lenet_pb_reader *r, lenet_pb_msg msg);
/* Reads the next field: 1 and *f filled, 0 at the end of the message, or LENET_EFORMAT (a varint longer than 10
 * bytes or beyond 64 bits, a field number 0 or above 2^29 - 1, a group or unknown wire type, a length past the end)
 * with the message "<what>: ..." and the byte offset within the message. */
int lenet__pb_next(lenet_pb_reader *r, lenet_pb_field *f, const char *what);
/* The message held in a length-delimited field of `parent`, one level deeper; LENET_EFORMAT naming `what` if the
 * field is not length-delimited or the nesting is deeper than LENET_PB_MAX_DEPTH. */
lenet_status lenet__pb_sub(const lenet_pb_msg *parent, const lenet_pb_field *f, const char *what, lenet_pb_msg *out);
/* Reads a varint from [*p, end): false if it is cut, longer than 10 bytes or beyond 64 bits. */
bool lenet__pb_varint(const unsigned char **p, const unsigned char *end, uint64_t *out);

/* Walks the values of a repeated scalar field, which may come unpacked (one field per value) or packed (a
 * length-delimited field of concatenated values), the two forms possibly mixed.  `elem` is the wire type of one
 * value (LENET_PB_VARINT, LENET_PB_FIXED32 or LENET_PB_FIXED64).  Call with each occurrence of the field:
 * lenet__pb_scalars counts them (*count += values), lenet__pb_scalar_at reads them one after the other. */
lenet_status lenet__pb_scalars(const lenet_pb_field *f, lenet_pb_wire elem, const char *what, size_t *count);
/* Decodes the values of one occurrence into `out` (room for the count lenet__pb_scalars gave), as raw 64-bit
 * patterns: a varint's value, or the little-endian bits of a fixed32/fixed64.  Returns the number written. */
size_t lenet__pb_scalar_values(const lenet_pb_field *f, lenet_pb_wire elem, uint64_t *out);

/* ---- writing ---- */

/* A growing buffer of encoded fields.  A failed append marks it failed and later appends do nothing, so a writer
 * checks once, at the end. */
typedef struct lenet_pb_buf {
    unsigned char *data;
    size_t size, cap;
    bool failed; /* out of memory, or a message over LENET_PB_MAX_SIZE */
} lenet_pb_buf;

void lenet__pb_buf_free(lenet_pb_buf *b);
void lenet__pb_put_varint_field(lenet_pb_buf *b, uint32_t number, uint64_t value);
/* An int64 field (negative values take ten bytes, as protobuf encodes them). */
void lenet__pb_put_int64(lenet_pb_buf *b, uint32_t number, int64_t value);
void lenet__pb_put_float(lenet_pb_buf *b, uint32_t number, float value);
void lenet__pb_put_bytes(lenet_pb_buf *b, uint32_t number, const void *data, size_t size);
void lenet__pb_put_string(lenet_pb_buf *b, uint32_t number, const char *s);
/* Bytes already encoded (fields of another buffer, or a field's payload after lenet__pb_put_header). */
void lenet__pb_put_raw(lenet_pb_buf *b, const void *data, size_t size);
/* The fields of another buffer, appended as they are (its failure carries over). */
void lenet__pb_append(lenet_pb_buf *b, const lenet_pb_buf *fields);
/* A nested message: the bytes of `sub` as a length-delimited field (sub's failure carries over). */
void lenet__pb_put_message(lenet_pb_buf *b, uint32_t number, const lenet_pb_buf *sub);
/* Only the key and length of a length-delimited field of `size` bytes, for a caller that writes the bytes
 * separately (a large message appended without copying it). */
void lenet__pb_put_header(lenet_pb_buf *b, uint32_t number, size_t size);

#endif /* LENET_IO_PROTOBUF_H */
