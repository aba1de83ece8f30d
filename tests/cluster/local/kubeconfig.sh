#!/usr/bin/env bash
# Prints the local cluster's admin kubeconfig path and nothing else on stdout:
#   export KUBECONFIG=$(tests/cluster/local/kubeconfig.sh)
# Warns on stderr (exit 0 still) when the cluster has not been brought up.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
[ -s "$KUBECONFIG_PATH" ] || echo "warning: $KUBECONFIG_PATH does not exist yet; run tests/cluster/local/up.sh" >&2
echo "$KUBECONFIG_PATH"
