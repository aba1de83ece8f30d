"""`train`: load and prepare the data, fit, evaluate on held-out rows, check gates, write the artifact.

The artifact goes to `<spec.output.uri>/<spec.model>/<trainingjob name>` (see
`mlops_contract.storage.artifact_uri`); running again overwrites it with the same content for the
same data, since every random choice is seeded. A model that fails its gates is still written
and the run succeeds: the gates' verdict is part of the result (`gatesPassed`, `failedGates`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_contract import artifact, drift, storage
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_contract.checks import check_spec, primary_metric
from mlops_contract.estimators import Task
from mlops_trainer.config import TrainerConfig
from mlops_trainer.data import Dataset, SplitData
from mlops_trainer.errors import BadInput, writing_output
from mlops_trainer.logs import log, phase
from mlops_trainer.metrics import calibration, evaluate
from mlops_trainer.pipeline import build_model, resolve_params, run_estimator
from mlops_trainer.prepared import load_split


def json_scalar(value: Any) -> Any:
    """numpy scalars to Python ones (class labels, predictions)."""
    return value.item() if isinstance(value, np.generic) else value


def signature(ds: Dataset, classes: list[Any] | None) -> dict[str, Any]:
    sig: dict[str, Any] = {
        "task": ds.task,
        "features": [{"name": str(c), "dtype": ds.dtype_of(str(c))} for c in ds.X.columns],
        "target": ds.target,
    }
    if classes is not None:
        sig["classes"] = classes
    return sig


def reference(ds: Dataset, X_train: pd.DataFrame, predictions: Any) -> dict[str, Any]:
    """Drift reference: each raw training feature, and the model's predictions on the training rows."""
    categorical = set(ds.categorical_all)
    features = {
        str(c): drift.categorical_reference(X_train[c].dropna())
        if c in categorical
        else drift.numeric_reference(X_train[c])
        for c in X_train.columns
    }
    prediction = (
        drift.categorical_reference(predictions)
        if ds.task == "classification"
        else drift.numeric_reference(predictions)
    )
    return {"features": features, "prediction": prediction}


def failed_gates(spec: TrainingJobSpec, metrics: Mapping[str, float]) -> list[str]:
    failed = []
    for gate in spec.evaluation.gates or []:
        value = metrics.get(gate.metric)
        if value is None:
            failed.append(f"{gate.metric} {gate.op} {gate.threshold:g} (not computed)")
        elif not gate.holds(value):
            failed.append(f"{gate.metric} {gate.op} {gate.threshold:g} (was {value:.4g})")
    return failed


