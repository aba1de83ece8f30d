#!/usr/bin/env bash
# Says whether the local cluster is up: each component's process, etcd and API server health,
# and the nodes. Exit 0 when everything is up, 1 otherwise.
set -uo pipefail
LOG_TAG=status
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

up=0
if [ ! -d "$STATE" ]; then
  echo "down: no state directory $STATE"
  exit 1
fi
components=("${COMPONENTS[@]}" coredns)
[ "$(node_mode)" = kwok ] || components+=("${NODE_COMPONENTS[@]}")
components+=(s3)
for c in "${components[@]}"; do
  if pid=$(pid_of "$c"); then
    printf '  %-24s running (pid %s)\n' "$c" "$pid"
  else
    printf '  %-24s NOT running (log: %s)\n' "$c" "$LOGS/$c.log"
    up=1
  fi
done
if etcd_healthy; then echo "  etcd /health            ok"; else echo "  etcd /health            FAILING"; up=1; fi
if apiserver_ready; then echo "  apiserver /readyz       ok"; else echo "  apiserver /readyz       FAILING"; up=1; fi
if s3_healthy; then echo "  s3 $S3_HOST_ENDPOINT ok"; else echo "  s3 $S3_HOST_ENDPOINT FAILING"; up=1; fi
if dns_ready; then echo "  coredns /ready          ok ($(dns_listen | tr ' ' :))"; else echo "  coredns /ready          FAILING"; up=1; fi
if [ $up = 0 ] && pick_kubectl; then
  echo
  kc get nodes -o wide || up=1
fi
echo
if [ $up = 0 ]; then
  echo "up: KUBECONFIG=$KUBECONFIG_PATH"
else
  echo "not (fully) up; tests/cluster/local/up.sh starts what is missing"
fi
exit $up
