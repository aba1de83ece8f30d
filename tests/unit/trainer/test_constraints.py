"""The parameter-value table agrees with the installed scikit-learn (issue #19, case 6).

mlops_contract.constraints is generated from scikit-learn's `_parameter_constraints`
(python -m mlops_trainer.constraintgen --write); the operator reads it without importing
scikit-learn. These tests fail when an upgrade changes what a parameter accepts, and hold the
reading of the table (mlops_contract.params) to scikit-learn's own validation on many values.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from mlops_contract.constraints import CONSTRAINTS
from mlops_contract.estimators import ESTIMATORS
from mlops_contract.params import value_problem
from mlops_trainer.constraintgen import table

PROBES: list[Any] = [
    "many", "auto", "sqrt", "", -3, -1, 0, 1, 2, 10, 2**32, 0.0, 0.5, 1.0, 1.5, -0.5, True, False, None,
    [1, 2], {"a": 1},
]  # fmt: skip


def test_the_committed_table_is_the_installed_scikit_learns() -> None:
    assert table() == CONSTRAINTS, "run: python -m mlops_trainer.constraintgen --write && ruff format"


def accepted_by_sklearn(class_name: str, param: str, value: Any) -> bool:
    from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

    info = ESTIMATORS[class_name]
    cls = getattr(importlib.import_module(info.module), info.name)
    try:
        validate_parameter_constraints(
            {param: cls._parameter_constraints[param]}, {param: value}, caller_name=class_name
        )
    except InvalidParameterError:
        return False
    return True


def cases() -> list[tuple[str, str, Any]]:
    out = []
    for class_name, params in sorted(CONSTRAINTS.items()):
        for param, alternatives in params.items():
            options = [o for c in alternatives if c[0] == "options" for o in c[1]]
            out += [(class_name, param, v) for v in [*PROBES, *options]]
    return out


@pytest.mark.parametrize("class_name", sorted(CONSTRAINTS))
def test_values_are_refused_exactly_when_scikit_learn_refuses_them(class_name: str) -> None:
    disagree = [
        (param, value, value_problem(class_name, param, value))
        for name, param, value in cases()
        if name == class_name
        and (value_problem(class_name, param, value) is None) != accepted_by_sklearn(class_name, param, value)
    ]
    assert disagree == []


def test_the_message_names_the_parameter_and_what_it_accepts() -> None:
    problem = value_problem("RandomForestClassifier", "max_depth", -3)
    assert problem == "-3 is not accepted; max_depth must be an int in [1, inf) or null"
    assert value_problem("RandomForestClassifier", "criterion", "gin") == (
        "'gin' is not accepted; criterion must be one of 'entropy', 'gini', 'log_loss'"
    )
