"""Data: load the sources of a TrainingJob, validate them against the spec, clean and split.

Loading: `builtin:<name>` (scikit-learn's bundled datasets, target column 'target'), pvc://
files or directories (read in place), s3:// and https:// (downloaded into a scratch directory).
Formats: csv, parquet, and jsonl — the inference server's labelled log, one object a line
`{"id", "time", "version", "features": {name: value}, "prediction", "label"}`, turned into the
feature columns plus the target; lines without a label are skipped. A directory is read whole
(csv: *.csv, parquet: *.parquet / *.pq, jsonl: feedback-*.jsonl; hidden files skipped). A jsonl
directory's labels-*.jsonl (labels a replica received for a request another replica served) are
joined by request id with the predictions-*.jsonl lines holding those rows' features.

Extra sources are aligned with the main one (same feature and target columns; numbers in the
main table stay numbers) and appended. Every problem with the data is a `BadInput` whose
message names the source and the column, so a user can fix it without reading logs.

Normalised dtypes (the model's signature): numeric columns are int64 or float64 (bool becomes
int64, nullable extension types float64); categorical text columns are `object` holding `str`
with NaN for missing, so imputers and encoders see one representation whatever the source.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from mlops_contract import storage
from mlops_contract.api.trainingjob import DataSource, Prepare, Split, TrainingJobSpec
from mlops_contract.estimators import BUILTIN_DATASETS, ESTIMATORS, Task
from mlops_trainer import memory
from mlops_trainer.errors import BadInput, Transient
from mlops_trainer.logs import log

BUILTIN_TARGET: Final = "target"
SUFFIXES: Final[dict[str, tuple[str, ...]]] = {
    "csv": (".csv", ".csv.gz"),
    "parquet": (".parquet", ".pq"),
    "jsonl": (".jsonl",),
}
JSONL_DIR_PREFIX: Final = "feedback-"
# Labels one replica received for a request another replica served, and the prediction lines
# (features) they are joined with by request id.
RELAYED_PREFIX: Final = "labels-"
PREDICTIONS_PREFIX: Final = "predictions-"
MAX_LISTED: Final = 20


@dataclass(frozen=True)
class Dataset:
    """A validated, cleaned table: features in pipeline input order and the target."""

    X: pd.DataFrame
    y: pd.Series
    task: Task
    target: str
    numeric: list[str]
    categorical: list[str]
    numeric_categorical: list[str]
    dropped_rows: int
    digest: str
    # Prepared data (mlops_trainer.prepared): X holds the training rows only, in the types chosen
    # on read; the dtypes the raw table had (the model's signature) and the number of rows.
    raw_dtypes: Mapping[str, str] | None = None
    rows: int | None = None
    # The lineage's record of the raw sources: one {"uri", "rows"} per data source, in spec order
    # (rows as read, before cleaning; a prediction log counts its labelled rows, each once); a
    # prepared run has the prepare step's.
    sources: tuple[dict[str, Any], ...] = ()

    @property
    def row_count(self) -> int:
        return len(self.X) if self.rows is None else self.rows

    def dtype_of(self, column: str) -> str:
        return str(self.raw_dtypes[column]) if self.raw_dtypes else str(self.X[column].dtype)

    @property
    def categorical_all(self) -> list[str]:
        return [c for c in self.X.columns if c in self.categorical or c in self.numeric_categorical]


@dataclass(frozen=True)
class SplitData:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    stratified: bool


def listing(names: Sequence[Any]) -> str:
    """`a, b, c` with at most MAX_LISTED names, for messages."""
    shown = [str(n) for n in list(names)[:MAX_LISTED]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f", ... ({more} more)" if more > 0 else "")


def resolve_task(spec: TrainingJobSpec) -> Task:
    task: Task = spec.task or ESTIMATORS[spec.estimator.class_name].task
    return task


def resolve_target(spec: TrainingJobSpec) -> str:
    if spec.data.target:
        return spec.data.target
    if spec.data.source.uri.startswith("builtin:"):
        return BUILTIN_TARGET
    raise BadInput("data.target is required for file sources")


# --- reading -------------------------------------------------------------------------------


def load_builtin(name: str) -> pd.DataFrame:
    if name not in BUILTIN_DATASETS:
        raise BadInput(
            f"unknown builtin dataset {name!r}; choose one of: {listing(sorted(BUILTIN_DATASETS))}"
        )
    import sklearn.datasets

    loader = getattr(sklearn.datasets, f"load_{name}")
    frame: pd.DataFrame = loader(as_frame=True).frame
    return frame


def _files(path: Path, fmt: str) -> list[Path]:
    if path.is_file():
        return [path]
    found = [
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and p.name.endswith(SUFFIXES[fmt])
        and (fmt != "jsonl" or p.name.startswith(JSONL_DIR_PREFIX))
    ]
    return sorted(found)


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line; invalid JSON is bad input."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except ValueError as e:
                raise BadInput(f"{path.name}:{lineno}: not valid JSON ({e})") from e


def _read_jsonl(path: Path, target: str) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    unlabelled = 0
    for lineno, entry in _json_lines(path):
        if not isinstance(entry, dict) or not isinstance(entry.get("features"), dict):
            raise BadInput(f"{path.name}:{lineno}: expected an object with a 'features' object")
        if entry.get("label") is None:
            unlabelled += 1
            continue
        rows.append({**entry["features"], target: entry["label"]})
    if unlabelled:
        log("Skipped unlabelled log lines", file=path.name, lines=unlabelled)
    return pd.DataFrame(rows) if rows else pd.DataFrame({target: []})


def _log_entries(path: Path) -> Iterator[dict[str, Any]]:
    return (entry for _, entry in _json_lines(path) if isinstance(entry, dict))


def _log_files(directory: Path, prefix: str) -> list[Path]:
    return sorted(
        p for p in directory.rglob(f"{prefix}*.jsonl") if p.is_file() and not p.name.startswith(".")
    )


def _relayed_rows(directory: Path, target: str) -> pd.DataFrame | None:
    """Rows labelled through a replica that did not serve them: labels-*.jsonl joined by request
    id with the predictions-*.jsonl line that holds the rows' features. Ids already labelled in
    a feedback-*.jsonl (by the serving replica) are skipped, so no row counts twice."""
    relayed_files = _log_files(directory, RELAYED_PREFIX)
    if not relayed_files:
        return None
    labelled = {
        entry.get("id") for path in _log_files(directory, JSONL_DIR_PREFIX) for entry in _log_entries(path)
    }
    pending: dict[str, list[Any]] = {}
    for path in relayed_files:
        for entry in _log_entries(path):
            request_id, labels = entry.get("id"), entry.get("labels")
            if isinstance(request_id, str) and isinstance(labels, list) and request_id not in labelled:
                pending.setdefault(request_id, labels)
    wanted = len(pending)
    rows: list[dict[str, Any]] = []
    for path in _log_files(directory, PREDICTIONS_PREFIX):
        for entry in _log_entries(path):
            labels = pending.pop(str(entry.get("id")), None)
            served = entry.get("rows")
            if labels is None or not isinstance(served, list) or len(served) != len(labels):
                continue
            rows.extend({**row, target: label} for row, label in zip(served, labels, strict=True))
    log(
        "Joined relayed labels with the prediction log",
        requests=wanted - len(pending),
        unmatched=len(pending),
    )
    return pd.DataFrame(rows) if rows else None


def _read_file(path: Path, fmt: str, target: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "parquet":
        return pd.read_parquet(path)
    return _read_jsonl(path, target)


class NoData(BadInput):
    """Nothing at a data source's location (no file, no object, an empty directory or prefix)."""


