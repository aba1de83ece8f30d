"""ModelVersion (mv): an immutable, verified model in the registry, with lineage and stage."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from mlops_contract.api.common import (
    DNS1123_LABEL,
    DNS_LABEL,
    SHA256_HEX,
    Condition,
    FreeForm,
    Gate,
    ScalarValue,
    Spec,
    Status,
    cel,
    condition_list_field,
    name_validation,
)
from mlops_contract.api.trainingjob import OUTPUT_URI_PATTERN, SecretReference

KIND: Final = "ModelVersion"
PLURAL: Final = "modelversions"
SINGULAR: Final = "modelversion"
SHORT_NAMES: Final = ["mv"]


class Artifact(Spec):
    """The model file and how to check it."""

    uri: str = Field(
        description="Directory holding model.skops and model.json: pvc://<claim>/<path> or s3://<bucket>/<prefix>.",
        pattern=OUTPUT_URI_PATTERN,
        max_length=2048,
    )
    format: Literal["skops"] = Field(
        "skops", description="Serialisation format; only skops (safe, no pickle) is accepted."
    )
    sha256: str = Field(
        description="Hex sha256 of model.skops; verification and the server refuse any other file.",
        pattern=SHA256_HEX,
    )
    secret_ref: SecretReference | None = Field(
        None,
        description="Credentials for an s3:// artifact, given to the verification pod and the serving pods' artifact fetch.",
    )


class Feature(Spec):
    """One input feature of the model."""

    name: str = Field(description="Column name.", max_length=256)
    dtype: str = Field(
        description="pandas dtype of the column at training time, e.g. float64, int64, object.", max_length=64
    )


class Signature(Spec):
    """What the model takes and returns."""

    task: Literal["classification", "regression"] = Field(description="classification or regression.")
    features: list[Feature] = Field(
        description="Input features, in the order the model expects them.", min_length=1, max_length=10000
    )
    target: str | None = Field(
        None, max_length=256, description="Name of the target column at training time."
    )
    classes: list[ScalarValue] | None = Field(
        None, max_length=10000, description="Class labels (classification)."
    )


class SourceRows(Spec):
    """What the training run read from one data source (its own record)."""

    uri: str = Field(max_length=2048, description="The data source's URI, as in the TrainingJob's spec.")
    rows: int = Field(
        ge=0,
        description="Rows read from it, before cleaning; a prediction log counts its labelled rows, each once.",
    )


class Source(Spec):
    """Lineage: how the model was made."""

    training_job: str | None = Field(
        None, max_length=253, description="The TrainingJob that produced this version."
    )
    data_digest: str | None = Field(None, max_length=71, description="sha256 of the prepared training table.")
    data_uri: str | None = Field(None, max_length=2048, description="The training data's source URI.")
    trainer_image: str | None = Field(
        None, max_length=512, description="Image of the trainer that produced the artifact."
    )
    estimator: str | None = Field(None, max_length=128, description="Estimator class.")
    params: FreeForm | None = Field(
        None, description="The estimator parameters used (best trial when tuned)."
    )
    data_sources: list[SourceRows] | None = Field(
        None,
        max_length=64,
        description="What the run read: rows per data source (main first, then extraSources), as the trainer counted them.",
    )


class BaselineScore(Spec):
    """Another version's metrics on this version's held-out rows."""

    model_version: str = Field(
        description="The version scored (e.g. the one served at training time).",
        pattern=DNS_LABEL,
        max_length=253,
    )
    metrics: dict[str, float] = Field(description="Its evaluation metrics on this version's held-out rows.")


class ModelVersionSpec(Spec):
    """A model version. Immutable once created: a different model is a new version."""

    model: str = Field(description="Model this version belongs to.", pattern=DNS_LABEL, max_length=40)
    version: int = Field(description="Version number, unique and increasing per model.", ge=1, le=1_000_000)
    artifact: Artifact = Field(description="The model file.")
    signature: Signature | None = Field(
        None, description="Inputs and outputs; read from model.json when absent."
    )
    metrics: dict[str, float] | None = Field(None, description="Evaluation metrics on held-out data.")
    baseline: BaselineScore | None = Field(
        None,
        description="The served version's metrics on the same held-out rows; promotion compares with these when they name the served version.",
    )
    primary_metric: str | None = Field(
        None, max_length=63, description="The metric that ranks versions (e.g. accuracy)."
    )
    gates: list[Gate] | None = Field(
        None, max_length=32, description="Gates checked before the version may be served."
    )
    source: Source | None = Field(None, description="Lineage.")
    description: str | None = Field(None, max_length=4096, description="Free text for reviewers.")


class ModelVersionStatus(Status):
    """Observed state of a ModelVersion."""

    phase: Literal["Pending", "Verifying", "Verified", "Failed"] | None = Field(
        None, description="Pending, Verifying, Verified (servable) or Failed."
    )
    observed_generation: int | None = Field(
        None, description="The metadata.generation this status describes."
    )
    conditions: list[Condition] | None = condition_list_field(
        "Ready, Reconciling, Stalled, ArtifactVerified, GatesPassed."
    )
    stage: Literal["Candidate", "Production", "Archived"] | None = Field(
        None,
        description="Candidate (not served), Production (served by an InferenceService) or Archived (superseded).",
    )
    served_by: list[str] | None = Field(None, description="InferenceServices serving this version.")
    score: float | None = Field(
        None,
        description="Value of the primary metric, to 4 significant digits (the full value is in the metrics).",
    )
    verified_at: str | None = Field(
        None, description="When verification succeeded.", json_schema_extra={"format": "date-time"}
    )
    verification_job: str | None = Field(None, description="Name of the verification Job.")
    serving_runtime: Literal["arrays", "sklearn"] | None = Field(
        None,
        description="How the inference server runs this model, as found by verification: arrays (numpy "
        "only, fast start; verification checked it predicts what scikit-learn predicts) or sklearn.",
    )
    approved_by: str | None = Field(
        None, description="Who approved promotion (from the mlops.dev/approved-by annotation)."
    )
    message: str | None = Field(None, description="Last error or outcome, human readable.")


ROOT_VALIDATIONS: Final = [
    name_validation(
        DNS1123_LABEL,
        "a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, no dots (its verification Job and labels are made from it)",
    ),
    cel(
        "self.metadata.name.size() <= 52",
        "name must be at most 52 characters (verification Jobs append a suffix)",
    ),
]
SPEC_VALIDATIONS: Final = [
    cel(
        "self == oldSelf",
        "ModelVersion spec is immutable; register a new version instead",
        reason="FieldValueForbidden",
    ),
]

PRINTER_COLUMNS: Final[list[dict[str, Any]]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {"name": "Version", "type": "integer", "jsonPath": ".spec.version"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
    {"name": "Metric", "type": "string", "jsonPath": ".spec.primaryMetric", "priority": 1},
    {"name": "Score", "type": "number", "jsonPath": ".status.score"},
    {"name": "Source", "type": "string", "jsonPath": ".spec.source.trainingJob", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
