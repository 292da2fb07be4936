#!/usr/bin/env bash
# Starts a real, local Kubernetes control plane on loopback:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and KWOK
#   with a few fake nodes, so pods get scheduled, become Running/Ready and
#   Job pods complete, without a container runtime.
# State (certs, etcd data, logs, pids, kubeconfig) lives in
# ${HONE_CLUSTER_DIR:-/tmp/hone-cluster}. Idempotent: when the cluster is
# already up and healthy it only prints the kubeconfig. The last line on
# stdout is `export KUBECONFIG=...`, so `eval "$(hack/cluster/up.sh)"` works.
# Stop it with hack/cluster/down.sh.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D="$HONE_CLUSTER_DIR"
PKI="$D/pki"
LOGS="$D/logs"
PIDS="$D/pids"
KCFG="$D/kubeconfig"
MARKER="$D/.hone-cluster"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
KUBECTL="$K8S_BIN/kubectl"
NODES=${HONE_CLUSTER_NODES:-3}
SERVER="https://127.0.0.1:$HONE_APISERVER_PORT"

kc() { "$KUBECTL" --kubeconfig "$KCFG" "$@"; }

pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

tail_log() {
  local f="$LOGS/$1.log"
  if [ -f "$f" ]; then
    printf '[cluster] ---- last lines of %s ----\n' "$f" >&2
    tail -n "${2:-40}" "$f" >&2
    printf '[cluster] ----\n' >&2
  fi
}

fail() { # COMPONENT MESSAGE
  local c=$1; shift
  tail_log "$c"
  die "$* (full log: $LOGS/$c.log; stop the rest with hack/cluster/down.sh)"
}

# wait_for COMPONENT WHAT CMD...: polls CMD until it succeeds, the component
# dies, or HONE_CLUSTER_TIMEOUT runs out.
wait_for() {
  local c=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + HONE_CLUSTER_TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    alive "$c" || fail "$c" "$c exited while waiting for $what"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$c" "timed out after ${HONE_CLUSTER_TIMEOUT}s waiting for $what"
    sleep 1
  done
}

all_alive() { local c; for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done; }

print_kubeconfig() {
  log "cluster is up (kubernetes v$KUBE_VERSION, $NODES KWOK nodes); state in $D"
  echo "export KUBECONFIG=$KCFG"
}

# ------------------------------------------------------- already running?
if [ -f "$MARKER" ]; then
  if all_alive && kc get --raw /readyz >/dev/null 2>&1; then
    print_kubeconfig
    exit 0
  fi
  log "found a stale or half-started cluster in $D: stopping it first"
  "$CLUSTER_HACK/down.sh"
elif [ -e "$D" ] && [ -n "$(ls -A "$D" 2>/dev/null)" ]; then
  die "$D exists and was not made by up.sh; remove it or set HONE_CLUSTER_DIR"
fi

# ------------------------------------------------------------ prerequisites
need_pkg() { # COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing $2 (apt-get)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null ||
      die "could not install $2"
  else
    die "$1 is needed: install the $2 package"
  fi
}
need_pkg openssl openssl
need_pkg curl curl
need_pkg setsid util-linux

"$CLUSTER_HACK/build.sh"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$HONE_APISERVER_PORT" "$HONE_ETCD_PORT" "$HONE_ETCD_PEER_PORT" "$HONE_KCM_PORT" "$HONE_SCHED_PORT" "$HONE_KWOK_PORT"; do
  port_busy "$p" && die "port 127.0.0.1:$p is already in use (another cluster? see HONE_*_PORT in hack/cluster/lib.sh)"
done

mkdir -p "$PKI" "$LOGS" "$PIDS" "$D/etcd"
chmod 700 "$D"
echo "made by hack/cluster/up.sh; removed by hack/cluster/down.sh" > "$MARKER"

# -------------------------------------------------------------------- certs
log "generating certificates in $PKI"
ossl() { openssl "$@" 2>>"$LOGS/openssl.log" || die "openssl $1 failed (see $LOGS/openssl.log)"; }
ossl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
  -days 3650 -subj "/CN=hone-local-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

