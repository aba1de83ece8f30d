"""Predict with a verified skops artifact from its arrays alone, without importing scikit-learn.

Issue #10 (serving cold start): importing scikit-learn costs the inference server 0.7-1.2 s of
its start (scikit-learn imports scipy.stats), skops 0.3 s more and pandas 0.2 s. A skops file is
a zip of `schema.json` (the object tree: classes, attributes, JSON values) and `.npy` arrays, so
for the pipelines the trainer builds from numeric columns the fitted numbers can be read
directly: `numpy.load(allow_pickle=False)` for the arrays, `json` for the rest, no class ever
instantiated, no code from the file run. The bytes are the ones whose sha256 the caller verified.

`compile_blob(blob, feature_names)` returns a `Plan` for a pipeline made only of parts listed
here, or raises `Unsupported` (the caller then loads the file with skops as before):

- preparation: a ColumnTransformer selecting columns by name or position (`drop` remainder or
  `passthrough` parts allowed, which scikit-learn holds as an identity FunctionTransformer), Pipelines, SimpleImputer (NaN missing values, no indicator),
  StandardScaler, MinMaxScaler, RobustScaler;
- estimator: LogisticRegression, SGDClassifier (hinge or log_loss), RidgeClassifier,
  LinearRegression, Ridge, Lasso, ElasticNet (single target),
  DecisionTree, RandomForest and ExtraTrees classifiers and regressors (single output; tree
  models only behind an imputer, so no NaN reaches them: scikit-learn's own NaN routing depends
  on estimator tags this module does not model).

Every operation is the one scikit-learn runs (same numpy calls, same order: the scaler's
in-place subtract then divide, `X @ coef.T + intercept`, softmax with the row maximum removed,
trees compared in float32 with `<=`, forest probabilities summed tree by tree in estimator
order then divided); only the last bits can differ, where scikit-learn's own depend on the
input's memory layout. Unit tests hold plans to scikit-learn's predictions on many fitted
pipelines; the verify Job (`mlops-trainer verify`) compares each artifact's plan with the model
scikit-learn loads, and the operator lets the server use the plan only for versions where they
agreed (ModelVersion `status.servingRuntime`), so a server never serves numbers scikit-learn
would not give.

Inputs scikit-learn refuses are refused here with a ValueError too: infinity anywhere, NaN
reaching a linear model (an imputer fills it first), values that overflow float32 at a tree.
Tree arrays are checked before use (children after their parent and inside the tree, features
inside the input), so a crafted file can neither index out of bounds nor loop.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

# skops' schema protocol versions this reader understands (skops 0.10-0.16 write 2).
PROTOCOLS: Final = frozenset({2})

LINEAR_CLASSIFIERS: Final = frozenset({"LogisticRegression", "SGDClassifier", "RidgeClassifier"})
LINEAR_REGRESSORS: Final = frozenset({"LinearRegression", "Ridge", "Lasso", "ElasticNet"})
TREES: Final = {
    "DecisionTreeClassifier": ("sklearn.tree.", True, False),
    "DecisionTreeRegressor": ("sklearn.tree.", False, False),
    "RandomForestClassifier": ("sklearn.ensemble.", True, True),
    "RandomForestRegressor": ("sklearn.ensemble.", False, True),
    "ExtraTreesClassifier": ("sklearn.ensemble.", True, True),
    "ExtraTreesRegressor": ("sklearn.ensemble.", False, True),
}
_SCALAR_TYPES: Final = frozenset({"float64", "float32", "int64", "int32", "bool_", "bool", "intc", "uint8"})

Transform = Callable[[np.ndarray], np.ndarray]


class Unsupported(Exception):
    """The file holds something this module does not run; load it with skops instead."""


# --- reading the skops file --------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    """A scikit-learn object of the file: its class and attributes, never instantiated."""

    module: str
    name: str
    attrs: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


@dataclass(frozen=True)
class TreeArrays:
    """The state of a `sklearn.tree._tree.Tree`: its constructor arguments and its arrays."""

    args: tuple[Any, ...]
    state: dict[str, Any]


@dataclass(frozen=True)
class TypeRef:
    module: str
    name: str


class _Reader:
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.memo: dict[Any, Any] = {}

    def node(self, state: Any) -> Any:
        if not isinstance(state, dict) or "__loader__" not in state:
            raise Unsupported("malformed schema node")
        saved_id = state.get("__id__")
        if saved_id is not None and saved_id in self.memo:
            return self.memo[saved_id]
        loader = state["__loader__"]
        if loader == "CachedNode":
            raise Unsupported(f"reference to an unknown object {saved_id!r}")
        read = getattr(self, f"_{loader}", None)
        if read is None:
            raise Unsupported(f"skops node {loader} ({state.get('__module__')}.{state.get('__class__')})")
        value = read(state)
        if saved_id is not None:
            self.memo[saved_id] = value
        return value

    def _JsonNode(self, state: dict[str, Any]) -> Any:
        return json.loads(state["content"])

    def _ListNode(self, state: dict[str, Any]) -> list[Any]:
        return [self.node(v) for v in state["content"]]

    def _TupleNode(self, state: dict[str, Any]) -> tuple[Any, ...]:
        if (state.get("__module__"), state.get("__class__")) != ("builtins", "tuple"):
            raise Unsupported(f"tuple type {state.get('__module__')}.{state.get('__class__')}")
        return tuple(self.node(v) for v in state["content"])

    def _DictNode(self, state: dict[str, Any]) -> dict[Any, Any]:
        if (state.get("__module__"), state.get("__class__")) != ("builtins", "dict"):
            raise Unsupported(f"mapping type {state.get('__module__')}.{state.get('__class__')}")
        key_types = self.node(state["key_types"])
        content = state["content"]
        if len(key_types) != len(content):
            raise Unsupported("dictionary keys and key types differ in number")
        casts = {TypeRef("builtins", "str"): str, TypeRef("builtins", "int"): int}
        out: dict[Any, Any] = {}
        for key_type, (key, value) in zip(key_types, content.items(), strict=True):
            if key_type not in casts:
                raise Unsupported(f"dictionary key type {key_type}")
            out[casts[key_type](key)] = self.node(value)
        return out

    def _TypeNode(self, state: dict[str, Any]) -> TypeRef:
        return TypeRef(str(state["__module__"]), str(state["__class__"]))

    def _SliceNode(self, state: dict[str, Any]) -> slice:
        content = state["content"]
        parts = [content.get(k) for k in ("start", "stop", "step")]
        if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
            raise Unsupported("slice with non-integer bounds")
        return slice(*parts)

    def _NdArrayNode(self, state: dict[str, Any]) -> Any:
        module, name = state.get("__module__"), state.get("__class__")
        if state.get("type") == "json":
            items = [self.node(v) for v in state["content"]]
            shape = self.node(state["shape"])
            if not (isinstance(shape, tuple) and len(shape) == 1 and shape[0] == len(items)):
                raise Unsupported("object array that is not one-dimensional")
            array = np.empty(len(items), dtype=object)
            array[:] = items
            return array
        if state.get("type") != "numpy":
            raise Unsupported(f"array storage {state.get('type')!r}")
        try:
            with self.archive.open(str(state["file"])) as f:
                array = np.load(io.BytesIO(f.read()), allow_pickle=False)
        except (KeyError, ValueError, OSError) as e:
            raise Unsupported(f"array {state.get('file')}: {e}") from e
        if (module, name) == ("numpy", "ndarray"):
            return array
        if module == "numpy" and name in _SCALAR_TYPES:
            return array.reshape(()).item() if array.size == 1 else array
        raise Unsupported(f"array type {module}.{name}")

    def _DTypeNode(self, state: dict[str, Any]) -> np.dtype[Any]:
        return np.asarray(self.node(state["content"])).dtype

    def _ObjectNode(self, state: dict[str, Any]) -> Obj:
        module, name = str(state["__module__"]), str(state["__class__"])
        if not module.startswith("sklearn."):
            raise Unsupported(f"object of type {module}.{name}")
        attrs = self.node(state["content"]) if state.get("content") is not None else {}
        if not isinstance(attrs, dict):
            raise Unsupported(f"{name} state is not a dictionary")
        return Obj(module, name, attrs)

    # A fitted loss object (e.g. SGDClassifier's) is training state, never used to predict: its name will do.
    _LossNode = _TypeNode

    def _TreeNode(self, state: dict[str, Any]) -> TreeArrays:
        args = self.node(state["__reduce__"]["args"])
        attrs = self.node(state["content"])
        if not isinstance(args, tuple) or not isinstance(attrs, dict):
            raise Unsupported("tree state of an unexpected shape")
        return TreeArrays(args, attrs)


def read_blob(blob: bytes) -> Any:
    """The object tree of a skops file as `Obj`, `TreeArrays`, containers, arrays and JSON values."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise Unsupported(f"not a skops file: {e}") from e
    if not isinstance(schema, dict) or schema.get("protocol") not in PROTOCOLS:
        raise Unsupported(f"skops protocol {schema.get('protocol') if isinstance(schema, dict) else None!r}")
    with archive:
        try:
            return _Reader(archive).node(schema)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError) as e:
            raise Unsupported(f"malformed skops schema: {type(e).__name__}: {e}") from e


