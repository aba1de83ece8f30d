#!/usr/bin/env bash
# Builds the kind node image mlops-operator/kind-node:<kube version> offline, into the kind
# cluster's own Docker daemon (dockerd.sh), for clusters where kindest/node cannot be pulled.
#
#   tests/cluster/kind/node-image.sh          # build unless the image is up to date; prints its name
#   tests/cluster/kind/node-image.sh --force  # build again
#
# What a kind node image is (kind v0.30 reads it so): a systemd system with containerd, runc,
# the CNI plugins, crictl, kubeadm, kubelet and kubectl; /kind/version (the Kubernetes
# version); /kind/manifests/default-cni.yaml and default-storage.yaml (applied after kubeadm
# init); an entrypoint that prepares the container for systemd; and every image kubeadm and
# those manifests start, preloaded into containerd's k8s.io namespace under the names kubeadm
# asks for, because nothing can be pulled. Here:
#   - Debian bookworm from debootstrap: systemd, containerd 1.6, runc, CNI plugins, iptables;
#   - the Kubernetes binaries of ../local/build.sh (same cache), etcd from there too;
#   - crictl, a CoreDNS with the plugins kubeadm's Corefile needs, and noderoutes (the pod
#     network) from the Go module proxy;
#   - control-plane, etcd, CoreDNS, pause and noderoutes images holding one static binary each
#     (../local/mkimage.py, no Docker); kube-proxy on the Debian rootfs (it runs iptables).
# The image carries a label with a digest of all its inputs (this folder's recipe, the
# versions, mkimage.py); the build is skipped when the present image's label matches. Slow
# parts are cached under ${MLOPS_CACHE:-~/.cache/mlops-operator}/kind/: the rootfs tarball
# (keyed by its package list), the Go programs, the image archives (keyed by the digest).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../local/versions.env
. "$here/../local/versions.env"
# shellcheck source=versions.env
. "$here/versions.env"
force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
cache=${MLOPS_CACHE:-$HOME/.cache/mlops-operator}
kc="$cache/kind"
image=$KIND_NODE_IMAGE_LOCAL
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# The node's packages (bookworm, no recommends). Changing the list makes a new rootfs.
NODE_PACKAGES=systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,iptables,nftables,conntrack,iproute2,ethtool,socat,util-linux,mount,kmod,procps,ca-certificates,libseccomp2,bash,ebtables
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$HOME/.cache/go-mod}
export GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0

T0=$SECONDS
log() { printf '[kind-image %s] %s\n' "$(date +%T)" "$*" >&2; }
# step "what" command...: run it and say how long it took.
step() {
  local what=$1 t=$SECONDS
  shift
  log "$what"
  "$@"
  log "  done in $((SECONDS - t)) s"
}
CLEANUP=()
cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[$i]}" || true; done
}
trap cleanup EXIT

eval "export $("$here/dockerd.sh" start | tail -n 1)"

# The digest of everything the image is made from (the Go modules and Debian packages are
# pinned by the versions and the package list, which are part of it).
inputs_digest() {
  {
    cat "$here/../local/versions.env" "$here/versions.env" "$here/../local/mkimage.py" "$0"
    echo "$NODE_PACKAGES"
    find "$here/node" "$here/manifests" "$here/noderoutes" "$here/coredns" -type f -print0 | sort -z | xargs -0 cat
  } | sha256sum | cut -c1-16
}
digest=$(inputs_digest)
if [ "$force" = 0 ] \
  && [ "$(docker image inspect --format '{{index .Config.Labels "dev.mlops.kind-node-inputs"}}' "$image" 2>/dev/null)" = "$digest" ]; then
  log "$image is up to date (inputs $digest)"
  echo "$image"
  exit 0
fi
log "building $image (inputs $digest)"

# --- binaries --------------------------------------------------------------------------------
kbin=$(step "Kubernetes ${KUBE_VERSION} binaries (../local/build.sh)" "$here/../local/build.sh" | tail -n 1)
gbin="$kc/bin"
mkdir -p "$gbin" "$kc/src"

