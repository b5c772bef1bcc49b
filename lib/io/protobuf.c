/* The protobuf wire format: a bounded reader over a message in memory and an appending writer.
 * A field is a key varint (number << 3 | wire type) followed by its value: a varint, 8 or 4 little-endian bytes,
 * or a length varint and that many bytes. */
#include <string.h>

#include "io/protobuf.h"

/* Field numbers are 29 bits (protobuf reserves nothing above for us to accept). */
#define PB_MAX_FIELD ((1u << 29) - 1)

/* ---- reading ---- */

bool lenet__pb_varint(const unsigned char **p, const unsigned char *end, uint64_t *out)
{
    uint64_t value = 0;
    const unsigned char *q = *p;
    for (int shift = 0; shift < 64; shift += 7) {
        if (q == end)
            return false;
        unsigned char byte = *q++;
        /* The tenth byte holds bit 63 only. */
        if (shift == 63 && byte > 1)
            return false;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *p = q;
            *out = value;
            return true;
        }
    }
    return false;
}

void lenet__pb_reader_init(lenet_pb_reader *r, lenet_pb_msg msg)
{
    r->msg = msg;
    r->pos = 0;
}

static uint64_t load_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

int lenet__pb_next(lenet_pb_reader *r, lenet_pb_field *f, const char *what)
{
    if (r->pos == r->msg.size) /* also an absent message, whose data is NULL */
        return 0;
    const unsigned char *end = r->msg.data + r->msg.size, *p = r->msg.data + r->pos;
    uint64_t key;
    if (!lenet__pb_varint(&p, end, &key))
        return lenet__fail(LENET_EFORMAT, "%s: bad field key at byte %zu", what, r->pos);
    uint64_t number = key >> 3;
    if (number == 0 || number > PB_MAX_FIELD)
        return lenet__fail(LENET_EFORMAT, "%s: field number %llu at byte %zu", what, (unsigned long long)number,
                           r->pos);
    *f = (lenet_pb_field){.number = (uint32_t)number, .wire = (lenet_pb_wire)(key & 7)};
    size_t left = (size_t)(end - p);
    switch (key & 7) {
    case LENET_PB_VARINT:
        if (!lenet__pb_varint(&p, end, &f->value))
            return lenet__fail(LENET_EFORMAT, "%s: field %u: bad varint at byte %zu", what, f->number, r->pos);
        break;
    case LENET_PB_FIXED64:
    case LENET_PB_FIXED32: {
        int bytes = (key & 7) == LENET_PB_FIXED64 ? 8 : 4;
        if (left < (size_t)bytes)
            return lenet__fail(LENET_EFORMAT, "%s: field %u is cut at byte %zu", what, f->number, r->pos);
        f->value = load_le(p, bytes);
        p += bytes;
        break;
    }
    case LENET_PB_BYTES: {
        uint64_t length;
        if (!lenet__pb_varint(&p, end, &length))
            return lenet__fail(LENET_EFORMAT, "%s: field %u: bad length at byte %zu", what, f->number, r->pos);
        left = (size_t)(end - p);
        if (length > left || length > LENET_PB_MAX_SIZE)
            return lenet__fail(LENET_EFORMAT, "%s: field %u at byte %zu declares %llu bytes, %zu are left", what,
                               f->number, r->pos, (unsigned long long)length, left);
        f->data = p;
        f->size = (size_t)length;
        p += length;
        break;
    }
    default: /* 3 and 4 are the deprecated groups, 6 and 7 do not exist */
        return lenet__fail(LENET_EFORMAT, "%s: field %u has wire type %u at byte %zu", what, f->number,
                           (unsigned)(key & 7), r->pos);
    }
    r->pos = (size_t)(p - r->msg.data);
    return 1;
}

lenet_status lenet__pb_sub(const lenet_pb_msg *parent, const lenet_pb_field *f, const char *what, lenet_pb_msg *out)
{
    if (f->wire != LENET_PB_BYTES)
        return lenet__fail(LENET_EFORMAT, "%s: field %u is not a message (wire type %d)", what, f->number,
                           (int)f->wire);
    if (parent->depth >= LENET_PB_MAX_DEPTH)
        return lenet__fail(LENET_EFORMAT, "%s: messages nested deeper than %d", what, LENET_PB_MAX_DEPTH);
    *out = (lenet_pb_msg){.data = f->data, .size = f->size, .depth = parent->depth + 1};
    return LENET_OK;
}

