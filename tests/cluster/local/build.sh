#!/usr/bin/env bash
# Builds the local cluster's binaries from the Go module proxy into a per-version cache:
#   ~/.cache/mlops-operator/cluster/<kube>-<etcd>-<kwok>/bin/{etcd,kube-apiserver,...}
# A second run with the binaries present builds nothing. Prints the bin directory last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$here/versions.env"
cache=${MLOPS_CACHE:-$HOME/.cache/mlops-operator}
bin="$cache/cluster/${KUBE_VERSION}-etcd${ETCD_VERSION}-kwok${KWOK_VERSION}/bin"
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$HOME/.cache/go-mod}
export GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0
mkdir -p "$bin"
log() { printf '[build %s] %s\n' "$(date +%T)" "$*" >&2; }

# kubectl too: the scripts here use one of the cluster's own version (hosts often have none or an old one).
# kubeadm: the kind node image (tests/cluster/kind/) bootstraps its nodes with it.
kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm)
need_kube=()
for c in "${kube_cmds[@]}"; do [ -x "$bin/$c" ] || need_kube+=("$c"); done

if [ ${#need_kube[@]} -gt 0 ]; then
  start=$SECONDS
  log "Building ${need_kube[*]} ${KUBE_VERSION} from the Go module proxy (cold: ~10-20 min on 2 cores)"
  work="$cache/cluster/src-kube-${KUBE_VERSION}"
  mkdir -p "$work"
  staging="v0${KUBE_VERSION#v1}"
  # k8s.io/kubernetes refers to its staging modules as v0.0.0 + replace => ./staging/...;
  # a consumer must replace each of them with the published v0.x of the same release.
  {
    echo "module localbuild"
    echo "go 1.24"
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
             cluster-bootstrap code-generator component-base component-helpers controller-manager \
             cri-api cri-client csi-translation-lib dynamic-resource-allocation endpointslice \
             externaljwt kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler \
             kubectl kubelet metrics mount-utils pod-security-admission sample-apiserver \
             sample-cli-plugin sample-controller; do
      echo "replace k8s.io/$m => k8s.io/$m $staging"
    done
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package localbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  (cd "$work" && go mod tidy -e >&2)
  for c in "${need_kube[@]}"; do
    log "go build k8s.io/kubernetes/cmd/$c"
    (cd "$work" && go build -ldflags "-s -w \
       -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION} \
       -X k8s.io/component-base/version.gitMajor=1 \
       -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) \
       -X k8s.io/component-base/version.gitTreeState=clean" \
       -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c" && mv "$bin/$c.tmp" "$bin/$c")
  done
  log "Built Kubernetes binaries in $((SECONDS - start)) s"
fi

if [ ! -x "$bin/etcd" ]; then
  start=$SECONDS
  log "Building etcd ${ETCD_VERSION}"
  work="$cache/cluster/src-etcd-${ETCD_VERSION}"
  mkdir -p "$work"
  printf 'module localetcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$work/go.mod"
  cat > "$work/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$work" && go mod tidy -e >&2 && go build -ldflags "-s -w" -o "$bin/etcd.tmp" . && mv "$bin/etcd.tmp" "$bin/etcd")
  log "Built etcd in $((SECONDS - start)) s"
fi

if [ ! -x "$bin/kwok" ]; then
  start=$SECONDS
  log "Building kwok ${KWOK_VERSION}"
  GOBIN="$bin" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" >&2
  log "Built kwok in $((SECONDS - start)) s"
fi
# The real node's images that no registry can provide here: the pod sandbox (pause) and a
# network check; static Go programs from ./node, packed by mkimage.py (no Docker needed).
for prog in pause netcheck; do
  if [ ! -s "$bin/$prog.tar" ] || [ "$here/node/$prog/main.go" -nt "$bin/$prog.tar" ]; then
    # Several clusters may start at once (MLOPS_CLUSTER_PORT_OFFSET): write, then rename.
    (cd "$here/node" && go build -ldflags "-s -w" -o "$bin/$prog.$$" "./$prog") && mv "$bin/$prog.$$" "$bin/$prog"
    args=()
    [ "$prog" = netcheck ] && args=(serve :8080)
    python3 "$here/mkimage.py" "$bin/$prog.tar.$$" "docker.io/mlops-operator/$prog:local" "$bin/$prog" "${args[@]}" >&2
    mv "$bin/$prog.tar.$$" "$bin/$prog.tar"
  fi
done
echo "$bin"
