# The local cluster's DNS, sourced by lib.sh (so by up.sh, down.sh and status.sh): CoreDNS with
# the kubernetes plugin, built from the Go module proxy (./coredns/main.go, the plugins the
# Corefile below uses) and run by PID like the other components.
#
#   answers   cluster.local (Services, their endpoints) and in-addr.arpa/ip6.arpa (their PTRs)
#             from the API server, through its own client certificate (system:coredns) and a
#             ClusterRole that may only list/watch Services, EndpointSlices and Namespaces
#   refuses   nothing is forwarded: this machine reaches no outside resolver, and a test cluster
#             must not send its pods' queries anywhere. Every other name gets NXDOMAIN from
#             CoreDNS itself, so a client fails at once with "name not known" instead of
#             retrying a "temporary failure" (what REFUSED/SERVFAIL read as to glibc)
#   listens   NODE=real: $NODE_IP:53, where pods reach it through the kube-dns Service
#             ($DNS_SERVICE_IP, the 10th address of the service range, as kubeadm has it); the
#             kubelet hands pods that address and the search path <ns>.svc.cluster.local ...
#             NODE=kwok: 127.0.0.1:$DNS_PORT. It runs there too (about 20 MB, ready in under a
#             second): the control plane is then the same in both modes, and a test on simulated
#             nodes can check that a name the operator writes (status.url) resolves to the
#             Service it made.
#   health    127.0.0.1:$DNS_HEALTH_PORT/health (process up), 127.0.0.1:$DNS_READY_PORT/ready
#             (the kubernetes plugin has listed the API once; up.sh waits for it)
# shellcheck shell=bash disable=SC2034,SC2154  # here, PKI, client_ext: from lib.sh and up.sh

CLUSTER_DOMAIN=cluster.local
DNS_SERVICE_IP=10.96.0.10 # up.sh: --service-cluster-ip-range=10.96.0.0/16
DNS_DIR=$STATE/dns
DNS_PORT=$((12353 + PORT_OFFSET))
DNS_HEALTH_PORT=$((12354 + PORT_OFFSET))
DNS_READY_PORT=$((12355 + PORT_OFFSET))

# Where CoreDNS answers: ADDRESS PORT.
dns_listen() {
  if [ "$(node_mode)" = real ]; then echo "$NODE_IP 53"; else echo "127.0.0.1 $DNS_PORT"; fi
}

dns_ready() { [ "$(curl -sS --max-time 3 "http://127.0.0.1:$DNS_READY_PORT/ready" 2>/dev/null)" = OK ]; }

# Builds CoreDNS $COREDNS_VERSION with ./coredns/main.go (static, CGO off) into
#   ${MLOPS_CACHE:-~/.cache/mlops-operator}/coredns/<version>-<main.go digest>/coredns
# and prints that path; a no-op once built. Cold: see the README (Local cluster).
dns_build() {
  local cache=${MLOPS_CACHE:-$HOME/.cache/mlops-operator} digest dir work t0
  digest=$(sha256sum "$here/coredns/main.go" | cut -c1-12)
  dir=$cache/coredns/$COREDNS_VERSION-$digest
  if [ ! -x "$dir/coredns" ]; then
    t0=$(now_us)
    say "building CoreDNS $COREDNS_VERSION from the Go module proxy (cold: a few minutes on 2 cores)" >&2
    work=$cache/coredns/src-$COREDNS_VERSION
    mkdir -p "$dir" "$work"
    cp "$here/coredns/main.go" "$work/main.go"
    printf 'module localcoredns\n\ngo 1.25\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >"$work/go.mod"
    # Several clusters may start at once (MLOPS_CLUSTER_PORT_OFFSET): build to a temporary name, then rename.
    (
      cd "$work"
      export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$HOME/.cache/go-mod} GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
      export GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0
      go mod tidy -e >&2 && go build -ldflags "-s -w" -o "$dir/coredns.$$" . && mv "$dir/coredns.$$" "$dir/coredns"
    ) || die "building CoreDNS $COREDNS_VERSION failed"
    say "  built CoreDNS in $(secs_since "$t0") s" >&2
  fi
  echo "$dir/coredns"
}

# The node's resolv.conf for the kubelet (resolvConf): pods with dnsPolicy Default, and the search
# path of ClusterFirst pods, come from it instead of this host's, whose resolver is off-machine.
dns_node_resolv_conf() {
  mkdir -p "$DNS_DIR"
  printf 'nameserver %s\n' "$NODE_IP" >"$DNS_DIR/node-resolv.conf"
  echo "$DNS_DIR/node-resolv.conf"
}

# Credentials, RBAC, Corefile; then CoreDNS; then (NODE=real) the kube-dns Service. Idempotent.
# Needs up.sh's helpers (cert, write_kubeconfig, start, wait_healthy) and, NODE=real, the node IP up.
dns_up() {
  local bin addr port
  bin=$(dns_build)
  read -r addr port < <(dns_listen)
  mkdir -p "$DNS_DIR"
  [ -s "$PKI/coredns.crt" ] || (umask 077 && cert coredns "/CN=system:coredns" "$client_ext")
  write_kubeconfig "$DNS_DIR/kubeconfig" system:coredns coredns
  kc apply --server-side --force-conflicts --field-manager=mlops-local-cluster -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: mlops-local:coredns
rules:
# What the kubernetes plugin watches with "pods disabled" (no pod records, so no pod access).
- {apiGroups: [""], resources: [services, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: mlops-local:coredns
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "mlops-local:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}
EOF
  # No cache plugin: the answers come from the plugin's watch, so a Service is resolvable as soon
  # as CoreDNS sees it, and a name asked for too early is not remembered as missing.
  # Logged: failures, and every query for a name outside the cluster (the cluster's own misses
  # are the search path at work, several per lookup).
  cat >"$DNS_DIR/Corefile.tmp" <<EOF
$CLUSTER_DOMAIN:$port in-addr.arpa:$port ip6.arpa:$port {
    bind $addr
    errors
    log . {
        class error
    }
    health 127.0.0.1:$DNS_HEALTH_PORT
    ready 127.0.0.1:$DNS_READY_PORT
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $DNS_DIR/kubeconfig mlops-local
        pods disabled
        ttl 5
    }
}
.:$port {
    bind $addr
    errors
    log
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
  mv "$DNS_DIR/Corefile.tmp" "$DNS_DIR/Corefile"
  # Port 53 is below 1024: NODE=real runs as root (up.sh checks), the kwok port is unprivileged.
  start coredns - -- "$bin" -conf "$DNS_DIR/Corefile"
  wait_healthy coredns 60 dns_ready
  [ "$(node_mode)" = real ] || return 0
  # No selector (CoreDNS is no pod): the endpoint is the node IP, like the kubernetes Service's.
  {
    cat <<EOF
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $DNS_SERVICE_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
EOF
    node_ip_endpoints kube-system kube-dns "{name: dns, port: 53, protocol: UDP}" "{name: dns-tcp, port: 53, protocol: TCP}"
  } | kc apply --server-side --force-conflicts --field-manager=mlops-local-cluster -f - >/dev/null
}
