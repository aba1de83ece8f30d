"""Run the operator: `mlops-operator [--namespace NS ...|--all-namespaces] [--standalone] [--peering NAME]`.

Settings come from the environment (see settings.py); everything else is kopf's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import sys
from collections.abc import Sequence

from mlops_operator import __version__


def _priority(value: str) -> int:
    """An integer, or `random`: distinct per process (equal priorities make every peer pause)."""
    if value == "random":
        return 1 + secrets.randbelow(2**31 - 2)
    return int(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlops-operator",
        description="The mlops.dev operator: TrainingJob, ModelVersion, InferenceService.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    p.add_argument("--standalone", action="store_true", help="no peering: act even if other replicas run")
    p.add_argument("--peering", default=None, help="peering object name for active/standby replicas")
    p.add_argument(
        "--priority",
        type=_priority,
        default=0,
        help="peering priority (the highest acts); 'random' gives each replica its own, "
        "so exactly one of several identical replicas acts",
    )
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf's health endpoint")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve the operator's Prometheus /metrics on this port (0: off; default: MLOPS_METRICS_PORT or off)",
    )
    p.add_argument("--log-format", choices=["json", "plain"], default="json")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"mlops-operator {__version__}")
    return p


def lean_imports() -> None:
    """Keep the official `kubernetes` client out of the operator process.

    kopf imports it when installed, only for its optional support of that client's model
    classes, which the operator does not use: it talks to the API through kopf's own client
    (kube.AsyncKube). Left in, the import costs ~57 MiB of RSS. A None entry in sys.modules
    makes the import fail with ImportError, which kopf handles as "not installed"."""
    if "kubernetes" not in sys.modules:
        sys.modules["kubernetes"] = None  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    lean_imports()
    import kopf

    from mlops_operator import handlers  # noqa: F401  # registers the handlers
    from mlops_operator.logs import configure_logging
    from mlops_operator.settings import Settings

    configure_logging(json_format=args.log_format == "json", verbose=args.verbose)
    settings = Settings.from_env()
    if args.namespace:
        settings = dataclasses.replace(settings, namespaces=tuple(args.namespace))
    if args.metrics_port is not None:
        settings = dataclasses.replace(settings, metrics_port=args.metrics_port)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=list(args.namespace),
            standalone=args.standalone,
            peering_name=args.peering,
            priority=args.priority,
            liveness_endpoint=args.liveness or None,
            memo=kopf.Memo(settings=settings),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
