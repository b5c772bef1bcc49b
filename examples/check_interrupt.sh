#!/bin/sh
# Ctrl-C in d2l_lenet, as a user meets it: the run stops after the batch under way (usually mid-epoch), saves a
# checkpoint, says how to resume and exits with 130; resuming from it ends where an uninterrupted run ends, with the
# same curves in the CSV.  So does a run resumed after whole epochs.  check_interrupt.sh D2L_LENET
set -eu
prog=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# 1,024 random 28x28 images with labels 0-9, as IDX files.
python3 - "$work" <<'PY'
import os, random, struct, sys
n, rng = 1024, random.Random(5)
with open(os.path.join(sys.argv[1], "train-images-idx3-ubyte"), "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, 28, 28) + bytes(rng.randrange(256) for _ in range(n * 784)))
with open(os.path.join(sys.argv[1], "train-labels-idx1-ubyte"), "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + bytes(rng.randrange(10) for _ in range(n)))
PY
ln -s train-images-idx3-ubyte "$work/t10k-images-idx3-ubyte"
ln -s train-labels-idx1-ubyte "$work/t10k-labels-idx1-ubyte"
run="$prog --data $work --epochs 15 --batch-size 32 --threads 1 --seed 4"

$run --quiet --csv "$work/whole.csv" > /dev/null

# A Ctrl-C a moment into the run.  If it came before the program set up its handler (the program then dies of
# SIGINT, 130 too, having saved nothing) or after the run ended, try another moment.
for delay in 0.4 0.25 0.6 0.15 1.0 0.1 2.0; do
    rm -f "$work/run.st"
    $run --quiet --save "$work/run.st" --csv "$work/cut.csv" > "$work/out" 2> "$work/err" &
    pid=$!
    sleep $delay
    kill -INT $pid 2>/dev/null || true
    status=0
    wait $pid || status=$?
    [ $status -eq 0 ] || [ $status -eq 130 ] || { echo "exit status $status after Ctrl-C"; cat "$work/err"; exit 1; }
    [ $status -eq 130 ] && grep -q "interrupted" "$work/err" && break
done
[ $status -eq 130 ] || { echo "no Ctrl-C landed during the run"; exit 1; }
grep -q "continue with --resume $work/run.st" "$work/err" || { echo "no resume hint:"; cat "$work/err"; exit 1; }
[ -s "$work/run.st" ] || { echo "no checkpoint was written"; exit 1; }

$run --quiet --resume "$work/run.st" --csv "$work/resumed.csv" > /dev/null 2> "$work/err2"
cmp -s "$work/whole.csv" "$work/resumed.csv" || {
    echo "the resumed run's curves differ from the uninterrupted run's:"; diff "$work/whole.csv" "$work/resumed.csv"
    exit 1; }
# A run saved after whole epochs resumes the same way.
$run --quiet --epochs 3 --save "$work/three.st" > /dev/null
$run --quiet --resume "$work/three.st" --csv "$work/resumed3.csv" > /dev/null 2> "$work/err3"
cmp -s "$work/whole.csv" "$work/resumed3.csv" || {
    echo "a run resumed after epoch 3 has other curves:"; cat "$work/err3"; diff "$work/whole.csv" "$work/resumed3.csv"
    exit 1; }
echo "stopped: $(grep interrupted "$work/err"); the resumed run's curves equal the uninterrupted run's"
