#!/bin/sh
# Runs every libFuzzer target for a while: fuzz/run-long.sh [SECONDS_EACH] [TARGET...]
# (default 600 s each, all targets).  Builds build-fuzz with clang if it does not exist (BUILD_DIR overrides).
# New interesting inputs go to a working corpus outside the repo ($WORK, default /tmp/lenet-fuzz) that starts from
# fuzz/corpus/<target>; crashes are written to $WORK/crashes/<target>/ and the script exits non-zero.
# A crash is kept forever by copying it into fuzz/regressions/<target>/ once fixed: `meson test` replays them.
# The fuzz_integer_* variants (-fsanitize=integer, not built by default) run too once built: ninja fuzz-integer.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-600}
[ $# -gt 0 ] && shift
build=${BUILD_DIR:-$src/build-fuzz}
work=${WORK:-/tmp/lenet-fuzz}

if [ ! -d "$build" ]; then
    CC=clang meson setup "$build" "$src" -Dfuzz=enabled -Dtests=disabled -Dexamples=false >/dev/null
fi
ninja -C "$build" >/dev/null

targets="$*"
if [ -z "$targets" ]; then
    for f in "$build"/fuzz/fuzz_*; do
        [ -f "$f" ] && [ -x "$f" ] && targets="$targets ${f##*/fuzz_}"
    done
fi

# The targets write each input to a file (lenet reads paths); keep those files in a directory removed at the end.
files=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/lenet-fuzz.XXXXXX")
trap 'rm -rf "$files"' EXIT
export LENET_FUZZ_TMPDIR="$files"

failed=""
for t in $targets; do
    base=${t#integer_} # fuzz_integer_<target> (ninja fuzz-integer) fuzzes <target>'s corpus with its dictionary
    mkdir -p "$work/corpus/$base" "$work/crashes/$t"
    cp -n "$src/fuzz/corpus/$base/"* "$work/corpus/$base/" 2>/dev/null || true
    dict=""
    [ -f "$src/fuzz/$base.dict" ] && dict="-dict=$src/fuzz/$base.dict"
    echo "== fuzz_$t for ${seconds}s (corpus $work/corpus/$base, log $work/$t.log)"
    # shellcheck disable=SC2086
    if "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$work/crashes/$t/" $dict \
        "$work/corpus/$base" "$src/fuzz/corpus/$base" >"$work/$t.log" 2>&1; then
        grep -E '^(Done|stat::(number_of_executed_units|new_units_added|peak_rss_mb))' "$work/$t.log" || true
    else
        tail -n 60 "$work/$t.log"
        failed="$failed $t"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzz: crashes in:$failed (inputs in $work/crashes/)"
    exit 1
fi
echo "fuzz: no crash in $seconds s per target"
