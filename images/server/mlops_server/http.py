"""A lean HTTP/1.1 server: asyncio protocols + the httptools parser, no framework.

Each connection parses requests as bytes arrive and answers them strictly in order
(pipelining-safe): one request is handled at a time, later ones wait in a short queue, and
reading pauses when that queue grows. Handlers answer through a callback, so a request that
waits for a model batch costs no task or coroutine.

Limits (`Limits`, every one a server flag) and the answer to each:
- request line (URL) over `max_url_bytes`: 414 and close; the URL is never echoed back whole;
- header block over `max_header_bytes` or more than `max_headers` fields: 431 and close. The
  parser buffers an unfinished header itself, so the bytes read while a head is unfinished
  are counted too: memory per connection stays within the limit plus one read (256 KiB);
- body over `max_body_bytes`: drained and answered with 413 (the client sees the status, not
  a reset); far beyond it the connection is dropped;
- unanswered pipelined requests: at most `_MAX_PIPELINED` and `max_pipeline_bytes` of them
  per connection; beyond either, reading pauses until the queue halves (TCP pushes back);
  a client that does not read its answers stops the connection at the transport's write
  buffer (pause_writing): no further request is answered or read until it drains;
- connections beyond `max_connections`: one 503 and close, before any byte is read;
- an idle keep-alive connection closes after `idle_timeout`; a request head not complete
  `header_timeout` after its first byte, or a body not complete `body_timeout` after its head,
  gets 408 and close (slowloris). A sweeper checks deadlines, so a request costs no timer.
Every request gets exactly one answer: malformed HTTP (smuggling: Content-Length with
Transfer-Encoding included) gets 400 and close; an Upgrade or CONNECT request is answered
once, then the connection closes (what follows is not HTTP). `Expect: 100-continue` is
honoured only when the request is next in line, so a pipelined 100 never overtakes earlier
answers. A half-closed client gets its complete requests answered, then the socket closes;
an unfinished request at EOF closes at once.
After `begin_shutdown` the listener is closed, idle connections close at once, and busy ones
close after answering what they already received.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import httptools
import orjson

from mlops_server import logs

log = logs.get("http")

JSON: Final = b"application/json"
_REASONS: Final = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    408: "Request Timeout",
    413: "Payload Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_MAX_PIPELINED: Final = 64
# A body this far over the limit is no longer drained politely: the connection is dropped.
_DISCARD_FACTOR: Final = 4
# After a closing answer the write side shuts and what the client still sends is read and
# dropped until it has sent nothing for _LINGER_SECONDS, _LINGER_MAX at most: closing with
# unread bytes would send a reset, which can destroy the answer in the client's buffer
# before it reads it (nginx's "lingering close").
_LINGER_SECONDS: Final = 2.0
_LINGER_MAX: Final = 30.0
# How much of an offending URL an error message may quote.
_QUOTED_URL: Final = 200


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection and per-server limits; see the module docstring for the answer to each."""

    max_body_bytes: int = 8 << 20
    max_url_bytes: int = 8 << 10
    max_header_bytes: int = 32 << 10
    max_headers: int = 100
    max_pipeline_bytes: int = 8 << 20
    max_connections: int = 2048
    idle_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0


