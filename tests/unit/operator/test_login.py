"""In a pod the operator reaches the API server by the kubelet's service environment, not by DNS."""

from __future__ import annotations

from mlops_operator.handlers import in_cluster_server


def test_service_host_and_port_from_the_environment() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_server(env) == "https://10.96.0.1:443"


def test_ipv6_service_host_is_bracketed() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_server(env) == "https://[fd00::1]:443"


def test_outside_a_pod_there_is_no_in_cluster_server() -> None:
    assert in_cluster_server({}) is None
    assert in_cluster_server({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) is None
