#!/bin/sh
# Checks liblenet the way users consume it: installed and found by pkg-config from C and C++, and as a meson
# subproject of a parent project that asks for dependency('lenet').
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== install, then pkg-config from C and C++"
meson setup "$work/build" "$src" --prefix="$work/prefix" -Dtests=disabled -Dexamples=false >/dev/null
ninja -C "$work/build" >/dev/null
meson install -C "$work/build" >/dev/null
libdir=$(find "$work/prefix" -name lenet.pc -printf '%h\n' | head -1)
export PKG_CONFIG_PATH="$libdir"
lib=$(find "$work/prefix" -name 'liblenet.so.0' | head -1)
readelf -d "$lib" | grep -q 'SONAME.*liblenet.so.0' || { echo "SONAME is not liblenet.so.0"; exit 1; }
cat > "$work/user.c" <<'C'
#include <lenet/lenet.h>
#include <stdio.h>
int main(void)
{
    lenet_model *m = lenet_model_create();
    lenet_model_add(m, lenet_conv2d(6, 5, 1, 2));
    lenet_model_add(m, lenet_sigmoid());
    lenet_model_add(m, lenet_flatten());
    lenet_model_add(m, lenet_linear(10));
    int ok = lenet_model_summary(m, 1, 1, 28, 28, stdout) == LENET_OK;
    lenet_model_free(m);
    return ok ? 0 : 1;
}
C
cp "$work/user.c" "$work/user.cpp"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -o "$work/user_c" "$work/user.c" $(pkg-config --cflags --libs lenet)
# shellcheck disable=SC2046
c++ -Wall -Werror -o "$work/user_cpp" "$work/user.cpp" $(pkg-config --cflags --libs lenet)
LD_LIBRARY_PATH="$(dirname "$lib")" "$work/user_c" | grep -q 'Linear output shape'
LD_LIBRARY_PATH="$(dirname "$lib")" "$work/user_cpp" | grep -q 'Linear output shape'
echo "pkg-config consumers OK"

echo "== meson subproject"
mkdir -p "$work/parent/subprojects"
ln -s "$src" "$work/parent/subprojects/lenet"
cp "$work/user.c" "$work/parent/main.c"
cat > "$work/parent/meson.build" <<'M'
project('parent', 'c', default_options: ['c_std=c11'])
lenet_dep = dependency('lenet', fallback: ['lenet', 'lenet_dep'],
  default_options: ['tests=disabled', 'examples=false'])
executable('parent', 'main.c', dependencies: lenet_dep)
M
meson setup "$work/parent/build" "$work/parent" >/dev/null
ninja -C "$work/parent/build" >/dev/null
"$work/parent/build/parent" | grep -q 'Linear output shape'
echo "subproject consumer OK"
