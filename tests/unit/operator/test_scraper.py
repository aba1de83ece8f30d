"""The pod scraper against real loopback HTTP servers that misbehave (issue #21): a malformed
chunked body, a body over the cap (declared or streamed), a server that accepts and never
answers, a non-200 status, a refused connection. Each fails that pod's scrape only: None, one
log line, one failure counted; the other pods' metrics still land through `scrape_pods`."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mlops_operator.reconcile.inferenceservice import scrape_pods
from mlops_operator.scraper import HttpScraper, pod_address

METRICS = (
    "# TYPE mlops_requests_total counter\n"
    'mlops_requests_total{model="iris",version="iris-v1",protocol="v2",code="200"} 100\n'
)
CAP = 64 * 1024

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)
        await writer.drain()

    return handle


def chunked(*chunks: bytes, raw_tail: bytes = b"0\r\n\r\n") -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        writer.write(raw_tail)
        await writer.drain()

    return handle


async def malformed_chunks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nmlops\r\nzz-not-hex\r\n")
    await writer.drain()
    writer.close()


async def declared_huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n" + b"x" * 1024)
    await writer.drain()


async def streamed_huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    block = b"x" * 16384
    for _ in range(4 * CAP // len(block)):  # never ends the body: the cap must stop the read
        writer.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
        await writer.drain()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()  # accepts, reads nothing, answers nothing


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await srv.wait_closed()


def pod(name: str, ip: str | None = "127.0.0.1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml"}, "status": {"phase": "Running", "podIP": ip}}


def scraper(ports: dict[str, int], failures: list[str]) -> HttpScraper:
    return HttpScraper(
        address=lambda p: ("127.0.0.1", ports[p["metadata"]["name"]]),
        connect_timeout=1.0,
        read_timeout=0.3,
        total_timeout=1.0,
        max_bytes=CAP,
        on_failure=failures.append,
    )


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


# (id, server, failure reason expected: None means the text comes back)
CASES: list[tuple[str, Handler, str | None]] = [
    ("content-length-body", answer(METRICS.encode()), None),
    ("chunked-body", chunked(METRICS[:20].encode(), METRICS[20:].encode()), None),
    ("gzip-refused-as-asked-plain", answer(METRICS.encode(), extra="Content-Type: text/plain\r\n"), None),
    ("malformed-chunked-body", malformed_chunks, "malformed"),
    ("truncated-chunked-body", chunked(b"mlops", raw_tail=b"40\r\nshort"), "malformed"),
    ("declared-body-over-the-cap", declared_huge, "too_large"),
    ("streamed-body-over-the-cap", streamed_huge, "too_large"),
    ("accepts-and-never-answers", silent, "timeout"),
    ("server-error-status", answer(b"boom", status="500 Internal Server Error"), "status"),
    ("redirect-not-followed", answer(b"", status="302 Found", extra="Location: http://10.0.0.1/\r\n"), "status"),
    ("garbage-status-line", answer(b"", status="two hundred"), "malformed"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "handler", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_one_scrape(name: str, handler: Handler, reason: str | None) -> None:
    failures: list[str] = []
    async with server(handler) as port:
        s = scraper({"p": port}, failures)
        try:
            text = await s(pod("p"))
        finally:
            await s.close()
    if reason is None:
        assert text == METRICS and failures == []
    else:
        assert text is None and failures == [reason]


async def test_a_refused_connection_is_a_failed_scrape() -> None:
    failures: list[str] = []
    s = scraper({"p": refused_port()}, failures)
    try:
        assert await s(pod("p")) is None
    finally:
        await s.close()
    assert failures == ["connect"]


async def test_a_pod_without_an_ip_is_not_scraped() -> None:
    s = HttpScraper()
    assert pod_address(pod("p", ip=None)) is None
    assert await s(pod("p", ip=None)) is None
    assert pod_address(pod("p", ip="10.1.2.3")) == ("10.1.2.3", 8082)
    await s.close()


async def test_bad_pods_fail_alone_and_the_others_land() -> None:
    failures: list[str] = []
    async with (
        server(answer(METRICS.encode())) as good1,
        server(malformed_chunks) as bad1,
        server(chunked(METRICS.encode())) as good2,
        server(streamed_huge) as bad2,
        server(silent) as bad3,
    ):
        ports = {"good-1": good1, "malformed": bad1, "good-2": good2, "huge": bad2, "silent": bad3}
        s = scraper(ports, failures)
        try:
            samples = await scrape_pods(s, [pod(n) for n in ports])
        finally:
            await s.close()
    assert sorted(samples) == ["good-1", "good-2"]
    assert [samples[n].requests for n in ("good-1", "good-2")] == [100.0, 100.0]
    assert sorted(failures) == ["malformed", "timeout", "too_large"]


async def test_an_injected_scraper_that_raises_fails_its_pod_only() -> None:
    async def flaky(p: dict[str, Any]) -> str | None:
        if p["metadata"]["name"] == "bad":
            raise RuntimeError("boom")
        return METRICS

    samples = await scrape_pods(flaky, [pod("bad"), pod("good")])  # type: ignore[arg-type]
    assert list(samples) == ["good"]


async def test_a_failing_pod_is_logged_once_and_its_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[str] = []
    healthy = False

    async def toggling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await (answer(METRICS.encode()) if healthy else malformed_chunks)(reader, writer)

    caplog.set_level(logging.INFO, logger="mlops_operator")
    async with server(toggling) as port:
        s = scraper({"p": port}, failures)
        try:
            for _ in range(3):
                assert await s(pod("p")) is None
            healthy = True
            assert await s(pod("p")) == METRICS
            assert await s(pod("p")) == METRICS
        finally:
            await s.close()
    lines = [
        r.getMessage() for r in caplog.records if r.name == "mlops_operator" and r.levelno >= logging.INFO
    ]
    assert len(failures) == 3  # every failure counts
    assert len(lines) == 2, lines  # but is logged once, and the recovery once
    assert lines[0].startswith("Scrape of pod ml/p failed: malformed answer") and "\n" not in lines[0]
    assert lines[1] == "Scraped pod ml/p again"
