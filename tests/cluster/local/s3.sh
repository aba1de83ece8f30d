# The local S3 server (issue #17): versitygw on its posix backend, built from the Go module
# proxy like the Kubernetes binaries, cached per version. Sourced by lib.sh (so up.sh, down.sh
# and status.sh see these functions) and run by tests/s3kit.py as `s3.sh build`.
#
# Invariants: a second build builds nothing; the server is started by PID with its data and
# credentials under the cluster state dir and listens on 127.0.0.1 (and, NODE=real, on the node
# IP), never on 0.0.0.0; s3_down removes everything s3_up made.
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this

VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}

# The cached binary's path (computing it builds nothing).
s3_bin() {
  echo "${MLOPS_CACHE:-$HOME/.cache/mlops-operator}/s3/versitygw-${VERSITYGW_VERSION}/versitygw"
}

# Builds versitygw into its cache unless present; prints the binary path last.
s3_build() {
  local bin t0
  bin=$(s3_bin)
  if [ ! -x "$bin" ]; then
    t0=$SECONDS
    printf '[s3 build %s] Building versitygw %s from the Go module proxy (cold: a few minutes on 2 cores)\n' \
      "$(date +%T)" "$VERSITYGW_VERSION" >&2
    mkdir -p "${bin%/*}"
    # Same flags as build.sh: static, reproducible; write then rename (several builds may race).
    GOMODCACHE=${GOMODCACHE_OVERRIDE:-$HOME/.cache/go-mod} GOCACHE=${GOCACHE:-$HOME/.cache/go-build} \
      GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0 GOBIN="${bin%/*}/.gobin.$$" \
      go install -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}" >&2
    mv "${bin%/*}/.gobin.$$/versitygw" "$bin"
    rmdir "${bin%/*}/.gobin.$$"
    printf '[s3 build %s] Built versitygw in %d s\n' "$(date +%T)" $((SECONDS - t0)) >&2
  fi
  echo "$bin"
}

# ---------------------------------------------------------------- in the local cluster
# Data and credentials under $STATE/s3 (removed with the state dir by down.sh). Listens on
# 127.0.0.1:$S3_PORT, with NODE=real also on $NODE_IP:$S3_PORT (a host address pods reach).
# Published as the selector-less Service mlops-system/mlops-s3 (port 80; with NODE=real an
# EndpointSlice to the node IP) and the Secret mlops-system/mlops-s3, whose keys are the
# variables boto3 and KServe read. Its AWS_ENDPOINT_URL is what a pod uses: the Service's
# ClusterIP with NODE=real, 127.0.0.1 with kwok nodes (the cluster tier runs pods' programs on
# the host); the host's view is also in the annotation mlops-operator.dev/host-endpoint.
S3_DIR=${STATE:-}/s3
S3_PORT=$((12300 + ${PORT_OFFSET:-0}))
S3_REGION=us-east-1
S3_HEALTH=/mlops-health
S3_NAMESPACE=mlops-system
S3_NAME=mlops-s3   # the Service and the Secret
S3_HOST_ENDPOINT=http://127.0.0.1:$S3_PORT

s3_healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$S3_HOST_ENDPOINT$S3_HEALTH")" = 200 ]; }

# Starts the server (unless it runs) and publishes Service and Secret; uses up.sh's start,
# wait_healthy and kc, and $NODE.
s3_up() {
  local bin listen=(--port "127.0.0.1:$S3_PORT")
  bin=$(s3_build | tail -n 1)
  mkdir -p "$S3_DIR/data"
  chmod 700 "$S3_DIR"
  if [ ! -s "$S3_DIR/credentials.env" ]; then
    (umask 077 && printf 'ROOT_ACCESS_KEY_ID=%s\nROOT_SECRET_ACCESS_KEY=%s\n' \
      "mlops$(openssl rand -hex 6)" "$(openssl rand -hex 24)" >"$S3_DIR/credentials.env.tmp")
    mv "$S3_DIR/credentials.env.tmp" "$S3_DIR/credentials.env"
  fi
  [ "$NODE" = real ] && listen+=(--port "$NODE_IP:$S3_PORT")
  # The credentials reach versitygw through its environment only (never its command line).
  # shellcheck disable=SC1091  # written above, at run time
  (set -a && . "$S3_DIR/credentials.env" && set +a &&
    start s3 "$S3_PORT" -- "$bin" "${listen[@]}" --region "$S3_REGION" --health "$S3_HEALTH" --quiet \
      posix "$S3_DIR/data") || exit 1
  wait_healthy s3 30 s3_healthy
  s3_publish
}