# go_program NAME MODULE@VERSION DIR: builds DIR/main.go (a module requiring MODULE@VERSION)
# into $gbin/NAME, again only when main.go or the version changed.
go_program() {
  local name=$1 req=$2 srcdir=$3 work="$kc/src/$1"
  local stamp="$gbin/$name.stamp" want
  want="$req $(sha256sum "$srcdir/main.go" | cut -c1-16)"
  [ -x "$gbin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  mkdir -p "$work"
  cp "$srcdir/main.go" "$work/main.go"
  printf 'module local%s\n\ngo 1.24\n\nrequire %s\n' "$name" "${req/@/ }" >"$work/go.mod"
  (cd "$work" && go mod tidy -e >&2 && go build -ldflags "-s -w" -o "$gbin/$name.tmp" . && mv "$gbin/$name.tmp" "$gbin/$name")
  echo "$want" >"$stamp"
}
build_crictl() {
  [ -x "$gbin/crictl" ] && [ "$(cat "$gbin/crictl.stamp" 2>/dev/null)" = "$CRICTL_VERSION" ] && return 0
  GOBIN="$gbin" go install -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}" >&2
  echo "$CRICTL_VERSION" >"$gbin/crictl.stamp"
}
step "crictl ${CRICTL_VERSION}" build_crictl
step "CoreDNS ${COREDNS_VERSION} (kubeadm's plugins only)" go_program coredns "github.com/coredns/coredns@${COREDNS_VERSION}" "$here/coredns"
step "noderoutes (the pod network)" go_program noderoutes "github.com/vishvananda/netlink@v1.3.1" "$here/noderoutes"

