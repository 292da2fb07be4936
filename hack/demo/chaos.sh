#!/usr/bin/env bash
# `make chaos`: faults on purpose, on the cluster `make demo` left running
# (real node, the chart installed, MinIO with the digits, the InferenceService
# `digits` serving). Each test is a function; the run ends with
# "N passed, N failed" and a non-zero status when one failed.
#
#   operator_killed_10_times   the leading operator pod is killed (SIGKILL,
#                              force-deleted) 10 times at random points of a
#                              whole lifecycle; it ends Ready with exactly one
#                              training Job and one ModelVersion
#   training_pod_deleted       a training pod killed mid-run (SIGKILL): the
#                              Job's next pod resumes from the last checkpoint
#                              and trains exactly the epochs that were left
#   worker_pod_deleted         rank 1 of a two-worker TrainingJob killed
#                              mid-run: the attempt fails as a whole (rank 0's
#                              next all-reduce meets a closed peer), both ranks
#                              resume from rank 0's last checkpoint, and every
#                              epoch is trained exactly once
#   predictor_pod_deleted      one of two predictor pods deleted under steady
#                              load through the router: no request fails
#
# CHAOS_TESTS="a b" runs a subset; CHAOS_SEED fixes the random kill points.
set -uo pipefail
cd "$(dirname "$0")/../.."
. hack/demo/lib.sh
export KUBECONFIG=$HONE_CLUSTER_DIR/kubeconfig
DEMO_NS=hone-demo
SYSTEM_NS=hone-system
WORK=$HONE_CLUSTER_DIR/chaos
HOLDOUT="$HONE_CACHE/demo-data/digits-holdout"
RANDOM=${CHAOS_SEED:-$$}
log() { printf '[chaos %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { log "FAIL: $*"; return 1; }
say() { log "$@"; }

preflight() {
  k get node hone-real >/dev/null 2>&1 || { echo "no real node: run make demo first" >&2; exit 2; }
  k -n "$DEMO_NS" get secret hone-s3-credentials >/dev/null 2>&1 ||
    { echo "no demo namespace: run make demo first" >&2; exit 2; }
  [ -d "$HOLDOUT" ] || { echo "$HOLDOUT is missing: run make demo first" >&2; exit 2; }
  mkdir -p "$WORK"
}

# fresh_ns NAME: a restricted namespace with the demo's storage credentials.
fresh_ns() {
  restricted_ns "$1" || return 1
  k -n "$DEMO_NS" get secret hone-s3-credentials -o json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({"apiVersion":"v1","kind":"Secret",
"metadata":{"name":s["metadata"]["name"]},"type":s.get("type","Opaque"),"data":s["data"]}))' |
    k -n "$1" apply -f - >/dev/null
}

leader_pod() { k -n "$SYSTEM_NS" get lease hone-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }

# ------------------------------------------------------------------ tests
operator_killed_10_times() {
  local ns=chaos-operator kills=0 leader
  fresh_ns "$ns"
  # The samples, with training long enough (15 epochs, no early stop) that
  # the kills land all over the lifecycle.
  k -n "$ns" apply -f config/samples/dataset.yaml -f config/samples/inferenceservice.yaml >/dev/null
  sed -e 's/earlyStoppingPatience: 4/earlyStoppingPatience: 0/' config/samples/trainingjob.yaml |
    k -n "$ns" apply -f - >/dev/null
  while [ "$kills" -lt 10 ]; do
    sleep $(( 2 + RANDOM % 6 ))
    leader=$(leader_pod)
    if [ -z "$leader" ] || ! k -n "$SYSTEM_NS" get pod "$leader" >/dev/null 2>&1; then continue; fi
    k -n "$SYSTEM_NS" delete pod "$leader" --grace-period=0 --force >/dev/null 2>&1 || continue
    kills=$((kills + 1))
    log "kill $kills: $leader (dataset $(phase "$ns" dataset digits), training $(phase "$ns" trainingjob digits-cnn-1), \
service $(phase "$ns" inferenceservice digits))"
  done
  wait_phase "$ns" inferenceservice digits Ready 1200 || return 1
  local jobs mvs served tj
  jobs=$(k -n "$ns" get jobs -l hone.dev/trainingjob=digits-cnn-1 -o name | wc -l)
  mvs=$(k -n "$ns" get modelversions -o name | wc -l)
  tj=$(phase "$ns" trainingjob digits-cnn-1)
  served=$(k -n "$ns" get inferenceservice digits -o jsonpath='{.status.variants[0].modelVersion}')
  log "after 10 kills: trainingjob $tj, training Jobs $jobs, ModelVersions $mvs, served $served, \
dataset $(phase "$ns" dataset digits), modelversion $(phase "$ns" modelversion digits-classifier-v1)"
  [ "$tj" = Succeeded ] || { fail "trainingjob is $tj"; return 1; }
  [ "$jobs" = 1 ] || { fail "$jobs training Jobs, want 1"; return 1; }
  [ "$mvs" = 1 ] || { fail "$mvs ModelVersions, want 1"; return 1; }
  [ "$served" = digits-classifier-v1 ] || { fail "serves $served"; return 1; }
  [ "$(phase "$ns" modelversion digits-classifier-v1)" = Ready ] || { fail "modelversion not Ready"; return 1; }
  k delete namespace "$ns" --wait=false >/dev/null
}

