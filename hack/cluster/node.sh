# Tier 2 (NODE=real): a real node on this machine, next to tier 1's control
# plane. Sourced by up.sh and down.sh (which define D, PKI, LOGS, PIDS, KCFG,
# start, cert, kubeconfig, wait_for, fail, kc); not run on its own.
#
# What it adds to the host, and how down.sh undoes it (recorded under $D/node):
#   - a bridge $HONE_BRIDGE with $HONE_NODE_IP/24: the pods' gateway, and the
#     address the apiserver and kubelet listen on (pods reach the API here);
#     deleted by down.sh (its routes go with it).
#   - an iptables chain HONE-FORWARD (filter) jumped to from FORWARD: pods may
#     talk to each other and to this machine, never leave it; removed by down.sh.
#     kube-proxy's own KUBE-* chains are removed by `kube-proxy --cleanup`.
#   - sysctls net.ipv4.ip_forward=1, net.bridge.bridge-nf-call-iptables=1;
#     the old values are restored by down.sh.
#   - containerd (own config, socket and state under $D/containerd; images in
#     $HONE_CONTAINERD_ROOT, kept across down/up unless down.sh --purge),
#     kubelet (root dir $D/kubelet, cgroups under /kubepods), kube-proxy.
#     down.sh kills the pods' containers, unmounts their network namespaces and
#     volumes, removes the kubepods cgroups and /var/log/containers links.
# shellcheck shell=bash

NODE_STATE="$D/node"
CTD_DIR="$D/containerd"
CTD_SOCK="$CTD_DIR/containerd.sock"
CNI_DIR="$D/cni"
KUBELET_DIR="$D/kubelet"
CNI_BIN=${HONE_CNI_BIN:-/usr/lib/cni}
# The node's pods get addresses from HONE_NODE_POD_CIDR on the bridge; its
# first address is the gateway and the node's own address.
node_prefix() { echo "${HONE_NODE_POD_CIDR#*/}"; }
ctr_() { ctr --address "$CTD_SOCK" -n k8s.io "$@"; }

# ---------------------------------------------------------------- up: checks
node_prereqs() {
  [ "$(id -u)" = 0 ] || die "NODE=real needs root (containerd, kubelet, bridges, iptables)"
  need_pkg containerd containerd
  need_pkg runc runc
  need_pkg iptables iptables
  need_pkg conntrack conntrack
  need_pkg ip iproute2
  need_pkg python3 python3
  need_pkg gcc gcc
  [ -x "$CNI_BIN/bridge" ] || need_pkg /usr/lib/cni/bridge containernetworking-plugins
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || die "no cgroup hierarchy found"
  ip link show "$HONE_BRIDGE" >/dev/null 2>&1 && die "interface $HONE_BRIDGE already exists (another cluster? set HONE_BRIDGE)"
  port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
  local p
  for p in 10248 10249 10256; do
    port_busy "$p" && die "port 127.0.0.1:$p (kubelet/kube-proxy) is already in use"
  done
  return 0
}

