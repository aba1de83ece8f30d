"""Statistics for judging models on live traffic (issue #22), in the standard library alone.

The operator judges canaries and shadow challengers, and it never imports numpy or scipy
(import-linter), so everything here is plain Python on counts: `math.lgamma` for exact
binomial tails, `statistics.NormalDist` for normal quantiles. Each function is checked against
scipy (or a hand computation) in tests/unit/contract/test_stats.py.

- `wilson_interval`: the Wilson score interval of a proportion. Unlike the Wald interval it
  stays inside [0, 1] and keeps its coverage at small n and at 0 or n successes, which is what
  a canary with 0 errors in its first 10 requests needs.
- `binomial_sf`, `rate_exceeds` / `rate_within`: the exact one-sided binomial test that an
  error rate is above / below a limit (1 error in a canary's first 10 requests is not evidence
  against maxErrorRate 0.01: P = 0.096).
- `mcnemar_exact`: McNemar's exact test on the discordant pairs of two classifiers scored on
  the same labelled requests (a two-sided binomial test of b against b + c at p = 1/2).
- `sequential_half_p`: an always-valid p-value for the same hypothesis (discordant pairs split
  evenly), for a verdict tested again at every pass as pairs accumulate: the inverse of a
  mixture likelihood ratio (a Beta(10, 10) prior over the split against 1/2), a martingale under
  the null, so by Ville's inequality the chance that it ever falls below alpha, however often
  it is looked at, is at most alpha. A fixed-n test looked at every pass is not: McNemar at 0.05
  on 5 new pairs every 5 s for an hour rejects a true null about a third of the time.
- `paired_difference_interval`: Newcombe's hybrid score interval (his method 10) for the
  difference of two paired proportions, used for "not worse within a margin".
- `fisher_exact_less` and `difference_interval`: two independent proportions (the split
  canary's tracks, each scored on its own labelled requests): Fisher's exact one-sided test,
  exact at any n (the hypergeometric tail summed in log space), and Newcombe's hybrid score
  interval (his method 10 for independent samples) for the difference.
- `welch_z`: two independent means (mean absolute errors) from their moments (n, sum, sum of
  squares), which is all per-pod counters can give: Welch's unpooled standard error with the
  normal distribution, so it needs a few dozen rows per sample (the caller's minimum).
- `wilcoxon_signed_rank`: the paired test for regression (on absolute errors): exact null
  distribution when n <= 50 and no ties, otherwise the normal approximation with the tie
  correction; zero differences are dropped (Wilcoxon's convention, scipy's default).
- `fit_calibration` / `estimate_accuracy`: confidence-based performance estimation. On the
  version's held-out rows, the share of correct predictions per confidence bin, made monotone
  by pooling adjacent violators (isotonic regression on binned data), is the calibration table;
  live rows' confidences, binned the same way, give the expected accuracy before labels arrive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final, Literal

# Exact Wilcoxon null distribution up to this many non-zero differences (as scipy does).
WILCOXON_EXACT_MAX: Final = 50
# Confidence bins of the calibration table: [0, 0.1), ..., [0.9, 1.0].
CALIBRATION_EDGES: Final = tuple(i / 10 for i in range(1, 10))


def _z(confidence: float, sides: int = 2) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / sides)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval of successes/n; (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; rounding must not move it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _log_binom_pmf(i: int, n: int, log_p: float, log_q: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q


def _tail(start: int, stop: int, step: int, n: int, p: float) -> float:
    """Sum of Binomial(n, p) probabilities from `start` towards `stop` (exclusive) by `step`."""
    log_p, log_q = math.log(p), math.log1p(-p)
    return _log_tail(lambda i: _log_binom_pmf(i, n, log_p, log_q), range(start, stop, step), (n + 1) * p)


def _log_tail(log_pmf: Callable[[int], float], support: range, mode: float) -> float:
    """Sum of a unimodal distribution's probabilities over `support` (walked in its order), in
    log space, ending once the terms fall below e^-40 of the largest (they only shrink beyond
    the mode, so the rest cannot change a double)."""
    step = support.step
    top = -math.inf
    terms: list[float] = []
    for i in support:
        term = log_pmf(i)
        terms.append(term)
        top = max(top, term)
        past_mode = i > mode if step > 0 else i < mode - 1
        if past_mode and term < top - 40.0:
            break
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in terms)) if terms else 0.0


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact to rounding: the smaller tail is summed in log
    space until its terms no longer count (a few hundred terms even for large n)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if k <= 0:
        return 1.0
    if k > n or p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    if k > n * p:
        return _tail(k, n + 1, 1, n, p)
    return max(0.0, 1.0 - _tail(k - 1, -1, -1, n, p))


def rate_exceeds(events: int, n: int, limit: float, confidence: float = 0.95) -> bool:
    """True when events/n is above `limit` with `confidence`: the exact one-sided binomial
    test, P(at least `events` of n | rate = limit) < 1 - confidence."""
    if n == 0 or events == 0:
        return False
    return binomial_sf(events, n, limit) < 1.0 - confidence


def rate_within(events: int, n: int, limit: float, confidence: float = 0.95) -> bool:
    """True when events/n is below `limit` with `confidence` (exact one-sided binomial test)."""
    if n == 0:
        return False
    return 1.0 - binomial_sf(events + 1, n, limit) < 1.0 - confidence


def _log_binom_pmf_half(k: int, n: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)


def binomial_half_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (exact to rounding for any n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [_log_binom_pmf_half(i, n) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's exact test on b and c discordant pairs (1.0 when b == c)."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if n == 0 or b == c:
        return 1.0
    return min(1.0, 2.0 * binomial_half_cdf(min(b, c), n))


# Beta(a, a) prior of the discordant split under the alternative: a standard deviation of
# about 0.11 around 1/2, the imbalances a retrained model shows (0.6 to 0.8 of the discordant
# pairs on one side). Against a flat prior (1): 54 of 80 and 188 of 320 discordant pairs on one
# side reject at 0.05 where the flat prior needs 55 and 191, while it needs 30 of 40 to this 31.
SEQUENTIAL_PRIOR: Final = 10.0


def sequential_half_p(b: int, c: int, prior: float = SEQUENTIAL_PRIOR) -> float:
    """Always-valid two-sided p-value that b and c discordant pairs split evenly: 1 / the Bayes
    factor of Beta(prior, prior)-distributed split against 1/2 (mixture sequential probability
    ratio test), capped at 1. Valid at any number of looks, for any stopping rule."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    if prior <= 0:
        raise ValueError("the prior's concentration must be > 0")

    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    log_factor = log_beta(prior + b, prior + c) - log_beta(prior, prior) + (b + c) * math.log(2.0)
    return 1.0 if log_factor <= 0 else math.exp(-log_factor)


