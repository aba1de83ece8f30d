"""Bad input across the three kinds on the real API server (issue #19): every decision that
can be made before launch is made before launch.

Two tables: what admission refuses (the CRD schema and its CEL rules: the server's own 422
message is checked), and what the operator refuses before any pod (Failed/InvalidSpec, a
Warning Event with the reason, and no Job). Each row is one named case; the suite grows toward
the issue's ≥ 40 cases.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from clusterkit import (
    ROOT,
    condition,
    create,
    events_for,
    finish_pod,
    inferenceservice,
    kubectl,
    modelversion,
    pods_of,
    run_prepare_step,
    status_of,
    trainingjob,
    wait_for,
)

from conftest import OperatorRunner
from mlops_operator.kube import Kube, KubeError
from mlops_operator.settings import Settings

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
    ("tj-underscore", named(TJ, "a_b"), DNS1123),
    ("tj-upper-case", named(TJ, "Iris"), DNS1123),
    ("mv-leading-dash", named(MV, "-v1"), DNS1123),
    ("mv-long-name", named(MV, "m" * 53), "name must be at most 52 characters"),
    ("is-upper-case", named(IS, "Iris"), DNS1035),
    ("is-long-name", named(IS, "s" * 46), "name must be at most 45 characters"),
    (
        "tj-min-trials-above-max",
        named(trainingjob("ok", tuning={"space": {"C": [1, 2]}, "maxTrials": 2, "minTrials": 3}), "ok"),
        "minTrials must not exceed maxTrials",
    ),
    (
        "is-prediction-from-a-glob",
        inferenceservice("ok", access={"predictionFrom": ["team-*"]}),
        "spec.access.predictionFrom[0] in body should match",
    ),
    (
        "is-feedback-token-without-key",
        inferenceservice("ok", access={"feedbackToken": {"name": "token"}}),
        "spec.access.feedbackToken.key: Required value",
    ),
    (
        "is-shadow-settings-in-split-mode",
        inferenceservice("ok", canary={"mode": "split", "shadow": {"minPairs": 50}}),
        "shadow settings need mode shadow",
    ),
    (
        "is-shadow-margin-without-not-worse",
        inferenceservice("ok", canary={"mode": "shadow", "shadow": {"margin": 0.05}}),
        "margin applies only with promoteOn NotWorse",
    ),
    (
        "is-min-labelled-in-shadow-mode",
        inferenceservice("ok", canary={"mode": "shadow", "minLabelled": 100}),
        "minLabelled applies to the split canary",
    ),
    (
        "is-min-labelled-too-small",
        inferenceservice("ok", canary={"minLabelled": 3}),
        "spec.canary.minLabelled",
    ),
    (
        "is-shadow-mode-unknown",
        inferenceservice("ok", canary={"mode": "mirror"}),
        "spec.canary.mode: Unsupported value",
    ),
    (
        "tj-min-trials-zero",
        named(trainingjob("ok", tuning={"space": {"C": [1, 2]}, "minTrials": 0}), "ok"),
        "spec.tuning.minTrials",
    ),
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


# --- Refused by the operator before any pod ------------------------------------------------------
def warnings_for(kube: Kube, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in events_for(kube, namespace, name) if e["type"] == "Warning" and e["reason"] == reason]


def test_modelversion_on_a_missing_claim_waits_without_a_pod_then_verifies(
    kube: Kube, namespace: str, operator: OperatorRunner
) -> None:
    """Case 5: no verify Job while the claim is missing (Pending/StorageNotFound, one Warning
    Event), and the Job is created once the claim appears (the 15 s recheck)."""
    create(kube, namespace, modelversion("lost-v1", 1, "pvc://artifacts/models/lost", SHA))
    status = wait_for(
        lambda: (s := status_of(kube, "ModelVersion", namespace, "lost-v1")).get("phase") and s,
        what="a status",
    )
    assert status["phase"] == "Pending"
    assert condition(status, "ArtifactVerified")["reason"] == "StorageNotFound"
    assert condition(status, "Ready")["reason"] == "StorageNotFound"
    assert "PersistentVolumeClaim artifacts not found" in status["message"]
    assert condition(status, "Stalled")["status"] == "False"  # it waits: the claim may appear
    wait_for(lambda: warnings_for(kube, namespace, "lost-v1", "StorageNotFound"), what="a Warning Event")
    assert kube.list("Job", namespace) == []

    kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
        body={
            "metadata": {"name": "artifacts"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
        },
    )
    wait_for(lambda: kube.get("Job", namespace, "lost-v1-verify"), timeout=60, what="the verify Job")
    status = wait_for(
        lambda: (
            (s := status_of(kube, "ModelVersion", namespace, "lost-v1")).get("phase") == "Verifying" and s
        ),
        what="Verifying",
    )
    # One Event for the transition, not one per recheck.
    assert len(warnings_for(kube, namespace, "lost-v1", "StorageNotFound")) == 1


def test_duplicate_version_is_failed_with_a_warning_event(
    kube: Kube, namespace: str, operator: OperatorRunner
) -> None:
    """Case 7: DuplicateVersion used to set a condition and say nothing."""
    create(kube, namespace, modelversion("first", 1, "pvc://artifacts/models/a", SHA))
    wait_for(lambda: status_of(kube, "ModelVersion", namespace, "first").get("phase"), what="first's status")
    create(kube, namespace, modelversion("second", 1, "pvc://artifacts/models/b", SHA))
    status = wait_for(
        lambda: (s := status_of(kube, "ModelVersion", namespace, "second")).get("phase") == "Failed" and s,
        what="second Failed",
    )
    assert condition(status, "Ready")["reason"] == "DuplicateVersion"
    [event] = wait_for(lambda: warnings_for(kube, namespace, "second", "DuplicateVersion"), what="an Event")
    assert "already registered as first" in event["message"]
    assert kube.get("Job", namespace, "second-verify") is None


def test_trainingjob_on_a_missing_claim_warns_once(
    kube: Kube, namespace: str, operator: OperatorRunner
) -> None:
    """Case 7: StorageNotFound on a TrainingJob gets its Warning Event, once (it rechecks every 15 s)."""
    create(kube, namespace, trainingjob("nostore"))
    wait_for(lambda: warnings_for(kube, namespace, "nostore", "StorageNotFound"), what="a Warning Event")
    wait_for(
        lambda: status_of(kube, "TrainingJob", namespace, "nostore").get("phase") == "Pending",
        what="Pending",
    )
    assert kube.list("Job", namespace) == []


def finish_trials(kube: Kube, namespace: str, tj: str, results: dict[int, str]) -> None:
    """End the tuning pods as a kubelet would, each index with the termination message given."""
    labels = {"mlops.dev/training-job": tj, "mlops.dev/step": "tune"}
    pods = wait_for(
        lambda: (
            (p := pods_of(kube, namespace, labels, phase="Pending") + pods_of(kube, namespace, labels))
            and len(p) >= len(results)
            and p
        ),
        what="the trial pods",
    )
    for pod in pods:
        index = int(pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
        finish_pod(kube, namespace, pod, 0, results[index])


SCORED = '{"ok": true, "trial": 0, "params": {"C": 1.0}, "score": 0.9, "metric": "accuracy"}'
UNSCORED = '{"ok": true, "trial": 1, "params": {"C": 10.0}}'  # what a trial stopped by SIGTERM left


@pytest.mark.parametrize("min_trials", [None, 1], ids=["every-trial-required", "min-trials-1"])
def test_no_best_is_picked_from_an_incomplete_set_of_trials(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Any, min_trials: int | None
) -> None:
    """Case 4: the TrainingJob reports the trials that produced a score and refuses to pick a
    best from fewer than spec.tuning.minTrials (default: all)."""
    tuning: dict[str, Any] = {"space": {"C": [1.0, 10.0]}, "maxTrials": 2, "parallelism": 2}
    if min_trials:
        tuning["minTrials"] = min_trials
    create(kube, namespace, trainingjob("holes", tuning=tuning))
    run_prepare_step(kube, namespace, "holes", artifacts)
    finish_trials(kube, namespace, "holes", {0: SCORED, 1: UNSCORED})
    if min_trials:
        wait_for(lambda: kube.get("Job", namespace, "holes-train"), what="the refit Job")
        # The refit Job is created before the pass writes the status that names its params.
        status = wait_for(
            lambda: (s := status_of(kube, "TrainingJob", namespace, "holes")).get("bestParams") and s,
            what="bestParams in status",
        )
        assert status["bestParams"] == {"C": 1.0}
        assert status["trialsCompleted"] == 1
        return
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "holes")).get("phase") == "Failed" and s,
        what="Failed",
    )
    assert condition(status, "Ready")["reason"] == "IncompleteTuning"
    assert "1 of 2 trials reported a score (missing: 1)" in status["message"]
    assert status["trialsCompleted"] == 1 and "bestParams" not in status
    wait_for(lambda: warnings_for(kube, namespace, "holes", "IncompleteTuning"), what="a Warning Event")
    assert kube.get("Job", namespace, "holes-train") is None


def rf(params: dict[str, Any] | None = None, space: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"estimator": {"class": "RandomForestClassifier", "params": params or {}}}
    if space:
        spec["tuning"] = {"space": space, "maxTrials": 4}
    return spec


# (case, TrainingJob spec fields, what the InvalidSpec message says): parameter values scikit-learn's
# validation refuses, found by the operator without importing it (case 6).
REFUSED_BEFORE_LAUNCH = [
    ("n-estimators-word", rf({"n_estimators": "many"}), "n_estimators must be an int in [1, inf)"),
    ("max-depth-negative", rf({"max_depth": -3}), "max_depth must be an int in [1, inf) or null"),
    ("criterion-typo", rf({"criterion": "gin"}), "criterion must be one of 'entropy', 'gini', 'log_loss'"),
    ("bootstrap-string", rf({"bootstrap": "yes"}), "bootstrap must be true or false"),
    (
        "max-features-above-1",
        rf({"max_features": 1.5}),
        "max_features must be an int in [1, inf) or a float in (0, 1]",
    ),
    (
        "space-value",
        rf(space={"max_depth": [3, 0]}),
        "tuning.space.max_depth[1]: RandomForestClassifier 0 is not",
    ),
    (
        "lr-C-negative",
        {"estimator": {"class": "LogisticRegression", "params": {"C": -1}}},
        "C must be a number in (0, inf]",
    ),
    ("unknown-param", rf({"n_estimator": 10}), "did you mean n_estimators?"),
    (
        "unknown-space-param",
        rf(space={"depth": [1, 2]}),
        "tuning.space: RandomForestClassifier has no parameter 'depth'",
    ),
    (
        "random-state-negative",
        rf({"random_state": -1}),
        "random_state must be null or an int in [0, 4294967295]",
    ),
    (
        "class-weight-word",
        rf({"class_weight": "heavy"}),
        "class_weight must be one of 'balanced', 'balanced_subsample' or a mapping or a list or null",
    ),
    (
        "svc-kernel-typo",
        {"estimator": {"class": "SVC", "params": {"kernel": "rbff"}}},
        "kernel must be one of 'linear', 'poly', 'precomputed', 'rbf', 'sigmoid'",
    ),
    (
        "regression-metric-on-classifier",
        {"evaluation": {"gates": [{"metric": "rmse", "threshold": 1.0}]}},
        "'rmse' is not a classification metric",
    ),
    (
        "regression-dataset-for-classifier",
        {"data": {"source": {"uri": "builtin:diabetes"}}},
        "builtin:diabetes is a regression dataset but the task is classification",
    ),
]


@pytest.mark.parametrize(
    ("fields", "message"),
    [(f, m) for _, f, m in REFUSED_BEFORE_LAUNCH],
    ids=[n for n, _, _ in REFUSED_BEFORE_LAUNCH],
)
def test_operator_refuses_before_any_pod(
    kube: Kube, namespace: str, operator: OperatorRunner, fields: dict[str, Any], message: str
) -> None:
    create(kube, namespace, trainingjob("bad", **fields))
    status = wait_for(
        lambda: (s := status_of(kube, "TrainingJob", namespace, "bad")).get("phase") == "Failed" and s,
        what="Failed",
    )
    assert condition(status, "Ready")["reason"] == "InvalidSpec"
    assert message in status["message"], status["message"]
    [event] = wait_for(lambda: warnings_for(kube, namespace, "bad", "InvalidSpec"), what="a Warning Event")
    assert message in event["message"]
    assert kube.list("Job", namespace) == [] and kube.list("Pod", namespace) == []


# --- Deletion -----------------------------------------------------------------------------------
def hold_namespace(kube: Kube, namespace: str) -> None:
    """A ConfigMap with a finalizer keeps the namespace Terminating until the test releases it."""
    kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        body={"metadata": {"name": "hold", "finalizers": ["mlops.dev/test-hold"]}},
    )


def release_namespace(kube: Kube, namespace: str) -> None:
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/configmaps/hold",
        body={"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )


def test_nothing_is_created_into_a_terminating_namespace(
    kube: Kube, namespace: str, operator: OperatorRunner, artifacts: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 8: the API server's 403 is recognised (KubeError.namespace_terminating) and a namespace
    being deleted with the operator's objects in it costs no ERROR line and no retry storm."""
    create(kube, namespace, trainingjob("doomed"))
    wait_for(lambda: kube.get("Job", namespace, "doomed-train"), what="the training Job")
    hold_namespace(kube, namespace)
    kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
    try:
        with pytest.raises(KubeError) as refused:
            kube.create(
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": namespace}}
            )
        assert refused.value.namespace_terminating, refused.value
        wait_for(lambda: kube.get("TrainingJob", namespace, "doomed") is None, what="the TrainingJob deleted")
        wait_for(lambda: kube.get("Job", namespace, "doomed-train") is None, what="its Job collected")
        errors = [r for r in caplog.records if r.levelname == "ERROR" or "being terminated" in r.getMessage()]
        assert errors == [], [r.getMessage() for r in errors]
    finally:
        release_namespace(kube, namespace)


