#!/usr/bin/env bash
# Serves the same TorchScript model with hone-predictor, KServe's Python
# model server and FastAPI + uvicorn + torch, one at a time, and loads each on
# loopback at several concurrencies; for the small CNN also hone-predictor on
# the same weights exported to ONNX (ONNX Runtime next to libtorch, same
# threads and batching); then the router's one-hop overhead and a 90/10
# split check. Prints req/s, p50/p99, ratios and the in-process batched
# forward ceiling. Benchmarks print figures; they assert nothing.
#
#   bench/predictor/run.sh                # simple-cnn 3x32x32, 10 s per run
#   MODEL=resnet18 DURATION=20 bench/predictor/run.sh   (ResNet-18 at 3x224x224)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
eval "$(hack/env.sh)"
bench_venv=$(bench/predictor/setup.sh | tail -n 1)
MODEL=${MODEL:-cnn32}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-"1 8 32 64"}
# hone-onnx only where make_models.py has an ONNX export of MODEL (cnn32).
default_servers="hone kserve fastapi"; [ "$MODEL" = cnn32 ] && default_servers="hone hone-onnx kserve fastapi"
SERVERS=${SERVERS:-$default_servers}
MAX_BATCH=${MAX_BATCH:-32}
work=$(mktemp -d)
results=${RESULTS:-$work/results.jsonl}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
# BENCH_CARGO_ARGS=--no-default-features builds without the object-storage backends.
cargo build -q --release -p hone-predictor --bin hone-predictor --example loadgen --example forward_ceiling ${BENCH_CARGO_ARGS:-}
cargo build -q --release -p hone-router --bin hone-router
bin=$CARGO_TARGET_DIR/release
onnx_model=""; case " $SERVERS " in *" hone-onnx "*) onnx_model="$MODEL-onnx" ;; esac
"$HONE_VENV/bin/python" predictor/tests/fixtures/make_models.py "$work" "$MODEL" $onnx_model >/dev/null
model_dir=$work/$MODEL
"$HONE_VENV/bin/python" bench/predictor/make_body.py "$model_dir" "$work/body.json"

wait_ready() { # url
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "not ready: $1" >&2; return 1
}
stop_last() { kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
load() { # label url concurrency [extra loadgen args]
  local label=$1 url=$2 c=$3; shift 3
  "$bin/examples/loadgen" --url "$url" --body "$work/body.json" --concurrency "$c" \
    --duration "$DURATION" --label "$label" "$@" | tee -a "$results"
}

echo "== ceiling" >&2
"$bin/examples/forward_ceiling" --model "$model_dir" --batch "$MAX_BATCH" --seconds 5 | tee -a "$results"

for server in $SERVERS; do
  echo "== $server" >&2
  case $server in
    hone) "$bin/hone-predictor" serve --model "$model_dir" --model-name model --addr 127.0.0.1:18080 \
            --max-batch-size "$MAX_BATCH" --queue-capacity 1024 2>"$work/hone.log" & ;;
    hone-onnx) "$bin/hone-predictor" serve --model "$work/$onnx_model" --format ONNX --model-name model \
            --addr 127.0.0.1:18080 --max-batch-size "$MAX_BATCH" --queue-capacity 1024 2>"$work/hone-onnx.log" & ;;
    kserve) "$bench_venv/bin/python" bench/predictor/kserve_server.py "$model_dir" 18080 >"$work/kserve.log" 2>&1 & ;;
    fastapi) "$bench_venv/bin/python" bench/predictor/fastapi_server.py "$model_dir" 18080 >"$work/fastapi.log" 2>&1 & ;;
  esac
  pids+=($!)
  wait_ready http://127.0.0.1:18080/v2/health/ready
  for c in $CONCURRENCY; do load "$server" http://127.0.0.1:18080/v2/models/model/infer "$c"; done
  stop_last
done

echo "== router" >&2
"$bin/hone-predictor" serve --model "$model_dir" --model-name model --addr 127.0.0.1:18080 \
  --max-batch-size "$MAX_BATCH" --queue-capacity 1024 2>"$work/hone.log" &
pids+=($!)
cat >"$work/router.yaml" <<YAML
variants:
  - {name: a, url: "http://127.0.0.1:18080", weight: 90}
  - {name: b, url: "http://127.0.0.1:18080", weight: 10}
YAML
"$bin/hone-router" --config "$work/router.yaml" --addr 127.0.0.1:18090 --admin-addr 127.0.0.1:18091 2>"$work/router.log" &
pids+=($!)
wait_ready http://127.0.0.1:18080/v2/health/ready
wait_ready http://127.0.0.1:18090/v2/health/ready
for c in 1 32; do
  load direct http://127.0.0.1:18080/v2/models/model/infer "$c"
  load router-hop http://127.0.0.1:18090/v2/models/model/infer "$c"
done
load router-split http://127.0.0.1:18090/v2/models/model/infer 8 --requests 10000

echo >&2
"$HONE_VENV/bin/python" bench/predictor/report.py "$results"