def write_model(uri: str, model: Any, metadata: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Write the artifact to a pvc:// directory in place, or to s3:// through a scratch directory."""
    with writing_output(uri, "the artifact"):
        if uri.startswith("pvc://"):
            return artifact.write_artifact(
                storage.local_path(uri, storage.default_pvc_root(env)), model, metadata
            )
        with tempfile.TemporaryDirectory(prefix="mlops-artifact-") as scratch:
            written = artifact.write_artifact(scratch, model, metadata)
            storage.upload(scratch, uri, env)
            return written


def score_baseline(
    spec: TrainingJobSpec, split: SplitData, task: Task, env: Mapping[str, str]
) -> tuple[dict[str, Any] | None, list[str]]:
    """spec.evaluation.baseline's metrics on this run's held-out rows, so the new version can be
    compared with it on the same data: ({"modelVersion", "metrics"}, warnings). A baseline that
    cannot be fetched, verified or scored is reported as a warning; it never fails the run."""
    from mlops_trainer.verify import local_artifact

    baseline = spec.evaluation.baseline
    if baseline is None:
        return None, []
    try:
        with tempfile.TemporaryDirectory(prefix="mlops-baseline-") as scratch:
            directory = local_artifact(baseline.uri, Path(scratch), env)
            model, _meta = artifact.load_verified(directory, baseline.sha256.lower())
        classes = [json_scalar(c) for c in model.classes_] if task == "classification" else []
        metrics, warnings = run_estimator(
            "evaluate baseline", lambda: evaluate(model, split.X_test, split.y_test, task, classes)
        )
    except Exception as e:  # a missing or incompatible baseline is only a warning
        return None, [f"baseline {baseline.model_version} not scored: {e}"]
    return {"modelVersion": baseline.model_version, "metrics": metrics}, list(warnings)


def run_train(config: TrainerConfig, env: Mapping[str, str]) -> dict[str, Any]:
    """Train, evaluate and write the artifact; return the result document."""
    import sklearn

    spec = config.spec
    started = time.perf_counter()
    problems = check_spec(spec)
    if problems:
        raise BadInput("; ".join(problems))
    uri = storage.artifact_uri(spec.output.uri, spec.model, config.name)
    params = resolve_params(spec, config.params)

    notes: list[str] = []
    reads: list[dict[str, Any]] = []
    ds, split = load_split(config, env, notes, reads)

    model = build_model(ds, spec, params)
    with phase("fit", estimator=spec.estimator.class_name):
        _, fit_warnings = run_estimator("fit", lambda: model.fit(split.X_train, split.y_train))
    classes = [json_scalar(c) for c in model.classes_] if ds.task == "classification" else None

    with phase("evaluate") as info:
        metrics, eval_warnings = run_estimator(
            "evaluate", lambda: evaluate(model, split.X_test, split.y_test, ds.task, classes or [])
        )
        info.update(metrics=metrics)
    calibrated = None
    if ds.task == "classification":
        calibrated, _ = run_estimator("calibrate", lambda: calibration(model, split.X_test, split.y_test))
    metric = primary_metric(spec, ds.task)
    if metric not in metrics:
        raise BadInput(f"the primary metric {metric} could not be computed on the held-out rows")
    score = metrics[metric]
    failed = failed_gates(spec, metrics)
    baseline: dict[str, Any] | None = None
    baseline_warnings: list[str] = []
    if spec.evaluation.baseline is not None:
        with phase("baseline", modelVersion=spec.evaluation.baseline.model_version) as info:
            baseline, baseline_warnings = score_baseline(spec, split, ds.task, env)
            info.update(metrics=baseline and baseline["metrics"], warnings=baseline_warnings)

    metadata: dict[str, Any] = {
        "model": spec.model,
        "trainingJob": config.name,
        "namespace": config.namespace,
        "signature": signature(ds, classes),
        "metrics": metrics,
        "primaryMetric": metric,
        "score": score,
        "gates": [g.to_dict() for g in spec.evaluation.gates or []],
        "gatesPassed": not failed,
        "failedGates": failed,
        "params": params,
        "estimator": spec.estimator.class_name,
        "dataDigest": ds.digest,
        "dataUri": spec.data.source.uri,
        "extraDataUris": [s.uri for s in spec.data.extra_sources or []],
        # What this run read: the raw sources, or the prepared data (whose manifest lists the
        # raw reads of the prepare step) with its sha256 (issue #23).
        "dataReads": reads,
        "prepared": config.prepared.model_dump() if config.prepared else None,
        "dataSources": list(ds.sources),
        "rows": ds.row_count,
        "trainRows": len(split.X_train),
        "testRows": len(split.X_test),
        "trainedAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "sklearnVersion": sklearn.__version__,
        "trainerImage": config.trainer_image,
        "warnings": [
            *notes,
            *fit_warnings,
            *(w for w in eval_warnings if w not in fit_warnings),
            *baseline_warnings,
        ],
        "baseline": baseline,
        "reference": reference(ds, split.X_train, model.predict(split.X_train)),
        "calibration": calibrated,
    }
    with phase("write", artifactUri=uri):
        written = write_model(uri, model, metadata, env)
    log(
        "Trained model",
        phase="done",
        model=spec.model,
        metric=metric,
        score=score,
        gatesPassed=not failed,
        seconds=round(time.perf_counter() - started, 3),
    )
    return {
        "ok": True,
        "metrics": metrics,
        "primaryMetric": metric,
        "score": score,
        "gatesPassed": not failed,
        "failedGates": failed,
        "sha256": written["sha256"],
        "artifactUri": uri,
        "dataDigest": ds.digest,
        "reads": reads,
        "dataSources": list(ds.sources),
        "params": params,
        "signature": metadata["signature"],
        **({"baseline": baseline} if baseline else {}),
        **({"notes": notes} if notes else {}),
    }
