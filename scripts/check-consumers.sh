#!/bin/sh
# Checks liblenet the way users consume it:
#  1. built with default_library=both and installed into a prefix: pkg-config from C and C++ (the shared library),
#     a static link against liblenet.a with `pkg-config --static`, CMake's find_package(lenet) with lenet::lenet and
#     lenet::lenet_static, and the installed example programs with their man pages;
#  2. the same build reconfigured static-only and installed into a second prefix, where `pkg-config --static` and
#     lenet::lenet give a program that does not need liblenet.so;
#  3. a meson subproject of a parent project that asks for dependency('lenet').
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "check-consumers: $*" >&2; exit 1; }
# quiet COMMAND...: runs it, showing its output only when it fails
quiet() { "$@" >"$work/quiet.log" 2>&1 || { cat "$work/quiet.log"; fail "failed: $*"; }; }
# needs_liblenet_so BINARY: true if the binary has a NEEDED entry for liblenet.so
needs_liblenet_so() { readelf -d "$1" | grep -q 'NEEDED.*liblenet\.so'; }

echo "== default_library=both, installed into a prefix"
quiet meson setup "$work/build" "$src" --prefix="$work/prefix" -Ddefault_library=both -Dtests=disabled
quiet ninja -C "$work/build"
quiet meson install -C "$work/build"
pcdir=$(find "$work/prefix" -name lenet.pc -printf '%h\n' | head -1)
libdir=$(dirname "$pcdir")
[ -f "$libdir/liblenet.a" ] || fail "no liblenet.a installed in $libdir"
[ -f "$libdir/cmake/lenet/lenetConfig.cmake" ] && [ -f "$libdir/cmake/lenet/lenetConfigVersion.cmake" ] &&
    [ -f "$libdir/cmake/lenet/lenetTargets.cmake" ] || fail "the CMake package is not installed in $libdir/cmake/lenet"
export PKG_CONFIG_PATH="$pcdir"
readelf -d "$libdir/liblenet.so.0" | grep -q 'SONAME.*liblenet.so.0' || fail "SONAME is not liblenet.so.0"
cat > "$work/user.c" <<'C'
#include <lenet/lenet.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    lenet_model *m = lenet_model_create();
    lenet_model_add(m, lenet_conv2d(6, 5, 1, 2));
    lenet_model_add(m, lenet_sigmoid());
    lenet_model_add(m, lenet_flatten());
    lenet_model_add(m, lenet_linear(10));
    int ok = lenet_model_summary(m, 1, 1, 28, 28, stdout) == LENET_OK;
    lenet_model_free(m);
    /* the library it runs with is the one whose headers it was built with */
    return ok && strcmp(lenet_version_string(), LENET_VERSION_STRING) == 0 ? 0 : 1;
}
C
cp "$work/user.c" "$work/user.cpp"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -o "$work/user_c" "$work/user.c" $(pkg-config --cflags --libs lenet)
# shellcheck disable=SC2046
c++ -Wall -Werror -o "$work/user_cpp" "$work/user.cpp" $(pkg-config --cflags --libs lenet)
LD_LIBRARY_PATH="$libdir" "$work/user_c" | grep -q 'Linear output shape' || fail "the C consumer did not run"
LD_LIBRARY_PATH="$libdir" "$work/user_cpp" | grep -q 'Linear output shape' || fail "the C++ consumer did not run"
echo "pkg-config consumers (shared) OK"

# liblenet.a beside liblenet.so: -l:liblenet.a picks the archive, `--static` adds what it needs.
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -o "$work/user_static" "$work/user.c" $(pkg-config --cflags lenet) \
    $(pkg-config --static --libs lenet | sed 's/-llenet\b/-l:liblenet.a/')
needs_liblenet_so "$work/user_static" && fail "the static consumer needs liblenet.so"
"$work/user_static" | grep -q 'Linear output shape' || fail "the static consumer did not run"
echo "pkg-config --static consumer OK (no liblenet.so needed)"

echo "== CMake package"
command -v cmake >/dev/null || fail "cmake not found (Debian package cmake; scripts/install-deps.sh with LENET_CI_TOOLS=1)"
mkdir -p "$work/cmake-user"
cp "$work/user.c" "$work/cmake-user/main.c"
cat > "$work/cmake-user/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.13)
project(user C)
find_package(lenet 0.1 CONFIG REQUIRED)
add_executable(user main.c)
target_link_libraries(user PRIVATE lenet::lenet)
if(TARGET lenet::lenet_static)
  add_executable(user_static main.c)
  target_link_libraries(user_static PRIVATE lenet::lenet_static)
