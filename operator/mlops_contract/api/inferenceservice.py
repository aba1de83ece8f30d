"""InferenceService (mlis): serve a ModelVersion, roll out new ones safely, monitor, retrain."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field

from mlops_contract.api.common import (
    DNS1035_LABEL,
    DNS_LABEL,
    Condition,
    PodOptions,
    Spec,
    Status,
    cel,
    condition_list_field,
    name_validation,
    validations,
)
from mlops_contract.api.trainingjob import OUTPUT_URI_PATTERN, SecretReference, TrainingJobSpec

KIND: Final = "InferenceService"
PLURAL: Final = "inferenceservices"
SINGULAR: Final = "inferenceservice"
# Not `isvc`: KServe owns that short name.
SHORT_NAMES: Final = ["mlis"]


class Policy(Spec):
    """Choose the version to serve automatically instead of pinning one."""

    select: Literal["latest", "best"] = Field(
        "latest",
        description="latest: the newest Verified version that passed its gates; best: the one with the best metric.",
    )
    metric: str | None = Field(
        None,
        max_length=63,
        description="Metric for best and for comparing a new version with the served one; default: the version's primary metric.",
    )
    promotion: Literal["auto", "manual"] = Field(
        "auto",
        description="auto rolls out the chosen version; manual waits for the mlops.dev/approved-by annotation on the ModelVersion.",
    )
    min_improvement: float = Field(
        0.0,
        ge=0,
        description="A new version replaces the served one only if its metric is better by at least this much.",
    )


class Autoscaling(Spec):
    """Horizontal autoscaling on CPU (creates an autoscaling/v2 HorizontalPodAutoscaler)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.minReplicas <= self.maxReplicas",
                "minReplicas must not exceed maxReplicas",
                field_path=".minReplicas",
            )
        )
    )

    min_replicas: int = Field(1, ge=1, le=1000, description="Lower bound of replicas.")
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound of replicas.")
    target_cpu_utilization: int = Field(
        70, ge=1, le=100, description="Target average CPU utilisation in percent."
    )


class Batching(Spec):
    """Adaptive micro-batching of concurrent requests into one predict call."""

    max_batch_size: int = Field(64, ge=1, le=4096, description="Most rows merged into one predict call.")
    max_delay_ms: float = Field(
        0,
        ge=0,
        le=1000,
        description="Extra wait to fill a batch; 0 = adaptive (never delays a lone request).",
    )


class Shadow(Spec):
    """Shadow analysis (spec.canary.mode shadow, issue #22): the serving pods mirror a share of
    live requests to the new version, which answers no user; labelled feedback scores both on the
    same requests, and a paired test (McNemar's hypothesis for classification, a sign test on
    absolute errors for regression, each with an always-valid p-value) gives the verdict."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.promoteOn == 'NotWorse' || !has(self.margin)",
                "margin applies only with promoteOn NotWorse",
                field_path=".margin",
            ),
        )
    )

    percent: int = Field(
        100, ge=1, le=100, description="Share of the served requests mirrored to the new version."
    )
    min_pairs: int = Field(
        100,
        ge=10,
        le=1_000_000,
        description="Labelled requests both versions answered before a verdict (classification: rows).",
    )
    promote_on: Literal["Better", "NotWorse"] = Field(
        "Better",
        description="Better: promote only when significantly better; NotWorse: also when significantly at most `margin` worse.",
    )
    margin: float | None = Field(
        None,
        gt=0,
        le=0.5,
        description="With promoteOn NotWorse: what the new version may lose (default 0.02): accuracy for a classifier, a fraction of the champion's mean absolute error for a regressor.",
    )
    deadline_seconds: int = Field(
        3600,
        ge=60,
        le=7 * 86400,
        description="How long the verdict may stay Inconclusive (too few pairs or no significant difference).",
    )
    on_inconclusive: Literal["Rollback", "Promote"] = Field(
        "Rollback", description="What an Inconclusive verdict does at the deadline."
    )
    timeout_ms: int = Field(
        1000, ge=10, le=30000, description="How long a serving pod waits for the new version's answer."
    )


SHADOW_MARGIN: Final = 0.02
# spec.canary.minLabelled when unset.
SPLIT_MIN_LABELLED: Final = 50


class Canary(Spec):
    """Send a share of traffic to a new version first, analyse it, then promote or roll back."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.mode == 'shadow' || !has(self.shadow)",
                "shadow settings need mode shadow",
                field_path=".shadow",
            ),
            cel(
                "self.mode == 'split' || !has(self.minLabelled)",
                "minLabelled applies to the split canary (shadow mode uses shadow.minPairs)",
                field_path=".minLabelled",
            ),
        )
    )

    mode: Literal["split", "shadow"] = Field(
        "split",
        description=(
            "split: the new version serves trafficPercent of the users and is judged on errors and latency; "
            "shadow: it answers no user, the serving pods mirror requests to it and labelled feedback "
            "judges its quality against the served version's (see shadow)."
        ),
    )
    shadow: Shadow | None = Field(None, description="Shadow analysis settings (mode shadow; defaults apply).")
    traffic_percent: int = Field(
        10,
        ge=1,
        le=99,
        description="Split mode: share of replicas (and so of traffic) running the new version.",
    )
    duration_seconds: int = Field(
        120, ge=10, le=86400, description="Split mode: how long the canary is analysed before promotion."
    )
    max_error_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Roll back when the canary's error rate (in shadow mode: on the mirrored requests) significantly exceeds this.",
    )
    max_latency_p95_ms: float | None = Field(
        None, gt=0, description="Split mode: roll back when the canary's p95 latency exceeds this."
    )
    min_requests: int = Field(
        20, ge=0, description="Split mode: requests the canary must serve before it can be promoted."
    )
    min_labelled: int | None = Field(
        None,
        ge=10,
        le=1_000_000,
        description=(
            "Split mode: labelled rows (feedback) each track, canary and stable, must have served since "
            "the analysis started before their accuracy (regression: mean absolute error) is compared; "
            "a canary significantly worse is rolled back. Fewer: judged on errors and latency alone "
            "(default 50)."
        ),
    )


