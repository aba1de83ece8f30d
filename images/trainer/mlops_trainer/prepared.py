"""Prepare once (issue #23): load, validate and split the raw data once per TrainingJob.

`prepare` writes the split as columnar files next to the run's artifact, at
`<artifact uri>/prepared/`:

    train.parquet  test.parquet   the training and held-out rows (features, then the target),
                                  in the order the seeded split gave them, so CV folds are
                                  the same as when each pod split the data itself
    prepared.json                 the manifest: column roles, the raw dtypes (the model's
                                  signature), dataDigest, each file's sha256, and `reads`:
                                  the raw sources this step read (the lineage of what was read)

The result carries the manifest's sha256; the operator passes {uri, sha256} to the trials and
the final fit (config `prepared`), which verify the manifest and each file before reading and
never read the raw sources. Column types are chosen on read where that loses nothing:
text columns become pandas categoricals and integer columns the smallest integer type that
holds their values; floats are kept (float32 would change the model).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pandas as pd

from mlops_contract import storage
from mlops_contract.checks import check_spec
from mlops_trainer.config import PreparedRef, TrainerConfig
from mlops_trainer.data import Dataset, SplitData, load_dataset, raw_sources, split_dataset
from mlops_trainer.errors import BadInput, Transient, writing_output
from mlops_trainer.logs import log, phase

MANIFEST: Final = "prepared.json"
TRAIN: Final = "train.parquet"
TEST: Final = "test.parquet"
FORMAT_VERSION: Final = 1
MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024


def prepared_uri(config: TrainerConfig) -> str:
    spec = config.spec
    return storage.artifact_uri(spec.output.uri, spec.model, config.name) + "/prepared"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_table(X: pd.DataFrame, y: pd.Series, path: Path) -> dict[str, Any]:
    table = X.reset_index(drop=True).assign(**{str(y.name): y.reset_index(drop=True)})
    table.to_parquet(path, engine="pyarrow", index=False, compression="zstd")
    return {"name": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": len(table)}


def manifest_of(
    ds: Dataset, split: SplitData, files: list[dict[str, Any]], reads: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "formatVersion": FORMAT_VERSION,
        "task": ds.task,
        "target": ds.target,
        "numeric": ds.numeric,
        "categorical": ds.categorical,
        "numericCategorical": ds.numeric_categorical,
        "dtypes": {str(c): str(ds.X[c].dtype) for c in ds.X.columns},
        "droppedRows": ds.dropped_rows,
        "dataDigest": ds.digest,
        "stratified": split.stratified,
        "files": files,
        "reads": reads,
    }


def _store(local: Path, uri: str, env: Mapping[str, str]) -> None:
    """Put the directory `local`'s files at `uri` (pvc:// written in place, s3:// uploaded)."""
    with writing_output(uri, "the prepared data"):
        if uri.startswith("pvc://"):
            target = storage.local_path(uri, storage.default_pvc_root(env))
            target.mkdir(parents=True, exist_ok=True)
            for path in local.iterdir():
                shutil.copyfile(path, target / path.name)
        else:
            storage.upload(local, uri, env)


def run_prepare(config: TrainerConfig, env: Mapping[str, str]) -> dict[str, Any]:
    """Load, validate and split the raw data once; write it columnar; return its location and digest."""
    spec = config.spec
    problems = check_spec(spec)
    if problems:
        raise BadInput("; ".join(problems))
    reads: list[dict[str, Any]] = []
    notes: list[str] = []
    with phase("load") as info, tempfile.TemporaryDirectory(prefix="mlops-data-") as work:
        ds = load_dataset(spec, Path(work), env, notes, reads=reads)
        info.update(rows=len(ds.X), features=len(ds.X.columns), droppedRows=ds.dropped_rows)
    with phase("split") as info:
        split = split_dataset(ds, spec.data.split)
        info.update(trainRows=len(split.X_train), testRows=len(split.X_test), stratified=split.stratified)
    uri = prepared_uri(config)
    with phase("write", preparedUri=uri), tempfile.TemporaryDirectory(prefix="mlops-prepared-") as out:
        files = [
            _write_table(split.X_train, split.y_train, Path(out) / TRAIN),
            _write_table(split.X_test, split.y_test, Path(out) / TEST),
        ]
        manifest = manifest_of(ds, split, files, reads)
        data = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str).encode()
        (Path(out) / MANIFEST).write_bytes(data)
        _store(Path(out), uri, env)
    digest = hashlib.sha256(data).hexdigest()
    log("Prepared data", preparedUri=uri, sha256=digest, rows=len(ds.X), reads=len(reads))
    return {
        "ok": True,
        "preparedUri": uri,
        "sha256": digest,
        "dataDigest": ds.digest,
        "rows": len(ds.X),
        "reads": reads,
        **({"notes": notes} if notes else {}),
    }


