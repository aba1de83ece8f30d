"""Evaluation metrics on held-out data, and the matching cross-validation scorers for tuning.

Classification: accuracy, f1, precision, recall (binary: of the positive class, the larger
label; multiclass: macro averages; zero_division=0), roc_auc (multiclass: one-vs-rest) and
log_loss when the model has predict_proba. Regression: rmse, mae, r2. A metric that is
undefined on the held-out rows (e.g. roc_auc with one class present) is left out, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mlops_contract import stats
from mlops_contract.estimators import HIGHER_IS_BETTER, Task
from mlops_trainer.logs import log


def _classification_kwargs(classes: Sequence[Any]) -> dict[str, Any]:
    if len(classes) == 2:
        return {"average": "binary", "pos_label": classes[1], "zero_division": 0}
    return {"average": "macro", "zero_division": 0}


def evaluate(model: Any, X: Any, y: Any, task: Task, classes: Sequence[Any]) -> dict[str, float]:
    """Compute every metric of the task that is defined on (X, y)."""
    from sklearn import metrics as m

    values: dict[str, float] = {}
    predicted = model.predict(X)
    if task == "regression":
        values["rmse"] = m.root_mean_squared_error(y, predicted)
        values["mae"] = m.mean_absolute_error(y, predicted)
        if len(y) >= 2:
            values["r2"] = m.r2_score(y, predicted)
    else:
        kwargs = _classification_kwargs(classes)
        values["accuracy"] = m.accuracy_score(y, predicted)
        values["f1"] = m.f1_score(y, predicted, **kwargs)
        values["precision"] = m.precision_score(y, predicted, **kwargs)
        values["recall"] = m.recall_score(y, predicted, **kwargs)
        if hasattr(model, "predict_proba"):
            proba = model.predict_proba(X)
            values["log_loss"] = m.log_loss(y, proba, labels=list(classes))
            if len(set(y)) < 2:
                log("Skipped roc_auc", reason="the held-out rows hold a single class")
            elif len(classes) == 2:
                values["roc_auc"] = m.roc_auc_score(y, proba[:, 1])
            elif len(set(y)) == len(classes):
                values["roc_auc"] = m.roc_auc_score(y, proba, multi_class="ovr", labels=list(classes))
            else:
                log("Skipped roc_auc", reason="the held-out rows lack some classes")
    return {k: float(v) for k, v in values.items() if math.isfinite(float(v))}


def scorer(metric: str, task: Task, classes: Sequence[Any]) -> Any:
    """A scikit-learn scorer computing `metric` as `evaluate` does (negated when lower is better)."""
    from sklearn import metrics as m

    greater = HIGHER_IS_BETTER[metric]
    if task == "regression":
        func = {"rmse": m.root_mean_squared_error, "mae": m.mean_absolute_error, "r2": m.r2_score}[metric]
        return m.make_scorer(func, greater_is_better=greater)
    kwargs = _classification_kwargs(classes)
    if metric == "accuracy":
        return m.make_scorer(m.accuracy_score)
    if metric in ("f1", "precision", "recall"):
        func = {"f1": m.f1_score, "precision": m.precision_score, "recall": m.recall_score}[metric]
        return m.make_scorer(func, **kwargs)
    if metric == "log_loss":
        return m.make_scorer(
            m.log_loss, greater_is_better=False, response_method="predict_proba", labels=list(classes)
        )
    if len(classes) == 2:
        return m.make_scorer(m.roc_auc_score, response_method="predict_proba")
    return m.make_scorer(
        m.roc_auc_score, response_method="predict_proba", multi_class="ovr", labels=list(classes)
    )


def calibration(model: Any, X: Any, y: Any) -> dict[str, object] | None:
    """The classifier's calibration table on the held-out rows (issue #22): the share of right
    predictions per bin of top-class probability, made monotone. The server turns live rows'
    probabilities into an accuracy estimate with it before any label arrives. None for a
    regressor, a classifier without predict_proba, or no held-out rows."""
    import numpy as np

    if not hasattr(model, "predict_proba") or len(y) == 0:
        return None
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    predicted = model.predict(X)
    right = np.asarray(predicted) == np.asarray(y)
    return stats.fit_calibration(proba.max(axis=1).tolist(), right.tolist()).to_dict()
