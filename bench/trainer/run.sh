#!/usr/bin/env bash
# Trainer benchmark: hone-trainer against the equivalent PyTorch Python loop
# (torch DataLoader), same architecture, data, batch size, epochs and threads,
# side by side in one run. Prints samples/second of each, the ratio, and both
# final test accuracies. Then hone-trainer data-parallel on 2 workers (Gloo on
# loopback) with the same total threads (THREADS/2 each, at least 1) and the
# same global batch (32 per worker), next to the 1-worker run: on one small
# machine this measures the overhead of data parallelism, not a speed-up.
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
secs = sum(1.0 / l["samplesPerSecond"] for l in lines)
ms = [l["allreduceMsPerStep"] for l in lines if "allreduceMsPerStep" in l]
summary = json.load(open(f"{w}/ddp-0.json"))
print(json.dumps({"samples_per_second": len(lines) / secs, "test_accuracy": summary["metrics"]["test_accuracy"],
                  "allreduce_ms": sum(ms) / max(len(ms), 1)}))
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
