"""The one pair of time helpers every program uses (status times and log times)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlops_contract.timeutil import format_log_time, format_time, parse_time

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2025-03-03T10:00:00Z", T0),
        ("2025-03-03T12:00:00+02:00", T0),
        ("2025-03-03T10:00:00", T0),
        ("2025-03-03T10:00:00.250Z", T0 + timedelta(milliseconds=250)),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
    ids=["zulu", "offset", "naive-is-utc", "fraction", "garbage", "empty", "absent"],
)
def test_parse_time(text: str | None, moment: datetime | None) -> None:
    assert parse_time(text) == moment


def test_format_time_is_utc_to_the_second() -> None:
    assert format_time(T0 + timedelta(microseconds=5)) == "2025-03-03T10:00:00Z"
    cet = datetime(2025, 3, 3, 11, 0, tzinfo=UTC).astimezone(datetime.now().astimezone().tzinfo)
    assert format_time(cet) == "2025-03-03T11:00:00Z"


def test_format_time_and_parse_time_round_trip() -> None:
    assert parse_time(format_time(T0)) == T0


@pytest.mark.parametrize(
    ("epoch", "text"),
    [(T0.timestamp(), "2025-03-03T10:00:00.000Z"), (T0.timestamp() + 0.1234, "2025-03-03T10:00:00.123Z")],
)
def test_format_log_time(epoch: float, text: str) -> None:
    assert format_log_time(epoch) == text
