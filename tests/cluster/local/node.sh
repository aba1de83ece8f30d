# The local cluster's real node (NODE=real), sourced by up.sh, down.sh and status.sh after lib.sh.
#
#   containerd (Debian) with runc and the CNI bridge plugin, its own socket/root/state under $STATE
#   kubelet    v1.34 (built by build.sh), node "mlops-node", cgroup v1 (failCgroupV1: false)
#   kube-proxy iptables mode, so Service ClusterIPs route to pods
#   socat      forwards $NODE_IP:<apiserver port> to the API server on loopback, so pods reach it
#              through the `kubernetes` Service (10.96.0.1:443); the API server stays on 127.0.0.1
#
# Addresses are private ranges the project owns on this machine: an interface of its own holds the node
# IP (a bridge without ports: the kernel here has no dummy module), pods get 10.85.0.0/24 on the
# bridge mlopscni0. Only one real node can run on a machine.
# shellcheck shell=bash disable=SC2034

NODE_NAME=mlops-node
NODE_IFACE=mlopsnode0
NODE_IP=10.84.0.10
POD_CIDR=10.85.0.0/24
POD_GATEWAY=10.85.0.1
CNI_BRIDGE=mlopscni0
CNI_BIN_DIR=/usr/lib/cni
CONTAINERD_DIR=$STATE/containerd
CONTAINERD_SOCK=$CONTAINERD_DIR/containerd.sock
KUBELET_DIR=$STATE/kubelet
KUBELET_HEALTHZ_PORT=10248
KUBE_PROXY_HEALTHZ_PORT=10256
# The node's processes, in start order (down.sh stops them in reverse, before the control plane).
NODE_COMPONENTS=(containerd apiserver-forward kubelet kube-proxy kube-router) # kube-router: netpol.sh

# What the cluster runs as: "real" (this node) or "kwok" (simulated nodes), recorded by up.sh.
node_mode() { cat "$STATE/node-mode" 2>/dev/null || echo kwok; }

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

