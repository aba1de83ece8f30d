"""The cluster's real node: a pod from a locally built image runs and answers HTTP through its
Service's ClusterIP from a second pod; pods reach the API server through the kubernetes Service;
pods resolve Service names through the cluster's DNS, and (local cluster) nothing else; a
NetworkPolicy really drops packets from another namespace while its own namespace gets through."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from e2ekit import SERVER_IMAGE, Cluster

from waiting import wait_for

pytestmark = pytest.mark.e2e


def test_pod_answers_http_through_its_service_cluster_ip(cluster: Cluster, namespace: str) -> None:
    web = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "web",
                    "image": SERVER_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    # Serves the image's own /etc, read-only root and all.
                    "command": ["python3", "-m", "http.server", "8080", "--directory", "/etc"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    cluster.apply(namespace, web, service)
    cluster.wait(namespace, "pod/web", "condition=Ready", timeout=120)
    pod = cluster.get(namespace, "pod", "web")
    assert pod["spec"]["nodeName"], "the pod was not scheduled"
    cluster_ip = cluster.get(namespace, "service", "web")["spec"]["clusterIP"]

    out = cluster.run_python(
        namespace,
        "client",
        f"""
        import socket, time, urllib.request
        # A new Service routes once kube-proxy has programmed it (eventually consistent): retry.
        deadline = time.monotonic() + 90
        while True:
            try:
                body = urllib.request.urlopen("http://{cluster_ip}/os-release", timeout=5).read().decode()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise
                print("retrying:", exc)
                time.sleep(1)
        print(socket.gethostname(), "got", body.splitlines()[0])
        """,
    )
    assert "client got" in out
    assert "Debian" in out or "NAME=" in out


def test_pods_reach_the_api_server_through_the_kubernetes_service(cluster: Cluster, namespace: str) -> None:
    out = cluster.run_python(
        namespace,
        "api-client",
        """
        import os, ssl, urllib.request, urllib.error
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        ctx = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
        token = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()
        req = urllib.request.Request(f"https://{host}:{port}/version", headers={"Authorization": "Bearer " + token})
        print(urllib.request.urlopen(req, context=ctx, timeout=10).read().decode())
        """,
    )
    assert '"gitVersion"' in out


# Run in a pod: what its resolver answers for each name (sorted IPv4 addresses, or the getaddrinfo
# error), and the resolv.conf the kubelet gave it.
RESOLVE = """
import json, socket
def resolve(name):
    try:
        return sorted({{ai[4][0] for ai in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)}})
    except socket.gaierror as exc:
        return {{"errno": exc.errno, "error": exc.strerror}}