class DriftMonitoring(Spec):
    """Input drift against the training data's reference statistics."""

    method: Literal["psi"] = Field("psi", description="Drift statistic: psi (population stability index).")
    threshold: float = Field(
        0.2, gt=0, description="Drift score above which the service is considered drifted."
    )
    window: int = Field(
        1000, ge=50, le=1_000_000, description="Recent input rows compared with the reference."
    )


class PredictionLog(Spec):
    """The log of predictions (and labels from feedback) kept for retraining."""

    enabled: bool = Field(True, description="Write the prediction log.")
    sample_rate: float = Field(1.0, ge=0, le=1, description="Fraction of requests logged.")
    uri: str | None = Field(
        None,
        pattern=OUTPUT_URI_PATTERN,
        max_length=2048,
        description="Where to write it: pvc://<claim>/<path>, or s3://<bucket>/<prefix> (a sidecar uploads one object per pod and time window); default: the artifact's claim or bucket, under predictions/<namespace>/<name>.",
    )
    secret_ref: SecretReference | None = Field(
        None,
        description="Credentials for an s3:// log (default: the served ModelVersion's artifact secretRef when the log is in the artifact's bucket by default).",
    )
    window_seconds: int = Field(
        60,
        ge=5,
        le=3600,
        description="s3:// only: how often each pod's log is closed and uploaded as one object.",
    )


class Monitoring(Spec):
    """What the operator reads into status.metrics: the serving pods' /metrics, or Prometheus."""

    interval_seconds: int = Field(
        30, ge=5, le=3600, description="Scrape interval (with prometheusUrl: query interval)."
    )
    drift: DriftMonitoring = Field(
        default_factory=DriftMonitoring, description="Drift detection.", json_schema_extra={"default": {}}
    )
    prometheus_url: str | None = Field(
        None,
        pattern=r"^https?://.+",
        max_length=2048,
        description=(
            "Read the serving metrics from this Prometheus (one PromQL query per interval, over the "
            "namespace, pod, inference_service and track labels of manifests/monitoring's PodMonitor) "
            "instead of scraping the pods. Unreachable, failing or without data: the MetricsAvailable "
            "condition says so and canary and metric-driven retraining decisions are held."
        ),
    )
    prediction_log: PredictionLog = Field(
        default_factory=PredictionLog, description="Prediction log.", json_schema_extra={"default": {}}
    )


