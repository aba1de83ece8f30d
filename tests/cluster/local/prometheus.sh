#!/usr/bin/env bash
# A real Prometheus for the e2e tier (issue #21): Prometheus 3 built from the Go module proxy
# (tests/monitoring/prometheus.sh; Debian's 2.42 lacks Kubernetes service discovery), run by PID on the host like the cluster's other components, discovering
# the serving pods and the operator through the Kubernetes API with its own ServiceAccount
# (mlops-monitoring/prometheus: get/list/watch pods, services, endpoints), scraping them as the
# PodMonitor and ServiceMonitor of manifests/monitoring would, with the shipped alert rules loaded.
#
#   prometheus.sh start   start (idempotent) and publish it to pods as the Service
#                         prometheus.mlops-monitoring:9090 (an EndpointSlice to the node IP)
#   prometheus.sh stop    stop it by PID and remove its data (down.sh stops it too)
#   prometheus.sh url     print the URL the host uses
#
# Needs the local cluster with NODE=real (pods have IPs the host routes to).
set -euo pipefail
LOG_TAG=prometheus
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=node.sh
. "$here/node.sh"

NAME=prometheus
PORT=$((9090 + PORT_OFFSET))
NS=mlops-monitoring
DATA=$STATE/prometheus
ROOT=$(cd "$here/../../.." && pwd)

# start NAME PORT -- COMMAND...: like up.sh's, detached, logged to logs/NAME.log, PID in pids/NAME.pid.
start_detached() {
  local name=$1
  shift 3
  { echo; echo "=== $(date -u +%FT%TZ) starting $name"; } >>"$LOGS/$name.log"
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$PIDS/$name.pid"
  say "started $name (pid $!)"
}

rbac_and_service() {
  kc apply --server-side --force-conflicts --field-manager=mlops-local-cluster -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $NS}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus, namespace: $NS}
---
apiVersion: v1
kind: Secret
metadata:
  name: prometheus-token
  namespace: $NS
  annotations: {kubernetes.io/service-account.name: prometheus}
type: kubernetes.io/service-account-token
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: mlops-prometheus}
rules:
- apiGroups: [""]
  resources: [pods, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: mlops-prometheus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: mlops-prometheus}
subjects:
- {kind: ServiceAccount, name: prometheus, namespace: $NS}
---
apiVersion: v1
kind: Service
metadata: {name: prometheus, namespace: $NS}
spec:
  ports:
  - {name: http, port: 9090, targetPort: $PORT, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: prometheus
  namespace: $NS
  labels:
    kubernetes.io/service-name: prometheus
    endpointslice.kubernetes.io/managed-by: mlops-local-cluster
addressType: IPv4
endpoints:
- addresses: [$NODE_IP]
  conditions: {ready: true}
ports:
- {name: http, port: $PORT, protocol: TCP}
YAML
}

write_config() {
  "$ROOT/.venv/bin/python" - "$ROOT/manifests/monitoring/prometheusrule.yaml" "$DATA/rules.yaml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
open(sys.argv[2], "w").write(yaml.safe_dump({"groups": doc["spec"]["groups"]}, sort_keys=False))
PY
  cat >"$DATA/prometheus.yml" <<YAML
# Written by tests/cluster/local/prometheus.sh: the scrape jobs of manifests/monitoring's
# PodMonitor and ServiceMonitor, spelled as the Prometheus operator renders them (same job names).
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: [$DATA/rules.yaml]
scrape_configs:
- job_name: mlops-system/mlops-inference-servers
  scrape_timeout: 4s
  metrics_path: /metrics
  kubernetes_sd_configs:
  - role: pod
    api_server: $SERVER
    tls_config: {ca_file: $PKI/ca.crt}
    authorization: {credentials_file: $DATA/token}
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_managed_by], regex: mlops-operator, action: keep}
  - {source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component], regex: inference-server, action: keep}
  - {source_labels: [__meta_kubernetes_pod_container_port_name], regex: monitoring, action: keep}
  - {source_labels: [__meta_kubernetes_pod_phase], regex: Running, action: keep}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
  - {source_labels: [__meta_kubernetes_pod_label_mlops_dev_inference_service], target_label: inference_service}
  - {source_labels: [__meta_kubernetes_pod_label_mlops_dev_track], target_label: track}
- job_name: mlops-operator-metrics
  honor_labels: true
  metrics_path: /metrics
  kubernetes_sd_configs:
  - role: endpoints
    api_server: $SERVER
    tls_config: {ca_file: $PKI/ca.crt}
    authorization: {credentials_file: $DATA/token}
    namespaces: {names: [mlops-system]}
  relabel_configs:
  - {source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_component], regex: metrics, action: keep}
  - {source_labels: [__meta_kubernetes_endpoint_port_name], regex: metrics, action: keep}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
YAML
}

start_prometheus() {
  [ "$(node_mode)" = real ] || die "Prometheus scrapes pod IPs: start the cluster with NODE=real"
  pick_kubectl || die "no kubectl"
  if pid=$(pid_of "$NAME"); then
    say "prometheus already running (pid $pid)"
    return
  fi
  local binary token="" i t0
  t0=$(now_us)
  binary=$("$ROOT/tests/monitoring/prometheus.sh")
  mkdir -p "$DATA/tsdb" "$STATE/bin"
  rbac_and_service
  for i in $(seq 1 50); do
    token=$(kc -n "$NS" get secret prometheus-token -o jsonpath='{.data.token}' 2>/dev/null | base64 -d) || true
    [ -n "$token" ] && break
    sleep 0.2
  done
  [ -n "$token" ] || die "the token controller gave prometheus no token"
  (umask 077 && printf '%s' "$token" >"$DATA/token")
  write_config
  ln -sf "$binary" "$STATE/bin/prometheus" # argv[0] under $STATE marks the process as ours
  start_detached "$NAME" "$PORT" -- "$STATE/bin/prometheus" --config.file="$DATA/prometheus.yml" \
    --storage.tsdb.path="$DATA/tsdb" --storage.tsdb.retention.time=6h \
    --web.listen-address="$NODE_IP:$PORT" --web.enable-lifecycle
  for i in $(seq 1 300); do
    curl -sf --max-time 2 "http://$NODE_IP:$PORT/-/ready" -o /dev/null && break
    pid_of "$NAME" >/dev/null || { log_tail "$NAME" >&2; die "prometheus exited while starting"; }
    sleep 0.2
  done
  curl -sf --max-time 2 "http://$NODE_IP:$PORT/-/ready" -o /dev/null || die "prometheus not ready after 60 s"
  say "prometheus ready at http://$NODE_IP:$PORT ($(secs_since "$t0") s)"
}

stop_prometheus() {
  local pid
  if pid=$(pid_of "$NAME"); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    say "stopped prometheus (pid $pid)"
  fi
  rm -rf "${DATA:?}" "$PIDS/$NAME.pid"
}

case "${1:-}" in
  start) start_prometheus ;;
  stop) stop_prometheus ;;
  url) echo "http://$NODE_IP:$PORT" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
