"""The Prometheus client (issue #21) against real loopback HTTP servers that misbehave: every
failure is a QueryFailed with a reason and the URL in its message (the reconciler turns it into
MetricsAvailable=False); the bearer token goes only to the URL prefixes the settings trust."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from test_scraper import (
    CAP,
    Handler,
    answer,
    declared_huge,
    malformed_chunks,
    refused_port,
    server,
    silent,
    streamed_huge,
)

from mlops_operator import prometheus
from mlops_operator.prometheus import PrometheusClient, query_url, trusted

VECTOR = orjson.dumps(
    {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"signal": "x"}, "value": [1, "3"]}]}}
)  # fmt: skip
ERROR = orjson.dumps({"status": "error", "errorType": "bad_data", "error": "1:5: parse error"})


def client(**kwargs: object) -> PrometheusClient:
    return PrometheusClient(connect_timeout=1.0, read_timeout=0.3, total_timeout=1.0, max_bytes=CAP, **kwargs)  # type: ignore[arg-type]


CASES: list[tuple[str, Handler, str, str]] = [
    ("malformed-chunked-body", malformed_chunks, "malformed", "malformed answer"),
    ("declared-body-over-the-cap", declared_huge, "too_large", "67108864 bytes declared"),
    ("streamed-body-over-the-cap", streamed_huge, "too_large", "over the cap"),
    ("accepts-and-never-answers", silent, "timeout", "no answer"),
    ("server-error-page", answer(b"<h1>oops</h1>", status="502 Bad Gateway"), "http", "HTTP 502"),
    ("prometheus-query-error", answer(ERROR, status="400 Bad Request"), "query", "bad_data: 1:5: parse error"),
    ("prometheus-error-with-200", answer(ERROR), "query", "bad_data"),
    ("not-json", answer(b"hello"), "malformed", "not JSON"),
    ("redirect-not-followed", answer(b"", status="302 Found", extra="Location: http://10.0.0.1/\r\n"), "http", "HTTP 302"),
    ("garbage-status-line", answer(b"", status="two hundred"), "malformed", "malformed answer"),
]  # fmt: skip


@pytest.mark.parametrize(("handler", "reason", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_failures_have_a_reason_and_name_the_url(handler: Handler, reason: str, text: str) -> None:
    c = client()
    try:
        async with server(handler) as port:
            base = f"http://127.0.0.1:{port}/prom"
            with pytest.raises(prometheus.QueryFailed) as failed:
                await c.query(base, "up")
    finally:
        await c.close()
    assert failed.value.reason == reason
    assert text in str(failed.value)
    assert f"{base}/api/v1/query" in str(failed.value)


async def test_a_refused_connection_is_unreachable() -> None:
    c = client()
    url = f"http://127.0.0.1:{refused_port()}"
    try:
        with pytest.raises(prometheus.QueryFailed) as failed:
            await c.query(url, "up")
    finally:
        await c.close()
    assert failed.value.reason == "unreachable" and url in str(failed.value)


def recording(seen: list[bytes]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))  # fmt: skip
        seen.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(VECTOR) + VECTOR)
        await writer.drain()

    return handle


@pytest.mark.parametrize(
    ("prefixes", "path", "sent"),
    [
        pytest.param(["http://127.0.0.1:{port}"], "", True, id="trusted-origin"),
        pytest.param(["http://127.0.0.1:{port}/prom"], "/prom", True, id="trusted-path-prefix"),
        pytest.param(["http://127.0.0.1:{port}/prom"], "/prometheus", False, id="prefix-is-a-whole-segment"),
        pytest.param(["http://127.0.0.1:1"], "", False, id="other-port"),
        pytest.param(["https://127.0.0.1:{port}"], "", False, id="other-scheme"),
        pytest.param([], "", False, id="nothing-trusted"),
    ],
)
async def test_the_token_goes_only_to_trusted_prefixes(
    tmp_path: Path, prefixes: list[str], path: str, sent: bool
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    seen: list[bytes] = []
    async with server(recording(seen)) as port:
        c = client(token_file=str(token), credentials_for=[p.format(port=port) for p in prefixes])
        try:
            samples = await c.query(f"http://127.0.0.1:{port}{path}", 'sum(x{a="b"})')
        finally:
            await c.close()
    assert [s.value for s in samples] == [3.0]
    request = seen[0]
    assert request.startswith(f"POST {path}/api/v1/query HTTP/1.1".encode())
    assert b"query=sum%28x%7Ba%3D%22b%22%7D%29" in request and b"timeout=10s" in request
    assert (b"Authorization: Bearer s3cret\r\n" in request) is sent


async def test_a_missing_token_file_sends_no_credentials(tmp_path: Path) -> None:
    seen: list[bytes] = []
    async with server(recording(seen)) as port:
        base = f"http://127.0.0.1:{port}"
        c = client(token_file=str(tmp_path / "absent"), credentials_for=[base])
        try:
            await c.query(base, "up")
        finally:
            await c.close()
    assert b"Authorization" not in seen[0]


def test_urls() -> None:
    assert str(query_url("http://p:9090/")) == "http://p:9090/api/v1/query"
    assert str(query_url("https://h/prom/?x=1#f")) == "https://h/prom/api/v1/query"
    assert trusted(query_url("http://p:9090"), ["http://p:9090/"])
    with pytest.raises(prometheus.QueryFailed, match="not an http"):
        query_url("ftp://p")
