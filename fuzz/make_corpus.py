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
    architecture_seeds()


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
    near_limit_seeds()


def near_limit_seeds():
    """Copies of make_checkpoint_corpus's conv_only_model whose architecture has sizes of ten digits: a mutation
    that keeps the file's framing (the header length) can then reach INT_MAX (ChangeASCIIInt doubles 1000000000
    in place), which an edit of a one-digit size cannot.  The weights do not depend on these sizes, so the files
    still load as far as the architecture's checks."""
    import json
    path = os.path.join(HERE, "corpus", "checkpoint", "conv_only_model")
    if not os.path.exists(path):
        return  # written by build/fuzz/make_checkpoint_corpus fuzz/corpus/checkpoint
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    arch = json.loads(header["__metadata__"]["architecture"])
    variants = {
        "conv_only_padding_1e9": lambda a: a["layers"][0].update(args=[2, 3, 1, 1000000000]),
        "conv_only_stride_1e9": lambda a: a["layers"][0].update(args=[2, 3, 1000000000, 1000000000]),
        "conv_only_input_1e9": lambda a: a.update(input=[1, 1000000000, 6]),
    }
    for name, change in variants.items():
        a = json.loads(json.dumps(arch))
        change(a)
        h = dict(header)
        h["__metadata__"] = dict(header["__metadata__"], architecture=json.dumps(a, separators=(",", ":")))
        text = json.dumps(h, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        write("checkpoint", name, struct.pack("<Q", len(text)) + text + data[8 + n:])


# fuzz_architecture's input (the comment at the top of fuzz/fuzz_architecture.c): two flag bytes, the input shape,
# another shape for a summary, then layers as a kind byte and the kind's int arguments.
KINDS = {name: i for i, name in enumerate(
    ["Conv2d", "AvgPool2d", "MaxPool2d", "Sigmoid", "ReLU", "Tanh", "Flatten", "Linear", "Subsampling",
     "PartialConv2d", "EuclideanRBF", "ScaledTanh", "BatchNorm1d", "BatchNorm2d", "Dropout", "C3", "RBFLeNet5"])}
INT_MAX = 2**31 - 1
EDGE_VALUES = [0, -1, 1, 2, INT_MAX, INT_MAX // 2, 1 << 15, 1 << 16, 1 << 30, -2**31, INT_MAX - 1, (1 << 15) - 1,
               (1 << 15) + 1, (1 << 16) - 1, (1 << 16) + 1, 46340, 46341, 1 << 28, (1 << 28) + 1, 1 << 24, 3, 4, 5, 6,
               16, 28, 32, 84, 120, -2, INT_MAX // 3, (1 << 30) - 1]


EDGE_FLOATS = [1e-5, 0.1, 0.0, 0.5, 1.0, -0.1, 0.9]


def arch_float(v):
    """A float argument: an edge value's index, or its four bytes."""
    if v in EDGE_FLOATS:
        return bytes([EDGE_FLOATS.index(v)])
    return bytes([0xc0]) + struct.pack("<f", v)


def arch_int(v):
    """The shortest selector encoding of an int argument."""
    if 0 <= v < 40:
        return bytes([v])
    if v in EDGE_VALUES:
        return bytes([0xd0 + EDGE_VALUES.index(v)])
    if 0 <= v < 256:
        return bytes([0xa0, v])
    if 0 <= v < 65536:
        return bytes([0xc0]) + struct.pack("<H", v)
    return bytes([0xf0]) + struct.pack("<i", v)


def arch(flags, flags2, shape, layers, other=(1, 1, 1)):
    """layers: [(kind, int args..., [extra bytes])]; an extra bytes object is appended raw (table or centres mode)."""
    out = bytes([flags, flags2]) + b"".join(arch_int(v) for v in tuple(shape) + tuple(other))
    for kind, *args in layers:
        out += bytes([KINDS[kind]])
        for a in args:
            out += a if isinstance(a, bytes) else arch_float(a) if isinstance(a, float) else arch_int(a)
    return out


def architecture_seeds():
    """Networks that build and run (d2l's LeNet, LeNet-5, smaller ones over every kind), plus the sizes that once
    overflowed (their inputs are also in fuzz/regressions/architecture once the library refuses them)."""
    d2l = [("Conv2d", 6, 5, 1, 2), ("Sigmoid",), ("AvgPool2d", 2, 2), ("Conv2d", 16, 5, 1, 0), ("Sigmoid",),
           ("AvgPool2d", 2, 2), ("Flatten",), ("Linear", 120), ("Sigmoid",), ("Linear", 84), ("Sigmoid",),
           ("Linear", 10)]
    lenet5 = [("Conv2d", 6, 5, 1, 0), ("ScaledTanh",), ("Subsampling", 2, 2), ("ScaledTanh",), ("C3",),
              ("ScaledTanh",), ("Subsampling", 2, 2), ("ScaledTanh",), ("Conv2d", 120, 5, 1, 0), ("ScaledTanh",),
              ("Flatten",), ("Linear", 84), ("ScaledTanh",), ("RBFLeNet5",)]
    seeds = {
        # flags 0x94: lenet_model_build, Xavier init, batch 2, save and load; summary for 2x32x32 (refused).
        "d2l_lenet": arch(0x94, 0x02, (1, 28, 28), d2l, (2, 32, 32)),
        # flags 0x38: build, LeCun init, batch 17 (3: too many multiply-adds); Gauss-Newton pass; the summary for
        # 1x64x64.
        "lenet5": arch(0x38, 0x01, (1, 32, 32), lenet5, (1, 64, 64)),
        # Built by the first forward, PyTorch init, batch 17, in evaluation mode, one SGD step, one thread.
        "modern_small": arch(0x32, 0x46, (1, 12, 12), [("Conv2d", 4, 3, 1, 1), ("ReLU",), ("MaxPool2d", 2, 2),
                                                         ("Flatten",), ("Linear", 10), ("Tanh",), ("Linear", 3)],
                             (1, 20, 20)),
        # PartialConv2d with a table from the input bits, a RBF; NaN among the values; built
        # by a summary.
        "partial_rbf": arch(0x41, 0x03, (3, 8, 8), [("PartialConv2d", 4, 3, 3, bytes([2, 0b10110101, 0b1011])),
                                                      ("Sigmoid",), ("Subsampling", 3, 3), ("Flatten",),
                                                      ("EuclideanRBF", 5)], (3, 9, 11)),
        # Strided, padded convolution and overlapping pools; a summary for a batch of INT_MAX.
        "strided": arch(0x10, 0x08, (2, 9, 7), [("Conv2d", 3, 3, 2, 3), ("MaxPool2d", 3, 1), ("AvgPool2d", 2, 1),
                                                 ("Flatten",), ("Linear", 2)], (2, 100, 100)),
        # d2l's BatchNorm LeNet, smaller, with dropout: batch 2 in training mode, saved and loaded (its buffers too).
        "batchnorm_dropout": arch(0x94, 0x00, (1, 12, 12), [("Conv2d", 4, 5, 1, 0), ("BatchNorm2d", 1e-5, 0.1),
                                                            ("Sigmoid",), ("AvgPool2d", 2, 2), ("Flatten",),
                                                            ("Linear", 12), ("BatchNorm1d", 1e-5, 0.1),
                                                            ("Sigmoid",), ("Dropout", 0.5), ("Linear", 3)]),
        # One sample in training mode: BatchNorm1d sees one value per feature and must refuse the batch.
        "batchnorm_one_value": arch(0x00, 0x00, (2, 3, 3), [("Flatten",), ("Linear", 4), ("BatchNorm1d", 1e-5, 0.9),
                                                           ("Dropout", 0.0)]),
        # A constructor's NULL added: every later call fails with its error.
        "sticky_null": arch(0x00, 0x20, (1, 8, 8), [("Conv2d", 0, 3, 1, 0), ("Flatten",), ("Linear", 2)]),
        # Arguments the constructors refuse, skipped by the program.
        "refused_args": arch(0x00, 0x00, (1, 8, 8), [("Conv2d", 2, 3, 1, -1), ("Linear", 0), ("AvgPool2d", 0, 1),
                                                      ("PartialConv2d", 16, 16, 3, bytes([0])), ("Flatten",),
                                                      ("Linear", 2)]),
        # A kernel larger than the input; a summary for an input of INT_MAX x INT_MAX.
        "kernel_too_large": arch(0x00, 0x00, (1, 4, 4), [("Conv2d", 1, 5, 1, 0)]),
        "summary_huge_input": arch(0x00, 0x00, (1, 6, 6), [("Conv2d", 2, 3, 1, 0), ("Flatten",), ("Linear", 3)],
                                   (1, INT_MAX, INT_MAX)),
        # Sizes that wrapped before the library checked them: Conv2d geometry (h + 2 * padding), Flatten of more
        # than INT_MAX features, and a parameter arena of 2^62 floats.
        "conv2d_padding_int_max": arch(0x00, 0x00, (1, 6, 6), [("Conv2d", 2, 3, 1, INT_MAX), ("Flatten",),
                                                                ("Linear", 3)]),
        "flatten_beyond_int": arch(0x00, 0x00, (1, 1, 1), [("Conv2d", 1, 1, 1, 32768), ("Flatten",),
                                                           ("Linear", 1)]),
        "arena_2e62": arch(0x00, 0x00, (1, 2, (1 << 30) - 1), [("Flatten",), ("Linear", 1 << 30),
                                                                ("Linear", INT_MAX)]),
        "empty": b"",
    }
    for name, data in seeds.items():
        write("architecture", name, data)


if __name__ == "__main__":
    main()
