"""Hostile clients against the server as a real process, over real loopback sockets (issue #20).

One server process (short timeouts and small limits set by flags) takes every case in turn.
After each case an autouse check asserts the invariants the issue asks for:
- a normal client still gets 200 from readiness and inference;
- the server's open sockets (`socket:` links in /proc/<pid>/fd) return to the baseline;
- its peak RSS (VmHWM) stays under `RSS_BOUND_MIB`.
Every wait is bounded (socket timeouts, `_until`), and no assertion is about speed.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from server_factories import Artifact, StderrLog, server_process

# The limits the suite's server runs with (flags below), small so each case is quick.
MAX_BODY = 1 << 20
MAX_PIPELINE = 2 << 20
MAX_URL = 8 << 10
MAX_HEADER = 32 << 10
MAX_ROWS = 5000
TIMEOUT = 2.0  # idle, header and body timeouts: short, with room for a loaded machine
CONNECTIONS = 1100
# Peak resident memory of the whole server process over the whole suite: the model (iris, arrays
# runtime) and Python take ~60-80 MiB; every case below would take it far higher if a limit
# were missing (10 x 32 MiB unfinished headers, 64 MiB of pipelined bodies, a 64 MiB header).
RSS_BOUND_MIB = 200
ROW = [5.1, 3.5, 1.4, 0.2]
INFER = b"/v2/models/iris/infer"


@dataclass
class Proc:
    pid: int
    port: int
    baseline_sockets: int

    def sockets(self) -> int:
        count = 0
        fd_dir = Path(f"/proc/{self.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd).startswith("socket:"):
                    count += 1
            except OSError:
                continue
        return count

    def status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _settled_sockets(server: Proc) -> int:
    """The socket count once the readiness probe's connection has gone (listener and the like)."""
    previous = server.sockets()
    for _ in range(50):
        time.sleep(0.1)
        now = server.sockets()
        if now == previous:
            return now
        previous = now
    return previous


