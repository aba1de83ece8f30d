"""Pure builder of an InferenceService's NetworkPolicy (issue #19).

Without it every pod of the cluster could post labels to a serving pod (poisoning the retraining
data and moving the accuracy trigger) and read its /metrics. The server serves prediction on
ports `http` and `grpc` and feedback with /metrics on port `monitoring`; the policy selects the
InferenceService's pods (both tracks) and admits, by port number:
- prediction from the namespaces in spec.access.predictionFrom (default: its own; '*': every
  namespace's pods);
- the monitoring port from spec.access.feedbackFrom (default: its own namespace's pods), from the
  operator's pods and from the pods of the operator's monitoring namespaces (settings).
Namespaces are selected by `kubernetes.io/metadata.name`, which the API server sets on every
namespace. Traffic from the pod's own node (kubelet probes) is left to the enforcer, which
admits it as the NetworkPolicy API specifies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mlops_contract.api.common import LABEL_INFERENCE_SERVICE
from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_operator.build.inferenceservice import (
    GRPC_PORT,
    GRPC_PORT_NAME,
    MONITORING_PORT,
    MONITORING_PORT_NAME,
    PORT,
    PORT_NAME,
    owned_meta,
    shadowing,
)
from mlops_operator.settings import Settings

NAMESPACE_NAME: Final = "kubernetes.io/metadata.name"
# The operator's pods (manifests/base/deployment.yaml).
OPERATOR_POD_LABELS: Final = {
    "app.kubernetes.io/name": "mlops-operator",
    "app.kubernetes.io/component": "operator",
}


def prediction_ports(spec: InferenceServiceSpec) -> tuple[str, ...]:
    """The ports that serve prediction, by name: HTTP and, unless spec.grpc is false, gRPC (issue #20)."""
    return (PORT_NAME, GRPC_PORT_NAME) if spec.grpc else (PORT_NAME,)


def _namespace(name: str, pod_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME: name}}}
    if pod_labels:
        peer["podSelector"] = {"matchLabels": dict(pod_labels)}
    return peer


# The policy names ports by number, not by the container's port names: named ports make the
# enforcer resolve them per destination pod, which enforcers get wrong in places (kube-router on
# the real node refused the InferenceService's own namespace with named ports), and the numbers
# are the builder's constants anyway.
_PORT_NUMBERS: Final = {PORT_NAME: PORT, GRPC_PORT_NAME: GRPC_PORT, MONITORING_PORT_NAME: MONITORING_PORT}


def _ports(*names: str) -> list[dict[str, Any]]:
    return [{"port": _PORT_NUMBERS[name], "protocol": "TCP"} for name in names]


def prediction_peers(namespace: str, spec: InferenceServiceSpec, name: str = "") -> list[dict[str, Any]]:
    """The peers `predictionFrom` admits; in shadow mode also the service's own pods, which
    mirror requests to the challenger (issue #22)."""
    sources = spec.access.prediction_from
    if sources is None:
        return [_namespace(namespace)]
    if "*" in sources:
        return [{"namespaceSelector": {}}]
    peers = [_namespace(n) for n in dict.fromkeys(sources)]
    if shadowing(spec) and namespace not in sources:
        peers.append({"podSelector": {"matchLabels": {LABEL_INFERENCE_SERVICE: name}}})
    return peers


def monitoring_peers(namespace: str, spec: InferenceServiceSpec, settings: Settings) -> list[dict[str, Any]]:
    feedback = spec.access.feedback_from
    peers = (
        [_namespace(namespace)]
        if feedback is None
        else [_namespace(source.namespace, source.pod_labels) for source in feedback]
    )
    peers.append(_namespace(settings.operator_namespace, OPERATOR_POD_LABELS))
    peers += [_namespace(n) for n in settings.monitoring_namespaces]
    return peers


def network_policy(
    isvc: Mapping[str, Any], spec: InferenceServiceSpec, settings: Settings
) -> dict[str, Any] | None:
    """The NetworkPolicy `<isvc>`, or None when spec.access.networkPolicy is false."""
    if not spec.access.network_policy:
        return None
    name, namespace = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": owned_meta(isvc, spec, name),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_INFERENCE_SERVICE: name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": _ports(*prediction_ports(spec)), "from": prediction_peers(namespace, spec, name)},
                {"ports": _ports(MONITORING_PORT_NAME), "from": monitoring_peers(namespace, spec, settings)},
            ],
        },
    }
