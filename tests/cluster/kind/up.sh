#!/usr/bin/env bash
# Brings up the kind cluster (cluster.yaml: one control-plane node, two workers) on the kind
# Docker daemon (dockerd.sh), waits until every node is Ready and CoreDNS answers, and starts
# and publishes the cluster's S3 server (s3.sh).
#
#   KIND=/path/to/kind KUBECONFIG_FILE=/path/to/kubeconfig tests/cluster/kind/up.sh
#
# The node image: KIND_NODE_IMAGE (kindest/node:...) when the daemon has it or KIND_PULL=1
# lets kind pull it (a host that reaches Docker Hub); else the one node-image.sh builds here,
# offline. Nothing is pulled unless KIND_PULL=1: this machine reaches no registry.
# Idempotent: an existing cluster of that name is kept (its kubeconfig is written again).
# Environment: KIND_CLUSTER (mlops), KIND_NODE_IMAGE, KIND_PULL (0), KIND_WAIT (300s).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${KIND:?KIND must name the kind binary}" "${KUBECONFIG_FILE:?KUBECONFIG_FILE must be set}"
name=${KIND_CLUSTER:-mlops}
wait=${KIND_WAIT:-300s}
t0=$SECONDS
log() { printf '[kind-up %s] %s\n' "$(date +%T)" "$*" >&2; }
eval "export $("$here/dockerd.sh" start | tail -n 1)"
kubectl="$("$here/../local/build.sh" | tail -n 1)/kubectl"

if "$KIND" get clusters 2>/dev/null | grep -qx "$name"; then
  log "cluster $name exists"
else
  image=
  if [ -n "${KIND_NODE_IMAGE:-}" ]; then
    if docker image inspect "$KIND_NODE_IMAGE" >/dev/null 2>&1 || { [ "${KIND_PULL:-0}" = 1 ] && docker pull "$KIND_NODE_IMAGE" >&2; }; then
      image=$KIND_NODE_IMAGE
    fi
  fi
  if [ -z "$image" ]; then
    log "node image: building or reusing the local one (node-image.sh)"
    image=$("$here/node-image.sh" | tail -n 1)
  fi
  log "creating cluster $name from $image"
  t=$SECONDS
  "$KIND" create cluster --name "$name" --image "$image" --config "$here/cluster.yaml" \
    --kubeconfig "$KUBECONFIG_FILE" --wait "$wait"
  log "  kind create cluster took $((SECONDS - t)) s"
fi
mkdir -p "$(dirname "$KUBECONFIG_FILE")"
"$KIND" get kubeconfig --name "$name" >"$KUBECONFIG_FILE.tmp" && mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
k=("$kubectl" --kubeconfig "$KUBECONFIG_FILE")
"${k[@]}" wait --for=condition=Ready nodes --all --timeout="$wait" >&2
"${k[@]}" -n kube-system rollout status deployment/coredns --timeout="$wait" >&2
# The cluster's DNS forwards nothing, as the local cluster's (../local/dns.sh): kubeadm's
# Corefile sends every name outside cluster.local to the node's resolver; here CoreDNS answers
# them NXDOMAIN itself, so a pod's lookup of an outside name fails at once ("not known") and no
# query leaves the machine. Idempotent: a Corefile without the forward block is left alone.
corefile=$("${k[@]}" -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}')
if grep -q '^ *forward \. ' <<<"$corefile"; then
  log "CoreDNS: outside names answered NXDOMAIN, nothing forwarded"
  # kubeadm's block serves the cluster's zones only, without its forward block; a block of its
  # own answers the rest (template runs before kubernetes, so it cannot share their block).
  {
    awk '/^\.:53 \{/ { print "cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {"; next }
         /^ *forward \. / { skip = 1; next }
         skip && /^ *}/ { skip = 0; next }
         !skip' <<<"$corefile"
    printf '.:53 {\n    errors\n    template ANY ANY {\n       rcode NXDOMAIN\n    }\n}\n'
  } >"$KUBECONFIG_FILE.Corefile"
  "${k[@]}" -n kube-system create configmap coredns --from-file=Corefile="$KUBECONFIG_FILE.Corefile" \
    --dry-run=client -o yaml | "${k[@]}" apply --server-side --force-conflicts -f - >&2
  rm -f "$KUBECONFIG_FILE.Corefile"
  "${k[@]}" -n kube-system rollout restart deployment/coredns >&2
  "${k[@]}" -n kube-system rollout status deployment/coredns --timeout="$wait" >&2
fi
# The S3 server the e2e tier (STORAGE=s3) and the demo keep artifacts in (s3.sh).
KUBECTL=$kubectl KUBECONFIG_FILE=$KUBECONFIG_FILE "$here/s3.sh" start
"${k[@]}" get nodes -o wide >&2
log "cluster $name ready in $((SECONDS - t0)) s; kubeconfig: $KUBECONFIG_FILE"