@contextlib.contextmanager
def _running(art: Artifact, *flags: str) -> Iterator[Proc]:
    proc = server_process("--artifact", str(art.directory), *flags)
    log = StderrLog(proc)
    try:
        port = int(log.wait_for("Started listening")["port"])
        log.wait_for("Loaded model")
        server = Proc(proc.pid, port, 0)
        _until(lambda: _status(server, b"GET /v2/health/ready") == 200, 30, "ready")
        server.baseline_sockets = _settled_sockets(server)
        yield server
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.fixture(scope="module")
def server(iris: Artifact) -> Iterator[Proc]:
    _raise_nofile(4 * CONNECTIONS)
    with _running(
        iris,
        *("--max-body-bytes", str(MAX_BODY), "--max-pipeline-bytes", str(MAX_PIPELINE)),
        *("--max-url-bytes", str(MAX_URL), "--max-header-bytes", str(MAX_HEADER)),
        *("--max-rows", str(MAX_ROWS), "--max-connections", str(CONNECTIONS)),
        *("--idle-timeout", str(TIMEOUT), "--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT)),
    ) as proc:
        yield proc


@pytest.fixture(autouse=True)
def invariants(request: pytest.FixtureRequest) -> Iterator[None]:
    if "server" not in request.fixturenames:
        yield
        return
    proc: Proc = request.getfixturevalue("server")
    yield
    assert _status(proc, b"GET /v2/health/ready") == 200
    status, _ = _infer(proc, [ROW])
    assert status == 200
    _until(
        lambda: proc.sockets() <= proc.baseline_sockets,
        4 * TIMEOUT + 5,
        f"sockets back to {proc.baseline_sockets} (now {proc.sockets()})",
    )
    hwm = proc.status_kib("VmHWM") >> 10
    assert hwm < RSS_BOUND_MIB, f"peak RSS {hwm} MiB"


# --- a tiny client that reads exactly what the server sends -----------------------------------


def _request(method: bytes, path: bytes, body: bytes = b"", headers: bytes = b"") -> bytes:
    length = b"Content-Length: %d\r\n" % len(body) if body or method == b"POST" else b""
    return b"%s %s HTTP/1.1\r\nHost: t\r\n%s%s\r\n%s" % (method, path, length, headers, body)


def _v2(rows: list[list[float]], **extra: Any) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}], **extra}
    )


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed; read {self.buf[:200]!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("connection closed mid-body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self) -> bool:
        """True when the server closed (EOF or reset) with nothing more sent."""
        try:
            return not self.buf and not self._fill()
        except ConnectionResetError:
            return True


def _status(proc: Proc, line: bytes) -> int:
    method, path = line.split(b" ", 1)
    with proc.connect() as sock:
        sock.sendall(_request(method, path))
        return Reader(sock).response()[0]


def _infer(proc: Proc, rows: list[list[float]], **extra: Any) -> tuple[int, Any]:
    with proc.connect() as sock:
        sock.sendall(_request(b"POST", INFER, _v2(rows, **extra)))
        status, _, body = Reader(sock).response()
        return status, orjson.loads(body)


def _send_ignoring_reset(sock: socket.socket, data: bytes) -> None:
    # The server may answer and close before reading all of it: what these cases test.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


# --- limits -------------------------------------------------------------------------------------


# Hostile payloads are built before connecting: building them takes long enough on a loaded
# machine for the idle timeout to close a connection that has sent nothing yet.


def test_a_32_mib_url_is_414_and_not_echoed(server: Proc) -> None:
    payload = b"GET /" + b"a" * (32 << 20) + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    with server.connect() as sock:
        _send_ignoring_reset(sock, payload)
        reader = Reader(sock)
        status, _, body = reader.response()
        assert status == 414
        assert len(body) < 1024
        assert f"{MAX_URL}-byte limit".encode() in body
        assert reader.closed()


def test_a_long_url_under_the_limit_is_quoted_not_echoed(server: Proc) -> None:
    with server.connect() as sock:
        sock.sendall(_request(b"GET", b"/" + b"b" * (MAX_URL - 100)))
        status, _, body = Reader(sock).response()
    assert status == 404
    assert len(body) < 1024


def test_a_64_mib_header_is_431(server: Proc) -> None:
    payload = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (64 << 20) + b"\r\n\r\n"
    with server.connect() as sock:
        _send_ignoring_reset(sock, payload)
        reader = Reader(sock)
        status, _, body = reader.response()
        assert status == 431
        assert f"{MAX_HEADER}-byte limit".encode() in body
        assert reader.closed()


def test_too_many_header_fields_is_431(server: Proc) -> None:
    with server.connect() as sock:
        sock.sendall(
            _request(b"GET", b"/v2/health/ready", headers=b"".join(b"X-%d: v\r\n" % i for i in range(150)))
        )
        status, _, body = Reader(sock).response()
    assert status == 431
    assert b"more than 100 header fields" in body


def test_ten_unfinished_32_mib_headers_stay_bounded(server: Proc) -> None:
    payload = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (32 << 20)  # never finished
    socks = [server.connect() for _ in range(10)]
    try:
        threads = [threading.Thread(target=_send_ignoring_reset, args=(s, payload)) for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for s in socks:
            assert Reader(s).response()[0] == 431
    finally:
        for s in socks:
            s.close()


def test_body_over_the_limit_is_413_and_the_connection_lives(server: Proc) -> None:
    with server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request(b"POST", INFER, b"x" * (MAX_BODY + 1)))
        assert reader.response()[0] == 413
        sock.sendall(_request(b"POST", INFER, _v2([ROW])))
        assert reader.response()[0] == 200


def test_rows_over_the_limit_are_413_from_the_declared_shape(server: Proc) -> None:
    # Declares a million rows but carries one: refused from the shape, nothing decoded.
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [1_000_000, 4], "datatype": "FP64", "data": ROW}]})
    with server.connect() as sock:
        sock.sendall(_request(b"POST", INFER, body))
        status, _, answer = Reader(sock).response()
    assert status == 413
    assert f"at most {MAX_ROWS} rows".encode() in answer
    v1 = orjson.dumps({"instances": [ROW] * (MAX_ROWS + 1)})
    with server.connect() as sock:
        sock.sendall(_request(b"POST", b"/v1/models/iris:predict", v1))
        status, _, answer = Reader(sock).response()
    assert status == 413
    assert f"at most {MAX_ROWS} rows".encode() in answer