# --- Tenant policy: images and ServiceAccounts ----------------------------------------------------
OVERLAY = ROOT / "manifests" / "overlays" / "local"
PREFIXES = ("mlops-operator/",)  # the local overlay's allowedImagePrefixes (manifests/base)
VAP = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
VAPB = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
MERGE = "application/merge-patch+json"


def refusal(kube: Kube, namespace: str, doc: dict[str, Any]) -> str | None:
    """The API server's answer to a dry-run create: None when admitted, else its message."""
    try:
        kube.request(
            "POST",
            f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/{doc['kind'].lower()}s",
            body=doc,
            query={"dryRun": "All"},
        )
    except KubeError as e:
        return e.body
    return None


@contextlib.contextmanager
def policy_installed(kube: Kube, kubeconfig: str, namespace: str) -> Iterator[str]:
    """The ValidatingAdmissionPolicy and binding as the local overlay renders them (its ConfigMap's
    values copied in), bound to this test's namespace only, so no other test and no installed
    operator is affected. Yields the policy's name."""
    rendered = kubectl(kubeconfig, "kustomize", str(OVERLAY)).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    policy, binding = (
        next(d for d in docs if d["kind"] == k)
        for k in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    )
    name = f"{policy['metadata']['name']}-{namespace}"
    policy["metadata"]["name"] = binding["metadata"]["name"] = binding["spec"]["policyName"] = name
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    kube.request("POST", VAP, body=policy)
    kube.request("POST", VAPB, body=binding)
    try:
        # The API server compiles the policy and enforces it a moment after the create.
        probe = trainingjob("probe", image="evil/x")
        wait_for(
            lambda: "spec.image evil/x is not under" in (refusal(kube, namespace, probe) or ""),
            timeout=60,
            what="the admission policy enforced",
        )
        yield name
    finally:
        for path in (f"{VAPB}/{name}", f"{VAP}/{name}"):
            with contextlib.suppress(KubeError):
                kube.request("DELETE", path)


