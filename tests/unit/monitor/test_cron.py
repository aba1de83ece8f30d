"""The 5-field UTC cron parser: syntax, validation, previous/next slots across boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mlops_operator.monitor import cron


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


FIELD_CASES = [
    ("star-step", "*/15 * * * *", "minutes", set(range(0, 60, 15))),
    ("range-step", "1-10/3 * * * *", "minutes", {1, 4, 7, 10}),
    ("start-step-runs-to-max", "5/20 * * * *", "minutes", {5, 25, 45}),
    ("list-with-range", "1,2,5-6 * * * *", "minutes", {1, 2, 5, 6}),
    ("step-larger-than-range", "*/100 * * * *", "minutes", {0}),
    ("hours", "0 9-17 * * *", "hours", set(range(9, 18))),
    ("seven-is-sunday", "0 0 * * 7", "weekdays", {0}),
    ("zero-and-seven-merge", "0 0 * * 0,7", "weekdays", {0}),
    ("weekday-names", "0 0 * * mon-fri", "weekdays", {1, 2, 3, 4, 5}),
    ("names-any-case", "0 0 * * SUN,Sat", "weekdays", {0, 6}),
    ("month-names", "0 0 1 jan,jul *", "months", {1, 7}),
    ("star-weekday-is-all", "0 0 * * *", "weekdays", set(range(7))),
    ("extra-whitespace", "  0   0 1   *  * ", "days", {1}),
]


@pytest.mark.parametrize(("name", "expr", "attr", "values"), FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_fields(name: str, expr: str, attr: str, values: set[int]) -> None:
    assert getattr(cron.parse(expr), attr) == values


ERROR_CASES = [
    ("word", "daily", "expected 5 fields"),
    ("four-fields", "* * * *", "got 4"),
    ("six-fields", "0 * * * * *", "got 6"),
    ("minute-60", "60 * * * *", "minute: 60 is outside 0-59"),
    ("hour-24", "0 24 * * *", "hour: 24"),
    ("day-zero", "0 0 0 * *", "day of month: 0"),
    ("month-13", "0 0 1 13 *", "month: 13"),
    ("weekday-8", "0 0 * * 8", "day of week: 8"),
    ("step-zero", "*/0 * * * *", "step must be at least 1"),
    ("reversed-range", "5-1 * * * *", "reversed"),
    ("not-a-number", "a * * * *", "not a number"),
    ("negative", "-1 * * * *", "not a number"),
    ("plus-sign", "+1 * * * *", "not a number"),
    ("empty-list-item", "1,,2 * * * *", "empty item"),
    ("unknown-name", "0 0 * * funday", "not a number"),
    ("names-only-in-their-field", "0 0 * mon *", "not a number"),
    ("february-31", "0 0 31 2 *", "never fires"),
    ("february-30-and-april-31", "0 0 30,31 2 *", "never fires"),
]


@pytest.mark.parametrize(("name", "expr", "message"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_invalid_expressions(name: str, expr: str, message: str) -> None:
    with pytest.raises(cron.CronError, match=message):
        cron.parse(expr)


def test_cron_error_is_a_value_error() -> None:
    assert issubclass(cron.CronError, ValueError)


def test_day_fields_or_when_both_restricted() -> None:
    # February has no 31st, but a restricted weekday makes "31st or Monday" fire.
    c = cron.parse("0 0 31 2 1")
    assert cron.previous_fire(c, t("2025-03-01T00:00:00")) == t("2025-02-24T00:00:00")


PREVIOUS_CASES = [
    ("weekly-earlier-in-week", "0 3 * * 0", "2025-03-05T10:00:00", "2025-03-02T03:00:00"),
    ("exactly-on-the-slot-counts", "0 3 * * 0", "2025-03-02T03:00:30", "2025-03-02T03:00:00"),
    ("a-minute-before-is-last-week", "0 3 * * 0", "2025-03-02T02:59:59", "2025-02-23T03:00:00"),
    ("across-midnight", "30 23 * * *", "2025-03-02T00:10:00", "2025-03-01T23:30:00"),
    ("same-day-later-slot-not-yet", "0 6,18 * * *", "2025-03-02T17:59:00", "2025-03-02T06:00:00"),
    ("month-boundary", "0 0 1 * *", "2025-02-28T12:00:00", "2025-02-01T00:00:00"),
    ("year-boundary", "0 12 31 12 *", "2025-01-01T00:00:00", "2024-12-31T12:00:00"),
    ("leap-day", "0 0 29 2 *", "2025-06-01T00:00:00", "2024-02-29T00:00:00"),
    ("dom-or-dow", "0 0 13 * 5", "2025-06-12T12:00:00", "2025-06-06T00:00:00"),
    ("star-step-dom-ands-with-dow", "0 0 */10 * 1", "2025-03-15T00:00:00", "2024-11-11T00:00:00"),
    ("every-minute", "* * * * *", "2025-03-02T10:17:42", "2025-03-02T10:17:00"),
    ("every-five", "*/5 * * * *", "2025-03-02T10:17:42", "2025-03-02T10:15:00"),
    ("business-hours", "0 9-17 * * mon-fri", "2025-03-01T12:00:00", "2025-02-28T17:00:00"),
]


@pytest.mark.parametrize(("name", "expr", "now", "slot"), PREVIOUS_CASES, ids=[c[0] for c in PREVIOUS_CASES])
def test_previous_fire(name: str, expr: str, now: str, slot: str) -> None:
    assert cron.previous_fire(expr, t(now)) == t(slot)


NEXT_CASES = [
    ("weekly", "0 3 * * 0", "2025-03-05T10:00:00", "2025-03-09T03:00:00"),
    ("on-the-slot-is-not-next", "0 3 * * 0", "2025-03-02T03:00:00", "2025-03-09T03:00:00"),
    ("across-midnight", "5 0 * * *", "2025-03-01T23:59:00", "2025-03-02T00:05:00"),
    ("year-boundary", "0 0 1 1 *", "2025-12-31T23:59:59", "2026-01-01T00:00:00"),
]


@pytest.mark.parametrize(("name", "expr", "now", "slot"), NEXT_CASES, ids=[c[0] for c in NEXT_CASES])
def test_next_fire(name: str, expr: str, now: str, slot: str) -> None:
    assert cron.next_fire(expr, t(now)) == t(slot)


def test_other_time_zones_are_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    now = datetime(2025, 3, 2, 5, 0, tzinfo=plus_two)  # 03:00 UTC
    slot = cron.previous_fire("0 3 * * 0", now)
    assert slot == t("2025-03-02T03:00:00")
    assert slot.tzinfo == UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cron.previous_fire("* * * * *", datetime(2025, 1, 1))


# Expressions that fire at least weekly, so the scan stays short.
BRUTE_FORCE_EXPRESSIONS = ["*/7 3-5 * * *", "15 */6 1-3 * 2", "0 12 * * sat", "45 23 */2 * *", "10 4 * * 1-3"]


def _brute_previous(c: cron.Cron, now: datetime) -> datetime:
    moment = now.replace(second=0, microsecond=0)
    for _ in range(60 * 24 * 8):
        if c.matches(moment):
            return moment
        moment -= timedelta(minutes=1)
    raise AssertionError("no slot")


def test_previous_fire_agrees_with_a_minute_by_minute_scan() -> None:
    start = t("2024-12-28T21:37:00")
    nows = [start + timedelta(hours=h * 37 + 11, minutes=h * 13) for h in range(12)]
    for expr in BRUTE_FORCE_EXPRESSIONS:
        c = cron.parse(expr)
        for now in nows:
            assert cron.previous_fire(c, now) == _brute_previous(c, now), (expr, now)


def test_previous_is_never_after_now_and_next_is_after() -> None:
    now = t("2025-07-04T08:08:08")
    for expr in BRUTE_FORCE_EXPRESSIONS:
        previous, following = cron.previous_fire(expr, now), cron.next_fire(expr, now)
        assert previous <= now < following
        assert cron.next_fire(expr, previous) > previous
