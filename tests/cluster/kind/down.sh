#!/usr/bin/env bash
# Stops the cluster's S3 server (s3.sh; its data stays), deletes the kind cluster, its `kind`
# network and kubeconfig, then stops the kind Docker daemon (dockerd.sh). The daemon's data
# root (the node image: the cache) stays.
#
#   KIND=/path/to/kind KUBECONFIG_FILE=/path/to/kubeconfig tests/cluster/kind/down.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${KIND:?KIND must name the kind binary}" "${KUBECONFIG_FILE:?KUBECONFIG_FILE must be set}"
name=${KIND_CLUSTER:-mlops}
export DOCKER_HOST=unix://${MLOPS_KIND_RUN:-/run/mlops-kind}/docker.sock
"$here/s3.sh" stop
if "$here/dockerd.sh" status; then
  if [ -x "$KIND" ]; then
    "$KIND" delete cluster --name "$name" --kubeconfig "$KUBECONFIG_FILE"
  else
    # No kind binary (a CI run that stopped before building it): its node containers by label.
    docker ps -aq --filter "label=io.x-k8s.kind.cluster=$name" | xargs -r docker rm -f >/dev/null
  fi
  # kind leaves its network (a bridge and iptables rules on the host) for the next cluster.
  if [ -z "$(docker ps -aq --filter network=kind)" ]; then
    docker network rm kind >/dev/null 2>&1 || true
  fi
fi
# By its pid file, even when it no longer answers.
"$here/dockerd.sh" stop
rm -f "$KUBECONFIG_FILE"
