"""The allow-list of scikit-learn estimators a TrainingJob may name.

Only classes listed here are ever imported: a spec can never make the trainer load
arbitrary code. The CRD schema's enum for `spec.estimator.class` is generated from this
table, so an unknown class is refused at admission.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class EstimatorInfo:
    module: str
    name: str
    task: Task

    @property
    def import_path(self) -> str:
        return f"{self.module}.{self.name}"


def _e(module: str, name: str, task: Task) -> tuple[str, EstimatorInfo]:
    return name, EstimatorInfo(module, name, task)


ESTIMATORS: Final[dict[str, EstimatorInfo]] = dict(
    [
        _e("sklearn.linear_model", "LogisticRegression", "classification"),
        _e("sklearn.linear_model", "RidgeClassifier", "classification"),
        _e("sklearn.linear_model", "SGDClassifier", "classification"),
        _e("sklearn.ensemble", "RandomForestClassifier", "classification"),
        _e("sklearn.ensemble", "ExtraTreesClassifier", "classification"),
        _e("sklearn.ensemble", "GradientBoostingClassifier", "classification"),
        _e("sklearn.ensemble", "HistGradientBoostingClassifier", "classification"),
        _e("sklearn.tree", "DecisionTreeClassifier", "classification"),
        _e("sklearn.neighbors", "KNeighborsClassifier", "classification"),
        _e("sklearn.svm", "SVC", "classification"),
        _e("sklearn.naive_bayes", "GaussianNB", "classification"),
        _e("sklearn.linear_model", "LinearRegression", "regression"),
        _e("sklearn.linear_model", "Ridge", "regression"),
        _e("sklearn.linear_model", "Lasso", "regression"),
        _e("sklearn.linear_model", "ElasticNet", "regression"),
        _e("sklearn.ensemble", "RandomForestRegressor", "regression"),
        _e("sklearn.ensemble", "ExtraTreesRegressor", "regression"),
        _e("sklearn.ensemble", "GradientBoostingRegressor", "regression"),
        _e("sklearn.ensemble", "HistGradientBoostingRegressor", "regression"),
        _e("sklearn.tree", "DecisionTreeRegressor", "regression"),
        _e("sklearn.neighbors", "KNeighborsRegressor", "regression"),
        _e("sklearn.svm", "SVR", "regression"),
    ]
)

CLASSIFICATION_METRICS: Final = ("accuracy", "f1", "precision", "recall", "roc_auc", "log_loss")
REGRESSION_METRICS: Final = ("rmse", "mae", "r2")
# Whether a larger value is better, for comparing model versions.
HIGHER_IS_BETTER: Final[dict[str, bool]] = {
    "accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "roc_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}
DEFAULT_METRIC: Final[dict[Task, str]] = {"classification": "accuracy", "regression": "r2"}

# The datasets scikit-learn ships (no download), usable as `builtin:<name>`.
BUILTIN_DATASETS: Final[dict[str, Task]] = {
    "iris": "classification",
    "wine": "classification",
    "breast_cancer": "classification",
    "digits": "classification",
    "diabetes": "regression",
}