# --- the plan ----------------------------------------------------------------------------------


def _finite(X: np.ndarray, allow_nan: bool) -> None:
    """scikit-learn's input check: infinity is refused, and NaN unless the step handles it."""
    if allow_nan:
        if np.isinf(X).any():
            raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
    elif not np.isfinite(X).all():
        raise ValueError("Input X contains NaN or infinity; impute missing values first.")


def _array(value: Any, name: str, ndim: int | None = None) -> np.ndarray:
    if (
        isinstance(value, np.ndarray)
        and value.dtype.kind == "O"
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.ravel())
    ):
        value = value.astype(np.float64)  # e.g. a constant imputer's statistics_
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
        raise Unsupported(f"{name} is not a numeric array")
    if ndim is not None and value.ndim != ndim:
        raise Unsupported(f"{name} has {value.ndim} dimensions, expected {ndim}")
    return value.astype(np.float64, copy=False)


def _vector(step: Obj, attribute: str, width: int) -> np.ndarray:
    """A fitted per-column attribute (mean_, scale_, ...) as float64 of the input's width."""
    vector = _array(step.get(attribute), attribute, 1)
    if vector.shape != (width,):
        raise Unsupported(f"{attribute} has shape {vector.shape}, expected ({width},)")
    return vector


def _imputer(step: Obj, width: int) -> Transform:
    missing = step.get("missing_values")
    if not (isinstance(missing, float) and np.isnan(missing)) or step.get("add_indicator"):
        raise Unsupported("SimpleImputer other than NaN without an indicator")
    statistics = _vector(step, "statistics_", width)
    if np.isnan(statistics).any():
        raise Unsupported("SimpleImputer with an all-missing column")

    def impute(X: np.ndarray) -> np.ndarray:
        _finite(X, allow_nan=True)
        X = X.copy()
        mask = np.isnan(X)
        if mask.any():
            X[mask] = np.broadcast_to(statistics, X.shape)[mask]
        return X

    return impute