NamespaceOrAll = Annotated[str, Field(pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$", max_length=63)]


class FeedbackSource(Spec):
    """Pods allowed to post feedback: those of a namespace, or the ones of it with these labels."""

    namespace: str = Field(description="Namespace of the pods.", pattern=DNS_LABEL, max_length=63)
    pod_labels: dict[str, str] | None = Field(
        None,
        description="Only the pods with these labels (matchLabels); default: every pod of the namespace.",
    )


class SecretKey(Spec):
    """A key of a Secret in the InferenceService's namespace."""

    name: str = Field(description="Name of the Secret.", pattern=DNS_LABEL, max_length=253)
    key: str = Field(description="Key in the Secret.", pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)


class Access(Spec):
    """Who may reach the serving pods (issue #19). Prediction is served on port `http`; /metrics
    and feedback on port `monitoring`. A NetworkPolicy per InferenceService admits prediction
    from `predictionFrom`, feedback from `feedbackFrom`, and /metrics from the operator and the
    operator's monitoring namespaces (a NetworkPolicy tells ports apart, not paths: the sources
    of feedback can read /metrics too, and the monitoring namespaces could post feedback: use
    `feedbackToken` to tell them apart)."""

    network_policy: bool = Field(
        True, description="Create the NetworkPolicy (set false when your own policies govern these pods)."
    )
    prediction_from: list[NamespaceOrAll] | None = Field(
        None,
        max_length=64,
        description="Namespaces whose pods may call prediction; ['*'] for every namespace; "
        "default: the InferenceService's own namespace.",
    )
    feedback_from: list[FeedbackSource] | None = Field(
        None,
        max_length=64,
        description="Pods that may post feedback; default: the pods of the InferenceService's own "
        "namespace; [] for none.",
    )
    feedback_token: SecretKey | None = Field(
        None,
        description="A Secret key holding a bearer token feedback must carry "
        "(Authorization: Bearer <token>); the pods read it, the operator never does.",
    )


class DriftTrigger(Spec):
    """Retrain when drift stays above a threshold."""

    threshold: float = Field(0.25, gt=0, description="Drift score that counts as drifted.")
    consecutive: int = Field(
        3, ge=1, le=100, description="Scrapes in a row above the threshold before firing."
    )


class AccuracyTrigger(Spec):
    """Retrain when accuracy from labelled feedback falls too low."""

    min: float = Field(description="Accuracy (classification) below which retraining fires.", ge=0, le=1)
    min_samples: int = Field(50, ge=1, description="Labelled samples needed before the trigger may fire.")


class EstimatedAccuracyTrigger(Spec):
    """Retrain when the label-free accuracy estimate falls too low, before labels arrive. The
    servers report an estimate only once their drift window holds 50 rows."""

    min: float = Field(description="Estimated accuracy below which retraining fires.", ge=0, le=1)


class Triggers(Spec):
    """What fires a retraining. The annotation mlops.dev/retrain=<any new value> fires one manually."""

    drift: DriftTrigger | None = Field(None, description="Drift trigger.")
    accuracy: AccuracyTrigger | None = Field(None, description="Accuracy trigger.")
    estimated_accuracy: EstimatedAccuracyTrigger | None = Field(
        None,
        description="Trigger on the confidence-based accuracy estimate (status.metrics.estimatedAccuracy).",
    )
    schedule: str | None = Field(
        None,
        pattern=r"^(\S+\s+){4}\S+$",
        max_length=128,
        description="Cron schedule (5 fields, UTC), e.g. '0 3 * * 0'.",
    )


class RetrainingTemplate(TrainingJobSpec):
    """A TrainingJob spec; model defaults to the InferenceService's model."""

    model: str | None = Field(  # type: ignore[assignment]  # optional in the template
        None,
        pattern=DNS_LABEL,
        max_length=40,
        description="Model name; default: the InferenceService's spec.model.",
    )


class Retraining(Spec):
    """Closed-loop retraining: create a TrainingJob when a trigger fires."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.template) != has(self.fromTrainingJob)",
                "set exactly one of template or fromTrainingJob",
            )
        )
    )

    enabled: bool = Field(True, description="Set false to pause retraining.")
    template: RetrainingTemplate | None = Field(None, description="Inline TrainingJob spec.")
    from_training_job: str | None = Field(
        None, pattern=DNS_LABEL, max_length=253, description="Copy the spec of this existing TrainingJob."
    )
    triggers: Triggers = Field(
        default_factory=Triggers, description="Triggers.", json_schema_extra={"default": {}}
    )
    cooldown_seconds: int = Field(600, ge=0, description="Minimum time between two retraining runs.")
    max_concurrent: int = Field(1, ge=1, le=10, description="Retraining runs allowed at once.")
    include_feedback: bool = Field(True, description="Add the labelled prediction log to the training data.")


class InferenceServiceSpec(PodOptions):
    """Desired state of an InferenceService."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.version) != has(self.policy)", "set exactly one of version or policy"),
        )
    )

    model: str = Field(description="Model to serve.", pattern=DNS_LABEL, max_length=40)
    version: int | None = Field(None, ge=1, description="Serve this version (pinned, e.g. by GitOps).")
    policy: Policy | None = Field(None, description="Choose the version automatically.")
    replicas: int = Field(1, ge=0, le=1000, description="Serving replicas (ignored when autoscaling is set).")
    autoscaling: Autoscaling | None = Field(None, description="Horizontal autoscaling.")
    batching: Batching = Field(
        default_factory=Batching, description="Micro-batching.", json_schema_extra={"default": {}}
    )
    canary: Canary | None = Field(None, description="Canary rollout of new versions.")
    monitoring: Monitoring = Field(
        default_factory=Monitoring, description="Monitoring.", json_schema_extra={"default": {}}
    )
    retraining: Retraining | None = Field(None, description="Closed-loop retraining.")
    grpc: bool = Field(
        True,
        description="Also serve the Open Inference Protocol over gRPC (inference.GRPCInferenceService) on "
        "the container and Service port named grpc (8081). false: HTTP only, and ~19 MiB less memory per pod.",
    )
    access: Access = Field(
        default_factory=Access,
        description="Who may call prediction (HTTP and gRPC), post feedback and read /metrics.",
        json_schema_extra={"default": {}},
    )


