"""A lean HTTP/1.1 server: asyncio protocols + the httptools parser, no framework.

Each connection parses requests as bytes arrive and answers them strictly in order
(pipelining-safe): one request is handled at a time, later ones wait in a short queue, and
reading pauses when that queue grows. Handlers answer through a callback, so a request that
waits for a model batch costs no task or coroutine.

Limits and failure modes: a body over `max_body_bytes` is drained and answered with 413 (the
client sees the status instead of a reset connection); malformed HTTP gets 400 and the
connection closes. After `begin_shutdown` the listener is closed, idle connections close at
once, and busy ones close after answering what they already received.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
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
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_MAX_PIPELINED: Final = 64
# A body this far over the limit is no longer drained politely: the connection is dropped.
_DISCARD_FACTOR: Final = 4


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()


_STATUS_LINES: Final = {status: _status_line(status) for status in _REASONS}


class Request:
    __slots__ = ("body", "close", "json_length", "keep_alive", "method", "path", "query", "started")

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


class Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._pending: deque[tuple[Request, Response | None]] = deque()
        self._current: Request | None = None
        self._in_message = False
        self._paused = False
        self._dead = False
        self._broken = False
        self._eof = False
        self._dispatching = False
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._body: list[bytes] = []
        self._body_size = 0
        self._content_length = -1
        self._json_length: int | None = None
        self._expect_continue = False
        self._too_large = False
        self._header_error: str | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._pending.clear()
        self._server.connections.discard(self)

    def eof_received(self) -> bool:
        # The client half-closed: answer what it sent, then close (True keeps our side open).
        self._eof = True
        if self.idle:
            self.close()
        return True

    def data_received(self, data: bytes) -> None:
        if self._dead or self._broken:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._queue_error(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            self._queue_error(400, f"malformed HTTP request: {e}")

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
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
        elif lowered == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        limit = self._server.max_body_bytes
        if self._content_length > limit:
            self._too_large = True
            if self._expect_continue:
                # The client waits for permission before sending the body: refuse now and close.
                self._expect_continue = False
                self._finish_message(refused=True)
            return
        if self._expect_continue and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

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
        request = Request(
            self._parser.get_method().decode("latin-1"),
            path,
            query=raw_query.decode("latin-1"),
            body=body,
            keep_alive=keep_alive,
            json_length=self._json_length,
        )
        preset: Response | None = None
        if self._too_large:
            preset = error(413, f"request body exceeds the {self._server.max_body_bytes}-byte limit")
            request.close = refused
        elif self._header_error is not None:
            preset = error(400, self._header_error)
            request.close = True
        self._pending.append((request, preset))
        if len(self._pending) > _MAX_PIPELINED and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._next()

    def _queue_error(self, status: int, message: str) -> None:
        self._in_message = False
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
            while self._current is None and self._pending and not self._dead:
                request, preset = self._pending.popleft()
                self._current = request
                if self._paused and len(self._pending) <= _MAX_PIPELINED // 2 and self._transport is not None:
                    self._paused = False
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
        transport.write(response.encode(keep_alive))
        if self._server.access_log:
            log.info(
                "Answered request",
                extra={
                    "fields": {
                        "method": request.method,
                        "path": request.path,
                        "status": response.status,
                        "seconds": round(time.perf_counter() - request.started, 6),
                    }
                },
            )
        if not keep_alive:
            self._dead = True
            transport.close()
            return
        self._next()
        if self._eof and self.idle:
            self.close()

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
    def __init__(self, handler: Handler, max_body_bytes: int, access_log: bool = False) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.connections: set[Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), host, port, backlog=1024, reuse_address=True
        )
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def dispatch(self, request: Request, respond: Respond) -> None:
        try:
            self.handler(request, respond)
        except Exception:
            log.exception("Failed to handle a request", extra={"fields": {"path": request.path}})
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
