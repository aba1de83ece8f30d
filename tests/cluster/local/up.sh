#!/usr/bin/env bash
# Starts the local test cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
# (real Kubernetes components, built by build.sh) and either
#   NODE=kwok (default)  kwok simulating two nodes and their pods (the cluster test tier), or
#   NODE=real            one real node: kubelet + containerd + runc + CNI bridge + kube-proxy
#                        (node.sh; needs root), where pods run for real (the e2e tier).
# Everything listens on 127.0.0.1 and lives in one state directory:
#   ${MLOPS_CLUSTER_STATE:-~/.local/state/mlops-operator/cluster}/
#     kubeconfig        admin kubeconfig (https://127.0.0.1:6443, certificates embedded)
#     serviceaccount/   token, ca.crt, namespace of ServiceAccount mlops-system/mlops-test,
#                       laid out like /var/run/secrets/kubernetes.io/serviceaccount
#     pki/ kubeconfigs/ etcd/ kwok/ logs/<name>.log pids/<name>.pid
# Idempotent: when the cluster is already up and healthy it says so and exits 0; a component
# that died is started again (PKI and etcd data are kept). down.sh stops and removes it all.
set -euo pipefail
LOG_TAG=up
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

NODE=${NODE:-kwok}
case $NODE in
  kwok) NODES=(kwok-node-0 kwok-node-1) ;;
  real) NODES=() ;;
  *) die "NODE must be kwok or real, not '$NODE'" ;;
esac
SA_NAMESPACE=mlops-system
SA_NAME=mlops-test

# ---------------------------------------------------------------- helpers

step() { STEP_T0=$(now_us); say "$*"; }
done_step() { say "  done: $* ($(secs_since "$STEP_T0") s)"; }

# Fails with the tail of the component's log.
fail() {
  local name=$1; shift
  say "ERROR: $*" >&2
  log_tail "$name" >&2
  exit 1
}

