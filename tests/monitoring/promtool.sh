#!/usr/bin/env bash
# Prints the directory holding Debian's promtool 2.42 for `make lint` (the prometheus package's files,
# extracted with dpkg-deb into ~/.cache/mlops-operator/prometheus/<version>/; nothing is installed
# system-wide and no service is started). A second run downloads nothing.
set -euo pipefail
cache=${MLOPS_CACHE:-$HOME/.cache/mlops-operator}/prometheus
version=2.42.0+ds-5+deb12u1
dir="$cache/$version"
if [ ! -x "$dir/usr/bin/promtool" ] || [ ! -x "$dir/usr/bin/prometheus" ]; then
  t0=$SECONDS
  echo "[prometheus] downloading Debian's prometheus $version" >&2
  mkdir -p "$cache/dl"
  if ! (cd "$cache/dl" && apt-get download -q "prometheus=$version" >/dev/null 2>&1); then
    apt-get update -q >/dev/null
    (cd "$cache/dl" && apt-get download -q "prometheus=$version" >/dev/null)
  fi
  rm -rf "$dir.tmp"
  dpkg-deb -x "$cache/dl/prometheus_${version//+/%2b}_amd64.deb" "$dir.tmp" 2>/dev/null ||
    dpkg-deb -x "$(ls "$cache"/dl/prometheus_*_amd64.deb | head -n1)" "$dir.tmp"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  echo "[prometheus] ready in $((SECONDS - t0)) s: $dir/usr/bin" >&2
fi
echo "$dir/usr/bin"