@pytest.fixture
def admission_policy(kube: Kube, kubeconfig: str, namespace: str) -> Iterator[str]:
    with policy_installed(kube, kubeconfig, namespace) as name:
        yield name


NOT_UNDER = "is not under an allowed prefix (mlops-operator/)"
NO_ACCOUNT = (
    "serviceAccountName may not be set: this operator runs pods as the namespace's default ServiceAccount"
)

# (case, document, what the refusal says): refused by the admission policy and, without it, by the operator.
NOT_PERMITTED = [
    (
        "tj-image",
        trainingjob("bad", image="docker.io/evil/miner:latest"),
        f"spec.image docker.io/evil/miner:latest {NOT_UNDER}",
    ),
    (
        "tj-lookalike-prefix",
        trainingjob("bad", image="mlops-operator.evil/trainer:1"),
        f"spec.image mlops-operator.evil/trainer:1 {NOT_UNDER}",
    ),
    ("tj-service-account", trainingjob("bad", serviceAccountName="admin"), f"spec.{NO_ACCOUNT}"),
    ("is-image", inferenceservice("bad", image="evil/server:1"), f"spec.image evil/server:1 {NOT_UNDER}"),
    ("is-service-account", inferenceservice("bad", serviceAccountName="admin"), f"spec.{NO_ACCOUNT}"),
    (
        "is-retraining-template-image",
        inferenceservice(
            "bad",
            retraining={
                "template": {
                    "data": {"source": {"uri": "builtin:iris"}},
                    "estimator": {"class": "LogisticRegression"},
                    "image": "evil/trainer:1",
                }
            },
        ),
        f"spec.retraining.template.image evil/trainer:1 {NOT_UNDER}",
    ),
]


