"""`fetch`: put a ModelVersion's artifact into a local directory for the inference server.

The serving pod's init container (issue #17), as KServe's storage-initializer: it downloads the
s3:// artifact directory into an emptyDir shared with the server, and checks model.skops against
the sha256 the ModelVersion records (and against model.json) before the server ever starts.
The server image carries no boto3; it checks the digest again when it loads the file.

Invariants: the destination holds the artifact only once it is complete and verified (files are
downloaded beside it and moved in last); a digest mismatch, a missing object or a refused request
is permanent (exit 2: the init container's restarts cannot fix it), a timeout or 5xx is transient
(exit 1: the kubelet restarts the init container with its back-off). Nothing is loaded or
unpickled here: only bytes are hashed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops_contract import artifact, storage
from mlops_trainer.errors import BadInput, Transient
from mlops_trainer.logs import log, phase


def _download(uri: str, scratch: Path, env: Mapping[str, str]) -> Path:
    if storage.parse_uri(uri).scheme != "s3":
        raise BadInput(f"--artifact {uri}: fetch reads s3:// artifacts only (pvc:// ones are mounted)")
    try:
        return storage.fetch(uri, scratch, env)
    except storage.FetchError as e:
        raise (Transient(str(e)) if e.transient else BadInput(str(e))) from e


def check_digest(directory: Path, uri: str, sha256: str) -> dict[str, Any]:
    """model.json's file must hash to both `sha256` and model.json's own digest; -> model.json."""
    try:
        meta = artifact.read_metadata(directory)
    except artifact.ArtifactError as e:
        raise BadInput(f"{uri}: {e}") from e
    name = str(meta.get("file", artifact.MODEL_FILE))
    path = directory / name
    if "/" in name or not path.is_file():
        raise BadInput(f"{uri}: model file {name!r} named by model.json is missing")
    actual = artifact.sha256_file(path)
    if actual != sha256.lower() or actual != meta.get("sha256"):
        raise BadInput(
            f"{uri}: sha256 mismatch: {name} has {actual}, the ModelVersion records {sha256.lower()}"
            f" and model.json {meta.get('sha256')}"
        )
    return meta


def run_fetch(uri: str, sha256: str, dest: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Download the artifact at `uri` into the directory `dest` and verify it; -> the result."""
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target) as scratch:
        with phase("download", artifact=uri) as fields:
            directory = _download(uri, Path(scratch), env)
            if not directory.is_dir():
                raise BadInput(f"{uri}: is one object, not an artifact directory (model.skops, model.json)")
            fields["bytes"] = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        with phase("digest"):
            check_digest(directory, uri, sha256)
        for item in sorted(directory.iterdir()):
            destination = target / item.name
            if destination.is_dir():
                shutil.rmtree(destination)
            item.replace(destination)
    log("Fetched artifact", artifact=uri, dest=str(target), sha256=sha256.lower())
    return {"ok": True, "artifactUri": uri, "sha256": sha256.lower(), "dest": str(target)}