@dataclass(frozen=True)
class PairCounts:
    """Two classifiers on the same labelled requests: who was right.

    `both`: both correct; `champion_only`: only the champion; `challenger_only`: only the
    challenger; `neither`: both wrong.
    """

    both: int
    champion_only: int
    challenger_only: int
    neither: int

    def __post_init__(self) -> None:
        if min(self.both, self.champion_only, self.challenger_only, self.neither) < 0:
            raise ValueError("pair counts must be >= 0")

    @property
    def n(self) -> int:
        return self.both + self.champion_only + self.challenger_only + self.neither

    @property
    def champion_accuracy(self) -> float | None:
        return (self.both + self.champion_only) / self.n if self.n else None

    @property
    def challenger_accuracy(self) -> float | None:
        return (self.both + self.challenger_only) / self.n if self.n else None


def paired_difference_interval(pairs: PairCounts, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for challenger accuracy minus champion accuracy."""
    n = pairs.n
    if n == 0:
        return -1.0, 1.0
    a, b, c, d = pairs.both, pairs.challenger_only, pairs.champion_only, pairs.neither
    p1, p2 = (a + b) / n, (a + c) / n  # challenger, champion
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom > 0 else 0.0
    return _hybrid(p1, (l1, u1), p2, (l2, u2), phi)


def _hybrid(
    p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float], phi: float
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 from each proportion's Wilson interval and
    their correlation `phi` (0 for independent samples)."""
    (l1, u1), (l2, u2) = ci1, ci2
    diff = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, diff - dl), min(1.0, diff + du)


