"""Shared test configuration: the source roots on sys.path for runs without an install, and the
real S3 server (tests/s3kit.py) for any tier that needs one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# tests/ itself too, for the helpers the tiers share (waiting.py).
for root in ("tests", "operator", "images/trainer", "images/server"):
    path = str(ROOT / root)
    if path not in sys.path:
        sys.path.insert(0, path)

from s3kit import S3Server, bucket_name, ensure_binary  # noqa: E402  # needs tests/ on sys.path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (versitygw) for the session, built first if missing; stopped by PID."""
    server = S3Server.start(ensure_binary(), tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket on the session's S3 server, named after the test."""
    return s3_server.bucket(bucket_name(request.node.name))
