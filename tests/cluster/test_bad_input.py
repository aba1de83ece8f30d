"""Bad input across the three kinds on the real API server (issue #19): every decision that
can be made before launch is made before launch.

Two tables: what admission refuses (the CRD schema and its CEL rules: the server's own 422
message is checked), and what the operator refuses before any pod (Failed/InvalidSpec, a
Warning Event with the reason, and no Job). Each row is one named case; the suite grows toward
the issue's ≥ 40 cases.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from clusterkit import (
    create,
    inferenceservice,
    modelversion,
    trainingjob,
)

from mlops_operator.kube import Kube, KubeError

SHA = "0" * 64


def named(doc: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["metadata"]["name"] = name
    return out


TJ = trainingjob("ok")
MV = modelversion("ok", 1, "pvc://artifacts/models/ok", SHA)
IS = inferenceservice("ok")

DNS1123 = "name must be a DNS-1123 label"
DNS1035 = "name must be a DNS-1035 label"

# (case, document, what the server's answer says)
REFUSED_AT_ADMISSION = [
    ("tj-dotted-name", named(TJ, "good.dot"), DNS1123),
    ("tj-trailing-dash", named(TJ, "bad-"), DNS1123),
    ("mv-dotted-name", named(MV, "iris.v1"), DNS1123),
    ("is-dotted-name", named(IS, "good.dot"), DNS1035),
    ("is-digit-first-name", named(IS, "9good"), DNS1035),
    ("tj-long-name", named(TJ, "x" * 60), "name must be at most 50 characters"),
]


@pytest.mark.parametrize(
    ("doc", "message"),
    [(d, m) for _, d, m in REFUSED_AT_ADMISSION],
    ids=[n for n, _, _ in REFUSED_AT_ADMISSION],
)
def test_admission_refuses(kube: Kube, namespace: str, doc: dict[str, Any], message: str) -> None:
    with pytest.raises(KubeError) as refused:
        create(kube, namespace, doc)
    assert refused.value.status == 422
    assert message in refused.value.body, refused.value.body


@pytest.mark.parametrize(
    "doc",
    [named(TJ, "9digits-first"), named(MV, "iris-v1"), named(IS, "iris-prod")],
    ids=["tj-digit-first", "mv-plain", "is-plain"],
)
def test_admission_admits_names_every_child_can_carry(
    kube: Kube, namespace: str, doc: dict[str, Any]
) -> None:
    assert create(kube, namespace, doc)["metadata"]["name"] == doc["metadata"]["name"]
