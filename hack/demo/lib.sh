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
# "restricted"; one left by an earlier run is deleted first. Its ModelVersions
# keep the operator's finalizer until the operator (installed before this
# runs) releases them, which it does in a terminating namespace even when
# their artifact cannot be purged; nothing strips a finalizer by hand.
restricted_ns() {
  local ns=$1
  if k get namespace "$ns" >/dev/null 2>&1; then
    say "removing the earlier namespace $ns"
    k delete namespace "$ns" --wait=false >/dev/null
    if ! k wait --for=delete "namespace/$ns" --timeout=240s >/dev/null 2>&1; then
      echo "namespace $ns is stuck terminating; what is left in it:" >&2
      k -n "$ns" get modelversions -o wide >&2 || true
      echo "ModelVersions wait for the operator to release them: is it running? (kubectl -n ${SYSTEM_NS:-hone-system} get pods)" >&2
      return 1
    fi
  fi
  k create namespace "$ns" >/dev/null
  k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
}