# -------------------------------------------------------------- up: network
# Before the apiserver starts: it listens on the bridge's address.
node_network_up() {
  mkdir -p "$NODE_STATE"
  log "real node: bridge $HONE_BRIDGE ($HONE_NODE_IP/$(node_prefix)), forwarding rules, sysctls"
  # Sysctls, old values first (restored by down.sh).
  local k
  : > "$NODE_STATE/sysctl"
  for k in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
    echo "$k=$(sysctl -n "$k")" >> "$NODE_STATE/sysctl"
    sysctl -qw "$k=1" || die "could not set $k=1"
  done
  ip link add "$HONE_BRIDGE" type bridge || die "could not create bridge $HONE_BRIDGE"
  echo "$HONE_BRIDGE" > "$NODE_STATE/bridge"
  ip addr add "$HONE_NODE_IP/$(node_prefix)" dev "$HONE_BRIDGE"
  ip link set "$HONE_BRIDGE" up
  # This machine reaches Services the way pods do: kube-proxy's OUTPUT rules
  # rewrite a ClusterIP to a pod address on the bridge. The two halves of the
  # service range on the bridge (more specific than its unreachable guard)
  # make the first route lookup succeed; nothing for that range leaves the
  # machine, and the routes go away with the bridge.
  local half
  for half in $(python3 -c 'import ipaddress, sys; print(*ipaddress.ip_network(sys.argv[1]).subnets())' \
    "$HONE_SERVICE_CIDR"); do
    ip route add "$half" dev "$HONE_BRIDGE" src "$HONE_NODE_IP" || die "could not route $half to $HONE_BRIDGE"
  done
  # Pods: to each other and to this machine only. Anything a pod sends that
  # would leave through another interface is rejected.
  if iptables -w -S 2>/dev/null | grep -q -- '-N KUBE-'; then
    log "warning: iptables already has KUBE-* chains (another node, or a crashed run): down.sh will remove them"
  fi
  iptables -w -N HONE-FORWARD
  echo HONE-FORWARD > "$NODE_STATE/iptables"
  iptables -w -A HONE-FORWARD -i "$HONE_BRIDGE" -o "$HONE_BRIDGE" -j ACCEPT
  iptables -w -A HONE-FORWARD -i "$HONE_BRIDGE" -j REJECT --reject-with icmp-net-prohibited
  iptables -w -A HONE-FORWARD -o "$HONE_BRIDGE" -j REJECT --reject-with icmp-net-prohibited
  iptables -w -I FORWARD 1 -j HONE-FORWARD
  # Host state that kubelet and containerd create if missing: remember what
  # existed so down.sh removes only what this cluster made.
  local path
  : > "$NODE_STATE/created"
  for path in /var/log/containers /run/containerd /var/lib/cni; do
    [ -e "$path" ] || echo "$path" >> "$NODE_STATE/created"
  done
  for path in /sys/fs/cgroup/*/kubepods; do
    [ -e "$path" ] && die "$path already exists: is another kubelet running on this machine?"
  done
  return 0
}

# ---------------------------------------------------------------- up: certs
node_certs() {
  cert kubelet "/CN=system:node:$HONE_NODE_NAME" serverAuth "DNS:$HONE_NODE_NAME,IP:$HONE_NODE_IP"
  cert kubelet-client "/O=system:nodes/CN=system:node:$HONE_NODE_NAME" clientAuth
  cert kube-proxy "/CN=system:kube-proxy" clientAuth
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  chmod 600 "$PKI"/*.key
  kubeconfig "$D/kubelet.kubeconfig" kubelet-client
  kubeconfig "$D/kube-proxy.kubeconfig" kube-proxy
}

# ----------------------------------------------------------- up: containerd
node_containerd() {
  mkdir -p "$CTD_DIR/certs.d" "$CNI_DIR/net.d" "$CNI_DIR/ipam" "$HONE_CONTAINERD_ROOT"
  cat > "$CNI_DIR/net.d/10-hone.conflist" <<EOF2
{
  "cniVersion": "0.4.0",
  "name": "hone",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$HONE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CNI_DIR/ipam",
        "ranges": [[{ "subnet": "$HONE_NODE_POD_CIDR", "gateway": "$HONE_NODE_IP" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
EOF2
  cat > "$CTD_DIR/config.toml" <<EOF2
# Written by hack/cluster/up.sh (NODE=real). Nothing is ever pulled: images
# are built here and imported (hack/images), and every registry request goes
# to a proxy on loopback that does not exist (see HTTPS_PROXY in up.sh).
version = 2
root = "$HONE_CONTAINERD_ROOT"
state = "$CTD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CTD_SOCK"

[ttrpc]
  address = "$CTD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTD_DIR/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMAGE_REGISTRY/pause:1"
  netns_mounts_under_state_dir = true
  # Root here lacks CAP_SYS_RESOURCE, so no process may lower its
  # oom_score_adj (the pause container asks for -998): clamp instead.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "${HONE_RUNC:-$(command -v runc)}"
        Root = "$CTD_DIR/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$CNI_DIR/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CTD_DIR/certs.d"
EOF2
  # A registry request would go to the proxy on 127.0.0.1:9 (nothing listens
  # there), never to an outside address; not even a DNS lookup is made.
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    start containerd "$(command -v containerd)" --config "$CTD_DIR/config.toml" --log-level warn
  wait_for containerd "containerd" ctr_ version
}

node_images() {
  log "building and importing the node images (pause, coredns, testbox)"
  CONTAINERD_SOCK="$CTD_SOCK" "$REPO_ROOT/hack/images/node-images.sh" 2>>"$LOGS/images.log" ||
    fail containerd "could not build or import the node images (see $LOGS/images.log)"
}

# ------------------------------------------------------ up: kubelet, proxy
node_kubelet() {
  mkdir -p "$KUBELET_DIR/pod-logs"
  local dns_ip=$HONE_DNS_IP
  cat > "$D/kubelet.yaml" <<EOF2
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $HONE_NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $PKI/ca.crt }
authorization: { mode: Webhook }
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
containerRuntimeEndpoint: unix://$CTD_SOCK
cgroupDriver: cgroupfs
# This machine has cgroup v1 (a v2 hierarchy is mounted beside it).
failCgroupV1: false
failSwapOn: false
clusterDNS: [$dns_ip]
clusterDomain: cluster.local
# No host resolv.conf: pods resolve cluster names only, nothing upstream.
resolvConf: ""
podLogsDir: $KUBELET_DIR/pod-logs
# A small shared machine: evict only in earnest, never collect our images.
evictionHard: { memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%" }
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 50
registerNode: true
registerWithTaints:
  - { key: hone.dev/node, value: real, effect: NoSchedule }
serializeImagePulls: false
# Mounted ConfigMaps (the router's weights) refresh within ~10 s instead of
# the default ~1 min, so a canary step reaches the router quickly here.
syncFrequency: 10s
EOF2
  start kubelet "$K8S_BIN/kubelet" \
    --config "$D/kubelet.yaml" \
    --kubeconfig "$D/kubelet.kubeconfig" \
    --hostname-override "$HONE_NODE_NAME" \
    --node-ip "$HONE_NODE_IP" \
    --root-dir "$KUBELET_DIR" \
    --cert-dir "$KUBELET_DIR/pki" \
    --node-labels "hone.dev/node=real" \
    --v 1
}

node_kube_proxy() {
  cat > "$D/kube-proxy.yaml" <<EOF2
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: $D/kube-proxy.kubeconfig }
mode: iptables
hostnameOverride: $HONE_NODE_NAME
bindAddress: $HONE_NODE_IP
clusterCIDR: $HONE_NODE_POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$HONE_NODE_IP/32"]
iptables: { localhostNodePorts: false, masqueradeAll: false }
# Leave the machine's conntrack sysctls alone.
conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s }
EOF2
  start kube-proxy "$K8S_BIN/kube-proxy" --config "$D/kube-proxy.yaml" --v 1
}

node_ready() {
  [ "$(kc get node "$HONE_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# ---------------------------------------------------------------- up: DNS
node_coredns() {
  log "starting CoreDNS ($HONE_DNS_IP) on $HONE_NODE_NAME"
  kc apply -f - >/dev/null <<EOF2 || fail kubelet "could not create CoreDNS"
apiVersion: v1
kind: ServiceAccount
metadata: { name: coredns, namespace: kube-system }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: "system:coredns" }
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: "system:coredns" }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns" }
subjects: [{ kind: ServiceAccount, name: coredns, namespace: kube-system }]
---
apiVersion: v1
kind: ConfigMap
metadata: { name: coredns, namespace: kube-system }
data:
  # Cluster names only: no forward plugin, so nothing leaves this machine.
  Corefile: |
    .:1053 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            ttl 30
        }
        cache 30
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: { k8s-app: kube-dns }
spec:
  replicas: 1
  selector: { matchLabels: { k8s-app: kube-dns } }
  template:
    metadata: { labels: { k8s-app: kube-dns } }
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      nodeSelector: { hone.dev/node: real }
      tolerations: [{ key: hone.dev/node, operator: Equal, value: real, effect: NoSchedule }]
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: { type: RuntimeDefault }
      containers:
        - name: coredns
          image: $IMAGE_REGISTRY/coredns:$COREDNS_VERSION
          imagePullPolicy: Never
          args: [-conf, /etc/coredns/Corefile]
          ports:
            - { name: dns, containerPort: 1053, protocol: UDP }
            - { name: dns-tcp, containerPort: 1053, protocol: TCP }
          readinessProbe: { httpGet: { path: /ready, port: 8181 }, periodSeconds: 2 }
          livenessProbe: { httpGet: { path: /health, port: 8080 }, initialDelaySeconds: 10 }
          resources: { requests: { cpu: 50m, memory: 64Mi }, limits: { memory: 170Mi } }
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: { drop: [ALL] }
          volumeMounts: [{ name: config, mountPath: /etc/coredns, readOnly: true }]
      volumes: [{ name: config, configMap: { name: coredns } }]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: { k8s-app: kube-dns }
spec:
  clusterIP: $HONE_DNS_IP
  selector: { k8s-app: kube-dns }
  ports:
    - { name: dns, port: 53, targetPort: 1053, protocol: UDP }
    - { name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP }
EOF2
}

coredns_available() {
  [ "$(kc -n kube-system get deploy coredns -o jsonpath='{.status.availableReplicas}' 2>/dev/null)" = 1 ]
}

# Everything after the control plane is up.
node_up() {
  node_containerd
  node_images
  node_kubelet
  node_kube_proxy
  wait_for kubelet "node $HONE_NODE_NAME Ready" node_ready
  node_coredns
  wait_for kubelet "CoreDNS Available" coredns_available
}

# ------------------------------------------------------------------- down
# stop_component NAME is down.sh's: stops one recorded pid.

# Kills every container of this node's containerd and records their network
# namespaces (unmounted later with the rest of the mounts).
node_down_containers() {
  [ -S "$CTD_SOCK" ] && alive_pid containerd || return 0
  local ids id
  ids=$(ctr_ tasks ls -q 2>/dev/null || true)
  for id in $ids; do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for id in $ids; do
    for _ in $(seq 1 50); do
      ctr_ tasks ls 2>/dev/null | awk -v id="$id" '$1 == id && $3 == "RUNNING" {found=1} END {exit !found}' || break
      sleep 0.1
    done
    ctr_ tasks rm -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_ containers ls -q 2>/dev/null || true); do
    ctr_ containers rm "$id" >/dev/null 2>&1 || true
  done
  [ -z "$ids" ] || log "killed $(echo "$ids" | wc -w) containers"
}

alive_pid() { local p; p=$(cat "$PIDS/$1.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }

# Shims outlive containerd when a task could not be deleted: stop the ones
# started for this cluster's socket (by pid, matched on their -address).
node_down_shims() {
  local p cmd
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/exe" 2>/dev/null)" = /usr/bin/containerd-shim-runc-v2 ] || continue
    cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case "$cmd" in *"-address $CTD_SOCK "*) kill -KILL "${p#/proc/}" 2>/dev/null || true ;; esac
  done
}

# Unmounts everything under DIR, deepest first (netns bind mounts, rootfs
# overlays, shm, kubelet volumes).
umount_under() {
  local dir=$1 m
  [ -d "$dir" ] || return 0
  findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | sort -r | while read -r m; do
    m=$(printf '%b' "$m")
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
  done || true
}

# kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT), which
# `kube-proxy --cleanup` leaves: the jumps to them, then the chains.
node_down_kubelet_chains() {
  local ipt t rule chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle; do
      "$ipt" -w -t "$t" -S 2>/dev/null | grep -E '^-A .* -j (KUBE-FIREWALL|KUBE-KUBELET-CANARY)( |$)' |
        while read -r rule; do eval "$ipt -w -t $t -D ${rule#-A }" 2>/dev/null || true; done || true
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$ipt" -w -t "$t" -F "$chain" 2>/dev/null && "$ipt" -w -t "$t" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

node_down_host() {
  # Network namespaces and volumes first: their veths go with them.
  umount_under "$D"
  umount_under "$HONE_CONTAINERD_ROOT"
  if [ -f "$NODE_STATE/bridge" ]; then
    ip link del "$(cat "$NODE_STATE/bridge")" 2>/dev/null || true
  fi
  # kube-proxy's chains (KUBE-*, both families), then ours.
  if [ -x "$K8S_BIN/kube-proxy" ] && [ -f "$NODE_STATE/iptables" ]; then
    "$K8S_BIN/kube-proxy" --cleanup --v 0 >/dev/null 2>&1 || true
  fi
  if [ -f "$NODE_STATE/iptables" ]; then
    node_down_kubelet_chains
    while iptables -w -D FORWARD -j HONE-FORWARD 2>/dev/null; do :; done
    iptables -w -F HONE-FORWARD 2>/dev/null || true
    iptables -w -X HONE-FORWARD 2>/dev/null || true
  fi
  if [ -f "$NODE_STATE/sysctl" ]; then
    local kv
    while read -r kv; do [ -z "$kv" ] || sysctl -qw "$kv" 2>/dev/null || true; done < "$NODE_STATE/sysctl"
  fi
  # The pods' cgroups (kubelet's cgroupfs driver puts them under /kubepods).
  local c
  for c in /sys/fs/cgroup/*/kubepods; do
    [ -d "$c" ] || continue
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || log "warning: could not remove all of $c"
  done
  # kubelet's links to our pod logs, the CNI result cache of network "hone".
  local l
  for l in /var/log/containers/*; do
    [ -L "$l" ] && case "$(readlink "$l")" in "$KUBELET_DIR"/*) rm -f "$l" ;; esac
  done
  rm -f /var/lib/cni/results/hone-* 2>/dev/null || true
  if [ -f "$NODE_STATE/created" ]; then
    local path
    while read -r path; do
      [ -n "$path" ] || continue
      case "$path" in
        /run/containerd) rm -rf /run/containerd ;;   # only the shims' sockets of this cluster were there
        *) find "$path" -depth -type d -empty -delete 2>/dev/null || true ;;
      esac
    done < "$NODE_STATE/created"
  fi
  # CRI's own records of the containers just removed.
  rm -rf "$HONE_CONTAINERD_ROOT/io.containerd.grpc.v1.cri/sandboxes" \
    "$HONE_CONTAINERD_ROOT/io.containerd.grpc.v1.cri/containers" 2>/dev/null || true
}
