"""The Argo CD health check (manifests/argocd/health.lua) on real status objects.

objects.yaml holds statuses the operator wrote on the cluster tier; the script runs in Lua 5.1
(what Argo CD's gopher-lua implements) through lupa, with `obj` set as Argo CD sets it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

lua51 = pytest.importorskip("lupa.lua51")

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = (ROOT / "manifests" / "argocd" / "health.lua").read_text()
OBJECTS = {
    d["case"]: d["object"] for d in yaml.safe_load_all((Path(__file__).parent / "objects.yaml").read_text())
}


def health(obj: dict[str, Any]) -> dict[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    # Argo CD hands the script the object as nested Lua tables (arrays 1-based), as here.
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(f"return (function() {SCRIPT}\nend)()")
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-version-yet", "Progressing"),
        ("running", "Progressing"),
        ("invalid-spec", "Degraded"),
        ("succeeded", "Healthy"),
        ("verifying", "Progressing"),
        ("verified", "Healthy"),
        ("serving", "Healthy"),
        ("manual-awaiting-approval", "Suspended"),
        ("spec-changed", "Progressing"),
    ],
)
def test_recorded_objects(case: str, expected: str) -> None:
    result = health(OBJECTS[case])
    assert result["status"] == expected, result
    assert result["message"]


def test_every_kind_is_covered() -> None:
    assert {o["kind"] for o in OBJECTS.values()} == {"TrainingJob", "ModelVersion", "InferenceService"}


def test_messages_come_from_the_conditions() -> None:
    assert "n_estimatorz" in health(OBJECTS["invalid-spec"])["message"]
    assert "generation 2" in health(OBJECTS["spec-changed"])["message"]


def test_no_status_yet_is_progressing() -> None:
    obj = {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "x", "generation": 1},
    }
    assert health(obj)["status"] == "Progressing"


def test_a_stale_ready_condition_is_not_healthy() -> None:
    obj = copy.deepcopy(OBJECTS["verified"])
    obj["metadata"]["generation"] = 2
    obj["status"]["observedGeneration"] = 2  # status caught up, the conditions did not
    assert health(obj)["status"] == "Progressing"


def test_failed_phase_is_degraded_even_without_stalled() -> None:
    obj = copy.deepcopy(OBJECTS["succeeded"])
    obj["status"]["phase"] = "Failed"
    for cond in obj["status"]["conditions"]:
        if cond["type"] == "Ready":
            cond.update(status="False", message="backoff limit reached")
    assert health(obj) == {"status": "Degraded", "message": "backoff limit reached"}


def test_configmap_carries_the_script_for_each_kind() -> None:
    kustomization = yaml.safe_load((ROOT / "manifests" / "argocd" / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == "argocd-cm"
    keys = {f.split("=")[0] for f in generator["files"]}
    assert keys == {
        f"resource.customizations.health.mlops.dev_{k}"
        for k in ("TrainingJob", "ModelVersion", "InferenceService")
    }