class Traffic(Status):
    """A share of traffic."""

    model_version: str = Field(description="ModelVersion name.")
    percent: int = Field(description="Share of traffic in percent (replica-weighted).")
    replicas: int | None = Field(None, description="Replicas running it.")


class CanaryStatus(Status):
    """The canary in progress."""

    model_version: str = Field(description="The version under analysis.")
    phase: Literal["Progressing", "Promoted", "RolledBack"] = Field(
        description="Progressing, Promoted or RolledBack."
    )
    started_at: str | None = Field(
        None, description="When the analysis started.", json_schema_extra={"format": "date-time"}
    )
    requests: int | None = Field(None, description="Requests the canary served.")
    error_rate: float | None = Field(None, description="Canary error rate.")
    latency_p95_ms: float | None = Field(None, description="Canary p95 latency in ms.")
    reason: str | None = Field(None, description="Why it was promoted or rolled back.")
    mode: Literal["split", "shadow"] | None = Field(None, description="split or shadow.")
    verdict: Literal["Better", "NotWorse", "Worse", "Inconclusive"] | None = Field(
        None,
        description="The new version's quality against the served one's (shadow; split once both tracks have minLabelled rows).",
    )
    pairs: int | None = Field(None, description="Shadow: labelled pairs (rows both versions answered).")
    champion_score: float | None = Field(
        None,
        description="The served version's accuracy (classification) or MAE: on the pairs (shadow), on the stable track's labelled rows (split).",
    )
    challenger_score: float | None = Field(
        None, description="The new version's score: on the pairs (shadow), on its own labelled rows (split)."
    )
    effect: float | None = Field(
        None, description="How much better the new version is (accuracy gain, or MAE reduction)."
    )
    p_value: float | None = Field(
        None,
        description="Shadow: the paired test's always-valid p-value (a regressor's NotWorse: its z-test's); split: the one-sided test's (Fisher's exact, or Welch's z on absolute errors).",
    )
    stable_labelled: int | None = Field(
        None, description="Split: labelled rows the stable track served since the analysis started."
    )
    canary_labelled: int | None = Field(
        None, description="Split: labelled rows the canary served since the analysis started."
    )
    agreement: float | None = Field(
        None, description="Shadow: share of mirrored rows both versions predicted alike (classification)."
    )


