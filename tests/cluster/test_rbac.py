"""The shipped RBAC (manifests/base) is least privilege and sufficient.

`kubectl auth can-i --list` as the operator's ServiceAccount shows nothing beyond what the
operator uses; the real operator, authenticated with that ServiceAccount's token, then drives
a TrainingJob to a verified ModelVersion and an InferenceService (Deployment, Service, HPA)
to Ready. Anything missing from the ClusterRole would fail as 403 here.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clusterkit import ROOT, condition, kubectl, status_of, wait_ready
from test_inferenceservice import isvc, scraper, train_version

from conftest import OperatorRunner
from mlops_operator.kube import Kube
from mlops_operator.settings import Settings

SA = "system:serviceaccount:mlops-system:mlops-operator"
# The namespaced install's test account (its own: the base's cluster-wide binding names SA).
NS_ACCOUNT = "mlops-operator-namespaced"
RBAC_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


def base_rbac(kubeconfig: str) -> str:
    rendered = kubectl(kubeconfig, "kustomize", str(ROOT / "manifests" / "base")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def shipped_rbac(kubeconfig: str, crds: None) -> str:
    """Apply manifests/base's namespace, ServiceAccount and RBAC; -> the ServiceAccount's user name."""
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", input=base_rbac(kubeconfig))
    return SA


def can_i(kubeconfig: str, *args: str) -> bool:
    out = kubectl(kubeconfig, "auth", "can-i", *args, "--as", SA, check=False)
    return out.stdout.strip() == "yes"


# What `kubectl auth can-i --list` must show, resource by resource: the shipped ClusterRole plus
# the self-reviews every authenticated user has (system:basic-user).
EXPECTED = {
    "trainingjobs.mlops.dev": "get list watch create patch",
    "modelversions.mlops.dev": "get list watch create patch delete",
    "inferenceservices.mlops.dev": "get list watch patch",
    "trainingjobs.mlops.dev/status": "patch",
    "modelversions.mlops.dev/status": "patch",
    "inferenceservices.mlops.dev/status": "patch",
    "jobs.batch": "get list watch create",
    "deployments.apps": "get list watch create patch delete",
    "services": "list watch create patch delete",
    "horizontalpodautoscalers.autoscaling": "get create patch delete",
    "networkpolicies.networking.k8s.io": "get create patch delete",
    "pods": "list watch",
    "persistentvolumeclaims": "get",
    "events": "create",
    "customresourcedefinitions.apiextensions.k8s.io": "list watch",
    "namespaces": "list watch",
    "selfsubjectreviews.authentication.k8s.io": "create",
    "selfsubjectaccessreviews.authorization.k8s.io": "create",
    "selfsubjectrulesreviews.authorization.k8s.io": "create",
}


def granted(kubeconfig: str) -> tuple[dict[str, str], list[str]]:
    """-> ({resource: verbs} of resource rules, [non-resource URLs])."""
    listing = kubectl(kubeconfig, "auth", "can-i", "--list", "--as", SA).stdout
    resources: dict[str, str] = {}
    urls: list[str] = []
    for line in listing.splitlines()[1:]:
        brackets = re.findall(r"\[([^\]]*)\]", line)
        if line.startswith(" "):  # a non-resource URL row
            urls.append(brackets[0])
            continue
        name, names, verbs = line.split()[0], brackets[-2], brackets[-1]
        assert names == "", f"unexpected resourceNames rule: {line}"
        assert name not in resources, f"two rules for {name}"
        resources[name] = verbs
    return resources, urls


def test_serviceaccount_holds_nothing_beyond_what_it_needs(kubeconfig: str, shipped_rbac: str) -> None:
    resources, urls = granted(kubeconfig)
    assert resources == EXPECTED
    assert all("*" not in verbs for verbs in resources.values())
    # Non-resource URLs: only the discovery, health and OIDC reads every account has.
    assert {u.rstrip("/*") for u in urls} <= {
        "/api",
        "/apis",
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/openapi",
        "/.well-known/openid-configuration",
        "/openid/v1/jwks",
    }
    for verb in ("list", "get", "watch"):
        assert not can_i(kubeconfig, verb, "secrets", "--all-namespaces")
        assert not can_i(kubeconfig, verb, "configmaps", "--all-namespaces")
    for verb, resource in [
        ("update", "trainingjobs.mlops.dev"),
        ("delete", "jobs.batch"),
        ("create", "pods"),
        ("get", "pods/log"),
        ("create", "pods/exec"),
        ("create", "serviceaccounts/token"),
        ("create", "clusterrolebindings"),
        ("patch", "nodes"),
        ("delete", "namespaces"),
        ("patch", "customresourcedefinitions"),
    ]:
        assert not can_i(kubeconfig, verb, resource, "--all-namespaces"), (verb, resource)
    # ...and it can do what the operator does.
    for verb, resource in [
        ("delete", "modelversions.mlops.dev"),
        ("patch", "deployments.apps"),
        ("patch", "services"),
        ("create", "events"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ]:
        assert can_i(kubeconfig, verb, resource, "--all-namespaces"), (verb, resource)
    assert can_i(kubeconfig, "patch", "trainingjobs.mlops.dev", "--subresource=status", "-A")
    assert not can_i(kubeconfig, "update", "trainingjobs.mlops.dev", "--subresource=status", "-A")


def serviceaccount_kubeconfig(kubeconfig: str, path: Path, account: str = "mlops-operator") -> Path:
    """A kubeconfig with the admin's cluster entry and a fresh token of the operator's account."""
    token = kubectl(
        kubeconfig, "-n", "mlops-system", "create", "token", account, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == current["cluster"])["cluster"]
    if "certificate-authority" in cluster:  # inline it: the file may be relative to the admin's
        ca = Path(cluster.pop("certificate-authority"))
        ca = ca if ca.is_absolute() else Path(kubeconfig).parent / ca
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "mlops-operator", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "mlops-operator"}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def operator_as_serviceaccount(
    request: pytest.FixtureRequest,
    kubeconfig: str,
    shipped_rbac: str,
    namespace: str,
    test_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[OperatorRunner]:
    """The operator as the base's ServiceAccount, or (parametrized with NS_ACCOUNT) as one bound
    the way manifests/overlays/namespaced binds it, watching the test's namespace only."""
    account = getattr(request, "param", "mlops-operator")
    if account == NS_ACCOUNT:
        kubectl(kubeconfig, "apply", "--server-side", "-f", "-", input=namespaced_rbac(kubeconfig, namespace))
    sa_config = serviceaccount_kubeconfig(kubeconfig, tmp_path / "operator.kubeconfig", account)
    who = kubectl(str(sa_config), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert who == f"system:serviceaccount:mlops-system:{account}"
    # kopf's login and the operator's client both read KUBECONFIG when the operator starts;
    # the test's own clients use the admin kubeconfig explicitly.
    monkeypatch.setenv("KUBECONFIG", str(sa_config))
    runner = OperatorRunner(namespace, test_settings, scraper=scraper).start()
    yield runner
    runner.stop()
    if account == NS_ACCOUNT:
        kubectl(kubeconfig, "delete", "clusterrolebinding", NS_ACCOUNT, "--ignore-not-found")


def test_operator_runs_with_exactly_the_shipped_rbac(
    kube: Kube,
    namespace: str,
    operator_as_serviceaccount: OperatorRunner,
    artifacts: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # TrainingJob → Job → pods → ModelVersion (create) → verification Job → Verified.
    mv = train_version(kube, namespace, "rbac", artifacts)
    tj = status_of(kube, "TrainingJob", namespace, "rbac")
    assert tj["phase"] == "Succeeded" and condition(tj, "Ready")["status"] == "True"
    # InferenceService → Deployment + Service + HPA by server-side apply, pods listed and scraped.
    kube.request(
        "POST",
        f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices",
        body=isvc("iris", autoscaling={"minReplicas": 1, "maxReplicas": 3}),
    )
    status = wait_ready(kube, "InferenceService", namespace, "iris")
    assert status["modelVersion"] == mv
    assert kube.get("Service", namespace, "iris") is not None
    assert kube.get("HorizontalPodAutoscaler", namespace, "iris-predictor") is not None
    assert kube.get("NetworkPolicy", namespace, "iris") is not None
    # Events were recorded by the operator's own account.
    assert [e for e in kube.list("Event", namespace) if e["involvedObject"]["name"] == "rbac"]
    assert operator_as_serviceaccount.error is None
    # Nothing was refused on the way, not even a call whose failure the operator tolerates
    # (Events are best effort; kopf falls back when it may not list namespaces).
    refused = [
        r.getMessage() for r in caplog.records if "403" in r.getMessage() or "ermission" in r.getMessage()
    ]
    assert refused == []


# --- The namespaced install (manifests/overlays/namespaced, issue #19) --------------------------------


def namespaced_rbac(kubeconfig: str, namespace: str) -> str:
    """The namespaced overlay's RBAC for a ServiceAccount of its own, its RoleBinding in `namespace`."""
    rendered = kubectl(kubeconfig, "kustomize", str(ROOT / "manifests" / "overlays" / "namespaced")).stdout
    docs = [
        d for d in yaml.safe_load_all(rendered) if d and d["kind"] in {"ClusterRoleBinding", "RoleBinding"}
    ]
    [rolebinding] = [d for d in docs if d["kind"] == "RoleBinding"][:1]
    [scope] = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    rolebinding["metadata"]["namespace"] = namespace
    scope["metadata"]["name"] = NS_ACCOUNT
    for binding in (rolebinding, scope):
        assert binding["subjects"][0]["name"] == "mlops-operator"
        binding["subjects"][0]["name"] = NS_ACCOUNT
    [role] = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == scope["roleRef"]["name"]
    ]
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": NS_ACCOUNT, "namespace": "mlops-system"},
    }
    return yaml.safe_dump_all([account, role, rolebinding, scope])


