#!/usr/bin/env bash
# Trainer benchmark, side by side in one run on the same data, threads and
# cores. simple-cnn on digits at 32x32 (EPOCHS epochs), then ResNet-18 on
# generated 224x224 RGB images (2 epochs), each as:
#   (a) hone-trainer streaming (decoded images in the on-disk cache, batches
#       from the prefetching decode pool);
#   (b) a PyTorch loop over a preloaded uint8 tensor (the same kernels: the
#       honest comparison);
#   (c) a PyTorch DataLoader decoding PNGs with PIL, the best of
#       num_workers 0, 1 and 2;
#   (d) hone-trainer compute-only (the first batch over and over: the model's
#       rate without any data path).
# Samples/second are over the training steps of the epochs after the first,
# median of REPS interleaved repetitions. Prints samples/second of each, the ratios against the aims (a >= 1.0x b,
# a >= 1.3x c, a >= 90% of d at 32x32), and the test accuracies. Then
# hone-trainer data-parallel on 2 workers (Gloo on loopback) with the same
# total threads (THREADS/2 each, at least 1) and the same global batch (32
# per worker), next to the 1-worker run: on one small machine this measures
# the overhead of data parallelism, not a speed-up.
#
#   [REPS=3] bench/trainer/run.sh [EPOCHS] [THREADS] [IMAGES_224]
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-5}
threads=${2:-2}
images224=${3:-320}
reps=${REPS:-3}
eval "$(hack/env.sh)"
cargo build -q --release -p hone-trainer
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$HONE_VENV/bin/python" hack/export-datasets.py "$work/data" --only digits >/dev/null
# 224x224 RGB images in 4 classes: each class its own colour gradient, each
# image its own noise, so the networks have something to learn.
"$HONE_VENV/bin/python" - "$work/data/rgb224" "$images224" <<'PY'
import os, sys
import numpy as np
from PIL import Image
root, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)
ramp = np.linspace(0, 1, 224)[None, :, None]
for i in range(n):
    c = i % 4
    base = np.zeros((224, 224, 3)); base[..., c % 3] = 150
    img = base + 80 * ramp * (1 + c // 3) + rng.normal(0, 20, (224, 224, 3))
    os.makedirs(f"{root}/class{c}", exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f"{root}/class{c}/{i:04}.png")
PY
target=${CARGO_TARGET_DIR:-target}

# hone-trainer on DATA (folder) at SIZE x SIZE x CHANNELS; extra flags after.
# Prints {"samples_per_second", "test_accuracy"}: training samples over
# training-loop seconds, the same measure as the Python loops.
hone_run() {
  local name=$1 data=$2 size=$3 channels=$4 arch=$5 n_epochs=$6 batch=$7 lr=$8; shift 8
  # A fresh output each time: one left from an earlier repetition would be
  # resumed from its last checkpoint (nothing to train) and its metrics reread.
  rm -rf "$work/cache" "$work/$name" "$work/$name.json"
  "$target/release/hone-trainer" train --source "file://$data" --image-width "$size" --image-height "$size" \
    --image-channels "$channels" --architecture "$arch" --epochs "$n_epochs" --batch-size "$batch" \
    --learning-rate "$lr" --optimizer adam --threads "$threads" --device cpu --output "file://$work/$name" \
    --termination-log "$work/$name.json" "$@" >/dev/null 2>"$work/$name.log"
  python3 - "$work" "$name" <<'PY'
import json, sys
w, name = sys.argv[1], sys.argv[2]
lines = [json.loads(l) for l in open(f"{w}/{name}/metrics.jsonl")]
# Steady state: the epochs after the first, as torch_loop.py measures.
steady = lines[1:] or lines
secs = sum(1.0 / l["samplesPerSecond"] for l in steady)
summary = json.load(open(f"{w}/{name}.json"))
print(json.dumps({"samples_per_second": len(steady) / secs, "test_accuracy": summary["metrics"]["test_accuracy"]}))
PY
}
torch_run() {
  "$HONE_VENV/bin/python" bench/trainer/torch_loop.py --threads "$threads" "$@"
}
# Every variant once per repetition, interleaved (a, d, b, c0, c1, c2, then
# again), so that drift in the machine's speed hits all of them alike; the
# table reports each one's median. Args: the case's name, then the common
# hone-trainer arguments (data size channels arch epochs batch lr), then the
# PyTorch ones after `--`.
measure() {
  local case=$1; shift
  local hone_args=() torch_args=()
  while [ "$1" != "--" ]; do hone_args+=("$1"); shift; done
  shift; torch_args=("$@")
  for rep in $(seq "$reps"); do
    echo "{\"v\": \"a\", \"r\": $(hone_run "$case-a" "${hone_args[@]}" "${stream[@]}")}"
    echo "{\"v\": \"d\", \"r\": $(hone_run "$case-d" "${hone_args[@]}" --bench-compute-only)}"
    echo "{\"v\": \"b\", \"r\": $(torch_run --mode preload "${torch_args[@]}")}"
    for w in 0 1 2; do
      echo "{\"v\": \"c$w\", \"r\": $(torch_run --mode dataloader --workers "$w" "${torch_args[@]}")}"
    done
  done >"$work/$case.jsonl"
}
table() {
  python3 - "$work/$1.jsonl" "$2" "$reps" <<'PY'
import json, statistics, sys
runs, aims, reps = [json.loads(l) for l in open(sys.argv[1])], sys.argv[2] == "aims", sys.argv[3]
med = {}
for v in sorted({r["v"] for r in runs}):
    rs = [r["r"] for r in runs if r["v"] == v]
    med[v] = {"sps": statistics.median(r["samples_per_second"] for r in rs),
              "acc": statistics.median(r["test_accuracy"] for r in rs),
              "all": [round(r["samples_per_second"], 1) for r in rs]}
best_c = max(("c0", "c1", "c2"), key=lambda v: med[v]["sps"])
print(f"{'':46}{'samples/s':>11}{'test acc':>10}   runs (median of {reps}, interleaved)")
rows = [("(a) hone-trainer streaming", "a"), ("(b) pytorch, preloaded uint8 tensor", "b"),
        (f"(c) pytorch DataLoader, num_workers={best_c[1]} (best)", best_c), ("(d) hone-trainer compute-only", "d")]
for name, v in rows:
    # Compute-only trains on one batch: its accuracy means nothing.
    acc = "-" if v == "d" else f"{med[v]['acc']:.3f}"
    print(f"{name:46}{med[v]['sps']:>11.1f}{acc:>10}   {med[v]['all']}")
for v in ("c0", "c1", "c2"):
    if v != best_c:
        print(f"    DataLoader num_workers={v[1]}: {med[v]['sps']:.1f}")
a = med["a"]["sps"]
ab, ac, ad = a / med["b"]["sps"], a / med[best_c]["sps"], a / med["d"]["sps"]
verdict = lambda ok: "met" if ok else "NOT met"
if aims:
    print(f"(a)/(b) {ab:.2f}x (aim >= 1.0: {verdict(ab >= 1.0)}); (a)/(c) {ac:.2f}x (aim >= 1.3: {verdict(ac >= 1.3)}); "
          f"(a)/(d) {100 * ad:.0f}% (aim >= 90%: {verdict(ad >= 0.9)})")
else:
    print(f"(a)/(b) {ab:.2f}x; (a)/(c) {ac:.2f}x; (a)/(d) {100 * ad:.0f}%")
PY
}

digits=$work/data/digits
stream=(--data-mode stream --data-cache "$work/cache")
echo "simple-cnn on digits (32x32 gray, 1437 training images), $epochs epochs, batch 64, $threads threads, Adam lr 0.002;"
echo "samples/s over the training steps of epochs 2-$epochs (the first pays one-time set-up)"
measure s32 "$digits" 32 1 simple-cnn "$epochs" 64 0.002 -- --data "$digits" --epochs "$epochs" --batch-size 64
table s32 aims
# The 1-worker figure the data-parallel comparison below uses.
hone=$(python3 - "$work/s32.jsonl" <<'PY'
import json, statistics, sys
rs = [json.loads(l)["r"] for l in open(sys.argv[1]) if json.loads(l)["v"] == "a"]
print(json.dumps({"samples_per_second": statistics.median(r["samples_per_second"] for r in rs),
                  "test_accuracy": statistics.median(r["test_accuracy"] for r in rs)}))
PY
)

rgb=$work/data/rgb224
echo
echo "resnet18 on $images224 generated 224x224 RGB images (80% train), 2 epochs, batch 32, $threads threads, Adam lr 0.001;"
echo "samples/s over the second epoch's steps"
measure r224 "$rgb" 224 3 resnet18 2 32 0.001 -- --data "$rgb" --arch resnet18 --size 224 --channels 3 --epochs 2 \
  --batch-size 32 --lr 0.001
table r224 none
echo

# The same run on 2 workers: ranks 0 and 1 as two processes on loopback.
per_rank=$(( threads / 2 > 0 ? threads / 2 : 1 ))
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
for rank in 0 1; do
  MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=2 RANK=$rank \
    "$target/release/hone-trainer" train --source "file://$work/data/digits" --image-width 32 --image-height 32 \
    --image-channels 1 --architecture simple-cnn --epochs "$epochs" --batch-size 32 --learning-rate 0.002 \
    --optimizer adam --threads "$per_rank" --device cpu --output "file://$work/ddp-run-$rank" \
    --termination-log "$work/ddp-$rank.json" >/dev/null 2>"$work/ddp-$rank.log" &
done
wait
ddp=$(python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
lines = [json.loads(l) for l in open(f"{w}/ddp-run-0/metrics.jsonl")]
lines = lines[1:] or lines  # steady state, as above
secs = sum(1.0 / l["samplesPerSecond"] for l in lines)
ms = [l["allreduceMsPerStep"] for l in lines if "allreduceMsPerStep" in l]
summary = json.load(open(f"{w}/ddp-0.json"))
print(json.dumps({"samples_per_second": len(lines) / secs, "test_accuracy": summary["metrics"]["test_accuracy"],
                  "allreduce_ms": sum(ms) / max(len(ms), 1)}))
PY
)
python3 - "$hone" "$ddp" "$threads" "$per_rank" <<'PY'
import json, sys
h, d = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"\nhone-trainer, 1 worker x {sys.argv[3]} threads (batch 64) against 2 workers x {sys.argv[4]} threads "
      f"(batch 32 each, Gloo on loopback):")
print(f"{'1 worker':16}{h['samples_per_second']:>12.1f}{h['test_accuracy']:>10.3f}")
print(f"{'2 workers':16}{d['samples_per_second']:>12.1f}{d['test_accuracy']:>10.3f}")
print(f"ratio 2 workers/1 worker: {d['samples_per_second'] / h['samples_per_second']:.2f}x; "
      f"all-reduce {d['allreduce_ms']:.2f} ms per step (mean over epochs); on one machine with these "
      f"cores this is the cost of data parallelism, not a speed-up")
PY
