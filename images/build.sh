#!/usr/bin/env bash
# Build the three images: mlops-operator/{operator,trainer,server}:${IMAGE_TAG:-dev}.
#
#   images/build.sh                # FROM python:3.11-slim (needs a registry to pull from)
#   images/build.sh --local-base   # FROM mlops-operator/base:py311, made here with debootstrap
#
# Python wheels are built on the host (`pip wheel`, host Python 3.11) into a wheelhouse that is
# the whole build context: the image builds download nothing. Each image installs only its
# program's dependency groups (pyproject `[tool.mlops.images.<program>]`, issue #16): the
# wheelhouse holds their union and one pinned requirements file per program, resolved from it.
# Everything slow is cached under
# ${MLOPS_CACHE:-~/.cache/mlops-operator}: the dependency wheelhouse (keyed by the dependency
# spec), the project wheel (keyed by its sources), the base rootfs tarball; so is Docker's
# layer cache. A second run with nothing changed takes seconds. See images/README.md.
#
# When no Docker daemon answers, this script installs Debian's docker.io if needed, starts dockerd
# (no iptables, no bridge: builds run with --network none) and stops it again when it ends.
# The images are also saved to $CACHE/images/mlops-operator-$IMAGE_TAG.tar (`docker save`), which
# tests/cluster/local/load-images.sh imports into the local cluster's containerd without Docker.
#
# Environment: IMAGE_TAG (dev), BASE_IMAGE (python:3.11-slim; ignored with --local-base),
# PYTHON (python3.11), DOCKER (docker), DEBIAN_MIRROR (http://deb.debian.org/debian),
# DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security), IMAGE_SOURCE (OCI source label).
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

LOCAL_BASE=0
SMOKE=1
for arg in "$@"; do
  case "$arg" in
    --local-base) LOCAL_BASE=1 ;;
    --no-smoke) SMOKE=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MLOPS_CACHE:-$HOME/.cache/mlops-operator}"
IMAGE_TAG="${IMAGE_TAG:-dev}"
PYTHON="${PYTHON:-python3.11}"
DOCKER="${DOCKER:-docker}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
LOCAL_BASE_IMAGE="mlops-operator/base:py311"
# Bump when the base recipe below changes: the cached rootfs tarball is keyed by it.
BASE_RECIPE="bookworm-minbase-python3-v2"
PROGRAMS=(operator trainer server)  # the same names as pyproject's [tool.mlops.images.<program>]
export PIP_DISABLE_PIP_VERSION_CHECK=1

# --- output and timing ---------------------------------------------------------------------
T0=$(date +%s.%N)
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
# step "description" command...: run it, then print how long it took.
step() {
  local what="$1" t
  shift
  t=$(now)
  log "$what"
  "$@"
  printf '    done in %s\n' "$(secs "$t")" >&2
}

# Run at exit, last in first out: what the steps below set up and must undo.
CLEANUP=()
cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[$i]}" || true; done
}
trap cleanup EXIT

apt_install() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  log "installing $* (apt)"
  "${sudo[@]}" apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# A Docker daemon: the one running, or Debian's dockerd started here for this build only.
ensure_docker() {
  "$DOCKER" info >/dev/null 2>&1 && return 0
  [ "$DOCKER" = docker ] || die "cannot reach the Docker daemon with '$DOCKER'"
  command -v dockerd >/dev/null || apt_install docker.io
  [ "$(id -u)" = 0 ] || die "no Docker daemon answers, and starting one needs root"
  local logf="$CACHE/dockerd.log" t0 pid
  mkdir -p "$CACHE"
  t0=$(now)
  # No iptables rules, no docker0: every build and smoke run here uses --network none.
  setsid dockerd --iptables=false --ip-masq=false --bridge=none >"$logf" 2>&1 </dev/null &
  pid=$!
  CLEANUP+=("stop_dockerd $pid")
  until "$DOCKER" info >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$logf" >&2; die "dockerd exited while starting (log: $logf)"; }
    awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a > 60) }' && die "dockerd not answering after 60 s (log: $logf)"
    sleep 0.3
  done
  log "started dockerd (pid $pid, $(secs "$t0")); it stops when this build ends"
}
stop_dockerd() {
  kill -TERM "$1" 2>/dev/null || return 0
  local i
  for i in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && kill -KILL "$1"
  log "stopped dockerd (pid $1)"
}