@pytest.mark.parametrize("operator_as_serviceaccount", [NS_ACCOUNT], indirect=True)
def test_namespaced_install_acts_in_its_namespaces_only(
    kube: Kube,
    kubeconfig: str,
    namespace: str,
    operator_as_serviceaccount: OperatorRunner,
    artifacts: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bound by a RoleBinding in the watched namespace, the operator trains, verifies and serves
    there with nothing refused; it may not create Jobs or Deployments anywhere else."""
    user = f"system:serviceaccount:mlops-system:{NS_ACCOUNT}"
    for verb, resource in [
        ("create", "jobs.batch"),
        ("patch", "deployments.apps"),
        ("create", "networkpolicies.networking.k8s.io"),
    ]:
        assert (
            kubectl(
                kubeconfig, "auth", "can-i", verb, resource, "-n", namespace, "--as", user, check=False
            ).stdout.strip()
            == "yes"
        )
        for elsewhere in ("kube-system", "default"):
            answer = kubectl(
                kubeconfig, "auth", "can-i", verb, resource, "-n", elsewhere, "--as", user, check=False
            )
            assert answer.stdout.strip() == "no", (verb, resource, elsewhere)
    mv = train_version(kube, namespace, "scoped", artifacts)
    kube.request(
        "POST", f"/apis/mlops.dev/v1alpha1/namespaces/{namespace}/inferenceservices", body=isvc("iris")
    )
    assert wait_ready(kube, "InferenceService", namespace, "iris")["modelVersion"] == mv
    assert kube.get("NetworkPolicy", namespace, "iris") is not None
    assert operator_as_serviceaccount.error is None
    refused = [
        r.getMessage() for r in caplog.records if "403" in r.getMessage() or "ermission" in r.getMessage()
    ]
    assert refused == []
