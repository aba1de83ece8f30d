"""The live-quality statistics (issue #22) against scipy's and against hand-computed values."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as sps

from mlops_contract.stats import (
    CALIBRATION_EDGES,
    Calibration,
    Moments,
    PairCounts,
    binomial_half_cdf,
    binomial_sf,
    confidence_bin,
    difference_interval,
    estimate_accuracy,
    fisher_exact_less,
    fit_calibration,
    mcnemar_exact,
    one_sample_z,
    paired_difference_interval,
    rate_exceeds,
    rate_within,
    sequential_half_p,
    welch_z,
    wilcoxon_signed_rank,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "confidence"),
    [
        (0, 1, 0.95),
        (0, 10, 0.95),
        (1, 10, 0.95),
        (5, 10, 0.9),
        (10, 10, 0.95),
        (3, 250, 0.99),
        (999, 1000, 0.95),
    ],
)
def test_wilson_interval_matches_scipy(k: int, n: int, confidence: float) -> None:
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence)
    assert low == pytest.approx(ref.low, abs=1e-12)
    assert high == pytest.approx(ref.high, abs=1e-12)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 7)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=1.0)


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(1, 10, 0.01), (3, 10, 0.01), (0, 5, 0.3), (3, 200, 0.01), (8, 200, 0.01), (260, 20000, 0.01),
     (5100, 10000, 0.5), (4900, 10000, 0.5), (1, 1_000_000, 0.5), (11, 10, 0.5), (7, 7, 0.2)],
)  # fmt: skip
def test_binomial_sf_matches_scipy(k: int, n: int, p: float) -> None:
    ref = float(sps.binom.sf(k - 1, n, p))
    assert binomial_sf(k, n, p) == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_binomial_sf_degenerate_rates() -> None:
    assert binomial_sf(1, 10, 0.0) == 0.0
    assert binomial_sf(10, 10, 1.0) == 1.0
    assert binomial_sf(0, 10, 0.0) == 1.0
    with pytest.raises(ValueError):
        binomial_sf(1, 10, 1.5)


def test_binomial_half_cdf_matches_scipy() -> None:
    for k, n in [(0, 1), (3, 10), (10, 10), (200, 500), (4999, 10000)]:
        assert binomial_half_cdf(k, n) == pytest.approx(float(sps.binom.cdf(k, n, 0.5)), rel=1e-9)


def test_rate_evidence_one_sided() -> None:
    # Hand-computed: P(X >= 1 | n=10, p=0.01) = 1 - 0.99^10 = 0.0956 > 0.05, not evidence.
    assert not rate_exceeds(1, 10, 0.01)
    assert binomial_sf(1, 10, 0.01) == pytest.approx(1 - 0.99**10, rel=1e-12)
    assert rate_exceeds(3, 10, 0.01)
    assert not rate_exceeds(0, 1000, 0.0)
    assert rate_exceeds(1, 1, 0.0)  # any error against a zero tolerance
    # 0 errors: 0.99^n < 0.05 first at n = 299.
    assert not rate_within(0, 298, 0.01)
    assert rate_within(0, 299, 0.01)
    assert not rate_within(0, 0, 0.01)


@pytest.mark.parametrize(
    ("b", "c"), [(0, 0), (0, 1), (1, 0), (5, 5), (2, 9), (9, 2), (30, 50), (300, 250), (0, 25)]
)
def test_mcnemar_exact_matches_binomtest(b: int, c: int) -> None:
    ref = 1.0 if b + c == 0 else sps.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 0), (25, 2), (2, 25), (54, 26), (100, 60), (3000, 2900)])
def test_sequential_half_p_is_the_inverse_mixture_bayes_factor(b: int, c: int) -> None:
    """1 / (the likelihood under a Beta(10, 10) split integrated numerically, over 1/2^n)."""
    from scipy import integrate
    from scipy.special import betaln

    a = 10.0
    log_ref = betaln(a + b, a + c) - betaln(a, a) + (b + c) * np.log(2.0)
    assert sequential_half_p(b, c) == pytest.approx(min(1.0, float(np.exp(-log_ref))), rel=1e-9)
    if b + c <= 100:  # the integral itself, where it does not underflow
        scale = -(b + c) * np.log(0.5)
        density = lambda q: np.exp(  # noqa: E731
            (a - 1 + b) * np.log(q) + (a - 1 + c) * np.log1p(-q) - betaln(a, a) + scale
        )
        factor, _ = integrate.quad(density, 0.0, 1.0, epsabs=0, epsrel=1e-11)
        assert sequential_half_p(b, c) == pytest.approx(min(1.0, 1 / factor), rel=1e-7)


def test_sequential_half_p_is_symmetric_and_grows_with_the_imbalance() -> None:
    assert sequential_half_p(30, 30) == 1.0 and sequential_half_p(0, 0) == 1.0
    assert sequential_half_p(40, 10) == sequential_half_p(10, 40)
    assert sequential_half_p(40, 10) < sequential_half_p(35, 15) < sequential_half_p(30, 20)
    with pytest.raises(ValueError):
        sequential_half_p(-1, 3)


def test_sequential_half_p_stays_valid_under_a_look_at_every_pair() -> None:
    """Under the null (discordant pairs split evenly), looked at after every pair up to 1,000:
    the always-valid p-value ever falls below 0.05 in at most 5 % of 200 seeded runs, where
    McNemar's fixed-n test looked at as often does in over a fifth of them."""
    rng = np.random.default_rng(7)
    runs, looks = 200, 1000
    steps = rng.integers(0, 2, size=(runs, looks))
    ever_sequential = ever_fixed = 0
    for row in steps:
        b = np.cumsum(row)
        c = np.arange(1, looks + 1) - b
        ever_sequential += any(sequential_half_p(int(x), int(y)) < 0.05 for x, y in zip(b, c, strict=True))
        ever_fixed += any(
            mcnemar_exact(int(x), int(y)) < 0.05 for x, y in zip(b[9::10], c[9::10], strict=True)
        )
    assert ever_sequential / runs <= 0.05
    assert ever_fixed / runs > 0.2


