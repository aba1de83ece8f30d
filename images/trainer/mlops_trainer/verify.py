"""`verify`: prove an artifact is the one recorded and that it predicts.

Steps: `artifact.load_verified` (sha256 of model.skops against the expected digest and the
metadata; skops loads only trusted types), then a few sample rows built from the signature and
the training reference statistics (row 0: means / most frequent categories, row 1: minima /
second categories, row 2: maxima / third), predicted; the predictions must be one per row, and
in the signature's classes (classification) or finite (regression).

Then the array plan (`mlops_contract.arrayplan`): when the inference server could run this
file from its arrays instead of scikit-learn, the plan is compared with scikit-learn on the
sample rows and on rows spread over each feature's training range (labels equal, probabilities
and values to 1e-9 relative). The result's `runtime` says which runtime the server may use:
"arrays" only when they agreed. A disagreement (a bug of ours, never the user's) is logged and
the version is served by scikit-learn: never refused, never served other numbers for it.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from mlops_contract import arrayplan, artifact, storage
from mlops_trainer.errors import BadInput, Transient, VerificationFailed
from mlops_trainer.logs import log, phase

SAMPLE_ROWS: Final = 3
PLAN_ROWS: Final = 64
PLAN_TOLERANCE: Final = 1e-9


def _numeric_value(ref: Mapping[str, Any] | None, row: int) -> float:
    if not ref or not ref.get("count"):
        return 0.0
    if ref.get("kind") == "categorical":
        categories = ref.get("categories") or ["0"]
        try:
            return float(categories[row % len(categories)])
        except ValueError:
            return 0.0
    key = ("mean", "min", "max")[row % 3]
    return float(ref.get(key, 0.0))


def _text_value(ref: Mapping[str, Any] | None, row: int) -> str:
    categories = (ref or {}).get("categories") or [""]
    return str(categories[row % len(categories)])


def sample_input(
    signature: Mapping[str, Any], references: Mapping[str, Any], rows: int = SAMPLE_ROWS
) -> pd.DataFrame:
    """Rows typed as the signature says, with values taken from the reference statistics."""
    columns: dict[str, pd.Series] = {}
    for feature in signature["features"]:
        name, dtype = str(feature["name"]), str(feature["dtype"])
        ref = references.get(name)
        if dtype in ("object", "str", "string", "category"):
            columns[name] = pd.Series([_text_value(ref, i) for i in range(rows)], dtype=object)
        else:
            values = [_numeric_value(ref, i) for i in range(rows)]
            if dtype.startswith(("int", "uint")):
                columns[name] = pd.Series([round(v) for v in values], dtype=dtype)
            else:
                columns[name] = pd.Series(values, dtype="float64")
    return pd.DataFrame(columns)


def local_artifact(uri: str, scratch: Path, env: Mapping[str, str]) -> Path:
    """The artifact directory of `uri` on this machine: its mount for pvc://, a download for s3://."""
    try:
        if uri.startswith("pvc://"):
            return storage.local_path(uri, storage.default_pvc_root(env))
        if uri.startswith("s3://"):
            return storage.fetch(uri, scratch, env)
    except storage.InvalidUri as e:
        raise BadInput(f"--artifact: {e}") from e
    except storage.FetchError as e:
        # Missing, refused (credentials) or no such bucket: permanent, but not a tampered
        # artifact; the ModelVersion says VerificationError with the URI and the cause.
        raise (Transient(str(e)) if e.transient else BadInput(str(e))) from e
    return Path(uri)


def _check_predictions(model: Any, X: pd.DataFrame, signature: Mapping[str, Any]) -> list[Any]:
    predictions = np.asarray(model.predict(X))
    if predictions.shape != (len(X),):
        raise VerificationFailed(f"model returned predictions of shape {predictions.shape} for {len(X)} rows")
    values = [p.item() if isinstance(p, np.generic) else p for p in predictions]
    if signature.get("task") == "classification":
        classes = [str(c) for c in signature.get("classes") or []]
        strange = [v for v in values if str(v) not in classes]
        if strange:
            raise VerificationFailed(
                f"model predicted {strange[0]!r}, which is not one of the classes {classes}"
            )
        if hasattr(model, "predict_proba"):
            shape = np.asarray(model.predict_proba(X)).shape
            if shape != (len(X), len(classes)):
                raise VerificationFailed(
                    f"predict_proba returned shape {shape}, expected {(len(X), len(classes))}"
                )
    elif not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise VerificationFailed(f"model returned non-finite predictions: {values}")
    return values


