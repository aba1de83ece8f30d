"""The server's loggers over the one JSON schema of `mlops_contract.logs`.

Extra fields passed as `log.info("...", extra={"fields": {...}})` land at the top level of the
line, so log pipelines can filter on `model`, `sha256`, `status` and the like.
"""

from __future__ import annotations

import logging
from typing import Final

from mlops_contract import logs

LOGGER_NAME: Final = "mlops_server"


def setup(level: str = "INFO") -> None:
    """Route every logger to stderr as JSON lines (idempotent)."""
    logs.configure(level=level)


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
