#!/usr/bin/env bash
# A Docker daemon of the kind cluster's own, apart from any other on this machine:
#
#   tests/cluster/kind/dockerd.sh start   # start it unless it answers already; prints DOCKER_HOST=...
#   tests/cluster/kind/dockerd.sh stop    # stop the one this script started (by its pid file)
#   tests/cluster/kind/dockerd.sh status  # exit 0 when it answers
#
# kind needs bridge networking and iptables (it makes a `kind` network; the nodes talk over
# it); images/build.sh's daemon has neither and comes and goes with each build, so kind gets
# its own socket, data root, exec root and pid file. Its images (the node image among them)
# stay in the data root between runs: that is the cache.
#
# --ip-forward=false: Docker would otherwise switch the host's ip_forward on and set the
# FORWARD policy to DROP, which breaks every other bridge on the host (the local cluster's real
# node). kind needs neither: nodes and pods talk across the `kind` bridge (layer 2), and the
# host reaches the API server through a published port on 127.0.0.1.
# --dns 127.0.0.1: Docker's embedded DNS answers the containers' (the nodes') names and forwards
# every other name to this address, taken inside the container, where nothing listens: a lookup
# of an outside name fails at once instead of leaving the machine through this host's resolver.
# --default-runtime runc-bounded: kind's nodes are privileged, and this host's kernel withholds
# some capabilities (CAP_SYS_RESOURCE) from every process; see runc-bounded.
# Environment: MLOPS_CACHE (~/.cache/mlops-operator), MLOPS_KIND_RUN (/run/mlops-kind).
set -euo pipefail
cache=${MLOPS_CACHE:-$HOME/.cache/mlops-operator}/kind
run=${MLOPS_KIND_RUN:-/run/mlops-kind}
sock="$run/docker.sock"
pidfile="$run/docker.pid"
logf="$cache/dockerd.log"
export DOCKER_HOST="unix://$sock"

answers() { timeout 10 docker info >/dev/null 2>&1; }

start() {
  if answers; then
    echo "DOCKER_HOST=$DOCKER_HOST"
    return 0
  fi
  [ "$(id -u)" = 0 ] || { echo "dockerd.sh: starting dockerd needs root" >&2; exit 1; }
  if ! command -v dockerd >/dev/null; then
    echo "dockerd.sh: installing Debian's docker.io" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io iptables >/dev/null
  fi
  mkdir -p "$cache/docker" "$run/exec"
  # A copy the daemon owns: it outlives a checkout that moves or goes away.
  install -m 0755 "$(dirname "$0")/runc-bounded" "$run/runc-bounded"
  local t0=$SECONDS pid
  setsid dockerd -H "$DOCKER_HOST" --data-root "$cache/docker" --exec-root "$run/exec" \
    --pidfile "$pidfile" --bridge=none --iptables=true --ip-forward=false --dns 127.0.0.1 \
    --storage-driver=overlay2 --add-runtime "runc-bounded=$run/runc-bounded" \
    --default-runtime runc-bounded >>"$logf" 2>&1 </dev/null &
  pid=$!
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$logf" >&2
      echo "dockerd.sh: dockerd exited while starting (log: $logf)" >&2
      exit 1
    fi
    if [ $((SECONDS - t0)) -gt 60 ]; then
      echo "dockerd.sh: dockerd not answering after 60 s (log: $logf)" >&2
      exit 1
    fi
    sleep 0.3
  done
  echo "dockerd.sh: started dockerd (pid $pid) in $((SECONDS - t0)) s, log $logf" >&2
  echo "DOCKER_HOST=$DOCKER_HOST"
}

stop() {
  [ -s "$pidfile" ] || { echo "dockerd.sh: not running (no $pidfile)" >&2; return 0; }
  local pid i
  pid=$(cat "$pidfile")
  # The pid file may outlive its daemon: only signal a dockerd that still owns it.
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--pidfile $pidfile"; then
    kill -TERM "$pid"
    for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "dockerd.sh: stopped dockerd (pid $pid)" >&2
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