# --- reading --------------------------------------------------------------------------------


def _local(ref: PreparedRef, scratch: Path, env: Mapping[str, str]) -> Path:
    try:
        if ref.uri.startswith("pvc://"):
            return storage.local_path(ref.uri, storage.default_pvc_root(env))
        return storage.fetch(ref.uri, scratch, env)
    except storage.InvalidUri as e:
        raise BadInput(f"prepared data {ref.uri}: {e}") from e
    except storage.FetchError as e:
        raise (Transient(str(e)) if e.transient else BadInput(str(e))) from e


def _verified_manifest(directory: Path, ref: PreparedRef) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BadInput(f"{ref.uri}/{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
        data = path.read_bytes()
    except OSError as e:
        raise Transient(f"cannot read {ref.uri}/{MANIFEST}: {e}") from e
    if hashlib.sha256(data).hexdigest() != ref.sha256.lower():
        raise BadInput(f"{ref.uri}/{MANIFEST} does not match its sha256 {ref.sha256}")
    manifest: dict[str, Any] = json.loads(data)
    if manifest.get("formatVersion") != FORMAT_VERSION:
        raise BadInput(f"{ref.uri}: unsupported prepared format {manifest.get('formatVersion')!r}")
    return manifest


def read_types(frame: pd.DataFrame, manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Column types chosen on read, where nothing is lost: text categoricals as `category`,
    integers downcast to the smallest integer type holding their values; floats as they are."""
    out = {}
    text = set(manifest["categorical"])
    for col in frame.columns:
        values = frame[col]
        if col in text:
            values = values.astype("category")
        elif pd.api.types.is_integer_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            values = pd.to_numeric(values, downcast="integer")
        out[col] = values
    return pd.DataFrame(out)


def _read_table(
    directory: Path, entry: Mapping[str, Any], ref: PreparedRef, target: str, manifest: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.Series]:
    path = directory / str(entry["name"])
    if sha256_file(path) != entry["sha256"]:
        raise BadInput(f"{ref.uri}/{entry['name']} does not match the sha256 in its manifest")
    table = pd.read_parquet(path, engine="pyarrow")
    y = table.pop(target)
    return read_types(table, manifest), y


def load_prepared(
    ref: PreparedRef, env: Mapping[str, str], reads: list[dict[str, Any]]
) -> tuple[Dataset, SplitData]:
    """The prepared split, verified against the sha256 the operator passed; appends the read to `reads`."""
    with tempfile.TemporaryDirectory(prefix="mlops-prepared-") as scratch:
        directory = _local(ref, Path(scratch), env)
        manifest = _verified_manifest(directory, ref)
        files = {f["name"]: f for f in manifest["files"]}
        target = str(manifest["target"])
        X_train, y_train = _read_table(directory, files[TRAIN], ref, target, manifest)
        X_test, y_test = _read_table(directory, files[TEST], ref, target, manifest)
    reads.append(
        {"uri": ref.uri, "kind": "prepared", "sha256": ref.sha256, "rows": len(X_train) + len(X_test)}
    )
    ds = Dataset(
        X=X_train,
        y=y_train,
        task=manifest["task"],
        target=target,
        numeric=list(manifest["numeric"]),
        categorical=list(manifest["categorical"]),
        numeric_categorical=list(manifest["numericCategorical"]),
        dropped_rows=int(manifest["droppedRows"]),
        digest=str(manifest["dataDigest"]),
        raw_dtypes=dict(manifest["dtypes"]),
        rows=len(X_train) + len(X_test),
        sources=raw_sources(list(manifest.get("reads", []))),
    )
    return ds, SplitData(X_train, X_test, y_train, y_test, bool(manifest["stratified"]))


def load_split(
    config: TrainerConfig, env: Mapping[str, str], notes: list[str], reads: list[dict[str, Any]]
) -> tuple[Dataset, SplitData]:
    """The data of a trial or the final fit: the prepared split when the config names one, else
    the raw sources loaded, validated and split here."""
    if config.prepared is not None:
        with phase("load-prepared", preparedUri=config.prepared.uri) as info:
            ds, split = load_prepared(config.prepared, env, reads)
            info.update(trainRows=len(split.X_train), testRows=len(split.X_test))
        return ds, split
    with phase("load") as info, tempfile.TemporaryDirectory(prefix="mlops-data-") as work:
        ds = load_dataset(config.spec, Path(work), env, notes, reads=reads)
        info.update(rows=len(ds.X), features=len(ds.X.columns), droppedRows=ds.dropped_rows)
    with phase("split") as info:
        split = split_dataset(ds, config.spec.data.split)
        info.update(trainRows=len(split.X_train), testRows=len(split.X_test), stratified=split.stratified)
    return ds, split
