#!/usr/bin/env bash
# `make demo`: the whole Hone lifecycle on the local real-node cluster, with
# real pods, real training, real serving and real traffic.
#
#   1. cluster: etcd, apiserver, controllers, scheduler and a real node
#      (containerd, kubelet, kube-proxy, CoreDNS), built from Go modules
#   2. images: hone-operator, hone-trainer, hone-predictor, hone-router and MinIO as OCI
#      images, imported into the node's containerd (no Docker)
#   3. helm install charts/hone (two operator replicas, leader election)
#   4. MinIO in the cluster, the digits uploaded to it (a held-out tenth is
#      kept back for step 6)
#   5. kubectl apply -k config/samples: the Dataset is verified, the
#      TrainingJob trains in a pod and registers digits-classifier-v1, which
#      is verified and served by the InferenceService `digits`
#   6. the held-out digits through the router Service: >= 95% correct
#   7. a second TrainingJob, data-parallel in two worker pods (Gloo),
#      registers v2, rolled out as a canary (10%, 50%) under live traffic,
#      and promoted
#   8. a confidently wrong v3 (v2 with its class order permuted, registered
#      with v2's claimed metrics) is measured by Hone on the held-out test
#      split: its accuracy is near zero, `track` skips it, and it never
#      receives a request
#   9. a v4 that passes that evaluation but answers inputs unlike the test
#      split (light images, which the demo client sends among the others)
#      confidently wrong is rolled out: in the shadow step the router mirrors
#      requests to it and compares its answers with v2's; the disagreement
#      aborts it before any user is answered by it (0 requests reach it, 0
#      fail), and the run prints the agreement and PSI measured
#
# Every step prints its time; the run ends with the time from `kubectl apply`
# to the first correct prediction. The cluster stays up afterwards: explore
# it with `export KUBECONFIG=/tmp/hone-cluster/kubeconfig`, stop it with
# `make cluster-down`.
#
# Environment: DEMO_STAGES (default "serve,canary,evaluate,abort"; "serve" stops after
# step 6), DEMO_SKIP_IMAGES=1 (reuse the imported images), HONE_CLUSTER_DIR,
# DEMO_CLUSTER=current (skip steps 1-2 and use the current kubectl context
# with images already on its nodes: hack/demo/minikube.sh), DEMO_VALUES (Helm
# values file, default hack/demo/values.yaml).
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/demo/lib.sh
CLUSTER=${DEMO_CLUSTER:-local}
case "$CLUSTER" in
  local) export KUBECONFIG=$HONE_CLUSTER_DIR/kubeconfig ;;
  current) ;;
  *) echo "DEMO_CLUSTER must be local or current, not $CLUSTER" >&2; exit 2 ;;
esac
VALUES=${DEMO_VALUES:-hack/demo/values.yaml}
STAGES=${DEMO_STAGES:-serve,canary,evaluate,abort}
NS=hone-demo
SYSTEM_NS=hone-system
[ "$CLUSTER" = local ] || KUBECTL=kubectl
WORK=${DEMO_WORK:-$HONE_CLUSTER_DIR/demo}
MINIO_IMAGE="hone.local/minio:$MINIO_VERSION"

t0=$(date +%s.%N)
step_t=$t0
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):7.1f}s')" "$(date +%s.%N)" "$1"; }
say() { printf '[demo %s] %s\n' "$(elapsed "$t0")" "$*"; }
step() { step_t=$(date +%s.%N); printf '\n[demo %s] == %s\n' "$(elapsed "$t0")" "$*"; }
done_step() { printf '[demo %s]    done in %s\n' "$(elapsed "$t0")" "$(elapsed "$step_t" | tr -d ' ')"; }
die() { printf '[demo %s] FAILED: %s\n' "$(elapsed "$t0")" "$*" >&2; exit 1; }
has_stage() { [[ ",$STAGES," == *",$1,"* ]]; }

