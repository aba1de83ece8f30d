"""The model artifact format shared by the trainer, the verifier and the inference server.

An artifact is a directory:

    model.skops   the fitted scikit-learn Pipeline, serialised with skops (never raw pickle)
    model.json    metadata: sha256 of model.skops, input signature, metrics, params,
                  reference statistics for drift detection (see `mlops_contract.drift`)

Invariants: `model.json["sha256"]` is the hex sha256 of the bytes of `model.skops`;
`load_verified` refuses a file whose digest differs from the expected one and only
instantiates types from an allow-list of module prefixes, so a crafted file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

MODEL_FILE: Final = "model.skops"
METADATA_FILE: Final = "model.json"
FORMAT: Final = "skops"
FORMAT_VERSION: Final = 1

# skops refuses every type not listed as trusted; we trust only what scikit-learn pipelines
# are made of. Anything else in a file is an error, never silently loaded.
TRUSTED_MODULE_PREFIXES: Final = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class ArtifactError(Exception):
    """The artifact is missing, corrupted, or contains untrusted types."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_model(model: Any) -> bytes:
    """Serialise a fitted estimator with skops."""
    import skops.io as sio

    return bytes(sio.dumps(model))


def write_artifact(directory: str | os.PathLike[str], model: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write model.skops and model.json into `directory`; return the full metadata written.

    The caller's metadata (signature, metrics, params, reference, ...) is kept; `format`,
    `formatVersion`, `file` and `sha256` are set here so they always agree with the file.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    blob = dump_model(model)
    meta = dict(metadata)
    meta.update(
        {"formatVersion": FORMAT_VERSION, "format": FORMAT, "file": MODEL_FILE, "sha256": sha256_bytes(blob)}
    )
    _atomic_write(out / MODEL_FILE, blob)
    _atomic_write(
        out / METADATA_FILE, json.dumps(meta, indent=2, sort_keys=True, default=_json_default).encode()
    )
    return meta


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays appear in metrics and signatures.
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ArtifactError(f"artifact metadata {path} does not exist") from e
    except (OSError, ValueError) as e:
        raise ArtifactError(f"artifact metadata {path} is unreadable: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"artifact metadata {path} is not a {FORMAT} artifact")
    return meta


def _skops_io() -> Any:
    """`skops.io`, imported without its scan of every scikit-learn estimator.

    On import, skops builds its *default* trusted-type list from `sklearn.utils.all_estimators()`,
    which imports every scikit-learn subpackage: ~0.2-0.5 s and ~12 MiB the inference server pays
    at start-up for models that use three of them (issue #10, cold start). `load_model_bytes`
    never relies on that default list: it decides itself which types to trust
    (TRUSTED_MODULE_PREFIXES) and passes them to skops. So skops is imported with an empty scan.
    """
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    import sklearn.utils

    scan = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda *args, **kwargs: []
    try:
        import skops.io as sio
    finally:
        sklearn.utils.all_estimators = scan
    return sio


def load_model_bytes(blob: bytes) -> Any:
    """Load a skops blob, trusting only types from TRUSTED_MODULE_PREFIXES."""
    sio = _skops_io()

    try:
        untrusted = sio.get_untrusted_types(data=blob)
    except Exception as e:  # skops raises a variety of errors on garbage input
        raise ArtifactError(f"model file is not a valid skops file: {e}") from e
    refused = [t for t in untrusted if not t.startswith(TRUSTED_MODULE_PREFIXES)]
    if refused:
        raise ArtifactError(f"model file contains untrusted types: {', '.join(sorted(refused))}")
    try:
        return sio.load(io.BytesIO(blob), trusted=untrusted)
    except Exception as e:
        raise ArtifactError(f"model file failed to load: {e}") from e


def read_verified(
    directory: str | os.PathLike[str], expected_sha256: str | None = None
) -> tuple[bytes, dict[str, Any]]:
    """The bytes of an artifact's model file and its metadata, after checking its sha256.

    `expected_sha256` is the digest recorded elsewhere (the ModelVersion spec); when given,
    both the file and the metadata must match it.
    """
    meta = read_metadata(directory)
    path = Path(directory) / str(meta.get("file", MODEL_FILE))
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"model file {path} is unreadable: {e}") from e
    actual = sha256_bytes(blob)
    if actual != meta.get("sha256"):
        raise ArtifactError(f"sha256 mismatch: {path} has {actual}, metadata says {meta.get('sha256')}")
    if expected_sha256 is not None and actual != expected_sha256:
        raise ArtifactError(f"sha256 mismatch: {path} has {actual}, expected {expected_sha256}")
    return blob, meta


def load_verified(
    directory: str | os.PathLike[str], expected_sha256: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """Load the model of an artifact after checking its sha256 (see `read_verified`)."""
    blob, meta = read_verified(directory, expected_sha256)
    return load_model_bytes(blob), meta
