"""Reference statistics and the Population Stability Index (PSI), shared by trainer and server.

The trainer summarises each input feature of the training data (and the model's predictions
on it) into a *reference*; the server bins a sliding window of live inputs the same way and
compares the two distributions with PSI.

Binning (documented, deterministic):
- numeric feature: up to `NUMERIC_BINS` (10) quantile bins of the training values. `edges` are
  the sorted, de-duplicated interior cut points (the 10th, 20th, ..., 90th percentiles), so
  there are `len(edges) + 1` bins: bin i holds values v with edges[i-1] < v <= edges[i]
  (`numpy.searchsorted(edges, v, side="left")`), the first bin is open below, the last above.
  NaN values are not binned.
- categorical feature (and classification predictions): one bin per category seen in
  training (at most `MAX_CATEGORIES`, the most frequent), plus a final "other" bin for
  anything else, so unseen categories raise the score instead of being ignored.

PSI = sum_i (a_i - e_i) * ln(a_i / e_i) over bins, with both proportion vectors floored at
`EPSILON` so empty bins stay finite. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift,
> 0.25 significant shift.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np

NUMERIC_BINS: Final = 10
MAX_CATEGORIES: Final = 50
EPSILON: Final = 1e-4


def numeric_reference(values: Iterable[float]) -> dict[str, Any]:
    arr = np.asarray(list(values), dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {"kind": "numeric", "edges": [], "proportions": [1.0], "count": 0}
    qs = np.quantile(arr, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
    edges = np.unique(qs)
    counts = np.bincount(np.searchsorted(edges, arr, side="left"), minlength=edges.size + 1)
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "proportions": [float(c) / arr.size for c in counts],
        "count": int(arr.size),
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def categorical_reference(values: Iterable[Any]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for v in values:
        key = _category_key(v)
        counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    order = sorted(counts.items(), key=lambda t: (-t[1], t[0]))[:MAX_CATEGORIES]
    categories = [c for c, _ in order]
    props = [n / total for _, n in order] if total else []
    other = 1.0 - sum(props) if total else 1.0
    return {
        "kind": "categorical",
        "categories": categories,
        "proportions": [*props, max(other, 0.0)],
        "count": total,
    }


def _category_key(value: Any) -> str:
    # 1, 1.0 and "1" are one category: labels round-trip through JSON as any of them.
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def bin_counts(reference: Mapping[str, Any], values: Sequence[Any]) -> np.ndarray:
    """Count `values` into the bins of `reference`; the result has len(proportions) entries."""
    n_bins = len(reference["proportions"])
    if reference["kind"] == "numeric":
        arr = np.asarray(values, dtype=float)
        arr = arr[~np.isnan(arr)]
        edges = np.asarray(reference["edges"], dtype=float)
        return np.bincount(np.searchsorted(edges, arr, side="left"), minlength=n_bins)[:n_bins]
    index = {c: i for i, c in enumerate(reference["categories"])}
    other = n_bins - 1
    counts = np.zeros(n_bins, dtype=np.int64)
    for v in values:
        counts[index.get(_category_key(v), other)] += 1
    return counts


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """PSI between two proportion (or count) vectors over the same bins."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    e = np.maximum(e / e.sum(), EPSILON)
    a = np.maximum(a / a.sum(), EPSILON)
    value = float(np.sum((a - e) * np.log(a / e)))
    return value if math.isfinite(value) else 0.0


def feature_psi(reference: Mapping[str, Any], values: Sequence[Any]) -> float:
    """PSI of live `values` against one feature's (or the prediction's) reference."""
    return psi(reference["proportions"], bin_counts(reference, values))