class Metrics(Status):
    """Serving metrics aggregated over the replicas at the last scrape."""

    requests: int | None = Field(None, description="Requests served (total).")
    error_rate: float | None = Field(
        None, description="Share of requests with a 5xx answer since the last scrape."
    )
    latency_p50_ms: float | None = Field(None, description="Median latency in ms since the last scrape.")
    latency_p95_ms: float | None = Field(
        None, description="95th percentile latency in ms since the last scrape."
    )
    drift: float | None = Field(None, description="Overall drift score (max PSI over features).")
    drift_by_feature: dict[str, float] | None = Field(None, description="PSI per feature.")
    prediction_drift: float | None = Field(None, description="PSI of the prediction distribution.")
    accuracy: float | None = Field(None, description="Accuracy from labelled feedback (classification).")
    rmse: float | None = Field(None, description="RMSE from labelled feedback (regression).")
    labelled_samples: int | None = Field(None, description="Labelled samples behind accuracy/rmse.")
    estimated_accuracy: float | None = Field(
        None,
        description=(
            "Estimated accuracy before labels (classification; an estimate, not a measurement): the "
            "drift window's top-class probabilities read through the version's held-out calibration."
        ),
    )
    drift_breaches: int | None = Field(
        None, description="Consecutive scrapes with drift above the trigger threshold."
    )
    last_scrape: str | None = Field(
        None,
        description="Time of the last scrape that changed these values.",
        json_schema_extra={"format": "date-time"},
    )


class RetrainingStatus(Status):
    """Retraining bookkeeping."""

    count: int | None = Field(
        None, description="Retraining runs created so far (the counter in their names)."
    )
    active_jobs: list[str] | None = Field(None, description="Retraining TrainingJobs still running.")
    last_trigger: str | None = Field(
        None, description="drift, accuracy, estimatedAccuracy, schedule or manual."
    )
    last_reason: str | None = Field(None, description="Why the last run was created.")
    last_triggered_at: str | None = Field(
        None, description="When the last run was created.", json_schema_extra={"format": "date-time"}
    )
    last_manual: str | None = Field(
        None, description="Value of the mlops.dev/retrain annotation last acted on."
    )
    last_schedule: str | None = Field(None, description="The last schedule slot acted on.")
    last_outcome: str | None = Field(None, description="What became of the last run's model.")


class InferenceServiceStatus(Status):
    """Observed state of an InferenceService."""

    observed_generation: int | None = Field(
        None, description="The metadata.generation this status describes."
    )
    conditions: list[Condition] | None = condition_list_field(
        "Ready, Reconciling, Stalled, VersionResolved, RolledOut, CanaryHealthy, ShadowVerdict, Drifted, Retraining, MetricsAvailable (with prometheusUrl)."
    )
    url: str | None = Field(None, description="In-cluster URL of the service.")
    grpc_address: str | None = Field(
        None, description="In-cluster host:port of the gRPC endpoint (when spec.grpc is true)."
    )
    model_version: str | None = Field(None, description="The ModelVersion served (stable).")
    version: int | None = Field(None, description="Its version number.")
    desired_model_version: str | None = Field(None, description="The version the spec or policy chooses.")
    replicas: int | None = Field(None, description="Serving pods (scale subresource).")
    ready_replicas: int | None = Field(None, description="Ready serving pods.")
    selector: str | None = Field(None, description="Label selector of the serving pods (scale subresource).")
    traffic: list[Traffic] | None = Field(None, description="Traffic split.")
    canary: CanaryStatus | None = Field(None, description="Canary in progress or last decided.")
    metrics: Metrics | None = Field(None, description="Aggregated serving metrics.")
    retraining: RetrainingStatus | None = Field(None, description="Retraining bookkeeping.")
    message: str | None = Field(None, description="Last error or outcome, human readable.")


ROOT_VALIDATIONS: Final = [
    name_validation(
        DNS1035_LABEL,
        "a DNS-1035 label: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit, no dots (a Service is made from it)",
    ),
    cel(
        "self.metadata.name.size() <= 45", "name must be at most 45 characters (child names append suffixes)"
    ),
]
SPEC_VALIDATIONS: Final[list[dict[str, str]]] = []

PRINTER_COLUMNS: Final[list[dict[str, Any]]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {"name": "Serving", "type": "string", "jsonPath": ".status.modelVersion"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Drift", "type": "number", "jsonPath": ".status.metrics.drift"},
    {"name": "Accuracy", "type": "number", "jsonPath": ".status.metrics.accuracy"},
    {"name": "Retrains", "type": "integer", "jsonPath": ".status.retraining.count", "priority": 1},
    {"name": "URL", "type": "string", "jsonPath": ".status.url", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
