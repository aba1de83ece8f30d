import math

import pytest

from mlops_operator.status import numbers


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.9736842105263158, 0.9737),
        (1.0, 1.0),
        (0.0, 0.0),
        (0.00012345, 0.0001),  # at most 4 decimals
        (-12345.678, -12350.0),  # a negated error keeps 4 significant digits
        (-0.00001, 0.0),  # never -0.0
        (3, 3.0),
    ],
)
def test_score_shows_four_significant_digits(value: float, shown: float) -> None:
    got = numbers.score(value)
    assert got == shown and math.copysign(1.0, got) == math.copysign(1.0, shown)


@pytest.mark.parametrize("value", [None, "0.9", True, [0.9]])
def test_score_of_a_non_number_is_none(value: object) -> None:
    assert numbers.score(value) is None


def test_significant_keeps_nan_and_infinities() -> None:
    assert math.isnan(numbers.significant(math.nan, 3, 4))
    assert numbers.significant(math.inf, 3, 4) == math.inf