@pytest.mark.parametrize(
    ("doc", "message"), [(d, m) for _, d, m in NOT_PERMITTED], ids=[n for n, _, _ in NOT_PERMITTED]
)
def test_admission_policy_refuses(
    kube: Kube, namespace: str, admission_policy: str, doc: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubeError) as refused:
        create(kube, namespace, doc)
    assert refused.value.status == 403, refused.value
    assert f"ValidatingAdmissionPolicy '{admission_policy}'" in refused.value.body
    assert message in refused.value.body, refused.value.body


def test_admission_policy_admits_allowed_specs_and_leaves_older_objects_deletable(
    kube: Kube, kubeconfig: str, namespace: str
) -> None:
    """Allowed images and the operator's default image (no spec.image) are admitted; an object
    admitted before the policy can still be labelled (and so finalized and deleted), since an
    update that leaves the spec alone is not checked, but its spec cannot be changed."""
    create(kube, namespace, inferenceservice("older", serviceAccountName="server"))
    with policy_installed(kube, kubeconfig, namespace):
        assert refusal(kube, namespace, trainingjob("ok", image="mlops-operator/trainer:2")) is None
        assert refusal(kube, namespace, inferenceservice("ok", image="mlops-operator/server:dev")) is None
        create(kube, namespace, trainingjob("plain"))
        path = f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices/older"
        kube.request("PATCH", path, body={"metadata": {"labels": {"team": "a"}}}, content_type=MERGE)
        with pytest.raises(KubeError) as refused:
            kube.request("PATCH", path, body={"spec": {"replicas": 3}}, content_type=MERGE)
        assert refused.value.status == 403 and NO_ACCOUNT in refused.value.body
        kube.request("DELETE", path)


