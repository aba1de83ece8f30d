"""One pair of time helpers for every program: RFC 3339 in UTC, written with a `Z`.

`format_time` is the form of every time in a status (to the second, as metav1.Time);
`parse_time` reads what `format_time` wrote and what Kubernetes writes, and never raises:
a missing or unreadable value is None, a value without a zone is UTC. `format_log_time` is the
log form, to the millisecond.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """`2026-12-03T18:35:06Z`: RFC 3339 in UTC, to the second (the status form)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time as an aware datetime; None when absent or unreadable; naive means UTC."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def format_log_time(epoch: float) -> str:
    """`2026-12-03T18:35:06.123Z` for an epoch timestamp: RFC 3339 in UTC, to the millisecond."""
    whole = int(epoch)
    millis = min(int((epoch - whole) * 1000), 999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"