print(json.dumps({{"resolv.conf": open("/etc/resolv.conf").read(), **{{n: resolve(n) for n in {names!r}}}}}))
"""


def resolve_in_a_pod(cluster: Cluster, namespace: str, pod: str, *names: str) -> dict[str, object]:
    out = cluster.run_python(namespace, pod, RESOLVE.format(names=list(names)), timeout=120)
    answers = json.loads(out.strip().splitlines()[-1])
    assert isinstance(answers, dict)
    return answers


def test_pods_resolve_service_names_through_the_cluster_dns(cluster: Cluster, namespace: str) -> None:
    # A Service without a selector still has a ClusterIP and a name: nothing needs to run behind it.
    cluster.apply(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "named"},
            "spec": {"ports": [{"port": 80}]},
        },
    )
    named_ip = cluster.get(namespace, "service", "named")["spec"]["clusterIP"]
    api_ip = cluster.get("default", "service", "kubernetes")["spec"]["clusterIP"]
    dns_ip = cluster.get("kube-system", "service", "kube-dns")["spec"]["clusterIP"]
    fqdn = f"named.{namespace}.svc.cluster.local"

    api = "kubernetes.default.svc.cluster.local"
    answers = resolve_in_a_pod(cluster, namespace, "resolver", api, "kubernetes.default", fqdn, "named")

    resolv = str(answers["resolv.conf"]).split("\n")
    assert [line.split()[1] for line in resolv if line.startswith("nameserver")] == [dns_ip], resolv
    search = next(line.split()[1:] for line in resolv if line.startswith("search"))
    assert search[:3] == [f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"], resolv
    assert answers[api] == [api_ip], answers
    assert answers["kubernetes.default"] == [api_ip], answers  # through the search path
    assert answers[fqdn] == [named_ip], answers
    assert answers["named"] == [named_ip], answers  # a Service of the pod's own namespace


def test_pods_resolve_no_name_outside_the_cluster(cluster: Cluster, namespace: str) -> None:
    # pypi.org resolves on this host (its resolver is the one package installs use); in a pod it
    # must not: the cluster's DNS forwards nothing and answers NXDOMAIN itself, so the resolver
    # says "not known" (EAI_NONAME) at once, not "temporary failure" (EAI_AGAIN, a timeout).
    answers = resolve_in_a_pod(cluster, namespace, "resolver-outside", "pypi.org", "no-such-service")
    not_known = {"errno": socket.EAI_NONAME, "error": "Name or service not known"}
    assert answers["pypi.org"] == not_known, answers
    assert answers["no-such-service"] == not_known, answers


NETCHECK_IMAGE = "docker.io/mlops-operator/netcheck:local"  # tests/cluster/local/node/netcheck


def netcheck_pod(name: str, labels: dict[str, str], args: list[str], restart: str) -> dict[str, Any]:
    """A restricted pod of the netcheck image (a static Go program on the node, never pulled)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": restart,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "netcheck",
                    "image": NETCHECK_IMAGE,
                    "imagePullPolicy": "Never",
                    "args": args,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def fetch_from(cluster: Cluster, namespace: str, pod: str, url: str, tries: int) -> tuple[str, str]:
    """`netcheck get URL TRIES` in a pod of `namespace`: its phase (Succeeded on HTTP 200) and log."""
    cluster.apply(namespace, netcheck_pod(pod, {"app": "client"}, ["get", url, str(tries)], "Never"))
    phase = wait_for(
        lambda: (
            (cluster.get(namespace, "pod", pod) or {}).get("status", {}).get("phase")
            in ("Succeeded", "Failed")
            and cluster.get(namespace, "pod", pod)["status"]["phase"]
        ),
        timeout=120,
        interval=1,
        what=f"pod {pod} to finish",
    )
    return str(phase), cluster.kubectl("-n", namespace, "logs", pod, check=False)


@pytest.mark.skipif(
    Path(os.environ.get("MLOPS_E2E_OVERLAY", "overlays/local")).name != "local",
    reason="the local cluster's real node enforces NetworkPolicies (kube-router); kind's pod network here (noderoutes) enforces none",
)
def test_a_network_policy_drops_packets_from_another_namespace(cluster: Cluster, namespace: str) -> None:
    other = f"{namespace}-other"
    cluster.kubectl("create", "namespace", other)
    try:
        cluster.apply(
            namespace,
            netcheck_pod("guarded", {"app": "guarded"}, ["serve", ":8080"], "Always"),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "guarded"},
                "spec": {"selector": {"app": "guarded"}, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        )
        cluster.wait(namespace, "pod/guarded", "condition=Ready", timeout=120)
        url = f"http://guarded.{namespace}.svc.cluster.local/"
        # Without a policy both namespaces get through: what the policy then stops is its doing.
        phase, log = fetch_from(cluster, other, "before", url, tries=60)
        assert phase == "Succeeded" and "netcheck guarded /" in log, log

        cluster.apply(
            namespace,
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "same-namespace-only"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "guarded"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {}}]}],
                },
            },
        )

        # The enforcer applies a new policy within seconds: retry until the other namespace is cut
        # off. kube-router rejects what a policy does not allow (the client's SYN never reaches the
        # pod, it gets a TCP reset), so a denied request fails at once with "connection refused".
        def denied() -> bool:
            cluster.kubectl("-n", other, "delete", "pod", "denied", "--ignore-not-found", "--wait=true")
            phase, log = fetch_from(cluster, other, "denied", url, tries=1)
            return phase == "Failed" and "connection refused" in log

        wait_for(denied, timeout=90, interval=1, what="the policy to cut the other namespace off")
        phase, log = fetch_from(cluster, other, "denied-again", url, tries=3)
        assert phase == "Failed" and "connection refused" in log, log

        # The server still runs and still answers its own namespace: the refusal is the policy's.
        phase, log = fetch_from(cluster, namespace, "allowed", url, tries=10)
        assert phase == "Succeeded" and "netcheck guarded /" in log, log
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
