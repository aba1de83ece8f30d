"""`mlops-server` / `python -m mlops_server`: settings in, exit code out.

Exit codes: 0 stopped cleanly (SIGTERM/SIGINT); 1 could not listen, or crashed; 2 invalid
settings or a refused artifact (sha256 mismatch, corrupted or untrusted model file).
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import prometheus_client

from mlops_server import logs
from mlops_server.config import Settings, parse_settings


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (optional, faster), else the standard loop."""
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(settings: Settings, started: float) -> int:
    from mlops_server.lifecycle import Server

    server = Server(settings, started, freeze_heap=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    return await server.run()


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    settings = parse_settings(argv)  # exits 2 with a usage message on invalid flags or env
    logs.setup(settings.log_level)
    # No `*_created` companion series: the operator's scraper reads values, not creation times.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_serve(settings, started))


if __name__ == "__main__":
    sys.exit(main())