def read_path(
    path: Path, fmt: str, target: str, uri: str, preflight: Callable[[list[Path]], object] | None = None
) -> pd.DataFrame:
    """Read a file, or every matching file of a directory (same columns), into one table;
    `preflight` sees the files first (the memory check, issue #23)."""
    if not path.exists():
        raise NoData(f"data source {uri} does not exist ({path} not found)")
    files = _files(path, fmt)
    relayed = _relayed_rows(path, target) if fmt == "jsonl" and path.is_dir() else None
    if not files and relayed is not None:
        return relayed
    if not files:
        pattern = (
            f"{JSONL_DIR_PREFIX}*.jsonl" if fmt == "jsonl" else " or ".join(f"*{s}" for s in SUFFIXES[fmt])
        )
        raise NoData(f"data source {uri} has no {pattern} files")
    if preflight is not None:
        preflight(files)
    tables: list[pd.DataFrame] = []
    for file in files:
        try:
            table = _read_file(file, fmt, target)
        except BadInput as e:
            raise BadInput(f"data source {uri}: {e}") from e
        except (ValueError, OSError, UnicodeDecodeError) as e:
            # pandas and pyarrow raise ValueError subclasses (ParserError, EmptyDataError, ArrowInvalid).
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(f"cannot read {file.name} from {uri} as {fmt}: {detail}") from e
        if fmt != "jsonl" and tables and list(table.columns) != list(tables[0].columns):
            raise BadInput(
                f"files of data source {uri} have different columns: {files[0].name} has "
                f"[{listing(tables[0].columns)}], {file.name} has [{listing(table.columns)}]"
            )
        tables.append(table)
    if relayed is not None:
        tables.append(relayed)
    filled = [t for t in tables if len(t)]
    if len(filled) <= 1:
        return filled[0] if filled else tables[0]
    return pd.concat(filled, ignore_index=True)


