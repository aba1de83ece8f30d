"""Structured JSON logs: one object per line with the time, level, logger, message and extras."""

from __future__ import annotations

import logging
import sys
from typing import Any, Final

import orjson

_STANDARD: Final = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# kopf attaches its whole settings object and bookkeeping flags to each record of an object's
# logger; the object itself (k8s_ref) becomes "object": "Kind/namespace/name".
_DROPPED: Final = {"settings", "k8s_skip", "k8s_ref"}


def _object_ref(ref: Any) -> str | None:
    if not isinstance(ref, dict) or "kind" not in ref:
        return None
    return "/".join(str(p) for p in (ref.get("kind"), ref.get("namespace"), ref.get("name")) if p)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
                doc[key] = value
        ref = _object_ref(record.__dict__.get("k8s_ref"))
        if ref and "object" not in doc:
            doc["object"] = ref
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(*, json_format: bool = True, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # kopf health probes
    # kopf logs every handler success per object at INFO (the event "kicks" fire on each child
    # change); the operator's own logger reports what it does. -v brings kopf's back.
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
