"""`mlops-trainer purge` against the real S3 server (issue #17): retention's deletion of a retired
version's artifact deletes exactly what that run wrote, and nothing when model.json disagrees."""

from __future__ import annotations

from typing import Any

from trainer_factories import Trainer, make_config, make_spec

from mlops_contract import artifact
from s3kit import S3Server


def _train(trainer: Trainer, s3_server: S3Server, bucket: str) -> dict[str, Any]:
    run = trainer.run(
        "train", make_config(make_spec(output={"uri": f"s3://{bucket}/registry"})), **s3_server.env
    )
    assert run.code == 0, run.result
    return dict(run.result)


def _keys(s3_server: S3Server, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents") or [])


def test_purge_deletes_the_runs_two_objects_and_nothing_beside_them(
    trainer: Trainer, s3_server: S3Server, s3_bucket: str
) -> None:
    result = _train(trainer, s3_server, s3_bucket)
    uri = result["artifactUri"]
    assert uri == f"s3://{s3_bucket}/registry/demo/demo-1"
    client = s3_server.client()
    # A user's objects beside and inside the artifact's prefix, and another run's artifact.
    for key in ("registry/demo/demo-1/notes.txt", "registry/demo/demo-10/model.json", "registry/data.csv"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"user data")

    args = [
        "--artifact",
        uri,
        "--sha256",
        result["sha256"],
        "--namespace",
        "default",
        "--training-job",
        "demo-1",
    ]
    run = trainer.run("purge", None, *args, **s3_server.env)
    assert run.code == 0, run.result
    assert run.result["deleted"] == [artifact.MODEL_FILE, artifact.METADATA_FILE]
    assert _keys(s3_server, s3_bucket) == [
        "registry/data.csv",
        "registry/demo/demo-1/notes.txt",
        "registry/demo/demo-10/model.json",
    ]
    # Again (a retried Job): nothing left to delete is a success.
    again = trainer.run("purge", None, *args, **s3_server.env)
    assert (again.code, again.result["deleted"]) == (0, []), again.result


def test_purge_refuses_an_artifact_another_run_wrote(
    trainer: Trainer, s3_server: S3Server, s3_bucket: str
) -> None:
    result = _train(trainer, s3_server, s3_bucket)
    before = _keys(s3_server, s3_bucket)
    base = ["--artifact", result["artifactUri"], "--namespace", "default"]
    for wrong in (
        ["--sha256", result["sha256"], "--training-job", "other-1"],
        ["--sha256", "0" * 64, "--training-job", "demo-1"],
        ["--sha256", result["sha256"], "--training-job", "demo-1", "--namespace", "elsewhere"],
    ):
        run = trainer.run("purge", None, *base, *wrong, **s3_server.env)
        assert run.code == 2, run.result
        assert "nothing deleted" in run.result["message"], run.result
    assert _keys(s3_server, s3_bucket) == before
