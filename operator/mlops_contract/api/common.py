"""Shared API building blocks: the base model, conditions, pod knobs, gates, CEL helpers."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP: Final = "mlops.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "mlops"

# Labels and annotations the operator reads or writes.
LABEL_MODEL: Final = f"{GROUP}/model"
LABEL_VERSION: Final = f"{GROUP}/version"
LABEL_MODEL_VERSION: Final = f"{GROUP}/model-version"
LABEL_TRAINING_JOB: Final = f"{GROUP}/training-job"
LABEL_INFERENCE_SERVICE: Final = f"{GROUP}/inference-service"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGER: Final = "mlops-operator"
ANNOTATION_APPROVED_BY: Final = f"{GROUP}/approved-by"
ANNOTATION_RETRAIN: Final = f"{GROUP}/retrain"

DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SHA256_HEX: Final = r"^[a-f0-9]{64}$"


# Names of objects whose name becomes a child's name or a label value (Jobs, pods, the
# job-name label): a DNS-1123 label, no dots (issue #19: a dotted TrainingJob name used to be
# admitted, then refused by the trainer after its pod launched).
DNS1123_LABEL: Final = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Names a Service is made from: a DNS-1035 label (a letter first; `9good` is refused by the Service).
DNS1035_LABEL: Final = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def name_validation(pattern: str, what: str) -> dict[str, str]:
    """The root CEL rule admitting only names matching `pattern` (`what` names the rule in the message)."""
    return cel(f"self.metadata.name.matches('{pattern}')", f"name must be {what}")


def cel(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One x-kubernetes-validations entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class Spec(BaseModel):
    """Base of every user-facing model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=False,
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Status(Spec):
    """Base of status models: unknown fields are kept (a newer operator may have written them)."""

    model_config = ConfigDict(extra="ignore")


# A Kubernetes quantity ("500m", "1Gi", 2): int-or-string on the wire.
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {"x-kubernetes-int-or-string": True, "description": "A Kubernetes quantity, e.g. 500m or 1Gi."}
    ),
]

# Free-form JSON (estimator params, tolerations) kept as the user wrote it.
FreeForm = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
]
# Any JSON value, null included (`max_depth: [3, null]`): without `nullable` the API server keeps
# the null but every CEL rule over the enclosing object then fails to evaluate on later writes.
AnyValue = Annotated[Any, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True, "nullable": True})]
ScalarValue = Annotated[int | str, WithJsonSchema({"x-kubernetes-int-or-string": True})]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Status):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Ready.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(
        description="Status of the condition: True, False or Unknown."
    )
    reason: str = Field(
        "", description="A programmatic identifier in CamelCase for the condition's last transition."
    )
    message: str = Field("", description="A human-readable message with details about the last transition.")
    last_transition_time: str | None = Field(
        None,
        description="When the condition last changed status (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        None, ge=0, description="The metadata.generation the condition was computed from."
    )


class ResourceRequirements(Spec):
    """Compute resources of a container (requests and limits, as in core/v1)."""

    requests: dict[str, Quantity] | None = Field(
        None, description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[str, Quantity] | None = Field(
        None, description="Maximum resources, e.g. {cpu: 2, memory: 2Gi}."
    )


class PodOptions(Spec):
    """Scheduling and identity options for the pods the operator creates."""

    image: str | None = Field(
        None, description="Container image; defaults to the operator's configured image for this program."
    )
    resources: ResourceRequirements | None = Field(None, description="Container resources.")
    service_account_name: str | None = Field(
        None,
        pattern=DNS_LABEL,
        max_length=253,
        description="ServiceAccount the pods run as (default: namespace default).",
    )
    node_selector: dict[str, str] | None = Field(
        None, description="Node labels the pods must be scheduled on."
    )
    tolerations: list[FreeForm] | None = Field(None, description="Tolerations, as in core/v1 PodSpec.")


class GateOperator(StrEnum):
    GE = ">="
    GT = ">"
    LE = "<="
    LT = "<"


class Gate(Spec):
    """An evaluation gate: a metric compared with a threshold. A model passes when every gate holds."""

    model_config = ConfigDict(json_schema_extra={"description": "An evaluation gate, e.g. accuracy >= 0.9."})

    metric: str = Field(
        description="Metric name as computed by the trainer, e.g. accuracy, f1, roc_auc, rmse, mae, r2.",
        pattern=r"^[a-z0-9_]+$",
        max_length=63,
    )
    op: Literal[">=", ">", "<=", "<"] = Field(">=", description="Comparison: >=, >, <= or <.")
    threshold: float = Field(description="Value the metric is compared with.")

    def holds(self, value: float) -> bool:
        return {
            ">=": value >= self.threshold,
            ">": value > self.threshold,
            "<=": value <= self.threshold,
            "<": value < self.threshold,
        }[self.op]


class ObjectReference(Spec):
    """A reference to an object in the same namespace."""

    name: str = Field(description="Name of the object.", max_length=253)


def condition_list_field(description: str) -> Any:
    return Field(
        None,
        description=description,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
