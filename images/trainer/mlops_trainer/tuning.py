"""Hyperparameter tuning: one cross-validated trial per pod of an Indexed Job.

A trial's parameters are a pure function of (space, strategy, maxTrials, seed, index), so the
operator sizes the Job with `trial_count` (mlops_contract.api.trainingjob, re-exported here: it
needs neither scikit-learn nor pandas) and every pod computes its own parameters from
JOB_COMPLETION_INDEX without coordination:

- grid: the index-th combination of ParameterGrid(space) (keys sorted), the first maxTrials;
- random: the index-th draw of ParameterSampler(space, n_iter, random_state=seed), where
  n_iter = min(maxTrials, number of combinations) (draws without replacement).

A trial reads the data the prepare step wrote once (mlops_trainer.prepared) or, without one,
prepares the data exactly as `train` does and splits with the same seed; and reports the
mean cross-validation score of the metric on the training split (never the held-out rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops_contract.api.trainingjob import Tuning, trial_count
from mlops_contract.checks import check_spec, primary_metric
from mlops_contract.estimators import HIGHER_IS_BETTER, Task
from mlops_trainer.config import TrainerConfig
from mlops_trainer.errors import BadInput
from mlops_trainer.logs import log, phase
from mlops_trainer.metrics import scorer
from mlops_trainer.pipeline import build_model, resolve_params, run_estimator
from mlops_trainer.prepared import load_split


def trial_params(tuning: Tuning, index: int) -> dict[str, Any]:
    """Parameters of trial `index` (0-based); ValueError when out of range."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    count = trial_count(tuning)
    if not 0 <= index < count:
        raise ValueError(f"trial index {index} is out of range: there are {count} trials")
    if tuning.strategy == "grid":
        return dict(ParameterGrid(tuning.space)[index])
    draws = list(ParameterSampler(tuning.space, n_iter=count, random_state=tuning.seed))
    return dict(draws[index])


def tuning_metric(config: TrainerConfig, task: Task) -> str:
    tuning = config.spec.tuning
    return (tuning.metric if tuning and tuning.metric else None) or primary_metric(config.spec, task)


def run_trial(config: TrainerConfig, index: int, env: Mapping[str, str]) -> dict[str, Any]:
    """Cross-validate trial `index`; the result is {"ok", "trial", "params", "score", "metric", "reads"}
    (`reads`: what this pod read, the prepared data when the config names it)."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    spec = config.spec
    if spec.tuning is None:
        raise BadInput("spec.tuning is not set: there are no trials to run")
    problems = check_spec(spec)
    if problems:
        raise BadInput("; ".join(problems))
    try:
        params = trial_params(spec.tuning, index)
    except ValueError as e:
        raise BadInput(str(e)) from e
    log("Started trial", phase="trial", trial=index, params=params)
    reads: list[dict[str, Any]] = []
    ds, split = load_split(config, env, [], reads)
    metric = tuning_metric(config, ds.task)
    classes = sorted(split.y_train.unique().tolist())
    model = build_model(ds, spec, resolve_params(spec, {**config.params, **params}))
    cv_folds = spec.tuning.cv
    if cv_folds > len(split.X_train):
        raise BadInput(f"tuning.cv is {cv_folds} but the training split has only {len(split.X_train)} rows")
    if ds.task == "classification" and int(split.y_train.value_counts().min()) >= cv_folds:
        folds: Any = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=spec.data.split.seed)
    else:
        folds = KFold(n_splits=cv_folds, shuffle=True, random_state=spec.data.split.seed)
    with phase("cross-validate", trial=index, folds=cv_folds):
        scores, _ = run_estimator(
            "cross-validation",
            lambda: cross_val_score(
                model,
                split.X_train,
                split.y_train,
                cv=folds,
                scoring=scorer(metric, ds.task, classes),
                error_score="raise",
            ),
        )
    mean = float(scores.mean())
    score = mean if HIGHER_IS_BETTER[metric] else -mean
    log("Finished trial", phase="trial", trial=index, metric=metric, score=score)
    return {"ok": True, "trial": index, "params": params, "score": score, "metric": metric, "reads": reads}
