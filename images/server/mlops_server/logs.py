"""Structured logs: one JSON object per line on stderr.

Every line has `time` (RFC 3339, UTC), `level`, `logger` and `message`; extra fields passed as
`log.info("...", extra={"fields": {...}})` are merged in, so log pipelines can filter on
`model`, `sha256`, `status` and the like without parsing the message.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Final

import orjson

LOGGER_NAME: Final = "mlops_server"


def rfc3339(epoch: float) -> str:
    """`2024-05-01T12:00:00.123Z` for an epoch timestamp."""
    whole = int(epoch)
    millis = int((epoch - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def setup(level: str = "INFO") -> None:
    """Route the server's loggers to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