def test_pipelining_is_bounded_per_connection(server: Proc) -> None:
    # 64 bodies just under the body limit, sent without reading: 64 MiB if buffered whole.
    body = _v2([ROW], id="p" * (MAX_BODY - 200))
    assert len(body) < MAX_BODY
    count = 64
    with server.connect(timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(_request(b"POST", INFER, body) * count,))
        sender.start()
        time.sleep(0.5)  # let the server buffer what it will
        reader = Reader(sock)
        statuses = [reader.response()[0] for _ in range(count)]
        sender.join(30)
    assert statuses == [200] * count


def test_connection_over_the_cap_gets_503(iris: Artifact) -> None:
    cap = 20
    with _running(iris, "--max-connections", str(cap), "--idle-timeout", "30") as proc:
        held = [proc.connect() for _ in range(cap)]
        try:
            _until(lambda: proc.sockets() >= proc.baseline_sockets + cap, 10, "all connections accepted")
            with proc.connect() as extra:
                reader = Reader(extra)
                status, _, body = reader.response()
                assert status == 503
                assert f"{cap} connections".encode() in body
                assert reader.closed()
        finally:
            for s in held:
                s.close()
        _until(lambda: proc.sockets() <= proc.baseline_sockets, 10, "held connections released")
        assert _status(proc, b"GET /v2/health/ready") == 200


def test_a_large_request_does_not_hold_up_health_probes(iris: Artifact) -> None:
    rows = 200_000
    with _running(iris, "--max-rows", str(rows), "--max-body-bytes", str(16 << 20)) as proc:
        big = _request(b"POST", INFER, _v2([ROW] * rows))
        with proc.connect(timeout=60) as busy, proc.connect(timeout=60) as probe:
            busy.sendall(big)
            probe.sendall(_request(b"GET", b"/v2/health/live"))
            # The probe is answered while the big body is still being decoded or predicted.
            assert Reader(probe).response()[0] == 200
            busy.setblocking(False)
            try:
                early = busy.recv(1)
            except BlockingIOError:
                early = b""
            busy.setblocking(True)
            assert early == b"", "the large request was answered before the probe"
            reader = Reader(busy)
            reader.buf = early
            status, _, body = reader.response()
            assert status == 200
            assert len(orjson.loads(body)["outputs"][0]["data"]) == rows


# --- timeouts and close paths -------------------------------------------------------------------


def test_idle_keep_alive_connections_close(server: Proc) -> None:
    with server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request(b"GET", b"/v2/health/live"))
        assert reader.response()[0] == 200
        assert reader.closed()  # the idle timeout closed it; recv would wait 10 s otherwise


def test_a_thousand_idle_connections_are_closed(server: Proc) -> None:
    socks = [server.connect() for _ in range(1000)]
    try:
        _until(lambda: server.sockets() >= server.baseline_sockets + 900, 20, "connections accepted")
        assert _status(server, b"GET /v2/health/ready") == 200  # still serving with 1,000 open
        _until(
            lambda: server.sockets() <= server.baseline_sockets, 4 * TIMEOUT + 10, "idle connections closed"
        )
        assert Reader(socks[0]).closed()
    finally:
        for s in socks:
            s.close()


