"""`mlops-trainer verify`: digest check, safe load, sample predictions; exit 3 when the artifact is bad."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from trainer_factories import Trainer, make_config, make_spec

from mlops_contract import artifact
from mlops_trainer.verify import sample_input


def train(trainer: Trainer, spec: dict[str, Any] | None = None) -> tuple[Path, str]:
    run = trainer.run("train", make_config(spec or make_spec()))
    assert run.code == 0, run.result
    return trainer.artifact_dir(), str(run.result["sha256"])


@pytest.mark.parametrize(
    "case",
    ["iris", "diabetes", "mixed-csv"],
)
def test_verify_ok(trainer: Trainer, mixed: pd.DataFrame, case: str) -> None:
    if case == "mixed-csv":
        uri = trainer.write("mixed.csv", mixed)
        spec = make_spec(
            data={"source": {"uri": uri}, "target": "churn", "prepare": {"categorical": ["visits"]}}
        )
    elif case == "diabetes":
        spec = make_spec(data={"source": {"uri": "builtin:diabetes"}}, estimator={"class": "Ridge"})
    else:
        spec = make_spec()
    _, sha = train(trainer, spec)

    run = trainer.run(
        "verify", None, "--artifact", "pvc://mlops-artifacts/models/demo/demo-1", "--sha256", sha
    )

    assert run.code == 0, run.result
    assert set(run.result) == {"ok", "sha256", "signature", "predictions", "runtime"}
    assert run.result["sha256"] == sha
    # The server runs numeric pipelines from their arrays (checked against scikit-learn here).
    assert run.result["runtime"] == ("sklearn" if case == "mixed-csv" else "arrays")
    predictions = run.result["predictions"]
    assert len(predictions) == 3
    signature = run.result["signature"]
    if signature["task"] == "classification":
        assert set(predictions) <= set(signature["classes"])
    else:
        assert all(isinstance(p, float) and math.isfinite(p) for p in predictions)


def test_verify_accepts_a_local_directory_and_upper_case_digest(trainer: Trainer) -> None:
    directory, sha = train(trainer)
    run = trainer.run("verify", None, "--artifact", str(directory), "--sha256", sha.upper())

    assert run.code == 0, run.result


def tamper_model(directory: Path) -> None:
    blob = bytearray((directory / "model.skops").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (directory / "model.skops").write_bytes(bytes(blob))


def rewrite_metadata(directory: Path, **changes: Any) -> None:
    meta = json.loads((directory / "model.json").read_text())
    meta.update(changes)
    (directory / "model.json").write_text(json.dumps(meta))


def untrusted_model(directory: Path) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    blob = sio.dumps(FunctionTransformer(func=math.sqrt))
    (directory / "model.skops").write_bytes(blob)
    rewrite_metadata(directory, sha256=artifact.sha256_bytes(blob))


def renamed_feature(directory: Path) -> None:
    meta = json.loads((directory / "model.json").read_text())
    meta["signature"]["features"][0]["name"] = "not a column"
    (directory / "model.json").write_text(json.dumps(meta))


def tamper_model_and_its_digest(directory: Path) -> None:
    tamper_model(directory)
    rewrite_metadata(directory, sha256=artifact.sha256_file(directory / "model.skops"))


TAMPER_CASES = [
    # id, tamper(directory), expected sha ("" = the trained one), message prefix
    ("flipped-byte", tamper_model, "", "sha256 mismatch: {dir}/model.skops has "),
    (
        "metadata-digest-rewritten-too",
        tamper_model_and_its_digest,
        "",
        "sha256 mismatch: {dir}/model.skops has ",
    ),
    ("wrong-expected-digest", lambda d: None, "0" * 64, "sha256 mismatch: {dir}/model.skops has "),
    ("untrusted-types", untrusted_model, "-", "model file contains untrusted types: math.sqrt"),
    (
        "missing-metadata",
        lambda d: (d / "model.json").unlink(),
        "",
        "artifact metadata {dir}/model.json does not exist",
    ),
    ("prediction-fails", renamed_feature, "", "model failed to predict on sample rows: ValueError: "),
]


@pytest.mark.parametrize(
    ("tamper", "expected_sha", "message"), [pytest.param(*c[1:], id=c[0]) for c in TAMPER_CASES]
)
def test_verify_refuses_a_bad_artifact_with_exit_3(
    trainer: Trainer, tamper: Any, expected_sha: str, message: str
) -> None:
    directory, sha = train(trainer)
    tamper(directory)
    if expected_sha == "-":
        expected_sha = json.loads((directory / "model.json").read_text())["sha256"]

    run = trainer.run("verify", None, "--artifact", str(directory), "--sha256", expected_sha or sha)

    assert run.code == 3
    assert run.result["ok"] is False and run.result["reason"] == "VerificationFailed"
    assert run.result["message"].startswith(message.format(dir=directory)), run.result["message"]


def test_sample_input_follows_signature_and_reference() -> None:
    signature = {
        "task": "classification",
        "features": [
            {"name": "age", "dtype": "float64"},
            {"name": "visits", "dtype": "int64"},
            {"name": "city", "dtype": "object"},
            {"name": "code", "dtype": "int64"},
            {"name": "unseen", "dtype": "float64"},
        ],
    }
    references = {
        "age": {"kind": "numeric", "count": 10, "mean": 40.0, "min": 18.0, "max": 90.0},
        "visits": {"kind": "numeric", "count": 10, "mean": 4.6, "min": 0.0, "max": 12.0},
        "city": {"kind": "categorical", "count": 10, "categories": ["paris", "lyon"]},
        "code": {"kind": "categorical", "count": 10, "categories": ["7", "3", "5"]},
    }
    frame = sample_input(signature, references)

    assert list(frame.columns) == ["age", "visits", "city", "code", "unseen"]
    assert frame.to_dict(orient="list") == {
        "age": [40.0, 18.0, 90.0],
        "visits": [5, 0, 12],
        "city": ["paris", "lyon", "paris"],
        "code": [7, 3, 5],
        "unseen": [0.0, 0.0, 0.0],
    }
    assert [str(t) for t in frame.dtypes] == ["float64", "int64", "object", "int64", "float64"]


def test_an_array_plan_that_disagrees_with_scikit_learn_is_never_served() -> None:
    # The plan of one fitted model checked against another model: what a wrong plan would look like.
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlops_contract import artifact
    from mlops_trainer.verify import check_array_plan

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    other = LogisticRegression(max_iter=500).fit(X, (y + 1) % 3)
    signature = {"task": "classification", "features": [{"name": c, "dtype": "float64"} for c in X.columns]}
    references = {
        c: {"min": float(X[c].min()), "max": float(X[c].max()), "mean": float(X[c].mean()), "count": 150}
        for c in X.columns
    }
    assert check_array_plan(model, artifact.dump_model(model), signature, references) == "arrays"
    # The model verifies; the server is told to run it with scikit-learn (see build.server_runtime).
    assert check_array_plan(model, artifact.dump_model(other), signature, references) == "sklearn"
