"""TrainingJob (tj): prepare data, train, tune and evaluate in pods; produce a ModelVersion."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field

from mlops_contract.api.common import (
    DNS1123_LABEL,
    DNS_LABEL,
    SHA256_HEX,
    AnyValue,
    Condition,
    FreeForm,
    Gate,
    PodOptions,
    Spec,
    Status,
    cel,
    condition_list_field,
    name_validation,
    validations,
)
from mlops_contract.estimators import BUILTIN_DATASETS, ESTIMATORS

KIND: Final = "TrainingJob"
PLURAL: Final = "trainingjobs"
SINGULAR: Final = "trainingjob"
SHORT_NAMES: Final = ["tj"]

# pvc://<claim>/<path>, s3://<bucket>/<key>, https://..., builtin:<name>
URI_PATTERN: Final = r"^(builtin:[a-z_]+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/.*)?|https?://.+)$"
OUTPUT_URI_PATTERN: Final = (
    r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/.*)?)$"
)


class SecretReference(Spec):
    """A Secret in the same namespace whose keys become the environment of the pods that read or write this location (envFrom): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, S3_USE_VIRTUAL_BUCKET for s3://; MLOPS_HTTP_AUTHORIZATION for https://. Without one, the SDK's default credential chain (e.g. workload identity) applies. The operator never reads it."""

    name: str = Field(description="Name of the Secret.", pattern=DNS_LABEL, max_length=253)


class DataSource(Spec):
    """Where a table of training data comes from."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.uri.startsWith('builtin:') || self.uri.substring(8) in "
                + repr(sorted(BUILTIN_DATASETS)),
                "builtin datasets are: " + ", ".join(sorted(BUILTIN_DATASETS)),
                field_path=".uri",
            )
        )
    )

    uri: str = Field(
        description=(
            "Location of the data: builtin:<iris|wine|breast_cancer|diabetes|digits> (datasets scikit-learn ships), "
            "pvc://<claim>/<path> (a file or directory on a PersistentVolumeClaim), s3://<bucket>/<key> or https://<url>."
        ),
        pattern=URI_PATTERN,
        max_length=2048,
    )
    format: Literal["csv", "parquet", "jsonl"] = Field(
        "csv",
        description="File format: csv, parquet, or jsonl (the server's labelled prediction log). Ignored for builtin: sources.",
    )
    secret_ref: SecretReference | None = Field(
        None, description="Credentials for s3:// and https:// sources."
    )


class MissingValues(Spec):
    """How missing values are imputed."""

    numeric: Literal["mean", "median", "most_frequent", "constant", "drop"] = Field(
        "median", description="Strategy for numeric columns; drop removes rows with a missing value."
    )
    categorical: Literal["most_frequent", "constant", "drop"] = Field(
        "most_frequent", description="Strategy for categorical columns; constant fills with 'missing'."
    )


class Prepare(Spec):
    """Data preparation: a scikit-learn ColumnTransformer built from these choices. Columns are numeric or categorical by dtype unless listed in `categorical`."""

    missing: MissingValues = Field(
        default_factory=MissingValues,
        description="Imputation of missing values.",
        json_schema_extra={"default": {}},
    )
    categorical: list[str] | None = Field(
        None, description="Columns to treat as categorical even if numeric.", max_length=1000
    )
    encoding: Literal["onehot", "ordinal"] = Field("onehot", description="Encoding of categorical columns.")
    scaling: Literal["standard", "minmax", "robust", "none"] = Field(
        "standard", description="Scaling of numeric columns."
    )


class Split(Spec):
    """Hold-out split for evaluation."""

    test_size: float = Field(0.2, gt=0, lt=1, description="Fraction of rows held out for evaluation.")
    stratify: bool = Field(True, description="Stratify the split by the target (classification only).")
    seed: int = Field(42, ge=0, description="Random seed of the split (and of seeded estimators).")


class Data(Spec):
    """The training data and how to prepare it."""

    source: DataSource = Field(description="The main data source.")
    extra_sources: list[DataSource] | None = Field(
        None,
        max_length=16,
        description="More tables appended to the main one (same columns), e.g. the labelled prediction log on retraining.",
    )
    target: str | None = Field(
        None,
        max_length=256,
        description="Target column. Required for file sources; builtin: sources use their own target ('target').",
    )
    features: list[str] | None = Field(
        None, max_length=10000, description="Feature columns to use; default: every column except the target."
    )
    min_rows: int = Field(
        10, ge=1, description="Fewer rows than this (after dropping) fails the job as bad input."
    )
    prepare: Prepare = Field(
        default_factory=Prepare, description="Preparation of the data.", json_schema_extra={"default": {}}
    )
    split: Split = Field(
        default_factory=Split, description="Hold-out split.", json_schema_extra={"default": {}}
    )


class Estimator(Spec):
    """The scikit-learn estimator to fit, from an allow-list."""

    class_name: Literal[tuple(sorted(ESTIMATORS))] = Field(  # type: ignore[valid-type]  # enum built from the allow-list
        alias="class",
        description="Estimator class, from the allow-list (e.g. RandomForestClassifier, Ridge).",
    )
    params: FreeForm | None = Field(
        None,
        description="Constructor parameters, validated against the estimator's parameters before launch.",
    )


class Tuning(Spec):
    """Hyperparameter search: trials run in parallel pods (an Indexed Job); the best is refit and evaluated."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.parallelism <= self.maxTrials",
                "parallelism must not exceed maxTrials",
                field_path=".parallelism",
            ),
            cel(
                "!has(self.minTrials) || self.minTrials <= self.maxTrials",
                "minTrials must not exceed maxTrials",
                field_path=".minTrials",
            ),
        )
    )

    strategy: Literal["grid", "random"] = Field(
        "grid", description="grid tries every combination (up to maxTrials); random samples maxTrials."
    )
    space: dict[str, list[AnyValue]] = Field(
        description="Parameter name to the list of values to try, e.g. {n_estimators: [50, 100], max_depth: [3, null]}.",
        min_length=1,
    )
    max_trials: int = Field(10, ge=1, le=1000, description="Upper bound on the number of trials.")
    parallelism: int = Field(2, ge=1, le=100, description="Trials running at once (pods).")
    metric: str | None = Field(
        None,
        max_length=63,
        description="Metric to maximise (or minimise for rmse, mae, log_loss); default: the evaluation's primary metric.",
    )
    cv: int = Field(3, ge=2, le=20, description="Cross-validation folds per trial.")
    seed: int = Field(42, ge=0, description="Seed of random search.")
    min_trials: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Trials that must report a score before the best is picked from them; default: every"
        " trial. A trial stopped before it finished (eviction, drain) is re-run by the Job; one that still"
        " has no score when the tuning Job ends is missing, and with fewer scores than this the TrainingJob"
        " fails with reason IncompleteTuning instead of picking a best from an incomplete set.",
    )