def _scaler(step: Obj, width: int) -> Transform:
    shift: np.ndarray | None = None  # subtracted, then
    divide: np.ndarray | None = None  # divided by (StandardScaler, RobustScaler)
    multiply: np.ndarray | None = None  # or multiplied by, then added (MinMaxScaler)
    add: np.ndarray | None = None
    clip: tuple[float, float] | None = None
    if step.name == "StandardScaler":
        if step.get("with_mean"):
            shift = _vector(step, "mean_", width)
        if step.get("with_std"):
            divide = _vector(step, "scale_", width)
    elif step.name == "RobustScaler":
        if step.get("with_centering"):
            shift = _vector(step, "center_", width)
        if step.get("with_scaling"):
            divide = _vector(step, "scale_", width)
    else:  # MinMaxScaler
        multiply = _vector(step, "scale_", width)
        add = _vector(step, "min_", width)
        if step.get("clip"):
            low, high = step.get("feature_range")
            clip = (float(low), float(high))

    def scale(X: np.ndarray) -> np.ndarray:
        _finite(X, allow_nan=True)
        X = X.copy()
        if shift is not None:
            X -= shift
        if divide is not None:
            X /= divide
        if multiply is not None and add is not None:
            X *= multiply
            X += add
            if clip is not None:
                np.clip(X, clip[0], clip[1], out=X)
        return X

    return scale