# Background helpers (port-forwards, the load generator) end with the demo.
PIDS=()
cleanup() { [ -z "${STOP:-}" ] || touch "$STOP"; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# svc_url NAME PORT: a URL of Service NAME in $NS reachable from here. On the
# local cluster this machine routes ClusterIPs over the node's bridge; on
# another cluster a kubectl port-forward is started.
svc_url() {
  if [ "$CLUSTER" = local ]; then
    echo "http://$(k -n "$NS" get svc "$1" -o jsonpath='{.spec.clusterIP}'):$2"
    return
  fi
  local out="$WORK/port-forward-$1.log" port=""
  k -n "$NS" port-forward "svc/$1" ":$2" > "$out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do
    port=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$out" | head -n 1)
    [ -n "$port" ] && break
    sleep 0.2
  done
  [ -n "$port" ] || die "kubectl port-forward to $1 did not start: $(cat "$out")"
  echo "http://127.0.0.1:$port"
}

# await KIND NAME PHASE TIMEOUT: wait_phase in the demo's namespace; ends the demo on failure.
await() { wait_phase "$NS" "$@" || die "waiting for $1/$2 to be $3"; }

# jsonpath of the InferenceService's status.
isvc() { k -n "$NS" get inferenceservice digits -o jsonpath="$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- 1 cluster
hack/setup-python.sh >/dev/null
eval "$(hack/env.sh)"
if [ "$CLUSTER" = local ]; then
step "1/9 cluster with a real node (make cluster-up NODE=real)"
# up.sh refuses a state folder it did not make: $WORK (inside it) comes after.
NODE=real hack/cluster/up.sh 2>&1 | sed 's/^/    /'
mkdir -p "$WORK"
k get nodes -l hone.dev/node=real -o wide | sed 's/^/    /'
done_step

# ----------------------------------------------------------------- 2 images
step "2/9 images (release build, OCI images without Docker, imported into containerd)"
if [ "${DEMO_SKIP_IMAGES:-0}" != 1 ]; then
  cargo build --release --workspace --bins 2>&1 | tail -n 2 | sed 's/^/    /'
  hack/images/build.sh 2>&1 | grep -E 'imported|unchanged|ERROR' | sed 's/^/    /'
  hack/images/minio.sh 2>&1 | grep -E 'imported|unchanged|ERROR' | sed 's/^/    /'
fi
done_step
else
  mkdir -p "$WORK"
  say "steps 1-2 skipped: DEMO_CLUSTER=current, context $(k config current-context)"
fi

# --------------------------------------------------------------- 3 operator
step "3/9 helm install charts/hone into $SYSTEM_NS"
HELM=$(command -v helm || hack/build-helm.sh | tail -n 1)
k create namespace "$SYSTEM_NS" --dry-run=client -o yaml | k apply -f - >/dev/null
k label namespace "$SYSTEM_NS" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
installed=$("$HELM" status hone --namespace "$SYSTEM_NS" >/dev/null 2>&1 && echo yes || true)
"$HELM" upgrade --install hone charts/hone --namespace "$SYSTEM_NS" --values "$VALUES" \
  --wait --timeout 5m 2>&1 | sed -n '1,6p' | sed 's/^/    /'
if [ -n "$installed" ]; then
  # The images keep their tag: pods pick a rebuilt image up when they restart.
  k -n "$SYSTEM_NS" rollout restart deployment -l app.kubernetes.io/instance=hone >/dev/null
  k -n "$SYSTEM_NS" rollout status deployment -l app.kubernetes.io/instance=hone --timeout=180s | sed 's/^/    /'
fi
k -n "$SYSTEM_NS" get pods -o wide | sed 's/^/    /'
holder=$(k -n "$SYSTEM_NS" get lease hone-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
say "operator leader: ${holder:-(not elected yet)}"
done_step

# ---------------------------------------------------------------- 4 storage
step "4/9 object storage: MinIO in $NS, the digits uploaded"
restricted_ns "$NS" || die "could not make namespace $NS"
if ! k -n "$NS" get secret minio-root >/dev/null 2>&1; then
  k -n "$NS" create secret generic minio-root --from-literal=user=hone-demo \
    --from-literal=password="$(openssl rand -hex 16)" >/dev/null
fi
S3_USER=$(k -n "$NS" get secret minio-root -o jsonpath='{.data.user}' | base64 -d)
S3_PASSWORD=$(k -n "$NS" get secret minio-root -o jsonpath='{.data.password}' | base64 -d)
# What the operator's pods read (trainer and predictor: object_store's AWS_* variables).
k -n "$NS" create secret generic hone-s3-credentials --dry-run=client -o yaml \
  --from-literal=AWS_ACCESS_KEY_ID="$S3_USER" --from-literal=AWS_SECRET_ACCESS_KEY="$S3_PASSWORD" \
  --from-literal=AWS_ENDPOINT_URL="http://minio.$NS.svc.cluster.local:9000" \
  --from-literal=AWS_ALLOW_HTTP=true --from-literal=AWS_REGION=us-east-1 | k apply -f - >/dev/null
selector='{}' tolerations='[]'
if [ "$CLUSTER" = local ]; then
  selector='{hone.dev/node: real}'
  tolerations='[{key: hone.dev/node, operator: Equal, value: real, effect: NoSchedule}]'
fi
sed -e "s|MINIO_IMAGE|$MINIO_IMAGE|" -e "s|NODE_SELECTOR|$selector|" -e "s|TOLERATIONS|$tolerations|" hack/demo/minio.yaml | k -n "$NS" apply -f - >/dev/null
k -n "$NS" rollout status deployment/minio --timeout=180s | sed 's/^/    /'
S3=$(svc_url minio 9000)
s3() { curl -sS --fail-with-body --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_USER:$S3_PASSWORD" "$@"; }
for _ in $(seq 30); do s3 -o /dev/null "$S3/minio/health/ready" 2>/dev/null && break; sleep 1; done
DATA="$HONE_CACHE/demo-data"
if [ ! -f "$DATA/.complete" ]; then
  rm -rf "$DATA"
  "$HONE_VENV/bin/python" hack/export-datasets.py "$DATA" --only digits --holdout 0.1 --seed 7 >/dev/null
  touch "$DATA/.complete"
fi
for bucket in hone-datasets hone-models; do s3 -X PUT "$S3/$bucket" -o /dev/null 2>/dev/null || true; done
(cd "$DATA/digits" && find . -name '*.png' | sed 's|^\./||' | sort) > "$WORK/upload.txt"
export -f s3
export S3 S3_USER S3_PASSWORD
(cd "$DATA/digits" && xargs -P 8 -I{} bash -c 's3 -T "{}" "$S3/hone-datasets/digits/{}" -o /dev/null' < "$WORK/upload.txt")
say "uploaded $(wc -l < "$WORK/upload.txt") training images to s3://hone-datasets/digits/; \
$(find "$DATA/digits-holdout" -name '*.png' | wc -l) held out"
done_step

# ---------------------------------------------------------------- 5 samples
step "5/9 kubectl apply -k config/samples (Dataset, TrainingJob, InferenceService)"
apply_t=$(date +%s.%N)
k -n "$NS" apply -k config/samples | sed 's/^/    /'
await dataset digits Ready 300
say "dataset digest: $(k -n "$NS" get dataset digits -o jsonpath='{.status.digest}')"
# Live progress: the operator reads the trainer's /metrics into status.progress
# while it trains (every 15 s); print each new reading until the run ends.
seen="" last=""
for _ in $(seq 600); do
  phase=$(k -n "$NS" get trainingjob digits-cnn-1 -o jsonpath='{.status.phase}' 2>/dev/null || true)
  p=$(k -n "$NS" get trainingjob digits-cnn-1 -o jsonpath='{.status.progress.epoch}/{.status.progress.totalEpochs} step {.status.progress.step}/{.status.progress.totalSteps} eta {.status.progress.estimatedCompletionTime} loss {.status.metrics.loss}' 2>/dev/null || true)
  if [ "$phase" = Running ] && [ -n "$(k -n "$NS" get trainingjob digits-cnn-1 -o jsonpath='{.status.progress.observedTime}' 2>/dev/null)" ] && [ "$p" != "$last" ]; then
    say "training: epoch $p"
    last=$p
    e=${p%%/*}
    [[ " $seen " == *" $e "* ]] || seen="$seen $e"
  fi
  case "$phase" in Succeeded|Failed) break ;; esac
  sleep 2
done
say "epochs seen in status.progress while training:${seen:- none}"
await trainingjob digits-cnn-1 Succeeded 1200
V1=$(k -n "$NS" get trainingjob digits-cnn-1 -o jsonpath='{.status.modelVersion}')
say "registered $V1: $(k -n "$NS" get modelversion "$V1" -o jsonpath='{.spec.metrics}')"
await modelversion "$V1" Ready 300
await inferenceservice digits Ready 600
ROUTER=$(svc_url digits-router 8080)
HOLDOUT="$DATA/digits-holdout"
first=""
for _ in $(seq 120); do
  if python3 - "$ROUTER" "$HOLDOUT" <<'PY'
import json, os, sys, urllib.request
url, root = sys.argv[1:]
label = sorted(os.listdir(root))[3]
name = sorted(os.listdir(os.path.join(root, label)))[0]
body = open(os.path.join(root, label, name), "rb").read()
req = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": "image/png"})
try:
    answer = json.loads(urllib.request.urlopen(req, timeout=5).read())
except Exception:
    sys.exit(1)
sys.exit(0 if answer.get("label") == label else 1)
PY
  then first=$(date +%s.%N); break; fi
  sleep 1
done
[ -n "$first" ] || die "no correct prediction through $ROUTER"
FIRST_PREDICTION=$(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$first" "$apply_t")
say "first correct prediction through the router, $FIRST_PREDICTION s after kubectl apply"
done_step

# ---------------------------------------------------------------- 6 predict
step "6/9 the held-out digits through the router Service ($ROUTER)"
python3 hack/demo/client.py accuracy "$ROUTER" "$HOLDOUT" --min 0.95 | sed 's/^/    /'
done_step

summary() {
  printf '\n[demo %s] == summary\n' "$(elapsed "$t0")"
  printf '    kubectl apply -> first correct prediction: %s s\n' "$FIRST_PREDICTION"
  [ -z "${DISTRIBUTED_SUMMARY:-}" ] || printf '    v2 trained by %s\n' "$DISTRIBUTED_SUMMARY"
  [ -z "${CANARY_SUMMARY:-}" ] || printf '    canary v1 -> v2: %s\n' "$CANARY_SUMMARY"
  [ -z "${PERMUTED_SUMMARY:-}" ] || printf '    confidently wrong v3: %s\n' "$PERMUTED_SUMMARY"
  [ -z "${ABORT_SUMMARY:-}" ] || printf '    v4, confidently wrong on unusual inputs: %s\n' "$ABORT_SUMMARY"
  printf '    the cluster is still up: export KUBECONFIG=%s; make cluster-down stops it\n' "$KUBECONFIG"
}
has_stage canary || { summary; exit 0; }

LOG="$WORK/traffic.jsonl"
STOP="$WORK/traffic.stop"
rm -f "$LOG" "$STOP"
# Inputs unlike the training data: the held-out digits, inverted (light
# background). Every model so far answers them (wrongly, as users expect of
# such input); step 9's v4 answers them all with one class, confidently.
UNUSUAL="$WORK/digits-inverted"
rm -rf "$UNUSUAL"
"$HONE_VENV/bin/python" - "$HOLDOUT" "$UNUSUAL" <<'PY'
import os, sys
from PIL import Image, ImageOps
src, dst = sys.argv[1:]
for label in sorted(os.listdir(src)):
    os.makedirs(os.path.join(dst, label), exist_ok=True)
    for name in sorted(os.listdir(os.path.join(src, label)))[:5]:
        ImageOps.invert(Image.open(os.path.join(src, label, name)).convert("L")).save(os.path.join(dst, label, name))
PY
# Steady traffic for the analysis from here on (bounded: 20 minutes at most),
# 30% of it inverted digits.
python3 hack/demo/client.py load "$ROUTER" "$HOLDOUT" "$LOG" --rate 20 --workers 4 --seconds 1200 \
  --stop-file "$STOP" --unusual "$UNUSUAL" --unusual-share 0.3 &
PIDS+=($!)

# ----------------------------------------------------------------- 7 canary
step "7/9 a second TrainingJob on two workers: v2 rolled out as a canary under live traffic"
k -n "$NS" apply -f hack/demo/trainingjob-2.yaml | sed 's/^/    /'
for _ in $(seq 300); do
  w=$(k -n "$NS" get trainingjob digits-cnn-2 -o jsonpath='{.status.workers.ready}/{.status.workers.total}')
  [ "$w" = 2/2 ] && break
  [ -n "$(k -n "$NS" get trainingjob digits-cnn-2 -o jsonpath='{.status.completionTime}')" ] && break
  sleep 1
done
say "digits-cnn-2: workers ready $w ($(k -n "$NS" get pods -l hone.dev/trainingjob=digits-cnn-2 --no-headers | wc -l) pods of one Indexed Job)"
await trainingjob digits-cnn-2 Succeeded 1200
V2=$(k -n "$NS" get trainingjob digits-cnn-2 -o jsonpath='{.status.modelVersion}')
say "registered $V2: $(k -n "$NS" get modelversion "$V2" -o jsonpath='{.spec.metrics}')"
await modelversion "$V2" Ready 300
acc1=$(k -n "$NS" get modelversion "$V1" -o jsonpath='{.status.evaluation.metrics.accuracy}')
acc2=$(k -n "$NS" get modelversion "$V2" -o jsonpath='{.status.evaluation.metrics.accuracy}')
DISTRIBUTED_SUMMARY="2 workers, measured accuracy $acc2 on the held-out split, against $acc1 for the 1-worker $V1"
say "$V2 trained by $DISTRIBUTED_SUMMARY"
canary_start=$(date +%s.%N)
seen=""
for _ in $(seq 600); do
  r=$(isvc '{.status.rollout.toVersion} step={.status.rollout.step} weight={.status.rollout.canaryWeight} {.status.rollout.lastAnalysis}')
  served=$(isvc '{.status.variants[0].modelVersion}')
  if [ "$r" != "$seen" ] && [ -n "${r%% *}" ]; then say "rollout: $r"; seen=$r; fi
  if [ "$served" = "$V2" ] && [ -z "$(isvc '{.status.rollout.toVersion}')" ]; then break; fi
  [ "$(isvc '{.status.phase}')" = Degraded ] && { show "$NS" inferenceservice digits; die "the v2 canary was aborted"; }
  sleep 1
done
[ "$served" = "$V2" ] || die "v2 was not promoted in time"
canary_end=$(date +%s.%N)
w=$(python3 hack/demo/client.py window "$LOG" --since "$canary_start" --until "$canary_end")
say "promoted $V2 after $(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.0f}')" "$canary_end" "$canary_start") s; traffic meanwhile: $w"
CANARY_SUMMARY="promoted; traffic during the rollout: $w"
await inferenceservice digits Ready 300
done_step

# --------------------------------------------------------------- 8 evaluate
V2_URI=$(k -n "$NS" get modelversion "$V2" -o jsonpath='{.spec.artifact.uri}')
V2_DIR=${V2_URI%/model.pt}
V2_PATH=${V2_DIR#s3://}
mkdir -p "$WORK/v2"
s3 -o "$WORK/v2/model.pt" "$S3/$V2_PATH/model.pt"
s3 -o "$WORK/v2/model.json" "$S3/$V2_PATH/model.json"
k -n "$NS" get modelversion "$V2" -o json > "$WORK/v2/modelversion.json"
# register_wrong MODE NAME: builds the wrong model MODE from v2, uploads it
# and registers it by hand, with v2's lineage and claimed metrics.
register_wrong() {
  local mode=$1 name=$2 dir="$WORK/$2" uri="s3://hone-models/wrong/$2/model.pt"
  mkdir -p "$dir"
  "$HONE_VENV/bin/python" hack/demo/broken_model.py "$mode" "$WORK/v2/model.pt" "$WORK/v2/model.json" "$dir" \
    --modelversion "$WORK/v2/modelversion.json" --name "$name" --uri "$uri" >/dev/null
  s3 -T "$dir/model.pt" "$S3/hone-models/wrong/$name/model.pt" -o /dev/null
  s3 -T "$dir/model.json" "$S3/hone-models/wrong/$name/model.json" -o /dev/null
  k -n "$NS" apply -f "$dir/modelversion.json" | sed 's/^/    /'
}
KUBECTL_HONE=$(command -v kubectl-hone || echo "${CARGO_TARGET_DIR:-target}/release/kubectl-hone")
if has_stage evaluate; then
step "8/9 a confidently wrong v3 (v2, class order permuted): Hone's measured evaluation keeps it from users"
V3=digits-classifier-v3
eval_start=$(date +%s.%N)
register_wrong permuted "$V3"
await modelversion "$V3" Ready 300
acc=$(k -n "$NS" get modelversion "$V3" -o jsonpath='{.status.evaluation.metrics.accuracy}')
samples=$(k -n "$NS" get modelversion "$V3" -o jsonpath='{.status.evaluation.samples}')
claimed=$(k -n "$NS" get modelversion "$V3" -o jsonpath='{.spec.metrics.val_accuracy}')
say "$V3 measured on $samples held-out samples: accuracy $acc (its registration claims val_accuracy $claimed)"
skipped=""
for _ in $(seq 120); do
  skipped=$(isvc '{.status.variants[0].gateFailures}')
  [[ "$skipped" == *"$V3"* ]] && break
  sleep 1
done
[[ "$skipped" == *"$V3"* ]] || { show "$NS" inferenceservice digits; die "the InferenceService does not list $V3 as skipped"; }
[ "$(isvc '{.status.variants[0].modelVersion}')" = "$V2" ] || die "the variant does not serve $V2"
"$KUBECTL_HONE" status -n "$NS" "$V3" 2>&1 | sed 's/^/    /'
"$KUBECTL_HONE" status -n "$NS" digits 2>&1 | grep -E 'skips|ModelVersion/'"$V3" | sed 's/^/    /' || true
sleep 10
reached=$(python3 - "$LOG" "$eval_start" <<'PY'
import json, sys
since = float(sys.argv[2])
rows = [r for r in map(json.loads, open(sys.argv[1])) if r["t"] >= since]
print(sum(r["variant"].endswith("-v3") or r["version"] == "3" for r in rows), len(rows))
PY
)
[ "${reached%% *}" = 0 ] || die "$V3 answered ${reached%% *} requests"
say "requests answered by $V3 since it was registered: ${reached%% *} of ${reached##* }"
PERMUTED_SUMMARY="measured accuracy $acc on $samples held-out samples (claimed val_accuracy $claimed): skipped by track; ${reached%% *} of ${reached##* } requests reached it"
done_step
fi

# ------------------------------------------------------------------ 9 abort
has_stage abort || { summary; exit 0; }
step "9/9 a v4 that passes evaluation but answers unusual inputs confidently wrong: aborted in the shadow step, no user ever answered by it"
V4=digits-classifier-v4
register_wrong unusual "$V4"
await modelversion "$V4" Ready 300
abort_start=$(date +%s.%N)
seen=""
for _ in $(seq 600); do
  r=$(isvc '{.status.rollout.toVersion} shadow={.status.rollout.shadow} step={.status.rollout.step} weight={.status.rollout.canaryWeight} {.status.rollout.waitingFor}')
  if [ "$r" != "$seen" ] && [ -n "${r%% *}" ]; then say "rollout: $r"; seen=$r; fi
  [ "$(isvc '{.status.phase}')" = Degraded ] && break
  sleep 1
done
[ "$(isvc '{.status.phase}')" = Degraded ] || die "the broken canary was not aborted in time"
aborted=$(date +%s.%N)
reason=$(isvc '{.status.conditions[?(@.type=="Degraded")].reason}')
message=$(isvc '{.status.conditions[?(@.type=="Degraded")].message}')
say "Degraded, reason $reason: $message"
[ "$reason" = RolloutAborted ] || die "expected reason RolloutAborted, got $reason"
[[ "$message" == *"in the shadow step"* ]] || die "v4 was not stopped in the shadow step"
[ "$(isvc '{.status.variants[0].modelVersion}')" = "$V2" ] || die "the variant does not serve $V2 after the abort"
# Give the router's last config a moment, then count what users got.
sleep 10
end=$(date +%s.%N)
w=$(python3 hack/demo/client.py window "$LOG" --since "$abort_start" --until "$end")
say "from v4 Ready until after the abort: $w"
affected=$(python3 - "$LOG" "$abort_start" "$end" <<'PY'
import json, sys
log, since, until = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = [r for r in map(json.loads, open(log)) if since <= r["t"] < until]
v4 = sum(r["variant"].endswith("-v4") or r["version"] == "4" for r in rows)
failed = sum(r["status"] != 200 for r in rows)
print(v4, failed, len(rows))
PY
)
read -r by_v4 failed total <<<"$affected"
say "user requests answered by $V4: $by_v4 of $total; failed: $failed"
[ "$by_v4" = 0 ] || die "$V4 answered $by_v4 user requests"
[ "$failed" = 0 ] || die "$failed user requests failed"
figures=$(python3 - "$message" <<'PY'
import re, sys
m = re.search(r"measured: (.*)\)$", sys.argv[1])
print(m.group(1) if m else "")
PY
)
check=$(python3 - "$message" <<'PY'
import re, sys
m = re.search(r"failed analysis: (.*?); all traffic", sys.argv[1])
print(m.group(1) if m else "")
PY
)
ABORT_SUMMARY="aborted in the shadow step after $(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.0f}')" "$aborted" "$abort_start") s: $check; measured: $figures; user requests answered by v4: $by_v4 of $total, failed: $failed"
done_step
summary