def test_mcnemar_hand_computed() -> None:
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024.
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024, rel=1e-12)


def _newcombe_reference(pairs: PairCounts, confidence: float) -> tuple[float, float]:
    """Newcombe's method 10 written from his paper with scipy's Wilson intervals."""
    n = pairs.n
    e, f, g, h = pairs.both, pairs.challenger_only, pairs.champion_only, pairs.neither
    p1, p2 = (e + f) / n, (e + g) / n
    ci1 = sps.binomtest(e + f, n).proportion_ci(confidence, "wilson")
    ci2 = sps.binomtest(e + g, n).proportion_ci(confidence, "wilson")
    den = (e + f) * (g + h) * (e + g) * (f + h)
    phi = (e * h - f * g) / math.sqrt(den) if den else 0.0
    d = p1 - p2
    lo = d - math.sqrt(
        (p1 - ci1.low) ** 2 - 2 * phi * (p1 - ci1.low) * (ci2.high - p2) + (ci2.high - p2) ** 2
    )
    hi = d + math.sqrt(
        (ci1.high - p1) ** 2 - 2 * phi * (ci1.high - p1) * (p2 - ci2.low) + (p2 - ci2.low) ** 2
    )
    return lo, hi


@pytest.mark.parametrize(
    "pairs",
    [PairCounts(80, 10, 5, 5), PairCounts(12, 2, 5, 21), PairCounts(50, 0, 0, 0), PairCounts(0, 3, 0, 7),
     PairCounts(400, 30, 60, 10)],
)  # fmt: skip
def test_paired_difference_interval_matches_reference(pairs: PairCounts) -> None:
    low, high = paired_difference_interval(pairs, 0.95)
    ref_low, ref_high = _newcombe_reference(pairs, 0.95)
    assert low == pytest.approx(ref_low, abs=1e-9)
    assert high == pytest.approx(ref_high, abs=1e-9)
    assert -1.0 <= low <= high <= 1.0


