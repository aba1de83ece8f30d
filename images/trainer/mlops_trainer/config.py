"""The trainer's input: a JSON document from env MLOPS_CONFIG or a file (--config).

{"name": "<TrainingJob name>", "namespace": "...", "spec": {<TrainingJobSpec, camelCase>},
 "params": {<estimator params overriding spec.estimator.params>}, "trainerImage": "..."}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from mlops_contract.api.common import DNS_LABEL
from mlops_contract.api.trainingjob import TrainingJobSpec
from mlops_trainer.errors import BadInput

ENV_CONFIG: Final = "MLOPS_CONFIG"


class PreparedRef(BaseModel):
    """The prepared data of this run (mlops_trainer.prepared): where, and its manifest's sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(min_length=1, max_length=2048)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class TrainerConfig(BaseModel):
    """Parsed config; unknown top-level keys are ignored so a newer operator can add some."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    name: str = Field(pattern=DNS_LABEL, max_length=253)
    namespace: str | None = None
    spec: TrainingJobSpec
    params: dict[str, Any] = Field(default_factory=dict)
    trainer_image: str | None = None
    prepared: PreparedRef | None = None


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: `spec.data.split.testSize: Input should be less than 1`."""
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_config(document: Mapping[str, Any]) -> TrainerConfig:
    try:
        return TrainerConfig.model_validate(document)
    except ValidationError as e:
        raise BadInput(f"invalid config: {format_validation_error(e)}") from e


def load_config(path: str | None, env: Mapping[str, str] | None = None) -> TrainerConfig:
    """Read the config from `path` when given, else from env MLOPS_CONFIG."""
    source = os.environ if env is None else env
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise BadInput(f"cannot read config file {path}: {e.strerror or e}") from e
        origin = path
    elif source.get(ENV_CONFIG):
        text = source[ENV_CONFIG]
        origin = f"env {ENV_CONFIG}"
    else:
        raise BadInput(f"no config: set env {ENV_CONFIG} or pass --config FILE")
    try:
        document = json.loads(text)
    except ValueError as e:
        raise BadInput(f"config in {origin} is not valid JSON: {e}") from e
    if not isinstance(document, dict):
        raise BadInput(f"config in {origin} must be a JSON object")
    return parse_config(document)
