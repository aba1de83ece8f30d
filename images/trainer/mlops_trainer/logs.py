"""Structured logs: one JSON object per line on stderr (time, level, msg and fields)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

LOGGER_NAME: Final = "mlops_trainer"
logger: Final = logging.getLogger(LOGGER_NAME)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
    """Resolves sys.stderr at emit time, so a replaced stderr (tests, redirection) is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(level: int = logging.INFO) -> None:
    """Install the JSON handler once (also for Python warnings); calling again is a no-op."""
    if any(isinstance(h, _StderrHandler) for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    for target in (logger, logging.getLogger("py.warnings")):
        target.addHandler(handler)
        target.setLevel(level)
        target.propagate = False
    # Warnings nobody records (filters permitting) become JSON log lines, not free text on stderr.
    logging.captureWarnings(True)


def log(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})


@contextmanager
def phase(name: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Time a phase; the yielded dict collects fields logged when the phase ends."""
    extra: dict[str, Any] = dict(fields)
    start = time.perf_counter()
    yield extra
    log(f"Finished {name}", phase=name, seconds=round(time.perf_counter() - start, 3), **extra)