_SCALERS: Final = frozenset({"StandardScaler", "MinMaxScaler", "RobustScaler"})


def _is_passthrough(step: Any) -> bool:
    return step is None or step == "passthrough"


def _transformer(step: Any, width: int) -> tuple[list[Transform], bool]:
    """A fitted transformer as a list of functions (and whether it fills every NaN)."""
    if _is_passthrough(step):
        return [], False
    if not isinstance(step, Obj):
        raise Unsupported(f"step {step!r}")
    if step.name == "Pipeline" and step.module.startswith("sklearn.pipeline"):
        functions: list[Transform] = []
        imputed = False
        for _, inner in step.get("steps") or []:
            more, fills = _transformer(inner, width)
            functions += more
            imputed = imputed or fills
        return functions, imputed
    if step.name == "SimpleImputer" and step.module.startswith("sklearn.impute."):
        return [_imputer(step, width)], True
    if step.name in _SCALERS and step.module.startswith("sklearn.preprocessing."):
        return [_scaler(step, width)], False
    if (
        step.name == "FunctionTransformer"
        and step.module.startswith("sklearn.preprocessing.")
        and step.get("func") is None
        and not step.get("validate")
    ):
        return [], False  # how a fitted ColumnTransformer holds 'passthrough' columns
    raise Unsupported(f"transformer {step.module}.{step.name}")


def column_positions(spec: Any, names: Sequence[str]) -> int | list[int]:
    """A ColumnTransformer column selection as positions in `names` (the signature's order).

    One name or position gives one position (scikit-learn hands that transformer a 1-D
    column); a slice, a boolean mask of full length, or a list of names or of positions gives a
    list. Anything else, a name not in `names` or a position outside it is `Unsupported`.
    Shared with the server's scikit-learn runtime (`ServedModel._column_index`).
    """
    index = {n: i for i, n in enumerate(names)}

    def position(value: Any) -> int:
        if isinstance(value, str):
            if value not in index:
                raise Unsupported(f"column {value!r} is not in the signature")
            return index[value]
        if not 0 <= int(value) < len(names):
            raise Unsupported("column position outside the signature")
        return int(value)

    def is_position(value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

    if isinstance(spec, str) or is_position(spec):
        return position(spec)
    if isinstance(spec, slice):
        if not all(isinstance(b, (int, type(None))) for b in (spec.start, spec.stop, spec.step)):
            raise Unsupported("slice with non-integer bounds")
        return list(range(len(names)))[spec]
    if isinstance(spec, bytes) or not hasattr(spec, "__iter__"):
        raise Unsupported(f"column selection {spec!r}")
    values = list(spec)
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        if len(values) != len(names):
            raise Unsupported("boolean column mask of the wrong length")
        return [i for i, v in enumerate(values) if v]
    if all(isinstance(v, str) for v in values) or all(is_position(v) for v in values):
        return [position(v) for v in values]
    raise Unsupported(f"column selection {spec!r}")


def _column_transformer(step: Obj, names: Sequence[str]) -> tuple[Transform, int, bool]:
    if step.get("sparse_output_"):
        raise Unsupported("ColumnTransformer with sparse output")
    parts: list[tuple[list[int], list[Transform]]] = []
    imputed = True
    for _, transformer, spec in step.get("transformers_") or []:
        if transformer == "drop":
            continue
        index = column_positions(spec, names)
        if isinstance(index, int):
            # scikit-learn cannot fit the supported transformers on a 1-D column.
            raise Unsupported(f"single-column selection {spec!r}")
        if not index:
            continue
        functions, fills = _transformer(transformer, len(index))
        imputed = imputed and fills
        parts.append((index, functions))
    if not parts:
        raise Unsupported("ColumnTransformer that keeps no column")
    width = sum(len(index) for index, _ in parts)

    def prepare(X: np.ndarray) -> np.ndarray:
        blocks = []
        for index, functions in parts:
            block = X[:, index]
            for function in functions:
                block = function(block)
            blocks.append(block)
        return blocks[0] if len(blocks) == 1 else np.hstack(blocks)

    return prepare, width, imputed


# --- estimators --------------------------------------------------------------------------------


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1).reshape((-1, 1))
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1).reshape((-1, 1))
    return scores


