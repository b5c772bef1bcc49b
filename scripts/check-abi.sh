#!/bin/sh
# Checks the ABI of a built liblenet.so against the committed baseline abi/liblenet.abi (libabigail).
#   scripts/check-abi.sh BUILD_DIR            compare; fails only on an incompatible change
#   scripts/check-abi.sh BUILD_DIR --update   rewrite the baseline from this build (see docs/guarantees.md)
# abidiff's exit status is a bit mask: 1 tool error, 2 usage error, 4 the ABI changed (e.g. functions were
# added: compatible), 8 an incompatible change (a function removed, a type or signature changed).  Additions pass;
# an incompatible change passes only together with a soversion bump, i.e. when the library's SONAME differs from
# the baseline's, and then the baseline must be regenerated in the same commit.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: check-abi.sh BUILD_DIR [--update]}
mode=${2:-check}
baseline="$src/abi/liblenet.abi"
lib=$(find "$build" -maxdepth 3 -name 'liblenet.so.*.*.*' -type f ! -name '*.symbols' | head -1)
[ -n "$lib" ] || { echo "check-abi: no liblenet.so.X.Y.Z under $build (configure with default_library=shared)"; exit 1; }
for tool in abidw abidiff; do
    command -v $tool >/dev/null || { echo "check-abi: $tool not found (Debian package abigail-tools)"; exit 1; }
done
headers="$src/include/lenet"

if [ "$mode" = "--update" ]; then
    abidw --no-corpus-path --drop-private-types --headers-dir "$headers" --out-file "$baseline" "$lib"
    # Keep the file reproducible: no build paths.
    sed -i -e "s|$src/||g" -e "s|$(cd "$build" && pwd)/||g" "$baseline"
    echo "check-abi: wrote $baseline from $lib ($(grep -c '<elf-symbol ' "$baseline") symbols)"
    exit 0
fi

[ -f "$baseline" ] || { echo "check-abi: no baseline $baseline (create it with --update)"; exit 1; }
status=0
report=$(abidiff --no-show-locs --headers-dir2 "$headers" --drop-private-types "$baseline" "$lib") || status=$?
echo "$report"
if [ $((status & 3)) -ne 0 ]; then
    echo "check-abi: abidiff failed (status $status)"
    exit 1
fi
if [ $((status & 8)) -ne 0 ]; then
    old_soname=$(sed -n "s/.*<abi-corpus[^>]* soname=['\"]\([^'\"]*\)['\"].*/\1/p" "$baseline" | head -1)
    new_soname=$(readelf -d "$lib" | sed -n 's/.*SONAME.*\[\(.*\)\].*/\1/p')
    if [ -n "$old_soname" ] && [ "$old_soname" != "$new_soname" ]; then
        echo "check-abi: incompatible changes with a new soname ($old_soname -> $new_soname): regenerate the baseline"
        echo "           with scripts/check-abi.sh BUILD_DIR --update in the same commit"
        exit 1
    fi
    echo "check-abi: INCOMPATIBLE ABI change without a soversion bump (soname $new_soname): see docs/guarantees.md"
    exit 1
fi
if [ $((status & 4)) -ne 0 ]; then
    echo "check-abi: compatible additions only (ok); regenerate the baseline when the release is cut"
else
    echo "check-abi: ABI identical to the baseline"
fi
