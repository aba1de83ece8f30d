"""What the operator's two outbound HTTP clients share (scraper.py: the serving pods' /metrics;
prometheus.py: PromQL queries): an aiohttp session that takes nothing from the environment, and
a body read that stops at a cap (issue #21)."""

from __future__ import annotations

import ssl

import aiohttp


class TooLarge(Exception):
    """The answer's body is (or declares to be) over the cap; the message says which."""


def session(
    timeout: aiohttp.ClientTimeout, *, limit: int, ssl_context: ssl.SSLContext | None = None
) -> aiohttp.ClientSession:
    """Our own trust decisions: no proxy from the environment, no cookies kept, statuses not raised."""
    return aiohttp.ClientSession(
        timeout=timeout,
        connector=aiohttp.TCPConnector(limit=limit, ssl=ssl_context if ssl_context is not None else True),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
    )


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The whole (decompressed) body, or TooLarge as soon as it passes `max_bytes`."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise TooLarge(f"{declared} bytes declared, the cap is {max_bytes}")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            raise TooLarge(f"body over the cap of {max_bytes} bytes")
    return bytes(body)
