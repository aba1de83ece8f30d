"""Shadow mode (issue #22): mirror served V2 and V1 HTTP requests to the challenger, off the
answer's path (gRPC requests are not mirrored).

The champion answers its user first; `Mirror.offer` then puts a copy of the request (the raw
body, its Content-Encoding and binary-header length, and the champion's request id in the
`mlops-request-id` header) on a bounded queue and returns at once. `concurrency` workers, each
with one keep-alive HTTP/1.1 connection to the challenger's Service, send them; the challenger's
answer (its predicted labels and version) goes to `on_answer`, which pairs it with the champion's
remembered prediction for feedback scoring (mlops_server.monitoring.FeedbackStore).

Limits, so the challenger can never hurt the champion's users:
- the queue holds at most `queue` requests: a full queue drops the copy (counted `dropped`);
- each exchange (connect, send, answer) has `timeout` seconds (counted `timeout`); an answer
  has at most `max_answer_bytes`; a refused connection, an error status or an answer that does
  not parse counts `failed`;
- after a failure a worker waits `backoff` seconds before its next attempt, so an unreachable
  challenger costs one connection attempt per worker and backoff, not one per request: the
  queue fills meanwhile and the copies are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httptools
import orjson

from mlops_server import logs

log = logs.get("shadow")

REQUEST_ID_HEADER: Final = b"mlops-request-id"
MAX_ANSWER_BYTES: Final = 16 << 20
BACKOFF_SECONDS: Final = 1.0
# Results counted by mlops_shadow_requests_total.
ANSWERED: Final = "answered"
DROPPED: Final = "dropped"
FAILED: Final = "failed"
TIMEOUT: Final = "timeout"


@dataclass(frozen=True, slots=True)
class Copy:
    """One mirrored request."""

    path: str
    body: bytes
    request_id: str
    encoding: bytes = b""
    json_length: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What the challenger predicted for a mirrored request."""

    request_id: str
    version: str
    labels: list[Any]


class ChallengerError(Exception):
    """The challenger's answer was an error status or did not parse."""


def parse_answer(request_id: str, body: bytes) -> Answer:
    """The challenger's answer -> its version and predicted labels: a V2 answer's `predict`
    output, or a V1 answer's `predictions` (ChallengerError otherwise)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ChallengerError(f"answer is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ChallengerError("answer is not a JSON object")
    version = doc.get("model_version")
    if isinstance(doc.get("predictions"), list):  # V1: labels, one per instance
        return Answer(request_id, str(version or ""), doc["predictions"])
    for output in doc.get("outputs") or []:
        if (
            isinstance(output, dict)
            and output.get("name") == "predict"
            and isinstance(output.get("data"), list)
        ):
            return Answer(request_id, str(version or ""), output["data"])
    raise ChallengerError("answer has no 'predict' output")


class _Response:
    """httptools callbacks collecting one response (status, body), bounded in size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_bytes:
            raise ChallengerError(f"answer larger than {self.max_bytes} bytes")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        # Read here: once the message is over, the parser answers False whatever the headers said.
        self.keep_alive = self.parser.should_keep_alive()
        self.done = True


class Mirror:
    """The bounded, asynchronous mirror of one champion pod (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        percent: float,
        timeout: float,
        on_answer: Callable[[Answer], None],
        count: Callable[[str], None],
        concurrency: int = 4,
        queue: int = 256,
        backoff: float = BACKOFF_SECONDS,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.host, self.port = host, port
        self.share = percent / 100.0
        self.timeout = timeout
        self.backoff = backoff
        self.max_answer_bytes = max_answer_bytes
        self._on_answer = on_answer
        self._count = count
        self._concurrency = concurrency
        self._queue: asyncio.Queue[Copy] = asyncio.Queue(maxsize=queue)
        self._workers: list[asyncio.Task[None]] = []
        self._random = random.Random()  # noqa: S311 - sampling, not security

    def start(self) -> None:
        """Start the workers (on the running loop)."""
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(self._concurrency)]

    async def stop(self) -> None:
        """Cancel the workers; copies still queued are dropped (not counted: the pod is stopping)."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []

    def offer(self, copy: Copy | Callable[[], Copy]) -> None:
        """Queue a copy of an answered request (sampled at `share`); never blocks, never raises.
        A callable makes the copy only when it is sampled and has room (a gRPC request is
        re-encoded for HTTP)."""
        if self.share < 1.0 and self._random.random() >= self.share:
            return
        if self._queue.full():  # no QueueFull exception per dropped copy: it costs ~5 us
            self._count(DROPPED)
            return
        if callable(copy):
            try:
                copy = copy()
            except Exception as e:  # never the user's problem
                log.warning("Could not copy a request for the challenger", extra={"error": str(e)})
                self._count(FAILED)
                return
        self._queue.put_nowait(copy)

    async def _work(self) -> None:
        conn: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []  # the one kept alive
        try:
            while True:
                await self._mirror(await self._queue.get(), conn)
        finally:  # cancelled: the pod is stopping
            if conn:
                _close(conn.pop())

    async def _mirror(
        self, copy: Copy, conn: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    ) -> None:
        """One exchange on the kept connection (opened when there is none); failures back off."""
        try:
            async with asyncio.timeout(self.timeout):
                if not conn:
                    conn.append(await asyncio.open_connection(self.host, self.port))
                body, keep = await self._exchange(conn[0], copy)
            answer = parse_answer(copy.request_id, body)
        except (TimeoutError, OSError, ChallengerError, httptools.HttpParserError) as e:
            self._count(TIMEOUT if isinstance(e, TimeoutError) else FAILED)
            if conn:
                _close(conn.pop())
            log.debug("Mirroring failed", extra={"fields": {"id": copy.request_id, "error": repr(e)}})
            await asyncio.sleep(self.backoff)
            return
        if not keep:
            _close(conn.pop())
        self._count(ANSWERED)
        self._on_answer(answer)

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], copy: Copy
    ) -> tuple[bytes, bool]:
        reader, writer = conn
        head = [
            f"POST {copy.path} HTTP/1.1".encode(),
            f"host: {self.host}".encode(),
            b"content-type: application/json",
            f"content-length: {len(copy.body)}".encode(),
            REQUEST_ID_HEADER + b": " + copy.request_id.encode(),
        ]
        if copy.encoding:
            head.append(b"content-encoding: " + copy.encoding)
        if copy.json_length is not None:
            head.append(f"inference-header-content-length: {copy.json_length}".encode())
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + copy.body)
        await writer.drain()
        response = _Response(self.max_answer_bytes)
        while not response.done:
            data = await reader.read(65536)
            if not data:
                raise ChallengerError("connection closed before the answer ended")
            response.parser.feed_data(data)
        status = response.parser.get_status_code()
        body = b"".join(response.chunks)
        if status != 200:
            raise ChallengerError(f"status {status}: {body[:200]!r}")
        return body, response.keep_alive


def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    conn[1].close()
