"""The trainer's log helpers over the one JSON schema of `mlops_contract.logs`: `log(message, **fields)`
and `phase(name)`, which logs how long a step took."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from mlops_contract import logs

LOGGER_NAME: Final = "mlops_trainer"
logger: Final = logging.getLogger(LOGGER_NAME)


def configure(level: int = logging.INFO) -> None:
    """Install the one JSON log schema (mlops_contract.logs) on stderr; Python warnings become lines."""
    logs.configure(level=level)


def log(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})


@contextmanager
def phase(name: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Time a phase; the yielded dict collects fields logged when the phase ends."""
    extra: dict[str, Any] = dict(fields)
    start = time.perf_counter()
    yield extra
    log(f"Finished {name}", phase=name, seconds=round(time.perf_counter() - start, 3), **extra)