containerd_ready() { [ -S "$CONTAINERD_SOCK" ] && ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }
kubelet_healthy() { [ "$(curl -sS --max-time 3 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" 2>/dev/null)" = ok ]; }
kube_proxy_healthy() { curl -sS --max-time 3 "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz" >/dev/null 2>&1; }
real_node_ready() {
  [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# Debian packages the node needs; installed when missing (CI machines start without them).
node_install_packages() {
  local missing=() sudo=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x "$CNI_BIN_DIR/bridge" ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v socat >/dev/null || missing+=(socat)
  command -v ip >/dev/null || missing+=(iproute2)
  [ ${#missing[@]} -gt 0 ] || return 0
  say "installing ${missing[*]} (apt)"
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Kernel settings pods and Services need: forwarding, bridged traffic through iptables.
node_kernel() {
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null ||
    die "bridge netfilter is not available (modprobe br_netfilter failed); Services cannot route"
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
}

node_network() {
  if ip link show "$NODE_IFACE" >/dev/null 2>&1; then
    local owner
    owner=$(cat "/run/$NODE_IFACE.owner" 2>/dev/null || true)
    [ -z "$owner" ] || [ "$owner" = "$STATE" ] ||
      die "a real node of another cluster ($owner) runs on this machine; stop it first (MLOPS_CLUSTER_STATE=$owner down.sh)"
  else
    ip link add "$NODE_IFACE" type bridge # a port-less bridge: a local address (no dummy module here)
    ip addr add "$NODE_IP/32" dev "$NODE_IFACE"
  fi
  ip link set "$NODE_IFACE" up
  echo "$STATE" >"/run/$NODE_IFACE.owner"
  mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
  # bridge + host-local IPAM; firewall lets pod traffic through a FORWARD policy of DROP (dockerd
  # sets one); portmap for hostPort. No masquerade: pods talk only to each other and the node.
  cat >"$STATE/cni/net.d/10-mlops.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "mlops",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "firewall", "backend": "iptables"},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

node_certs() {
  [ -e "$PKI/.node-complete" ] && return 0
  (
    umask 077
    cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "$client_ext"
    cert kubelet-server "/CN=$NODE_NAME" \
      "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
    cert kube-proxy "/CN=system:kube-proxy" "$client_ext"
  )
  touch "$PKI/.node-complete"
}

node_containerd() {
  mkdir -p "$CONTAINERD_DIR/root" "$CONTAINERD_DIR/state"
  cat >"$CONTAINERD_DIR/config.toml" <<EOF
version = 2
root = "$CONTAINERD_DIR/root"
state = "$CONTAINERD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$CONTAINERD_SOCK"
[debug]
  address = "$CONTAINERD_DIR/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/mlops-operator/pause:local"
  enable_unprivileged_ports = true
  # root here lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj below containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$STATE/cni/net.d"
EOF
  start containerd - -- containerd --config "$CONTAINERD_DIR/config.toml" --log-level warn
  wait_healthy containerd 30 containerd_ready
  local img
  for img in pause netcheck; do
    ctr_ images import --snapshotter overlayfs "$BIN/$img.tar" >/dev/null
  done
  say "  imported docker.io/mlops-operator/{pause,netcheck}:local into containerd"
}

# Pods reach the API server through the kubernetes Service; its endpoint is the node IP, where
# socat hands connections to the API server on loopback (TLS end to end; 10.96.0.1 is in its SANs).
node_apiserver_forward() {
  mkdir -p "$STATE/bin"
  ln -sf "$(command -v socat)" "$STATE/bin/socat" # argv[0] under $STATE marks the process as ours
  start apiserver-forward - -- "$STATE/bin/socat" \
    "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP,reuseaddr,fork" "TCP:127.0.0.1:$APISERVER_PORT"
  node_ip_endpoints default kubernetes "{name: https, port: $APISERVER_PORT, protocol: TCP}" |
    kc apply --server-side --force-conflicts --field-manager=mlops-local-cluster -f - >/dev/null
}

# node_ip_endpoints NAMESPACE SERVICE PORT...: the EndpointSlice (YAML) of a Service served by a
# process on the node itself (no pod to select), the node IP its one endpoint.
node_ip_endpoints() {
  local port
  cat <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $2
  namespace: $1
  labels:
    kubernetes.io/service-name: $2
    endpointslice.kubernetes.io/managed-by: mlops-local-cluster
addressType: IPv4
endpoints:
- addresses: [$NODE_IP]
  conditions: {ready: true}
ports:
EOF
  for port in "${@:3}"; do echo "- $port"; done
}

node_kubelet() {
  mkdir -p "$KUBELET_DIR"
  write_kubeconfig "$STATE/kubeconfigs/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet-client
  cat >"$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This VM runs cgroup v1: kubelet 1.34 accepts it with a warning; say so explicitly.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
# Pods resolve through CoreDNS (dns.sh), never through this host's resolver.
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $(dns_node_resolv_conf)
failSwapOn: false
serializeImagePulls: false
# A test node on a shared disk: do not evict pods for disk pressure a laptop or CI VM always has.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
maxPods: 60
EOF
  start kubelet - -- "$BIN/kubelet" \
    --config="$STATE/kubelet-config.yaml" \
    --kubeconfig="$STATE/kubeconfigs/kubelet.kubeconfig" \
    --root-dir="$KUBELET_DIR" \
    --cert-dir="$KUBELET_DIR/pki" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --node-labels="type=real,node.kubernetes.io/instance-type=local" \
    --v=1
  wait_healthy kubelet 60 kubelet_healthy
}

node_kube_proxy() {
  write_kubeconfig "$STATE/kubeconfigs/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
  cat >"$STATE/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kubeconfigs/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
# Leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0}
EOF
  start kube-proxy - -- "$BIN/kube-proxy" --config="$STATE/kube-proxy-config.yaml" --v=1
  wait_healthy kube-proxy 60 kube_proxy_healthy
}

node_up() {
  node_install_packages
  node_kernel
  node_network
  node_certs
  node_containerd
  node_apiserver_forward
  node_kubelet
  node_kube_proxy
  wait_healthy kubelet 90 real_node_ready
}

# ---------------------------------------------------------------- teardown (down.sh)

# down.sh, with the controllers already stopped (nothing recreates a pod): the node's pods are
# force-deleted so the kubelet stops their containers and sandboxes the normal way (CNI DEL, netns
# removed), then whatever is left is killed through containerd.
node_drain() {
  apiserver_ready && kubelet_healthy || return 0
  local t0
  t0=$(now_us)
  kc delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
    --force --grace-period=0 --wait=false >/dev/null 2>&1 || true
  while containerd_ready && [ -n "$(ctr_ tasks ls -q 2>/dev/null)" ]; do
    (($(now_us) - t0 < 30000000)) || { warn "containers still running after 30 s; killing them"; break; }
    sleep 0.5
  done
  say "drained the node's pods ($(secs_since "$t0") s)"
}

node_kill_containers() {
  containerd_ready || return 0
  local ids id
  ids=$(ctr_ tasks ls -q 2>/dev/null || true)
  [ -n "$ids" ] || return 0
  for id in $ids; do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  sleep 0.5
  for id in $ids; do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
  say "killed $(wc -w <<<"$ids") containers"
}

# After containerd stopped: leftover shims and pod processes, mounts under $STATE, the network.
node_cleanup() {
  local m p n=0
  # Shims outlive containerd by design; ours name our socket. Pod processes live in the kubelet's
  # kubepods cgroups (only this node's kubelet makes those on this machine).
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
    kill -KILL "$p" 2>/dev/null || true
  done
  for p in $(grep -l ':/kubepods' /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3); do
    kill -KILL "$p" 2>/dev/null || true
  done
  while read -r m; do
    [ -n "$m" ] || continue
    umount -l "$m" 2>/dev/null && n=$((n + 1))
  done < <(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r)
  [ $n = 0 ] || say "unmounted $n mounts under $STATE"
  if [ "$(cat "/run/$NODE_IFACE.owner" 2>/dev/null)" = "$STATE" ]; then
    [ ! -x "$(expected_bin_dir)/kube-proxy" ] || "$(expected_bin_dir)/kube-proxy" --cleanup >/dev/null 2>&1 || true
    ip link del "$NODE_IFACE" 2>/dev/null || true
    ip link del "$CNI_BRIDGE" 2>/dev/null || true
    # The CNI firewall plugin's chains (CNI-FORWARD, CNI-ADMIN) and their jump from FORWARD.
    iptables -D FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD 2>/dev/null || true
    for chain in CNI-FORWARD CNI-ADMIN; do
      iptables -F "$chain" 2>/dev/null && iptables -X "$chain" 2>/dev/null || true
    done
    # The kubelet's own chains (KUBE-FIREWALL guards 127.0.0.0/8; the canaries detect flushes).
    for ipt in iptables ip6tables; do
      command -v "$ipt" >/dev/null || continue
      "$ipt" -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
      "$ipt" -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
      "$ipt" -F KUBE-FIREWALL 2>/dev/null && "$ipt" -X KUBE-FIREWALL 2>/dev/null || true
      for table in filter nat mangle; do
        for chain in KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
          "$ipt" -t "$table" -F "$chain" 2>/dev/null && "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
        done
      done
    done
    rm -f "/run/$NODE_IFACE.owner"
    say "removed the node network ($NODE_IFACE, $CNI_BRIDGE, kube-proxy and CNI iptables rules)"
  fi
}
