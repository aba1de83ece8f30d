"""The allow-list of scikit-learn estimators a TrainingJob may name.

Only classes listed here are ever imported: a spec can never make the trainer load
arbitrary code. The CRD schema's enum for `spec.estimator.class` is generated from this
table, so an unknown class is refused at admission.

The table also holds what `check_spec` needs to know about each class without importing
scikit-learn (the operator never does): its constructor parameter names and when it offers
predict_proba. tests/unit/trainer/test_trainer_estimators.py fails when the installed
scikit-learn disagrees, so an upgrade that adds, renames or removes a parameter is caught.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class ProbaWhen:
    """predict_proba exists only when parameter `param` is set to one of `values`
    (left at its default, it does not)."""

    param: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class EstimatorInfo:
    module: str
    name: str
    task: Task
    # sorted(cls().get_params(deep=False))
    params: tuple[str, ...]
    # Whether cls(**params) has predict_proba: always, never, or depending on one parameter.
    predict_proba: bool | ProbaWhen

    @property
    def import_path(self) -> str:
        return f"{self.module}.{self.name}"

    def has_predict_proba(self, params: Mapping[str, Any]) -> bool:
        """Whether the estimator built with `params` offers predict_proba."""
        rule = self.predict_proba
        if isinstance(rule, bool):
            return rule
        return rule.param in params and params[rule.param] in rule.values


# Constructor parameters a family's classifier and regressor share (_PARAMS adds the others, e.g. the
# classifiers' class_weight): forests (RandomForest*, ExtraTrees*), DecisionTree*, GradientBoosting*,
# HistGradientBoosting*, KNeighbors*.
_FOREST = (
    "bootstrap ccp_alpha criterion max_depth max_features max_leaf_nodes max_samples min_impurity_decrease"
    " min_samples_leaf min_samples_split min_weight_fraction_leaf monotonic_cst n_estimators n_jobs oob_score"
    " random_state verbose warm_start"
)
_TREE = (
    "ccp_alpha criterion max_depth max_features max_leaf_nodes min_impurity_decrease min_samples_leaf"
    " min_samples_split min_weight_fraction_leaf monotonic_cst random_state splitter"
)
_GRADIENT_BOOSTING = (
    "ccp_alpha criterion init learning_rate loss max_depth max_features max_leaf_nodes min_impurity_decrease"
    " min_samples_leaf min_samples_split min_weight_fraction_leaf n_estimators n_iter_no_change random_state"
    " subsample tol validation_fraction verbose warm_start"
)
_HIST_GRADIENT_BOOSTING = (
    "categorical_features early_stopping interaction_cst l2_regularization learning_rate loss max_bins max_depth"
    " max_features max_iter max_leaf_nodes min_samples_leaf monotonic_cst n_iter_no_change random_state scoring"
    " tol validation_fraction verbose warm_start"
)
_NEIGHBORS = "algorithm leaf_size metric metric_params n_jobs n_neighbors p weights"

# Each class's constructor parameter names, separated by white space, in any order.
_PARAMS: Final[dict[str, str]] = {
    "LogisticRegression": "C class_weight dual fit_intercept intercept_scaling l1_ratio max_iter n_jobs penalty"
    " random_state solver tol verbose warm_start",
    "RidgeClassifier": "alpha class_weight copy_X fit_intercept max_iter positive random_state solver tol",
    "SGDClassifier": "alpha average class_weight early_stopping epsilon eta0 fit_intercept l1_ratio learning_rate"
    " loss max_iter n_iter_no_change n_jobs penalty power_t random_state shuffle tol validation_fraction verbose"
    " warm_start",
    "RandomForestClassifier": f"class_weight {_FOREST}",
    "ExtraTreesClassifier": f"class_weight {_FOREST}",
    "GradientBoostingClassifier": _GRADIENT_BOOSTING,
    "HistGradientBoostingClassifier": f"class_weight {_HIST_GRADIENT_BOOSTING}",
    "DecisionTreeClassifier": f"class_weight {_TREE}",
    "KNeighborsClassifier": _NEIGHBORS,
    "SVC": "C break_ties cache_size class_weight coef0 decision_function_shape degree gamma kernel max_iter"
    " probability random_state shrinking tol verbose",
    "GaussianNB": "priors var_smoothing",
    "LinearRegression": "copy_X fit_intercept n_jobs positive tol",
    "Ridge": "alpha copy_X fit_intercept max_iter positive random_state solver tol",
    "Lasso": "alpha copy_X fit_intercept max_iter positive precompute random_state selection tol warm_start",
    "ElasticNet": "alpha copy_X fit_intercept l1_ratio max_iter positive precompute random_state selection tol"
    " warm_start",
    "RandomForestRegressor": _FOREST,
    "ExtraTreesRegressor": _FOREST,
    "GradientBoostingRegressor": f"alpha {_GRADIENT_BOOSTING}",
    "HistGradientBoostingRegressor": f"quantile {_HIST_GRADIENT_BOOSTING}",
    "DecisionTreeRegressor": _TREE,
    "KNeighborsRegressor": _NEIGHBORS,
    "SVR": "C cache_size coef0 degree epsilon gamma kernel max_iter shrinking tol verbose",
}


# Classifiers offer predict_proba (roc_auc and log_loss need it) except these; regressors never do.
_PREDICT_PROBA: Final[dict[str, bool | ProbaWhen]] = {
    "RidgeClassifier": False,
    "SGDClassifier": ProbaWhen("loss", ("log_loss", "modified_huber")),
    "SVC": ProbaWhen("probability", (True,)),
}


def _e(module: str, name: str, task: Task) -> tuple[str, EstimatorInfo]:
    params = tuple(sorted(_PARAMS[name].split()))
    return name, EstimatorInfo(module, name, task, params, _PREDICT_PROBA.get(name, task == "classification"))


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
