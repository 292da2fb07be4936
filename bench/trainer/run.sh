#!/usr/bin/env bash
# Trainer benchmark: hone-trainer against the equivalent PyTorch Python loop
# (torch DataLoader), same architecture, data, batch size, epochs and threads,
# side by side in one run. Prints samples/second of each, the ratio, and both
# final test accuracies.
#
#   bench/trainer/run.sh [EPOCHS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/../.."
epochs=${1:-5}
threads=${2:-2}
eval "$(hack/env.sh)"
cargo build -q --release -p hone-trainer
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$HONE_VENV/bin/python" hack/export-datasets.py "$work/data" --only digits >/dev/null

common=(--epochs "$epochs" --batch-size 64)
echo "simple-cnn on digits (32x32 gray, 1437 training images), $epochs epochs, batch 64, $threads threads, Adam lr 0.002"

target=${CARGO_TARGET_DIR:-target}
"$target/release/hone-trainer" train --source "file://$work/data/digits" --image-width 32 --image-height 32 \
  --image-channels 1 --architecture simple-cnn "${common[@]}" --learning-rate 0.002 --optimizer adam \
  --threads "$threads" --device cpu --output "file://$work/hone-run" --termination-log "$work/hone.json" \
  >/dev/null 2>"$work/hone.log"
hone=$(python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
lines = [json.loads(l) for l in open(f"{w}/hone-run/metrics.jsonl")]
# Same measure as the Python loop: training samples over training-loop seconds.
secs = sum(1.0 / l["samplesPerSecond"] for l in lines)
summary = json.load(open(f"{w}/hone.json"))
print(json.dumps({"samples_per_second": len(lines) / secs, "test_accuracy": summary["metrics"]["test_accuracy"]}))
PY
)
torch=$("$HONE_VENV/bin/python" bench/trainer/torch_loop.py --data "$work/data/digits" "${common[@]}" --threads "$threads")
python3 - "$hone" "$torch" <<'PY'
import json, sys
h, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'':16}{'samples/s':>12}{'test acc':>10}")
print(f"{'hone-trainer':16}{h['samples_per_second']:>12.1f}{h['test_accuracy']:>10.3f}")
print(f"{'pytorch loop':16}{t['samples_per_second']:>12.1f}{t['test_accuracy']:>10.3f}")
print(f"ratio hone/pytorch: {h['samples_per_second'] / t['samples_per_second']:.2f}x; "
      f"accuracy difference: {100 * (h['test_accuracy'] - t['test_accuracy']):+.1f} points")
PY
