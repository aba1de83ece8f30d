"""`mlops-trainer fetch` and `verify` on s3:// artifacts, against the real S3 server (issue #17).

`fetch` is the serving pod's init container: download into a directory, check the sha256,
exit 2 when retrying cannot help (tampered, missing, refused), 1 when it may (server down).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from trainer_factories import Trainer, make_config, make_spec

from mlops_contract import storage
from s3kit import S3Server


def s3_artifact(trainer: Trainer, s3_server: S3Server, bucket: str) -> tuple[str, str]:
    """Train with the real trainer straight to s3:// -> (artifact URI, sha256)."""
    spec = make_spec(output={"uri": f"s3://{bucket}/models"})
    run = trainer.run("train", make_config(spec), **s3_server.env)
    assert run.code == 0, run.result
    assert str(run.result["artifactUri"]).startswith(f"s3://{bucket}/models/")
    return str(run.result["artifactUri"]), str(run.result["sha256"])


def fetch(trainer: Trainer, uri: str, sha: str, dest: Path, **env: str) -> Any:
    return trainer.run("fetch", None, "--artifact", uri, "--sha256", sha, "--dest", str(dest), **env)


def test_fetch_downloads_and_checks_the_digest(
    trainer: Trainer, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    uri, sha = s3_artifact(trainer, s3_server, s3_bucket)
    dest = tmp_path / "model"
    run = fetch(trainer, uri, sha, dest, **s3_server.env)
    assert run.code == 0, run.result
    assert run.result == {"ok": True, "artifactUri": uri, "sha256": sha, "dest": str(dest)}
    assert sorted(p.name for p in dest.iterdir()) == ["model.json", "model.skops"]  # no scratch left
    # What the server then does with it: the same digest check before loading.
    from mlops_contract import artifact

    _, meta = artifact.load_verified(dest, sha)
    assert meta["sha256"] == sha
    # Again (an init container restarted): the same files, replaced.
    assert fetch(trainer, uri, sha, dest, **s3_server.env).code == 0


def test_fetch_refuses_a_tampered_object(
    trainer: Trainer, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    uri, sha = s3_artifact(trainer, s3_server, s3_bucket)
    key = storage.parse_uri(uri).path + "/model.skops"
    client = s3_server.client()
    blob = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    client.put_object(Bucket=s3_bucket, Key=key, Body=blob[:-1] + bytes([blob[-1] ^ 1]))
    dest = tmp_path / "model"

    run = fetch(trainer, uri, sha, dest, **s3_server.env)

    assert (run.code, run.result["reason"]) == (2, "BadInput")
    assert run.result["message"].startswith(f"{uri}: sha256 mismatch")
    assert list(dest.iterdir()) == []  # nothing the server could load

    verified = trainer.run("verify", None, "--artifact", uri, "--sha256", sha, **s3_server.env)
    assert (verified.code, verified.result["reason"]) == (3, "VerificationFailed")


@pytest.mark.parametrize(
    ("case", "code", "reason", "cause"),
    [
        ("missing-key", 2, "BadInput", "no such object or prefix"),
        ("missing-bucket", 2, "BadInput", "NoSuchBucket"),
        ("wrong-secret", 2, "BadInput", "LIST s3://"),
        ("server-down", 1, "Transient", "LIST s3://"),
    ],
)
def test_fetch_and_verify_failures_name_the_uri_and_cause(
    trainer: Trainer,
    s3_server: S3Server,
    s3_bucket: str,
    tmp_path: Path,
    case: str,
    code: int,
    reason: str,
    cause: str,
) -> None:
    uri, sha = s3_artifact(trainer, s3_server, s3_bucket)
    env = dict(s3_server.env)
    if case == "missing-key":
        uri = uri + "-gone"
    elif case == "missing-bucket":
        uri = uri.replace(s3_bucket, s3_bucket + "-gone")
    elif case == "wrong-secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    else:
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # discard: nothing listens

    for command in ("fetch", "verify"):
        args = ["--artifact", uri, "--sha256", sha] + (
            ["--dest", str(tmp_path / "m")] if command == "fetch" else []
        )
        run = trainer.run(command, None, *args, **env)
        assert (run.code, run.result["reason"]) == (code, reason), (command, run.result)
        assert uri in run.result["message"] and cause in run.result["message"], run.result["message"]


def test_fetch_reads_s3_only(trainer: Trainer, tmp_path: Path) -> None:
    run = fetch(trainer, "pvc://mlops-artifacts/models/x", "a" * 64, tmp_path / "m")
    assert (run.code, run.result["reason"]) == (2, "BadInput")
