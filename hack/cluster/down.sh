#!/usr/bin/env bash
# Stops exactly the processes hack/cluster/up.sh started (by the pids it
# recorded) and removes its state dir ${HONE_CLUSTER_DIR:-/tmp/hone-cluster}.
# Harmless when nothing is up. With --keep-logs (what a failed up.sh uses),
# stops everything but leaves the state dir for a look at the logs.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D="$HONE_CLUSTER_DIR"
PIDS="$D/pids"
MARKER="$D/.hone-cluster"
keep=0
case "${1:-}" in
  --keep-logs) keep=1 ;;
  "") ;;
  *) die "usage: $0 [--keep-logs]" ;;
esac

if [ ! -e "$D" ]; then
  log "no cluster in $D: nothing to stop"
  exit 0
fi
[ -f "$MARKER" ] || die "$D was not made by hack/cluster/up.sh (no $MARKER): not touching it"

# is_ours NAME PID: the pid still runs the binary up.sh started (guards
# against a recycled pid).
is_ours() {
  local bin exe
  bin=$(cat "$PIDS/$1.bin" 2>/dev/null) || return 1
  exe=$(readlink "/proc/$2/exe" 2>/dev/null) || return 1
  [ "${exe% (deleted)}" = "$bin" ]
}

stopped=()
# Reverse start order: clients first, etcd last.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  pid=$(cat "$PIDS/$name.pid" 2>/dev/null) || continue
  [[ "$pid" =~ ^[0-9]+$ ]] || continue
  if ! kill -0 "$pid" 2>/dev/null || ! is_ours "$name" "$pid"; then
    continue
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) did not stop in 10s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  stopped+=("$name")
done

# The unreachable routes up.sh added for the fake pod and service ranges.
if [ -f "$D/routes" ]; then
  while read -r cidr; do
    [ -n "$cidr" ] && ip route del unreachable "$cidr" 2>/dev/null || true
  done < "$D/routes"
  rm -f "$D/routes"
fi

what="nothing was running"
[ ${#stopped[@]} -eq 0 ] || what="stopped ${stopped[*]}"
if [ "$keep" = 1 ]; then
  rm -f "$PIDS"/*.pid
  log "$what; kept $D for its logs"
else
  rm -rf "$D"
  log "$what; removed $D"
fi
