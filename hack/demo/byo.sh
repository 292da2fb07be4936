#!/usr/bin/env bash
# `make demo-byo`: bring-your-own PyTorch code on the cluster `make demo` left
# running (real node, the chart, MinIO with the digits, the Dataset `digits`).
#   1. builds hone.local/byo-pytorch:dev (examples/byo-pytorch: plain Python,
#      the torch wheel, boto3; no Hone code) and imports it into containerd;
#   2. a TrainingJob runs train.py in that image with one worker;
#   3. a TrainingJob runs it on two workers, each pod under torchrun
#      (python -m torch.distributed.run, static rendezvous at rank 0 through
#      the headless Service), gradients all-reduced with gloo;
# and each registers a ModelVersion of `digits-byo` that the operator then
# verifies and evaluates on the held-out split like any other.
#   4. the 1-worker run also exported its weights to ONNX (BYO_EXPORT_ONNX=1):
#      a ModelVersion with `artifact.format: ONNX` on that file is verified
#      and evaluated by the operator (measured accuracy equal to the
#      TorchScript one's), then served by an InferenceService on ONNX Runtime
#      and asked every held-out digit through its router.
# The run ends with "N passed, N failed" and a non-zero status when a check
# failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
. hack/demo/lib.sh
export KUBECONFIG=$HONE_CLUSTER_DIR/kubeconfig
NS=hone-demo
MODEL=digits-byo
HOLDOUT="$HONE_CACHE/demo-data/digits-holdout"
t0=$(date +%s)
say() { printf '[byo %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
passed=0 failed=0
check() { # check DESCRIPTION COMMAND...: one line of the tally
  if "${@:2}"; then say "PASS $1"; passed=$((passed + 1)); else say "FAIL $1"; failed=$((failed + 1)); fi
}

k get node hone-real >/dev/null 2>&1 || { echo "no real node: run make demo first" >&2; exit 2; }
[ "$(phase "$NS" dataset digits)" = Ready ] || { echo "no Ready Dataset digits in $NS: run make demo first" >&2; exit 2; }

say "image: hack/images/byo-pytorch.sh"
hack/images/byo-pytorch.sh 2>&1 | sed 's/^/    /'
[ "${PIPESTATUS[0]}" = 0 ] || { echo "the image did not build" >&2; exit 1; }

# An earlier run's objects go first (their ModelVersions purge their artifacts).
k -n "$NS" delete inferenceservice digits-onnx --wait=true --timeout=120s >/dev/null 2>&1 || true
k -n "$NS" delete trainingjob -l hone.dev/demo=byo --wait=true >/dev/null 2>&1 || true
k -n "$NS" delete modelversion -l hone.dev/model="$MODEL" --wait=true --timeout=120s >/dev/null 2>&1 || true
k -n "$NS" delete modelversion -l hone.dev/demo=byo --wait=true --timeout=120s >/dev/null 2>&1 || true

# trainingjob NAME WORKERS COMMAND_JSON [ENV_JSON]: the manifest.
trainingjob() {
  cat <<YAML
apiVersion: hone.dev/v1alpha1
kind: TrainingJob
metadata:
  name: $1
  labels: {hone.dev/demo: byo, app.kubernetes.io/part-of: hone-demo}
spec:
  datasetRef: {name: digits}
  model: {architecture: simple-cnn}   # required by the API; train.py builds its own CNN
  hyperparameters: {epochs: 20, batchSize: $((32 / $2)), learningRate: 0.003, optimizer: adamw, seed: 42}
  image: hone.local/byo-pytorch:dev
  command: $3
  args: []
  env: ${4:-[]}
  workers: $2
  resources:
    requests: {cpu: 250m, memory: 512Mi}
    limits: {cpu: "1", memory: 2Gi}
  output:
    uri: s3://hone-models/
    secretRef: {name: hone-s3-credentials}
  runPolicy: {backoffLimit: 2, activeDeadlineSeconds: 1200}
  registerAs: {model: $MODEL}
YAML
}

# train NAME WORKERS COMMAND_JSON: applies, waits, prints; sets ACC (measured
# accuracy on the held-out split) and MV.
train() {
  local name=$1 started mv
  started=$(date +%s)
  trainingjob "$@" | k -n "$NS" apply -f - | sed 's/^/    /'
  wait_phase "$NS" trainingjob "$name" Succeeded 900 || return 1
  say "$name: trained in $(( $(date +%s) - started ))s; workers $(k -n "$NS" get trainingjob "$name" \
    -o jsonpath='{.status.workers.ready}/{.status.workers.total}'), attempts $(k -n "$NS" get trainingjob "$name" \
    -o jsonpath='{.status.attempts}')"
  mv=$(k -n "$NS" get trainingjob "$name" -o jsonpath='{.status.modelVersion}')
  [ -n "$mv" ] || { say "$name registered no ModelVersion"; return 1; }
  say "registered $mv: $(k -n "$NS" get modelversion "$mv" -o jsonpath='{.spec.metrics}')"
  wait_phase "$NS" modelversion "$mv" Ready 300 || return 1
  ACC=$(k -n "$NS" get modelversion "$mv" -o jsonpath='{.status.evaluation.metrics.accuracy}')
  say "$mv verified; measured accuracy $ACC on the held-out split (artifact $(k -n "$NS" get modelversion "$mv" \
    -o jsonpath='{.spec.artifact.uri}'))"
  MV=$mv
}

ACC="" MV=""
if train byo-digits-1 1 '["python3", "/app/train.py"]' '[{"name": "BYO_EXPORT_ONNX", "value": "1"}]'; then
  acc1=$ACC mv1=$MV
  check "1 worker: $mv1 registered and verified" true
  check "1 worker: measured accuracy $acc1 >= 0.9" python3 -c "import sys; sys.exit(float('$acc1') < 0.9)"
else
  acc1="" mv1=""
  check "1 worker: trained, registered and verified" false
fi

ACC="" MV=""
torchrun='["python3", "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", "--node-rank=$(RANK)",
  "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)", "/app/train.py"]'