# --- checks --------------------------------------------------------------------------------
command -v "$DOCKER" >/dev/null || command -v dockerd >/dev/null || [ "$DOCKER" != docker ] || apt_install docker.io
command -v "$DOCKER" >/dev/null || die "no '$DOCKER' command (set DOCKER=...)"
ensure_docker
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
  || die "$PYTHON is not Python 3.11 (set PYTHON=...): the wheels must match the images' Python"

# --- base image ----------------------------------------------------------------------------
# A Debian bookworm minbase rootfs with the distribution's python3 (3.11) and CA certificates,
# security updates applied, imported as a single-layer image. Needs root and debootstrap.
build_rootfs_tarball() {
  local tarball="$1" rootfs
  [ "$(id -u)" = 0 ] || die "making the base rootfs needs root (debootstrap, chroot)"
  command -v debootstrap >/dev/null || apt_install debootstrap
  mkdir -p "$(dirname "$tarball")"
  rootfs="$(mktemp -d "$(dirname "$tarball")/rootfs.XXXXXX")"
  CLEANUP+=("umount '$rootfs/proc' 2>/dev/null; rm -rf --one-file-system '$rootfs'")
  debootstrap --variant=minbase --include=python3,ca-certificates \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; die "debootstrap failed (log: $rootfs.log)"; }
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb $DEBIAN_SECURITY_MIRROR bookworm-security main
EOF
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  mount -t proc proc "$rootfs/proc"
  chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -eu -c '
    apt-get -q update
    apt-get -q -y -o Dpkg::Options::=--force-confold upgrade
    apt-get clean' >>"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; die "apt-get upgrade in the rootfs failed (log: $rootfs.log)"; }
  umount "$rootfs/proc"
  chroot "$rootfs" python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'
  # Docker provides these at run time; documentation, translations and apt indexes are dead
  # weight (the C.UTF-8 locale lives in /usr/lib/locale and stays).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/tmp/* "$rootfs"/root/.cache
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  rm -f "$rootfs.log"
  rm -rf --one-file-system "$rootfs"
  unset 'CLEANUP[-1]'
}

ensure_local_base() {
  local recipe
  recipe="$("$DOCKER" image inspect --format '{{index .Config.Labels "dev.mlops.base-recipe"}}' "$LOCAL_BASE_IMAGE" 2>/dev/null || true)"
  if [ "$recipe" = "$BASE_RECIPE" ]; then
    log "base image $LOCAL_BASE_IMAGE present ($recipe)"
    return
  fi
  local tarball="$CACHE/images/base-$BASE_RECIPE.tar"
  if [ -s "$tarball" ]; then
    log "base rootfs cached: $tarball"
  else
    step "debootstrap bookworm minbase + python3 from $DEBIAN_MIRROR -> $tarball" build_rootfs_tarball "$tarball"
  fi
  step "docker import -> $LOCAL_BASE_IMAGE" "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.opencontainers.image.title=mlops-operator-base dev.mlops.base-recipe=$BASE_RECIPE" \
    --change 'CMD ["python3"]' \
    "$tarball" "$LOCAL_BASE_IMAGE" >/dev/null
}

# --- wheelhouse ----------------------------------------------------------------------------
# Third-party wheels: keyed by the dependency spec and the host interpreter/platform, so they
# are resolved and downloaded again only when pyproject's dependencies change.
deps_key() {
  "$PYTHON" - "$ROOT/pyproject.toml" <<'EOF'
import hashlib, json, platform, sys, sysconfig, tomllib
pyproject = tomllib.load(open(sys.argv[1], "rb"))
project, images = pyproject["project"], pyproject["tool"]["mlops"]["images"]
groups = sorted({g for image in images.values() for g in image["groups"]})
spec = {
    "dependencies": project["dependencies"],
    "groups": {g: project["optional-dependencies"][g] for g in groups},
    "images": {program: image["groups"] for program, image in images.items()},
    "requires-python": project.get("requires-python"),
    "python": platform.python_version_tuple()[:2],
    "platform": sysconfig.get_platform(),
}
print(hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16])
EOF
}

