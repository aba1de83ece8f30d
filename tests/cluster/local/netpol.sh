# The real node's NetworkPolicy enforcer (NODE=real), sourced by lib.sh: kube-router's network
# policy controller alone (v$KUBE_ROUTER_VERSION from the Go module proxy; no routing, no service
# proxy, no CNI of its own), run by PID on the host like kube-proxy. It turns every NetworkPolicy
# into iptables rules and ipsets for the pods of this node, so a policy really drops packets
# (pods on the CNI bridge cross the FORWARD chain through bridge netfilter, which node.sh enables).
#
# Why not sigs.k8s.io/kube-network-policies (kindnet's): it hands packets to itself through the
# nftables "queue" statement, and this machine's kernel has none (CONFIG_NFT_QUEUE is not set and
# there are no loadable modules): `nft add rule inet t c queue num 100` fails with "Could not
# process rule: No such file or directory". kube-router needs only iptables and ipset, which it has.
#
#   credentials  its own client certificate (CN mlops-local:kube-router) and a ClusterRole that
#                may only read what its informers watch (it starts them all, even for the parts
#                that do not run) and the node
#   listens      nothing: health and metrics servers are off (its health server binds every
#                interface); up.sh waits for its first sync, the KUBE-ROUTER-FORWARD chain
#   cleanup      netpol_cleanup removes its chains, the jumps to them and its ipsets; its own
#                --cleanup-config would also tear down the routing and proxy parts it never ran
# shellcheck shell=bash disable=SC2034,SC2154  # PKI, client_ext, BIN: from lib.sh and up.sh

NETPOL_CHAINS='KUBE-ROUTER-|KUBE-POD-FW-|KUBE-NWPLCY-'

netpol_synced() { iptables -S KUBE-ROUTER-FORWARD >/dev/null 2>&1; }

# Builds kube-router into ${MLOPS_CACHE:-~/.cache/mlops-operator}/netpol/<version>/kube-router
# and prints that path; a no-op once built.
netpol_build() {
  local cache=${MLOPS_CACHE:-$HOME/.cache/mlops-operator} dir work t0
  dir=$cache/netpol/$KUBE_ROUTER_VERSION
  if [ ! -x "$dir/kube-router" ]; then
    t0=$(now_us)
    say "building kube-router $KUBE_ROUTER_VERSION from the Go module proxy (cold: several minutes on 2 cores)" >&2
    work=$cache/netpol/src-$KUBE_ROUTER_VERSION
    mkdir -p "$dir" "$work"
    printf 'module localkuberouter\n\ngo 1.24\n\nrequire github.com/cloudnativelabs/kube-router/v2 %s\n' "$KUBE_ROUTER_VERSION" >"$work/go.mod"
    printf '//go:build tools\n\npackage localkuberouter\n\nimport _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"\n' >"$work/tools.go"
    (
      cd "$work"
      export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$HOME/.cache/go-mod} GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
      export GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0
      go mod tidy -e >&2 &&
        go build -ldflags "-s -w" -o "$dir/kube-router.$$" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router &&
        mv "$dir/kube-router.$$" "$dir/kube-router"
    ) || die "building kube-router $KUBE_ROUTER_VERSION failed"
    say "  built kube-router in $(secs_since "$t0") s" >&2
  fi
  echo "$dir/kube-router"
}

# After node_up (the node object and its InternalIP exist). Idempotent.
netpol_up() {
  local bin
  bin=$(netpol_build)
  if ! command -v ipset >/dev/null; then
    say "installing ipset (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ipset >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ipset >/dev/null; }
  fi
  [ -s "$PKI/kube-router.crt" ] || (umask 077 && cert kube-router "/CN=mlops-local:kube-router" "$client_ext")
  write_kubeconfig "$STATE/kubeconfigs/kube-router.kubeconfig" mlops-local:kube-router kube-router
  kc apply --server-side --force-conflicts --field-manager=mlops-local-cluster -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: mlops-local:kube-router
rules:
- {apiGroups: [""], resources: [pods, namespaces, nodes, services, endpoints], verbs: [get, list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
- {apiGroups: [networking.k8s.io], resources: [networkpolicies], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: mlops-local:kube-router
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "mlops-local:kube-router"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "mlops-local:kube-router"}
EOF
  start kube-router - -- "$bin" \
    --kubeconfig="$STATE/kubeconfigs/kube-router.kubeconfig" \
    --hostname-override="$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --service-cluster-ip-range=10.96.0.0/16 \
    --health-port=0 --metrics-port=0 \
    --v=1
  wait_healthy kube-router 60 netpol_synced
}

# down.sh, after kube-router stopped: its jumps from the built-in chains, its chains, its ipsets.
netpol_cleanup() {
  local rule chain set n=0
  command -v iptables >/dev/null || return 0
  while read -r rule; do
    eval "iptables -D ${rule#-A }" 2>/dev/null && n=$((n + 1))
  done < <(iptables -S 2>/dev/null | grep -E "^-A (INPUT|FORWARD|OUTPUT) .*-j ($NETPOL_CHAINS)")
  for chain in $(iptables -S 2>/dev/null | awk -v re="^($NETPOL_CHAINS)" '$1 == "-N" && $2 ~ re {print $2}'); do
    iptables -F "$chain" 2>/dev/null || true
  done
  for chain in $(iptables -S 2>/dev/null | awk -v re="^($NETPOL_CHAINS)" '$1 == "-N" && $2 ~ re {print $2}'); do
    iptables -X "$chain" 2>/dev/null && n=$((n + 1))
  done
  if command -v ipset >/dev/null; then
    for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router)'); do
      ipset destroy "$set" 2>/dev/null && n=$((n + 1))
    done
  fi
  [ $n = 0 ] || say "removed kube-router's iptables chains and ipsets ($n)"
}
