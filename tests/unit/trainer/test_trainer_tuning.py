"""Tuning: trial parameters as a pure function of the spec and the index; one trial per pod."""

from __future__ import annotations

from typing import Any

import pytest
from trainer_factories import Trainer, make_config, make_spec, mixed_frame

from mlops_contract.api.trainingjob import Tuning, grid_size
from mlops_trainer.tuning import trial_count, trial_params

SPACE: dict[str, list[Any]] = {
    "n_estimators": [5, 10],
    "max_depth": [2, None],
    "criterion": ["gini", "entropy", "log_loss"],
}


def tuning(**fields: Any) -> Tuning:
    return Tuning.model_validate({"space": SPACE, **fields})


@pytest.mark.parametrize(
    ("fields", "count"),
    [
        pytest.param({"strategy": "grid", "maxTrials": 100}, 12, id="grid-all-combinations"),
        pytest.param({"strategy": "grid", "maxTrials": 5}, 5, id="grid-capped"),
        pytest.param({"strategy": "random", "maxTrials": 4}, 4, id="random"),
        pytest.param({"strategy": "random", "maxTrials": 50}, 12, id="random-capped-by-space"),
        pytest.param({"strategy": "grid", "space": {"alpha": [0.1]}, "maxTrials": 3}, 1, id="single-value"),
    ],
)
def test_trial_count(fields: dict[str, Any], count: int) -> None:
    assert trial_count(tuning(**fields)) == count


GRID_SPACES: list[tuple[str, dict[str, Any]]] = [
    ("the-test-space", SPACE),
    ("no-parameters", {}),
    ("single-values", {"alpha": [0.1], "fit_intercept": [True]}),
    ("none-values", {"max_depth": [None], "max_features": [None, "sqrt", None]}),
    ("mixed-types", {"C": [0.1, 1, "x", None, [1, 2], {"a": 1}, True]}),
    ("large", {f"p{i}": list(range(i + 1)) for i in range(8)}),
    ("an-empty-list", {"alpha": [0.1, 1.0], "max_depth": []}),
    ("empty-list-first", {"max_depth": [], "alpha": []}),
    ("a-string-instead-of-a-list", {"solver": "lbfgs"}),
    ("a-number-instead-of-a-list", {"alpha": 0.1}),
    ("none-instead-of-a-list", {"alpha": None}),
    ("a-dict-instead-of-a-list", {"alpha": {"a": 1}}),
    ("a-tuple", {"alpha": (0.1, 1.0)}),
]


@pytest.mark.parametrize("space", [pytest.param(c[1], id=c[0]) for c in GRID_SPACES])
def test_grid_size_is_the_length_of_parameter_grid(space: dict[str, Any]) -> None:
    """grid_size counts without scikit-learn; it must give ParameterGrid's count or its error."""
    from sklearn.model_selection import ParameterGrid

    try:
        expected: int | str = len(ParameterGrid(space))
    except (TypeError, ValueError) as e:
        expected = f"invalid tuning.space: {e}"
    try:
        got: int | str = grid_size(space)
    except ValueError as e:
        got = str(e)

    assert got == expected


def test_grid_trials_walk_the_grid_in_sorted_key_order() -> None:
    t = tuning(strategy="grid", maxTrials=4, space={"n_estimators": [5, 10], "max_depth": [2, None]})

    assert [trial_params(t, i) for i in range(trial_count(t))] == [
        {"max_depth": 2, "n_estimators": 5},
        {"max_depth": 2, "n_estimators": 10},
        {"max_depth": None, "n_estimators": 5},
        {"max_depth": None, "n_estimators": 10},
    ]


@pytest.mark.parametrize("max_trials", [3, 12, 40])
def test_random_trials_are_deterministic_distinct_and_in_the_space(max_trials: int) -> None:
    t = tuning(strategy="random", maxTrials=max_trials, seed=11)
    trials = [trial_params(t, i) for i in range(trial_count(t))]

    assert trials == [
        trial_params(tuning(strategy="random", maxTrials=max_trials, seed=11), i) for i in range(len(trials))
    ]
    assert len({tuple(sorted(p.items(), key=str)) for p in trials}) == len(trials)
    assert all(set(p) == set(SPACE) and all(v in SPACE[k] for k, v in p.items()) for p in trials)


def test_random_trials_depend_on_the_seed() -> None:
    def draws(seed: int) -> list[dict[str, Any]]:
        t = tuning(strategy="random", maxTrials=6, seed=seed)
        return [trial_params(t, i) for i in range(6)]

    assert draws(1) != draws(2)


@pytest.mark.parametrize("index", [-1, 12])
def test_trial_index_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match=rf"trial index {index} is out of range: there are 12 trials"):
        trial_params(tuning(maxTrials=100), index)


def tuned_spec(**patch: Any) -> dict[str, Any]:
    return make_spec(
        tuning={"space": {"n_estimators": [5, 10], "max_depth": [2, 4]}, "maxTrials": 4, "cv": 3}, **patch
    )


