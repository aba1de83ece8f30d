"""The operator's logging: the one JSON schema of `mlops_contract.logs`, with kopf kept quiet."""

from __future__ import annotations

import logging

from mlops_contract import logs


def configure_logging(*, json_format: bool = True, verbose: bool = False) -> None:
    logs.configure(
        json_format=json_format,
        level=logging.DEBUG if verbose else logging.INFO,
        quiet=("kubernetes", "urllib3", "aiohttp.access"),  # aiohttp.access: kopf's health probes
    )
    # kopf logs every handler success per object at INFO (the event "kicks" fire on each child
    # change); the operator's own logger reports what it does. -v brings kopf's back.
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