def _expit_one(value: float) -> float:
    try:
        return 1.0 / (1.0 + math.exp(-value))
    except OverflowError:  # exp(-value) is infinite: the C expression gives 0
        return 0.0


def _expit(scores: np.ndarray) -> np.ndarray:
    """scipy.special.expit bit for bit: 1 / (1 + exp(-x)) with the C library's exp.

    numpy's own (vectorised) exp differs from the C library's in the last bit for ~2 % of
    values, so numpy is not used here.
    """
    return np.array([_expit_one(v) for v in scores.tolist()], dtype=np.float64)


@dataclass(frozen=True)
class _Estimator:
    predict: Callable[[np.ndarray], np.ndarray]
    predict_proba: Callable[[np.ndarray], np.ndarray] | None
    classes: np.ndarray | None


def _classes(step: Obj) -> np.ndarray:
    classes = step.get("classes_")
    if not isinstance(classes, np.ndarray) or classes.ndim != 1 or classes.dtype.kind not in "iubfUO":
        raise Unsupported(f"{step.name}.classes_ of an unexpected type")
    if classes.dtype.kind == "O" and not all(isinstance(c, str) for c in classes):
        raise Unsupported(f"{step.name}.classes_ holds other objects than strings")
    return classes


def _linear_classifier(step: Obj, width: int) -> _Estimator:
    """LogisticRegression, SGDClassifier (hinge or log_loss) and RidgeClassifier.

    Labels: the decision's sign (two classes) or arg-max. Probabilities: LogisticRegression's
    expit (two classes) or softmax; SGDClassifier's log_loss expit, normalised over the classes
    (one-vs-rest); none for the others.
    """
    if step.name == "RidgeClassifier":
        binarizer = step.get("_label_binarizer")
        if (
            not isinstance(binarizer, Obj)
            or step.get("multi_output")
            or binarizer.get("y_type_") == "multilabel-indicator"
        ):
            raise Unsupported("RidgeClassifier with several outputs")
        classes = _classes(binarizer)
    else:
        classes = _classes(step)
    rows = 1 if len(classes) <= 2 else len(classes)
    coef = _array(step.get("coef_"), "coef_")
    if coef.ndim == 1 and rows == 1:
        coef = coef.reshape((1, -1))
    intercept = _array(np.atleast_1d(step.get("intercept_")), "intercept_", 1)
    if coef.shape != (rows, width) or intercept.shape not in ((rows,), (1,)):
        raise Unsupported(f"{step.name} coefficients of shape {coef.shape}")
    proba: str | None = None
    if step.name == "LogisticRegression":
        multi_class = step.get("multi_class")
        if rows > 1 and (
            multi_class == "ovr" or (multi_class == "auto" and step.get("solver") == "liblinear")
        ):
            raise Unsupported("one-vs-rest LogisticRegression")
        proba = "softmax"
    elif step.name == "SGDClassifier":
        loss = step.get("loss")
        if loss == "log_loss":
            proba = "ovr"
        elif loss == "modified_huber":
            raise Unsupported("SGDClassifier with the modified_huber loss")

    def decision(X: np.ndarray) -> np.ndarray:
        _finite(X, allow_nan=False)
        scores = X @ coef.T + intercept
        out: np.ndarray = scores.reshape((-1,)) if scores.shape[1] == 1 else scores
        return out

    def predict_proba(X: np.ndarray) -> np.ndarray:
        scores = decision(X)
        if scores.ndim == 1:
            positive = _expit(scores)
            return np.stack([1 - positive, positive], axis=1)
        if proba == "softmax":
            return _softmax(scores)
        fractions = _expit(scores.ravel()).reshape(scores.shape)
        fractions /= fractions.sum(axis=1).reshape((-1, 1))
        return fractions

    def predict(X: np.ndarray) -> np.ndarray:
        scores = decision(X)
        labels: np.ndarray = classes[
            (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        ]
        return labels

    return _Estimator(predict, predict_proba if proba else None, classes)


def _linear_regressor(step: Obj, width: int) -> _Estimator:
    coef = _array(step.get("coef_"), "coef_", 1)
    intercept = step.get("intercept_")
    if isinstance(intercept, np.ndarray) and intercept.shape == ():
        intercept = float(intercept)
    if coef.shape != (width,) or not isinstance(intercept, (int, float)) or isinstance(intercept, bool):
        raise Unsupported(f"{step.name} with several targets or an unexpected intercept")

    def predict(X: np.ndarray) -> np.ndarray:
        _finite(X, allow_nan=False)
        out: np.ndarray = X @ coef + intercept
        return out

    return _Estimator(predict, None, None)


@dataclass(frozen=True)
class _Forest:
    """All trees' nodes in one set of arrays, children as absolute indices (-1: leaf)."""

    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    leaf_values: np.ndarray  # (nodes, outputs per leaf): class fractions or the regression value
    depth: int


def _tree(tree: Any, width: int, classifier: bool) -> _Forest:
    """One fitted tree's arrays, checked, as a forest of one."""
    if not isinstance(tree, TreeArrays) or len(tree.args) != 3:
        raise Unsupported("tree of an unexpected shape")
    n_features, n_classes, n_outputs = tree.args
    if n_features != width or n_outputs != 1:
        raise Unsupported("tree with several outputs or another input width")
    nodes, values = tree.state.get("nodes"), tree.state.get("values")
    if not isinstance(nodes, np.ndarray) or nodes.dtype.names is None or not isinstance(values, np.ndarray):
        raise Unsupported("tree without node arrays")
    if not {"left_child", "right_child", "feature", "threshold"} <= set(nodes.dtype.names):
        raise Unsupported("tree nodes without children, features or thresholds")
    count = len(nodes)
    if count == 0 or values.shape[:2] != (count, 1):
        raise Unsupported("tree values do not match its nodes")
    left = nodes["left_child"].astype(np.int64)
    right = nodes["right_child"].astype(np.int64)
    feature = nodes["feature"].astype(np.int64)
    threshold = nodes["threshold"].astype(np.float64)
    ids = np.arange(count)
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise Unsupported("tree node with one child")
    internal = ~leaf
    if (
        (left[internal] <= ids[internal]).any()
        or (right[internal] <= ids[internal]).any()
        or (left[internal] >= count).any()
        or (right[internal] >= count).any()
        or (feature[internal] < 0).any()
        or (feature[internal] >= width).any()
    ):
        raise Unsupported("tree arrays out of bounds")
    feature = np.where(leaf, 0, feature)
    depth = np.zeros(count, dtype=np.int64)
    for i in np.flatnonzero(internal):  # children come after their parent: one pass in order
        depth[left[i]] = depth[right[i]] = depth[i] + 1
    if classifier:
        k = int(np.asarray(n_classes).reshape(-1)[0])
        fractions = values[:, 0, :k].astype(np.float64)
        normalizer = fractions.sum(axis=1)[:, np.newaxis]
        normalizer[normalizer == 0.0] = 1.0
        leaf_values = fractions / normalizer
    else:
        leaf_values = values[:, 0, :1].astype(np.float64)
    roots = np.zeros(1, dtype=np.int64)
    return _Forest(roots, left, right, feature, threshold, leaf_values, int(depth.max()))


def _forest(trees: list[Any], width: int, classifier: bool) -> _Forest:
    parts = [_tree(t, width, classifier) for t in trees]
    if not parts or len({p.leaf_values.shape[1] for p in parts}) != 1:
        raise Unsupported("trees with different outputs")
    offsets = np.cumsum([0] + [len(p.left) for p in parts[:-1]])

    def shifted(children: np.ndarray, offset: int) -> np.ndarray:
        return np.where(children == -1, -1, children + offset)

    return _Forest(
        roots=offsets.astype(np.int64),
        left=np.concatenate([shifted(p.left, o) for p, o in zip(parts, offsets, strict=True)]),
        right=np.concatenate([shifted(p.right, o) for p, o in zip(parts, offsets, strict=True)]),
        feature=np.concatenate([p.feature for p in parts]),
        threshold=np.concatenate([p.threshold for p in parts]),
        leaf_values=np.concatenate([p.leaf_values for p in parts]),
        depth=max(p.depth for p in parts),
    )


def _forest_values(forest: _Forest, X: np.ndarray) -> np.ndarray:
    """Per tree and row, the value of the leaf the row reaches: shape (trees, rows, outputs)."""
    with np.errstate(over="ignore"):
        X32 = X.astype(np.float32)
    if not np.isfinite(X32).all():
        raise ValueError("Input X contains NaN, infinity or a value too large for dtype('float32').")
    rows = X.shape[0]
    trees = len(forest.roots)
    node = np.repeat(forest.roots, rows)
    row = np.tile(np.arange(rows), trees)
    for _ in range(forest.depth):
        left = forest.left[node]
        internal = left != -1
        if not internal.any():
            break
        go_left = X32[row, forest.feature[node]] <= forest.threshold[node]
        node = np.where(internal, np.where(go_left, left, forest.right[node]), node)
    out: np.ndarray = forest.leaf_values[node].reshape(trees, rows, -1)
    return out


def _trees(step: Obj, width: int, classifier: bool, ensemble: bool) -> _Estimator:
    if ensemble:
        members = step.get("estimators_")
        if not isinstance(members, list) or not members:
            raise Unsupported(f"{step.name} without fitted trees")
        if not all(isinstance(m, Obj) and m.name.startswith(("DecisionTree", "ExtraTree")) for m in members):
            raise Unsupported(f"{step.name} with other members than trees")
        trees = [m.get("tree_") for m in members]
    else:
        trees = [step.get("tree_")]
    if step.get("n_outputs_", 1) != 1:
        raise Unsupported(f"{step.name} with several outputs")
    forest = _forest(trees, width, classifier)
    count = float(len(trees))

    def average(X: np.ndarray) -> np.ndarray:
        values = _forest_values(forest, X)
        if not ensemble:
            single: np.ndarray = values[0]
            return single
        # scikit-learn adds tree after tree in estimator order; a reduction over the first axis
        # of a C-ordered array does the same additions in the same order.
        total: np.ndarray = values.sum(axis=0)
        total /= count
        return total

    if not classifier:
        return _Estimator(lambda X: average(X)[:, 0], None, None)
    classes = _classes(step)
    if forest.leaf_values.shape[1] != len(classes):
        raise Unsupported(f"{step.name} leaves do not match its classes")
    return _Estimator(lambda X: classes[np.argmax(average(X), axis=1)], average, classes)


def _estimator(step: Any, width: int, imputed: bool) -> _Estimator:
    if not isinstance(step, Obj):
        raise Unsupported(f"final step {step!r}")
    if step.name in LINEAR_CLASSIFIERS and step.module.startswith("sklearn.linear_model."):
        return _linear_classifier(step, width)
    if step.name in LINEAR_REGRESSORS and step.module.startswith("sklearn.linear_model."):
        return _linear_regressor(step, width)
    if step.name in TREES and step.module.startswith(TREES[step.name][0]):
        if not imputed:
            raise Unsupported(f"{step.name} without an imputer in front (NaN routing)")
        _, classifier, ensemble = TREES[step.name]
        return _trees(step, width, classifier, ensemble)
    raise Unsupported(f"estimator {step.module}.{step.name}")


# --- putting it together -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A numeric pipeline over float64 matrices whose columns are the signature's features."""

    estimator: str
    classes_: np.ndarray | None
    feature_names_in_: np.ndarray | None
    _prepare: Callable[[np.ndarray], np.ndarray]
    _final: _Estimator

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._final.predict(self._prepare(np.asarray(X, dtype=np.float64)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self._final.predict_proba is None:
            raise AttributeError(f"{self.estimator} has no predict_proba")
        return self._final.predict_proba(self._prepare(np.asarray(X, dtype=np.float64)))

    @property
    def has_proba(self) -> bool:
        return self._final.predict_proba is not None


def compile_tree(root: Any, feature_names: Sequence[str]) -> Plan:
    """A `Plan` for the object tree `read_blob` returned, or `Unsupported`."""
    names = list(feature_names)
    steps: list[Any] = (
        [s for _, s in root.get("steps") or []]
        if isinstance(root, Obj) and root.name == "Pipeline" and root.module.startswith("sklearn.pipeline")
        else [root]
    )
    if not steps:
        raise Unsupported("empty pipeline")
    fitted = steps[0].get("feature_names_in_") if isinstance(steps[0], Obj) else None
    if fitted is not None and [str(n) for n in fitted] != names:
        raise Unsupported("the pipeline's input columns differ from the signature")
    functions: list[Transform] = []
    width = len(names)
    imputed = False
    first = steps[0]
    if isinstance(first, Obj) and first.name == "ColumnTransformer":
        prepare, width, imputed = _column_transformer(first, names)
        functions.append(prepare)
        steps = steps[1:]
    if not steps:
        raise Unsupported("pipeline without an estimator")
    for step in steps[:-1]:
        more, fills = _transformer(step, width)
        functions += more
        imputed = imputed or fills
    final = _estimator(steps[-1], width, imputed)

    def prepare_all(X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] != len(names):
            raise ValueError(
                f"X has {X.shape[-1] if X.ndim else 0} features, but the model expects {len(names)}"
            )
        for function in functions:
            X = function(X)
        return X

    return Plan(
        estimator=steps[-1].name,
        classes_=final.classes,
        feature_names_in_=None if fitted is None else np.asarray(fitted, dtype=object),
        _prepare=prepare_all,
        _final=final,
    )


def compile_blob(blob: bytes, feature_names: Sequence[str]) -> Plan:
    """`read_blob` then `compile_tree`; raises `Unsupported` for anything else."""
    root = read_blob(blob)
    try:
        return compile_tree(root, feature_names)
    except Unsupported:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
        # Attributes of unexpected shapes: skops and scikit-learn get to judge the file instead.
        raise Unsupported(f"unexpected model state: {type(e).__name__}: {e}") from e
