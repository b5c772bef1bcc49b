// Runs an ONNX model in ONNX Runtime (the npm package onnxruntime-node, CPU) for tests/test_onnx.c:
//   node run.js MODEL.onnx INPUT OUTPUT
//   node run.js --check          (exits 0 when onnxruntime-node loads)
// INPUT and OUTPUT are one float32 tensor each: uint32 ndim, uint32 dims[ndim], then the values, all
// little-endian.  The model must have one input and one output.  Exit status 0 on success, 2 when
// onnxruntime-node is not installed (scripts/install-onnxruntime.sh installs it), 1 on any other failure.
'use strict';
const fs = require('fs');

let ort;
try {
    ort = require('onnxruntime-node');
} catch (e) {
    process.stderr.write('run.js: onnxruntime-node is not installed: ' + e.message + '\n');
    process.exit(2);
}

function readTensor(path) {
    const buf = fs.readFileSync(path);
    const ndim = buf.readUInt32LE(0);
    const dims = [];
    for (let d = 0; d < ndim; d++) dims.push(buf.readUInt32LE(4 + 4 * d));
    const count = dims.reduce((a, b) => a * b, 1);
    const start = 4 + 4 * ndim;
    if (buf.length !== start + 4 * count) throw new Error(path + ': size does not match its dims');
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = buf.readFloatLE(start + 4 * i);
    return new ort.Tensor('float32', data, dims);
}

function writeTensor(path, tensor) {
    const dims = tensor.dims;
    const buf = Buffer.alloc(4 + 4 * dims.length + 4 * tensor.data.length);
    buf.writeUInt32LE(dims.length, 0);
    dims.forEach((d, i) => buf.writeUInt32LE(d, 4 + 4 * i));
    const start = 4 + 4 * dims.length;
    tensor.data.forEach((v, i) => buf.writeFloatLE(v, start + 4 * i));
    fs.writeFileSync(path, buf);
}

async function main() {
    if (process.argv[2] === '--check') return;
    const [model, input, output] = process.argv.slice(2);
    if (!output) throw new Error('usage: node run.js MODEL.onnx INPUT OUTPUT');
    const session = await ort.InferenceSession.create(model, {
        executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1,
    });
    if (session.inputNames.length !== 1 || session.outputNames.length !== 1)
        throw new Error('the model must have one input and one output');
    const feeds = {};
    feeds[session.inputNames[0]] = readTensor(input);
    const results = await session.run(feeds);
    writeTensor(output, results[session.outputNames[0]]);
}

main().catch((e) => {
    process.stderr.write('run.js: ' + (e && e.message ? e.message : e) + '\n');
    process.exit(1);
});
