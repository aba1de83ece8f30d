"""The array plan gives scikit-learn's own predictions, refuses what it cannot run, and reads no code.

Every case fits a real scikit-learn pipeline, writes it with skops, compiles the bytes and compares
the plan with the pipeline scikit-learn loads: labels equal, probabilities and regression values
equal to 1e-12 relative (the plan runs the same numpy operations in the same order; the last bits
follow the input's memory layout in scikit-learn itself), on rows inside
and far outside the training range, with missing values, and errors where scikit-learn errs.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from mlops_contract import arrayplan, artifact

NAMES = ["a", "b", "c", "d", "e"]
# scikit-learn's own results move in the last bits with the input's memory layout (a DataFrame
# becomes a Fortran-ordered matrix, BLAS then sums in another order); the plan is held to that.
TOLERANCE = 1e-12


def _data(task: str, classes: int = 3, labels: str = "int", seed: int = 0) -> tuple[pd.DataFrame, Any]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, len(NAMES))) * [1, 10, 0.1, 100, 3] + [0, 5, -1, 50, 2]
    X[rng.random(X.shape) < 0.05] = np.nan
    signal = np.nan_to_num(X[:, 0] + X[:, 1] / 10 - X[:, 3] / 100)
    if task == "regression":
        return pd.DataFrame(X, columns=NAMES), signal * 3 + rng.normal(size=len(X))
    y = np.digitize(
        signal + rng.normal(scale=0.5, size=len(X)), np.quantile(signal, np.linspace(0, 1, classes + 1)[1:-1])
    )
    if labels == "str":
        y = np.array(["setosa", "versicolor", "virginica", "other"])[y]
    return pd.DataFrame(X, columns=NAMES), y


def _numeric(*steps: Any, columns: list[str] | None = None, remainder: str = "drop") -> ColumnTransformer:
    inner: Any = Pipeline(list(steps)) if steps else "passthrough"
    return ColumnTransformer(
        [("numeric", inner, columns or NAMES)],
        remainder=remainder,
        sparse_threshold=0.0,
        verbose_feature_names_out=False,
    )


def _trainer(estimator: Any, scaler: Any = None, impute: str = "median") -> Pipeline:
    """The trainer's layout (mlops_trainer.pipeline): ColumnTransformer(imputer, scaler), estimator."""
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy=impute))]
    if scaler is not None:
        steps.append(("scale", scaler))
    return Pipeline([("prepare", _numeric(*steps)), ("estimator", estimator)])


def _probe(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, len(NAMES))) * [3, 30, 0.3, 300, 9] + [0, 5, -1, 50, 2]
    X[rng.random(X.shape) < 0.1] = np.nan
    X[0] = 1e30  # far outside the training range, still finite in float32
    return X


def _compiled(pipeline: Any) -> tuple[Any, arrayplan.Plan]:
    blob = artifact.dump_model(pipeline)
    return artifact.load_model_bytes(blob), arrayplan.compile_blob(blob, NAMES)


def _same(model: Any, plan: arrayplan.Plan, X: np.ndarray) -> None:
    frame = pd.DataFrame(X, columns=NAMES)
    expected = model.predict(frame)
    got = plan.predict(X)
    if plan.classes_ is None:
        np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=0)
    else:
        assert np.array_equal(got, expected)
    if hasattr(model, "predict_proba"):
        assert plan.has_proba
        np.testing.assert_allclose(
            plan.predict_proba(X), model.predict_proba(frame), rtol=TOLERANCE, atol=1e-15
        )
        assert list(plan.classes_) == list(model.classes_)
    else:
        assert not plan.has_proba


