#!/usr/bin/env bash
# Checks that a running local cluster (up.sh) behaves as the integration tests expect:
# API server ready, nodes Ready, Deployment pods Running/Ready, Job pods completed or failed by
# patching pods/status (and kwok leaving that status alone), deleted pods going away (GC,
# Job accounting, namespace deletion), RBAC enforced, the ServiceAccount token authenticating,
# the cluster DNS answering Service names and no outside name.
# Works in a throw-away namespace, removed at the end. Exit 0 when every check passes.
set -euo pipefail
LOG_TAG=smoke
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
pick_kubectl || die "no kubectl"
NS=smoke-$$
IMAGE=registry.invalid/nginx:1
failures=0

ok() { say "ok:   $*"; }
bad() { say "FAIL: $*" >&2; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...
  local d=$1; shift
  if "$@"; then ok "$d"; else bad "$d"; fi
}
# until_true TIMEOUT COMMAND...: polls every 0.2 s.
until_true() {
  local t0 timeout=$1; shift
  t0=$(now_us)
  until "$@" >/dev/null 2>&1; do
    (($(now_us) - t0 < timeout * 1000000)) || return 1
    sleep 0.2
  done
}
jp() { kc -n "$NS" get "$1" -o "jsonpath=$2"; }
job_pod() { kc -n "$NS" get pods -l "job-name=$1" -o jsonpath='{.items[0].metadata.name}'; }
pod_running() { [ "$(jp "pod/$1" '{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}')" = Running/True ]; }
gone() { ! kc -n "$NS" get "$1" >/dev/null 2>&1; }
no_pods() { [ -z "$(kc -n "$NS" get pods -l "$1" -o name)" ]; }
# finish_pod POD PHASE EXIT_CODE MESSAGE: what a test does to end a pod kwok keeps running.
finish_pod() {
  local now reason=Completed
  now=$(date -u +%FT%TZ)
  [ "$3" = 0 ] || reason=Error
  kc -n "$NS" patch pod "$1" --subresource=status --type=merge -p "$(cat <<EOF
{"status": {"phase": "$2",
  "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": "$now"},
                 {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": "$now"}],
  "containerStatuses": [{"name": "main", "image": "$IMAGE", "imageID": "", "ready": false, "started": false,
    "restartCount": 0, "state": {"terminated": {"exitCode": $3, "reason": "$reason", "message": "$4",
    "startedAt": "$now", "finishedAt": "$now"}}}]}}
EOF
)" >/dev/null
}
job() { # job NAME BACKOFF_LIMIT
  kc -n "$NS" create -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: $1}
spec:
  backoffLimit: $2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: $IMAGE}]
