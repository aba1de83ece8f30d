"""Server settings: read once from the command line and `MLOPS_<FLAG>` environment variables.

Precedence is flag > environment > default. Environment values are parsed exactly like
flags, so a bad `MLOPS_PORT` fails with the same usage error (exit code 2) as a bad `--port`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

ENV_PREFIX: Final = "MLOPS_"
KIB: Final = 1 << 10
MIB: Final = 1 << 20
RUNTIMES: Final = ("auto", "sklearn")  # see mlops_server.model
FEEDBACK_TOKEN_ENV: Final = "MLOPS_FEEDBACK_TOKEN"  # noqa: S105 - the variable's name, not a secret


@dataclass(frozen=True, slots=True)
class Settings:
    artifact: str
    model_name: str | None = None
    sha256: str | None = None
    model_version: str | None = None
    runtime: str = "auto"
    host: str = "0.0.0.0"  # noqa: S104 - a server in a pod listens on all interfaces
    port: int = 8080
    grpc_port: int | None = None  # None: no gRPC endpoint (the operator's Deployment sets 8081)
    grpc_max_streams: int = 100
    # Feedback and /metrics on their own port (issue #19), so a NetworkPolicy can let clients
    # predict without letting them post labels; None: everything on `port`.
    monitoring_port: int | None = None
    # Bearer token feedback must carry; from MLOPS_FEEDBACK_TOKEN only (never a flag, which
    # `ps` would show), set by the operator from a Secret. None: no token asked.
    feedback_token: str | None = field(default=None, repr=False)
    max_batch_size: int = 64
    max_batch_delay_ms: float = 0.0
    max_body_bytes: int = 8 * MIB
    max_rows: int = 65536
    max_url_bytes: int = 8 * KIB
    max_header_bytes: int = 32 * KIB
    max_headers: int = 100
    max_pipeline_bytes: int = 8 * MIB
    max_connections: int = 2048
    idle_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    offload_bytes: int = 64 * KIB
    drift_window: int = 1000
    prediction_log: str | None = None
    log_sample_rate: float = 1.0
    feedback_capacity: int = 10000
    feedback_max_bytes: int = 16 * MIB
    shutdown_timeout: float = 25.0
    access_log: bool = False
    log_level: str = "INFO"
    # Shadow mode (issue #22): mirror a share of V2 requests to the challenger at this URL
    # (http://host[:port]); None: no mirroring.
    shadow_url: str | None = None
    shadow_percent: float = 100.0
    shadow_timeout_ms: float = 1000.0
    shadow_concurrency: int = 4
    shadow_queue: int = 256


_DEFAULTS: Final = Settings(artifact="")


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (0-65535), got {value}")
    return value


def _sha256(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError("must be 64 hexadecimal digits")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, got {text!r}")


def _percent(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 100.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 100], got {text}")
    return value


def _shadow_url(text: str) -> str:
    host, port = split_http_url(text)
    if not host or not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"must be http://HOST[:PORT], got {text!r}")
    return text


def split_http_url(text: str) -> tuple[str, int]:
    """(host, port) of http://HOST[:PORT][/]; ('', 0) when it is not one."""
    rest = text.removeprefix("http://")
    if rest == text:
        return "", 0
    hostport = rest.rstrip("/")
    if "/" in hostport or "@" in hostport:
        return "", 0
    host, sep, port = hostport.rpartition(":")
    if not sep:
        return hostport, 80
    return (host, int(port)) if port.isdigit() else ("", 0)