METRIC_CASES = [
    # id, data patch, estimator, tuning metric
    ("accuracy", {}, "RandomForestClassifier", "accuracy"),
    ("f1-macro", {}, "RandomForestClassifier", "f1"),
    ("precision", {}, "RandomForestClassifier", "precision"),
    ("recall", {}, "RandomForestClassifier", "recall"),
    ("roc-auc-ovr", {}, "RandomForestClassifier", "roc_auc"),
    ("log-loss", {}, "RandomForestClassifier", "log_loss"),
    (
        "binary-f1-text-labels",
        {"source": {"uri": "pvc://data/mixed.csv"}, "target": "churn"},
        "RandomForestClassifier",
        "f1",
    ),
    (
        "binary-roc-auc-text-labels",
        {"source": {"uri": "pvc://data/mixed.csv"}, "target": "churn"},
        "RandomForestClassifier",
        "roc_auc",
    ),
    ("r2", {"source": {"uri": "builtin:diabetes"}}, "RandomForestRegressor", "r2"),
    ("rmse", {"source": {"uri": "builtin:diabetes"}}, "RandomForestRegressor", "rmse"),
    ("mae", {"source": {"uri": "builtin:diabetes"}}, "RandomForestRegressor", "mae"),
]


@pytest.mark.parametrize(
    ("data", "estimator", "metric"), [pytest.param(*c[1:], id=c[0]) for c in METRIC_CASES]
)
def test_trial_reports_the_cross_validated_metric(
    trainer: Trainer, mixed: Any, data: dict[str, Any], estimator: str, metric: str
) -> None:
    trainer.write("mixed.csv", mixed)
    spec = make_spec(
        data=data,
        estimator={"class": estimator, "params": {"n_estimators": 10}},
        tuning={"space": {"max_depth": [2, 4]}, "metric": metric, "maxTrials": 2, "cv": 3},
    )
    run = trainer.run("trial", make_config(spec), "--index", "1")

    assert run.code == 0, run.result
    assert run.result == {
        "ok": True,
        "trial": 1,
        "params": {"max_depth": 4},
        "score": run.result["score"],
        "metric": metric,
        "reads": [
            {"uri": spec["data"]["source"]["uri"], "kind": "raw", "rows": run.result["reads"][0]["rows"]}
        ],
    }
    score = run.result["score"]
    if metric in ("rmse", "mae"):
        assert 20 < score < 100  # natural sign: an error, lower is better
    elif metric == "log_loss":
        assert 0 < score < 1
    else:
        assert 0.3 < score <= 1


def test_trial_index_from_job_completion_index(trainer: Trainer) -> None:
    spec = tuned_spec(evaluation={"primaryMetric": "f1"})
    run = trainer.run("trial", make_config(spec), JOB_COMPLETION_INDEX="2")

    assert run.code == 0, run.result
    assert run.result["trial"] == 2
    assert run.result["params"] == {"max_depth": 4, "n_estimators": 5}
    assert run.result["metric"] == "f1"  # the tuning metric defaults to the primary metric


def test_trials_are_reproducible(trainer: Trainer) -> None:
    first = trainer.run("trial", make_config(tuned_spec()), "--index", "0")
    second = trainer.run("trial", make_config(tuned_spec()), "--index", "0")

    assert first.result == second.result


def test_best_trial_params_feed_the_final_training(trainer: Trainer) -> None:
    trial = trainer.run("trial", make_config(tuned_spec()), "--index", "3")
    run = trainer.run("train", make_config(tuned_spec(), params=trial.result["params"]))

    assert run.code == 0, run.result
    assert run.result["params"] == {"n_estimators": 10, "max_depth": 4, "random_state": 42}


@pytest.mark.parametrize(
    ("spec", "args", "env", "message"),
    [
        pytest.param(
            tuned_spec(),
            ("--index", "4"),
            {},
            "trial index 4 is out of range: there are 4 trials",
            id="index-out-of-range",
        ),
        pytest.param(
            make_spec(),
            ("--index", "0"),
            {},
            "spec.tuning is not set: there are no trials to run",
            id="no-tuning",
        ),
        pytest.param(
            tuned_spec(),
            (),
            {},
            "no trial index: set env JOB_COMPLETION_INDEX or pass --index",
            id="no-index",
        ),
        pytest.param(
            tuned_spec(),
            (),
            {"JOB_COMPLETION_INDEX": "x"},
            "env JOB_COMPLETION_INDEX is not an integer: 'x'",
            id="bad-index",
        ),
        pytest.param(
            make_spec(tuning={"space": {"n_trees": [1, 2]}}),
            ("--index", "0"),
            {},
            "tuning.space: RandomForestClassifier has no parameter 'n_trees' (valid: bootstrap, ccp_alpha, class_weight, "
            "criterion, max_depth, max_features, max_leaf_nodes, max_samples, min_impurity_decrease, min_samples_leaf, "
            "min_samples_split, min_weight_fraction_leaf, monotonic_cst, n_estimators, n_jobs, oob_score, random_state, "
            "verbose, warm_start)",
            id="unknown-space-param",
        ),
    ],
)
def test_trial_bad_input(
    trainer: Trainer, spec: dict[str, Any], args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    run = trainer.run("trial", make_config(spec), *args, **env)

    assert run.code == 2
    assert run.result == {"ok": False, "reason": "BadInput", "message": message}


def test_more_folds_than_training_rows(trainer: Trainer) -> None:
    uri = trainer.write("small.csv", mixed_frame(n=20))
    spec = make_spec(
        data={"source": {"uri": uri}, "target": "churn"}, tuning={"space": {"max_depth": [2]}, "cv": 20}
    )
    run = trainer.run("trial", make_config(spec), "--index", "0")

    assert run.code == 2
    assert run.result["message"] == "tuning.cv is 20 but the training split has only 16 rows"
