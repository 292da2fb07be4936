#!/usr/bin/env bash
# Stops exactly the processes hack/cluster/up.sh started (by the pids it
# recorded) and removes its state dir ${HONE_CLUSTER_DIR:-/tmp/hone-cluster}.
# Harmless when nothing is up. With --keep-logs (what a failed up.sh uses),
# stops everything but leaves the state dir for a look at the logs.
# After NODE=real it also kills the node's containers and undoes its host
# changes (bridge, iptables, sysctls, mounts, cgroups; see node.sh). With
# --purge it also removes the real node's image store ($HONE_CONTAINERD_ROOT).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D="$HONE_CLUSTER_DIR"
PIDS="$D/pids"
MARKER="$D/.hone-cluster"
keep=0 purge=0
for arg in "$@"; do
  case "$arg" in
    --keep-logs) keep=1 ;;
    --purge) purge=1 ;;
    *) die "usage: $0 [--keep-logs] [--purge]" ;;
  esac
done

purge_images() {
  if [ "$purge" = 1 ] && [ -d "$HONE_CONTAINERD_ROOT" ]; then
    if findmnt -rn -o TARGET | grep -q "^$HONE_CONTAINERD_ROOT/"; then
      log "warning: $HONE_CONTAINERD_ROOT still has mounts: not purged"
    else
      rm -rf "$HONE_CONTAINERD_ROOT"
      rmdir "$(dirname "$HONE_CONTAINERD_ROOT")" 2>/dev/null || true
      log "purged the real node's image store $HONE_CONTAINERD_ROOT"
    fi
  fi
}

if [ ! -e "$D" ]; then
  purge_images
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
# stop_component NAME: stops the recorded pid if it still runs our binary.
stop_component() {
  local name=$1 pid
  pid=$(cat "$PIDS/$name.pid" 2>/dev/null) || return 0
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if ! kill -0 "$pid" 2>/dev/null || ! is_ours "$name" "$pid"; then
    return 0
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
}

# The real node (NODE=real) first: kubelet and kube-proxy, then the pods'
# containers, then containerd.
real_node=0
if [ -d "$D/node" ]; then
  real_node=1
  LOGS="$D/logs"
  # shellcheck source=node.sh
  . "$CLUSTER_HACK/node.sh"
  stop_component kubelet
  stop_component kube-proxy
  node_down_containers
  stop_component containerd
  node_down_shims
fi

# Reverse start order: clients first, etcd last.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop_component "$name"
done

# The unreachable routes up.sh added for the fake pod and service ranges.
if [ -f "$D/routes" ]; then
  while read -r cidr; do
    [ -n "$cidr" ] && ip route del unreachable "$cidr" 2>/dev/null || true
  done < "$D/routes"
  rm -f "$D/routes"
fi

# The real node's host changes: mounts, bridge, iptables, sysctls, cgroups.
if [ "$real_node" = 1 ]; then
  node_down_host
  rm -rf "$D/node"
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
purge_images