port_free() { ! (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME PORT|- -- COMMAND...: starts COMMAND detached (own session, no terminal, survives
# the caller's process group), logging to logs/NAME.log, PID in pids/NAME.pid. PORT, the one
# it will listen on, must be free first.
start() {
  local name=$1 port=$2 pid
  shift 3
  if pid=$(pid_of "$name"); then
    say "$name already running (pid $pid)"
    return
  fi
  [ "$port" = - ] || port_free "$port" || die "port 127.0.0.1:$port (for $name) is taken by a process this cluster did not start; see: ss -ltnp 'sport = :$port'"
  {
    echo
    echo "=== $(date -u +%FT%TZ) starting $name"
  } >>"$LOGS/$name.log"
  # 9>&-: the daemon must not inherit (and so hold forever) the lock on $STATE/.lock.
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$PIDS/$name.pid"
  say "started $name (pid $!)"
}

# wait_healthy NAME TIMEOUT_SECONDS CHECK...: polls CHECK until it succeeds; fails early if the
# process exits, or after the timeout, printing the log tail either way.
wait_healthy() {
  local name=$1 timeout=$2 t0
  shift 2
  t0=$(now_us)
  until "$@"; do
    # Read twice: while setsid/nohup exec the program, its /proc cmdline can read empty.
    pid_of "$name" >/dev/null || { sleep 0.3 && pid_of "$name" >/dev/null; } || fail "$name" "$name exited while starting"
    (($(now_us) - t0 < timeout * 1000000)) || fail "$name" "$name not healthy after ${timeout}s (check: $*)"
    sleep 0.2
  done
  say "  $name healthy ($(secs_since "$t0") s)"
}

b64() { base64 -w0 <"$1"; }

# write_kubeconfig FILE USER CERT_BASENAME
write_kubeconfig() {
  local tmp=$1.tmp
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mlops-local
  cluster:
    server: $SERVER
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$PKI/$3.crt")
    client-key-data: $(b64 "$PKI/$3.key")
contexts:
- name: mlops-local
  context:
    cluster: mlops-local
    user: $2
current-context: mlops-local
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$1"
}

# ---------------------------------------------------------------- fast path

cluster_healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  [ -s "$SA_DIR/token" ] && apiserver_ready && pick_kubectl && pid_of s3 >/dev/null && s3_healthy || return 1
  local ready
  ready=$(kc get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c '^True$') || true
  [ "${ready:-0}" -ge "${#NODES[@]}" ] && pid_of coredns >/dev/null && dns_ready || return 1
  [ "$NODE" = kwok ] && return 0
  for c in "${NODE_COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  real_node_ready
}

summary() {
  echo
  echo "kubeconfig:      $KUBECONFIG_PATH"
  echo "                 export KUBECONFIG=$KUBECONFIG_PATH"
  echo "service account: $SA_DIR/{token,ca.crt,namespace} ($SA_NAMESPACE/$SA_NAME;"
  echo "                 in-cluster clients: KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=$APISERVER_PORT)"
  echo "logs:            $LOGS/"
  echo
  kc get nodes -o wide
  echo
}

# Switching between simulated and real nodes means a new cluster.
if [ -e "$STATE/node-mode" ] && [ "$(node_mode)" != "$NODE" ]; then
  [ "${MLOPS_CLUSTER_SWITCH:-0}" = 1 ] ||
    die "this cluster runs with NODE=$(node_mode); run down.sh first (or set MLOPS_CLUSTER_SWITCH=1) to switch to NODE=$NODE"
  say "this cluster runs with NODE=$(node_mode); replacing it with a NODE=$NODE cluster (MLOPS_CLUSTER_SWITCH=1)"
  "$here/down.sh"
fi

shopt -s nullglob dotglob
existing=("$STATE"/*)
shopt -u nullglob dotglob
if [ ${#existing[@]} -gt 0 ] && [ ! -e "$MARKER" ]; then
  die "$STATE is not empty and was not made by up.sh; point MLOPS_CLUSTER_STATE elsewhere"
fi
mkdir -p "$STATE"
touch "$MARKER"
exec 9>"$STATE/.lock"
if ! flock -n 9; then
  say "waiting for another up.sh/down.sh to finish (lock $STATE/.lock)"
  flock -w 300 9 || die "another up.sh/down.sh still holds $STATE/.lock after 300 s"
fi

[ "$NODE" = kwok ] || [ "$(id -u)" = 0 ] || die "NODE=real needs root (network devices, iptables, mounts)"

if cluster_healthy; then
  running_bin=$(cat "$STATE/bin-dir" 2>/dev/null || true)
  if [ "$running_bin" != "$(expected_bin_dir)" ]; then
    warn "the running cluster uses $running_bin but versions.env now says $(expected_bin_dir); run down.sh and up.sh to switch"
  fi
  say "cluster already up and healthy (state: $STATE)"
  summary
  say "total $(secs_since "$T0") s"
  exit 0
fi

# ---------------------------------------------------------------- binaries and tools

step "binaries (build.sh; a no-op once cached)"
BIN=$("$here/build.sh" | tail -n 1)
for c in "${COMPONENTS[@]}"; do [ -x "$BIN/$c" ] || die "build.sh did not produce $BIN/$c"; done
done_step "$BIN"

missing=()
for tool in openssl:openssl curl:curl base64:coreutils flock:util-linux setsid:util-linux; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (apt)"
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  done_step "apt"
fi
pick_kubectl || die "no kubectl: neither $BIN/kubectl nor one on PATH"

mkdir -p "$PKI" "$LOGS" "$PIDS" "$STATE/kubeconfigs" "$STATE/kwok" "$SA_DIR"
echo "$BIN" >"$STATE/bin-dir"
echo "$NODE" >"$STATE/node-mode"

# ---------------------------------------------------------------- PKI

# cert NAME SUBJECT EXTENSIONS: an EC P-256 key and a certificate signed by the cluster CA.
cert() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key" 2>/dev/null
  openssl req -new -key "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAserial "$PKI/ca.srl" \
    -CAcreateserial -days 365 -sha256 -extfile <(printf '%b\n' "$3") -out "$PKI/$1.crt" 2>/dev/null
  rm -f "$PKI/$1.csr"
}
client_ext='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'

if [ ! -e "$PKI/.complete" ]; then
  step "PKI (openssl)"
  rm -rf "${PKI:?}"/*
  (
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=mlops-operator-local-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt"
    cert apiserver "/CN=kube-apiserver" \
      "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # etcd uses its serving certificate as a client too (its gRPC gateway), hence both usages.
    cert etcd-server "/CN=etcd" \
      "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost"
    cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" "$client_ext"
    cert admin "/O=system:masters/CN=mlops-admin" "$client_ext"
    cert kube-controller-manager "/CN=system:kube-controller-manager" "$client_ext"
    cert kube-scheduler "/CN=system:kube-scheduler" "$client_ext"
    cert kwok "/O=system:masters/CN=kwok" "$client_ext"
    # The API server's identity towards kubelets (logs, exec, port-forward on the real node).
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client_ext"
    # Service-account token signing pair (RSA: RS256 is what every token verifier accepts).
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
  )
  touch "$PKI/.complete"
  done_step "CA, serving and client certificates, service-account key pair in $PKI"
fi

# Fail before starting anything if a port we need is taken by someone else.
declare -A port_of=([etcd]=$ETCD_CLIENT_PORT [kube-apiserver]=$APISERVER_PORT
  [kube-controller-manager]=$KCM_PORT [kube-scheduler]=$SCHEDULER_PORT)
for c in "${!port_of[@]}"; do
  pid_of "$c" >/dev/null || port_free "${port_of[$c]}" ||
    die "port 127.0.0.1:${port_of[$c]} (for $c) is taken by a process this cluster did not start; see: ss -ltnp 'sport = :${port_of[$c]}'"
done
pid_of etcd >/dev/null || port_free "$ETCD_PEER_PORT" ||
  die "port 127.0.0.1:$ETCD_PEER_PORT (etcd peer) is taken by a process this cluster did not start"

write_kubeconfig "$KUBECONFIG_PATH" mlops-admin admin
for c in kube-controller-manager kube-scheduler kwok; do
  write_kubeconfig "$STATE/kubeconfigs/$c.kubeconfig" "$c" "$c"
done
cp "$here/kwok-stages.yaml" "$STATE/kwok/stages.yaml"

# ---------------------------------------------------------------- control plane

step "etcd ${ETCD_VERSION} on 127.0.0.1:$ETCD_CLIENT_PORT"
# --unsafe-no-fsync: a throw-away test cluster does not need durable writes, and it is much faster.
start etcd "$ETCD_CLIENT_PORT" -- "$BIN/etcd" \
  --name=mlops-local \
  --data-dir="$STATE/etcd" \
  --listen-client-urls="https://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls="https://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="mlops-local=http://127.0.0.1:$ETCD_PEER_PORT" \
  --cert-file="$PKI/etcd-server.crt" --key-file="$PKI/etcd-server.key" \
  --client-cert-auth --trusted-ca-file="$PKI/ca.crt" \
  --unsafe-no-fsync \
  --log-level=warn
wait_healthy etcd 30 etcd_healthy

step "kube-apiserver ${KUBE_VERSION} on $SERVER"
start kube-apiserver "$APISERVER_PORT" -- "$BIN/kube-apiserver" \
  --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
  --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
  --etcd-servers="https://127.0.0.1:$ETCD_CLIENT_PORT" \
  --etcd-cafile="$PKI/ca.crt" --etcd-certfile="$PKI/apiserver-etcd-client.crt" --etcd-keyfile="$PKI/apiserver-etcd-client.key" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --allow-privileged=true \
  --profiling=false \
  --v=1
wait_healthy kube-apiserver 90 apiserver_ready

# ---------------------------------------------------------------- controllers and kwok

step "kube-controller-manager, kube-scheduler, kwok ${KWOK_VERSION}"
start kube-controller-manager "$KCM_PORT" -- "$BIN/kube-controller-manager" \
  --kubeconfig="$STATE/kubeconfigs/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
  --leader-elect=false \
  --controllers='*' \
  --use-service-account-credentials=true \
  --root-ca-file="$PKI/ca.crt" \
  --service-account-private-key-file="$PKI/sa.key" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --cluster-name=mlops-local \
  --profiling=false \
  --v=1
start kube-scheduler "$SCHEDULER_PORT" -- "$BIN/kube-scheduler" \
  --kubeconfig="$STATE/kubeconfigs/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
  --leader-elect=false \
  --profiling=false \
  --v=1
if ! pid_of kwok >/dev/null; then
  # A kwok process takes a new identity (hostname_uuid) each start: a restarted one would wait up
  # to 40 s for the node Leases of its predecessor to expire before it manages nodes and pods.
  mapfile -t stale < <(kc -n kube-node-lease get leases \
    -o jsonpath='{range .items[*]}{.metadata.name} {.spec.holderIdentity}{"\n"}{end}' |
    awk -v me="$(hostname)_" 'index($2, me) == 1 {print $1}')
  if [ ${#stale[@]} -gt 0 ]; then
    kc -n kube-node-lease delete lease "${stale[@]}" >/dev/null
    say "deleted the node leases of a previous kwok: ${stale[*]}"
  fi
fi
# KWOK_WORKDIR keeps kwok from reading ~/.kwok/kwok.yaml; kwok serves nothing (no --server-address).
# Pod IPs come from one pool, 10.244.0.1 upwards (kwok counts from the address given in --cidr).
start kwok - -- env KWOK_WORKDIR="$STATE/kwok" "$BIN/kwok" \
  --kubeconfig="$STATE/kubeconfigs/kwok.kubeconfig" \
  --config="$STATE/kwok/stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds=40 \
  --cidr=10.244.0.1/16
wait_healthy kube-controller-manager 60 healthz_ok "$KCM_PORT"
wait_healthy kube-scheduler 60 healthz_ok "$SCHEDULER_PORT"

# ---------------------------------------------------------------- nodes

if [ ${#NODES[@]} -gt 0 ]; then
  step "nodes ${NODES[*]}"
  for i in "${!NODES[@]}"; do
    n=${NODES[$i]}
    kc get node "$n" >/dev/null 2>&1 && continue
    # A kubelet registers its node with a status; so do we: capacity, addresses, nodeInfo.
    # kwok (stage node-ready) adds the conditions.
    kc create -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $n
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node.kubernetes.io/instance-type: kwok-32x128
status:
  capacity: {cpu: "32", memory: 128Gi, pods: "110", ephemeral-storage: 500Gi}
  allocatable: {cpu: "32", memory: 128Gi, pods: "110", ephemeral-storage: 500Gi}
  addresses:
  - {type: InternalIP, address: 10.240.0.$((10 + i))}
  - {type: Hostname, address: $n}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    osImage: kwok simulated node
    kernelVersion: kwok-$KWOK_VERSION
    containerRuntimeVersion: kwok://$KWOK_VERSION
    kubeletVersion: $KUBE_VERSION
    kubeProxyVersion: $KUBE_VERSION
    machineID: ""
    systemUUID: ""
    bootID: ""
EOF
  done
  nodes_ready() {
    local out
    out=$(kc get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{.spec.taints}{"\n"}{end}' 2>/dev/null) || return 1
    # Ready, and the node lifecycle controller has lifted its not-ready taint (so pods schedule).
    [ "$(grep -c '^True *$' <<<"$out")" -ge "${#NODES[@]}" ]
  }
  wait_healthy kwok 60 nodes_ready
  done_step "${#NODES[@]} nodes Ready"
fi

if [ "$NODE" = real ]; then
  step "real node $NODE_NAME: containerd, kubelet ${KUBE_VERSION}, kube-proxy, pod network $POD_CIDR"
  node_up
  netpol_up
  done_step "node $NODE_NAME Ready, NetworkPolicies enforced (kube-router ${KUBE_ROUTER_VERSION})"
fi

# ---------------------------------------------------------------- S3 (issue #17; functions in s3.sh)

step "S3 server versitygw ${VERSITYGW_VERSION}"
s3_up
done_step "s3"

step "CoreDNS ${COREDNS_VERSION} for $CLUSTER_DOMAIN on $(dns_listen | tr ' ' :) (dns.sh)"
dns_up
done_step "CoreDNS ready"

# ---------------------------------------------------------------- service account for in-cluster style clients

step "ServiceAccount $SA_NAMESPACE/$SA_NAME and its token in $SA_DIR"
kc create namespace "$SA_NAMESPACE" --dry-run=client -o yaml | kc apply -f - >/dev/null
kc -n "$SA_NAMESPACE" create serviceaccount "$SA_NAME" --dry-run=client -o yaml | kc apply -f - >/dev/null
if [ ! -s "$SA_DIR/token" ]; then
  kc -n "$SA_NAMESPACE" create token "$SA_NAME" --duration=8760h >"$SA_DIR/token.tmp"
  mv "$SA_DIR/token.tmp" "$SA_DIR/token"
fi
cp "$PKI/ca.crt" "$SA_DIR/ca.crt"
printf '%s' "$SA_NAMESPACE" >"$SA_DIR/namespace"
chmod 600 "$SA_DIR/token"
done_step "token valid for 1 year"

say "cluster up (state: $STATE)"
summary
say "total $(secs_since "$T0") s"
