# Shared by hack/demo/run.sh and hack/demo/chaos.sh. Sourced, not run; the
# caller defines `say MESSAGE` (progress lines) and may set KUBECTL first.
# shellcheck shell=bash
. hack/versions.env
export HONE_CACHE=${HONE_CACHE:-$HOME/.cache/hone}
export HONE_CLUSTER_DIR=${HONE_CLUSTER_DIR:-/tmp/hone-cluster}
KUBECTL=${KUBECTL:-$HONE_CACHE/k8s-$KUBE_VERSION/bin/kubectl}
k() { "$KUBECTL" "$@"; }

# phase NS KIND NAME: the object's status.phase, empty when it has none.
phase() { k -n "$1" get "$2" "$3" -o jsonpath='{.status.phase}' 2>/dev/null || true; }

# show NS KIND NAME: the object's status and the namespace's latest Events, on stderr.
show() {
  k -n "$1" get "$2" "$3" -o jsonpath='{.status}' 2>/dev/null | python3 -m json.tool >&2 || true
  k -n "$1" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2 || true
}

# wait_phase NS KIND NAME PHASE TIMEOUT: polls status.phase, saying each
# change. Returns 1, with the status and Events on stderr, on Failed (or
# Degraded, unless that is the phase awaited) or after TIMEOUT seconds.
wait_phase() {
  local ns=$1 kind=$2 name=$3 want=$4 timeout=$5 start current last="-"
  start=$(date +%s)
  while :; do
    current=$(phase "$ns" "$kind" "$name")
    if [ "$current" != "$last" ]; then say "$kind/$name: ${current:-(no status yet)}"; last=$current; fi
    [ "$current" = "$want" ] && return 0
    if [ "$current" = Failed ] || { [ "$current" = Degraded ] && [ "$want" != Degraded ]; }; then
      show "$ns" "$kind" "$name"
      echo "$kind/$name is $current" >&2
      return 1
    fi
    if (( $(date +%s) - start > timeout )); then
      show "$ns" "$kind" "$name"
      echo "$kind/$name is not $want after ${timeout}s (it is ${current:-without status})" >&2
      return 1
    fi
    sleep 1
  done
}

# restricted_ns NAME: a new, empty namespace enforcing Pod Security
# "restricted"; one left by an earlier run is deleted first. ModelVersions
# keep a finalizer while no operator answers, so a deletion that stalls has
# theirs removed.
restricted_ns() {
  local ns=$1
  if k get namespace "$ns" >/dev/null 2>&1; then
    say "removing the earlier namespace $ns"
    k delete namespace "$ns" --wait=false >/dev/null
    for _ in $(seq 120); do k get namespace "$ns" >/dev/null 2>&1 || break; sleep 1; done
    if k get namespace "$ns" >/dev/null 2>&1; then
      for mv in $(k -n "$ns" get modelversions -o name 2>/dev/null); do
        k -n "$ns" patch "$mv" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null || true
      done
      k wait --for=delete "namespace/$ns" --timeout=120s >/dev/null || { echo "namespace $ns is stuck terminating" >&2; return 1; }
    fi
  fi
  k create namespace "$ns" >/dev/null
  k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
}