lenet_status lenet__pb_scalars(const lenet_pb_field *f, lenet_pb_wire elem, const char *what, size_t *count)
{
    size_t n = 0;
    if (f->wire == elem) {
        n = 1;
    } else if (f->wire == LENET_PB_BYTES) {
        if (elem == LENET_PB_VARINT) {
            const unsigned char *p = f->data, *end = f->data + f->size;
            uint64_t v;
            while (p < end) {
                if (!lenet__pb_varint(&p, end, &v))
                    return lenet__fail(LENET_EFORMAT, "%s: bad packed varint", what);
                n++;
            }
        } else {
            size_t width = elem == LENET_PB_FIXED64 ? 8 : 4;
            if (f->size % width != 0)
                return lenet__fail(LENET_EFORMAT, "%s: %zu bytes of packed %zu-byte values", what, f->size, width);
            n = f->size / width;
        }
    } else {
        return lenet__fail(LENET_EFORMAT, "%s: field %u has wire type %d", what, f->number, (int)f->wire);
    }
    if (lenet__add_overflows(*count, n, count))
        return lenet__fail(LENET_EFORMAT, "%s: too many values", what);
    return LENET_OK;
}

size_t lenet__pb_scalar_values(const lenet_pb_field *f, lenet_pb_wire elem, uint64_t *out)
{
    if (f->wire == elem) {
        out[0] = f->value;
        return 1;
    }
    size_t n = 0;
    const unsigned char *p = f->data, *end = f->data + f->size;
    if (elem == LENET_PB_VARINT) {
        while (p < end && lenet__pb_varint(&p, end, &out[n]))
            n++;
    } else {
        int width = elem == LENET_PB_FIXED64 ? 8 : 4;
        for (; p < end; p += width)
            out[n++] = load_le(p, width);
    }
    return n;
}

/* ---- writing ---- */

void lenet__pb_buf_free(lenet_pb_buf *b)
{
    lenet__free(b->data);
    *b = (lenet_pb_buf){0};
}

static void put_raw(lenet_pb_buf *b, const void *data, size_t size)
{
    if (b->failed || size == 0)
        return;
    size_t need;
    if (lenet__add_overflows(b->size, size, &need) || need > LENET_PB_MAX_SIZE) {
        b->failed = true;
        return;
    }
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap = cap > LENET_PB_MAX_SIZE / 2 ? LENET_PB_MAX_SIZE : 2 * cap;
        unsigned char *grown = lenet__realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->size, data, size);
    b->size = need;
}

static void put_varint(lenet_pb_buf *b, uint64_t v)
{
    unsigned char bytes[10];
    size_t n = 0;
    do {
        bytes[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            bytes[n] |= 0x80;
        n++;
    } while (v);
    put_raw(b, bytes, n);
}

static void put_key(lenet_pb_buf *b, uint32_t number, lenet_pb_wire wire)
{
    put_varint(b, (uint64_t)number << 3 | (uint64_t)wire);
}

void lenet__pb_put_varint_field(lenet_pb_buf *b, uint32_t number, uint64_t value)
{
    put_key(b, number, LENET_PB_VARINT);
    put_varint(b, value);
}

void lenet__pb_put_int64(lenet_pb_buf *b, uint32_t number, int64_t value)
{
    lenet__pb_put_varint_field(b, number, (uint64_t)value);
}

void lenet__pb_put_float(lenet_pb_buf *b, uint32_t number, float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    unsigned char le[4] = {(unsigned char)bits, (unsigned char)(bits >> 8), (unsigned char)(bits >> 16),
                           (unsigned char)(bits >> 24)};
    put_key(b, number, LENET_PB_FIXED32);
    put_raw(b, le, 4);
}

void lenet__pb_put_header(lenet_pb_buf *b, uint32_t number, size_t size)
{
    if (size > LENET_PB_MAX_SIZE)
        b->failed = true;
    put_key(b, number, LENET_PB_BYTES);
    put_varint(b, size);
}

void lenet__pb_put_bytes(lenet_pb_buf *b, uint32_t number, const void *data, size_t size)
{
    lenet__pb_put_header(b, number, size);
    put_raw(b, data, size);
}

void lenet__pb_put_string(lenet_pb_buf *b, uint32_t number, const char *s)
{
    lenet__pb_put_bytes(b, number, s, strlen(s));
}

void lenet__pb_put_raw(lenet_pb_buf *b, const void *data, size_t size)
{
    put_raw(b, data, size);
}

void lenet__pb_append(lenet_pb_buf *b, const lenet_pb_buf *fields)
{
    if (fields->failed)
        b->failed = true;
    else
        put_raw(b, fields->data, fields->size);
}

void lenet__pb_put_message(lenet_pb_buf *b, uint32_t number, const lenet_pb_buf *sub)
{
    if (sub->failed) {
        b->failed = true;
        return;
    }
    lenet__pb_put_bytes(b, number, sub->data, sub->size);
}
