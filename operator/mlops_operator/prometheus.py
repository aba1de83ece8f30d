"""The Prometheus client: one instant query (POST /api/v1/query) on aiohttp, for InferenceServices
whose spec.monitoring.prometheusUrl is set (issue #21). What the query and the answer mean is
monitor.promql's business; this module only moves bytes, with limits on every edge: a connect
timeout, a read timeout between bytes, a total timeout (and Prometheus' own `timeout` parameter,
a little shorter), a cap on the answer's size, no redirects, no proxy or cookies from the
environment.

Credentials (optional, README "Observability"): a bearer token read from a file at each query
(a mounted Secret's file follows its rotation) and a CA bundle for https. The token is sent only
to the URL prefixes the operator's settings name (MLOPS_PROMETHEUS_CREDENTIALS_FOR): anyone who
may create an InferenceService chooses its prometheusUrl, and must not be able to collect the
operator's token with it.

Invariant: `query` raises only QueryFailed (reason one of REASONS, message naming the URL), so the
reconciler turns every failure into the MetricsAvailable condition.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import aiohttp
from yarl import URL

from mlops_operator.httpclient import TooLarge, read_capped, session
from mlops_operator.monitor.promql import BadAnswer, Sample, parse_response

# The answer holds a few series per pod and one per feature: 4 MiB is far beyond that.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
CONNECT_TIMEOUT_SECONDS: Final = 3.0
READ_TIMEOUT_SECONDS: Final = 10.0
TOTAL_TIMEOUT_SECONDS: Final = 15.0
# Prometheus stops evaluating after this (its `timeout` parameter), before our own total timeout.
QUERY_TIMEOUT: Final = "10s"
MAX_CONNECTIONS: Final = 16

# Failure reasons (each becomes a condition reason: see reconcile/inferenceservice.py).
UNREACHABLE: Final = "unreachable"
TIMEOUT: Final = "timeout"
HTTP: Final = "http"
TOO_LARGE: Final = "too_large"
MALFORMED: Final = "malformed"
QUERY: Final = "query"
REASONS: Final = (UNREACHABLE, TIMEOUT, HTTP, TOO_LARGE, MALFORMED, QUERY)


class QueryFailed(Exception):
    """A query failed; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def query_url(base: str) -> URL:
    """<base>/api/v1/query (a path prefix in `base` is kept; its query and fragment are not)."""
    try:
        url = URL(base)
    except ValueError as e:
        raise QueryFailed(UNREACHABLE, f"{base} is not a valid URL: {e}") from e
    if url.scheme not in ("http", "https") or not url.host:
        raise QueryFailed(UNREACHABLE, f"{base} is not an http(s) URL with a host")
    return url.with_query(None).with_fragment(None).with_path(url.path.rstrip("/") + "/api/v1/query")


def trusted(url: URL, prefixes: Sequence[str]) -> bool:
    """Whether the credentials may go to `url`: it starts with one of `prefixes` (same scheme,
    host and port, and the prefix's path as a whole path segment)."""
    for prefix in prefixes:
        p = URL(prefix)
        if (p.scheme, p.host, p.port) != (url.scheme, url.host, url.port):
            continue
        base = p.path.rstrip("/")
        if url.path == base or url.path.startswith(base + "/"):
            return True
    return False


class PrometheusClient:
    """The production client. One aiohttp session per operator loop, opened at the first query
    (a session belongs to the loop it was made in) and closed by `close()`."""

    def __init__(
        self,
        *,
        token_file: str = "",
        ca_file: str = "",
        credentials_for: Sequence[str] = (),
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        total_timeout: float = TOTAL_TIMEOUT_SECONDS,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._token_file = token_file
        self._ca_file = ca_file
        self._credentials_for = tuple(credentials_for)
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._total = total_timeout
        self._max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    async def query(self, base: str, expr: str) -> list[Sample]:
        """The instant vector `expr` evaluates to, now, on the Prometheus at `base`."""
        url = query_url(base)
        headers = {"Accept": "application/json"}
        token = self._token() if trusted(url, self._credentials_for) else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, body = await self._post(url, {"query": expr, "timeout": QUERY_TIMEOUT}, headers)
        try:
            samples = parse_response(body)
        except BadAnswer as e:
            reason = e.reason if status // 100 == 2 or e.reason == QUERY else HTTP
            raise QueryFailed(reason, f"{_http(status)} from {url}: {e}") from e
        if status // 100 != 2:
            raise QueryFailed(HTTP, f"{_http(status)} from {url}")
        return samples

    def _token(self) -> str | None:
        if not self._token_file:
            return None
        try:
            return Path(self._token_file).read_text().strip() or None
        except FileNotFoundError:
            return None  # the optional Secret is not there: query without credentials

    async def _post(self, url: URL, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self._total):
                async with self._open().post(
                    url, data=form, headers=headers, allow_redirects=False
                ) as response:
                    return response.status, await read_capped(response, self._max_bytes)
        except TooLarge as e:
            raise QueryFailed(TOO_LARGE, f"answer of {url}: {e}") from e
        except TimeoutError as e:
            raise QueryFailed(TIMEOUT, f"no answer from {url} within {self._total:g} s") from e
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as e:
            raise QueryFailed(MALFORMED, f"malformed answer from {url}: {' '.join(str(e).split())}") from e
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise QueryFailed(UNREACHABLE, f"{url}: {' '.join(str(e).split()) or type(e).__name__}") from e

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            context = ssl.create_default_context()
            if self._ca_file and Path(self._ca_file).exists():
                context.load_verify_locations(cafile=self._ca_file)
            self._session = session(self._timeout, limit=MAX_CONNECTIONS, ssl_context=context)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _http(status: int) -> str:
    return f"HTTP {status}"
