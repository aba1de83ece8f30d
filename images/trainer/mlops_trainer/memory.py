"""A pre-flight memory estimate (issue #23): refuse data the pod cannot train on, before an OOM kill.

Measured on generated tables (20 numeric and 9 text columns with 10-50 categories, 5 % missing;
`tests/benchmarks/training.py` makes them): a process that imports the trainer's libraries peaks
at ~260 MiB, and training adds ~2.2 x the bytes of the prepared matrix (rows x prepared columns
x 8: the ColumnTransformer's dense output for the train rows, the held-out rows, and the
predictions' copies) for logistic regression, a forest and histogram boosting alike; the raw
table itself is an order of magnitude smaller. So the estimate is

    BASE_BYTES + MATRIX_COPIES x rows x prepared columns x 8

with MATRIX_COPIES = 2, a lower bound of what was measured: when the estimate exceeds the
limit, training would have been killed anyway, so a job that would fit is never refused.
Rows come from the file size and the bytes of the first SAMPLE_ROWS rows (CSV, JSON lines) or
the Parquet footer; prepared columns from those rows (a numeric column is one, a text column one
per category seen with one-hot encoding, one with ordinal; more categories only add).

The limit: MLOPS_MEMORY_LIMIT (bytes; the operator sets it from spec.resources.limits.memory),
else the container's cgroup (v2 memory.max, v1 memory.limit_in_bytes), else none: no check.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd

from mlops_trainer.errors import BadInput
from mlops_trainer.logs import log

ENV_MEMORY_LIMIT: Final = "MLOPS_MEMORY_LIMIT"
BASE_BYTES: Final = 250 * 2**20
MATRIX_COPIES: Final = 2
SAMPLE_ROWS: Final = 2000
CGROUP_FILES: Final = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
# cgroup v1 reports "no limit" as a huge number (a page-rounded 2^63 - 1).
_UNLIMITED: Final = 2**60


class InsufficientMemory(BadInput):
    """The data cannot be trained on within the pod's memory limit."""

    reason = "InsufficientMemory"


@dataclass(frozen=True)
class Estimate:
    rows: int
    columns: int
    peak_bytes: int


def memory_limit(env: Mapping[str, str], cgroup_files: Sequence[str] = CGROUP_FILES) -> int | None:
    """The container's memory limit in bytes, or None when it has none."""
    value = env.get(ENV_MEMORY_LIMIT, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    for name in cgroup_files:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < _UNLIMITED:
            return int(text)
        return None
    return None


def _sample(path: Path, fmt: str) -> tuple[pd.DataFrame, int]:
    """The first SAMPLE_ROWS rows of `path` and its total row count (estimated for text formats)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        batch = next(parquet.iter_batches(batch_size=SAMPLE_ROWS), None)
        frame = batch.to_pandas() if batch is not None else pd.DataFrame()
        return frame, parquet.metadata.num_rows
    with path.open("rb") as f:
        head = list(itertools.islice(f, SAMPLE_ROWS + (1 if fmt == "csv" else 0)))
    lines = head[1:] if fmt == "csv" else head
    if not lines:
        return pd.DataFrame(), 0
    header = len(head[0]) if fmt == "csv" else 0
    body = sum(len(line) for line in lines)
    rows = round((path.stat().st_size - header) * len(lines) / max(body, 1))
    if fmt == "csv":
        frame = pd.read_csv(path, nrows=SAMPLE_ROWS)
    else:
        frame = pd.read_json(path, lines=True, nrows=SAMPLE_ROWS)
    return frame, rows


def prepared_columns(sample: pd.DataFrame, target: str, onehot: bool) -> int:
    columns = 0
    for name in sample.columns:
        if name == target:
            continue
        col = sample[name]
        if pd.api.types.is_numeric_dtype(col) or not onehot:
            columns += 1
            continue
        try:
            columns += max(1, int(col.nunique(dropna=True)))
        except TypeError:  # unhashable values (nested records): the read will judge them
            columns += 1
    return columns


def estimate(files: Sequence[Path], fmt: str, target: str, *, onehot: bool) -> Estimate | None:
    """The training peak for these files, from their first rows; None when nothing can be read,
    and for JSON lines (the prediction log: nested records the trainer flattens itself, and
    never the bulk of a table)."""
    if fmt == "jsonl":
        return None
    rows, columns = 0, 0
    for file in files:
        try:
            sample, count = _sample(file, fmt)
        except (ValueError, OSError):
            return None  # the read itself will say what is wrong with the file
        rows += count
        columns = max(columns, prepared_columns(sample, target, onehot))
    if rows == 0:
        return None
    return Estimate(rows, columns, BASE_BYTES + MATRIX_COPIES * rows * columns * 8)


def check(
    files: Sequence[Path], fmt: str, target: str, uri: str, env: Mapping[str, str], *, onehot: bool
) -> Estimate | None:
    """Raise InsufficientMemory when training on `files` cannot fit the container's limit."""
    limit = memory_limit(env)
    if limit is None:
        return None
    found = estimate(files, fmt, target, onehot=onehot)
    if found is None:
        return None
    mib = 2**20
    log(
        "Estimated memory",
        source=uri,
        rows=found.rows,
        preparedColumns=found.columns,
        peakMiB=round(found.peak_bytes / mib),
        limitMiB=round(limit / mib),
    )
    if found.peak_bytes > limit:
        raise InsufficientMemory(
            f"training on {uri} needs at least ~{found.peak_bytes / mib:,.0f} MiB "
            f"(~{found.rows:,} rows x {found.columns} prepared columns, estimated from its first rows), "
            f"more than the pod's memory limit of {limit / mib:,.0f} MiB: raise spec.resources.limits.memory "
            "or train on a sample of the data"
        )
    return found