if train byo-digits-2 2 "$torchrun"; then
  pods=$(k -n "$NS" get pods -l hone.dev/trainingjob=byo-digits-2 --no-headers 2>/dev/null | wc -l)
  check "2 workers under torchrun: $MV registered and verified ($pods pods of one Indexed Job)" [ "$pods" -ge 2 ]
  rank0=$(k -n "$NS" logs -l hone.dev/trainingjob=byo-digits-2 --prefix --tail=-1 2>/dev/null | grep -c '"event": "epoch"')
  check "2 workers: rank 0 alone logged each of the 20 epochs ($rank0 epoch lines in both pods' logs)" [ "$rank0" = 20 ]
  if [ -n "$acc1" ]; then
    check "2 workers: measured accuracy $ACC within 2 points of the 1-worker run's $acc1" \
      python3 -c "import sys; sys.exit(abs(float('$ACC') - float('$acc1')) > 0.02)"
  fi
else
  check "2 workers under torchrun: trained, registered and verified" false
fi

# serve_onnx: the 1-worker run's ONNX export as an ONNX ModelVersion, verified
# and served.
serve_onnx() {
  local dir signature acc url
  dir=$(k -n "$NS" get modelversion "$mv1" -o jsonpath='{.spec.artifact.uri}'); dir=${dir%/model.pt}
  signature=$(k -n "$NS" get modelversion "$mv1" -o jsonpath='{.spec.signature}')
  k -n "$NS" apply -f - <<YAML | sed 's/^/    /'
apiVersion: hone.dev/v1alpha1
kind: ModelVersion
metadata:
  name: digits-byo-onnx-v1
  labels: {hone.dev/demo: byo}
spec:
  model: digits-byo-onnx
  version: 1
  artifact: {uri: "$dir/onnx/model.onnx", format: ONNX, secretRef: {name: hone-s3-credentials}}
  signature: $signature
  evaluation: {dataset: {name: digits}}
YAML
  wait_phase "$NS" modelversion digits-byo-onnx-v1 Ready 300 || return 1
  acc=$(k -n "$NS" get modelversion digits-byo-onnx-v1 -o jsonpath='{.status.evaluation.metrics.accuracy}')
  say "digits-byo-onnx-v1 (ONNX) verified; measured accuracy $acc, the TorchScript $mv1's $acc1"
  check "ONNX: the operator measured $acc, the same as the TorchScript export's $acc1" \
    python3 -c "import sys; sys.exit(abs(float('$acc') - float('$acc1')) > 0.005)"
  k -n "$NS" apply -f - <<YAML | sed 's/^/    /'
apiVersion: hone.dev/v1alpha1
kind: InferenceService
metadata:
  name: digits-onnx
  labels: {hone.dev/demo: byo}
spec:
  variants:
  - {name: main, modelVersion: digits-byo-onnx-v1, weight: 100}
  predictor:
    resources: {requests: {cpu: 100m, memory: 256Mi}, limits: {memory: 1Gi}}
  autoscaling: {minReplicas: 1, maxReplicas: 1}
YAML
  wait_phase "$NS" inferenceservice digits-onnx Ready 300 || return 1
  url="http://$(k -n "$NS" get svc digits-onnx-router -o jsonpath='{.spec.clusterIP}'):8080"
  check "ONNX: served on ONNX Runtime, every held-out digit through the router ($url)" \
    python3 hack/demo/client.py accuracy "$url" "$HOLDOUT" --min 0.95
}
if [ -n "$mv1" ]; then
  serve_onnx || check "ONNX: registered, verified and served" false
fi
printf '%s passed, %s failed\n' "$passed" "$failed"
[ "$failed" = 0 ]
