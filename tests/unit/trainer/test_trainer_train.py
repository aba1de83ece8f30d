"""`mlops-trainer train`: every builtin dataset, mixed-type files, extra sources, gates, artifacts."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from trainer_factories import Trainer, make_config, make_spec, merge, mixed_frame

from mlops_contract import artifact, stats
from mlops_contract.estimators import ESTIMATORS
from s3kit import S3Server

BUILTIN_CASES = [
    # id, dataset, estimator, params, metric, bound (score must beat it; for rmse: stay under it)
    ("iris-forest", "iris", "RandomForestClassifier", {"n_estimators": 10}, "accuracy", 0.8),
    ("wine-logistic", "wine", "LogisticRegression", {}, "accuracy", 0.85),
    (
        "breast-cancer-hgb",
        "breast_cancer",
        "HistGradientBoostingClassifier",
        {"max_iter": 20},
        "roc_auc",
        0.9,
    ),
    ("digits-extra-trees", "digits", "ExtraTreesClassifier", {"n_estimators": 10}, "accuracy", 0.8),
    ("diabetes-ridge", "diabetes", "Ridge", {}, "r2", 0.3),
    ("diabetes-forest-rmse", "diabetes", "RandomForestRegressor", {"n_estimators": 10}, "rmse", 70.0),
]


@pytest.mark.parametrize(
    ("dataset", "estimator", "params", "metric", "bound"),
    [pytest.param(*case[1:], id=case[0]) for case in BUILTIN_CASES],
)
def test_builtin_dataset_trains_and_artifact_predicts(
    trainer: Trainer, dataset: str, estimator: str, params: dict[str, Any], metric: str, bound: float
) -> None:
    spec = make_spec(
        data={"source": {"uri": f"builtin:{dataset}"}},
        estimator={"class": estimator, "params": params},
        evaluation={"primaryMetric": metric},
    )
    run = trainer.run("train", make_config(spec))

    assert run.code == 0, run.result
    result = run.result
    assert result["ok"] is True
    assert result["primaryMetric"] == metric
    assert result["score"] == result["metrics"][metric]
    assert (result["score"] < bound) if metric == "rmse" else (result["score"] > bound)
    assert result["artifactUri"] == "pvc://mlops-artifacts/models/demo/demo-1"
    assert result["dataDigest"].startswith("sha256:") and len(result["dataDigest"]) == 71
    assert json.loads(run.stdout) == result

    model, meta = artifact.load_verified(trainer.artifact_dir(), result["sha256"])
    task = ESTIMATORS[estimator].task
    expected_metrics = (
        {"rmse", "mae", "r2"} if task == "regression" else {"accuracy", "f1", "precision", "recall"}
    )
    assert expected_metrics <= set(meta["metrics"])
    assert meta["signature"] == result["signature"]
    assert meta["signature"]["task"] == task
    names = [f["name"] for f in meta["signature"]["features"]]
    assert set(meta["reference"]["features"]) == set(names)
    assert meta["reference"]["prediction"]["kind"] == (
        "categorical" if task == "classification" else "numeric"
    )
    assert meta["estimator"] == estimator and meta["dataUri"] == f"builtin:{dataset}"
    assert meta["rows"] == meta["trainRows"] + meta["testRows"]
    assert meta["gatesPassed"] is True and meta["failedGates"] == []
    assert {"trainedAt", "sklearnVersion", "params", "score", "primaryMetric", "model"} <= set(meta)
    # The held-out calibration table of a probabilistic classifier (issue #22), with every held-out row.
    table = stats.Calibration.from_dict(meta["calibration"])
    if task == "classification" and hasattr(model, "predict_proba"):
        assert table is not None and sum(table.counts) == meta["testRows"]
        assert [a for a in table.accuracy if a is not None] == sorted(
            a for a in table.accuracy if a is not None
        )
    else:
        assert table is None

    import sklearn.datasets

    frame = getattr(sklearn.datasets, f"load_{dataset}")(as_frame=True).frame
    predictions = model.predict(frame[names].head(5))
    assert len(predictions) == 5
    if task == "classification":
        assert set(predictions.tolist()) <= set(meta["signature"]["classes"])


FAST_PARAMS: dict[str, dict[str, Any]] = {
    "RandomForestClassifier": {"n_estimators": 5},
    "ExtraTreesClassifier": {"n_estimators": 5},
    "GradientBoostingClassifier": {"n_estimators": 5},
    "HistGradientBoostingClassifier": {"max_iter": 5},
    "RandomForestRegressor": {"n_estimators": 5},
    "ExtraTreesRegressor": {"n_estimators": 5},
    "GradientBoostingRegressor": {"n_estimators": 5},
    "HistGradientBoostingRegressor": {"max_iter": 5},
}


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_allowed_estimator_round_trips_through_skops(trainer: Trainer, estimator: str) -> None:
    dataset = "iris" if ESTIMATORS[estimator].task == "classification" else "diabetes"
    spec = make_spec(
        data={"source": {"uri": f"builtin:{dataset}"}},
        estimator={"class": estimator, "params": FAST_PARAMS.get(estimator, {})},
    )
    run = trainer.run("train", make_config(spec))

    assert run.code == 0, run.result
    model, meta = artifact.load_verified(trainer.artifact_dir(), run.result["sha256"])
    sample = pd.DataFrame([{f["name"]: 1.0 for f in meta["signature"]["features"]}])
    assert len(model.predict(sample)) == 1


MIXED_CASES = [
    # id, prepare, extra spec patch
    (
        "onehot-median",
        {"encoding": "onehot", "missing": {"numeric": "median", "categorical": "most_frequent"}},
        {},
    ),
    ("ordinal-mean-robust", {"encoding": "ordinal", "scaling": "robust", "missing": {"numeric": "mean"}}, {}),
    (
        "constant-minmax",
        {"scaling": "minmax", "missing": {"numeric": "constant", "categorical": "constant"}},
        {},
    ),
    ("drop-rows", {"missing": {"numeric": "drop", "categorical": "drop"}, "scaling": "none"}, {}),
    ("numeric-as-categorical", {"categorical": ["visits"], "missing": {"categorical": "constant"}}, {}),
    ("declared-features", {}, {"data": {"features": ["plan", "city", "age"]}}),
    (
        "gradient-boosting",
        {"encoding": "ordinal"},
        {"estimator": {"class": "GradientBoostingClassifier", "params": {"n_estimators": 20}}},
    ),
]


@pytest.mark.parametrize(("prepare", "patch"), [pytest.param(c[1], c[2], id=c[0]) for c in MIXED_CASES])
def test_csv_with_missing_values_and_text_columns(
    trainer: Trainer, mixed: pd.DataFrame, prepare: dict[str, Any], patch: dict[str, Any]
) -> None:
    uri = trainer.write("mixed.csv", mixed.drop(columns=["spend"]))
    spec = make_spec(
        **merge({"data": {"source": {"uri": uri}, "target": "churn", "prepare": prepare}}, patch)
    )
    run = trainer.run("train", make_config(spec))

    assert run.code == 0, run.result
    assert run.result["metrics"]["accuracy"] > 0.7
    features = {f["name"]: f["dtype"] for f in run.result["signature"]["features"]}
    expected = {"age": "float64", "visits": "int64", "city": "object", "plan": "object"}
    declared = spec["data"].get("features")
    assert list(features) == (declared or list(expected))
    assert features == {k: expected[k] for k in features}
    assert run.result["signature"]["classes"] == ["no", "yes"]

    model, meta = artifact.load_verified(trainer.artifact_dir(), run.result["sha256"])
    dropped = prepare.get("missing", {}).get("numeric") == "drop"
    assert meta["rows"] == (len(mixed.dropna()) if dropped else len(mixed))
    if "city" in meta["reference"]["features"]:
        assert meta["reference"]["features"]["city"]["kind"] == "categorical"
        assert set(meta["reference"]["features"]["city"]["categories"]) == {"paris", "lyon", "nice"}
    if "visits" in features:
        kind = "categorical" if "visits" in prepare.get("categorical", []) else "numeric"
        assert meta["reference"]["features"]["visits"]["kind"] == kind
    # Unseen categories are ignored by the encoder; missing values are imputed (or tolerated).
    raw = pd.DataFrame(
        {"age": [35.0, 51.5], "visits": [3, 9], "city": ["berlin", "paris"], "plan": ["pro", "basic"]}
    ).astype({"city": object, "plan": object})
    assert set(model.predict(raw[list(features)]).tolist()) <= {"no", "yes"}


def test_parquet_regression(trainer: Trainer, mixed: pd.DataFrame) -> None:
    uri = trainer.write("tables/mixed.parquet", mixed.drop(columns=["churn"]))
    spec = make_spec(
        data={"source": {"uri": uri, "format": "parquet"}, "target": "spend"},
        estimator={"class": "Ridge", "params": {"alpha": 0.5}},
    )
    run = trainer.run("train", make_config(spec))

    assert run.code == 0, run.result
    assert run.result["primaryMetric"] == "r2"
    assert run.result["metrics"]["r2"] > 0.5
    assert "classes" not in run.result["signature"]
    assert run.result["params"] == {"alpha": 0.5, "random_state": 42}


def test_directory_of_csv_files_is_concatenated(trainer: Trainer, mixed: pd.DataFrame) -> None:
    trainer.write("parts/a.csv", mixed.iloc[:100])
    trainer.write("parts/b.csv", mixed.iloc[100:])
    trainer.write_text("parts/.partial.csv", "garbage\n")  # hidden files (uploads in progress) are skipped
    spec = make_spec(
        data={"source": {"uri": "pvc://data/parts"}, "target": "churn", "features": ["age", "city"]}
    )
    run = trainer.run("train", make_config(spec))

    assert run.code == 0, run.result
    _, meta = artifact.load_verified(trainer.artifact_dir(), run.result["sha256"])
    assert meta["rows"] == len(mixed)


def feedback_lines(frame: pd.DataFrame, target: str) -> str:
    lines = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        features = {
            k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items() if k != target
        }
        label = row[target]
        lines.append(
            json.dumps(
                {
                    "id": f"r{i}",
                    "time": "2025-01-01T00:00:00Z",
                    "version": "3",
                    "features": features,
                    "prediction": label,
                    "label": label,
                }
            )
        )
    lines.append(json.dumps({"id": "unlabelled", "features": {"age": 1.0}, "prediction": "no"}))
    return "\n".join(lines) + "\n"


def test_jsonl_feedback_directory_appended_as_extra_source(trainer: Trainer, mixed: pd.DataFrame) -> None:
    table = mixed.drop(columns=["spend"])
    uri = trainer.write("train.csv", table.iloc[:200])
    trainer.write_text("feedback/feedback-0001.jsonl", feedback_lines(table.iloc[200:220], "churn"))
    trainer.write_text("feedback/feedback-0002.jsonl", feedback_lines(table.iloc[220:], "churn"))
    trainer.write_text("feedback/predictions-0001.jsonl", "not read: only feedback-*.jsonl\n")
    spec = make_spec(
        data={
            "source": {"uri": uri},
            "extraSources": [{"uri": "pvc://data/feedback", "format": "jsonl"}],
            "target": "churn",
        }
    )
    # In a pod the operator sets the memory limit, and the pre-flight reads the sources first
    # (issue #23): the prediction log's nested records must not trip it.
    run = trainer.run("train", make_config(spec), MLOPS_MEMORY_LIMIT=str(2**31))

    assert run.code == 0, run.result
    _, meta = artifact.load_verified(trainer.artifact_dir(), run.result["sha256"])
    assert meta["rows"] == len(table)
    assert meta["extraDataUris"] == ["pvc://data/feedback"]
    # The run's own record of what it read: 200 CSV rows, then every labelled log line once.
    read = [{"uri": uri, "rows": 200}, {"uri": "pvc://data/feedback", "rows": len(table) - 200}]
    assert meta["dataSources"] == read and run.result["dataSources"] == read
    # The same rows through the log or the CSV make the same prepared table.
    alone = trainer.run(
        "train",
        make_config(make_spec(data={"source": {"uri": trainer.write("all.csv", table)}, "target": "churn"})),
    )
    assert alone.result["dataDigest"] == run.result["dataDigest"]


@pytest.mark.parametrize("log", ["missing", "empty"])
def test_a_prediction_log_without_labelled_rows_is_skipped_and_said(
    trainer: Trainer, mixed: pd.DataFrame, log: str
) -> None:
    """Issue #19, case 1: a retraining run (extra jsonl source) before any label trains on what
    exists and says so, instead of failing BadInput; any other missing source still fails."""
    table = mixed.drop(columns=["spend"])
    uri = trainer.write("train.csv", table)
    if log == "empty":
        trainer.path("feedback/predictions-0001.jsonl").write_text("{}\n")  # predictions, no labels
    spec = make_spec(
        data={
            "source": {"uri": uri},
            "extraSources": [{"uri": "pvc://data/feedback", "format": "jsonl"}],
            "target": "churn",
        }
    )
    run = trainer.run("train", make_config(spec))
    assert run.code == 0, run.result
    [note] = run.result["notes"]
    assert note.startswith("trained without pvc://data/feedback: no labelled rows there yet")
    _, meta = artifact.load_verified(trainer.artifact_dir(), run.result["sha256"])
    assert meta["rows"] == len(table) and note in meta["warnings"]
    assert meta["dataSources"] == [
        {"uri": uri, "rows": len(table)},
        {"uri": "pvc://data/feedback", "rows": 0},
    ]

    csv = make_spec(
        data={"source": {"uri": uri}, "extraSources": [{"uri": "pvc://data/nothing.csv"}], "target": "churn"}
    )
    refused = trainer.run("train", make_config(csv, name="demo-2"))
    assert refused.code == 2 and "nothing.csv" in refused.result["message"]


def test_jsonl_main_source_uses_target_name(trainer: Trainer, mixed: pd.DataFrame) -> None:
    table = mixed.drop(columns=["spend"]).rename(columns={"churn": "label"})
    uri = trainer.write_text("log.jsonl", feedback_lines(table, "label"))
    spec = make_spec(data={"source": {"uri": uri, "format": "jsonl"}, "target": "label"})
    run = trainer.run("train", make_config(spec))

    assert run.code == 0, run.result
    assert run.result["signature"]["target"] == "label"
    assert run.result["signature"]["classes"] == ["no", "yes"]


GATE_CASES = [
    (
        "all-hold",
        [
            {"metric": "accuracy", "op": ">=", "threshold": 0.5},
            {"metric": "log_loss", "op": "<", "threshold": 5},
        ],
        True,
        [],
    ),
    (
        "two-fail",
        [
            {"metric": "accuracy", "op": ">", "threshold": 0.9999},
            {"metric": "f1", "threshold": 0.5},
            {"metric": "log_loss", "op": "<=", "threshold": 0.0001},
        ],
        False,
        ["accuracy > 0.9999 (was 0.9667)", "log_loss <= 0.0001 (was 0.08744)"],
    ),
]


@pytest.mark.parametrize(("gates", "passed", "failed"), [pytest.param(*c[1:], id=c[0]) for c in GATE_CASES])
def test_gates(trainer: Trainer, gates: list[dict[str, Any]], passed: bool, failed: list[str]) -> None:
    run = trainer.run("train", make_config(make_spec(evaluation={"gates": gates})))

    assert run.code == 0, run.result
    assert run.result["gatesPassed"] is passed
    assert run.result["failedGates"] == failed
    _, meta = artifact.load_verified(trainer.artifact_dir(), run.result["sha256"])
    assert meta["gatesPassed"] is passed
    assert meta["gates"] == [{"op": ">=", **g} for g in gates]


def test_gate_on_a_metric_not_computed_fails(trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_trainer import metrics

    original = metrics.evaluate

    def without_roc_auc(*args: Any, **kwargs: Any) -> dict[str, float]:
        return {k: v for k, v in original(*args, **kwargs).items() if k != "roc_auc"}

    # roc_auc is left out when the held-out rows cannot define it (e.g. a single class).
    monkeypatch.setattr("mlops_trainer.train.evaluate", without_roc_auc)
    run = trainer.run(
        "train", make_config(make_spec(evaluation={"gates": [{"metric": "roc_auc", "threshold": 0.5}]}))
    )

    assert run.code == 0, run.result
    assert run.result["gatesPassed"] is False
    assert run.result["failedGates"] == ["roc_auc >= 0.5 (not computed)"]


def test_training_is_deterministic(trainer: Trainer) -> None:
    first = trainer.run("train", make_config(name="demo-1"))
    second = trainer.run("train", make_config(name="demo-2"))

    assert first.code == second.code == 0
    for key in ("metrics", "score", "dataDigest", "params", "signature"):
        assert first.result[key] == second.result[key], key
    assert second.result["artifactUri"] == "pvc://mlops-artifacts/models/demo/demo-2"


@pytest.mark.parametrize(
    ("user_params", "overrides", "expected"),
    [
        pytest.param(
            {"n_estimators": 10},
            {"max_depth": 2},
            {"n_estimators": 10, "max_depth": 2, "random_state": 42},
            id="override-added",
        ),
        pytest.param(
            {"n_estimators": 10},
            {"n_estimators": 5},
            {"n_estimators": 5, "random_state": 42},
            id="override-wins",
        ),
        pytest.param(
            {"n_estimators": 10, "random_state": 7},
            {},
            {"n_estimators": 10, "random_state": 7},
            id="user-seed-kept",
        ),
    ],
)
def test_params_used(
    trainer: Trainer, user_params: dict[str, Any], overrides: dict[str, Any], expected: dict[str, Any]
) -> None:
    spec = make_spec(estimator={"class": "RandomForestClassifier", "params": user_params})
    run = trainer.run("train", make_config(spec, params=overrides))

    assert run.code == 0, run.result
    assert run.result["params"] == expected


def test_seed_comes_from_split_seed(trainer: Trainer) -> None:
    spec = make_spec(data={"split": {"seed": 3, "testSize": 0.3}})
    run = trainer.run("train", make_config(spec))
    _, meta = artifact.load_verified(trainer.artifact_dir(), run.result["sha256"])

    assert run.result["params"]["random_state"] == 3
    assert meta["testRows"] == 45


@pytest.mark.parametrize(
    ("data", "estimator", "warning"),
    [
        pytest.param(
            {"source": {"uri": "builtin:breast_cancer"}, "prepare": {"scaling": "none"}},
            {"class": "LogisticRegression", "params": {"max_iter": 5}},
            "ConvergenceWarning:",
            id="convergence",
        ),
        pytest.param(
            {}, {"class": "SVC", "params": {"probability": True}}, "FutureWarning:", id="deprecated-parameter"
        ),
    ],
)
def test_estimator_warnings_are_recorded_not_raised(
    trainer: Trainer, data: dict[str, Any], estimator: dict[str, Any], warning: str
) -> None:
    spec = make_spec(data=data, estimator=estimator)
    run = trainer.run("train", make_config(spec))

    assert run.code == 0, run.result
    _, meta = artifact.load_verified(trainer.artifact_dir(), run.result["sha256"])
    assert any(w.startswith(warning) for w in meta["warnings"])


def test_small_classes_skip_stratification(trainer: Trainer) -> None:
    frame = mixed_frame(n=40)
    frame.loc[0, "churn"] = "rare"  # one row of a third class cannot be stratified
    uri = trainer.write("rare.csv", frame)
    run = trainer.run(
        "train",
        make_config(make_spec(data={"source": {"uri": uri}, "target": "churn", "features": ["age", "plan"]})),
    )

    assert run.code == 0, run.result
    skipped = [entry for entry in trainer.logs(run) if entry["message"] == "Skipped stratification"]
    assert skipped == [{**skipped[0], "reason": "class 'rare' has a single row"}]


def test_s3_output_is_uploaded(trainer: Trainer, s3_server: S3Server, s3_bucket: str) -> None:
    spec = make_spec(output={"uri": f"s3://{s3_bucket}/registry"})
    run = trainer.run("train", make_config(spec), **s3_server.env)

    assert run.code == 0, run.result
    assert run.result["artifactUri"] == f"s3://{s3_bucket}/registry/demo/demo-1"
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"] for o in listed["Contents"]] == [
        "registry/demo/demo-1/model.json",
        "registry/demo/demo-1/model.skops",
    ]
    skops = client.get_object(Bucket=s3_bucket, Key="registry/demo/demo-1/model.skops")["Body"].read()
    assert artifact.sha256_bytes(skops) == run.result["sha256"]

    verified = trainer.run(
        "verify", None, "--artifact", f"s3://{s3_bucket}/registry/demo/demo-1", "--sha256", run.result["sha256"],
        **s3_server.env,
    )  # fmt: skip
    assert verified.code == 0, verified.result


def test_baseline_is_scored_on_the_same_held_out_rows(trainer: Trainer) -> None:
    # v1: a deliberately weak model; v2 names it as its baseline and must report v1's metrics on
    # v2's own held-out rows, which are what a promotion compares.
    weak = make_spec(estimator={"class": "LogisticRegression", "params": {"max_iter": 1, "C": 0.001}})
    first = trainer.run("train", make_config(weak, name="weak-1"))
    assert first.code == 0, first.result
    baseline = {
        "modelVersion": "demo-v1",
        "uri": first.result["artifactUri"],
        "sha256": first.result["sha256"],
    }

    spec = make_spec(evaluation={"baseline": baseline})
    second = trainer.run("train", make_config(spec, name="strong-1"))
    assert second.code == 0, second.result
    scored = second.result["baseline"]
    assert scored["modelVersion"] == "demo-v1"
    assert set(scored["metrics"]) == set(second.result["metrics"])
    # Same rows as v2's own evaluation: the weak model scores lower there.
    assert scored["metrics"]["accuracy"] < second.result["metrics"]["accuracy"]
    # Scoring the weak model on its own split again gives its own recorded accuracy (same seed, same rows).
    assert scored["metrics"]["accuracy"] == pytest.approx(first.result["metrics"]["accuracy"])


def test_a_baseline_that_cannot_be_scored_is_a_warning_not_a_failure(trainer: Trainer) -> None:
    first = trainer.run("train", make_config(make_spec(), name="one-1"))
    assert first.code == 0
    wrong_digest = {"modelVersion": "demo-v1", "uri": first.result["artifactUri"], "sha256": "0" * 64}
    run = trainer.run("train", make_config(make_spec(evaluation={"baseline": wrong_digest}), name="two-1"))
    assert run.code == 0, run.result
    assert "baseline" not in run.result
    _model, meta = artifact.load_verified(trainer.artifact_dir(name="two-1"), run.result["sha256"])
    assert meta["baseline"] is None
    assert any("baseline demo-v1 not scored: sha256 mismatch" in w for w in meta["warnings"]), meta[
        "warnings"
    ]


def test_relayed_labels_join_the_prediction_log_once(tmp_path: Any) -> None:
    from mlops_trainer.data import read_path

    def write(name: str, *lines: dict[str, Any]) -> None:
        (tmp_path / name).write_text("".join(json.dumps(line) + "\n" for line in lines))

    row = {"a": 1.0, "b": 2.0}
    write(
        "predictions-pod-a.jsonl",
        {"id": "p1", "rows": [row, {"a": 3.0, "b": 4.0}], "predictions": [0, 1]},
        {"id": "p2", "rows": [row], "predictions": [1]},
        {"id": "p4", "rows": [row], "predictions": [1]},
    )
    write("feedback-pod-a.jsonl", {"id": "p2", "features": row, "prediction": 1, "label": 1})
    write(
        "labels-pod-b.jsonl",
        {"id": "p1", "labels": [1, 1]},  # joined: two rows
        {"id": "p2", "labels": [0]},  # already labelled by the serving pod: skipped
        {"id": "p3", "labels": [1]},  # its prediction was not sampled into the log: dropped
        {"id": "p4", "labels": [0, 1]},  # row count does not match: dropped
    )
    table = read_path(tmp_path, "jsonl", "y", "pvc://logs/iris")
    got = sorted(zip(table["a"], table["b"], table["y"], strict=True))
    assert got == [(1.0, 2.0, 1), (1.0, 2.0, 1), (3.0, 4.0, 1)]


def test_a_log_directory_with_only_relayed_labels_is_read(tmp_path: Any) -> None:
    from mlops_trainer.data import read_path

    (tmp_path / "predictions-a.jsonl").write_text(json.dumps({"id": "q", "rows": [{"a": 5.0}]}) + "\n")
    (tmp_path / "labels-b.jsonl").write_text(json.dumps({"id": "q", "labels": ["setosa"]}) + "\n")
    table = read_path(tmp_path, "jsonl", "y", "pvc://logs/iris")
    assert table.to_dict("records") == [{"a": 5.0, "y": "setosa"}]
