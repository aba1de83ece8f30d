"""The pod scraper: GET http://<pod IP>:8082/metrics on aiohttp (kopf's own HTTP client).

I/O only; what the text means is `monitor.scrape`'s business. Every network edge has limits
(issue #21): a connect timeout, a read timeout between bytes, a total timeout for the whole
answer, a cap on the (decompressed) body, a cap on concurrent connections, no redirects, and
aiohttp's own limits on the status line and headers.

Invariant: a scrape never raises. Whatever one pod does (refuses the connection, answers a
non-200 status, a malformed chunked body, a body over the cap, nothing in time), the answer is
None for that pod only, so the other pods' metrics still land when the reconciler gathers
several scrapes. A failing pod is logged once, when it starts failing or fails differently, and
once more when it answers again: a pod that stays broken writes no log line per interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import aiohttp

from mlops_operator.build.inferenceservice import METRICS_PATH, MONITORING_PORT
from mlops_operator.httpclient import TooLarge, read_capped, session

log = logging.getLogger("mlops_operator")

# Reads a serving pod's /metrics text; None when there is none to read (no IP, a failed scrape).
Scraper = Callable[[Mapping[str, Any]], Awaitable[str | None]]
# Where a pod's metrics are served: (host, port), or None when it has no address yet.
Address = Callable[[Mapping[str, Any]], tuple[str, int] | None]

# A serving pod's exposition is a few kB (a histogram, a gauge per feature); 4 MiB leaves room
# for thousands of features and still bounds what one pod can make the operator hold.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
CONNECT_TIMEOUT_SECONDS: Final = 2.0
READ_TIMEOUT_SECONDS: Final = 3.0
TOTAL_TIMEOUT_SECONDS: Final = 5.0
MAX_CONNECTIONS: Final = 64
# Pods remembered as failing (for logging once); beyond this the oldest are forgotten.
MAX_REMEMBERED_FAILURES: Final = 10_000

# Failure reasons (bounded: they label the operator's scrape failure counter).
CONNECT: Final = "connect"
TIMEOUT: Final = "timeout"
STATUS: Final = "status"
TOO_LARGE: Final = "too_large"
MALFORMED: Final = "malformed"
REASONS: Final = (CONNECT, TIMEOUT, STATUS, TOO_LARGE, MALFORMED)


class ScrapeFailed(Exception):
    """One pod's scrape failed; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def pod_address(pod: Mapping[str, Any]) -> tuple[str, int] | None:
    """The pod IP and the server's monitoring port (build.inferenceservice.MONITORING_PORT)."""
    ip = (pod.get("status") or {}).get("podIP")
    return (str(ip), MONITORING_PORT) if ip else None


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}{METRICS_PATH}" if ":" in host else f"http://{host}:{port}{METRICS_PATH}"


def _pod_name(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class HttpScraper:
    """The production `Scraper`. One aiohttp session per operator loop, opened at the first
    scrape (a session belongs to the loop it was made in) and closed by `close()`."""

    def __init__(
        self,
        *,
        address: Address = pod_address,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        total_timeout: float = TOTAL_TIMEOUT_SECONDS,
        max_bytes: int = MAX_BODY_BYTES,
        max_connections: int = MAX_CONNECTIONS,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._address = address
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        # Around the request and the whole body (aiohttp's `total` would also count the wait
        # for a pooled connection, failing healthy pods when many are scraped at once).
        self._total = total_timeout
        self._max_bytes = max_bytes
        self._max_connections = max_connections
        self._on_failure = on_failure
        self._session: aiohttp.ClientSession | None = None
        # pod -> the failure last logged for it (pods that answer are not in here).
        self._failing: dict[str, str] = {}

    async def __call__(self, pod: Mapping[str, Any]) -> str | None:
        target = self._address(pod)
        if target is None:
            return None
        name = _pod_name(pod)
        try:
            text = await self._get(_url(*target))
        except ScrapeFailed as e:
            self._failed(name, e)
            return None
        if self._failing.pop(name, None) is not None:
            log.info("Scraped pod %s again", name, extra={"object": f"Pod/{name}"})
        return text

    async def _get(self, url: str) -> str:
        try:
            async with asyncio.timeout(self._total):
                async with self._open().get(url, allow_redirects=False) as response:
                    if response.status != 200:
                        raise ScrapeFailed(STATUS, f"HTTP {response.status} from {url}")
                    body = await read_capped(response, self._max_bytes)
        except TooLarge as e:
            raise ScrapeFailed(TOO_LARGE, str(e)) from e
        except TimeoutError as e:  # aiohttp's own timeouts are TimeoutErrors too
            raise ScrapeFailed(TIMEOUT, f"no answer from {url} in time") from e
        except aiohttp.ClientPayloadError as e:  # a broken chunked or compressed body
            raise ScrapeFailed(MALFORMED, f"malformed body from {url}: {e}") from e
        except aiohttp.ClientResponseError as e:  # an unparsable status line or headers
            raise ScrapeFailed(MALFORMED, f"malformed answer from {url}: {e.message}") from e
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise ScrapeFailed(CONNECT, f"{url}: {e or type(e).__name__}") from e
        return body.decode(errors="replace")

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = session(self._timeout, limit=self._max_connections)
        return self._session

    def _failed(self, name: str, error: ScrapeFailed) -> None:
        if self._on_failure is not None:
            self._on_failure(error.reason)
        message = " ".join(str(error).split())  # aiohttp's parser errors span several lines
        if self._failing.get(name) == message:
            log.debug("Scrape of pod %s failed again: %s", name, message)
            return
        self._failing.pop(name, None)
        self._failing[name] = message
        while len(self._failing) > MAX_REMEMBERED_FAILURES:
            del self._failing[next(iter(self._failing))]
        log.warning(
            "Scrape of pod %s failed: %s",
            name,
            message,
            extra={"object": f"Pod/{name}", "reason": error.reason},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
