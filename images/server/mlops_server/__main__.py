"""`mlops-server` / `python -m mlops_server`: settings in, exit code out.

Exit codes: 0 stopped cleanly (SIGTERM/SIGINT); 1 could not listen, or crashed; 2 invalid
settings or a refused artifact (sha256 mismatch, corrupted or untrusted model file).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.abc
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import prometheus_client

from mlops_server import logs
from mlops_server.config import Settings, parse_settings

# Not in the server's image (its dependency groups leave pyarrow out, issue #16), but installed
# wherever the trainer's groups are (a development environment), and never used by the server:
# pandas imports pyarrow whenever it can, which costs ~65 MiB of resident memory and ~0.1 s of
# start-up (issue #10: RSS below MLServer's and KServe's, cold start). A finder makes
# `import pyarrow` fail as if it were not installed, and pandas then works without it
# (python-backed strings). Not a None entry in sys.modules: scikit-learn takes any entry there
# for the real module.
UNUSED_MODULES: Final = frozenset({"pyarrow"})


class _SkipModules(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (not used by mlops-server)", name=fullname
            )


def skip_unused_modules(meta_path: list[Any] | None = None, modules: Mapping[str, Any] | None = None) -> None:
    """Keep UNUSED_MODULES out of this process; those already imported stay (an embedding process)."""
    names = frozenset(n for n in UNUSED_MODULES if n not in (sys.modules if modules is None else modules))
    if names:
        (sys.meta_path if meta_path is None else meta_path).insert(0, _SkipModules(names))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (optional, faster), else the standard loop."""
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def raise_fd_limit(connections: int) -> None:
    """Let the process hold `--max-connections` sockets plus its own files (soft limit up to hard).

    Below that, accept() fails with EMFILE before the cap's 503 can be sent.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


async def _serve(settings: Settings, started: float) -> int:
    from mlops_server.lifecycle import Server

    server = Server(settings, started, freeze_heap=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    return await server.run()


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    skip_unused_modules()
    settings = parse_settings(argv)  # exits 2 with a usage message on invalid flags or env
    logs.setup(settings.log_level)
    raise_fd_limit(settings.max_connections)
    # No `*_created` companion series: the operator's scraper reads values, not creation times.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_serve(settings, started))


if __name__ == "__main__":
    sys.exit(main())