def run_verify(artifact_location: str, sha256: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Verify the artifact at a local directory, pvc:// or s3:// URI; result {"ok", "signature", "predictions"}."""
    with tempfile.TemporaryDirectory(prefix="mlops-verify-") as scratch:
        directory = local_artifact(artifact_location, Path(scratch), env)
        with phase("load", artifact=artifact_location):
            try:
                blob, meta = artifact.read_verified(directory, sha256.lower())
                model = artifact.load_model_bytes(blob)
            except artifact.ArtifactError as e:
                raise VerificationFailed(str(e)) from e
    signature = meta.get("signature")
    if not isinstance(signature, dict) or not signature.get("features"):
        raise VerificationFailed("model.json has no signature with features")
    references = (meta.get("reference") or {}).get("features") or {}
    X = sample_input(signature, references)
    with phase("predict", rows=len(X)):
        try:
            predictions = _check_predictions(model, X, signature)
        except VerificationFailed:
            raise
        except Exception as e:  # any failure to predict means the artifact is unusable
            raise VerificationFailed(
                f"model failed to predict on sample rows: {type(e).__name__}: {e}"
            ) from e
    with phase("array plan"):
        runtime = check_array_plan(model, blob, signature, references)
    log("Verified artifact", artifact=artifact_location, sha256=meta["sha256"], runtime=runtime)
    return {
        "ok": True,
        "sha256": meta["sha256"],
        "signature": signature,
        "predictions": predictions,
        "runtime": runtime,
    }


def plan_input(
    signature: Mapping[str, Any], references: Mapping[str, Any], rows: int = PLAN_ROWS
) -> pd.DataFrame:
    """The sample rows, then rows drawn evenly over each numeric feature's training [min, max]."""
    sample = sample_input(signature, references)
    rng = np.random.default_rng(0)
    spread: dict[str, Any] = {}
    for name in sample.columns:
        ref = references.get(name) or {}
        low, high = float(ref.get("min", -1.0)), float(ref.get("max", 1.0))
        values = rng.uniform(low, high, rows - len(sample)) if math.isfinite(high - low) else np.zeros(rows)
        kind = sample[name].dtype.kind
        spread[name] = np.round(values).astype(sample[name].dtype) if kind in "iu" else values
    return pd.concat([sample, pd.DataFrame(spread)], ignore_index=True)


def check_array_plan(
    model: Any, blob: bytes, signature: Mapping[str, Any], references: Mapping[str, Any]
) -> str:
    """ "arrays" when the server may run this file from its arrays (checked here), else "sklearn"."""
    names = [str(f["name"]) for f in signature["features"]]
    try:
        plan = arrayplan.compile_blob(blob, names)
    except arrayplan.Unsupported as e:
        log("The server will run this model with scikit-learn", reason=str(e))
        return "sklearn"
    X = plan_input(signature, references)
    try:
        matrix = X.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        return "sklearn"  # text features: the server never uses a plan for them
    expected, got = np.asarray(model.predict(X)), plan.predict(matrix)
    checks = [("predictions", expected, got)]
    if plan.has_proba and hasattr(model, "predict_proba"):
        checks.append(("probabilities", np.asarray(model.predict_proba(X)), plan.predict_proba(matrix)))
    for what, theirs, ours in checks:
        if theirs.shape != ours.shape:
            same = False
        elif what == "predictions" and plan.classes_ is not None:
            same = bool(np.array_equal(theirs, ours))
        else:
            same = bool(np.allclose(theirs, ours, rtol=PLAN_TOLERANCE, atol=1e-12))
        if not same:
            log(
                "The array runtime disagrees with scikit-learn on this model; the server will run it "
                "with scikit-learn (a bug of mlops-operator: please report it)",
                estimator=plan.estimator,
                output=what,
            )
            return "sklearn"
    return "arrays"
