"""An InferenceService's NetworkPolicy and the feedback token (issue #19): who may predict, who
may post feedback, who may read /metrics, by named port; the token reaches the server from its
Secret through the kubelet, never through the operator."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_operator.build import inferenceservice as b
from mlops_operator.build.networkpolicy import network_policy
from mlops_operator.reconcile.inferenceservice import Apply, Delete, access_steps
from mlops_operator.settings import Settings

SETTINGS = Settings(monitoring_namespaces=("monitoring", "observability"), operator_namespace="mlops-system")
OPERATOR = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlops-system"}},
    "podSelector": {
        "matchLabels": {"app.kubernetes.io/name": "mlops-operator", "app.kubernetes.io/component": "operator"}
    },
}


def ns(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


MONITORING = [OPERATOR, ns("monitoring"), ns("observability")]


def isvc(**access: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {"model": "iris", "version": 3, "access": access},
    }


def parsed(body: dict[str, Any]) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(body["spec"])


NAMES = {8080: "http", 8081: "grpc", 8082: "monitoring"}


def rules(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """{port name: peers} of the policy's ingress rules (which name ports by number)."""
    policy = network_policy(body, parsed(body), SETTINGS)
    assert policy is not None
    out = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["protocol"] == "TCP"
            out[NAMES[port["port"]]] = rule["from"]
    return out


CASES = {
    "defaults-own-namespace": ({}, [ns("ml")], [ns("ml"), *MONITORING]),
    "prediction-from-two-namespaces": (
        {"predictionFrom": ["web", "batch", "web"]},
        [ns("web"), ns("batch")],
        [ns("ml"), *MONITORING],
    ),
    "prediction-from-everywhere": (
        {"predictionFrom": ["*"]},
        [{"namespaceSelector": {}}],
        [ns("ml"), *MONITORING],
    ),
    "feedback-from-a-labeller": (
        {"feedbackFrom": [{"namespace": "labelling", "podLabels": {"app": "labeller"}}]},
        [ns("ml")],
        [{**ns("labelling"), "podSelector": {"matchLabels": {"app": "labeller"}}}, *MONITORING],
    ),
    "feedback-from-nobody": ({"feedbackFrom": []}, [ns("ml")], MONITORING),
}


@pytest.mark.parametrize(("access", "prediction", "monitoring"), CASES.values(), ids=CASES.keys())
def test_policy_admits_each_port_from_its_sources(
    access: dict[str, Any], prediction: list[dict[str, Any]], monitoring: list[dict[str, Any]]
) -> None:
    # gRPC serves prediction too (issue #20): the same sources as HTTP.
    assert rules(isvc(**access)) == {"http": prediction, "grpc": prediction, "monitoring": monitoring}


def test_grpc_off_leaves_its_port_out() -> None:
    body = isvc()
    body["spec"]["grpc"] = False
    assert set(rules(body)) == {"http", "monitoring"}


def test_policy_selects_both_tracks_and_is_owned() -> None:
    body = isvc()
    policy = network_policy(body, parsed(body), SETTINGS)
    assert policy is not None
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["metadata"]["name"] == "iris"
    assert policy["metadata"]["namespace"] == "ml"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"mlops.dev/inference-service": "iris"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress is left alone
    # The ports it names are the Deployment's container ports.
    deployment = b.deployment(body, parsed(body), MV, SETTINGS, track="canary", replicas=1)
    named = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert set(rules(body)) == named


MV = {
    "metadata": {"name": "iris-3"},
    "spec": {"version": 3, "artifact": {"uri": "pvc://artifacts/models/iris", "sha256": "a" * 64}},
}


def test_no_policy_when_turned_off_and_the_old_one_deleted() -> None:
    body = isvc(networkPolicy=False)
    assert network_policy(body, parsed(body), SETTINGS) is None
    assert access_steps(body, parsed(body), SETTINGS, policy_left=False) == ()
    assert access_steps(body, parsed(body), SETTINGS, policy_left=True) == (Delete("NetworkPolicy", "iris"),)
    on = isvc()
    [step] = access_steps(on, parsed(on), SETTINGS, policy_left=False)
    assert isinstance(step, Apply) and step.manifest["kind"] == "NetworkPolicy"


def test_feedback_token_comes_from_the_secret_through_the_kubelet() -> None:
    body = isvc(feedbackToken={"name": "feedback", "key": "token"})
    container = b.deployment(body, parsed(body), MV, SETTINGS, track="stable", replicas=1)["spec"][
        "template"
    ]["spec"]["containers"][0]
    assert container["env"] == [
        {"name": "MLOPS_FEEDBACK_TOKEN", "valueFrom": {"secretKeyRef": {"name": "feedback", "key": "token"}}}
    ]
    plain = isvc()
    assert (
        "env"
        not in b.deployment(plain, parsed(plain), MV, SETTINGS, track="stable", replicas=1)["spec"][
            "template"
        ]["spec"]["containers"][0]
    )


@pytest.mark.parametrize(
    "access",
    [
        {"predictionFrom": ["Web"]},
        {"predictionFrom": ["a*"]},
        {"feedbackFrom": [{"podLabels": {"a": "b"}}]},
        {"feedbackToken": {"name": "x"}},
    ],
    ids=["upper-case-namespace", "glob", "source-without-namespace", "token-without-key"],
)
def test_access_refuses_bad_sources(access: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parsed(isvc(**access))


def test_monitoring_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {"MLOPS_MONITORING_NAMESPACES": "prom, grafana", "MLOPS_OPERATOR_NAMESPACE": "ops"}
    )
    assert settings.monitoring_namespaces == ("prom", "grafana") and settings.operator_namespace == "ops"
    assert Settings.from_env({}).monitoring_namespaces == ("monitoring",)
