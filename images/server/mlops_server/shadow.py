"""Shadow mode (issue #22): mirror served V2 and V1 HTTP requests (and gRPC ones, re-encoded as
V2 binary-extension requests by the caller) to the challenger, off the answer's path.

The champion answers its user first; `Mirror.offer` then puts a copy of the request (the raw
body, its Content-Encoding and binary-header length, and the champion's request id in the
`mlops-request-id` header) on a bounded queue and returns at once. `concurrency` workers, each
with one keep-alive HTTP/1.1 connection to the challenger's Service, send them in batches: a
worker that takes a copy waits `linger` seconds, then sends it with the copies queued meanwhile
(at most `batch`) pipelined in one write, and reads the answers in order. The champion's event
loop then wakes once per batch instead of once per copy; copy by copy, those wake-ups broke up
the users' prediction batches (tests/benchmarks/shadow.py: 18.7 % of the champion's req/s at
10 % mirrored, 5.5 % batched). The challenger's answer (its predicted labels and version) goes
to `on_answer`, which pairs it with the champion's remembered prediction for feedback scoring
(mlops_server.monitoring.FeedbackStore).

Limits, so the challenger can never hurt the champion's users:
- the queue holds at most `queue` requests: a full queue drops the copy (counted `dropped`);
- each batch's exchange (connect, send, every answer) has `timeout` seconds (the copies not
  yet answered count `timeout`); an answer has at most `max_answer_bytes`; a refused or closed
  connection counts the unanswered copies `failed`, and so does an error status or an answer
  that does not parse (that copy only);
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
    """httptools callbacks collecting the pipelined answers of one batch, in order, as
    (status, body), each bounded in size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.chunks: list[bytes] = []
        self.size = 0
        self.keep_alive = False
        self.answers: list[tuple[int, bytes]] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_bytes:
            raise ChallengerError(f"answer larger than {self.max_bytes} bytes")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        # Read here: once the message is over, the parser answers False whatever the headers said.
        self.keep_alive = self.parser.should_keep_alive()
        self.answers.append((self.parser.get_status_code(), b"".join(self.chunks)))
        self.chunks, self.size = [], 0


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
        linger: float = 0.02,
        batch: int = 32,
    ) -> None:
        self.host, self.port = host, port
        self._host_header = f"host: {host}".encode()
        self.linger, self.batch = linger, batch
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
                batch = [await self._queue.get()]
                if self.linger:
                    await asyncio.sleep(self.linger)
                while len(batch) < self.batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._mirror(batch, conn)
        finally:  # cancelled: the pod is stopping
            if conn:
                _close(conn.pop())

    async def _mirror(
        self, batch: list[Copy], conn: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    ) -> None:
        """One pipelined exchange of the batch on the kept connection (opened when there is
        none); failures back off."""
        answered = 0
        try:
            async with asyncio.timeout(self.timeout):
                if not conn:
                    conn.append(await asyncio.open_connection(self.host, self.port))
                reader, writer = conn[0]
                writer.write(b"".join(self._request(copy) for copy in batch))
                await writer.drain()
                response = _Response(self.max_answer_bytes)
                while len(response.answers) < len(batch):
                    data = await reader.read(65536)
                    if not data:
                        raise ChallengerError("connection closed before the answer ended")
                    response.parser.feed_data(data)
                    while answered < len(response.answers):
                        self._answered(batch[answered], *response.answers[answered])
                        answered += 1
        except (TimeoutError, OSError, ChallengerError, httptools.HttpParserError) as e:
            for _ in batch[answered:]:
                self._count(TIMEOUT if isinstance(e, TimeoutError) else FAILED)
            if conn:
                _close(conn.pop())
            log.debug(
                "Mirroring failed", extra={"fields": {"id": batch[answered].request_id, "error": repr(e)}}
            )
            await asyncio.sleep(self.backoff)
            return
        if not response.keep_alive:
            _close(conn.pop())

    def _answered(self, copy: Copy, status: int, body: bytes) -> None:
        try:
            if status != 200:
                raise ChallengerError(f"status {status}: {body[:200]!r}")
            answer = parse_answer(copy.request_id, body)
        except ChallengerError as e:
            self._count(FAILED)
            log.debug("Mirroring failed", extra={"fields": {"id": copy.request_id, "error": repr(e)}})
            return
        self._count(ANSWERED)
        self._on_answer(answer)

    def _request(self, copy: Copy) -> bytes:
        head = [
            f"POST {copy.path} HTTP/1.1".encode(),
            self._host_header,
            b"content-type: application/json",
            b"content-length: %d" % len(copy.body),
            REQUEST_ID_HEADER + b": " + copy.request_id.encode(),
        ]
        if copy.encoding:
            head.append(b"content-encoding: " + copy.encoding)
        if copy.json_length is not None:
            head.append(b"inference-header-content-length: %d" % copy.json_length)
        return b"\r\n".join(head) + b"\r\n\r\n" + copy.body


def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    conn[1].close()