CLASSIFIERS: list[tuple[str, Callable[[], Any]]] = [
    ("logistic", lambda: LogisticRegression(max_iter=2000)),
    ("logistic-no-intercept", lambda: LogisticRegression(fit_intercept=False, C=0.1, max_iter=2000)),
    ("sgd-hinge", lambda: SGDClassifier(random_state=0)),
    ("sgd-log-loss", lambda: SGDClassifier(loss="log_loss", random_state=0)),
    ("ridge", lambda: RidgeClassifier(alpha=2.0)),
    ("tree", lambda: DecisionTreeClassifier(random_state=0)),
    ("tree-shallow", lambda: DecisionTreeClassifier(max_depth=3, random_state=0)),
    ("forest", lambda: RandomForestClassifier(n_estimators=30, random_state=0)),
    (
        "forest-weighted",
        lambda: RandomForestClassifier(n_estimators=7, class_weight="balanced", random_state=1),
    ),
    ("extra-trees", lambda: ExtraTreesClassifier(n_estimators=20, random_state=0)),
]

REGRESSORS: list[tuple[str, Callable[[], Any]]] = [
    ("linear", LinearRegression),
    ("ridge", lambda: Ridge(alpha=3.0)),
    ("lasso", lambda: Lasso(alpha=0.1)),
    ("elastic-net", lambda: ElasticNet(alpha=0.1, l1_ratio=0.3)),
    ("tree", lambda: DecisionTreeRegressor(max_depth=6, random_state=0)),
    ("forest", lambda: RandomForestRegressor(n_estimators=25, random_state=0)),
    ("extra-trees", lambda: ExtraTreesRegressor(n_estimators=10, random_state=0)),
]

SCALERS: list[Callable[[], Any] | None] = [
    None,
    StandardScaler,
    lambda: StandardScaler(with_mean=False),
    MinMaxScaler,
    lambda: MinMaxScaler(feature_range=(-1, 1), clip=True),
    RobustScaler,
]


@pytest.mark.parametrize("name,make", CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS])
@pytest.mark.parametrize("classes,labels", [(2, "int"), (3, "str"), (4, "int")])
def test_classifiers_match_scikit_learn(
    name: str, make: Callable[[], Any], classes: int, labels: str
) -> None:
    X, y = _data("classification", classes, labels)
    model, plan = _compiled(_trainer(make(), StandardScaler()).fit(X, y))
    _same(model, plan, _probe())
    assert plan.estimator == type(make()).__name__


@pytest.mark.parametrize("name,make", REGRESSORS, ids=[r[0] for r in REGRESSORS])
def test_regressors_match_scikit_learn(name: str, make: Callable[[], Any]) -> None:
    X, y = _data("regression")
    model, plan = _compiled(_trainer(make(), RobustScaler()).fit(X, y))
    _same(model, plan, _probe())
    assert plan.classes_ is None


@pytest.mark.parametrize(
    "scaler", SCALERS, ids=["none", "standard", "standard-no-mean", "minmax", "minmax-clip", "robust"]
)
@pytest.mark.parametrize("impute", ["mean", "median", "most_frequent"])
def test_preparation_steps_match_scikit_learn(scaler: Callable[[], Any] | None, impute: str) -> None:
    X, y = _data("classification", 3)
    pipeline = _trainer(LogisticRegression(max_iter=2000), scaler() if scaler else None, impute).fit(X, y)
    model, plan = _compiled(pipeline)
    _same(model, plan, _probe())


def test_constant_imputer_and_columns_by_position_and_passthrough_remainder() -> None:
    X, y = _data("regression")
    prepare = ColumnTransformer(
        [
            ("first", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=-7.5))]), [0, 2]),
            ("second", Pipeline([("impute", SimpleImputer()), ("scale", MinMaxScaler())]), ["b", "e"]),
        ],
        remainder="passthrough",
    )
    # The remainder (column d) keeps its NaN: a linear model then refuses such rows, as scikit-learn does.
    model, plan = _compiled(
        Pipeline([("prepare", prepare), ("estimator", Ridge())]).fit(X.fillna({"d": 0.0}), y)
    )
    rows = _probe()
    rows[:, 3] = np.nan_to_num(rows[:, 3])
    _same(model, plan, rows)
    rows[5, 3] = np.nan
    with pytest.raises(ValueError):
        model.predict(pd.DataFrame(rows, columns=NAMES))
    with pytest.raises(ValueError, match="NaN"):
        plan.predict(rows)


