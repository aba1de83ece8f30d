"""Estimator parameter values checked as scikit-learn's own validation would, without it.

`value_problem` reads the generated table mlops_contract.constraints (derived from scikit-learn's
`_parameter_constraints`) and says why a JSON value is refused, naming what is accepted; check_spec
runs it on spec.estimator.params and on every value of spec.tuning.space, so `n_estimators:
"many"` or `max_depth: -3` end in Failed/InvalidSpec before any pod (issue #19).
tests/unit/trainer/test_constraints.py holds it to the installed scikit-learn on many values.
"""

from __future__ import annotations

import math
from typing import Any

from mlops_contract.constraints import CONSTRAINTS

Constraint = tuple[Any, ...]
_BRACKETS: dict[str, tuple[str, str]] = {
    "left": ("[", ")"),
    "right": ("(", "]"),
    "both": ("[", "]"),
    "neither": ("(", ")"),
}
_TYPES = {"dict": dict, "list": list, "str": str}


def _is_int(value: Any) -> bool:
    return isinstance(value, int)  # bool included, as numbers.Integral does


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def _in_interval(value: float, low: float | None, high: float | None, closed: str) -> bool:
    if low is not None and (value < low or (value == low and closed in ("right", "neither"))):
        return False
    return not (high is not None and (value > high or (value == high and closed in ("left", "neither"))))


def satisfies(value: Any, constraint: Constraint) -> bool:
    """Whether the JSON `value` satisfies one constraint of the table."""
    kind = constraint[0]
    if kind == "none":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "random_state":
        return value is None or (_is_int(value) and 0 <= value <= 2**32 - 1)
    if kind == "verbose":
        return isinstance(value, bool) or (_is_int(value) and value >= 0)
    if kind == "array-like":
        return isinstance(value, (list, dict))
    if kind == "interval":
        _, number, low, high, closed = constraint
        ok = {
            "int": _is_int(value),
            "real": _is_real(value),
            "real_not_int": _is_real(value) and not _is_int(value),
        }[number]
        return ok and _in_interval(value, low, high, closed)
    if kind == "options":
        return any(value == option and type(value) is type(option) for option in constraint[1])
    if kind == "type":
        if constraint[1] == "int":
            return _is_int(value)
        if constraint[1] == "real":
            return _is_real(value)
        return isinstance(value, _TYPES[constraint[1]])
    return False  # "never": no JSON value is a callable or an estimator


def describe(constraint: Constraint) -> str:
    kind = constraint[0]
    if kind == "interval":
        _, number, low, high, closed = constraint
        what = {"int": "an int", "real": "a number", "real_not_int": "a float"}[number]
        left, right = _BRACKETS[closed]
        low_text = "-inf" if low is None else f"{low:g}"
        high_text = "inf" if high is None else f"{high:g}"
        return f"{what} in {left}{low_text}, {high_text}{right}"
    if kind == "options":
        return "one of " + ", ".join(repr(o) for o in constraint[1])
    named = {
        "none": "null",
        "bool": "true or false",
        "random_state": "null or an int in [0, 4294967295]",
        "verbose": "an int >= 0 or a bool",
        "array-like": "a list",
    }
    if kind in named:
        return named[kind]
    if kind == "type":
        return {
            "dict": "a mapping",
            "list": "a list",
            "str": "a string",
            "int": "an int",
            "real": "a number",
        }[constraint[1]]
    return str(constraint[1])


def value_problem(class_name: str, param: str, value: Any) -> str | None:
    """Why `value` is refused for `param` of `class_name` (None: accepted, or nothing is known)."""
    alternatives = CONSTRAINTS.get(class_name, {}).get(param)
    if not alternatives or any(satisfies(value, c) for c in alternatives):
        return None
    accepted = [describe(c) for c in alternatives if c[0] != "never"]
    return f"{value!r} is not accepted; {param} must be " + (" or ".join(accepted) or "an object")