def test_paired_difference_interval_covers_the_truth() -> None:
    """Coverage by simulation: the 95 % interval holds the true difference ~95 % of the time
    even at n = 40 (a Wald interval does far worse there)."""
    rng = random.Random(7)
    cells = [0.7, 0.12, 0.05, 0.13]  # both, challenger only, champion only, neither
    truth = cells[1] - cells[2]
    hits = 0
    runs = 2000
    for _ in range(runs):
        counts = [0, 0, 0, 0]
        for _ in range(40):
            u, acc = rng.random(), 0.0
            for i, p in enumerate(cells):
                acc += p
                if u < acc:
                    counts[i] += 1
                    break
            else:
                counts[3] += 1
        both, challenger_only, champion_only, neither = counts
        low, high = paired_difference_interval(
            PairCounts(both, champion_only, challenger_only, neither), 0.95
        )
        hits += low <= truth <= high
    assert 0.93 <= hits / runs <= 0.99


def test_paired_difference_interval_without_pairs() -> None:
    assert paired_difference_interval(PairCounts(0, 0, 0, 0)) == (-1.0, 1.0)


def test_pair_counts_reject_negative() -> None:
    with pytest.raises(ValueError):
        PairCounts(1, -1, 0, 0)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("n", [6, 20, 50])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_wilcoxon_exact_matches_scipy(seed: int, n: int, alternative: str) -> None:
    rng = random.Random(seed)
    diffs = [rng.gauss(0.3, 1.0) for _ in range(n)]  # continuous: no ties, no zeros
    ref = sps.wilcoxon(diffs, alternative=alternative, method="exact")
    w, p = wilcoxon_signed_rank(diffs, alternative)  # type: ignore[arg-type]
    assert p == pytest.approx(ref.pvalue, rel=1e-9)
    if alternative != "two-sided":
        assert w == pytest.approx(ref.statistic)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_wilcoxon_normal_approximation_with_ties_and_zeros(alternative: str) -> None:
    rng = random.Random(11)
    diffs = [round(rng.gauss(0.2, 1.0), 1) for _ in range(300)]  # ties and zeros
    nonzero = [d for d in diffs if d != 0]
    ref = sps.wilcoxon(nonzero, alternative=alternative, method="approx", correction=False)
    _, p = wilcoxon_signed_rank(diffs, alternative)  # type: ignore[arg-type]
    assert p == pytest.approx(ref.pvalue, rel=1e-7)


def test_wilcoxon_nothing_to_test() -> None:
    assert wilcoxon_signed_rank([0.0, 0.0]) == (0.0, 1.0)
    assert wilcoxon_signed_rank([]) == (0.0, 1.0)


def test_confidence_bins() -> None:
    assert [confidence_bin(c) for c in (0.0, 0.05, 0.1, 0.55, 0.9, 0.95, 1.0)] == [0, 0, 1, 5, 9, 9, 9]
    assert len(CALIBRATION_EDGES) + 1 == 10


def test_fit_calibration_pools_adjacent_violators() -> None:
    # Bin 6: 9/10 right, bin 7: 5/10 right (a violation): pooled to 14/20 = 0.7 each.
    conf = [0.65] * 10 + [0.75] * 10 + [0.95] * 4
    correct = [True] * 9 + [False] + [True] * 5 + [False] * 5 + [True] * 4
    table = fit_calibration(conf, correct)
    assert table.accuracy[6] == pytest.approx(0.7)
    assert table.accuracy[7] == pytest.approx(0.7)
    assert table.accuracy[9] == 1.0
    assert table.accuracy[0] is None
    assert table.counts[6] == 10
    values = [a for a in table.accuracy if a is not None]
    assert values == sorted(values)


def _synthetic(
    rng: random.Random, n: int, low: float, high: float, skew: float
) -> tuple[list[float], list[bool]]:
    """Top-class probabilities in [low, high]; a row is right with probability conf**skew
    (skew 1: calibrated; skew 2: over-confident)."""
    conf = [rng.uniform(low, high) for _ in range(n)]
    return conf, [rng.random() < c**skew for c in conf]