@pytest.fixture
def strict_operator(namespace: str, kubeconfig: str, test_settings: Settings) -> Iterator[OperatorRunner]:
    """The operator with the strict tenant settings and no admission policy on the cluster."""
    settings = dataclasses.replace(
        test_settings,
        allowed_image_prefixes=PREFIXES,
        allow_service_account=False,
    )
    runner = OperatorRunner(namespace, settings).start()
    yield runner
    runner.stop()


@pytest.mark.parametrize(
    ("doc", "message"), [(d, m) for _, d, m in NOT_PERMITTED], ids=[n for n, _, _ in NOT_PERMITTED]
)
def test_operator_refuses_what_the_policy_would_before_any_pod(
    kube: Kube, namespace: str, strict_operator: OperatorRunner, doc: dict[str, Any], message: str
) -> None:
    """Without the admission policy the operator enforces the same settings: NotPermitted in
    Ready (Failed for a TrainingJob, Stalled for an InferenceService), a Warning Event, no pod."""
    kind = doc["kind"]
    create(kube, namespace, doc)
    status = wait_for(
        lambda: (s := status_of(kube, kind, namespace, "bad")).get("conditions") and s, what="a status"
    )
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotPermitted")
    assert message in ready["message"], ready["message"]
    assert condition(status, "Stalled")["status"] == "True"
    if kind == "TrainingJob":
        assert status["phase"] == "Failed"
        assert condition(status, "Validated")["reason"] == "NotPermitted"
    [event] = wait_for(lambda: warnings_for(kube, namespace, "bad", "NotPermitted"), what="a Warning Event")
    assert message in event["message"]
    for child in ("Job", "Deployment", "Pod"):
        assert kube.list(child, namespace) == [], child
