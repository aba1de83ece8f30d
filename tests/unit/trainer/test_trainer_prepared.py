"""Prepare once (issue #23): `prepare` loads, validates and splits the raw data once and writes
it as Parquet next to the artifact; trials and the final fit read it (verified by sha256) and
give the same scores and model as when each pod read the raw data itself."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from trainer_factories import Trainer, make_config, make_spec

PREPARED = "mlops-artifacts/models/demo/demo-1/prepared"


def _spec(trainer: Trainer, mixed: pd.DataFrame, estimator: str) -> dict[str, Any]:
    uri = trainer.write("mixed.csv", mixed)
    return make_spec(
        data={"source": {"uri": uri}, "target": "churn", "features": ["age", "visits", "city", "plan"]},
        estimator={"class": estimator},
        tuning={
            "space": {"C": [0.1, 1.0]} if estimator == "LogisticRegression" else {"max_depth": [2, 4]},
            "cv": 3,
        },
    )


@pytest.mark.parametrize("estimator", ["LogisticRegression", "RandomForestClassifier"])
def test_trials_and_the_fit_on_prepared_data_match_the_raw_path(
    trainer: Trainer, mixed: pd.DataFrame, estimator: str
) -> None:
    spec = _spec(trainer, mixed, estimator)
    prepared = trainer.run("prepare", make_config(spec))
    assert prepared.code == 0, prepared.result
    assert prepared.result["preparedUri"] == f"pvc://{PREPARED}"
    assert prepared.result["reads"] == [{"uri": spec["data"]["source"]["uri"], "kind": "raw", "rows": 240}]
    ref = {"uri": prepared.result["preparedUri"], "sha256": prepared.result["sha256"]}

    for index in ("0", "1"):
        raw = trainer.run("trial", make_config(spec), "--index", index)
        fast = trainer.run("trial", make_config(spec, prepared=ref), "--index", index)
        assert fast.code == 0, fast.result
        assert fast.result["score"] == pytest.approx(raw.result["score"], abs=1e-12)
        assert [r["kind"] for r in raw.result["reads"]] == ["raw"]
        assert fast.result["reads"] == [{**ref, "kind": "prepared", "rows": 240}]

    raw_fit = trainer.run(
        "train", make_config(spec, params={"C": 1.0} if estimator == "LogisticRegression" else {})
    )
    fit = trainer.run(
        "train",
        make_config(spec, prepared=ref, params={"C": 1.0} if estimator == "LogisticRegression" else {}),
    )
    assert fit.code == 0, fit.result
    assert fit.result["metrics"] == pytest.approx(raw_fit.result["metrics"])
    assert fit.result["dataDigest"] == raw_fit.result["dataDigest"] == prepared.result["dataDigest"]
    assert fit.result["signature"] == raw_fit.result["signature"]  # the raw dtypes, not the read ones
    # The lineage names the raw source the prepare step read, not the prepared copy.
    assert fit.result["dataSources"] == raw_fit.result["dataSources"]
    assert fit.result["dataSources"] == [{"uri": spec["data"]["source"]["uri"], "rows": 240}]
    meta = json.loads((trainer.artifact_dir() / "model.json").read_text())
    assert meta["prepared"] == ref and meta["dataReads"] == [{**ref, "kind": "prepared", "rows": 240}]


def test_types_are_chosen_on_read(trainer: Trainer, mixed: pd.DataFrame) -> None:
    from mlops_trainer.config import PreparedRef
    from mlops_trainer.prepared import load_prepared

    spec = _spec(trainer, mixed, "LogisticRegression")
    prepared = trainer.run("prepare", make_config(spec))
    ref = PreparedRef(uri=prepared.result["preparedUri"], sha256=prepared.result["sha256"])
    ds, split = load_prepared(ref, trainer.env(), [])
    assert str(split.X_train["city"].dtype) == "category"
    assert str(split.X_train["visits"].dtype) == "int8"  # poisson(5) counts
    assert str(split.X_train["age"].dtype) == "float64"  # floats are never narrowed
    assert ds.dtype_of("visits") == "int64" and ds.row_count == 240


def test_prepared_data_that_does_not_match_its_sha256_is_refused(
    trainer: Trainer, mixed: pd.DataFrame
) -> None:
    spec = _spec(trainer, mixed, "LogisticRegression")
    prepared = trainer.run("prepare", make_config(spec))
    ref = {"uri": prepared.result["preparedUri"], "sha256": prepared.result["sha256"]}
    table = trainer.pvc_root / PREPARED / "train.parquet"
    table.write_bytes(table.read_bytes()[:-10] + b"0123456789")
    run = trainer.run("trial", make_config(spec, prepared=ref), "--index", "0")
    assert run.code == 2 and "does not match the sha256" in run.result["message"]
    wrong = trainer.run("trial", make_config(spec, prepared={**ref, "sha256": "0" * 64}), "--index", "0")
    assert wrong.code == 2 and "prepared.json does not match" in wrong.result["message"]