@pytest.mark.parametrize("skew", [1.0, 2.0])
def test_estimated_accuracy_follows_a_shift_before_labels(skew: float) -> None:
    """Calibrated on held-out rows, the estimate tracks the real accuracy of live rows whose
    confidences moved (a covariate shift the model notices), calibrated or not."""
    rng = random.Random(5)
    held_conf, held_ok = _synthetic(rng, 5000, 0.34, 1.0, skew)
    table = fit_calibration(held_conf, held_ok)
    for low, high in [(0.34, 1.0), (0.4, 0.7), (0.8, 1.0)]:
        live_conf, live_ok = _synthetic(rng, 5000, low, high, skew)
        live_counts = [0] * 10
        for c in live_conf:
            live_counts[confidence_bin(c)] += 1
        estimate = estimate_accuracy(table, live_counts)
        assert estimate is not None
        assert estimate == pytest.approx(sum(live_ok) / len(live_ok), abs=0.03)


def test_estimated_accuracy_edges() -> None:
    table = Calibration(accuracy=(None,) * 8 + (0.8, 0.95), counts=(0,) * 8 + (10, 10))
    assert estimate_accuracy(table, [0] * 10) is None
    assert estimate_accuracy(table, [1] * 9) is None  # wrong number of bins
    # Live rows in bin 3, never seen held out, take the nearest calibrated bin (8).
    assert estimate_accuracy(table, [0, 0, 0, 4, 0, 0, 0, 0, 0, 4]) == pytest.approx((4 * 0.8 + 4 * 0.95) / 8)
    assert estimate_accuracy(Calibration((None,) * 10, (0,) * 10), [1] * 10) is None


# --- two independent samples (the split canary's tracks) ---------------------------------------


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [(0, 1, 1, 1), (3, 10, 9, 10), (7, 10, 8, 12), (10, 10, 0, 10), (0, 5, 0, 7), (45, 50, 48, 50),
     (860, 1000, 900, 1000), (900, 1000, 860, 1000), (2, 30, 150, 2000), (9990, 10000, 9999, 10000)],
)  # fmt: skip
def test_fisher_exact_less_matches_scipy(x1: int, n1: int, x2: int, n2: int) -> None:
    _, ref = sps.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]], alternative="less")
    assert fisher_exact_less(x1, n1, x2, n2) == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_fisher_exact_hand_computed() -> None:
    # 0 of 3 vs 3 of 3: the only table at least as extreme, 1 / C(6, 3) = 1/20.
    assert fisher_exact_less(0, 3, 3, 3) == pytest.approx(1 / 20, rel=1e-12)
    assert fisher_exact_less(3, 3, 0, 3) == 1.0
    with pytest.raises(ValueError, match="successes"):
        fisher_exact_less(4, 3, 0, 3)


def _newcombe_independent(x1: int, n1: int, x2: int, n2: int, confidence: float) -> tuple[float, float]:
    """Newcombe's method 10 (independent samples) from his paper with scipy's Wilson intervals."""
    ci1 = sps.binomtest(x1, n1).proportion_ci(confidence, "wilson")
    ci2 = sps.binomtest(x2, n2).proportion_ci(confidence, "wilson")
    p1, p2 = x1 / n1, x2 / n2
    return (
        p1 - p2 - math.sqrt((p1 - ci1.low) ** 2 + (ci2.high - p2) ** 2),
        p1 - p2 + math.sqrt((ci1.high - p1) ** 2 + (p2 - ci2.low) ** 2),
    )


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"), [(56, 70, 48, 80), (9, 10, 3, 10), (0, 10, 0, 20), (10, 10, 0, 10)]
)
def test_difference_interval_matches_reference(x1: int, n1: int, x2: int, n2: int) -> None:
    low, high = difference_interval(x1, n1, x2, n2, 0.95)
    ref_low, ref_high = _newcombe_independent(x1, n1, x2, n2, 0.95)
    assert (low, high) == pytest.approx((ref_low, ref_high), abs=1e-9)
    assert difference_interval(1, 0, 1, 1) == (-1.0, 1.0)


