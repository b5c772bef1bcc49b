#!/usr/bin/env python3
"""Writes the seed corpora of the IDX fuzz targets into fuzz/corpus/ (run from anywhere; deterministic).

Seeds are small valid files, raw and gzip, plus the near-misses a reader must reject: truncated data,
trailing bytes, wrong magic, zero or huge dimensions, a gzip stream cut short."""
import gzip
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def idx(ndims, dims, payload):
    return bytes([0, 0, 8, ndims]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    pixels = bytes((i * 37) % 256 for i in range(3 * 6 * 5))
    images = {
        "valid3x6x5": idx(3, [3, 6, 5], pixels),
        "valid1x28x28": idx(3, [1, 28, 28], bytes(range(256)) * 3 + bytes(16)),
        "truncated": idx(3, [3, 6, 5], pixels[:50]),
        "trailing": idx(3, [3, 6, 5], pixels + b"\x01"),
        "zero_dim": idx(3, [0, 6, 5], b""),
        "huge_count": idx(3, [0x40000000, 28, 28], pixels),
        "huge_side": idx(3, [1, 5000, 1], bytes(5000)),
        "labels_magic": idx(1, [3], b"\x01\x02\x03"),
        "header_only": bytes([0, 0, 8, 3]),
    }
    labels = {
        "valid5": idx(1, [5], bytes([0, 1, 2, 9, 255])),
        "valid1": idx(1, [1], b"\x07"),
        "truncated": idx(1, [5], b"\x01\x02"),
        "trailing": idx(1, [2], b"\x01\x02\x03"),
        "zero": idx(1, [0], b""),
        "images_magic": idx(3, [1, 1, 1], b"\x00"),
        "header_only": bytes([0, 0, 8, 1, 0, 0]),
    }
    for target, files in (("idx_images", images), ("idx_labels", labels)):
        for name, data in files.items():
            write(target, name, data)
            write(target, name + ".gz", gz(data))
        valid = next(iter(files.values()))
        write(target, "gzip_cut", gz(valid)[:-6])
        write(target, "gzip_two_members", gz(valid[:10]) + gz(valid[10:]))
        write(target, "empty", b"")
    checkpoint_seeds()


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] -> a safetensors file (8-byte LE length, JSON, data)."""
    import json
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def checkpoint_seeds():
    """PyTorch-style state_dicts of the fuzz target's fixed model (Conv2d(2,3) Sigmoid Flatten Linear(3) on 1x6x6)
    in each float dtype, without liblenet metadata.  The liblenet-written seeds come from make_checkpoint_corpus."""
    shapes = [("0.weight", [2, 1, 3, 3]), ("0.bias", [2]), ("3.weight", [3, 32]), ("3.bias", [3])]

    def count(shape):
        n = 1
        for d in shape:
            n *= d
        return n

    for dtype, fmt, size in (("F32", "<f", 4), ("F64", "<d", 8), ("F16", "<e", 2)):
        tensors = [(name, dtype, shape, b"".join(struct.pack(fmt, 0.01 * i) for i in range(count(shape))))
                   for name, shape in shapes]
        write("checkpoint", "state_dict_" + dtype.lower(), safetensors(tensors))
    bf16 = [(name, "BF16", shape, b"\x80\x3f" * count(shape)) for name, shape in shapes]
    write("checkpoint", "state_dict_bf16", safetensors(bf16, {"format": "pt"}))
    write("checkpoint", "empty_header", safetensors([]))
    write("checkpoint", "short", b"\x08\x00\x00")


if __name__ == "__main__":
    main()