EOF
}
job_condition() { [ "$(jp "job/$1" "{.status.conditions[?(@.type==\"$2\")].status}")" = True ]; }

check "apiserver /readyz is ok" [ "$(kc get --raw /readyz)" = ok ]
check "2 kwok nodes Ready" [ "$(kc get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" = 2 ]
kc create namespace "$NS" >/dev/null
until_true 30 kc -n "$NS" get serviceaccount default || bad "default ServiceAccount created in $NS"

# Deployment: 2 pods Running and Ready, podIPs from the nodes' podCIDRs.
kc -n "$NS" create deployment web --image="$IMAGE" --replicas=2 >/dev/null
check "Deployment web available with 2 ready replicas" until_true 60 \
  sh -c "[ \"\$('$KUBECTL' --kubeconfig '$KUBECONFIG_PATH' -n $NS get deploy web -o jsonpath='{.status.readyReplicas}')\" = 2 ]"
say "      $(kc -n "$NS" get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName} {.status.podIP}; {end}')"
check "web pods have podIPs in 10.244.0.0/16" \
  [ "$(kc -n "$NS" get pods -l app=web -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' | grep -c '^10\.244\.')" = 2 ]

# Cluster DNS (dns.sh): a Service's name resolves to its ClusterIP, other names are unknown.
kc -n "$NS" expose deployment web --port=80 >/dev/null
web_ip=$(jp service/web '{.spec.clusterIP}')
read -r dns_addr dns_port < <(dns_listen)
lookup() { "$(expected_bin_dir)/netcheck" lookup "$1" "$dns_addr:$dns_port"; }
check "web.$NS.svc.$CLUSTER_DOMAIN resolves to the Service's ClusterIP $web_ip" \
  until_true 10 sh -c "[ \"\$('$(expected_bin_dir)/netcheck' lookup web.$NS.svc.$CLUSTER_DOMAIN. $dns_addr:$dns_port)\" = $web_ip ]"
check "kubernetes.default.svc.$CLUSTER_DOMAIN resolves to 10.96.0.1" [ "$(lookup "kubernetes.default.svc.$CLUSTER_DOMAIN.")" = 10.96.0.1 ]
check "an outside name (pypi.org) is not found: nothing is forwarded" [ "$(lookup pypi.org. || true)" = "not found" ]
check "RBAC: CoreDNS may watch Services but not read Secrets or Pods" [ \
  "$(kc auth can-i watch services --as=system:coredns)/$(kc auth can-i get secrets --as=system:coredns || true)/$(kc auth can-i list pods --as=system:coredns || true)" = yes/no/no ]

# Job completed by patching its pod to Succeeded; kwok must not write Running back.
job ok-job 0
until_true 30 job_pod ok-job || bad "ok-job pod created"
p=$(job_pod ok-job)
check "ok-job pod $p Running and Ready" until_true 30 pod_running "$p"
finish_pod "$p" Succeeded 0 "model saved"
check "ok-job Complete" until_true 30 job_condition ok-job Complete
sleep 3
check "ok-job pod still Succeeded with exitCode 0, message 'model saved' (not overwritten)" [ \
  "$(jp "pod/$p" '{.status.phase}/{.status.containerStatuses[0].state.terminated.exitCode}/{.status.containerStatuses[0].state.terminated.message}')" \
  = "Succeeded/0/model saved" ]
check "ok-job pod lost its job-tracking finalizer" [ -z "$(jp "pod/$p" '{.metadata.finalizers}')" ]

# Job pod failed with exit code 3: counted as failed, Job Failed (backoffLimit 0).
job bad-job 0
until_true 30 job_pod bad-job || bad "bad-job pod created"
p=$(job_pod bad-job)
until_true 30 pod_running "$p" || bad "bad-job pod Running"
finish_pod "$p" Failed 3 "bad data"
check "bad-job Failed with status.failed=1" until_true 30 \
  sh -c "[ \"\$('$KUBECTL' --kubeconfig '$KUBECONFIG_PATH' -n $NS get job bad-job -o jsonpath='{.status.failed}/{.status.conditions[?(@.type==\"Failed\")].status}')\" = 1/True ]"
sleep 3
check "bad-job pod still Failed with exitCode 3, message 'bad data'" [ \
  "$(jp "pod/$p" '{.status.phase}/{.status.containerStatuses[0].state.terminated.exitCode}/{.status.containerStatuses[0].state.terminated.message}')" \
  = "Failed/3/bad data" ]

# A running Job pod that is deleted: kwok terminates it (Failed, 143), the Job counts it and replaces it.
job retry-job 2
until_true 30 job_pod retry-job || bad "retry-job pod created"
p=$(job_pod retry-job)
until_true 30 pod_running "$p" || bad "retry-job pod Running"
kc -n "$NS" delete pod "$p" --wait=false >/dev/null
check "deleted running Job pod $p is removed" until_true 30 gone "pod/$p"
check "retry-job counts it failed and starts a replacement" until_true 30 \
  sh -c "[ \"\$('$KUBECTL' --kubeconfig '$KUBECONFIG_PATH' -n $NS get job retry-job -o jsonpath='{.status.failed}/{.status.active}')\" = 1/1 ]"

# Garbage collection: deleting the Deployment removes its ReplicaSet and pods.
kc -n "$NS" delete deployment web --wait=false >/dev/null
check "Deployment deleted: its pods are gone (GC)" until_true 60 no_pods app=web

# RBAC and the ServiceAccount token.
check "RBAC: mlops-test may not list secrets" \
  [ "$(kc auth can-i list secrets --as=system:serviceaccount:mlops-system:mlops-test -n mlops-system || true)" = no ]
who=$(curl -sS --max-time 5 --cacert "$SA_DIR/ca.crt" -H "Authorization: Bearer $(<"$SA_DIR/token")" \
  -H 'Content-Type: application/json' -X POST \
  -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' \
  "$SERVER/apis/authentication.k8s.io/v1/selfsubjectreviews")
check "SA token file authenticates as system:serviceaccount:mlops-system:mlops-test" \
  grep -q '"username": *"system:serviceaccount:mlops-system:mlops-test"' <<<"$who"
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$SA_DIR/ca.crt" \
  -H "Authorization: Bearer $(<"$SA_DIR/token")" "$SERVER/api/v1/namespaces/mlops-system/secrets")
check "SA token listing secrets is forbidden (HTTP $code)" [ "$code" = 403 ]

# Namespace deletion finishes (running Job pod with its finalizer, terminal pods, everything).
kc delete namespace "$NS" --wait=false >/dev/null
check "namespace $NS deleted completely" until_true 90 sh -c "! '$KUBECTL' --kubeconfig '$KUBECONFIG_PATH' get namespace $NS"

if [ $failures -gt 0 ]; then die "$failures check(s) failed"; fi
say "all checks passed ($(secs_since "$T0") s)"
