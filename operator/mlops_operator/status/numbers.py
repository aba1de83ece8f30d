"""Numbers as status shows them: rounded to a few significant digits, for people and for the
printer columns (kubectl prints a `number` column's value as stored, all 17 digits of it)."""

from __future__ import annotations

import math


def significant(value: float, digits: int, max_decimals: int) -> float:
    """`value` rounded to `digits` significant digits and at most `max_decimals` decimals;
    0, NaN and infinities unchanged, never -0.0."""
    if value == 0 or not math.isfinite(value):
        return value
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return round(value, min(decimals, max_decimals)) + 0.0  # + 0.0 turns -0.0 into 0.0


def score(value: object) -> float | None:
    """A version's primary metric as status.score shows it: 4 significant digits, at most 4
    decimals (0.9736842105263158 -> 0.9737; a negated error -12345.678 -> -12350.0). The full
    value stays in the metrics."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return significant(float(value), 4, 4)