def difference_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10) for x1/n1 - x2/n2, independent samples;
    (-1, 1) when either sample is empty."""
    if n1 <= 0 or n2 <= 0:
        return -1.0, 1.0
    ci1, ci2 = wilson_interval(x1, n1, confidence), wilson_interval(x2, n2, confidence)
    return _hybrid(x1 / n1, ci1, x2 / n2, ci2, 0.0)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_less(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided p-value of Fisher's exact test that proportion 1 is below proportion 2:
    P(X <= x1) for X hypergeometric (x1 + x2 successes among n1 + n2 rows, n1 drawn), as
    scipy's fisher_exact([[x1, n1 - x1], [x2, n2 - x2]], alternative="less")."""
    if not (0 <= x1 <= n1 and 0 <= x2 <= n2):
        raise ValueError(f"need 0 <= successes <= n, got {x1} of {n1} and {x2} of {n2}")
    total, successes = n1 + n2, x1 + x2
    low, high = max(0, n1 - (total - successes)), min(successes, n1)
    if x1 >= high:
        return 1.0
    log_all = _log_choose(total, n1)

    def log_pmf(k: int) -> float:
        return _log_choose(successes, k) + _log_choose(total - successes, n1 - k) - log_all

    mode = (n1 + 1) * (successes + 1) / (total + 2)
    if x1 < mode:  # the lower tail is the short side: sum it
        return _log_tail(log_pmf, range(x1, low - 1, -1), mode)
    return max(0.0, 1.0 - _log_tail(log_pmf, range(x1 + 1, high + 1), mode))


@dataclass(frozen=True)
class Moments:
    """A sample summarised as counters can sum it: rows, sum and sum of squares."""

    n: float
    total: float
    squares: float

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n > 0 else None

    @property
    def variance(self) -> float | None:
        """The sample variance (n - 1), never below 0 (rounding in the sums)."""
        if self.n < 2:
            return None
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


def welch_z(a: Moments, b: Moments, alternative: Alternative = "two-sided") -> tuple[float, float]:
    """(z, p-value) for mean(a) - mean(b) with Welch's unpooled standard error and the normal
    distribution; "greater": the alternative that a's mean is larger. Fewer than 2 rows in
    either sample: (0, 1). Both variances 0: the means decide (p 0 or 1)."""
    va, vb, ma, mb = a.variance, b.variance, a.mean, b.mean
    if va is None or vb is None or ma is None or mb is None:
        return 0.0, 1.0
    diff = ma - mb
    se = math.sqrt(va / a.n + vb / b.n)
    z = (0.0 if diff == 0 else math.copysign(math.inf, diff)) if se == 0.0 else diff / se
    if alternative == "greater":
        return z, _sf(z)
    if alternative == "less":
        return z, _sf(-z)
    return z, min(1.0, 2.0 * _sf(abs(z)))


def one_sample_z(sample: Moments, alternative: Alternative = "two-sided") -> tuple[float, float]:
    """(z, p-value) for the mean of `sample` against 0 with the normal distribution (large
    samples); "greater": the alternative that the mean is above 0. As welch_z against a sample
    of zeros of the same size."""
    return welch_z(sample, Moments(sample.n, 0.0, 0.0), alternative)


