# Shared settings for hack/cluster/*.sh. Sourced, not run.
# shellcheck shell=bash

CLUSTER_HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLUSTER_HACK/../.." && pwd)
# shellcheck source=../versions.env
. "$REPO_ROOT/hack/versions.env"

HONE_CACHE=${HONE_CACHE:-$HOME/.cache/hone}
K8S_BIN="$HONE_CACHE/k8s-$KUBE_VERSION/bin"
ETCD_BIN="$HONE_CACHE/etcd-$ETCD_VERSION/bin"
KWOK_HOME="$HONE_CACHE/kwok-$KWOK_VERSION"
KWOK_BIN="$KWOK_HOME/bin"
KWOK_STAGES="$KWOK_HOME/stages.yaml"

HONE_CLUSTER_DIR=${HONE_CLUSTER_DIR:-/tmp/hone-cluster}
# Everything listens on loopback only. Ports can be moved if they clash.
HONE_APISERVER_PORT=${HONE_APISERVER_PORT:-6443}
HONE_ETCD_PORT=${HONE_ETCD_PORT:-2379}
HONE_ETCD_PEER_PORT=${HONE_ETCD_PEER_PORT:-2380}
HONE_KCM_PORT=${HONE_KCM_PORT:-10257}
HONE_SCHED_PORT=${HONE_SCHED_PORT:-10259}
HONE_KWOK_PORT=${HONE_KWOK_PORT:-10247}
# Fake addresses: KWOK gives pods IPs from HONE_POD_CIDR, Services get
# ClusterIPs from HONE_SERVICE_CIDR. Nothing listens on them (no kube-proxy,
# no real pods), and up.sh adds local `unreachable` routes for both, so an
# accidental dial fails at once instead of leaving the machine.
HONE_POD_CIDR=${HONE_POD_CIDR:-10.244.0.0/16}
HONE_SERVICE_CIDR=${HONE_SERVICE_CIDR:-10.96.0.0/16}
# Bound on every readiness wait, in seconds.
HONE_CLUSTER_TIMEOUT=${HONE_CLUSTER_TIMEOUT:-120}

# The go builds must never fetch a toolchain or anything but modules.
export GOTOOLCHAIN=local
export CGO_ENABLED=0

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# Binaries up.sh needs, as "path" lines.
cluster_binaries() {
  printf '%s\n' \
    "$ETCD_BIN/etcd" \
    "$K8S_BIN/kube-apiserver" \
    "$K8S_BIN/kube-controller-manager" \
    "$K8S_BIN/kube-scheduler" \
    "$K8S_BIN/kubectl" \
    "$KWOK_BIN/kwok" \
    "$KWOK_STAGES"
}