def grid_size(space: Mapping[str, Any]) -> int:
    """Number of combinations of `space`: len(sklearn's ParameterGrid(space)), without importing it.

    ValueError("invalid tuning.space: ...") with ParameterGrid's message where it raises (a value
    that is a string or not a list, an empty list). Unlike ParameterGrid it takes no numpy arrays:
    a space from the API holds lists only.
    """
    for key, values in space.items():
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise ValueError(
                f"invalid tuning.space: Parameter grid for parameter {key!r} needs to be a list or a numpy"
                f" array, but got {values!r} (of type {type(values).__name__}) instead. Single values need to"
                " be wrapped in a list with one element."
            )
        if len(values) == 0:
            raise ValueError(
                f"invalid tuning.space: Parameter grid for parameter {key!r} need to be a non-empty sequence,"
                f" got: {values!r}"
            )
    return math.prod(len(values) for values in space.values())


def trial_count(tuning: Tuning) -> int:
    """Number of trials: min(maxTrials, combinations of the space). The operator sizes the tuning Job with it."""
    return min(tuning.max_trials, grid_size(tuning.space))


class Baseline(Spec):
    """An existing model version scored on this run's held-out rows, so the new version can be
    compared with it on the same data. Retraining runs set it to the version being served."""

    model_version: str = Field(description="Name of the ModelVersion.", pattern=DNS_LABEL, max_length=253)
    uri: str = Field(
        description="Its artifact directory (pvc://<claim>/<path> or s3://<bucket>/<prefix>).",
        pattern=OUTPUT_URI_PATTERN,
        max_length=2048,
    )
    sha256: str = Field(
        description="Its artifact's sha256; a mismatch leaves the baseline unscored.", pattern=SHA256_HEX
    )
    secret_ref: SecretReference | None = Field(None, description="Credentials for an s3:// artifact.")


class Evaluation(Spec):
    """How the trained model is judged."""

    primary_metric: str | None = Field(
        None,
        max_length=63,
        description="The metric that ranks model versions; default accuracy (classification) or r2 (regression).",
    )
    gates: list[Gate] | None = Field(
        None, max_length=32, description="Gates the model must pass to be served."
    )
    baseline: Baseline | None = Field(
        None, description="Also score this existing version on the held-out rows (like-for-like comparison)."
    )


class Output(Spec):
    """Where artifacts are written."""

    uri: str = Field(
        "pvc://mlops-artifacts/models",
        pattern=OUTPUT_URI_PATTERN,
        max_length=2048,
        description="Base location; the artifact goes to <uri>/<model>/<trainingjob>/ (pvc://<claim>/<path> or s3://<bucket>/<prefix>).",
    )
    secret_ref: SecretReference | None = Field(
        None,
        description="Credentials for an s3:// output; the ModelVersion's artifact and its verification and serving pods use the same Secret.",
    )


