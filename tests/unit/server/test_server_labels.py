"""The label of a classifier is what its scikit-learn `predict` returns, on both runtimes (issue #20).

Logistic models whose decision values differ by less than the probabilities can show: the
scores differ, the rounded probabilities tie exactly, so arg-max(predict_proba) picks the
first tied class while `predict` (arg-max of the decision function) picks the larger score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from server_factories import write_model

from mlops_server.model import ServedModel

TINY = 1e-17  # exp(-TINY) and expit(TINY) round to exactly 1.0 and 0.5


def _tied_models() -> list[tuple[str, object, pd.DataFrame, pd.Series]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 2)), columns=["a", "b"])
    models = []
    for n_classes in (2, 3, 4):
        y = pd.Series(np.arange(60) % n_classes, name="target")
        for winner in (1, n_classes - 1):
            pipeline = Pipeline([("estimator", LogisticRegression())]).fit(X, y)
            lr = pipeline.steps[-1][1]
            # Zero weights: every row's scores are the intercepts, one of them TINY above the rest.
            lr.coef_ = np.zeros_like(lr.coef_)
            intercept = np.zeros_like(lr.intercept_)
            if n_classes == 2:
                intercept[0] = TINY  # decision > 0: class 1; probabilities [0.5, 0.5]
            else:
                intercept[winner] = TINY
            lr.intercept_ = intercept
            models.append((f"{n_classes}-classes-{winner}", pipeline, X, y))
    return models


@pytest.mark.parametrize("runtime", ["auto", "sklearn"])
def test_labels_are_predict_where_probabilities_tie(tmp_path: Path, runtime: str) -> None:
    differing = 0
    for name, pipeline, X, y in _tied_models():
        art = write_model(tmp_path / name, "tied", pipeline, X, y, "classification")
        model = ServedModel.load(str(art.directory), art.sha256, None, None, runtime)
        assert model.runtime == ("arrays" if runtime == "auto" else "sklearn")
        frame = X.to_numpy(dtype=np.float64)
        expected = pipeline.predict(X)  # type: ignore[attr-defined]
        proba = pipeline.predict_proba(X)  # type: ignore[attr-defined]
        if not np.array_equal(np.asarray(pipeline.classes_)[np.argmax(proba, axis=1)], expected):  # type: ignore[attr-defined]
            differing += 1
        for want_proba in (True, False):
            got = model.predict(frame, want_proba=want_proba)
            np.testing.assert_array_equal(got.labels, expected, err_msg=f"{name} want_proba={want_proba}")
    # The case is real: for every model the probabilities' arg-max disagrees with predict.
    assert differing == 6