def read_source(
    source: DataSource, target: str, scratch: Path, env: Mapping[str, str], *, onehot: bool = True
) -> pd.DataFrame:
    """Read one DataSource; remote ones are downloaded into the directory `scratch` first. Before
    reading, the memory check refuses files the pod could not train on (memory.check)."""
    try:
        parsed = storage.parse_uri(source.uri)
        if parsed.scheme == "builtin":
            return load_builtin(parsed.authority)
        if parsed.scheme == "pvc":
            path = storage.local_path(source.uri, storage.default_pvc_root(env))
        else:
            path = storage.fetch(source.uri, scratch, env)
    except storage.InvalidUri as e:
        raise BadInput(f"data source {source.uri}: {e}") from e
    except storage.FetchError as e:
        if e.transient:
            raise Transient(str(e)) from e
        raise (NoData(str(e)) if e.missing else BadInput(str(e))) from e

    def preflight(files: list[Path]) -> object:
        return memory.check(files, source.format, target, source.uri, env, onehot=onehot)

    return read_path(path, source.format, target, source.uri, preflight)


# --- assembling -----------------------------------------------------------------------------


def _select_features(table: pd.DataFrame, spec: TrainingJobSpec, target: str) -> list[str]:
    uri = spec.data.source.uri
    if target not in table.columns:
        raise BadInput(f"target column {target!r} not found in {uri} (columns: {listing(table.columns)})")
    declared = spec.data.features
    if declared is None:
        features = [str(c) for c in table.columns if c != target]
        if not features:
            raise BadInput(f"{uri} has no feature columns besides the target {target!r}")
        return features
    if target in declared:
        raise BadInput(f"target column {target!r} is also listed in data.features")
    duplicates = sorted({f for f in declared if declared.count(f) > 1})
    if duplicates:
        raise BadInput(f"data.features lists columns more than once: {listing(duplicates)}")
    missing = [f for f in declared if f not in table.columns]
    if missing:
        raise BadInput(
            f"feature columns not found in {uri}: {listing(missing)} (columns: {listing(table.columns)})"
        )
    return list(declared)


def _align_extra(extra: pd.DataFrame, main: pd.DataFrame, columns: list[str], label: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in extra.columns]
    if missing:
        raise BadInput(f"{label} lacks columns: {listing(missing)}")
    aligned = extra[columns].copy()
    for col in columns:
        if _is_number(main[col].dtype) and not _is_number(aligned[col].dtype):
            try:
                aligned[col] = pd.to_numeric(aligned[col], errors="raise")
            except (ValueError, TypeError) as e:
                raise BadInput(
                    f"{label}: column {col!r} is numeric in the main source but has non-numeric values"
                ) from e
    return aligned


