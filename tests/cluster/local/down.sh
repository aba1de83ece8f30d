#!/usr/bin/env bash
# Stops the local test cluster started by up.sh and removes its state directory.
# Processes are stopped by the PIDs in pids/ (clients first, etcd last): TERM, wait, then KILL.
# A PID is only signalled if its command line names this state directory, so a recycled PID is
# never hit. Safe to run when nothing runs. Exits non-zero if a process of the cluster survives.
set -euo pipefail
LOG_TAG=down
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

if [ ! -d "$STATE" ]; then
  say "nothing to do: no state directory $STATE"
  strays=$(find_strays)
  [ -z "$strays" ] || die "processes of a cluster at $STATE still run (pid name): $strays"
  exit 0
fi
if [ ! -e "$MARKER" ]; then
  die "$STATE was not made by up.sh (no $(basename "$MARKER")); not touching it"
fi
exec 9>"$STATE/.lock"
if ! flock -w 30 9; then
  warn "another up.sh/down.sh has held $STATE/.lock for 30 s; stopping the cluster anyway"
fi

# stop TIMEOUT NAME...: TERM the named components, wait up to TIMEOUT s, then KILL what is left.
stop() {
  local timeout=$1 name pid t0 left=()
  shift
  declare -A pids=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      pids[$name]=$pid
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  t0=$(now_us)
  while :; do
    left=()
    for name in "${!pids[@]}"; do alive "${pids[$name]}" && left+=("$name"); done
    [ ${#left[@]} -gt 0 ] || break
    if (($(now_us) - t0 > timeout * 1000000)); then
      for name in "${left[@]}"; do
        warn "$name (pid ${pids[$name]}) ignored TERM for ${timeout}s; sending KILL"
        kill -KILL "${pids[$name]}" 2>/dev/null || true
      done
      sleep 0.5
      for name in "${left[@]}"; do
        alive "${pids[$name]}" && die "$name (pid ${pids[$name]}) survived KILL"
      done
      break
    fi
    sleep 0.1
  done
  for name in "${!pids[@]}"; do say "stopped $name (pid ${pids[$name]}, $(secs_since "$t0") s)"; done
}

stop 10 prometheus kwok kube-scheduler kube-controller-manager coredns
if [ "$(node_mode)" = real ]; then
  pick_kubectl || true
  node_drain
  stop 20 kube-proxy kubelet kube-router
  netpol_cleanup
  node_kill_containers
  stop 20 containerd apiserver-forward
  node_cleanup
fi
stop 10 s3 # its data lives in $STATE, removed below
stop 20 kube-apiserver
stop 10 etcd

# Anything of ours left? (also catches a process whose pid file was lost)
strays=$(find_strays)
if [ -n "$strays" ]; then
  while read -r pid name; do
    warn "$name (pid $pid) still runs without a pid file; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  done <<<"$strays"
  sleep 0.5
  strays=$(find_strays)
  [ -z "$strays" ] || die "could not stop (pid name): $strays"
fi

rm -rf "${STATE:?}"
say "cluster down; removed $STATE (total $(secs_since "$T0") s)"
