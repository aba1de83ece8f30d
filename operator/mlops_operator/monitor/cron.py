"""A small 5-field cron parser (UTC) for the retraining schedule trigger.

Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or jan-dec), day of
week (0-7 or sun-sat; 0 and 7 are Sunday). Each field is a comma list of `*`, `N`, `A-B`,
with an optional step `/S` (`*/15`, `1-30/5`, `5/10` = 5 to the field's maximum by 10).

Day semantics follow classic (Vixie) cron: when both day fields are restricted (neither starts
with `*`), a day matches if *either* matches; otherwise both must. An expression that can
never fire (e.g. `0 0 31 2 *`) is refused at parse time.

Pure: `now` is passed in and must be timezone-aware; results are aware UTC datetimes at
whole minutes.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

MONTH_NAMES: Final = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
DAY_NAMES: Final = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# Far enough back/forward to meet any valid expression (Feb 29 skips 2100: 8 years).
SEARCH_DAYS: Final = 366 * 9
_NUMBER: Final = re.compile(r"^[0-9]+$")


class CronError(ValueError):
    """The expression is not a valid 5-field cron expression (the message says why)."""


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def matches(self, moment: datetime) -> bool:
        t = _utc(moment)
        return self.day_matches(t.date()) and t.hour in self.hours and t.minute in self.minutes


def _value(text: str, field: str, names: dict[str, int] | None) -> int:
    lowered = text.lower()
    if names is not None and lowered in names:
        return names[lowered]
    if not _NUMBER.match(text):
        raise CronError(f"{field}: {text!r} is not a number")
    return int(text)


def _field(text: str, field: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field}: empty item in {text!r}")
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            step = _value(step_text, field, None)
            if step < 1:
                raise CronError(f"{field}: step must be at least 1 in {part!r}")
        if span == "*":
            start, end = low, high
        elif "-" in span:
            first, _, last = span.partition("-")
            start, end = _value(first, field, names), _value(last, field, names)
            if start > end:
                raise CronError(f"{field}: range {span!r} is reversed")
        else:
            start = _value(span, field, names)
            end = high if slash else start
        for v in (start, end):
            if not low <= v <= high:
                raise CronError(f"{field}: {v} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse(expression: str) -> Cron:
    """Parse and validate; raise CronError with a precise message."""
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(
            f"{expression!r}: expected 5 fields (minute hour day month weekday), got {len(parts)}"
        )
    minute, hour, dom, month, dow = parts
    weekdays = _field(dow, "day of week", 0, 7, DAY_NAMES)
    cron = Cron(
        expression=" ".join(parts),
        minutes=_field(minute, "minute", 0, 59),
        hours=_field(hour, "hour", 0, 23),
        days=_field(dom, "day of month", 1, 31),
        months=_field(month, "month", 1, 12, MONTH_NAMES),
        weekdays=frozenset(d % 7 for d in weekdays),
        days_restricted=not dom.startswith("*"),
        weekdays_restricted=not dow.startswith("*"),
    )
    # Unless either weekday may do, day-of-month and month must meet in some (leap) year.
    both_restricted = cron.days_restricted and cron.weekdays_restricted
    if not both_restricted and not any(
        d <= calendar.monthrange(2024, m)[1] for m in cron.months for d in cron.days
    ):
        raise CronError(f"{expression!r}: never fires (no listed month has the listed days)")
    return cron


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetimes passed to cron must be timezone-aware")
    return moment.astimezone(UTC)


def _last_in_day(cron: Cron, day: date, until: datetime | None) -> datetime | None:
    for hour in sorted(cron.hours, reverse=True):
        if until is not None and hour > until.hour:
            continue
        limit = until.minute if until is not None and hour == until.hour else 59
        minutes = [m for m in cron.minutes if m <= limit]
        if minutes:
            return datetime(day.year, day.month, day.day, hour, max(minutes), tzinfo=UTC)
    return None


def _first_in_day(cron: Cron, day: date, after: datetime | None) -> datetime | None:
    for hour in sorted(cron.hours):
        if after is not None and hour < after.hour:
            continue
        floor = after.minute if after is not None and hour == after.hour else 0
        minutes = [m for m in cron.minutes if m >= floor]
        if minutes:
            return datetime(day.year, day.month, day.day, hour, min(minutes), tzinfo=UTC)
    return None


def previous_fire(expression: str | Cron, now: datetime) -> datetime:
    """The latest slot at or before `now` (a slot at exactly `now`'s minute counts)."""
    cron = parse(expression) if isinstance(expression, str) else expression
    t = _utc(now).replace(second=0, microsecond=0)
    day = t.date()
    for _ in range(SEARCH_DAYS):
        if cron.day_matches(day):
            slot = _last_in_day(cron, day, t if day == t.date() else None)
            if slot is not None:
                return slot
        day -= timedelta(days=1)
    raise CronError(f"{cron.expression!r}: no slot in the {SEARCH_DAYS} days before {t.isoformat()}")


def next_fire(expression: str | Cron, now: datetime) -> datetime:
    """The first slot strictly after `now`."""
    cron = parse(expression) if isinstance(expression, str) else expression
    t = _utc(now).replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = t.date()
    for _ in range(SEARCH_DAYS):
        if cron.day_matches(day):
            slot = _first_in_day(cron, day, t if day == t.date() else None)
            if slot is not None:
                return slot
        day += timedelta(days=1)
    raise CronError(f"{cron.expression!r}: no slot in the {SEARCH_DAYS} days after {t.isoformat()}")
