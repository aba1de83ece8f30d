"""The allow-list table agrees with the installed scikit-learn.

check_spec reads the estimators' parameter names and their predict_proba rule from the table
(mlops_contract.estimators) so that the operator never imports scikit-learn. These tests fail
when a scikit-learn upgrade adds, renames or removes a parameter, or changes when an estimator
offers predict_proba: update the table to what they print.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from mlops_contract.estimators import ESTIMATORS, EstimatorInfo, ProbaWhen

NAMES = sorted(ESTIMATORS)


def estimator_class(info: EstimatorInfo) -> Any:
    return getattr(importlib.import_module(info.module), info.name)


def options(constraint: Any) -> list[Any]:
    """The finite values one of scikit-learn's parameter constraints allows (none for intervals, types...)."""
    constraint = getattr(constraint, "constraint", constraint)  # Hidden(...) wraps another constraint
    if constraint == "boolean":
        return [True, False]
    if constraint is None:
        return [None]
    return sorted(getattr(constraint, "options", ()), key=repr)  # StrOptions, Options


def candidate_values(cls: Any, info: EstimatorInfo) -> list[tuple[str, Any]]:
    """(parameter, value) pairs worth trying: every finite option of every parameter, and the rule's values."""
    constraints: dict[str, list[Any]] = getattr(cls, "_parameter_constraints", {})
    pairs = [(name, value) for name, allowed in constraints.items() for c in allowed for value in options(c)]
    if isinstance(info.predict_proba, ProbaWhen):
        pairs += [(info.predict_proba.param, value) for value in info.predict_proba.values]
    return pairs


@pytest.mark.parametrize("name", NAMES)
def test_parameter_names_are_those_of_the_installed_scikit_learn(name: str) -> None:
    info = ESTIMATORS[name]
    installed = sorted(estimator_class(info)().get_params(deep=False))

    assert list(info.params) == installed, f"{name}: the table's params should be {' '.join(installed)}"


@pytest.mark.parametrize("name", NAMES)
def test_predict_proba_rule_agrees_with_the_installed_scikit_learn(name: str) -> None:
    info = ESTIMATORS[name]
    cls = estimator_class(info)
    cases: list[dict[str, Any]] = [{}] + [{p: v} for p, v in candidate_values(cls, info)]

    disagree = [
        params
        for params in cases
        if info.has_predict_proba(params) != hasattr(cls(**params), "predict_proba")
    ]

    assert disagree == [], f"{name}: the table's predict_proba rule is wrong for {disagree}"


def test_the_conditional_rules_are_exercised() -> None:
    """SVC and SGDClassifier: the candidate values include some that give predict_proba and some that do not."""
    for name in ("SVC", "SGDClassifier"):
        info = ESTIMATORS[name]
        rule = info.predict_proba
        assert isinstance(rule, ProbaWhen)
        values = [v for p, v in candidate_values(estimator_class(info), info) if p == rule.param]
        assert {info.has_predict_proba({rule.param: v}) for v in values} == {True, False}, name
