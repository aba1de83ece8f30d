"""The result document fits a Kubernetes termination message (4096 bytes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from trainer_factories import Trainer, make_config, make_spec

from mlops_trainer.result import MAX_RESULT_BYTES, emit_result, encode_result

SUCCESS: dict[str, Any] = {
    "ok": True,
    "metrics": {"accuracy": 0.95, "f1": 0.94},
    "primaryMetric": "accuracy",
    "score": 0.95,
    "gatesPassed": True,
    "failedGates": [],
    "sha256": "a" * 64,
    "artifactUri": "pvc://mlops-artifacts/models/demo/demo-1",
    "dataDigest": "sha256:" + "b" * 64,
    "params": {"n_estimators": 10},
    "signature": {"task": "classification", "features": [{"name": "x", "dtype": "float64"}]},
}


def wide_signature(n: int) -> dict[str, Any]:
    return {
        "task": "classification",
        "features": [{"name": f"feature_{i:05d}", "dtype": "float64"} for i in range(n)],
    }


@pytest.mark.parametrize(
    ("result", "dropped"),
    [
        pytest.param(SUCCESS, None, id="small-unchanged"),
        pytest.param(
            {**SUCCESS, "signature": wide_signature(500)}, ["signature"], id="wide-signature-dropped"
        ),
        pytest.param(
            {**SUCCESS, "signature": wide_signature(500), "params": {f"p{i}": "v" * 50 for i in range(100)}},
            ["signature", "params"],
            id="signature-and-params-dropped",
        ),
        pytest.param(
            {"ok": False, "reason": "BadInput", "message": "x" * 10_000}, None, id="long-message-truncated"
        ),
    ],
)
def test_result_fits_a_termination_message(result: dict[str, Any], dropped: list[str] | None) -> None:
    data = encode_result(result)
    document = json.loads(data)

    assert len(data) <= MAX_RESULT_BYTES
    assert document.get("dropped") == dropped
    kept = {k: v for k, v in result.items() if k not in (dropped or []) and k != "message"}
    assert {k: document[k] for k in kept} == kept
    if "message" in result and len(result["message"]) > MAX_RESULT_BYTES:
        assert document["message"].endswith(" [truncated]")
        assert len(data) > MAX_RESULT_BYTES - 64


def test_small_result_is_kept_verbatim() -> None:
    assert json.loads(encode_result(SUCCESS)) == SUCCESS


def test_emit_writes_the_file_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "termination-log"
    emit_result(SUCCESS, str(path))

    assert json.loads(path.read_bytes()) == SUCCESS
    assert json.loads(capsys.readouterr().out) == SUCCESS


def test_emit_survives_an_unwritable_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emit_result(SUCCESS, str(tmp_path / "no" / "such" / "dir" / "log"))

    captured = capsys.readouterr()
    assert json.loads(captured.out) == SUCCESS
    assert "Skipped writing the result file" in captured.err


def test_wide_training_result_drops_the_signature(trainer: Trainer) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 150)), columns=[f"sensor_reading_{i:03d}" for i in range(150)])
    frame["label"] = (frame.iloc[:, 0] > 0).astype(int)
    uri = trainer.write("wide.csv", frame)
    run = trainer.run("train", make_config(make_spec(data={"source": {"uri": uri}, "target": "label"})))

    assert run.code == 0, run.result
    assert len((trainer.root / "result.json").read_bytes()) <= MAX_RESULT_BYTES
    assert run.result["dropped"] == ["signature"]
    assert {"metrics", "score", "sha256", "artifactUri", "params", "dataDigest"} <= set(run.result)
    meta = json.loads((trainer.artifact_dir() / "model.json").read_text())
    assert len(meta["signature"]["features"]) == 150  # still complete in the artifact