# resumed_once KILLED_AFTER LOG WHO: the trainer's LOG (of a 10-epoch run)
# says it resumed from a checkpoint written at or after epoch KILLED_AFTER,
# not from the end, and then trained each remaining epoch exactly once.
resumed_once() {
  python3 - "$@" <<'PY'
import json, sys
killed_after, log, who = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lines = [json.loads(l) for l in open(log) if l.startswith("{")]
resumed = [l["epoch"] for l in lines if l.get("event") == "resumed"]
epochs = [l["epoch"] for l in lines if l.get("event") == "epoch"]
print(f"[chaos] {who}: resumed from epoch {resumed}, then trained epochs {epochs}")
ok = resumed and killed_after <= resumed[0] < 10 and epochs == list(range(resumed[0] + 1, 11))
sys.exit(0 if ok else 1)
PY
}

training_pod_deleted() {
  local ns=chaos-train job pod start epoch
  fresh_ns "$ns"
  k -n "$ns" apply -f config/samples/dataset.yaml >/dev/null
  sed -e 's/epochs: 15/epochs: 10/' -e 's/earlyStoppingPatience: 4/earlyStoppingPatience: 0/' \
    config/samples/trainingjob.yaml | k -n "$ns" apply -f - >/dev/null
  start=$(date +%s)
  while :; do
    job=$(k -n "$ns" get jobs -l hone.dev/trainingjob=digits-cnn-1 -o jsonpath='{.items[0].metadata.name}' 2>/dev/null)
    pod=$(k -n "$ns" get pods -l "job-name=$job" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null)
    if [ -n "$pod" ]; then
      epoch=$(k -n "$ns" logs "$pod" 2>/dev/null | python3 -c '
import json, sys
done = [json.loads(l)["epoch"] for l in sys.stdin if l.startswith("{") and "\"event\":\"epoch\"" in l]
print(max(done) if done else 0)')
      [ "${epoch:-0}" -ge 2 ] && break
    fi
    (( $(date +%s) - start > 900 )) && { fail "training never reached epoch 2"; return 1; }
    sleep 1
  done
  # Killed, not asked to stop: SIGKILL with no grace, mid-epoch.
  log "killing $pod after epoch $epoch"
  k -n "$ns" delete pod "$pod" --grace-period=0 --force >/dev/null 2>&1
  wait_phase "$ns" trainingjob digits-cnn-1 Succeeded 900 || return 1
  local survivor logs
  survivor=$(k -n "$ns" get pods -l "job-name=$job" --field-selector=status.phase=Succeeded \
    -o jsonpath='{.items[0].metadata.name}')
  logs=$(k -n "$ns" logs "$survivor")
  printf '%s\n' "$logs" > "$WORK/training-resumed.log"
  resumed_once "$epoch" "$WORK/training-resumed.log" "next pod" || { fail "the next pod did not resume"; return 1; }
  [ "$(k -n "$ns" get trainingjob digits-cnn-1 -o jsonpath='{.status.modelVersion}')" = digits-classifier-v1 ] ||
    { fail "no ModelVersion registered"; return 1; }
  k delete namespace "$ns" --wait=false >/dev/null
}

# rank_epoch NS JOB INDEX: the last epoch the worker pod of INDEX logged (0 when none).
rank_epoch() {
  k -n "$1" logs -l "job-name=$2,batch.kubernetes.io/job-completion-index=$3" --tail=-1 2>/dev/null | python3 -c '
import json, sys
done = [json.loads(l)["epoch"] for l in sys.stdin if l.startswith("{") and "\"event\":\"epoch\"" in l]
print(max(done) if done else 0)'
}

worker_pod_deleted() {
  local ns=chaos-workers job pod start epoch
  fresh_ns "$ns"
  k -n "$ns" apply -f config/samples/dataset.yaml >/dev/null
  sed -e 's/epochs: 15/epochs: 10/' -e 's/earlyStoppingPatience: 4/earlyStoppingPatience: 0/' \
    hack/demo/trainingjob-2.yaml | k -n "$ns" apply -f - >/dev/null
  start=$(date +%s)
  while :; do
    job=$(k -n "$ns" get jobs -l hone.dev/trainingjob=digits-cnn-2 -o jsonpath='{.items[0].metadata.name}' 2>/dev/null)
    if [ -n "$job" ]; then epoch=$(rank_epoch "$ns" "$job" 0); [ "${epoch:-0}" -ge 2 ] && break; fi
    (( $(date +%s) - start > 900 )) && { fail "training never reached epoch 2"; return 1; }
    sleep 1
  done
  pod=$(k -n "$ns" get pods -l "job-name=$job,batch.kubernetes.io/job-completion-index=1" \
    --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
  log "killing rank 1 ($pod) after epoch $epoch"
  k -n "$ns" delete pod "$pod" --grace-period=0 --force >/dev/null 2>&1
  wait_phase "$ns" trainingjob digits-cnn-2 Succeeded 900 || return 1
  local rank0 attempts
  rank0=$(k -n "$ns" get pods -l "job-name=$job,batch.kubernetes.io/job-completion-index=0" \
    --field-selector=status.phase=Succeeded -o jsonpath='{.items[0].metadata.name}')
  k -n "$ns" logs "$rank0" > "$WORK/worker-resumed.log"
  attempts=$(k -n "$ns" get trainingjob digits-cnn-2 -o jsonpath='{.status.attempts}')
  log "attempts: $attempts; failed pods: $(k -n "$ns" get pods -l "job-name=$job" \
    --field-selector=status.phase=Failed --no-headers 2>/dev/null | wc -l)"
  resumed_once "$epoch" "$WORK/worker-resumed.log" "next attempt's rank 0" ||
    { fail "rank 0 of the next attempt did not resume"; return 1; }
  [ "${attempts:-1}" -ge 2 ] || { fail "status.attempts is ${attempts:-unset}, not 2 or more"; return 1; }
  [ -n "$(k -n "$ns" get trainingjob digits-cnn-2 -o jsonpath='{.status.modelVersion}')" ] ||
    { fail "no ModelVersion registered"; return 1; }
  k delete namespace "$ns" --wait=false >/dev/null
}

predictor_pod_deleted() {
  local router served deploy victim log=$WORK/predictor-chaos.jsonl
  router="http://$(k -n "$DEMO_NS" get svc digits-router -o jsonpath='{.spec.clusterIP}'):8080"
  served=$(k -n "$DEMO_NS" get inferenceservice digits -o jsonpath='{.status.variants[0].modelVersion}')
  deploy="digits-main-v${served##*-v}"
  k -n "$DEMO_NS" rollout status "deployment/$deploy" --timeout=120s >/dev/null || { fail "$deploy not ready"; return 1; }
  [ "$(k -n "$DEMO_NS" get deployment "$deploy" -o jsonpath='{.status.readyReplicas}')" -ge 2 ] ||
    { fail "$deploy has fewer than 2 ready replicas"; return 1; }
  rm -f "$log"
  python3 hack/demo/client.py load "$router" "$HOLDOUT" "$log" --rate 20 --workers 4 --seconds 45 &
  local load=$!
  sleep 10
  victim=$(k -n "$DEMO_NS" get pods -l "app.kubernetes.io/component=predictor" -o name | grep "$deploy" | head -n 1)
  log "deleting $victim under load"
  k -n "$DEMO_NS" delete "$victim" --wait=false >/dev/null
  wait "$load"
  local summary
  summary=$(python3 hack/demo/client.py window "$log")
  log "45 s of load with $victim deleted after 10 s: $summary"
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d["requests"] > 500 and d["failed"] == 0 else 1)' \
    "$summary" || { fail "requests failed (or too few sent)"; return 1; }
  k -n "$DEMO_NS" rollout status "deployment/$deploy" --timeout=120s >/dev/null || { fail "$deploy did not recover"; return 1; }
}

preflight
tests=${CHAOS_TESTS:-operator_killed_10_times training_pod_deleted worker_pod_deleted predictor_pod_deleted}
passed=0 failed=0
for t in $tests; do
  log "== $t"
  start=$(date +%s)
  if "$t"; then passed=$((passed + 1)); log "ok $t ($(( $(date +%s) - start )) s)";
  else failed=$((failed + 1)); log "FAILED $t ($(( $(date +%s) - start )) s)"; fi
done
echo "chaos: $passed passed, $failed failed"
[ "$failed" = 0 ]
