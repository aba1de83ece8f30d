"""Bad input fails at once with exit code 2 and a message precise enough to fix the spec or data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from trainer_factories import Trainer, make_config, make_spec, mixed_frame

# Each case: (id, arrange(trainer) -> config, expected message). The message is exact unless it
# ends with "...", then it is the exact prefix (the rest comes from pandas / pyarrow / sklearn).
Arrange = Callable[[Trainer], dict[str, Any]]


def csv(trainer: Trainer, frame: pd.DataFrame | None = None, **data: Any) -> dict[str, Any]:
    uri = trainer.write("mixed.csv", mixed_frame() if frame is None else frame)
    return make_config(make_spec(data={"source": {"uri": uri}, "target": "churn", **data}))


def single_class(trainer: Trainer) -> dict[str, Any]:
    frame = mixed_frame()
    frame["churn"] = "yes"
    return csv(trainer, frame)


def all_missing_feature(trainer: Trainer) -> dict[str, Any]:
    frame = mixed_frame()
    frame["age"] = np.nan
    return csv(trainer, frame)


def datetime_feature(trainer: Trainer) -> dict[str, Any]:
    frame = mixed_frame().assign(when=pd.Timestamp("2025-01-01"))
    uri = trainer.write("typed.parquet", frame)
    return make_config(make_spec(data={"source": {"uri": uri, "format": "parquet"}, "target": "churn"}))


def corrupt_parquet(trainer: Trainer) -> dict[str, Any]:
    uri = trainer.write_text("broken.parquet", b"PAR1 this is not parquet")
    return make_config(make_spec(data={"source": {"uri": uri, "format": "parquet"}, "target": "churn"}))


def undecodable_csv(trainer: Trainer) -> dict[str, Any]:
    uri = trainer.write_text("latin.csv", b"a,churn\n\xff\xfe,\xff\n")
    return make_config(make_spec(data={"source": {"uri": uri}, "target": "churn"}))


def empty_csv(trainer: Trainer) -> dict[str, Any]:
    uri = trainer.write_text("empty.csv", "")
    return make_config(make_spec(data={"source": {"uri": uri}, "target": "churn"}))


def header_only_csv(trainer: Trainer) -> dict[str, Any]:
    uri = trainer.write_text("header.csv", "age,churn\n")
    return make_config(make_spec(data={"source": {"uri": uri}, "target": "churn"}))


def empty_directory(trainer: Trainer) -> dict[str, Any]:
    trainer.path("empty/.keep").write_text("")
    return make_config(make_spec(data={"source": {"uri": "pvc://data/empty"}, "target": "churn"}))


def mismatched_files(trainer: Trainer) -> dict[str, Any]:
    trainer.write("parts/a.csv", mixed_frame().iloc[:50])
    trainer.write("parts/b.csv", mixed_frame().iloc[50:].drop(columns=["plan"]))
    return make_config(make_spec(data={"source": {"uri": "pvc://data/parts"}, "target": "churn"}))


def extra_lacks_columns(trainer: Trainer) -> dict[str, Any]:
    extra = trainer.write("extra.csv", mixed_frame().drop(columns=["city", "plan"]))
    return csv(trainer, extraSources=[{"uri": extra}])


def extra_text_in_numbers(trainer: Trainer) -> dict[str, Any]:
    extra = trainer.write("extra.csv", mixed_frame().assign(visits="many"))
    return csv(trainer, extraSources=[{"uri": extra}])


def bad_jsonl(trainer: Trainer) -> dict[str, Any]:
    trainer.write_text("log/feedback-1.jsonl", '{"features": {"age": 1}, "label": "no"}\n{oops\n')
    return csv(trainer, extraSources=[{"uri": "pvc://data/log", "format": "jsonl"}])


def jsonl_without_features(trainer: Trainer) -> dict[str, Any]:
    trainer.write_text("log/feedback-1.jsonl", '{"label": "no"}\n')
    return csv(trainer, extraSources=[{"uri": "pvc://data/log", "format": "jsonl"}])


def continuous_class_target(trainer: Trainer) -> dict[str, Any]:
    uri = trainer.write("mixed.csv", mixed_frame())
    return make_config(make_spec(data={"source": {"uri": uri}, "target": "spend"}))


def text_regression_target(trainer: Trainer) -> dict[str, Any]:
    uri = trainer.write("mixed.csv", mixed_frame())
    spec = make_spec(data={"source": {"uri": uri}, "target": "churn"}, estimator={"class": "Ridge"})
    return make_config(spec)


def spec_patch(**patch: Any) -> Arrange:
    return lambda trainer: make_config(make_spec(**patch))


CASES: list[tuple[str, Arrange, str]] = [
    (
        "missing-target",
        lambda t: csv(t, target="label"),
        "target column 'label' not found in pvc://data/mixed.csv (columns: age, visits, city, plan, spend, churn)",
    ),
    (
        "unknown-feature",
        lambda t: csv(t, features=["age", "height", "weight"]),
        "feature columns not found in pvc://data/mixed.csv: height, weight (columns: age, visits, city, plan, spend, churn)",
    ),
    ("too-few-rows", lambda t: csv(t, minRows=1000), "only 240 usable rows; data.minRows is 1000"),
    (
        "too-few-rows-after-drop",
        lambda t: csv(t, minRows=200, prepare={"missing": {"numeric": "drop", "categorical": "drop"}}),
        "only 187 usable rows after dropping 53 with missing values; data.minRows is 200",
    ),
    (
        "unknown-param",
        spec_patch(estimator={"class": "RandomForestClassifier", "params": {"n_estimator": 10}}),
        "estimator.params: RandomForestClassifier has no parameter 'n_estimator' (did you mean n_estimators?)",
    ),
    (
        "unknown-override-param",
        lambda t: make_config(make_spec(), params={"max_dept": 3}),
        "estimator parameters: RandomForestClassifier has no parameter 'max_dept' (did you mean max_depth?)",
    ),
    (
        "invalid-param-value",
        spec_patch(estimator={"class": "RandomForestClassifier", "params": {"n_estimators": -1}}),
        # Found before any data is read, as scikit-learn's validation would (mlops_contract.params).
        "estimator.params.n_estimators: RandomForestClassifier -1 is not accepted; n_estimators must be an int in [1, inf)",
    ),
    (
        "single-class-target",
        single_class,
        "target 'churn' has a single class ('yes'); classification needs at least 2",
    ),
    (
        "continuous-target-for-classifier",
        continuous_class_target,
        "target 'spend' has non-integer numbers (e.g. 15.71); classification needs class labels (is the task regression?)",
    ),
    (
        "text-target-for-regressor",
        text_regression_target,
        "target 'churn' is not numeric (dtype str); regression needs a numeric target",
    ),
    ("feature-without-values", all_missing_feature, "feature column 'age' has no values"),
    (
        "unsupported-dtype",
        datetime_feature,
        "feature column 'when' has unsupported dtype datetime64[us]; use numbers or text (or leave it out of data.features)",
    ),
    (
        "categorical-not-a-feature",
        lambda t: csv(t, prepare={"categorical": ["zip"]}),
        "prepare.categorical lists columns that are not features: zip",
    ),
    (
        "unreadable-parquet",
        corrupt_parquet,
        "cannot read broken.parquet from pvc://data/broken.parquet as parquet: ...",
    ),
    (
        "undecodable-csv",
        undecodable_csv,
        "cannot read latin.csv from pvc://data/latin.csv as csv: 'utf-8' codec can't decode ...",
    ),
    (
        "empty-csv",
        empty_csv,
        "cannot read empty.csv from pvc://data/empty.csv as csv: No columns to parse from file",
    ),
    ("header-only-csv", header_only_csv, "data source pvc://data/header.csv has no rows"),
    (
        "missing-file",
        lambda t: (
            csv(t) | {"spec": make_spec(data={"source": {"uri": "pvc://data/nope.csv"}, "target": "churn"})}
        ),
        "data source pvc://data/nope.csv does not exist ({pvc}/data/nope.csv not found)",
    ),
    ("empty-directory", empty_directory, "data source pvc://data/empty has no *.csv or *.csv.gz files"),
    (
        "files-with-different-columns",
        mismatched_files,
        "files of data source pvc://data/parts have different columns: a.csv has [age, visits, city, plan, spend, churn], "
        "b.csv has [age, visits, city, spend, churn]",
    ),
    (
        "extra-source-lacks-columns",
        extra_lacks_columns,
        "data.extraSources[0] (pvc://data/extra.csv) lacks columns: city, plan",
    ),
    (
        "extra-source-text-in-numeric-column",
        extra_text_in_numbers,
        "data.extraSources[0] (pvc://data/extra.csv): column 'visits' is numeric in the main source but has non-numeric values",
    ),
    ("bad-jsonl-line", bad_jsonl, "data source pvc://data/log: feedback-1.jsonl:2: not valid JSON (..."),
    (
        "jsonl-line-without-features",
        jsonl_without_features,
        "data source pvc://data/log: feedback-1.jsonl:1: expected an object with a 'features' object",
    ),
    (
        "bad-builtin-name",
        spec_patch(data={"source": {"uri": "builtin:titanic"}}),
        "data.source.uri: unknown builtin dataset 'titanic' (choose one of: breast_cancer, diabetes, digits, iris, wine)",
    ),
    (
        "builtin-dataset-for-wrong-task",
        spec_patch(estimator={"class": "Ridge"}),
        "data.source.uri: builtin:iris is a classification dataset but the task is regression",
    ),
    (
        "target-missing-for-file-source",
        spec_patch(data={"source": {"uri": "pvc://data/x.csv"}}),
        "data.target is required for file sources",
    ),
    (
        "task-mismatch",
        spec_patch(task="regression"),
        "task is regression but RandomForestClassifier is a classification estimator; "
        "data.source.uri: builtin:iris is a classification dataset but the task is regression",
    ),
    (
        "metric-for-wrong-task",
        spec_patch(evaluation={"primaryMetric": "rmse"}),
        "evaluation.primaryMetric: 'rmse' is not a classification metric "
        "(choose one of: accuracy, f1, precision, recall, roc_auc, log_loss)",
    ),
    (
        "invalid-spec-schema",
        spec_patch(data={"split": {"testSize": 1.5}}),
        "invalid config: spec.data.split.testSize: Input should be less than 1",
    ),
    (
        "unknown-spec-field",
        spec_patch(estimater={"class": "Ridge"}),
        "invalid config: spec.estimater: Extra inputs are not permitted",
    ),
    (
        "unknown-estimator-class",
        spec_patch(estimator={"class": "os.system"}),
        "invalid config: spec.estimator.class: Input should be ...",
    ),
    (
        "bad-trainingjob-name",
        lambda t: make_config(name="../escape"),
        "invalid config: name: String should match pattern ...",
    ),
]


@pytest.mark.parametrize(("arrange", "message"), [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_bad_input_exits_2_with_a_precise_message(trainer: Trainer, arrange: Arrange, message: str) -> None:
    run = trainer.run("train", arrange(trainer))

    assert run.code == 2
    assert set(run.result) == {"ok", "reason", "message"}
    assert run.result["ok"] is False and run.result["reason"] == "BadInput"
    expected = message.replace("{pvc}", str(trainer.pvc_root))
    if expected.endswith("..."):
        assert run.result["message"].startswith(expected.removesuffix("...")), run.result["message"]
    else:
        assert run.result["message"] == expected
    assert not trainer.artifact_dir().exists()


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        pytest.param({}, (), "no config: set env MLOPS_CONFIG or pass --config FILE", id="no-config"),
        pytest.param(
            {"MLOPS_CONFIG": "{not json"},
            (),
            "config in env MLOPS_CONFIG is not valid JSON: ...",
            id="not-json",
        ),
        pytest.param(
            {"MLOPS_CONFIG": "[1]"}, (), "config in env MLOPS_CONFIG must be a JSON object", id="not-object"
        ),
        pytest.param(
            {},
            ("--config", "/nonexistent/config.json"),
            "cannot read config file /nonexistent/config.json: ...",
            id="no-file",
        ),
    ],
)
def test_config_problems_exit_2(
    trainer: Trainer, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    run = trainer.run("train", None, *args, **env)

    assert run.code == 2
    assert run.result["reason"] == "BadInput"
    if message.endswith("..."):
        assert run.result["message"].startswith(message.removesuffix("...")), run.result["message"]
    else:
        assert run.result["message"] == message