s3_publish() {
  if [ "$NODE" = real ]; then
    s3_publish_as kc "$S3_DIR/credentials.env" "$S3_PORT" "$S3_HOST_ENDPOINT" node "$NODE_IP" mlops-local-cluster
  else
    s3_publish_as kc "$S3_DIR/credentials.env" "$S3_PORT" "$S3_HOST_ENDPOINT"
  fi
  say "  S3 (versitygw $VERSITYGW_VERSION) on $S3_HOST_ENDPOINT; Service and Secret $S3_NAMESPACE/$S3_NAME (pods: $S3_POD_ENDPOINT)"
}

# Publishes a running server as the Service and Secret $S3_NAMESPACE/$S3_NAME, for the local
# cluster and kind alike (tests/cluster/kind/s3.sh):
#   s3_publish_as KUBECTL_FN CREDENTIALS_ENV PORT HOST_ENDPOINT [SLICE ADDRESS MANAGED_BY]
# KUBECTL_FN runs kubectl against the cluster. With SLICE, an EndpointSlice $S3_NAME-SLICE sends
# the Service to ADDRESS:PORT and pods use the Service's ClusterIP; without, pods use
# HOST_ENDPOINT (kwok nodes: the pods' programs run on the host). Sets S3_POD_ENDPOINT.
s3_publish_as() {
  local k=$1 creds=$2 port=$3 host_endpoint=$4 slice=${5:-} address=${6:-} manager=${7:-} access secret
  access=$(sed -n 's/^ROOT_ACCESS_KEY_ID=//p' "$creds")
  secret=$(sed -n 's/^ROOT_SECRET_ACCESS_KEY=//p' "$creds")
  S3_POD_ENDPOINT=$host_endpoint
  "$k" create namespace "$S3_NAMESPACE" --dry-run=client -o yaml | "$k" apply -f - >/dev/null
  "$k" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: $S3_NAME, namespace: $S3_NAMESPACE, labels: {app.kubernetes.io/name: $S3_NAME}}
spec:
  ports: [{name: http, port: 80, protocol: TCP, targetPort: $port}]
YAML
  if [ -n "$slice" ]; then
    "$k" apply -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $S3_NAME-$slice
  namespace: $S3_NAMESPACE
  labels: {kubernetes.io/service-name: $S3_NAME, endpointslice.kubernetes.io/managed-by: $manager}
addressType: IPv4
ports: [{name: http, port: $port, protocol: TCP}]
endpoints: [{addresses: ["$address"], conditions: {ready: true}}]
YAML
    S3_POD_ENDPOINT=http://$("$k" -n "$S3_NAMESPACE" get service "$S3_NAME" -o jsonpath='{.spec.clusterIP}')
  fi
  # kubectl create --dry-run | apply: the secret's values never appear on a command line.
  "$k" -n "$S3_NAMESPACE" create secret generic "$S3_NAME" --dry-run=client -o yaml \
    --from-env-file=<(printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_ENDPOINT_URL=%s\nAWS_REGION=%s\nS3_USE_VIRTUAL_BUCKET=0\n' \
      "$access" "$secret" "$S3_POD_ENDPOINT" "$S3_REGION") |
    "$k" annotate --local -f - -o yaml "mlops-operator.dev/host-endpoint=$host_endpoint" |
    "$k" apply -f - >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case ${1:-} in
    build) s3_build ;;
    *) echo "usage: $0 build" >&2; exit 2 ;;
  esac
fi
