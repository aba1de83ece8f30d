"""Pure builder of the TrainingJob a fired retraining trigger creates (issue #8).

Inputs: the InferenceService body (names, owner reference), its parsed spec, the trigger's
decision (run name, trigger, why), the TrainingJob named by spec.retraining.fromTrainingJob
(read by the caller; None with an inline template) and the ModelVersion being served (None
when nothing is). No I/O, clock or randomness.

Invariants:
- The name is the trigger's deterministic `<isvc>-retrain-<count>` (monitor.triggers), so a
  lost status write recreates the same name and AlreadyExists means done.
- The run is owned by the InferenceService (garbage-collected with it) and labelled with it,
  so its runs can be listed; its ModelVersion is not owned by it (a version outlives its run).
- The spec is the template (or a copy of fromTrainingJob's spec) with the model filled in,
  the labelled prediction log appended to the data once (includeFeedback), and the served
  version as the evaluation baseline; it is validated as a TrainingJob spec here, so the API
  server never sees a run the operator could not itself parse.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from mlops_contract.api.common import API_VERSION, GROUP, LABEL_INFERENCE_SERVICE
from mlops_contract.api.inferenceservice import InferenceServiceSpec
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_operator.build.common import labels, owner_reference
from mlops_operator.build.inferenceservice import prediction_log_secret, prediction_log_uri

COMPONENT: Final = "retraining"
ANNOTATION_TRIGGER: Final = f"{GROUP}/trigger"
ANNOTATION_REASON: Final = f"{GROUP}/reason"
# Annotations are small; the trigger's message is for humans and is cut, not refused.
REASON_MAX: Final = 1000


class SourceNotFound(LookupError):
    """spec.retraining.fromTrainingJob names a TrainingJob that does not exist."""


def retraining_base(spec: InferenceServiceSpec, source: Mapping[str, Any] | None) -> dict[str, Any]:
    """The spec a run starts from: the inline template, else the fromTrainingJob's spec.

    Raises SourceNotFound when the spec names a TrainingJob and `source` is None.
    """
    retraining = spec.retraining
    if retraining is None:
        raise ValueError("the InferenceService has no spec.retraining")
    if retraining.template is not None:
        return retraining.template.to_dict()
    if source is None:
        raise SourceNotFound(f"retraining source TrainingJob {retraining.from_training_job} not found")
    return dict(source["spec"])


def retraining_spec(
    spec: InferenceServiceSpec,
    base: Mapping[str, Any],
    feedback_uri: str | None,
    served: Mapping[str, Any] | None = None,
    feedback_secret: str | None = None,
) -> dict[str, Any]:
    """The TrainingJob spec (camelCase) of a retraining run.

    `base`: `retraining_base`. `model` defaults to the InferenceService's model. With
    includeFeedback and a `feedback_uri` (build.inferenceservice.prediction_log_uri: the
    directory the servers write feedback-*.jsonl to), that directory is appended to
    data.extraSources as format jsonl (with `feedback_secret` as its secretRef for s3://), once. `served`, the ModelVersion being served, becomes
    evaluation.baseline: the run scores it on its own held-out rows so promotion compares the
    two versions on the same data. `base` is never modified.
    Raises pydantic.ValidationError (a ValueError) when the result is not a valid TrainingJob spec.
    """
    out: dict[str, Any] = copy.deepcopy(dict(base))
    if not out.get("model"):
        out["model"] = spec.model
    retraining = spec.retraining
    if retraining is not None and retraining.include_feedback and feedback_uri:
        data = out.setdefault("data", {})
        extra = [dict(s) for s in data.get("extraSources") or []]
        if not any(s.get("uri") == feedback_uri for s in extra):
            extra.append(
                {"uri": feedback_uri, "format": "jsonl"}
                | ({"secretRef": {"name": feedback_secret}} if feedback_secret else {})
            )
        data["extraSources"] = extra
    artifact = ((served or {}).get("spec") or {}).get("artifact") or {}
    if served is not None and artifact.get("uri") and artifact.get("sha256"):
        out.setdefault("evaluation", {})["baseline"] = {
            "modelVersion": served["metadata"]["name"],
            "uri": artifact["uri"],
            "sha256": artifact["sha256"],
        }
        if artifact.get("secretRef"):
            out["evaluation"]["baseline"]["secretRef"] = dict(artifact["secretRef"])
    TrainingJobSpec.model_validate(out)
    return out


def retraining_job(
    isvc: Mapping[str, Any],
    spec: InferenceServiceSpec,
    *,
    name: str,
    trigger: str,
    reason: str,
    source: Mapping[str, Any] | None,
    served: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The retraining TrainingJob `name`, created because `trigger` fired for `reason`.

    Raises SourceNotFound (fromTrainingJob missing) or pydantic.ValidationError (not a valid
    TrainingJob spec).
    """
    base = retraining_base(spec, source)
    assert spec.retraining is not None  # retraining_base refused a spec without one
    include = spec.retraining.include_feedback
    feedback = prediction_log_uri(isvc, spec, served) if served is not None and include else None
    secret = prediction_log_secret(spec, served) if feedback is not None and served is not None else None
    meta = isvc["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels(COMPONENT, meta["name"], spec.model, **{LABEL_INFERENCE_SERVICE: meta["name"]}),
            "annotations": {ANNOTATION_TRIGGER: trigger, ANNOTATION_REASON: reason[:REASON_MAX]},
            "ownerReferences": [owner_reference(isvc)],
        },
        "spec": retraining_spec(spec, base, feedback, served, secret),
    }