def test_plain_pipelines_and_bare_estimators() -> None:
    X, y = _data("classification", 3)
    filled = X.fillna(0.0)
    model, plan = _compiled(
        Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=2000))]).fit(filled, y)
    )
    _same(model, plan, np.nan_to_num(_probe()))
    model, plan = _compiled(LogisticRegression(max_iter=2000).fit(filled, y))
    _same(model, plan, np.nan_to_num(_probe()))


def test_errors_where_scikit_learn_errs() -> None:
    X, y = _data("classification", 3)
    for estimator in (
        LogisticRegression(max_iter=2000),
        RandomForestClassifier(n_estimators=5, random_state=0),
    ):
        model, plan = _compiled(_trainer(estimator, StandardScaler()).fit(X, y))
        for bad in (np.inf, -np.inf, 1e300 if isinstance(estimator, RandomForestClassifier) else np.inf):
            rows = _probe()[:3]
            rows[1, 2] = bad
            with pytest.raises(ValueError), np.errstate(over="ignore"):
                model.predict(pd.DataFrame(rows, columns=NAMES))
            with pytest.raises(ValueError):
                plan.predict(rows)
        with pytest.raises(ValueError, match="features"):
            plan.predict(np.zeros((2, 3)))


@pytest.mark.parametrize(
    "pipeline,reason",
    [
        (
            lambda: Pipeline(
                [("prepare", _numeric()), ("estimator", RandomForestClassifier(n_estimators=3))]
            ),
            "imputer",
        ),
        (lambda: _trainer(GradientBoostingClassifier(n_estimators=3)), r"LogitLink|GradientBoosting"),
        (
            lambda: Pipeline(
                [
                    (
                        "prepare",
                        ColumnTransformer(
                            [("c", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["a"])]
                        ),
                    ),
                    ("estimator", LogisticRegression()),
                ]
            ),
            "OneHotEncoder",
        ),
        (lambda: _trainer(LogisticRegression(), SimpleImputer(add_indicator=True)), "indicator"),
    ],
    ids=["tree-without-imputer", "gradient-boosting", "one-hot", "imputer-indicator"],
)
def test_unsupported_pipelines_are_refused_with_the_reason(pipeline: Callable[[], Any], reason: str) -> None:
    X, y = _data("classification", 2)
    fitted = pipeline().fit(X.fillna(0.0) if "imputer" in reason else X, y)
    with pytest.raises(arrayplan.Unsupported, match=reason):
        arrayplan.compile_blob(artifact.dump_model(fitted), NAMES)


def test_the_signature_must_name_the_pipeline_columns() -> None:
    X, y = _data("classification", 2)
    blob = artifact.dump_model(_trainer(LogisticRegression()).fit(X, y))
    with pytest.raises(arrayplan.Unsupported, match="signature"):
        arrayplan.compile_blob(blob, ["a", "b", "c", "d", "x"])


