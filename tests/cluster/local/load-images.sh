#!/usr/bin/env bash
# Puts images into the local cluster's real node without a registry: imports a `docker save`
# archive into its containerd (namespace k8s.io, where the kubelet looks).
#
#   load-images.sh [ARCHIVE]   default: the archive images/build.sh writes,
#                              ${MLOPS_CACHE:-~/.cache/mlops-operator}/images/mlops-operator-${IMAGE_TAG:-dev}.tar
set -euo pipefail
LOG_TAG=load
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

archive=${1:-${MLOPS_CACHE:-$HOME/.cache/mlops-operator}/images/mlops-operator-${IMAGE_TAG:-dev}.tar}
[ -s "$archive" ] || die "no image archive at $archive (make images builds it)"
[ "$(node_mode)" = real ] || die "the cluster at $STATE has no real node (make cluster-up NODE=real)"
containerd_ready || die "the node's containerd does not answer at $CONTAINERD_SOCK"
say "importing $archive ($(du -h "$archive" | cut -f1)) into the node's containerd"
ctr_ images import --snapshotter overlayfs "$archive" | sed 's/^/    /'
say "done ($(secs_since "$T0") s)"
