"""The model: Pipeline([("prepare", ColumnTransformer), ("estimator", <allow-listed class>)]).

The ColumnTransformer holds every preparation step, so the artifact takes raw feature columns
(the signature) and the server never re-implements preprocessing:

- numeric columns: SimpleImputer(prepare.missing.numeric) then the scaler (prepare.scaling);
- text categorical columns: SimpleImputer(prepare.missing.categorical, constant 'missing') then
  OneHotEncoder(handle_unknown='ignore') or OrdinalEncoder(unknown and missing -> -1);
- numeric columns listed in prepare.categorical: as text columns, constant fill -1.

With the 'drop' strategy there is no imputer: rows with missing values never reach training.
Only scikit-learn types are used, so the artifact loads with skops' trusted-type allow-list.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Final

from mlops_contract.api.trainingjob import Prepare, TrainingJobSpec
from mlops_contract.checks import estimator_class, estimator_param_names, unknown_param_problems
from mlops_trainer.data import Dataset
from mlops_trainer.errors import BadInput
from mlops_trainer.logs import log

MISSING_TEXT: Final = "missing"
MISSING_NUMERIC_CATEGORY: Final = -1
MAX_WARNINGS: Final = 10


def resolve_params(spec: TrainingJobSpec, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """spec.estimator.params, then `overrides` (e.g. the best trial's), then a seeded random_state."""
    class_name = spec.estimator.class_name
    params = {**(spec.estimator.params or {}), **overrides}
    problems = unknown_param_problems(class_name, params.keys(), "estimator parameters")
    if problems:
        raise BadInput("; ".join(problems))
    if "random_state" in estimator_param_names(class_name) and "random_state" not in params:
        params["random_state"] = spec.data.split.seed
    return params


def _scaler(kind: str) -> Any:
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    return {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}[kind]()


def _encoder(kind: str) -> Any:
    import numpy as np
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    if kind == "onehot":
        # Dense output: several allow-listed estimators (HistGradientBoosting, GaussianNB) refuse sparse input.
        return OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)
    return OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)


def _imputer(strategy: str, fill_value: Any = None) -> Any:
    from sklearn.impute import SimpleImputer

    if strategy == "constant":
        return SimpleImputer(strategy="constant", fill_value=fill_value)
    return SimpleImputer(strategy=strategy)


def build_preparation(ds: Dataset, prepare: Prepare) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    transformers: list[tuple[str, Any, list[str]]] = []
    if ds.numeric:
        steps: list[tuple[str, Any]] = []
        if prepare.missing.numeric != "drop":
            steps.append(("impute", _imputer(prepare.missing.numeric, 0.0)))
        if prepare.scaling != "none":
            steps.append(("scale", _scaler(prepare.scaling)))
        transformers.append(("numeric", Pipeline(steps) if steps else "passthrough", ds.numeric))
    for name, columns, fill in (
        ("categorical", ds.categorical, MISSING_TEXT),
        ("numeric_categorical", ds.numeric_categorical, MISSING_NUMERIC_CATEGORY),
    ):
        if not columns:
            continue
        steps = []
        if prepare.missing.categorical != "drop":
            steps.append(("impute", _imputer(prepare.missing.categorical, fill)))
        steps.append(("encode", _encoder(prepare.encoding)))
        transformers.append((name, Pipeline(steps), columns))
    return ColumnTransformer(
        transformers, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=False
    )


def build_model(ds: Dataset, spec: TrainingJobSpec, params: Mapping[str, Any]) -> Any:
    from sklearn.pipeline import Pipeline

    estimator = estimator_class(spec.estimator.class_name)(**params)
    return Pipeline([("prepare", build_preparation(ds, spec.data.prepare)), ("estimator", estimator)])


def run_estimator(action: str, call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """Run a fit (or cross-validation) and return (its result, the warnings it raised).

    Warnings scikit-learn raises about the fit itself (convergence, ill-defined metrics, data
    conversion, deprecated parameters) are expected outcomes of user choices: they are recorded,
    logged and returned, not printed. Other warnings keep the process's own filters (in tests: errors).
    Invalid parameter values and data the estimator refuses are bad input.
    """
    from sklearn.exceptions import (
        ConvergenceWarning,
        DataConversionWarning,
        FitFailedWarning,
        UndefinedMetricWarning,
    )

    with warnings.catch_warnings(record=True) as caught:
        for category in (ConvergenceWarning, DataConversionWarning, FitFailedWarning, UndefinedMetricWarning):
            warnings.simplefilter("always", category)
        # scikit-learn deprecating a parameter the user set (e.g. SVC probability) is news for the user.
        warnings.filterwarnings("always", category=FutureWarning, module=r"sklearn\.")
        try:
            result = call()
        except ValueError as e:
            # Includes scikit-learn's InvalidParameterError (a ValueError) for bad parameter values.
            raise BadInput(f"{action} failed: {e}") from e
    messages: list[str] = []
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0]}"
        if text not in messages:
            messages.append(text)
    for text in messages[:MAX_WARNINGS]:
        log("Estimator warned", action=action, warning=text)
    return result, messages[:MAX_WARNINGS]