# --- the Debian rootfs -----------------------------------------------------------------------
rootfs_key="bookworm-$(echo "$NODE_PACKAGES" | sha256sum | cut -c1-12)"
rootfs_tar="$kc/node-rootfs-$rootfs_key.tar"
rootfs_image="mlops-operator/kind-rootfs:$rootfs_key"
build_rootfs() {
  [ "$(id -u)" = 0 ] || { echo "node-image.sh: debootstrap needs root" >&2; exit 1; }
  command -v debootstrap >/dev/null || {
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  }
  local rootfs
  rootfs=$(mktemp -d "$kc/rootfs.XXXXXX")
  CLEANUP+=("umount '$rootfs/proc' 2>/dev/null; rm -rf --one-file-system '$rootfs'")
  debootstrap --variant=minbase --include="$NODE_PACKAGES" \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; exit 1; }
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" >"$rootfs/etc/apt/sources.list"
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  mount -t proc proc "$rootfs/proc"
  chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -eu -c '
    apt-get -q update
    apt-get -q -y -o Dpkg::Options::=--force-confold upgrade
    apt-get clean' >>"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
  umount "$rootfs/proc"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/tmp/*
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$rootfs_tar.partial" .
  mv "$rootfs_tar.partial" "$rootfs_tar"
  rm -f "$rootfs.log"
}
[ -s "$rootfs_tar" ] || step "debootstrap bookworm + the node's packages -> $rootfs_tar" build_rootfs
docker image inspect "$rootfs_image" >/dev/null 2>&1 \
  || step "docker import -> $rootfs_image" docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$rootfs_tar" "$rootfs_image" >/dev/null

# --- the images kubeadm and the default manifests start ---------------------------------------
archives="$kc/images-$digest"
pack() { python3 "$here/../local/mkimage.py" "$@" >&2; }
build_archives() {
  rm -rf "$archives.partial" && mkdir -p "$archives.partial"
  local c a="$archives.partial"
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    pack --dir /usr/local/bin --user 0:0 "$a/$c.tar" "registry.k8s.io/$c:${KUBE_VERSION}" "$kbin/$c"
  done
  pack --dir /usr/local/bin --user 0:0 "$a/etcd.tar" "$KUBEADM_ETCD_IMAGE" "$kbin/etcd"
  # Root: kubeadm's CoreDNS Deployment drops every capability but NET_BIND_SERVICE (port 53),
  # which only root keeps without file capabilities.
  pack --user 0:0 "$a/coredns.tar" "$KUBEADM_COREDNS_IMAGE" "$gbin/coredns"
  pack "$a/pause.tar" "$KUBEADM_PAUSE_IMAGE" "$kbin/pause"
  pack --user 0:0 "$a/noderoutes.tar" docker.io/mlops-operator/noderoutes:kind "$gbin/noderoutes"
  # kube-proxy programs iptables: it needs the userland tools, so the Debian rootfs under it.
  local ctx="$a/kube-proxy.ctx"
  mkdir -p "$ctx"
  cp "$kbin/kube-proxy" "$ctx/"
  printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\n' "$rootfs_image" >"$ctx/Dockerfile"
  docker build -q --network none -t "registry.k8s.io/kube-proxy:${KUBE_VERSION}" "$ctx" >/dev/null
  docker save -o "$a/kube-proxy.tar" "registry.k8s.io/kube-proxy:${KUBE_VERSION}"
  rm -rf "$ctx"
  mv "$a" "$archives"
}
[ -d "$archives" ] || step "images for kubeadm, CoreDNS and the pod network -> $archives" build_archives

# --- the node image ------------------------------------------------------------------------
base_image="mlops-operator/kind-node-base:$digest"
build_base() {
  local ctx="$kc/ctx-$digest"
  rm -rf "$ctx" && mkdir -p "$ctx"
  CLEANUP+=("rm -rf '$ctx'")
  cp "$here"/node/* "$here"/manifests/* "$ctx/"
  cp "$kbin/kubeadm" "$kbin/kubelet" "$kbin/kubectl" "$gbin/crictl" "$ctx/"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $rootfs_image
COPY entrypoint /usr/local/bin/entrypoint
COPY kubeadm kubelet kubectl /usr/bin/
COPY crictl /usr/local/bin/crictl
COPY crictl.yaml /etc/crictl.yaml
COPY containerd.toml /etc/containerd/config.toml
COPY containerd-service.conf /etc/systemd/system/containerd.service.d/10-kind-node.conf
COPY kubelet.service kubelet.slice /etc/systemd/system/
COPY 10-kubeadm.conf /etc/systemd/system/kubelet.service.d/10-kubeadm.conf
COPY default-cni.yaml default-storage.yaml /kind/manifests/
# systemd in a container: only containerd and the kubelet are wanted; no gettys, no udev, no
# journald reading the host's kernel log, no binfmt or module loading (the kernel is the host's).
RUN set -eu; \
    rm -f /etc/systemd/system/*.wants/* /lib/systemd/system/multi-user.target.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*; \
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete; \
    echo ReadKMsg=no >>/etc/systemd/journald.conf; \
    systemctl mask systemd-binfmt.service systemd-modules-load.service getty.target console-getty.service; \
    systemctl enable containerd.service kubelet.service; \
    mkdir -p /etc/kubernetes/manifests /etc/cni/net.d /opt/cni/bin; \
    echo "$KUBE_VERSION" >/kind/version
DOCKERFILE
  docker build -q --network none -t "$base_image" "$ctx" >/dev/null
}
step "node base: Debian rootfs + binaries + units + manifests -> $base_image" build_base

# containerd inside a container of the base image imports the archives (content only: the
# kubelet's first use unpacks them), then the container is committed as the node image.
preload() {
  local c f
  # --init: containerd's parent shell exits at once; tini reaps containerd when it stops.
  c=$(docker run -d --init --privileged --network none --tmpfs /run --tmpfs /tmp --entrypoint sleep "$base_image" infinity)
  CLEANUP+=("docker rm -f $c >/dev/null")
  docker exec "$c" sh -c 'containerd >/tmp/containerd.log 2>&1 & echo $! >/tmp/containerd.pid'
  for _ in $(seq 100); do docker exec "$c" ctr version >/dev/null 2>&1 && break; sleep 0.2; done
  for f in "$archives"/*.tar; do
    docker exec -i "$c" ctr --namespace=k8s.io images import --no-unpack --all-platforms - <"$f" >&2
  done
  docker exec "$c" ctr --namespace=k8s.io images list -q >&2
  docker exec "$c" sh -c 'kill $(cat /tmp/containerd.pid); while kill -0 $(cat /tmp/containerd.pid) 2>/dev/null; do sleep 0.1; done'
  docker commit \
    --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'CMD []' \
    --change 'ENV container=docker' \
    --change "LABEL dev.mlops.kind-node-inputs=$digest org.opencontainers.image.source=mlops-operator/tests/cluster/kind" \
    "$c" "$image" >/dev/null
}
step "preload the images into containerd, commit -> $image" preload
# Older digests' base images and archives are dead weight once the new image exists.
for old in $(docker images --format '{{.Repository}}:{{.Tag}}' mlops-operator/kind-node-base); do
  [ "$old" = "$base_image" ] || docker rmi "$old" >/dev/null 2>&1 || true
done
find "$kc" -maxdepth 1 -name 'images-*' ! -name "images-$digest" -exec rm -rf {} +
log "built $image in $((SECONDS - T0)) s ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$image"