# The dependency groups (extras) of one program's image, comma-separated, from pyproject.
program_groups() {
  "$PYTHON" - "$ROOT/pyproject.toml" "$1" <<'EOF'
import sys, tomllib
print(",".join(tomllib.load(open(sys.argv[1], "rb"))["tool"]["mlops"]["images"][sys.argv[2]]["groups"]))
EOF
}

build_deps_wheelhouse() {
  local dir="$1" tmp program all=()
  tmp="$dir.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp/deps" "$tmp/pip" "$tmp/report"
  for program in "${PROGRAMS[@]}"; do all+=("$(program_groups "$program")"); done
  # The union of the images' groups is resolved once, so the three programs share versions.
  "$PYTHON" -m pip wheel --quiet --wheel-dir "$tmp/deps" "${ROOT}[$(IFS=,; echo "${all[*]}")]"
  # Each program's exact pins, resolved offline from this wheelhouse alone (the project's wheel
  # in it carries the groups' metadata): its deps stage installs that list and nothing else.
  for program in "${PROGRAMS[@]}"; do
    "$PYTHON" -m pip install --quiet --dry-run --ignore-installed --no-index --find-links "$tmp/deps" \
      --report "$tmp/report/$program.json" "mlops-operator[$(program_groups "$program")]"
    "$PYTHON" - "$tmp/report/$program.json" "$tmp/deps/requirements-$program.txt" <<'EOF'
import json, pathlib, sys
report = json.loads(pathlib.Path(sys.argv[1]).read_text())
pins = sorted(
    "{}=={}".format(item["metadata"]["name"], item["metadata"]["version"])
    for item in report["install"]
    if item["metadata"]["name"] != "mlops-operator"
)
pathlib.Path(sys.argv[2]).write_text("\n".join(pins) + "\n")
EOF
  done
  rm -rf "$tmp/report"
  # The project's own wheel is dropped: it is built apart, keyed by its sources.
  rm -f "$tmp"/deps/mlops_operator-*.whl
  # pip itself, run from its wheel inside the build stages (the base image may have no pip).
  "$PYTHON" -m pip download --quiet --only-binary=:all: --no-deps --dest "$tmp/pip" pip
  # Only wheels that work on the images' Debian/glibc: nothing built from an sdist for this host.
  if ls "$tmp"/deps/*-linux_*.whl >/dev/null 2>&1; then
    die "host-specific wheels were built (no manylinux wheel): $(ls "$tmp"/deps/*-linux_*.whl)"
  fi
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

# The project wheel: keyed by its sources (hatchling builds are reproducible, so an unchanged
# tree gives a byte-identical wheel and Docker's cache holds).
app_key() {
  (
    cd "$ROOT"
    find pyproject.toml README.md operator/mlops_contract operator/mlops_operator images/*/mlops_* -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -c1-16
}

