"""Shadow mode on real pods (issue #22): new versions judged on live labelled traffic before they
serve a user, and the accuracy estimate before any label.

The InferenceService runs `spec.canary.mode: shadow`. In order:
(c) the champion (RandomForest on iris) sees ordinary iris, then a moderate shift (a second
    site whose scanner adds 1.5 cm to petal lengths and 0.5 cm to widths): its label-free
    estimate (status.metrics.estimatedAccuracy) drops before any label is posted;
(b) a version trained on iris plus labelled rows of the second site of tests/e2e/loop.py (the big
    shift: +8 cm, +3 cm) is shadowed under that site's traffic, judged Better on the labelled
    pairs and promoted;
(a) a version trained on iris alone passes its offline gate (accuracy >= 0.9 on iris) but is
    worse on the live traffic: judged Worse and rolled back, the champion keeps serving.
Every user request of the run is answered 200 (the challenger never fails a user). Labels are
posted after the traffic, as they arrive in life (later than the answers): the mirror's answers
are in by then, so each labelled row is a pair.
"""

from __future__ import annotations

import json
import random
from typing import Any

import loop
import pytest
from e2ekit import Cluster, Storage

pytestmark = pytest.mark.e2e

ISVC = "iris"
SITE2_DIR = "site2"
# The moderate shift of (c), under which a RandomForest's confidence drops with its accuracy.
# Under loop.py's big shift the forest stays confident (every far-out flower is "virginica" with
# probability ~1), so a confidence-based estimate cannot see it: the drift score does.
MODERATE = (1.5, 0.5)


def shifted(n: int, seed: int, offsets: tuple[float, float], share: float) -> loop.Traffic:
    base = loop.normal_traffic(n, seed)
    rng = random.Random(seed + 1000)
    rows = []
    for row in base.rows:
        dl, dw = offsets if rng.random() < share else (0.0, 0.0)
        rows.append([row[0], row[1], round(row[2] + dl, 1), round(row[3] + dw, 1)])
    return loop.Traffic(rows, base.labels)


BIG = (loop.PETAL_LENGTH_OFFSET, loop.PETAL_WIDTH_OFFSET)


def training_job(name: str, storage: Storage, *, site2: bool) -> dict[str, Any]:
    return loop.forest_job(
        name, storage, [{**storage.location(SITE2_DIR), "format": "csv"}] if site2 else None
    )


def inference_service() -> dict[str, Any]:
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": ISVC},
        "spec": {
            "model": "iris",
            "policy": {"select": "latest"},
            "replicas": 1,
            "canary": {
                "mode": "shadow",
                "maxErrorRate": 0.05,
                "shadow": {"minPairs": 60, "deadlineSeconds": 900, "onInconclusive": "Rollback"},
            },
            "monitoring": {"intervalSeconds": 5, "drift": {"window": 100}},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        },
    }  # fmt: skip


def test_champion_serves_in_shadow_mode(cluster: Cluster, namespace: str, storage: Storage) -> None:
    site2 = shifted(300, 11, BIG, share=1.0)
    lines = ["sepal length (cm),sepal width (cm),petal length (cm),petal width (cm),target"]
    lines += [
        ",".join(str(v) for v in [*row, label]) for row, label in zip(site2.rows, site2.labels, strict=True)
    ]
    csv = "\n".join(lines) + "\n"
    if storage.s3 is not None:
        storage.s3.client.put_object(Bucket=storage.bucket, Key=f"{SITE2_DIR}/site2.csv", Body=csv.encode())
    else:
        cluster.run_python(
            namespace,
            "write-site2",
            f"""
            import os
            os.makedirs("/data/{SITE2_DIR}", exist_ok=True)
            with open("/data/{SITE2_DIR}/site2.csv", "w") as f:
                f.write({csv!r})
            """,
            claim=storage.claim or "",
        )
    cluster.apply(namespace, training_job("iris-v1-train", storage, site2=False), inference_service())
    loop.wait_phase(cluster, namespace, "modelversion", "iris-v1", "Verified", timeout=600)
    cluster.wait(namespace, f"inferenceservice/{ISVC}", "condition=Ready", timeout=300)
    service = cluster.get(namespace, "service", ISVC)
    assert service["spec"]["selector"]["mlops.dev/track"] == "stable"
    assert cluster.get(namespace, "service", f"{ISVC}-shadow") is not None


