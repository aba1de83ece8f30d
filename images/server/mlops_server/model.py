"""The served model: a verified scikit-learn Pipeline plus its signature, predicting whole batches.

`ServedModel.load` checks the artifact's sha256 (`mlops_contract.artifact.read_verified`), then
runs the model one of two ways (`runtime`):

- `arrays` (issue #10, cold start): when every feature is numeric and the pipeline is made of
  parts `mlops_contract.arrayplan` knows, the fitted arrays are read from the verified file and
  the model runs on numpy alone. scikit-learn, scipy, skops and pandas are never imported, so
  the server is ready in a fraction of the time and memory. The operator passes `--runtime
  auto` only for versions whose verify Job compared this plan with scikit-learn on this very
  file and found them in agreement (ModelVersion `status.servingRuntime: arrays`).
- `sklearn`: otherwise (or with `--runtime sklearn`), skops loads the pipeline, refusing
  untrusted types, and `predict` builds exactly one DataFrame per batch (or uses the numeric
  fast path below).

Either way the signature is checked against the pipeline and one warm-up prediction runs before
readiness. `predict` takes a frame (see `mlops_server.codec`) of any number of rows.

The label of a classifier is what its `predict` returns. Only estimators whose scikit-learn
`predict` *is* `classes_[argmax(predict_proba)]` (`_LABELS_FROM_PROBA`: forests and histogram
gradient boosting) get one model pass per batch instead of two; a linear model's `predict`
takes the arg-max of its decision function, and where probabilities tie exactly (or round to
a tie) that arg-max differs from the probabilities'.

Large frames are predicted `CHUNK_ROWS` rows at a time, so a model's intermediate arrays (a
forest's node paths, a one-hot block) stay bounded whatever the request's row count.

Numeric fast path: scikit-learn's DataFrame handling costs more than a small model (~0.5 ms
per call for a scaler + logistic regression, ~2 ms behind a ColumnTransformer). When every
feature is numeric, batches go to the pipeline as one float64 matrix in signature order;
a leading ColumnTransformer (which selects columns by name) is applied transformer by
transformer to the matching matrix columns. The fast path is used only if it gives *the same*
predictions and probabilities as the DataFrame path on probe rows spanning the reference
distribution; anything it cannot express or that differs keeps the DataFrame path.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

import numpy as np

from mlops_contract import arrayplan, artifact
from mlops_server import logs
from mlops_server.codec import OUTPUT_PREDICT, OUTPUT_PROBA, Array, ModelInputError, Prediction
from mlops_server.signature import Kind, Signature, SignatureError

log = logs.get("model")

# Final estimators whose scikit-learn predict() is literally classes_[argmax(predict_proba())]
# (the same arrays, the same first-maximum rule), ties included. Trees, boosting on decision
# values, linear models and naive Bayes compute their label from other numbers.
_LABELS_FROM_PROBA: Final = frozenset(
    {"RandomForestClassifier", "ExtraTreesClassifier", "HistGradientBoostingClassifier"}
)
CHUNK_ROWS: Final = 8192

_PANDAS_DTYPE: Final = {Kind.FLOAT: "float64", Kind.INT: "int64", Kind.BOOL: "bool", Kind.CATEGORY: "object"}


class _Methods(NamedTuple):
    predict: Callable[[Any], Any]
    predict_proba: Callable[[Any], Any] | None


def _label_datatype(values: Array) -> str:
    kind = values.dtype.kind
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    if kind == "b":
        return "BOOL"
    return "BYTES"


class ServedModel:
    def __init__(
        self, pipeline: Any, metadata: Mapping[str, Any], name: str, version: str, load_seconds: float = 0.0
    ) -> None:
        self.pipeline = pipeline
        self.metadata = metadata
        self.name = name
        self.version = version
        self.sha256 = str(metadata.get("sha256", ""))
        self.load_seconds = load_seconds
        try:
            self.signature = Signature.from_metadata(metadata)
        except SignatureError as e:
            raise artifact.ArtifactError(str(e)) from e
        sig = self.signature
        fitted_names = getattr(pipeline, "feature_names_in_", None)
        if fitted_names is not None and [str(n) for n in fitted_names] != list(sig.names):
            raise artifact.ArtifactError(
                f"signature features ({', '.join(sig.names)}) differ from the pipeline's input columns "
                f"({', '.join(map(str, fitted_names))})"
            )
        if sig.numeric:
            # float64 matrices become one float block; integer features are cast back to int64.
            self._casts = {f.name: "int64" for f in sig.features if f.kind is Kind.INT}
        else:
            self._casts = {f.name: _PANDAS_DTYPE[f.kind] for f in sig.features if f.kind is not Kind.CATEGORY}
            self._casts.update({f.name: "category" for f in sig.features if f.dtype == "category"})
        self.classes: Array | None = None
        self.has_proba = False
        self.labels_from_proba = False
        if sig.classification:
            classes = getattr(pipeline, "classes_", None)
            if classes is None:
                raise artifact.ArtifactError("signature says classification but the model has no classes_")
            self.classes = np.asarray(classes)
            if isinstance(pipeline, arrayplan.Plan):
                self.has_proba = pipeline.has_proba
                self.labels_from_proba = self.has_proba and pipeline.estimator in _LABELS_FROM_PROBA
            else:
                self.has_proba = hasattr(pipeline, "predict_proba")
                final = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
                cls = type(final)
                self.labels_from_proba = (
                    self.has_proba
                    and cls.__module__.startswith("sklearn.")
                    and cls.__name__ in _LABELS_FROM_PROBA
                )
        self.outputs: tuple[str, ...] = (
            (OUTPUT_PREDICT, OUTPUT_PROBA) if self.has_proba else (OUTPUT_PREDICT,)
        )
        self.label_datatype = _label_datatype(self.classes) if self.classes is not None else "FP64"
        self.n_features = len(sig.features)
        self._frame_methods = _Methods(pipeline.predict, pipeline.predict_proba if self.has_proba else None)
        self._matrix: _Methods | None = None  # see the module docstring: set by enable_fast_path()
        self._columns: Any = None  # a pandas Index, made on first use (the arrays runtime never needs one)
        self.runtime = "arrays" if isinstance(pipeline, arrayplan.Plan) else "sklearn"
        if self.runtime == "arrays":
            self._matrix = self._frame_methods  # a plan takes float64 matrices in signature order

    @classmethod
    def load(
        cls,
        directory: str,
        expected_sha256: str | None,
        name: str | None,
        version: str | None,
        runtime: str = "auto",
    ) -> ServedModel:
        """Load and verify an artifact; raises `artifact.ArtifactError` for anything unservable.

        `runtime` "auto" runs the model from its arrays when `arrayplan` supports it, else with
        scikit-learn; "sklearn" always loads it with skops and scikit-learn.
        """
        started = time.perf_counter()
        blob, meta = artifact.read_verified(directory, expected_sha256)
        pipeline: Any = None
        if runtime == "auto":
            pipeline, reason = _plan(blob, meta)
            if pipeline is None:
                log.info("Running the model with scikit-learn", extra={"fields": {"reason": reason}})
        if pipeline is None:
            pipeline = artifact.load_model_bytes(blob)
        model_name = name or str(meta.get("model") or "model")
        model_version = version or str(meta.get("sha256", ""))[:12]
        model = cls(pipeline, meta, model_name, model_version)
        model.warm_up()
        if model.runtime == "sklearn":
            model.enable_fast_path()
        model.load_seconds = time.perf_counter() - started
        return model

    def _feature_references(self) -> Mapping[str, Any]:
        reference = self.metadata.get("reference")
        refs = reference.get("features") if isinstance(reference, Mapping) else None
        return refs if isinstance(refs, Mapping) else {}

    def warm_up(self) -> None:
        """Predict one representative row so lazy imports and caches are paid before readiness."""
        refs = self._feature_references()
        row: list[Any] = []
        for f in self.signature.features:
            ref = refs.get(f.name, {})
            if f.kind.numeric:
                value = float(ref.get("mean", 0.0)) if isinstance(ref, dict) else 0.0
                row.append(round(value) if f.kind is Kind.INT else value)
            elif f.kind is Kind.BOOL:
                row.append(False)
            else:
                cats = ref.get("categories") if isinstance(ref, dict) else None
                row.append(cats[0] if cats else "")
        frame = np.array([row], dtype=np.float64 if self.signature.numeric else object)
        try:
            self.predict(frame, want_proba=True)
        except Exception as e:
            log.warning(
                "Skipped warm-up: the model rejected a representative row",
                extra={"fields": {"model": self.name, "error": str(e)}},
            )

    def probe_frame(self) -> Array:
        """Numeric rows spanning each feature's reference range (deciles, min, max, mean)."""
        refs = self._feature_references()
        columns: list[list[float]] = []
        for f in self.signature.features:
            ref = refs.get(f.name)
            values: list[float] = []
            if isinstance(ref, Mapping):
                values = [float(v) for v in ref.get("edges", [])]
                values += [
                    float(ref[k]) for k in ("min", "max", "mean") if isinstance(ref.get(k), (int, float))
                ]
            if not values:
                values = [-1.0, 0.0, 0.5, 1.0, 2.0]
            if f.kind is Kind.INT:
                values = [float(round(v)) for v in values]
            columns.append(values)
        rows = max(len(c) for c in columns)
        return np.array(
            [[c[(i * (j + 1)) % len(c)] for j, c in enumerate(columns)] for i in range(rows)],
            dtype=np.float64,
        )

    def enable_fast_path(self) -> bool:
        """Feed float64 matrices to the pipeline when that provably changes nothing (probe rows)."""
        if not self.signature.numeric:
            return False
        candidate = self._matrix_methods()
        if candidate is None:
            return False
        probe = self.probe_frame()
        try:
            slow = self.predict(probe, want_proba=True)
            self._matrix = candidate
            fast = self.predict(probe, want_proba=True)
        except Exception:
            self._matrix = None
            return False
        same = np.array_equal(slow.labels, fast.labels) and (
            (slow.proba is None and fast.proba is None)
            or (
                slow.proba is not None
                and fast.proba is not None
                and np.allclose(slow.proba, fast.proba, rtol=1e-9, atol=1e-12)
            )
        )
        if not same:
            self._matrix = None
        return self.matrix_input

    @property
    def matrix_input(self) -> bool:
        return self._matrix is not None

    def _matrix_methods(self) -> _Methods | None:
        """(predict, predict_proba) taking a float64 matrix in signature order, if we can build them.

        A pipeline starting with a ColumnTransformer (the trainer's layout) selects columns by
        name, which only a DataFrame supports; we apply its fitted transformers to the matching
        matrix columns ourselves and run the remaining steps on the result.
        """
        pipeline = self.pipeline
        proba_method = getattr(pipeline, "predict_proba", None) if self.has_proba else None
        steps = getattr(pipeline, "steps", None)
        if not steps or type(steps[0][1]).__name__ != "ColumnTransformer":
            return _Methods(pipeline.predict, proba_method)
        parts: list[tuple[Any, Any]] = []
        for _, transformer, columns in steps[0][1].transformers_:
            if isinstance(transformer, str) and transformer == "drop":
                continue
            index = self._column_index(columns)
            if index is None:
                return None
            parts.append((transformer, index))
        rest = [
            step
            for _, step in steps[1:]
            if step is not None and not (isinstance(step, str) and step == "passthrough")
        ]
        if not parts or not rest:
            return None
        middle, final = rest[:-1], rest[-1]

        def prepare(frame: Array) -> Any:
            blocks = []
            for transformer, index in parts:
                block = frame[:, index]
                if not (isinstance(transformer, str) and transformer == "passthrough"):
                    block = transformer.transform(block)
                if hasattr(
                    block, "toarray"
                ):  # a sparse block: ColumnTransformer densified it (sparse_threshold)
                    block = block.toarray()
                blocks.append(block if block.ndim == 2 else block.reshape(-1, 1))
            X = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
            for step in middle:
                X = step.transform(X)
            return X

        final_proba = getattr(final, "predict_proba", None) if self.has_proba else None
        return _Methods(
            lambda frame: final.predict(prepare(frame)),
            None if final_proba is None else (lambda frame: final_proba(prepare(frame))),
        )

    def _column_index(self, columns: Any) -> Any:
        """A ColumnTransformer column spec as matrix column indices (same shape), or None."""
        try:
            return arrayplan.column_positions(columns, self.signature.names)
        except arrayplan.Unsupported:
            return None

    def dataframe(self, frame: Array) -> Any:
        import pandas as pd  # only the scikit-learn runtime builds DataFrames

        if self._columns is None:
            self._columns = pd.Index(self.signature.names)
        df = pd.DataFrame(frame, columns=self._columns, copy=False)
        if self._casts:
            try:
                df = df.astype(self._casts)
            except (ValueError, TypeError) as e:
                raise ModelInputError(f"values do not fit the signature's dtypes: {e}") from e
        return df

    def _predict(
        self,
        predict: Callable[[Any], Any],
        predict_proba: Callable[[Any], Any] | None,
        X: Any,
        want_proba: bool,
    ) -> tuple[Array, Array | None]:
        proba: Array | None = None
        if predict_proba is not None and self.has_proba and (want_proba or self.labels_from_proba):
            proba = np.asarray(predict_proba(X), dtype=np.float64)
        if self.labels_from_proba and proba is not None and self.classes is not None:
            return self.classes[np.argmax(proba, axis=1)], proba
        return np.asarray(predict(X)), proba

    def predict(self, frame: Array, want_proba: bool) -> Prediction:
        """Predict every row of `frame`; raises ModelInputError when the model rejects the values."""
        if len(frame) <= CHUNK_ROWS:
            return self._predict_rows(frame, want_proba)
        parts = [
            self._predict_rows(frame[start : start + CHUNK_ROWS], want_proba)
            for start in range(0, len(frame), CHUNK_ROWS)
        ]
        proba = parts[0].proba
        return Prediction(
            labels=np.concatenate([p.labels for p in parts]),
            proba=None if proba is None else np.concatenate([p.proba for p in parts if p.proba is not None]),
        )

    def _predict_rows(self, frame: Array, want_proba: bool) -> Prediction:
        matrix = self._matrix
        try:
            if matrix is None:
                labels, proba = self._predict(
                    self._frame_methods.predict,
                    self._frame_methods.predict_proba,
                    self.dataframe(frame),
                    want_proba,
                )
            else:
                with warnings.catch_warnings():
                    # Expected on this path: steps were fitted on a DataFrame (see module docstring).
                    warnings.filterwarnings(
                        "ignore", message="X does not have valid feature names", category=UserWarning
                    )
                    labels, proba = self._predict(matrix.predict, matrix.predict_proba, frame, want_proba)
        except (ValueError, OverflowError) as e:
            raise ModelInputError(str(e)) from e
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels.ravel()
        if not self.signature.classification:
            labels = labels.astype(np.float64, copy=False)
        return Prediction(labels=labels, proba=proba)

    def metadata_v2(self) -> dict[str, Any]:
        sig = self.signature
        outputs: list[dict[str, Any]] = [
            {"name": OUTPUT_PREDICT, "datatype": self.label_datatype, "shape": [-1]}
        ]
        if self.has_proba and self.classes is not None:
            outputs.append({"name": OUTPUT_PROBA, "datatype": "FP64", "shape": [-1, len(self.classes)]})
        doc: dict[str, Any] = {
            "name": self.name,
            "versions": [self.version],
            "platform": "sklearn",
            "inputs": [{"name": f.name, "datatype": f.datatype, "shape": [-1]} for f in sig.features],
            "outputs": outputs,
            "parameters": {
                "task": sig.task,
                "sha256": self.sha256,
                "content_type": "pd",
                "runtime": self.runtime,
            },
        }
        if self.classes is not None:
            doc["parameters"]["classes"] = self.classes.tolist()
        return doc


def _plan(blob: bytes, meta: Mapping[str, Any]) -> tuple[arrayplan.Plan | None, str]:
    """The array plan of a verified model file, or None and why scikit-learn must run it."""
    try:
        signature = Signature.from_metadata(meta)
    except SignatureError as e:
        return None, str(e)
    if not signature.numeric:
        return None, "not every feature is numeric"
    try:
        return arrayplan.compile_blob(blob, signature.names), ""
    except arrayplan.Unsupported as e:
        return None, str(e)
