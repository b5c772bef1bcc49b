#!/bin/sh
# One command for a fresh Debian machine: install the dependencies, configure, build, and run the summary example.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[ -d build ] || meson setup build
ninja -C build
./build/examples/lenet_summary