def test_estimated_accuracy_drops_under_the_shift_before_any_label(cluster: Cluster, namespace: str) -> None:
    """(c)"""
    sent = loop.send(
        cluster, namespace, ISVC, loop.normal_traffic(100, seed=1), pod="send-normal", feedback=False
    )
    assert not sent.errors, sent.errors
    normal = loop.wait_status(
        cluster, namespace, "inferenceservice", ISVC,
        lambda st: (st.get("metrics") or {}).get("estimatedAccuracy") is not None
        and (st.get("metrics") or {}).get("requests", 0) >= 10,
        timeout=120, what="an accuracy estimate",
    )["metrics"]  # fmt: skip
    sent = loop.send(
        cluster, namespace, ISVC, shifted(100, 5, MODERATE, share=1.0), pod="send-moderate", feedback=False
    )
    assert not sent.errors, sent.errors
    drop = normal["estimatedAccuracy"] - 0.05
    after = loop.wait_status(
        cluster, namespace, "inferenceservice", ISVC,
        lambda st: ((st.get("metrics") or {}).get("estimatedAccuracy") or 1.0) < drop,
        timeout=120, what=f"the estimate below {drop:.3f}",
    )["metrics"]  # fmt: skip
    assert not after.get("labelledSamples"), after  # no label was posted
    print(f"estimatedAccuracy {normal['estimatedAccuracy']} normal -> {after['estimatedAccuracy']} shifted")


def _shadow_verdict(cluster: Cluster, namespace: str, version: str) -> dict[str, Any]:
    """Send the second site's traffic (half of it), labels after, until status.canary decides."""
    loop.wait_shadow_analysis(cluster, namespace, ISVC, version)
    champion = cluster.status(namespace, "inferenceservice", ISVC)["modelVersion"]
    traffic = shifted(300, 3, BIG, share=0.5)
    status, rounds = loop.shadow_verdict(cluster, namespace, ISVC, traffic, pod=f"send-{version}")
    assert rounds and all(sent.versions == {champion: sent.requests} for sent in rounds), rounds
    return status


def test_a_better_version_is_judged_better_and_promoted(
    cluster: Cluster, namespace: str, storage: Storage
) -> None:
    """(b)"""
    cluster.apply(namespace, training_job("iris-v2-train", storage, site2=True))
    loop.wait_phase(cluster, namespace, "modelversion", "iris-v2", "Verified", timeout=600)
    status = _shadow_verdict(cluster, namespace, "iris-v2")
    canary = status["canary"]
    print(f"iris-v2: {json.dumps(canary)}")
    assert (canary["phase"], canary["verdict"]) == ("Promoted", "Better"), canary
    assert canary["pairs"] >= 60 and canary["challengerScore"] > canary["championScore"], canary
    assert canary["pValue"] < 0.05 and 0 < canary["agreement"] < 1, canary
    cond = cluster.condition(namespace, "inferenceservice", ISVC, "ShadowVerdict")
    assert (cond["status"], cond["reason"]) == ("True", "Better"), cond
    loop.wait_status(
        cluster, namespace, "inferenceservice", ISVC, lambda st: st.get("modelVersion") == "iris-v2",
        timeout=300, what="iris-v2 serving",
    )  # fmt: skip


def test_a_version_worse_on_live_traffic_is_judged_worse_and_rolled_back(
    cluster: Cluster, namespace: str, storage: Storage
) -> None:
    """(a): it passes its offline gate (iris) but never saw the second site."""
    cluster.apply(namespace, training_job("iris-v3-train", storage, site2=False))
    mv = loop.wait_phase(cluster, namespace, "modelversion", "iris-v3", "Verified", timeout=600)
    assert (
        mv["conditions"]
        and cluster.get(namespace, "modelversion", "iris-v3")["spec"]["metrics"]["accuracy"] >= 0.9
    )  # the offline gate passed
    status = _shadow_verdict(cluster, namespace, "iris-v3")
    canary = status["canary"]
    print(f"iris-v3: {json.dumps(canary)}")
    assert (canary["phase"], canary["verdict"]) == ("RolledBack", "Worse"), canary
    assert canary["challengerScore"] < canary["championScore"] and canary["pValue"] < 0.05, canary
    assert status["modelVersion"] == "iris-v2"  # the champion kept serving
    cond = cluster.condition(namespace, "inferenceservice", ISVC, "ShadowVerdict")
    assert (cond["status"], cond["reason"]) == ("False", "Worse"), cond
    # Still served by the champion alone, every request answered.
    sent = loop.send(
        cluster, namespace, ISVC, loop.normal_traffic(50, seed=9), pod="send-after", feedback=False
    )
    assert not sent.errors and sent.versions == {"iris-v2": sent.requests}, sent
