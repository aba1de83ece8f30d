#!/usr/bin/env bash
# Builds Prometheus v3 (module github.com/prometheus/prometheus v0.316.0, i.e. 3.16.0) from the Go
# module proxy into ~/.cache/mlops-operator/prometheus/go-<module version>/ and prints the binary's
# path. Debian's prometheus 2.42 is built without Kubernetes service discovery, which the e2e tier
# needs (its promtool still serves `make lint`). Cold: ~10-16 min on 2 cores; a second run builds nothing.
set -euo pipefail
module_version=v0.316.0
release=3.16.0
cache=${MLOPS_CACHE:-$HOME/.cache/mlops-operator}/prometheus
bin="$cache/go-$module_version/prometheus"
if [ ! -x "$bin" ]; then
  t0=$SECONDS
  echo "[prometheus] building Prometheus $release (module $module_version) from the Go module proxy" >&2
  work="$cache/src-$module_version"
  mkdir -p "$work" "$(dirname "$bin")"
  export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$HOME/.cache/go-mod}
  export GOCACHE=${GOCACHE:-$HOME/.cache/go-build}
  export GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0
  printf 'module localprometheus\n\ngo 1.26\n' >"$work/go.mod"
  (cd "$work" && go get "github.com/prometheus/prometheus/cmd/prometheus@$module_version" 2>&1 | { grep -v "^go: added" >&2 || true; })
  (cd "$work" && go build -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
     -o "$bin.tmp" github.com/prometheus/prometheus/cmd/prometheus && mv "$bin.tmp" "$bin")
  echo "[prometheus] built in $((SECONDS - t0)) s: $bin" >&2
fi
echo "$bin"
