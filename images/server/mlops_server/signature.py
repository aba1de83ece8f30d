"""The model's input signature as the server uses it: feature order, kinds and wire datatypes.

Built from `model.json["signature"]` (written by the trainer). Pure and light (no pandas),
so request decoding can depend on it without importing scikit-learn.

Invariant: `features` is in the pipeline's input-column order; every frame the server builds
has its columns in this order.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

CLASSIFICATION: Final = "classification"
REGRESSION: Final = "regression"


class Kind(enum.Enum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CATEGORY = "category"

    @property
    def numeric(self) -> bool:
        return self in (Kind.FLOAT, Kind.INT)


def kind_of(dtype: str) -> Kind:
    """Map a pandas/numpy dtype name from the signature to how the server treats the feature."""
    lowered = dtype.strip().lower()
    if lowered.startswith("float"):
        return Kind.FLOAT
    if lowered.startswith(("int", "uint")):
        return Kind.INT
    if lowered in ("bool", "boolean"):
        return Kind.BOOL
    return Kind.CATEGORY  # object, string, str, category, ...


_V2_DATATYPE: Final = {Kind.FLOAT: "FP64", Kind.INT: "INT64", Kind.BOOL: "BOOL", Kind.CATEGORY: "BYTES"}


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    dtype: str
    kind: Kind

    @property
    def datatype(self) -> str:
        """The Open Inference Protocol datatype advertised in model metadata."""
        return _V2_DATATYPE[self.kind]


class SignatureError(ValueError):
    """model.json's signature is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Signature:
    task: str
    features: tuple[Feature, ...]
    target: str | None = None
    classes: tuple[Any, ...] | None = None
    index: Mapping[str, int] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def numeric(self) -> bool:
        """All features numeric: frames are float64 matrices (the fast path)."""
        return all(f.kind.numeric for f in self.features)

    @property
    def classification(self) -> bool:
        return self.task == CLASSIFICATION

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Signature:
        sig = meta.get("signature")
        if not isinstance(sig, Mapping):
            raise SignatureError("model.json has no signature")
        task = sig.get("task")
        if task not in (CLASSIFICATION, REGRESSION):
            raise SignatureError(f"signature task must be {CLASSIFICATION} or {REGRESSION}, got {task!r}")
        raw = sig.get("features")
        if not isinstance(raw, list) or not raw:
            raise SignatureError("signature has no features")
        features: list[Feature] = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
                raise SignatureError(f"signature feature {i} has no name")
            dtype = str(item.get("dtype", "float64"))
            features.append(Feature(name=item["name"], dtype=dtype, kind=kind_of(dtype)))
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise SignatureError("signature has duplicate feature names")
        classes = sig.get("classes")
        return cls(
            task=task,
            features=tuple(features),
            target=sig.get("target") if isinstance(sig.get("target"), str) else None,
            classes=tuple(classes) if isinstance(classes, list) else None,
            index={name: i for i, name in enumerate(names)},
        )
