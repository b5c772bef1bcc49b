#!/bin/sh
# Fails if the shared library exports any symbol whose name does not start with lenet_ (libinput's
# symbols-leak-test idea): hidden visibility must keep every internal name inside.
set -eu
lib="$1"
bad=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVWi]$/ {print $3}' | grep -v '^lenet_' | grep -v '^_' || true)
count=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVWi]$/ {print $3}' | grep -c '^lenet_' || true)
if [ -n "$bad" ]; then
    echo "exported symbols outside the lenet_ namespace:"
    echo "$bad"
    exit 1
fi
internal=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep '^lenet__' || true)
if [ -n "$internal" ]; then
    echo "internal lenet__ symbols are exported:"
    echo "$internal"
    exit 1
fi
echo "$count exported symbols, all lenet_"