def _sf(z: float) -> float:
    """P(Z > z) for a standard normal Z, accurate in the far tail (no 1 - cdf)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


Alternative = Literal["two-sided", "greater", "less"]


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Average ranks (1-based) of `values` and the sizes of their tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _signed_rank_counts(n: int) -> list[int]:
    """How many of the 2^n sign patterns give each rank sum 0..n(n+1)/2."""
    counts = [1] + [0] * (n * (n + 1) // 2)
    for r in range(1, n + 1):
        for s in range(len(counts) - 1, r - 1, -1):
            counts[s] += counts[s - r]
    return counts


def wilcoxon_signed_rank(
    diffs: Sequence[float], alternative: Alternative = "two-sided"
) -> tuple[float, float]:
    """(W+, p-value) of the Wilcoxon signed-rank test that the differences centre on 0.

    "greater": the alternative that they tend to be positive. Zero differences are dropped;
    with none left the p-value is 1.
    """
    nonzero = [float(x) for x in diffs if x != 0 and not math.isnan(x)]
    n = len(nonzero)
    if n == 0:
        return 0.0, 1.0
    ranks, ties = _ranks([abs(x) for x in nonzero])
    w_plus = math.fsum(r for r, x in zip(ranks, nonzero, strict=True) if x > 0)
    if n <= WILCOXON_EXACT_MAX and all(t == 1 for t in ties):
        counts = _signed_rank_counts(n)
        total = 2**n
        w = round(w_plus)
        upper = sum(counts[w:]) / total  # P(W+ >= w)
        lower = sum(counts[: w + 1]) / total  # P(W+ <= w)
        if alternative == "greater":
            return w_plus, upper
        if alternative == "less":
            return w_plus, lower
        return w_plus, min(1.0, 2.0 * min(upper, lower))
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in ties) / 48
    if var <= 0:
        return w_plus, 1.0
    z = (w_plus - mean) / math.sqrt(var)
    norm = NormalDist()
    if alternative == "greater":
        return w_plus, 1.0 - norm.cdf(z)
    if alternative == "less":
        return w_plus, norm.cdf(z)
    return w_plus, min(1.0, 2.0 * (1.0 - norm.cdf(abs(z))))


def confidence_bin(confidence: float) -> int:
    """The calibration bin of a top-class probability: 0 for [0, 0.1), ..., 9 for [0.9, 1]."""
    return sum(1 for edge in CALIBRATION_EDGES if confidence >= edge)


@dataclass(frozen=True)
class Calibration:
    """Observed accuracy per confidence bin on held-out rows, monotone in the confidence.

    `accuracy[i]` is None for a bin no held-out row fell into: live rows there are estimated
    from the nearest bins that have data (pooled by `estimate_accuracy`).
    """

    accuracy: tuple[float | None, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        """The form stored in model.json (`calibration`)."""
        return {
            "edges": list(CALIBRATION_EDGES),
            "accuracy": list(self.accuracy),
            "counts": list(self.counts),
        }

    @classmethod
    def from_dict(cls, doc: object) -> Calibration | None:
        """The table from model.json; None when absent or written with other bins."""
        if not isinstance(doc, dict) or doc.get("edges") != list(CALIBRATION_EDGES):
            return None
        accuracy, counts = doc.get("accuracy"), doc.get("counts")
        bins = len(CALIBRATION_EDGES) + 1
        if not isinstance(accuracy, list) or not isinstance(counts, list) or len(accuracy) != bins:
            return None
        if len(counts) != bins or not all(isinstance(c, int) and c >= 0 for c in counts):
            return None
        if not all(a is None or (isinstance(a, int | float) and 0.0 <= a <= 1.0) for a in accuracy):
            return None
        return cls(tuple(None if a is None else float(a) for a in accuracy), tuple(counts))


def fit_calibration(confidences: Sequence[float], correct: Sequence[bool]) -> Calibration:
    """The calibration table of a classifier from its held-out top-class probabilities."""
    if len(confidences) != len(correct):
        raise ValueError("confidences and correct must have the same length")
    bins = len(CALIBRATION_EDGES) + 1
    hits, counts = [0] * bins, [0] * bins
    for conf, ok in zip(confidences, correct, strict=True):
        i = confidence_bin(conf)
        counts[i] += 1
        hits[i] += int(ok)
    # Pool adjacent violators over the bins that hold rows, weighted by their counts.
    blocks: list[list[float]] = []  # [hits, count, first bin, last bin]
    for i in range(bins):
        if counts[i] == 0:
            continue
        blocks.append([float(hits[i]), float(counts[i]), i, i])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            h, n, _, last = blocks.pop()
            blocks[-1][0] += h
            blocks[-1][1] += n
            blocks[-1][3] = last
    accuracy: list[float | None] = [None] * bins
    for h, n, first, last in blocks:
        for i in range(int(first), int(last) + 1):
            if counts[i]:
                accuracy[i] = h / n
    return Calibration(tuple(accuracy), tuple(counts))


def estimate_accuracy(calibration: Calibration, live_counts: Sequence[int]) -> float | None:
    """Expected accuracy of live rows from their per-bin counts; None without rows or table.

    A live bin the held-out rows never reached takes the accuracy of the nearest calibrated
    bin (the lower one on a tie), an honest extrapolation of a monotone table.
    """
    known = [i for i, acc in enumerate(calibration.accuracy) if acc is not None]
    if not known or len(live_counts) != len(calibration.accuracy):
        return None
    total = sum(live_counts)
    if total <= 0:
        return None
    expected = 0.0
    for i, count in enumerate(live_counts):
        if count:
            nearest = min(known, key=lambda k: (abs(k - i), k))
            acc = calibration.accuracy[nearest]
            assert acc is not None
            expected += count * acc
    return expected / total
