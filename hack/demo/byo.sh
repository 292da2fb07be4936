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
#   5. examples/sklearn-tabular (scikit-learn through skl2onnx, its own image)
#      fits StandardScaler + LogisticRegression on the wine CSV; the ONNX
#      ModelVersion it registers (probabilities as output) is verified,
#      evaluated (within 1 point of sklearn's own test accuracy) and served.
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

say "image: hack/images/python-example.sh byo-pytorch"
hack/images/python-example.sh byo-pytorch 2>&1 | sed 's/^/    /'
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

# serve NAME MODELVERSION: an InferenceService of one variant, waited Ready;
# sets URL to its router.
serve() {
  k -n "$NS" apply -f - <<YAML | sed 's/^/    /'
apiVersion: hone.dev/v1alpha1
kind: InferenceService
metadata:
  name: $1
  labels: {hone.dev/demo: byo}
spec:
  variants:
  - {name: main, modelVersion: $2, weight: 100}
  predictor:
    resources: {requests: {cpu: 100m, memory: 256Mi}, limits: {memory: 1Gi}}
  autoscaling: {minReplicas: 1, maxReplicas: 1}
YAML
  wait_phase "$NS" inferenceservice "$1" Ready 300 || return 1
  URL="http://$(k -n "$NS" get svc "$1-router" -o jsonpath='{.spec.clusterIP}'):8080"
}

# serve_onnx: the 1-worker run's ONNX export as an ONNX ModelVersion, verified
# and served.
serve_onnx() {
  local dir signature acc
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
  serve digits-onnx digits-byo-onnx-v1 || return 1
  check "ONNX: served on ONNX Runtime, every held-out digit through the router ($URL)" \
    python3 hack/demo/client.py accuracy "$URL" "$HOLDOUT" --min 0.95
}
if [ -n "$mv1" ]; then
  serve_onnx || check "ONNX: registered, verified and served" false
fi

# sklearn: examples/sklearn-tabular (StandardScaler + LogisticRegression,
# exported by skl2onnx) trained on the wine CSV in MinIO, registered as an
# ONNX ModelVersion whose output is probabilities, evaluated by the operator
# on the held-out split, and served.
sklearn() {
  local csv started mv acc direct
  say "image: hack/images/python-example.sh sklearn-tabular"
  hack/images/python-example.sh sklearn-tabular 2>&1 | sed 's/^/    /'
  [ "${PIPESTATUS[0]}" = 0 ] || return 1
  csv="$HONE_CACHE/demo-data/wine.csv"
  [ -s "$csv" ] || "$(hack/setup-python.sh | tail -n 1)/bin/python" hack/export-datasets.py \
    "$HONE_CACHE/demo-data" --only wine >/dev/null || return 1
  local user password s3
  user=$(k -n "$NS" get secret minio-root -o jsonpath='{.data.user}' | base64 -d)
  password=$(k -n "$NS" get secret minio-root -o jsonpath='{.data.password}' | base64 -d)
  s3="http://$(k -n "$NS" get svc minio -o jsonpath='{.spec.clusterIP}'):9000"
  curl -sS --fail-with-body --aws-sigv4 "aws:amz:us-east-1:s3" --user "$user:$password" \
    -T "$csv" "$s3/hone-datasets/wine/wine.csv" -o /dev/null || return 1
  k -n "$NS" apply -f - <<YAML | sed 's/^/    /'
apiVersion: hone.dev/v1alpha1
kind: Dataset
metadata:
  name: wine
  labels: {hone.dev/demo: byo}
spec:
  source: {uri: "s3://hone-datasets/wine/wine.csv", secretRef: {name: hone-s3-credentials}}
  format: CSV
  csv: {labelColumn: label}
  split: {validation: 0.2, test: 0.3, seed: 7}
---
apiVersion: hone.dev/v1alpha1
kind: TrainingJob
metadata:
  name: sklearn-wine
  labels: {hone.dev/demo: byo, app.kubernetes.io/part-of: hone-demo}
spec:
  datasetRef: {name: wine}
  model: {architecture: mlp}   # required by the API; train.py fits its own pipeline
  image: hone.local/sklearn-tabular:dev
  command: ["python3", "/app/train.py"]
  args: []
  resources:
    requests: {cpu: 250m, memory: 256Mi}
    limits: {cpu: "1", memory: 1Gi}
  output: {uri: "s3://hone-models/", secretRef: {name: hone-s3-credentials}}
  runPolicy: {backoffLimit: 1, activeDeadlineSeconds: 600}
  registerAs: {model: wine-sklearn}
YAML
  wait_phase "$NS" dataset wine Ready 300 || return 1
  started=$(date +%s)
  wait_phase "$NS" trainingjob sklearn-wine Succeeded 600 || return 1
  mv=$(k -n "$NS" get trainingjob sklearn-wine -o jsonpath='{.status.modelVersion}')
  [ -n "$mv" ] || { say "sklearn-wine registered no ModelVersion"; return 1; }
  say "sklearn-wine: fitted and registered $mv in $(( $(date +%s) - started ))s: $(k -n "$NS" get modelversion \
    "$mv" -o jsonpath='{.spec.artifact.format} {.spec.artifact.uri} output={.spec.signature.output} {.spec.metrics}')"
  wait_phase "$NS" modelversion "$mv" Ready 300 || return 1
  acc=$(k -n "$NS" get modelversion "$mv" -o jsonpath='{.status.evaluation.metrics.accuracy}')
  direct=$(k -n "$NS" get modelversion "$mv" -o jsonpath='{.spec.metrics.test_accuracy}')
  check "sklearn: $mv is ONNX, verified; the operator measured $acc on the held-out split, sklearn itself $direct" \
    python3 -c "import sys; sys.exit(abs(float('$acc') - float('$direct')) > 0.01)"
  serve wine "$mv" || return 1
  check "sklearn: served; the held-out wines through the router ($URL) score what the operator measured" \
    env HONE_SPLIT_VALIDATION=0.2 HONE_SPLIT_TEST=0.3 HONE_SPLIT_SEED=7 python3 - "$URL" "$csv" "$acc" <<'PY'
import json, sys, urllib.request
sys.path.insert(0, "examples/common")
from hone_contract import read_csv
url, csv, measured = sys.argv[1], sys.argv[2], float(sys.argv[3])
table = read_csv(csv, "/tmp")
test = table["split"]["test"]
body = json.dumps({"instances": [table["values"][i] for i in test]}).encode()
req = urllib.request.Request(url + "/predict/batch", data=body, headers={"Content-Type": "application/json"})
answers = json.load(urllib.request.urlopen(req, timeout=30))["predictions"]
correct = sum(a["label"] == table["labels"][i] for a, i in zip(answers, test))
print(f"    {correct}/{len(test)} held-out wines answered right ({correct / len(test):.1%}); measured {measured:.1%}")
sys.exit(abs(correct / len(test) - measured) > 1e-6)
PY
}
k -n "$NS" delete inferenceservice wine --wait=true --timeout=120s >/dev/null 2>&1 || true
k -n "$NS" delete trainingjob sklearn-wine --wait=true >/dev/null 2>&1 || true
k -n "$NS" delete modelversion -l hone.dev/model=wine-sklearn --wait=true --timeout=120s >/dev/null 2>&1 || true
sklearn || check "sklearn: trained, registered, verified and served" false
printf '%s passed, %s failed\n' "$passed" "$failed"
[ "$failed" = 0 ]
