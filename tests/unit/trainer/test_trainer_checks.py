"""check_spec: problems found without data, for the operator to report before launching pods."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from trainer_factories import make_spec

from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_contract.checks import check_spec


def spec(**patch: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(make_spec(**patch))


CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("valid-builtin", {}, []),
    (
        "valid-file-source",
        {
            "data": {
                "source": {"uri": "pvc://data/x.csv"},
                "target": "y",
                "features": ["a", "b"],
                "prepare": {"categorical": ["b"]},
            }
        },
        [],
    ),
    (
        "valid-tuning-and-gates",
        {
            "estimator": {"class": "LogisticRegression", "params": {"C": 1.0}},
            "tuning": {"space": {"C": [0.1, 1.0]}, "metric": "log_loss"},
            "evaluation": {"primaryMetric": "roc_auc", "gates": [{"metric": "f1", "threshold": 0.8}]},
        },
        [],
    ),
    (
        "task-disagrees-with-estimator",
        {"task": "regression", "data": {"source": {"uri": "pvc://d/x.csv"}, "target": "y"}},
        ["task is regression but RandomForestClassifier is a classification estimator"],
    ),
    (
        "unknown-param-with-suggestion",
        {
            "estimator": {"class": "Ridge", "params": {"alpah": 1.0}},
            "data": {"source": {"uri": "builtin:diabetes"}},
        },
        ["estimator.params: Ridge has no parameter 'alpah' (did you mean alpha?)"],
    ),
    (
        "unknown-param-lists-valid-ones",
        {"estimator": {"class": "GaussianNB", "params": {"zzz": 1}}},
        ["estimator.params: GaussianNB has no parameter 'zzz' (valid: priors, var_smoothing)"],
    ),
    (
        "unknown-tuning-space-name-and-empty-values",
        {"tuning": {"space": {"n_estimatorz": [1], "max_depth": []}}},
        [
            "tuning.space: RandomForestClassifier has no parameter 'n_estimatorz' (did you mean n_estimators?)",
            "tuning.space.max_depth: needs at least one value",
        ],
    ),
    (
        "metrics-for-the-wrong-task",
        {
            "evaluation": {
                "primaryMetric": "r2",
                "gates": [
                    {"metric": "accuracy", "threshold": 0.5},
                    {"metric": "mae", "op": "<=", "threshold": 3},
                ],
            },
            "tuning": {"space": {"max_depth": [2]}, "metric": "rmse"},
        },
        [
            "evaluation.primaryMetric: 'r2' is not a classification metric (choose one of: accuracy, f1, precision, recall, roc_auc, log_loss)",
            "evaluation.gates[1].metric: 'mae' is not a classification metric (choose one of: accuracy, f1, precision, recall, roc_auc, log_loss)",
            "tuning.metric: 'rmse' is not a classification metric (choose one of: accuracy, f1, precision, recall, roc_auc, log_loss)",
        ],
    ),
    (
        "probability-metric-without-predict-proba",
        {
            "estimator": {"class": "RidgeClassifier"},
            "evaluation": {"gates": [{"metric": "roc_auc", "threshold": 0.9}]},
        },
        ["evaluation.gates[0].metric: roc_auc needs predict_proba, which RidgeClassifier does not provide"],
    ),
    (
        "sgd-hinge-has-no-probabilities",
        {
            "estimator": {"class": "SGDClassifier", "params": {"loss": "hinge"}},
            "evaluation": {"primaryMetric": "log_loss"},
        },
        ["evaluation.primaryMetric: log_loss needs predict_proba, which SGDClassifier does not provide"],
    ),
    (
        "sgd-log-loss-has-probabilities",
        {
            "estimator": {"class": "SGDClassifier", "params": {"loss": "log_loss"}},
            "evaluation": {"primaryMetric": "log_loss"},
        },
        [],
    ),
    (
        "svc-by-default-has-no-probabilities",
        {"estimator": {"class": "SVC"}, "evaluation": {"primaryMetric": "roc_auc"}},
        ["evaluation.primaryMetric: roc_auc needs predict_proba, which SVC does not provide"],
    ),
    (
        "svc-with-probability-has-probabilities",
        {
            "estimator": {"class": "SVC", "params": {"probability": True}},
            "evaluation": {"primaryMetric": "roc_auc"},
        },
        [],
    ),
    (
        "unknown-param-skips-the-predict-proba-check",
        {
            "estimator": {"class": "RidgeClassifier", "params": {"zzz": 1}},
            "evaluation": {"primaryMetric": "roc_auc"},
        },
        [
            "estimator.params: RidgeClassifier has no parameter 'zzz' (valid: alpha, class_weight, copy_X, "
            "fit_intercept, max_iter, positive, random_state, solver, tol)"
        ],
    ),
    (
        "unknown-builtin-datasets",
        {
            "data": {
                "source": {"uri": "builtin:mnist"},
                "extraSources": [{"uri": "builtin:iris"}, {"uri": "builtin:boston"}],
            }
        },
        [
            "data.source.uri: unknown builtin dataset 'mnist' (choose one of: breast_cancer, diabetes, digits, iris, wine)",
            "data.extraSources[1].uri: unknown builtin dataset 'boston' (choose one of: breast_cancer, diabetes, digits, iris, wine)",
        ],
    ),
    (
        "builtin-dataset-of-the-other-task",
        {"estimator": {"class": "Ridge"}},
        ["data.source.uri: builtin:iris is a classification dataset but the task is regression"],
    ),
    (
        "target-required-for-files",
        {"data": {"source": {"uri": "s3://bucket/train.csv"}}},
        ["data.target is required for file sources"],
    ),
    (
        "feature-list-problems",
        {
            "data": {
                "source": {"uri": "pvc://d/x.csv"},
                "target": "y",
                "features": ["a", "y", "a"],
                "prepare": {"categorical": ["c"]},
            }
        },
        [
            "data.features: the target 'y' must not be a feature",
            "data.features: listed more than once: a",
            "data.prepare.categorical: not in data.features: c",
        ],
    ),
]


@pytest.mark.parametrize(("patch", "problems"), [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_check_spec(patch: dict[str, Any], problems: list[str]) -> None:
    assert check_spec(spec(**patch)) == problems


def test_unknown_class_is_reported_not_raised() -> None:
    constructed = spec().model_copy(
        update={"estimator": spec().estimator.model_copy(update={"class_name": "Evil"})}
    )

    assert check_spec(constructed) == [
        "estimator.class: 'Evil' is not an allowed estimator (choose one of: "
        "DecisionTreeClassifier, DecisionTreeRegressor, ElasticNet, ExtraTreesClassifier, ExtraTreesRegressor, "
        "GaussianNB, GradientBoostingClassifier, GradientBoostingRegressor, HistGradientBoostingClassifier, "
        "HistGradientBoostingRegressor, KNeighborsClassifier, KNeighborsRegressor, Lasso, LinearRegression, "
        "LogisticRegression, RandomForestClassifier, RandomForestRegressor, Ridge, RidgeClassifier, SGDClassifier, SVC, SVR)"
    ]


def test_check_spec_imports_no_scikit_learn() -> None:
    code = textwrap.dedent(
        """
        import sys
        import mlops_contract.checks as checks
        from mlops_contract.api.trainingjob import TrainingJobSpec
        assert "sklearn" not in sys.modules, "importing checks must not import sklearn"
        spec = TrainingJobSpec.model_validate(
            {"model": "m", "data": {"source": {"uri": "builtin:diabetes"}}, "estimator": {"class": "Ridge"}}
        )
        assert checks.check_spec(spec) == []
        assert "sklearn" not in sys.modules, "check_spec must not import sklearn"
        """
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=60)