def test_difference_interval_newcombe_worked_example() -> None:
    # Newcombe (1998), Table II example (56/70 - 48/80), method 10: 0.0524 to 0.3339.
    assert difference_interval(56, 70, 48, 80, 0.95) == pytest.approx((0.0524, 0.3339), abs=5e-5)


def _moments(values: list[float]) -> Moments:
    return Moments(len(values), math.fsum(values), math.fsum(v * v for v in values))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_z_matches_a_direct_computation(alternative: str) -> None:
    rng = random.Random(7)
    a = [abs(rng.gauss(1.0, 0.5)) for _ in range(40)]
    b = [abs(rng.gauss(0.8, 0.3)) for _ in range(65)]
    z, p = welch_z(_moments(a), _moments(b), alternative)  # type: ignore[arg-type]
    se = math.sqrt(sps.tvar(a) / len(a) + sps.tvar(b) / len(b))
    ref_z = (sum(a) / len(a) - sum(b) / len(b)) / se
    ref_p = {
        "greater": sps.norm.sf(ref_z),
        "less": sps.norm.cdf(ref_z),
        "two-sided": 2 * sps.norm.sf(abs(ref_z)),
    }
    assert z == pytest.approx(ref_z, rel=1e-9)
    assert p == pytest.approx(ref_p[alternative], rel=1e-9)


def test_welch_z_near_welch_t_for_large_samples() -> None:
    rng = random.Random(3)
    a = [abs(rng.gauss(1.0, 1.0)) for _ in range(2000)]
    b = [abs(rng.gauss(1.05, 1.0)) for _ in range(3000)]
    _, p = welch_z(_moments(a), _moments(b))
    ref = sps.ttest_ind(a, b, equal_var=False).pvalue
    assert p == pytest.approx(ref, rel=5e-3)  # z against t with ~4,000 degrees of freedom


def test_welch_z_small_and_degenerate_samples() -> None:
    assert welch_z(Moments(1, 2.0, 4.0), Moments(10, 5.0, 3.0)) == (0.0, 1.0)  # too few rows
    assert welch_z(Moments(0, 0.0, 0.0), Moments(0, 0.0, 0.0)) == (0.0, 1.0)
    same = Moments(5, 5.0, 5.0)  # every error 1.0: no variance
    assert welch_z(same, same, "greater") == (0.0, 0.5)
    z, p = welch_z(Moments(5, 10.0, 20.0), same, "greater")
    assert (z, p) == (math.inf, 0.0)
    # Hand-computed: [1, 2, 3] vs [0, 0, 1]: means 2 and 1/3, variances 1 and 1/3,
    # se = sqrt(1/3 + 1/9) = 2/3, z = (5/3) / (2/3) = 2.5.
    z, p = welch_z(Moments(3, 6.0, 14.0), Moments(3, 1.0, 1.0), "greater")
    assert z == pytest.approx(2.5, rel=1e-12)
    assert p == pytest.approx(0.0062096653257761, rel=1e-9)


def test_one_sample_z_is_the_t_statistic_with_normal_tails() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3, variance 2.5: z = 3 / sqrt(2.5 / 5) = 4.2426
    sample = Moments(5, sum(values), sum(v * v for v in values))
    z, p = one_sample_z(sample, "greater")
    assert z == pytest.approx(sps.ttest_1samp(values, 0.0).statistic) == pytest.approx(4.242641, rel=1e-6)
    assert p == pytest.approx(sps.norm.sf(z), rel=1e-9)
    assert one_sample_z(sample, "less")[1] == pytest.approx(sps.norm.cdf(z), rel=1e-9)
    assert one_sample_z(Moments(1, 3.0, 9.0)) == (0.0, 1.0)  # one row: no variance, no evidence
