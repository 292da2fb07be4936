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
#
# NODE=real (make cluster-up NODE=real) adds a real node on this machine:
# containerd, kubelet, kube-proxy, a CNI bridge and CoreDNS (see node.sh).
# The apiserver then listens on the bridge's address ($HONE_NODE_IP) instead
# of 127.0.0.1, so that pods reach it too. The node is labelled and tainted
# hone.dev/node=real: pods meant for it select and tolerate that; everything
# else still lands on the KWOK nodes.
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
API_ADDR=127.0.0.1
KWOK_CIDR=$HONE_POD_CIDR
MODE=${NODE:-kwok}
if [ "$NODE" = real ]; then
  COMPONENTS+=(containerd kubelet kube-proxy)
  API_ADDR=$HONE_NODE_IP
  SERVER="https://$HONE_NODE_IP:$HONE_APISERVER_PORT"
  KWOK_CIDR=$HONE_KWOK_POD_CIDR
  # shellcheck source=node.sh
  . "$CLUSTER_HACK/node.sh"
fi

kc() { "$KUBECTL" --kubeconfig "$KCFG" "$@"; }

pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

tail_log() {
  local f="$LOGS/$1.log"
  if [ -f "$f" ]; then
    printf '[cluster] ---- last lines of %s ----\n' "$f" >&2
    grep -v 'FLAG: --' "$f" | tail -n "${2:-40}" >&2
    printf '[cluster] ----\n' >&2
  fi
}

# On failure: show the log, stop what was started, keep the logs.
fail() { # COMPONENT MESSAGE
  local c=$1; shift
  tail_log "$c"
  "$CLUSTER_HACK/down.sh" --keep-logs || true
  die "$* (logs kept in $LOGS; the next up.sh or down.sh clears them)"
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
  local extra=""
  [ "$NODE" != real ] || extra=", real node $HONE_NODE_NAME (label and taint hone.dev/node=real)"
  log "cluster is up (kubernetes v$KUBE_VERSION, $NODES KWOK nodes$extra); state in $D"
  echo "export KUBECONFIG=$KCFG"
}

# ------------------------------------------------------- already running?
if [ -f "$MARKER" ]; then
  if [ "$(cat "$D/mode" 2>/dev/null || echo kwok)" = "$MODE" ] && all_alive && kc get --raw /readyz >/dev/null 2>&1; then
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
[ "$NODE" != real ] || node_prereqs

"$CLUSTER_HACK/build.sh"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$HONE_APISERVER_PORT" "$HONE_ETCD_PORT" "$HONE_ETCD_PEER_PORT" "$HONE_KCM_PORT" "$HONE_SCHED_PORT" "$HONE_KWOK_PORT"; do
  port_busy "$p" && die "port 127.0.0.1:$p is already in use (another cluster? see HONE_*_PORT in hack/cluster/lib.sh)"
done

mkdir -p "$PKI" "$LOGS" "$PIDS" "$D/etcd"
chmod 700 "$D"
echo "made by hack/cluster/up.sh; removed by hack/cluster/down.sh" > "$MARKER"
echo "$MODE" > "$D/mode"

# ------------------------------------------------------------------ routes
# Pod and Service IPs here are bookkeeping only. Make any dial to them fail
# locally (EHOSTUNREACH) rather than go out through the default gateway.
# Only where that range would otherwise leave through a gateway; recorded so
# down.sh removes exactly these routes.
: > "$D/routes"
for cidr in "$HONE_POD_CIDR" "$HONE_SERVICE_CIDR"; do
  command -v ip >/dev/null || { log "warning: no ip command: cannot guard $cidr; nothing may dial pod or service IPs"; break; }
  probe="${cidr%/*}"; probe="${probe%.*}.$(( ${probe##*.} + 1 ))"
  ip route get "$probe" 2>/dev/null | grep -q ' via ' || continue
  if ip route add unreachable "$cidr" 2>/dev/null; then
    echo "$cidr" >> "$D/routes"
  else
    log "warning: could not add an unreachable route for $cidr (not root?): nothing may dial pod or service IPs"
  fi
done

# The real node's bridge, after the routes above: its /24 is more specific
# than the pod range's unreachable route, so only the node's pods are reachable.
[ "$NODE" != real ] || node_network_up

# -------------------------------------------------------------------- certs
log "generating certificates in $PKI"
ossl() { openssl "$@" 2>>"$LOGS/openssl.log" || die "openssl $1 failed (see $LOGS/openssl.log)"; }
ca() { # NAME CN
  ossl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.crt" \
    -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
ca ca hone-local-ca
# The front proxy (aggregated APIs) has a CA of its own, as in kubeadm.
ca front-proxy-ca hone-front-proxy-ca

# cert NAME SUBJECT EKU [SAN], signed by $SIGNER (default: ca)
cert() {
  local name=$1 subj=$2 eku=$3 san=${4:-} signer=${SIGNER:-ca}
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } > "$ext"
  ossl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj"
  ossl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$signer.crt" -CAkey "$PKI/$signer.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$ext" -out "$PKI/$name.crt"
  rm -f "$PKI/$name.csr" "$ext"
}
# The kubernetes Service gets the first address of the service range.
svc_net=${HONE_SERVICE_CIDR%/*}
kubernetes_svc_ip="${svc_net%.*}.$(( ${svc_net##*.} + 1 ))"
cert apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$kubernetes_svc_ip${NODE:+,IP:$HONE_NODE_IP}"
cert admin "/O=system:masters/CN=hone-admin" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kwok "/O=system:masters/CN=kwok" clientAuth
SIGNER=front-proxy-ca cert front-proxy-client "/CN=front-proxy-client" clientAuth
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
[ "$NODE" != real ] || node_certs

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

# Tier 1 has no endpoints for the kubernetes Service (nothing could use
# them); the real node's pods reach the apiserver through it.
apiserver_extra=(--endpoint-reconciler-type none)
if [ "$NODE" = real ]; then
  apiserver_extra=(
    --endpoint-reconciler-type lease
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt"
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key"
    --kubelet-certificate-authority "$PKI/ca.crt"
    --kubelet-preferred-address-types InternalIP
  )
fi
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --bind-address "$API_ADDR" --advertise-address "$API_ADDR" --secure-port "$HONE_APISERVER_PORT" \
  --etcd-servers "http://127.0.0.1:$HONE_ETCD_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User \
  --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
  --proxy-client-key-file "$PKI/front-proxy-client.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range "$HONE_SERVICE_CIDR" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction,PodSecurity \
  --allow-privileged=true \
  --profiling=false \
  "${apiserver_extra[@]}" \
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
  --service-cluster-ip-range "$HONE_SERVICE_CIDR" \
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

start kwok "$KWOK_BIN/kwok" \
  --kubeconfig "$D/kwok.kubeconfig" \
  --config "$KWOK_STAGES" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-ip 127.0.0.1 \
  --cidr "$KWOK_CIDR" \
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

[ "$NODE" != real ] || node_up

for c in "${COMPONENTS[@]}"; do alive "$c" || fail "$c" "$c exited during start-up"; done
print_kubeconfig
