"""`purge`: delete a retired ModelVersion's s3:// artifact (issue #17), run by a short Job.

The operator holds no credentials (no Secret RBAC, by design), so retention hands the deletion
to a Job of the trainer image with the artifact's secretRef as envFrom, as verification does.

Invariants: only what the operator's own training run wrote is deleted. The artifact's model.json
must name the namespace and TrainingJob the ModelVersion records and the model file's sha256;
then exactly two objects go, the model file model.json names and model.json itself (last), by
their full keys: never a listing, never a prefix, so a user's data or another run's artifact
beside it cannot be touched. Absent objects (a second run, an artifact deleted by hand) are a
success; any other mismatch refuses (exit 2) and deletes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from mlops_contract import artifact, storage
from mlops_trainer.errors import BadInput, Transient
from mlops_trainer.logs import log

MAX_METADATA_BYTES: Final = 16 * 1024 * 1024


def _storage(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except storage.InvalidUri as e:
        raise BadInput(str(e)) from e
    except storage.FetchError as e:
        raise (Transient(str(e)) if e.transient else BadInput(str(e))) from e


def ours(meta: Mapping[str, Any], sha256: str, namespace: str, training_job: str) -> str | None:
    """Why model.json does not belong to this operator's run, or None when it does (pure)."""
    for key, want in (("namespace", namespace), ("trainingJob", training_job), ("sha256", sha256.lower())):
        if meta.get(key) != want:
            return f"model.json has {key} {meta.get(key)!r}, the ModelVersion records {want!r}"
    name = meta.get("file")
    if not isinstance(name, str) or not name or "/" in name or name == artifact.METADATA_FILE:
        return f"model.json names the model file {name!r}"
    return None


def run_purge(
    uri: str, sha256: str, namespace: str, training_job: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """Delete the artifact at s3:// `uri` if its model.json says this run wrote it; -> the result."""
    if storage.parse_uri(uri).scheme != "s3":
        raise BadInput(f"--artifact {uri}: purge deletes s3:// artifacts only")
    base = uri.rstrip("/")
    raw = _storage(storage.read_object, f"{base}/{artifact.METADATA_FILE}", MAX_METADATA_BYTES, env)
    if raw is None:
        log("Artifact already gone", artifact=uri)
        return {"ok": True, "artifactUri": uri, "deleted": []}
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise BadInput(f"{uri}: model.json is not JSON ({e}); refusing to delete") from e
    why = ours(meta if isinstance(meta, dict) else {}, sha256, namespace, training_job)
    if why is not None:
        raise BadInput(f"{uri}: not this ModelVersion's artifact ({why}); nothing deleted")
    deleted = [str(meta["file"]), artifact.METADATA_FILE]  # model.json last: a retry finds it
    for name in deleted:
        _storage(storage.delete_object, f"{base}/{name}", env)
    log("Deleted artifact", artifact=uri, objects=deleted)
    return {"ok": True, "artifactUri": uri, "deleted": deleted}