def test_slowloris_gets_408(server: Proc) -> None:
    socks = [server.connect() for _ in range(200)]
    try:
        head = b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\nX-Slow: "
        for s in socks:
            s.sendall(head)
        for _ in range(4):  # a byte now and then, never finishing the head
            time.sleep(TIMEOUT / 2)
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(b"a")
        for s in socks:
            reader = Reader(s)
            status, _, body = reader.response()
            assert status == 408
            assert b"request head not received in time" in body
    finally:
        for s in socks:
            s.close()


def test_a_stalled_body_gets_408(server: Proc) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        reader = Reader(sock)
        status, _, body = reader.response()
        assert status == 408
        assert b"body not received in time" in body
        assert reader.closed()


def test_half_close_releases_the_socket(server: Proc) -> None:
    unfinished = [server.connect() for _ in range(20)]
    complete = [server.connect() for _ in range(20)]
    try:
        for s in unfinished:
            s.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
            s.shutdown(socket.SHUT_WR)
        for s in complete:
            s.sendall(_request(b"POST", INFER, _v2([ROW])))
            s.shutdown(socket.SHUT_WR)
        for s in unfinished:
            assert Reader(s).closed()
        for s in complete:
            reader = Reader(s)
            assert reader.response()[0] == 200  # complete requests are answered before the close
            assert reader.closed()
    finally:
        for s in unfinished + complete:
            s.close()


def test_reset_mid_body_releases_the_socket(server: Proc) -> None:
    for _ in range(20):
        sock = server.connect()
        sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"{" * 5000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST


# --- exactly one answer -------------------------------------------------------------------------


def test_deeply_nested_parameters_are_400_and_the_connection_lives(server: Proc) -> None:
    nested = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[1,2,3,4]}],"parameters":{"a":'
    nested += b"[" * 254 + b"]" * 254 + b"}}"
    with server.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request(b"POST", INFER, nested))
        status, _, body = reader.response()
        assert status == 400
        assert b"nested more than 16 levels" in body
        sock.sendall(_request(b"POST", INFER, _v2([ROW], parameters={"a": {"b": [1]}})))
        status, _, body = reader.response()
        assert status == 200
        assert orjson.loads(body)["parameters"] == {"a": {"b": [1]}}


def test_int64_beyond_range_is_400(server: Proc) -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1 << 63, 1, 1, 1]}]}
    )
    with server.connect() as sock:
        sock.sendall(_request(b"POST", INFER, body))
        status, _, answer = Reader(sock).response()
    assert status == 400
    assert b"out of range" in answer


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
    ],
    ids=["upgrade", "connect"],
)
def test_upgrade_and_connect_get_one_answer(server: Proc, head: bytes) -> None:
    with server.connect() as sock:
        sock.sendall(head + b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        reader.response()
        assert reader.closed()


def test_smuggling_content_length_with_transfer_encoding_is_400_and_close(server: Proc) -> None:
    smuggled = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    with server.connect() as sock:
        sock.sendall(smuggled)
        reader = Reader(sock)
        status, _, body = reader.response()
        assert status == 400
        assert b"Transfer-Encoding" in body
        assert reader.closed()


def test_pipelined_expect_gets_its_100_after_earlier_answers(server: Proc) -> None:
    first = _request(b"POST", INFER, _v2([ROW] * 1000))
    body = _v2([ROW])
    second = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
        % len(body)
    )
    with server.connect() as sock:
        sock.sendall(first + second)
        reader = Reader(sock)
        status, _, answer = reader.response()
        assert status == 200
        assert len(orjson.loads(answer)["outputs"][0]["data"]) == 1000
        status, _, _ = reader.response()
        assert status == 100
        sock.sendall(body)
        status, _, answer = reader.response()
        assert status == 200
        assert len(orjson.loads(answer)["outputs"][0]["data"]) == 1


def test_kserve_v1_liveness_at_the_root(server: Proc) -> None:
    with server.connect() as sock:
        sock.sendall(_request(b"GET", b"/"))
        status, _, body = Reader(sock).response()
    assert status == 200
    assert orjson.loads(body) == {"status": "alive"}