class _Refused(Exception):
    """Raised from a parser callback: answer `status` and close (what follows cannot be framed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def quoted(text: str) -> str:
    """`text` for an error message: long client-sent strings are cut, never echoed whole."""
    return text if len(text) <= _QUOTED_URL else f"{text[:_QUOTED_URL]}... ({len(text)} characters)"


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()


_STATUS_LINES: Final = {status: _status_line(status) for status in _REASONS}


class Request:
    __slots__ = (
        "authorization",
        "body",
        "close",
        "encoding",
        "json_length",
        "keep_alive",
        "method",
        "mirror_id",
        "path",
        "query",
        "size",
        "started",
    )

    def __init__(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: bytes = b"",
        keep_alive: bool = True,
        json_length: int | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.keep_alive = keep_alive
        self.json_length = json_length
        self.started = time.perf_counter()
        self.close = False
        self.size = 0
        self.encoding = b""  # Content-Encoding, lower case; b"" for identity
        self.authorization = b""  # the Authorization header, as sent
        self.mirror_id = ""  # mlops-request-id: the champion's id of a mirrored request (issue #22)


class Response:
    __slots__ = ("body", "close", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = JSON,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.close = close

    def encode(self, keep_alive: bool) -> bytes:
        head = _STATUS_LINES.get(self.status) or _status_line(self.status)
        parts = [
            head,
            b"content-type: ",
            self.content_type,
            b"\r\ncontent-length: ",
            str(len(self.body)).encode(),
            b"\r\n",
        ]
        for name, value in self.headers:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", self.body)
        return b"".join(parts)


def error(status: int, message: str, **extra: object) -> Response:
    return Response(status, orjson.dumps({"error": message, **extra}))


Respond = Callable[[Response], None]
Handler = Callable[[Request, Respond], None]


# Connection phases, for the sweeper's deadlines.
_IDLE: Final = 0  # between requests (or before the first): idle_timeout
_HEAD: Final = 1  # a request head has begun: header_timeout
_BODY: Final = 2  # its head is complete, its body is not: body_timeout
_BUSY: Final = 3  # requests are being answered: the server's own time, no deadline


class Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._limits = server.limits
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._pending: deque[tuple[Request, Response | None]] = deque()
        self._pending_bytes = 0
        self._current: Request | None = None
        self._in_message = False
        self._paused = False
        self._write_paused = False
        self._dead = False
        self._broken = False
        self._eof = False
        self._dispatching = False
        self._continue_owed = False
        self._lingering = False
        self._linger_until = 0.0
        self._last_completed: Request | None = None
        self.deadline = 0.0
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._body: list[bytes] = []
        self._body_size = 0
        self._content_length = -1
        self._json_length: int | None = None
        self._encoding = b""
        self._authorization = b""
        self._mirror_id = b""
        self._expect_continue = False
        self._too_large = False
        self._header_error: str | None = None
        self._head_bytes = 0
        self._headers = 0
        self._head_done = False
        self._began_in_chunk = False

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        server = self._server
        if len(server.connections) >= self._limits.max_connections:
            # Over the cap: one answer, before reading anything, and the socket goes.
            self._dead = True
            server.refused += 1
            transport.write(
                error(
                    503, f"the server has {self._limits.max_connections} connections open; retry later"
                ).encode(False)
            )
            transport.close()
            return
        server.connections.add(self)
        self._arm(_IDLE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._pending.clear()
        self._body = []
        self._server.connections.discard(self)

    def pause_writing(self) -> None:
        # The client is not reading its answers: answer nothing more, read nothing more, until
        # the transport's buffer drains (without this a pipelining client that never reads
        # makes the server buffer every answer).
        self._write_paused = True
        if self._transport is not None and not self._paused:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and not self._paused and not self._dead:
            self._transport.resume_reading()
        self._next()

    def eof_received(self) -> bool:
        # The client half-closed: answer the complete requests it sent, then close (True keeps
        # our side open until then). An unfinished request can never complete: close now.
        self._eof = True
        if self.idle or self._in_message or self._lingering:
            self.close()
        return True

    def data_received(self, data: bytes) -> None:
        if self._dead or self._broken:
            if self._lingering:
                self.deadline = min(time.monotonic() + _LINGER_SECONDS, self._linger_until)
            return
        self._began_in_chunk = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request before the upgrade was answered (or will be); what follows is another
            # protocol: stop parsing and close after that one answer.
            self._broken = True
            completed = self._last_completed
            if completed is not None and not self._in_message:
                completed.close = True
                if self._current is None and not self._pending:
                    self.close()
            else:
                self._queue_error(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserCallbackError as e:
            refused = e.__context__
            if isinstance(refused, _Refused):
                self._queue_error(refused.status, refused.message)
                return
            self._queue_error(400, f"malformed HTTP request: {e}")
            return
        except httptools.HttpParserError as e:
            self._queue_error(400, f"malformed HTTP request: {e}")
            return
        if self._in_message and not self._head_done and not self._broken:
            # The parser holds the unfinished header itself: count what it may be buffering.
            if not self._began_in_chunk:
                self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes:
                self._queue_error(431, f"request head exceeds the {self._limits.max_header_bytes}-byte limit")

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._reset_message()
        self._began_in_chunk = True
        if self._current is None and not self._pending:
            self._arm(_HEAD)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            raise _Refused(414, f"request URL exceeds the {self._limits.max_url_bytes}-byte limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._head_bytes += len(name) + len(value) + 4
        limits = self._limits
        if self._headers > limits.max_headers:
            raise _Refused(431, f"request has more than {limits.max_headers} header fields")
        if self._head_bytes > limits.max_header_bytes:
            raise _Refused(431, f"request head exceeds the {limits.max_header_bytes}-byte limit")
        lowered = name.lower()
        if lowered == b"content-length":
            try:
                self._content_length = int(value)
            except ValueError:
                self._header_error = "invalid Content-Length"
        elif lowered == b"inference-header-content-length":
            try:
                self._json_length = int(value)
            except ValueError:
                self._header_error = "invalid Inference-Header-Content-Length"
        elif lowered == b"content-encoding":
            self._encoding = value.strip().lower()
        elif lowered == b"authorization":
            self._authorization = value
        elif lowered == b"mlops-request-id":
            self._mirror_id = value[:256]
        elif lowered == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        self._head_done = True
        if self._current is None and not self._pending:
            self._arm(_BODY)
        limit = self._server.max_body_bytes
        if self._content_length > limit:
            self._too_large = True
            if self._expect_continue:
                # The client waits for permission before sending the body: refuse now and close.
                self._expect_continue = False
                self._finish_message(refused=True)
            return
        if self._expect_continue:
            self._expect_continue = False
            # Only the request next in line may get its 100: a pipelined one waits until the
            # earlier requests are answered (their answers come first on the wire).
            if self._current is None and not self._pending:
                self._send_continue()
            else:
                self._continue_owed = True

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._too_large:
            if self._body_size > _DISCARD_FACTOR * self._server.max_body_bytes:
                self._abort()
            return
        if self._body_size > self._server.max_body_bytes:
            self._too_large = True
            self._body.clear()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._finish_message(refused=False)

    # --- request queue ---------------------------------------------------------------------

    def _send_continue(self) -> None:
        self._continue_owed = False
        if self._transport is not None and not self._dead:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _arm(self, phase: int) -> None:
        """Set the sweeper's deadline for the phase the connection enters."""
        limits = self._limits
        if phase == _BUSY:
            self.deadline = 0.0
            return
        timeout = (
            limits.idle_timeout
            if phase == _IDLE
            else limits.header_timeout
            if phase == _HEAD
            else limits.body_timeout
        )
        self.deadline = time.monotonic() + timeout

    def expire(self) -> None:
        """The sweeper found the deadline passed: idle connections close, slow requests get 408."""
        self.deadline = 0.0
        if self._lingering:
            self.close()
            return
        if self._dead:
            return
        if self._in_message and self._current is None and not self._pending:
            what = "head" if not self._head_done else "body"
            self._queue_error(408, f"request {what} not received in time")
        elif self.idle:
            self.close()

    def _finish_message(self, refused: bool) -> None:
        if not self._in_message:
            return
        self._in_message = False
        raw_path, _, raw_query = self._url.partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        keep_alive = self._parser.should_keep_alive() and not refused
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        request = Request(
            self._parser.get_method().decode("latin-1"),
            path,
            query=raw_query.decode("latin-1"),
            body=body,
            keep_alive=keep_alive,
            json_length=self._json_length,
        )
        if self._encoding and self._encoding != b"identity":
            request.encoding = self._encoding
        request.authorization = self._authorization
        if self._mirror_id:
            request.mirror_id = self._mirror_id.decode("latin-1")
        self._last_completed = request
        preset: Response | None = None
        if self._too_large:
            preset = error(413, f"request body exceeds the {self._server.max_body_bytes}-byte limit")
            request.close = refused
        elif self._header_error is not None:
            preset = error(400, self._header_error)
            request.close = True
        size = len(body) + len(self._url)
        self._pending.append((request, preset))
        self._pending_bytes += size
        request.size = size
        if (
            (len(self._pending) > _MAX_PIPELINED or self._pending_bytes > self._limits.max_pipeline_bytes)
            and not self._paused
            and self._transport is not None
        ):
            self._paused = True
            self._transport.pause_reading()
        self._next()

    def _queue_error(self, status: int, message: str) -> None:
        self._in_message = False
        self._body = []
        request = Request("", "", keep_alive=False)
        request.close = True
        self._pending.append((request, error(status, message)))
        # Stop parsing: what follows a malformed request cannot be framed.
        self._broken = True
        self._next()

    def _next(self) -> None:
        # Handlers may answer synchronously (health, metadata, errors), which re-enters here
        # through _respond: the flag turns that into another turn of this loop, not recursion.
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._current is None and self._pending and not self._dead and not self._write_paused:
                request, preset = self._pending.popleft()
                self._pending_bytes -= request.size
                self._current = request
                self.deadline = 0.0
                if (
                    self._paused
                    and len(self._pending) <= _MAX_PIPELINED // 2
                    and self._pending_bytes <= self._limits.max_pipeline_bytes // 2
                    and self._transport is not None
                ):
                    self._paused = False
                    if not self._write_paused:
                        self._transport.resume_reading()
                if preset is not None:
                    self._respond(request, preset)
                else:
                    self._server.dispatch(request, _Responder(self, request))
        finally:
            self._dispatching = False

    def _respond(self, request: Request, response: Response) -> None:
        if request is not self._current:
            return  # answered twice, or the connection moved on: ignore
        self._current = None
        transport = self._transport
        if self._dead or transport is None or transport.is_closing():
            return
        keep_alive = (
            request.keep_alive and not request.close and not response.close and not self._server.closing
        )
        try:
            payload = response.encode(keep_alive)
        except Exception as e:  # a handler built an unencodable response: still one answer
            log.exception("Failed to encode a response", extra={"fields": {"path": quoted(request.path)}})
            payload = error(500, f"internal server error: {type(e).__name__}").encode(keep_alive)
        transport.write(payload)
        if self._server.access_log:
            log.info(
                "Answered request",
                extra={
                    "fields": {
                        "method": request.method,
                        "path": quoted(request.path),
                        "status": response.status,
                        "seconds": round(time.perf_counter() - request.started, 6),
                    }
                },
            )
        if not keep_alive:
            self._linger(transport)
            return
        self._next()
        if self._current is None and not self._pending:
            if (self._eof and not self._in_message) or self._broken:
                self.close()
            elif self._in_message:
                self._arm(_BODY if self._head_done else _HEAD)
                if self._continue_owed:
                    self._send_continue()
            else:
                self._arm(_IDLE)

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close after the last answer: shut our side, drop what still arrives, close on EOF."""
        self._dead = True
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = True
        self._linger_until = time.monotonic() + _LINGER_MAX
        self.deadline = time.monotonic() + _LINGER_SECONDS
        if self._paused or self._write_paused:
            self._paused = self._write_paused = False
            transport.resume_reading()

    def _abort(self) -> None:
        self._dead = True
        if self._transport is not None:
            self._transport.abort()

    @property
    def idle(self) -> bool:
        return self._current is None and not self._pending and not self._in_message

    def close(self) -> None:
        self._dead = True
        if self._transport is not None:
            self._transport.close()


class _Responder:
    """The `respond` callable handed to a handler: answers its request exactly once."""

    __slots__ = ("_connection", "_request")

    def __init__(self, connection: Connection, request: Request) -> None:
        self._connection = connection
        self._request = request

    def __call__(self, response: Response) -> None:
        self._connection._respond(self._request, response)


class HttpServer:
    def __init__(self, handler: Handler, limits: Limits | int, access_log: bool = False) -> None:
        self.handler = handler
        self.limits = limits if isinstance(limits, Limits) else Limits(max_body_bytes=limits)
        self.max_body_bytes = self.limits.max_body_bytes
        self.access_log = access_log
        self.connections: set[Connection] = set()
        self.closing = False
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), host, port, backlog=1024, reuse_address=True
        )
        self._sweep()
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _sweep(self) -> None:
        """Expire connections past their deadline; runs a few times per shortest timeout."""
        limits = self.limits
        now = time.monotonic()
        for connection in [c for c in self.connections if 0.0 < c.deadline <= now]:
            connection.expire()
        interval = min(
            1.0, max(0.02, min(limits.idle_timeout, limits.header_timeout, limits.body_timeout) / 4)
        )
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def dispatch(self, request: Request, respond: Respond) -> None:
        try:
            self.handler(request, respond)
        except Exception:
            log.exception("Failed to handle a request", extra={"fields": {"path": quoted(request.path)}})
            respond(error(500, "internal server error"))

    def begin_shutdown(self) -> None:
        """Stop accepting; close idle connections; busy ones close after their answers."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.idle:
                connection.close()

    async def drain(self, timeout: float) -> bool:
        """Wait until every connection has answered and closed; False when `timeout` ran out."""
        deadline = time.monotonic() + timeout
        try:
            while self.connections:
                for connection in list(self.connections):
                    if connection.idle:
                        connection.close()
                if time.monotonic() >= deadline:
                    for connection in list(self.connections):
                        connection.close()
                    return False
                await asyncio.sleep(0.01)
            return True
        finally:
            if self._sweeper is not None:
                self._sweeper.cancel()