def _level(text: str) -> str:
    value = text.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise argparse.ArgumentTypeError(f"must be DEBUG, INFO, WARNING or ERROR, got {text!r}")
    return value


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops-server",
        description="Serve a verified scikit-learn artifact over the Open Inference Protocol (V2, HTTP and gRPC) and "
        "KServe V1, with Prometheus metrics, drift statistics, a prediction log and labelled feedback. "
        f"Every flag can also be set with an environment variable {ENV_PREFIX}<FLAG> (e.g. MLOPS_PORT).",
    )

    def add(flag: str, help_text: str, default: Any = None, **kwargs: Any) -> None:
        env = _env_name(flag)
        value = environ.get(env)
        required = kwargs.pop("required", False) and value is None
        # argparse parses string defaults with `type`, so environment values get the same checks.
        parser.add_argument(
            flag,
            default=value if value is not None else default,
            required=required,
            help=f"{help_text} [env {env}]",
            **kwargs,
        )

    add("--artifact", "artifact directory holding model.skops and model.json", required=True, metavar="DIR")
    add("--model-name", "model name served at /v2/models/NAME (default: the artifact's model name)")
    add("--sha256", "expected sha256 of model.skops; the server refuses to start on a mismatch", type=_sha256)
    add(
        "--model-version",
        "version label for metrics, logs and metadata (default: first 12 hex of the sha256)",
    )
    add(
        "--runtime",
        "auto: run numeric pipelines of supported parts from their arrays, without importing "
        "scikit-learn (fast start, small process), else with scikit-learn; sklearn: always scikit-learn",
        default=_DEFAULTS.runtime,
        choices=RUNTIMES,
    )
    add("--host", "address to listen on", default=_DEFAULTS.host)
    add("--port", "TCP port to listen on (0 picks a free one)", default=_DEFAULTS.port, type=_port)
    add(
        "--grpc-port",
        "TCP port of the gRPC endpoint (inference.GRPCInferenceService, the V2 protocol over gRPC); "
        "0 picks a free one; unset: no gRPC endpoint",
        type=_port,
    )
    add(
        "--grpc-max-streams",
        "concurrent gRPC calls per connection (HTTP/2 MAX_CONCURRENT_STREAMS); the whole server takes "
        "at most --max-connections calls at once and --max-connections connections",
        default=_DEFAULTS.grpc_max_streams,
        type=_positive_int,
    )
    add(
        "--monitoring-port",
        "serve /metrics and feedback on this port only, not on --port (0 picks a free one; "
        "default: everything on --port)",
        type=_port,
    )
    add(
        "--max-batch-size",
        "most rows merged into one model call",
        default=_DEFAULTS.max_batch_size,
        type=_positive_int,
    )
    add(
        "--max-batch-delay-ms",
        "longest wait for more requests before a batch runs; 0 = adaptive: run at once when idle, "
        "merge whatever arrives while a batch computes",
        default=_DEFAULTS.max_batch_delay_ms,
        type=_non_negative_float,
    )
    add(
        "--max-body-bytes",
        "largest request body accepted (413 above); also the largest gRPC message (RESOURCE_EXHAUSTED above)",
        default=_DEFAULTS.max_body_bytes,
        type=_positive_int,
    )
    add(
        "--max-rows",
        "most rows in one request, checked from the declared shape before the data is decoded "
        "(413 above); the operator derives it from the pod's memory limit",
        default=_DEFAULTS.max_rows,
        type=_positive_int,
    )
    add(
        "--max-url-bytes",
        "longest request line URL (414 above)",
        default=_DEFAULTS.max_url_bytes,
        type=_positive_int,
    )
    add(
        "--max-header-bytes",
        "largest request head: URL and header fields (431 above)",
        default=_DEFAULTS.max_header_bytes,
        type=_positive_int,
    )
    add(
        "--max-headers",
        "most header fields in a request (431 above)",
        default=_DEFAULTS.max_headers,
        type=_positive_int,
    )
    add(
        "--max-pipeline-bytes",
        "bytes of unanswered pipelined requests buffered per connection before reading pauses",
        default=_DEFAULTS.max_pipeline_bytes,
        type=_positive_int,
    )
    add(
        "--max-connections",
        "open connections; one more gets 503 and is closed",
        default=_DEFAULTS.max_connections,
        type=_positive_int,
    )
    add(
        "--idle-timeout",
        "seconds an idle keep-alive connection stays open",
        default=_DEFAULTS.idle_timeout,
        type=_positive_float,
    )
    add(
        "--header-timeout",
        "seconds from a request's first byte to the end of its head (408 and close after)",
        default=_DEFAULTS.header_timeout,
        type=_positive_float,
    )
    add(
        "--body-timeout",
        "seconds from a request's head to the end of its body (408 and close after)",
        default=_DEFAULTS.body_timeout,
        type=_positive_float,
    )
    add(
        "--offload-bytes",
        "request bodies from this size are decoded on a worker thread, so health probes never wait",
        default=_DEFAULTS.offload_bytes,
        type=_positive_int,
    )
    add(
        "--drift-window",
        "input rows kept for drift and labelled rows kept for accuracy",
        default=_DEFAULTS.drift_window,
        type=_positive_int,
    )
    add("--prediction-log", "directory for predictions-<host>.jsonl and feedback-<host>.jsonl", metavar="DIR")
    add(
        "--log-sample-rate",
        "fraction of requests written to the prediction log",
        default=_DEFAULTS.log_sample_rate,
        type=_rate,
    )
    add(
        "--feedback-capacity",
        "request ids remembered for feedback",
        default=_DEFAULTS.feedback_capacity,
        type=_positive_int,
    )
    add(
        "--feedback-max-bytes",
        "most bytes of inputs and predictions remembered for feedback (the oldest requests go first)",
        default=_DEFAULTS.feedback_max_bytes,
        type=_positive_int,
    )
    add(
        "--shutdown-timeout",
        "seconds to finish in-flight requests after SIGTERM",
        default=_DEFAULTS.shutdown_timeout,
        type=_non_negative_float,
    )
    add(
        "--shadow-url",
        "shadow mode: mirror V2 inference requests to the challenger at http://HOST[:PORT], "
        "asynchronously (the answer never waits for it)",
        type=_shadow_url,
    )
    add(
        "--shadow-percent",
        "share of V2 requests mirrored, in percent",
        default=_DEFAULTS.shadow_percent,
        type=_percent,
    )
    add(
        "--shadow-timeout-ms",
        "how long a mirrored request may take",
        default=_DEFAULTS.shadow_timeout_ms,
        type=_positive_float,
    )
    add(
        "--shadow-concurrency",
        "mirrored requests in flight at once (one connection each)",
        default=_DEFAULTS.shadow_concurrency,
        type=_positive_int,
    )
    add(
        "--shadow-queue",
        "mirrored requests waiting; beyond it they are dropped and counted",
        default=_DEFAULTS.shadow_queue,
        type=_positive_int,
    )
    add("--access-log", "log one line per request (slower)", default=False, type=_bool, nargs="?", const=True)
    add("--log-level", "DEBUG, INFO, WARNING or ERROR", default=_DEFAULTS.log_level, type=_level)
    return parser


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags and environment; exits with code 2 and a usage message on invalid input."""
    env = os.environ if environ is None else environ
    ns = build_parser(env).parse_args(argv)
    return Settings(**vars(ns), feedback_token=env.get(FEEDBACK_TOKEN_ENV) or None)