def _rewrite(blob: bytes, change: Callable[[dict[str, Any], zipfile.ZipFile], None]) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(blob))
    schema = json.loads(source.read("schema.json"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        change(schema, target)
        for name in source.namelist():
            if name != "schema.json" and name not in target.namelist():
                target.writestr(name, source.read(name))
        target.writestr("schema.json", json.dumps(schema))
    return out.getvalue()


def _find(node: Any, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    if isinstance(node, dict):
        if predicate(node):
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        raise LookupError
    for child in children:
        try:
            return _find(child, predicate)
        except LookupError:
            pass
    raise LookupError


def test_crafted_files_are_refused_not_run() -> None:
    X, y = _data("classification", 2)
    blob = artifact.dump_model(_trainer(DecisionTreeClassifier(random_state=0)).fit(X, y))

    def function_node(schema: dict[str, Any], _: zipfile.ZipFile) -> None:
        node = _find(
            schema, lambda n: n.get("__class__") == "StandardScaler" or n.get("__class__") == "SimpleImputer"
        )
        node.update({"__loader__": "FunctionNode", "__module__": "os", "__class__": "system"})

    with pytest.raises(arrayplan.Unsupported, match="FunctionNode"):
        arrayplan.compile_blob(_rewrite(blob, function_node), NAMES)

    def foreign_object(schema: dict[str, Any], _: zipfile.ZipFile) -> None:
        _find(schema, lambda n: n.get("__class__") == "SimpleImputer")["__module__"] = "evil.module"

    with pytest.raises(arrayplan.Unsupported, match=r"evil\.module"):
        arrayplan.compile_blob(_rewrite(blob, foreign_object), NAMES)

    def looping_tree(schema: dict[str, Any], target: zipfile.ZipFile) -> None:
        tree = _find(schema, lambda n: n.get("__loader__") == "TreeNode")
        nodes = tree["content"]["content"]["nodes"]
        array = np.load(io.BytesIO(zipfile.ZipFile(io.BytesIO(blob)).read(nodes["file"])), allow_pickle=False)
        array["left_child"][1] = 0  # a child pointing back at the root
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        target.writestr(nodes["file"], buffer.getvalue())

    with pytest.raises(arrayplan.Unsupported, match="out of bounds"):
        arrayplan.compile_blob(_rewrite(blob, looping_tree), NAMES)

    def pickled_array(schema: dict[str, Any], target: zipfile.ZipFile) -> None:
        node = _find(schema, lambda n: n.get("__loader__") == "NdArrayNode" and n.get("type") == "numpy")
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        target.writestr(node["file"], buffer.getvalue())

    with pytest.raises(arrayplan.Unsupported, match="pickle"):
        arrayplan.compile_blob(_rewrite(blob, pickled_array), NAMES)

    with pytest.raises(arrayplan.Unsupported, match="not a skops file"):
        arrayplan.compile_blob(b"PK\x03\x04 not really", NAMES)


def test_the_plan_module_imports_no_scikit_learn() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mlops_contract.arrayplan\n"
        "bad = [m for m in ('sklearn', 'scipy', 'pandas', 'skops') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_malformed_state_is_unsupported_not_a_crash() -> None:
    X, y = _data("classification", 2)
    blob = artifact.dump_model(_trainer(LogisticRegression()).fit(X, y))

    def steps_not_pairs(schema: dict[str, Any], _: zipfile.ZipFile) -> None:
        steps = _find(schema, lambda n: n.get("__loader__") == "ListNode" and len(n.get("content", [])) == 2)
        steps["content"] = [
            {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": "3"}
        ]

    with pytest.raises(arrayplan.Unsupported):
        arrayplan.compile_blob(_rewrite(blob, steps_not_pairs), NAMES)

    def bad_json(schema: dict[str, Any], _: zipfile.ZipFile) -> None:
        _find(schema, lambda n: n.get("__loader__") == "JsonNode")["content"] = "{not json"

    with pytest.raises(arrayplan.Unsupported, match="malformed"):
        arrayplan.compile_blob(_rewrite(blob, bad_json), NAMES)


@pytest.mark.parametrize(
    ("spec", "positions"),
    [
        ("b", 1),
        (2, 2),
        (np.int64(0), 0),
        (slice(0, 2), [0, 1]),
        (["c", "a"], [2, 0]),
        ([True, False, True], [0, 2]),
        (np.array([1, 0]), [1, 0]),
        ([], []),
    ],
)
def test_column_positions(spec: Any, positions: int | list[int]) -> None:
    # One reading of a ColumnTransformer's selections, for the plan and the server's matrix path.
    assert arrayplan.column_positions(spec, ["a", "b", "c"]) == positions


@pytest.mark.parametrize(
    "spec", ["x", 3, -1, [True], ["a", 1], ["a", "x"], [0, 7], slice("a", None), 1.5, True, b"a"]
)
def test_column_positions_refuses_what_it_cannot_read(spec: Any) -> None:
    with pytest.raises(arrayplan.Unsupported):
        arrayplan.column_positions(spec, ["a", "b", "c"])
