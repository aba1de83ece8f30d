#!/usr/bin/env bash
# The kind cluster's S3 server: versitygw (the local cluster's build, ../local/s3.sh) on this
# host, reachable by the kind pods at the `kind` Docker network's gateway address, published in
# the cluster as the local cluster publishes its own (same names and keys, so the e2e tier's
# STORAGE=s3 mode and the demo find it the same way):
#
#   KUBECTL=... KUBECONFIG_FILE=... tests/cluster/kind/s3.sh start   # start unless healthy; publish
#   tests/cluster/kind/s3.sh stop                                     # stop it by its pid file
#
#   listens   127.0.0.1:$PORT (the host's view: the tests create buckets from here) and
#             <gateway>:$PORT, an address of this host on the kind bridge; never 0.0.0.0
#   Service   mlops-system/mlops-s3 (port 80), selector-less, with an EndpointSlice naming the
#             gateway; Secret mlops-system/mlops-s3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#             AWS_ENDPOINT_URL (the Service's ClusterIP), AWS_REGION, S3_USE_VIRTUAL_BUCKET, and
#             the host's endpoint in the annotation mlops-operator.dev/host-endpoint
#   routes    the kind pod network has no NAT (noderoutes): a pod's packet reaches the gateway
#             with the pod's own address. The host routes each node's pod CIDR via that node
#             (proto 183, noderoutes' mark), so the answers go back over the bridge instead of
#             out of the default route; they go away with the bridge (kind-down).
# Data and credentials: $MLOPS_KIND_STATE/s3 (default ~/.cache/mlops-operator/kind/state).
# Environment: MLOPS_KIND_S3_PORT (12390), KIND_NETWORK (kind).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../local/s3.sh
. "$here/../local/s3.sh"
cache=${MLOPS_CACHE:-$HOME/.cache/mlops-operator}
dir=${MLOPS_KIND_STATE:-$cache/kind/state}/s3
port=${MLOPS_KIND_S3_PORT:-12390}
network=${KIND_NETWORK:-kind}
host_endpoint=http://127.0.0.1:$port
export DOCKER_HOST=unix://${MLOPS_KIND_RUN:-/run/mlops-kind}/docker.sock
say() { printf '[kind-s3 %s] %s\n' "$(date +%T)" "$*" >&2; }

healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$host_endpoint$S3_HEALTH")" = 200 ]; }

gateway() {
  docker network inspect "$network" -f '{{range .IPAM.Config}}{{println .Gateway}}{{end}}' | grep -m1 -F .
}

start() {
  : "${KUBECTL:?KUBECTL must name kubectl}" "${KUBECONFIG_FILE:?KUBECONFIG_FILE must be set}"
  local gw bin pid
  gw=$(gateway)
  [ -n "$gw" ] || { say "no IPv4 gateway on the Docker network $network"; exit 1; }
  if ! healthy; then
    bin=$(s3_build | tail -n 1)
    mkdir -p "$dir/data"
    chmod 700 "$dir"
    if [ ! -s "$dir/credentials.env" ]; then
      (umask 077 && printf 'ROOT_ACCESS_KEY_ID=%s\nROOT_SECRET_ACCESS_KEY=%s\n' \
        "mlops$(openssl rand -hex 6)" "$(openssl rand -hex 24)" >"$dir/credentials.env.tmp")
      mv "$dir/credentials.env.tmp" "$dir/credentials.env"
    fi
    # The credentials reach versitygw through its environment only (never its command line).
    # shellcheck disable=SC1091
    (set -a && . "$dir/credentials.env" && set +a &&
      exec setsid "$bin" --port "127.0.0.1:$port" --port "$gw:$port" --region "$S3_REGION" \
        --health "$S3_HEALTH" --quiet posix "$dir/data" >>"$dir/versitygw.log" 2>&1 </dev/null) &
    pid=$!
    echo "$pid" >"$dir/pid"
    for _ in $(seq 150); do
      healthy && break
      kill -0 "$pid" 2>/dev/null || { tail -n 20 "$dir/versitygw.log" >&2; say "versitygw exited"; exit 1; }
      sleep 0.2
    done
    healthy || { say "versitygw not healthy after 30 s (log: $dir/versitygw.log)"; exit 1; }
    say "versitygw (pid $pid) on $host_endpoint and $gw:$port"
  fi
  routes
  publish "$gw"
}

# One host route per node's pod CIDR, via the node's address on the bridge.
routes() {
  local k=("$KUBECTL" --kubeconfig "$KUBECONFIG_FILE") node cidr ip
  while read -r node cidr ip; do
    [ -n "$cidr" ] && [ -n "$ip" ] || { say "node $node has no pod CIDR or address yet"; exit 1; }
    ip route replace "$cidr" via "$ip" proto 183
  done < <("${k[@]}" get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
}

kk() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

publish() {
  s3_publish_as kk "$dir/credentials.env" "$port" "$host_endpoint" host "$1" mlops-kind-cluster
  say "Service and Secret $S3_NAMESPACE/$S3_NAME (pods: $S3_POD_ENDPOINT -> $1:$port)"
}

stop() {
  [ -s "$dir/pid" ] || return 0
  local pid
  pid=$(cat "$dir/pid")
  # Only a versitygw serving this data directory: the pid file may outlive its process.
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "posix $dir/data"; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    say "stopped versitygw (pid $pid)"
  fi
  rm -f "$dir/pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