def load_table(
    spec: TrainingJobSpec,
    workdir: Path,
    env: Mapping[str, str],
    notes: list[str] | None = None,
    reads: list[dict[str, Any]] | None = None,
) -> tuple[pd.DataFrame, list[str], str]:
    """The main source plus the extra sources: (table of features + target, features, target).

    A prediction log (a jsonl extra source, what retraining adds) that holds no labelled rows
    yet is skipped and said in `notes`: a retraining run trains on what exists rather than
    failing (issue #19, case 1). Any other source that is missing is bad input. `reads` receives
    {"uri", "kind": "raw", "rows"} per source (0 for a skipped one): the run's record of what it
    read."""
    record = reads if reads is not None else []
    target = resolve_target(spec)
    onehot = spec.data.prepare.encoding == "onehot"
    main = read_source(spec.data.source, target, workdir / "source-main", env, onehot=onehot)
    record.append({"uri": spec.data.source.uri, "kind": "raw", "rows": len(main)})
    features = _select_features(main, spec, target)
    columns = [*features, target]
    tables = [main[columns]]
    for i, source in enumerate(spec.data.extra_sources or []):
        try:
            extra = read_source(source, target, workdir / f"source-{i}", env, onehot=onehot)
        except NoData as e:
            if source.format != "jsonl":
                raise
            note = f"trained without {source.uri}: no labelled rows there yet ({e})"
            log("Skipped a prediction log without labelled rows", source=source.uri)
            record.append({"uri": source.uri, "kind": "raw", "rows": 0})
            if notes is not None:
                notes.append(note)
            continue
        record.append({"uri": source.uri, "kind": "raw", "rows": len(extra)})
        label = f"data.extraSources[{i}] ({source.uri})"
        if not len(extra):
            log("Skipped empty extra source", source=source.uri)
            continue
        tables.append(_align_extra(extra, main, columns, label))
        log("Appended extra source", source=source.uri, rows=len(extra))
    table = tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)
    return table.reset_index(drop=True), features, target


# --- validating and cleaning ----------------------------------------------------------------


def _is_number(dtype: Any) -> bool:
    return bool(
        pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and not pd.api.types.is_complex_dtype(dtype)
    )


