"""One JSON log schema for the operator, the trainer and the server.

Every line on stderr is one JSON object:

    time       RFC 3339 in UTC with milliseconds and a Z, e.g. 2026-12-03T18:35:06.123Z
    level      debug, info, warning, error or critical
    logger     the logger's name, e.g. mlops_operator, mlops_trainer, mlops_server.http
    message    the message, capitalised, past tense, naming the object
    object     (optional) Kind/namespace/name of the Kubernetes object the line is about
    exception  (optional) the formatted traceback
    ...        any other field, at the top level: extras passed as `extra={"fields": {...}}`
               or as plain `extra={...}` keys; they never replace the four fields above

`configure(json_format=...)` installs the one stderr handler on the root logger (idempotent);
`LOG_SCHEMA` is the schema the tests hold every program's real output to.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final

import orjson

from mlops_contract.timeutil import format_log_time

CORE_FIELDS: Final = ("time", "level", "logger", "message")
LEVELS: Final = ("debug", "info", "warning", "error", "critical")
# A JSON schema of one line, for the tests (and for users' log pipelines).
LOG_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": list(CORE_FIELDS),
    "properties": {
        "time": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"},
        "level": {"enum": list(LEVELS)},
        "logger": {"type": "string", "minLength": 1},
        "message": {"type": "string"},
        "object": {"type": "string"},
        "exception": {"type": "string"},
    },
}

_STANDARD: Final = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "fields",
    "taskName",
}
# kopf attaches its whole settings object and bookkeeping flags to each record of an object's
# logger; the object itself (k8s_ref) becomes "object": "Kind/namespace/name".
_DROPPED: Final = {"settings", "k8s_skip", "k8s_ref"}


def _object_ref(ref: Any) -> str | None:
    if not isinstance(ref, dict) or "kind" not in ref:
        return None
    return "/".join(str(p) for p in (ref.get("kind"), ref.get("namespace"), ref.get("name")) if p)


class JsonFormatter(logging.Formatter):
    """A record as one line of the schema above."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": format_log_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras: dict[str, Any] = {
            k: v
            for k, v in record.__dict__.items()
            if k not in _STANDARD and k not in _DROPPED and not k.startswith("_")
        }
        fields = record.__dict__.get("fields")
        if isinstance(fields, dict):
            extras.update(fields)
        ref = _object_ref(record.__dict__.get("k8s_ref"))
        if ref:
            extras.setdefault("object", ref)
        for key, value in extras.items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
    """Resolves sys.stderr at emit time, so a replaced stderr (tests, redirection) is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(
    *, json_format: bool = True, level: int | str = logging.INFO, quiet: tuple[str, ...] = ()
) -> None:
    """Send every logger's records to stderr in the one schema (or plain text); idempotent.

    `quiet` loggers are raised to WARNING (chatty libraries). Python warnings become log lines.
    """
    handler = _StderrHandler()
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
