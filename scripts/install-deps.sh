#!/bin/sh
# Installs everything liblenet needs to build, test and run its examples on Debian (bookworm or later).
# Run as root, or as a user with sudo.  Idempotent: packages already present are left alone.
set -eu

packages="meson ninja-build pkg-config gcc g++ libopenblas-dev libblas-dev check zlib1g-dev libcjson-dev"
# Optional: plots in the examples, and the Fashion-MNIST data set the d2l example trains on.
packages="$packages libcairo2-dev dataset-fashion-mnist"
# Optional: data-parallel training over MPI (meson setup -Dmpi=enabled; CI builds it).
packages="$packages libopenmpi-dev openmpi-bin"
# Extra tools used by CI's reliability steps (sanitizer runtimes, valgrind) and its consumer checks (cmake, for
# a CMake project that finds the installed liblenet with find_package).
if [ "${LENET_CI_TOOLS:-0}" = 1 ]; then
    packages="$packages valgrind clang libclang-rt-14-dev abigail-tools cmake"
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "install-deps: need root or sudo to run apt-get" >&2
    exit 1
fi

missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing$missing"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
else
    echo "install-deps: all packages present"
fi
