#!/bin/sh
# Compiles and runs the README's first program against the library just built, so the README cannot drift from
# the API: check_readme.sh README.md CC INCLUDE_DIR GENERATED_INCLUDE_DIR LIBRARY
set -eu
readme=$1 cc=$2 include=$3 generated=$4 library=$5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
awk '/^```c$/ { inside = 1; next } inside && /^```$/ { exit } inside { print }' "$readme" > "$work/first.c"
[ -s "$work/first.c" ] || { echo "no C program found in $readme"; exit 1; }
"$cc" -std=c11 -Wall -Wextra -pedantic -Werror -I"$include" -I"$generated" "$work/first.c" "$library" \
    -Wl,-rpath,"$(dirname "$library")" -o "$work/first"
"$work/first" > "$work/out"
first=$(head -n 1 "$work/out")
[ "$first" = "$(printf 'Conv2d output shape: \t torch.Size([1, 6, 28, 28])')" ] || {
    echo "unexpected output:"; cat "$work/out"; exit 1; }
echo "the README's first program builds and prints the d2l LeNet's shapes"
