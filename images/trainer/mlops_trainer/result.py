"""The result document: compact JSON on stdout and in the pod's termination message.

Kubernetes keeps at most 4096 bytes of a termination message, so `encode_result` drops the
least important fields first (listed in `dropped`) and, for failures, shortens the message;
everything dropped is still in the artifact's model.json or the logs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, Final

from mlops_trainer.logs import log

MAX_RESULT_BYTES: Final = 4096
DEFAULT_RESULT_PATH: Final = "/dev/termination-log"
ENV_RESULT_PATH: Final = "MLOPS_RESULT_PATH"
# Least important first: the signature, predictions and dataSources are in model.json, params in the spec.
DROP_ORDER: Final = (
    "signature",
    "predictions",
    "dataSources",
    "params",
    "failedGates",
    "metrics",
    "dataDigest",
)
ESSENTIAL: Final = (
    "ok",
    "reason",
    "trial",
    "score",
    "metric",
    "primaryMetric",
    "gatesPassed",
    "sha256",
    "artifactUri",
)


def _dump(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), allow_nan=False, default=str).encode()


def encode_result(result: Mapping[str, Any], limit: int = MAX_RESULT_BYTES) -> bytes:
    """Serialise `result` to at most `limit` bytes of JSON."""
    document = dict(result)
    data = _dump(document)
    dropped: list[str] = []
    for key in DROP_ORDER:
        if len(data) <= limit:
            return data
        if key in document:
            del document[key]
            dropped.append(key)
            document["dropped"] = dropped
            data = _dump(document)
    if len(data) > limit and isinstance(document.get("message"), str):
        excess = len(data) - limit + len(" [truncated]") + 8
        raw = document["message"].encode()
        document["message"] = raw[: max(len(raw) - excess, 0)].decode(errors="ignore") + " [truncated]"
        data = _dump(document)
    if len(data) > limit:
        document = {k: document[k] for k in ESSENTIAL if k in document}
        document["dropped"] = [*dropped, "more"]
        data = _dump(document)
    return data


def result_path(option: str | None, env: Mapping[str, str] | None = None) -> str:
    source = os.environ if env is None else env
    return option or source.get(ENV_RESULT_PATH) or DEFAULT_RESULT_PATH


def emit_result(result: Mapping[str, Any], path: str) -> bytes:
    """Print the result on stdout and write it to `path`; a missing path (not in a pod) is logged."""
    data = encode_result(result)
    sys.stdout.write(data.decode() + "\n")
    sys.stdout.flush()
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        log("Skipped writing the result file", path=path, error=str(e))
    return data