build_app_wheel() {
  local dir="$1"
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$dir.partial" "$ROOT"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}

# --- main ------------------------------------------------------------------------------------
if [ "$LOCAL_BASE" = 1 ]; then
  BASE_IMAGE="$LOCAL_BASE_IMAGE"
  ensure_local_base
else
  BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
fi

DEPS_DIR="$CACHE/wheels/$(deps_key)"
if [ -f "$DEPS_DIR/deps/requirements-${PROGRAMS[-1]}.txt" ]; then
  log "dependency wheelhouse cached: $DEPS_DIR ($(find "$DEPS_DIR/deps" -name '*.whl' | wc -l) wheels)"
else
  step "pip wheel the images' dependency groups -> $DEPS_DIR" build_deps_wheelhouse "$DEPS_DIR"
fi
APP_DIR="$CACHE/app/$(app_key)"
if compgen -G "$APP_DIR/mlops_operator-*.whl" >/dev/null; then
  log "project wheel cached: $(basename "$APP_DIR"/mlops_operator-*.whl)"
else
  step "pip wheel --no-deps . -> $APP_DIR" build_app_wheel "$APP_DIR"
fi

# The build context: the wheelhouse only, hard-linked from the caches (copied if that fails).
# One per run, so concurrent runs do not collide; Docker's cache keys on content, not paths.
mkdir -p "$CACHE/images"
CONTEXT="$(mktemp -d "$CACHE/images/context.XXXXXX")"
CLEANUP+=("rm -rf '$CONTEXT'")
mkdir -p "$CONTEXT/wheelhouse"
for part in deps pip; do
  cp -al "$DEPS_DIR/$part" "$CONTEXT/wheelhouse/$part" 2>/dev/null || cp -a "$DEPS_DIR/$part" "$CONTEXT/wheelhouse/$part"
done
cp -a "$APP_DIR" "$CONTEXT/wheelhouse/app"

VERSION="$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$REVISION" != unknown ] && [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then
  REVISION="$REVISION-dirty"
fi
SOURCE="${IMAGE_SOURCE:-$(git -C "$ROOT" remote get-url origin 2>/dev/null || echo unknown)}"

# The program images only add metadata and an entrypoint: an empty context is enough.
mkdir -p "$CONTEXT/empty"
for program in "${PROGRAMS[@]}"; do
  # A runtime per program: its dependency groups, its own package and the contract package.
  # --network none: the wheelhouse is all the build gets; a step that tries to download fails.
  runtime="mlops-operator/runtime-$program:$IMAGE_TAG"
  step "docker build $runtime (FROM $BASE_IMAGE; groups $(program_groups "$program"))" \
    "$DOCKER" build --quiet --network none \
    -f "$ROOT/images/runtime/Dockerfile" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "WHEELHOUSE=wheelhouse" \
    --build-arg "PROGRAM=$program" \
    --build-arg "VERSION=$VERSION" \
    --build-arg "SOURCE=$SOURCE" \
    --build-arg "REVISION=$REVISION" \
    -t "$runtime" "$CONTEXT" >/dev/null
  image="mlops-operator/$program:$IMAGE_TAG"
  step "docker build $image (FROM $runtime)" "$DOCKER" build --quiet --network none \
    -f "$ROOT/images/$program/Dockerfile" \
    --build-arg "RUNTIME_IMAGE=$runtime" \
    -t "$image" "$CONTEXT/empty" >/dev/null
done

# Smoke test, as uid 10001 on a read-only root filesystem: each entrypoint starts (--help); every
# module of its program imports, so a library missing from its groups fails here and not in a
# pod; and none of the distributions its image must never carry (pyproject `never`) is there.
if [ "$SMOKE" = 1 ]; then
  never_in() {
    "$PYTHON" -c 'import sys, tomllib; print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["tool"]["mlops"]["images"][sys.argv[2]]["never"]))' \
      "$ROOT/pyproject.toml" "$1"
  }
  smoke() {
    local program image
    for program in "${PROGRAMS[@]}"; do
      image="mlops-operator/$program:$IMAGE_TAG"
      "$DOCKER" run --rm --read-only --user 10001 --network none "$image" --help >/dev/null \
        || die "$image --help failed"
      # shellcheck disable=SC2046  # one argument per distribution name
      "$DOCKER" run --rm --read-only --user 10001 --network none --entrypoint /opt/venv/bin/python \
        "$image" -c '
import importlib, importlib.metadata as md, pkgutil, sys
package = importlib.import_module("mlops_" + sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
present = []
for name in sys.argv[2:]:
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        continue
    present.append(name)
sys.exit(f"installed, though this image must never carry them: {present}" if present else 0)
' "$program" $(never_in "$program") || die "$image: a module does not import, or it carries what it must not"
    done
  }
  step "smoke test: --help, every module imports, nothing unwanted (uid 10001, read-only root)" smoke
fi

# One archive of the three images (shared layers stored once) for clusters without a registry:
# the local cluster's containerd imports it (ctr), kind loads it (kind load image-archive).
ARCHIVE="$CACHE/images/mlops-operator-$IMAGE_TAG.tar"
images=()
for program in "${PROGRAMS[@]}"; do images+=("mlops-operator/$program:$IMAGE_TAG"); done
save_archive() { "$DOCKER" save "${images[@]}" -o "$ARCHIVE.partial" && mv "$ARCHIVE.partial" "$ARCHIVE"; }
step "docker save -> $ARCHIVE" save_archive

log "images (total $(secs "$T0")):"
for program in "${PROGRAMS[@]}"; do
  "$DOCKER" image ls "mlops-operator/$program:$IMAGE_TAG" --format '    {{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}'
done
