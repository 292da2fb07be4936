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
COREDNS_BIN="$HONE_CACHE/coredns-$COREDNS_VERSION/bin"

# NODE=real (make cluster-up NODE=real): tier 2, a real node on this machine
# (containerd, kubelet, kube-proxy, CNI bridge, CoreDNS) besides tier 1.
# Unset: tier 1 only (control plane and KWOK nodes).
NODE=${NODE:-}
case "$NODE" in ""|real) ;; *) printf '[cluster] ERROR: NODE=%s: only NODE=real or unset\n' "$NODE" >&2; exit 1 ;; esac

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
# Tier 2 (NODE=real): the node, its bridge and the pods' subnet. The bridge's
# address (the pods' gateway) is where the apiserver and the kubelet listen,
# so pods reach the API without any outside address. KWOK's fake pod IPs move
# to the upper half of HONE_POD_CIDR so they never look like real pods.
HONE_NODE_NAME=${HONE_NODE_NAME:-hone-real}
HONE_BRIDGE=${HONE_BRIDGE:-hone0}
HONE_NODE_POD_CIDR=${HONE_NODE_POD_CIDR:-10.244.0.0/24}
HONE_NODE_IP=${HONE_NODE_IP:-10.244.0.1}
HONE_KWOK_POD_CIDR=${HONE_KWOK_POD_CIDR:-10.244.128.0/17}
HONE_DNS_IP=${HONE_DNS_IP:-10.96.0.10}
# containerd's image store: kept across cluster-down/up (a cache);
# `hack/cluster/down.sh --purge` removes it.
HONE_CONTAINERD_ROOT=${HONE_CONTAINERD_ROOT:-/var/lib/hone/containerd}
IMAGE_REGISTRY=${IMAGE_REGISTRY:-hone.local}
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

# Binaries tier 2 (NODE=real) needs on top, as "path" lines.
node_binaries() {
  printf '%s\n' \
    "$K8S_BIN/kubelet" \
    "$K8S_BIN/kube-proxy" \
    "$COREDNS_BIN/coredns"
}
