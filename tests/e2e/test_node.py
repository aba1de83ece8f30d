"""The cluster's real node: a pod from a locally built image runs and answers HTTP through its
Service's ClusterIP from a second pod; pods reach the API server through the kubernetes Service."""

from __future__ import annotations

import pytest
from e2ekit import SERVER_IMAGE, Cluster

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