def _is_text(dtype: Any) -> bool:
    return bool(
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


def _as_text(col: pd.Series) -> pd.Series:
    values = col.astype(object)
    missing = values.isna()
    return pd.Series(
        np.where(missing, np.nan, values.map(str, na_action="ignore")),
        index=col.index,
        dtype=object,
        name=col.name,
    )


def _as_number(col: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(col.dtype):
        return col.astype("int64")
    if isinstance(col.dtype, np.dtype):
        return col
    # Nullable extension types (Int64, Float64, ...): NaN for missing, like numpy columns.
    return pd.Series(col.to_numpy(dtype="float64", na_value=np.nan), index=col.index, name=col.name)


def _normalise_features(
    table: pd.DataFrame, features: list[str], prepare: Prepare
) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    forced = set(prepare.categorical or [])
    unknown = sorted(forced - set(features))
    if unknown:
        raise BadInput(f"prepare.categorical lists columns that are not features: {listing(unknown)}")
    columns: dict[str, pd.Series] = {}
    numeric: list[str] = []
    categorical: list[str] = []
    numeric_categorical: list[str] = []
    for name in features:
        col = table[name]
        dtype = col.dtype
        if pd.api.types.is_bool_dtype(dtype) or _is_number(dtype):
            columns[name] = _as_number(col)
            (numeric_categorical if name in forced else numeric).append(name)
        elif _is_text(dtype):
            columns[name] = _as_text(col)
            categorical.append(name)
        else:
            raise BadInput(
                f"feature column {name!r} has unsupported dtype {dtype}; use numbers or text (or leave it out of data.features)"
            )
        if columns[name].isna().all():
            raise BadInput(f"feature column {name!r} has no values")
    return pd.DataFrame(columns, index=table.index), numeric, categorical, numeric_categorical


def _normalise_target(y: pd.Series, task: Task) -> pd.Series:
    name = y.name
    if task == "regression":
        if not _is_number(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype):
            raise BadInput(
                f"target {name!r} is not numeric (dtype {y.dtype}); regression needs a numeric target"
            )
        return _as_number(y).astype("float64")
    if pd.api.types.is_bool_dtype(y.dtype):
        return y.astype("int64")
    if _is_number(y.dtype):
        values = _as_number(y).astype("float64")
        fractional = values[values != np.floor(values)]
        if len(fractional):
            raise BadInput(
                f"target {name!r} has non-integer numbers (e.g. {fractional.iloc[0]}); "
                "classification needs class labels (is the task regression?)"
            )
        return values.astype("int64")
    if _is_text(y.dtype):
        return _as_text(y)
    raise BadInput(f"target {name!r} has unsupported dtype {y.dtype}")


def data_digest(X: pd.DataFrame, y: pd.Series) -> str:
    """sha256 over the prepared table: column names and dtypes, then every row's hash."""
    digest = hashlib.sha256()
    header = [[str(c), str(X[c].dtype)] for c in X.columns] + [[str(y.name), str(y.dtype)]]
    digest.update(json.dumps(header).encode())
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(y, index=False).to_numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def prepare_dataset(table: pd.DataFrame, features: list[str], target: str, spec: TrainingJobSpec) -> Dataset:
    """Validate and clean: normalise dtypes, drop rows per prepare.missing, check rows and classes."""
    task = resolve_task(spec)
    prepare = spec.data.prepare
    if not len(table):
        raise BadInput(f"data source {spec.data.source.uri} has no rows")
    X, numeric, categorical, numeric_categorical = _normalise_features(table, features, prepare)
    y = table[target]
    keep = y.notna()
    no_label = int((~keep).sum())
    drop_columns = []
    if prepare.missing.numeric == "drop":
        drop_columns += numeric
    if prepare.missing.categorical == "drop":
        drop_columns += categorical + numeric_categorical
    if drop_columns:
        keep &= X[drop_columns].notna().all(axis=1)
    X, y = X[keep].reset_index(drop=True), y[keep].reset_index(drop=True)
    dropped = len(table) - len(X)
    if dropped:
        log("Dropped rows", rows=dropped, withoutTarget=no_label, withMissingFeature=dropped - no_label)
    if len(X) < spec.data.min_rows:
        detail = f" after dropping {dropped} with missing values" if dropped else ""
        raise BadInput(f"only {len(X)} usable rows{detail}; data.minRows is {spec.data.min_rows}")
    y = _normalise_target(y, task)
    if task == "classification":
        classes = y.unique()
        if len(classes) < 2:
            raise BadInput(
                f"target {target!r} has a single class ({classes[0]!r}); classification needs at least 2"
            )
    return Dataset(
        X=X,
        y=y,
        task=task,
        target=target,
        numeric=numeric,
        categorical=categorical,
        numeric_categorical=numeric_categorical,
        dropped_rows=dropped,
        digest=data_digest(X, y),
    )


def raw_sources(reads: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """The lineage's dataSources: {"uri", "rows"} of each raw source among `reads` (a prepared
    run's manifest carries the prepare step's raw reads)."""
    return tuple({"uri": r["uri"], "rows": r["rows"]} for r in reads if r.get("kind") == "raw")


def load_dataset(
    spec: TrainingJobSpec,
    workdir: Path,
    env: Mapping[str, str],
    notes: list[str] | None = None,
    *,
    reads: list[dict[str, Any]] | None = None,
) -> Dataset:
    record: list[dict[str, Any]] = []
    table, features, target = load_table(spec, workdir, env, notes, record)
    if reads is not None:  # the trainer's own record of what it read (issue #23)
        reads.extend(record)
    return replace(prepare_dataset(table, features, target, spec), sources=raw_sources(record))


# --- splitting ------------------------------------------------------------------------------


def _stratify_problem(y: pd.Series, test_size: float) -> str | None:
    counts = y.value_counts()
    n_classes, n = len(counts), len(y)
    n_test = math.ceil(test_size * n)
    if counts.min() < 2:
        return f"class {counts.idxmin()!r} has a single row"
    if n_test < n_classes or n - n_test < n_classes:
        return f"{n_test} test / {n - n_test} training rows cannot hold all {n_classes} classes"
    return None


def split_dataset(ds: Dataset, split: Split) -> SplitData:
    """Hold out `split.testSize` of the rows, seeded; stratified for classification when possible."""
    from sklearn.model_selection import train_test_split

    stratify = None
    if ds.task == "classification" and split.stratify:
        problem = _stratify_problem(ds.y, split.test_size)
        if problem is None:
            stratify = ds.y
        else:
            log("Skipped stratification", reason=problem)
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            ds.X, ds.y, test_size=split.test_size, random_state=split.seed, stratify=stratify
        )
    except ValueError as e:
        raise BadInput(f"cannot split {len(ds.X)} rows with split.testSize {split.test_size}: {e}") from e
    if ds.task == "classification" and y_train.nunique() < 2:
        raise BadInput(
            f"the training split has a single class ({y_train.iloc[0]!r}); add rows of other classes"
        )
    return SplitData(X_train, X_test, y_train, y_test, stratify is not None)