class TrainingJobSpec(PodOptions):
    """Desired state of a TrainingJob. Immutable once created: to train again, create a new TrainingJob."""

    model: str = Field(
        description="Name of the model; the resulting ModelVersion belongs to it.",
        pattern=DNS_LABEL,
        max_length=40,
    )
    task: Literal["classification", "regression"] | None = Field(
        None, description="classification or regression; default: the estimator's task."
    )
    data: Data = Field(description="Training data and its preparation.")
    estimator: Estimator = Field(description="The estimator to fit.")
    tuning: Tuning | None = Field(None, description="Optional hyperparameter search.")
    evaluation: Evaluation = Field(
        default_factory=Evaluation, description="Metrics and gates.", json_schema_extra={"default": {}}
    )
    output: Output = Field(
        default_factory=Output, description="Artifact location.", json_schema_extra={"default": {}}
    )
    backoff_limit: int = Field(
        2, ge=0, le=20, description="Retries of a transient failure (bad input never retries)."
    )
    active_deadline_seconds: int = Field(
        3600, ge=10, le=7 * 24 * 3600, description="Wall-clock limit of the run."
    )


class TrialResult(Status):
    """A finished tuning trial, recorded as soon as the operator sees it (its pod may be deleted later)."""

    index: int = Field(ge=0, description="The trial's completion index in the tuning Job.")
    params: FreeForm | None = Field(None, description="The trial's hyperparameters.")
    score: float = Field(
        description="Mean cross-validation score of the tuning metric (the metric's own sign)."
    )
    metric: str | None = Field(None, description="The tuning metric.")
    duration_seconds: int | None = Field(None, ge=0, description="How long the trial's container ran.")
    pod: str | None = Field(None, description="The pod that ran it.")


class TrainingJobStatus(Status):
    """Observed state of a TrainingJob, written by the operator."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Field(
        None, description="Summary of the conditions: Pending, Running, Succeeded or Failed."
    )
    observed_generation: int | None = Field(
        None, description="The metadata.generation this status describes."
    )
    conditions: list[Condition] | None = condition_list_field(
        "Ready, Reconciling, Stalled, Validated, Trained, ModelRegistered."
    )
    job_name: str | None = Field(None, description="Name of the batch/v1 Job running the training.")
    tuning_job_name: str | None = Field(
        None, description="Name of the Indexed Job running the tuning trials."
    )
    start_time: str | None = Field(
        None, description="When the training started.", json_schema_extra={"format": "date-time"}
    )
    completion_time: str | None = Field(
        None, description="When the training finished.", json_schema_extra={"format": "date-time"}
    )
    progress: str | None = Field(None, description="Trials done / total, e.g. 3/6, while tuning.")
    trials_completed: int | None = Field(None, description="Tuning trials finished.")
    trials_total: int | None = Field(None, description="Tuning trials planned.")
    metrics: dict[str, float] | None = Field(None, description="Evaluation metrics on the held-out split.")
    primary_metric: str | None = Field(None, description="Name of the metric that ranks versions.")
    score: float | None = Field(
        None,
        description="Value of the primary metric, to 4 significant digits (the full value is in the metrics).",
    )
    best_params: FreeForm | None = Field(None, description="Parameters of the best tuning trial.")
    best_trial: int | None = Field(None, description="Index of the best tuning trial.")
    trials: list[TrialResult] | None = Field(
        None,
        max_length=1000,
        description="Finished tuning trials by index, each recorded as soon as it is seen (issue #23).",
    )
    gates_passed: bool | None = Field(None, description="Whether every evaluation gate held.")
    artifact_uri: str | None = Field(None, description="Where the artifact was written.")
    artifact_sha256: str | None = Field(None, description="sha256 of the model file.")
    data_digest: str | None = Field(None, description="sha256 of the prepared training table (lineage).")
    prepared_uri: str | None = Field(
        None, description="Where the prepare step wrote the split data as Parquet (tuned runs, issue #23)."
    )
    prepared_sha256: str | None = Field(
        None, description="sha256 of the prepared data's manifest (which holds each file's sha256)."
    )
    model_version: str | None = Field(None, description="Name of the ModelVersion this run created.")
    message: str | None = Field(None, description="Last error or outcome, human readable.")


ROOT_VALIDATIONS: Final = [
    name_validation(
        DNS1123_LABEL,
        "a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, no dots (Jobs, pods and labels are made from it)",
    ),
    cel("self.metadata.name.size() <= 50", "name must be at most 50 characters (child Jobs append suffixes)"),
]
SPEC_VALIDATIONS: Final = [
    cel(
        "self == oldSelf",
        "TrainingJob spec is immutable; create a new TrainingJob to train again",
        reason="FieldValueForbidden",
    ),
]

PRINTER_COLUMNS: Final[list[dict[str, Any]]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {"name": "Estimator", "type": "string", "jsonPath": ".spec.estimator.class", "priority": 1},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
    {"name": "Metric", "type": "string", "jsonPath": ".status.primaryMetric", "priority": 1},
    {"name": "Score", "type": "number", "jsonPath": ".status.score"},
    {"name": "Version", "type": "string", "jsonPath": ".status.modelVersion"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
