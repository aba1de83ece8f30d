"""Checks of a TrainingJob spec that need no data: what the CRD schema cannot express.

`check_spec` is pure and cheap: the operator calls it before launching any pod, and the trainer
calls it first too. It never imports scikit-learn (the estimators' parameter names and when they
offer predict_proba are in the allow-list table, mlops_contract.estimators; the values each
parameter accepts in the generated mlops_contract.constraints) and never touches
data, storage or the network.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any

from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_contract.estimators import (
    BUILTIN_DATASETS,
    CLASSIFICATION_METRICS,
    DEFAULT_METRIC,
    ESTIMATORS,
    REGRESSION_METRICS,
    Task,
)
from mlops_contract.params import value_problem

# Metrics computed from predict_proba: an estimator without it cannot produce them.
PROBABILITY_METRICS = ("roc_auc", "log_loss")


def estimator_class(class_name: str) -> Any:
    """The allow-listed estimator class; KeyError for anything else. For the trainer: imports scikit-learn."""
    info = ESTIMATORS[class_name]
    return getattr(importlib.import_module(info.module), info.name)


def estimator_param_names(class_name: str) -> list[str]:
    """The estimator's constructor parameters, sorted, from the allow-list table (no import)."""
    return list(ESTIMATORS[class_name].params)


def unknown_param_problems(class_name: str, names: Iterable[str], where: str) -> list[str]:
    """One message per unknown parameter name, with a suggestion when one is close."""
    valid = estimator_param_names(class_name)
    problems = []
    for name in names:
        if name in valid:
            continue
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f" (valid: {', '.join(valid)})"
        problems.append(f"{where}: {class_name} has no parameter {name!r}{hint}")
    return problems


def param_value_problems(class_name: str, params: dict[str, Any], where: str) -> list[str]:
    """One message per parameter value scikit-learn's validation would refuse."""
    problems = []
    for name, value in params.items():
        problem = value_problem(class_name, name, value)
        if problem is not None:
            problems.append(f"{where}.{name}: {class_name} {problem}")
    return problems


def _space_value_problems(class_name: str, space: dict[str, list[Any]]) -> list[str]:
    problems = []
    for name, values in space.items():
        for i, value in enumerate(values):
            problem = value_problem(class_name, name, value)
            if problem is not None:
                problems.append(f"tuning.space.{name}[{i}]: {class_name} {problem}")
    return problems


def metrics_for(task: Task) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def has_predict_proba(class_name: str, params: dict[str, Any]) -> bool:
    """Whether the estimator built with `params` offers predict_proba (SVC needs probability=True)."""
    info = ESTIMATORS[class_name]
    if not set(params) <= set(info.params):
        return True  # unknown parameters are reported separately
    return info.has_predict_proba(params)


def _metric_problems(spec: TrainingJobSpec, task: Task) -> list[str]:
    valid = metrics_for(task)
    named: list[tuple[str, str]] = []
    if spec.evaluation.primary_metric:
        named.append(("evaluation.primaryMetric", spec.evaluation.primary_metric))
    for i, gate in enumerate(spec.evaluation.gates or []):
        named.append((f"evaluation.gates[{i}].metric", gate.metric))
    if spec.tuning and spec.tuning.metric:
        named.append(("tuning.metric", spec.tuning.metric))
    problems = [
        f"{where}: {metric!r} is not a {task} metric (choose one of: {', '.join(valid)})"
        for where, metric in named
        if metric not in valid
    ]
    needs_proba = [(where, metric) for where, metric in named if metric in PROBABILITY_METRICS]
    if needs_proba and not problems:
        params = dict(spec.estimator.params or {})
        if not has_predict_proba(spec.estimator.class_name, params):
            problems += [
                f"{where}: {metric} needs predict_proba, which {spec.estimator.class_name} does not provide"
                for where, metric in needs_proba
            ]
    return problems


def _data_problems(spec: TrainingJobSpec, task: Task) -> list[str]:
    problems = []
    sources = [("data.source", spec.data.source)] + [
        (f"data.extraSources[{i}]", s) for i, s in enumerate(spec.data.extra_sources or [])
    ]
    for where, source in sources:
        if not source.uri.startswith("builtin:"):
            continue
        name = source.uri.removeprefix("builtin:")
        if name not in BUILTIN_DATASETS:
            problems.append(
                f"{where}.uri: unknown builtin dataset {name!r} (choose one of: {', '.join(sorted(BUILTIN_DATASETS))})"
            )
        elif BUILTIN_DATASETS[name] != task:
            problems.append(
                f"{where}.uri: builtin:{name} is a {BUILTIN_DATASETS[name]} dataset but the task is {task}"
            )
    if not spec.data.target and not spec.data.source.uri.startswith("builtin:"):
        problems.append("data.target is required for file sources")
    features = spec.data.features
    if features is not None:
        if spec.data.target and spec.data.target in features:
            problems.append(f"data.features: the target {spec.data.target!r} must not be a feature")
        duplicates = sorted({f for f in features if features.count(f) > 1})
        if duplicates:
            problems.append(f"data.features: listed more than once: {', '.join(duplicates)}")
        outside = [c for c in spec.data.prepare.categorical or [] if c not in features]
        if outside:
            problems.append(f"data.prepare.categorical: not in data.features: {', '.join(outside)}")
    return problems


def check_spec(spec: TrainingJobSpec) -> list[str]:
    """Human-readable problems of `spec` found without data; empty when it looks runnable."""
    class_name = spec.estimator.class_name
    info = ESTIMATORS.get(class_name)
    if info is None:
        return [
            f"estimator.class: {class_name!r} is not an allowed estimator (choose one of: {', '.join(sorted(ESTIMATORS))})"
        ]
    problems: list[str] = []
    task: Task = spec.task or info.task
    if task != info.task:
        problems.append(f"task is {task} but {class_name} is a {info.task} estimator")
    problems += unknown_param_problems(class_name, (spec.estimator.params or {}).keys(), "estimator.params")
    problems += param_value_problems(class_name, dict(spec.estimator.params or {}), "estimator.params")
    if spec.tuning is not None:
        problems += unknown_param_problems(class_name, spec.tuning.space.keys(), "tuning.space")
        problems += _space_value_problems(class_name, spec.tuning.space)
        problems += [
            f"tuning.space.{name}: needs at least one value"
            for name, values in spec.tuning.space.items()
            if not values
        ]
    problems += _metric_problems(spec, task)
    problems += _data_problems(spec, task)
    return problems


def primary_metric(spec: TrainingJobSpec, task: Task) -> str:
    return spec.evaluation.primary_metric or DEFAULT_METRIC[task]
