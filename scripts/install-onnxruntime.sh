#!/bin/sh
# Installs ONNX Runtime for tests/test_onnx.c, which runs liblenet's ONNX exports in it: the npm package
# onnxruntime-node at the version pinned in tests/onnx/package.json, into tests/onnx/node_modules (ignored by git).
# The package carries its CPU library (libonnxruntime.so) for linux-x64 and linux-arm64; its install script, which
# only fetches GPU libraries, is not run.  Needs node and npm (Debian: apt-get install nodejs npm).
# Idempotent: does nothing when the pinned version is already there.  Without it the test prints "skipped: ...".
set -eu
dir=$(cd "$(dirname "$0")/../tests/onnx" && pwd)
for tool in node npm; do
    command -v $tool >/dev/null 2>&1 || { echo "install-onnxruntime: $tool not found (Debian: apt-get install nodejs npm)" >&2; exit 1; }
done
want=$(sed -n 's/.*"onnxruntime-node": *"\([^"]*\)".*/\1/p' "$dir/package.json")
have=$(cd "$dir" && node -p 'require("onnxruntime-node/package.json").version' 2>/dev/null || true)
if [ "$have" = "$want" ]; then
    echo "install-onnxruntime: onnxruntime-node $have is installed in $dir"
    exit 0
fi
echo "install-onnxruntime: installing onnxruntime-node $want into $dir"
(cd "$dir" && npm install --ignore-scripts --no-audit --no-fund --no-save --no-package-lock)
(cd "$dir" && node -e 'require("onnxruntime-node")') || { echo "install-onnxruntime: the package does not load" >&2; exit 1; }
echo "install-onnxruntime: onnxruntime-node $want ready"