endif()
CM
cmake_user() { # PREFIX BUILD_DIR [cmake args]: configure and build the CMake consumer against PREFIX
    prefix=$1 dir=$2
    shift 2
    cmake -S "$work/cmake-user" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix" "$@" >"$dir.log" 2>&1 &&
        cmake --build "$dir" >>"$dir.log" 2>&1 || { cat "$dir.log"; fail "the CMake consumer did not build"; }
}
cmake_user "$work/prefix" "$work/cmake-both"
needs_liblenet_so "$work/cmake-both/user" || fail "lenet::lenet is not the shared library"
"$work/cmake-both/user" | grep -q 'Linear output shape' || fail "the CMake consumer did not run"
needs_liblenet_so "$work/cmake-both/user_static" && fail "lenet::lenet_static needs liblenet.so"
"$work/cmake-both/user_static" | grep -q 'Linear output shape' || fail "the lenet::lenet_static consumer did not run"
# find_package(lenet 1.0) must refuse a 0.x installation.
sed 's/find_package(lenet 0.1 /find_package(lenet 1.0 /' "$work/cmake-user/CMakeLists.txt" > "$work/cmake-user/v1.txt"
mkdir -p "$work/cmake-v1"
cp "$work/cmake-user/main.c" "$work/cmake-v1/" && cp "$work/cmake-user/v1.txt" "$work/cmake-v1/CMakeLists.txt"
if cmake -S "$work/cmake-v1" -B "$work/cmake-v1/b" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null 2>&1; then
    fail "find_package(lenet 1.0) accepted liblenet 0.x"
fi
echo "CMake consumers OK (lenet::lenet shared, lenet::lenet_static without liblenet.so)"

echo "== installed example programs"
bindir="$work/prefix/bin"
for p in lenet_summary d2l_lenet lenet5_mnist lenet_predict; do
    [ -x "$bindir/$p" ] || fail "$p is not installed in $bindir"
    "$bindir/$p" --help | grep -q "usage: $p" || fail "$p --help does not print its usage"
    man=$(find "$work/prefix" -path "*/man1/$p.1" | head -1)
    [ -n "$man" ] || fail "no man page $p.1 installed"
    if command -v man >/dev/null 2>&1; then
        MANWIDTH=80 man -l "$man" 2>/dev/null | grep -q "$p" || fail "man -l $man does not render"
    fi
done
"$bindir/lenet_summary" | grep -q 'Linear output shape' || fail "the installed lenet_summary did not run"
echo "installed examples OK (they find liblenet.so through their rpath)"

echo "== default_library=static, installed into a second prefix"
quiet meson configure "$work/build" -Ddefault_library=static -Dexamples=false --prefix="$work/prefix-static"
quiet ninja -C "$work/build"
quiet meson install -C "$work/build"
spcdir=$(find "$work/prefix-static" -name lenet.pc -printf '%h\n' | head -1)
[ -z "$(find "$work/prefix-static" -name 'liblenet.so*')" ] || fail "a static-only build installed liblenet.so"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -o "$work/user_static_only" "$work/user.c" \
    $(PKG_CONFIG_PATH="$spcdir" pkg-config --cflags --static --libs lenet)
needs_liblenet_so "$work/user_static_only" && fail "the static-only consumer needs liblenet.so"
"$work/user_static_only" | grep -q 'Linear output shape' || fail "the static-only consumer did not run"
cmake_user "$work/prefix-static" "$work/cmake-static"
needs_liblenet_so "$work/cmake-static/user" && fail "lenet::lenet of a static-only installation needs liblenet.so"
"$work/cmake-static/user" | grep -q 'Linear output shape' || fail "the static-only CMake consumer did not run"
echo "static-only consumers OK (pkg-config --static, lenet::lenet)"

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
quiet meson setup "$work/parent/build" "$work/parent"
quiet ninja -C "$work/parent/build"
"$work/parent/build/parent" | grep -q 'Linear output shape' || fail "the subproject consumer did not run"
echo "subproject consumer OK"
