# Shared by up.sh, down.sh, status.sh and kubeconfig.sh (sourced, never run).
# Layout of the state directory, the components and their ports, process and health helpers.
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$here/versions.env"

STATE=${MLOPS_CLUSTER_STATE:-$HOME/.local/state/mlops-operator/cluster}
case $STATE in /*) ;; *) STATE=$PWD/$STATE ;; esac
STATE=${STATE%/}
PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$STATE/pids
KUBECONFIG_PATH=$STATE/kubeconfig
SA_DIR=$STATE/serviceaccount
MARKER=$STATE/.mlops-operator-cluster   # only a directory holding this is ever deleted by down.sh

# Everything listens on loopback only. etcd and the two controllers use non-default ports so they
# cannot clash with a real control plane on the same host; the API server keeps the well-known 6443.
# MLOPS_CLUSTER_PORT_OFFSET (with its own MLOPS_CLUSTER_STATE) runs a second cluster beside the
# first, e.g. offset 100: API server on 6543, etcd on 12479.
PORT_OFFSET=${MLOPS_CLUSTER_PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]+$ ]] || { echo "MLOPS_CLUSTER_PORT_OFFSET must be a number" >&2; exit 1; }
APISERVER_PORT=$((6443 + PORT_OFFSET))
ETCD_CLIENT_PORT=$((12379 + PORT_OFFSET))
ETCD_PEER_PORT=$((12380 + PORT_OFFSET))
KCM_PORT=$((12257 + PORT_OFFSET))
SCHEDULER_PORT=$((12259 + PORT_OFFSET))
SERVER=https://127.0.0.1:$APISERVER_PORT

# Start order; down.sh stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# The bin directory build.sh fills (same formula; computing it does not build anything).
expected_bin_dir() {
  echo "${MLOPS_CACHE:-$HOME/.cache/mlops-operator}/cluster/${KUBE_VERSION}-etcd${ETCD_VERSION}-kwok${KWOK_VERSION}/bin"
}

# Microseconds since the epoch (EPOCHREALTIME's decimal mark depends on the locale).
now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
T0=$(now_us)
# Seconds since $1 (microseconds), one decimal.
secs_since() {
  local ms=$((($(now_us) - $1) / 1000))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}
say() { printf '[%s %5ss] %s\n' "${LOG_TAG:-cluster}" "$(secs_since "$T0")" "$*"; }
warn() { say "WARNING: $*" >&2; }
die() { say "ERROR: $*" >&2; exit 1; }

# The PID recorded for a component, if that process is alive and is ours: its command line
# names this state directory (so a recycled PID of an unrelated process is never taken for it).
pid_of() {
  local f=$PIDS/$1.pid pid
  [ -r "$f" ] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  is_ours "$pid" || return 1
  echo "$pid"
}

# True if $1 is a live process started from this state directory.
is_ours() {
  local cmdline
  [ -r "/proc/$1/cmdline" ] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$STATE/"* ]]
}

# True while process $1 exists and is not a zombie (an exiting process's cmdline reads empty
# before it is gone, so after signalling we watch the PID itself).
alive() {
  local state
  state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Processes of our components started from this state directory, whether or not a pid file
# still records them (e.g. after the state directory was removed by hand). Prints "pid name".
find_strays() {
  local p exe name
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    name=${exe##*/}
    case " ${COMPONENTS[*]} coredns containerd kubelet kube-proxy kube-router socat versitygw " in *" $name "*) ;; *) continue ;; esac
    is_ours "${p#/proc/}" && echo "${p#/proc/} $name"
  done
  return 0
}

# Last lines of a component's log, indented, for error messages.
log_tail() {
  local f=$LOGS/$1.log
  [ -s "$f" ] || { echo "    (no log at $f)"; return; }
  echo "    --- last ${2:-25} lines of $f ---"
  tail -n "${2:-25}" "$f" | sed 's/^/    /'
}

curl_admin() {
  curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"
}
apiserver_ready() { [ "$(curl_admin "$SERVER/readyz" 2>/dev/null)" = ok ]; }
etcd_healthy() {
  curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/apiserver-etcd-client.crt" \
    --key "$PKI/apiserver-etcd-client.key" "https://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null |
    grep -q '"health":"true"'
}
# The controllers serve /healthz to anyone on a self-signed certificate (always-allow path).
healthz_ok() { [ "$(curl -sSk --max-time 5 "https://127.0.0.1:$1/healthz" 2>/dev/null)" = ok ]; }

# kubectl: the one built with the cluster (same version) if present, else the one on PATH.
pick_kubectl() {
  local b
  b=$(expected_bin_dir)
  if [ -x "$b/kubectl" ]; then KUBECTL=$b/kubectl
  elif command -v kubectl >/dev/null; then KUBECTL=$(command -v kubectl)
  else return 1
  fi
}
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# shellcheck source-path=SCRIPTDIR source=node.sh
. "$here/node.sh"
# shellcheck source-path=SCRIPTDIR source=s3.sh
. "$here/s3.sh"
# shellcheck source-path=SCRIPTDIR source=dns.sh
. "$here/dns.sh"
# shellcheck source-path=SCRIPTDIR source=netpol.sh
. "$here/netpol.sh"
