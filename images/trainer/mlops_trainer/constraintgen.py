"""Writes mlops_contract/constraints.py from the installed scikit-learn's `_parameter_constraints`.

    python -m mlops_trainer.constraintgen            # print the module
    python -m mlops_trainer.constraintgen --write    # rewrite operator/mlops_contract/constraints.py

The operator never imports scikit-learn, so what each allow-listed estimator accepts for each
parameter is kept as data in the contract package; this program derives it (it runs where
scikit-learn is installed: the trainer's environment), and tests/unit/trainer/test_constraints.py
fails when the committed table and the installed scikit-learn disagree. Constraints a JSON value
can never satisfy (a callable, an estimator object) become ("never", what).
"""

from __future__ import annotations

import argparse
import importlib
import math
import numbers
import pprint
import sys
from pathlib import Path
from typing import Any

from mlops_contract.estimators import ESTIMATORS

TARGET = Path(__file__).resolve().parents[3] / "operator" / "mlops_contract" / "constraints.py"
HEADER = '''"""What each allow-listed estimator's parameters accept, as data (GENERATED: do not edit).

Written by `python -m mlops_trainer.constraintgen --write` from scikit-learn {version}'s
`_parameter_constraints`; read by mlops_contract.params (check_spec), so the operator finds the
values scikit-learn's own validation refuses without importing it. A parameter's entry is the
tuple of its alternatives (any one accepted):

- ("none",) None; ("bool",) true/false; ("random_state",) None or an int in [0, 2**32 - 1];
  ("verbose",) a bool or an int >= 0; ("array-like",) a list or a mapping;
- ("interval", "int" | "real" | "real_not_int", low, high, closed): a number of that kind in the
  interval (None: unbounded; closed: left, right, both or neither);
- ("options", (values...)): one of the values; ("type", "dict" | "list" | "str" | "int" | "real");
- ("never", what): something no JSON value is (a callable, an estimator object).
"""

from typing import Any, Final

SKLEARN_VERSION: Final = {version!r}
CONSTRAINTS: Final[dict[str, dict[str, tuple[tuple[Any, ...], ...]]]] = '''


def _bound(value: Any) -> float | int | None:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def serialise(constraint: Any) -> tuple[Any, ...]:
    """One scikit-learn constraint as a plain tuple (see the generated module's docstring)."""
    from sklearn.utils._param_validation import Hidden, Interval, Options, RealNotInt, StrOptions

    if isinstance(constraint, Hidden):
        return serialise(constraint.constraint)
    if constraint is None:
        return ("none",)
    if isinstance(constraint, str):
        named = {"boolean": ("bool",), "random_state": ("random_state",), "verbose": ("verbose",)}
        if constraint in named:
            return named[constraint]
        if constraint == "array-like":
            return ("array-like",)
        return ("never", constraint)  # "sparse matrix" and the like
    if isinstance(constraint, Interval):
        kind = (
            "real_not_int"
            if constraint.type is RealNotInt
            else "int"
            if constraint.type is numbers.Integral
            else "real"
        )
        return ("interval", kind, _bound(constraint.left), _bound(constraint.right), constraint.closed)
    if isinstance(constraint, (StrOptions, Options)):
        return ("options", tuple(sorted(constraint.options, key=repr)))
    simple = {dict: "dict", list: "list", str: "str", numbers.Integral: "int", numbers.Real: "real"}
    if isinstance(constraint, type) and constraint in simple:
        return ("type", simple[constraint])
    if constraint is callable:
        return ("never", "a callable")
    if isinstance(constraint, type):
        return ("never", f"a {constraint.__name__} object")
    return ("never", f"a {type(constraint).__name__.removeprefix('_')} object")


def table() -> dict[str, dict[str, tuple[tuple[Any, ...], ...]]]:
    out: dict[str, dict[str, tuple[tuple[Any, ...], ...]]] = {}
    for name, info in sorted(ESTIMATORS.items()):
        cls = getattr(importlib.import_module(info.module), info.name)
        constraints: dict[str, list[Any]] = getattr(cls, "_parameter_constraints", {})
        out[name] = {p: tuple(serialise(c) for c in cs) for p, cs in sorted(constraints.items())}
    return out


def module_text() -> str:
    import sklearn

    body = pprint.pformat(table(), width=110, sort_dicts=True)
    return HEADER.format(version=sklearn.__version__) + body + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_trainer.constraintgen")
    parser.add_argument("--write", action="store_true", help=f"rewrite {TARGET}")
    args = parser.parse_args(argv)
    text = module_text()
    if args.write:
        TARGET.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