# cert NAME SUBJECT EKU [SAN]
cert() {
  local name=$1 subj=$2 eku=$3 san=${4:-}
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } > "$ext"
  ossl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj"
  ossl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$ext" -out "$PKI/$name.crt"
  rm -f "$PKI/$name.csr" "$ext"
}
cert apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
cert admin "/O=system:masters/CN=hone-admin" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kwok "/O=system:masters/CN=kwok" clientAuth
# The service-account token signing key pair.
ossl genrsa -out "$PKI/sa.key" 2048
ossl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
chmod 600 "$PKI"/*.key

# kubeconfig FILE USER
kubeconfig() {
  local f=$1 user=$2
  rm -f "$f"
  "$KUBECTL" --kubeconfig "$f" config set-cluster hone --server "$SERVER" \
    --certificate-authority "$PKI/ca.crt" --embed-certs=true >/dev/null
  "$KUBECTL" --kubeconfig "$f" config set-credentials "$user" \
    --client-certificate "$PKI/$user.crt" --client-key "$PKI/$user.key" --embed-certs=true >/dev/null
  "$KUBECTL" --kubeconfig "$f" config set-context hone --cluster hone --user "$user" >/dev/null
  "$KUBECTL" --kubeconfig "$f" config use-context hone >/dev/null
  chmod 600 "$f"
}
kubeconfig "$KCFG" admin
kubeconfig "$D/controller-manager.kubeconfig" controller-manager
kubeconfig "$D/scheduler.kubeconfig" scheduler
kubeconfig "$D/kwok.kubeconfig" kwok

# --------------------------------------------------------------- processes
# start NAME BINARY ARGS...: runs it in its own session, logs to a file and
# records its pid (down.sh stops exactly these pids).
start() {
  local name=$1; shift
  log "starting $name"
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  echo $! > "$PIDS/$name.pid"
  echo "$1" > "$PIDS/$name.bin"
}

start etcd "$ETCD_BIN/etcd" \
  --name hone --data-dir "$D/etcd" \
  --listen-client-urls "http://127.0.0.1:$HONE_ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$HONE_ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$HONE_ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$HONE_ETCD_PEER_PORT" \
  --initial-cluster "hone=http://127.0.0.1:$HONE_ETCD_PEER_PORT" \
  --quota-backend-bytes 2147483648 \
  --unsafe-no-fsync=true
wait_for etcd "etcd health" curl -fsS --max-time 2 "http://127.0.0.1:$HONE_ETCD_PORT/health"

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$HONE_APISERVER_PORT" \
  --etcd-servers "http://127.0.0.1:$HONE_ETCD_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction,PodSecurity \
  --allow-privileged=true \
  --profiling=false \
  --endpoint-reconciler-type none \
  --v 1
wait_for kube-apiserver "kube-apiserver /readyz" kc get --raw /readyz

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$D/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$D/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$D/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$HONE_KCM_PORT" \
  --controllers '*' \
  --use-service-account-credentials=true \
  --service-account-private-key-file "$PKI/sa.key" \
  --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --leader-elect=false \
  --profiling=false \
  --v 1

start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$D/scheduler.kubeconfig" \
  --authentication-kubeconfig "$D/scheduler.kubeconfig" \
  --authorization-kubeconfig "$D/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$HONE_SCHED_PORT" \
  --leader-elect=false \
  --profiling=false \
  --v 1

# Fake pod IPs come from a loopback range, so nothing that dials a pod IP
# ever leaves the machine.
start kwok "$KWOK_BIN/kwok" \
  --kubeconfig "$D/kwok.kubeconfig" \
  --config "$KWOK_STAGES" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-ip 127.0.0.1 \
  --cidr 127.16.0.0/16 \
  --node-lease-duration-seconds 40 \
  --server-address "127.0.0.1:$HONE_KWOK_PORT"

wait_for kube-controller-manager "kube-controller-manager /healthz" \
  curl -fsSk --max-time 2 "https://127.0.0.1:$HONE_KCM_PORT/healthz"
wait_for kube-scheduler "kube-scheduler /healthz" \
  curl -fsSk --max-time 2 "https://127.0.0.1:$HONE_SCHED_PORT/healthz"

# ------------------------------------------------------------------- nodes
# KWOK manages nodes annotated kwok.x-k8s.io/node=fake; the last one also
# advertises a fake nvidia.com/gpu capacity.
log "creating $NODES KWOK nodes"
nodes_yaml() {
  local i gpu_label gpu_res
  for ((i = 0; i < NODES; i++)); do
    gpu_label="" gpu_res=""
    if [ "$i" -eq $((NODES - 1)) ]; then
      gpu_label='nvidia.com/gpu.present: "true"'
      gpu_res='nvidia.com/gpu: "8"'
    fi
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: hone-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: hone-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: zone-$((i % 2))
    $gpu_label
status:
  allocatable: &res
    cpu: "32"
    memory: 128Gi
    ephemeral-storage: 500Gi
    pods: "110"
    $gpu_res
  capacity: *res
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
    kubeProxyVersion: fake
EOF
  done
}
nodes_yaml | kc apply -f - >/dev/null || fail kwok "could not create the KWOK nodes"

all_nodes_ready() {
  [ "$(kc get nodes -o jsonpath='{range .items[*]}{range .status.conditions[?(@.type=="Ready")]}{.status}{"\n"}{end}{end}' |
    grep -c '^True$')" -ge "$NODES" ]
}
wait_for kwok "$NODES nodes Ready" all_nodes_ready
wait_for kube-controller-manager "the default serviceaccount" kc -n default get serviceaccount default

all_alive || die "a component exited during start-up; see $LOGS"
print_kubeconfig
