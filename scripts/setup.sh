#!/bin/sh
# The README's first command on a fresh Debian machine: install the dependencies, configure and build, print the
# d2l LeNet's layer shapes, then train it on Fashion-MNIST for two epochs (about 15 seconds on two cores, with
# its progress on stderr) and draw the training curves into build/curves.png.
set -eu
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[ -f build/meson-private/coredata.dat ] || meson setup build
ninja -C build
./build/examples/lenet_summary
echo
echo "Training d2l's LeNet on Fashion-MNIST for 2 epochs (the full run: ./build/examples/d2l_lenet --help)"
# Seed 1 leaves the sigmoid network's initial plateau within the first epoch, so the curves show it learning.
./build/examples/d2l_lenet --epochs 2 --seed 1 --plot build/curves.png
echo
echo "The training curves are in $(pwd)/build/curves.png"
echo "Next: meson test -C build --print-errorlogs"
