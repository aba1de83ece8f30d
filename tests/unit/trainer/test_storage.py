"""mlops_contract.storage: URI parsing, pvc paths, artifact locations, https and s3 downloads."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from trainer_factories import Trainer, make_config, make_spec, mixed_frame

from mlops_contract import storage
from mlops_contract.storage import FetchError, InvalidUri, ParsedUri
from s3kit import S3Server, free_port


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("builtin:iris", ParsedUri("builtin", "iris", "")),
        ("pvc://data/train/part.csv", ParsedUri("pvc", "data", "train/part.csv")),
        ("pvc://data", ParsedUri("pvc", "data", "")),
        ("pvc://data/dir/", ParsedUri("pvc", "data", "dir")),
        ("s3://my-bucket/prefix/key.parquet", ParsedUri("s3", "my-bucket", "prefix/key.parquet")),
        ("https://example.org/data/x.csv?sig=1", ParsedUri("https", "example.org", "data/x.csv?sig=1")),
    ],
)
def test_parse_uri(uri: str, parsed: ParsedUri) -> None:
    assert storage.parse_uri(uri) == parsed


def test_parsed_uri_names_its_authority() -> None:
    assert storage.parse_uri("pvc://claim/x").claim == "claim"
    assert storage.parse_uri("s3://bucket/x").bucket == "bucket"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://host/x", "'ftp://host/x': unsupported URI; use pvc://, s3://, https:// or builtin:"),
        ("data/x.csv", "'data/x.csv': unsupported URI; use pvc://, s3://, https:// or builtin:"),
        ("pvc:///x.csv", "'pvc:///x.csv': missing claim"),
        ("s3://", "'s3://': missing bucket"),
        ("builtin:", "'builtin:': builtin: needs a dataset name, e.g. builtin:iris"),
    ],
)
def test_parse_uri_refuses(uri: str, message: str) -> None:
    with pytest.raises(InvalidUri) as raised:
        storage.parse_uri(uri)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("uri", "relative"),
    [
        ("pvc://data/train.csv", "data/train.csv"),
        ("pvc://data/a/b/", "data/a/b"),
        ("pvc://data", "data"),
        ("pvc://data/a/./b", "data/a/b"),
    ],
)
def test_local_path(tmp_path: Path, uri: str, relative: str) -> None:
    assert storage.local_path(uri, tmp_path) == tmp_path / relative


def test_local_path_root_from_env_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_PVC_ROOT", raising=False)
    assert storage.local_path("pvc://c/x") == Path("/mnt/pvc/c/x")
    monkeypatch.setenv("MLOPS_PVC_ROOT", "/elsewhere")
    assert storage.local_path("pvc://c/x") == Path("/elsewhere/c/x")
    assert storage.default_pvc_root({"MLOPS_PVC_ROOT": "/given"}) == Path("/given")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pvc://data/../other/secret", "'pvc://data/../other/secret': '..' is not allowed in a pvc:// path"),
        ("pvc://data/a/../../x", "'pvc://data/a/../../x': '..' is not allowed in a pvc:// path"),
        ("pvc://../x", "'pvc://../x': '..' is not allowed in a pvc:// path"),
        ("s3://bucket/key", "'s3://bucket/key': only pvc:// URIs have a local path"),
        ("builtin:iris", "'builtin:iris': only pvc:// URIs have a local path"),
    ],
)
def test_local_path_refuses(tmp_path: Path, uri: str, message: str) -> None:
    with pytest.raises(InvalidUri) as raised:
        storage.local_path(uri, tmp_path)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("pvc://mlops-artifacts/models", "pvc://mlops-artifacts/models/iris/iris-train-1"),
        ("pvc://mlops-artifacts/models/", "pvc://mlops-artifacts/models/iris/iris-train-1"),
        ("s3://bucket", "s3://bucket/iris/iris-train-1"),
    ],
)
def test_artifact_uri(base: str, expected: str) -> None:
    assert storage.artifact_uri(base, "iris", "iris-train-1") == expected


@pytest.mark.parametrize(("model", "name"), [("a/b", "x"), ("m", ".."), ("", "x")])
def test_artifact_uri_refuses_path_tricks(model: str, name: str) -> None:
    with pytest.raises(InvalidUri):
        storage.artifact_uri("pvc://c/models", model, name)


class Handler(BaseHTTPRequestHandler):
    seen_authorization: list[str | None] = []
    body = b"a,label\n1,x\n2,y\n"

    def do_GET(self) -> None:
        Handler.seen_authorization.append(self.headers.get("Authorization"))
        status = {"/data/train.csv": 200, "/broken": 503}.get(self.path, 404)
        self.send_response(status)
        self.end_headers()
        if status == 200:
            self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    Handler.seen_authorization = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fetch_https_with_authorization(tmp_path: Path, http_base: str) -> None:
    path = storage.fetch(
        f"{http_base}/data/train.csv", tmp_path, {"MLOPS_HTTP_AUTHORIZATION": "Bearer t0ken"}
    )

    assert path == tmp_path / "train.csv"
    assert path.read_bytes() == Handler.body
    assert Handler.seen_authorization == ["Bearer t0ken"]


@pytest.mark.parametrize(
    ("path", "transient", "message"),
    [("/missing.csv", False, "HTTP 404 Not Found"), ("/broken", True, "HTTP 503 Service Unavailable")],
)
def test_fetch_https_errors(tmp_path: Path, http_base: str, path: str, transient: bool, message: str) -> None:
    with pytest.raises(FetchError) as raised:
        storage.fetch(f"{http_base}{path}", tmp_path, {})
    assert raised.value.transient is transient
    assert str(raised.value) == f"GET {http_base}{path} failed: {message}"
    assert Handler.seen_authorization == [None]


def test_fetch_unreachable_host_is_transient(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as raised:
        storage.fetch("http://127.0.0.1:9/x.csv", tmp_path, {})
    assert raised.value.transient is True


# ---------------------------------------------------------------- s3:// against a real server
# tests/s3kit.py runs versitygw (posix backend) on loopback; every test gets its own bucket.
# `env` below is what the cluster's Secret puts in a pod: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_ENDPOINT_URL, AWS_REGION.

MANY_KEYS = 1_205  # more than one ListObjectsV2 page (1,000 keys): the continuation token is followed
LARGE_BYTES = 101 * 1024 * 1024  # over 100 MB: s3transfer uploads and downloads it in 8 MB parts


@pytest.fixture(autouse=True)
def no_aws_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the variables a test passes count, never ~/.aws or the developer's AWS_* variables."""
    for name in [n for n in os.environ if n.startswith("AWS_") or n == "S3_USE_VIRTUAL_BUCKET"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def put(s3: S3Server, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3.client()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]), objects.items()
            )
        )


def test_fetch_s3_object(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    put(s3_server, s3_bucket, {"single.csv": b"a,label\n3,z\n", "single.csv.bak": b"other"})

    path = storage.fetch(f"s3://{s3_bucket}/single.csv", tmp_path, s3_server.env)

    assert path == tmp_path / "single.csv"
    assert path.read_bytes() == b"a,label\n3,z\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["single.csv"]


def test_fetch_s3_prefix(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    put(
        s3_server,
        s3_bucket,
        {
            "train/a.csv": b"a,label\n1,x\n",
            "train/nested/b.csv": b"a,label\n2,y\n",
            "train/empty-dir/": b"",  # a folder marker some tools write: not a file
            "training/not-mine.csv": b"shares the prefix text, not the folder",
        },
    )

    path = storage.fetch(f"s3://{s3_bucket}/train", tmp_path, s3_server.env)

    assert path == tmp_path / "train"
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == [
        "a.csv",
        "nested/b.csv",
    ]
    assert (path / "nested" / "b.csv").read_bytes() == b"a,label\n2,y\n"


def test_fetch_s3_prefix_with_many_objects(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    objects = {f"parts/p-{i:05d}.csv": f"a\n{i}\n".encode() for i in range(MANY_KEYS)}
    put(s3_server, s3_bucket, objects)

    path = storage.fetch(f"s3://{s3_bucket}/parts", tmp_path, s3_server.env)

    files = sorted(path.iterdir())
    assert len(files) == MANY_KEYS
    assert files[-1].name == f"p-{MANY_KEYS - 1:05d}.csv"
    assert files[-1].read_bytes() == f"a\n{MANY_KEYS - 1}\n".encode()


def test_large_object_round_trip_is_multipart(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    source = tmp_path / "up"
    source.mkdir()
    blob = source / "model.bin"
    with blob.open("wb") as f:
        for _ in range(LARGE_BYTES // (1024 * 1024)):
            f.write(os.urandom(1024 * 1024))
    expected = hashlib.sha256(blob.read_bytes()).hexdigest()

    storage.upload(source, f"s3://{s3_bucket}/big", s3_server.env)
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="big/model.bin")
    path = storage.fetch(f"s3://{s3_bucket}/big/model.bin", tmp_path / "down", s3_server.env)

    assert head["ContentLength"] == LARGE_BYTES
    assert head["ETag"].strip('"').endswith("-13")  # an S3 multipart ETag: md5 of the parts, "-<parts>"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected


def test_custom_endpoint_is_addressed_path_style(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    # "localhost", a name: botocore would put the bucket into it (virtual host) unless told otherwise.
    env = {**s3_server.env, "AWS_ENDPOINT_URL": s3_server.endpoint.replace("127.0.0.1", "localhost")}
    put(s3_server, s3_bucket, {"k.csv": b"a\n1\n"})

    assert storage.fetch(f"s3://{s3_bucket}/k.csv", tmp_path, env).read_bytes() == b"a\n1\n"
    path_url = storage._s3_client(env).generate_presigned_url(
        "get_object", {"Bucket": s3_bucket, "Key": "k.csv"}
    )
    virtual_env = {**env, "S3_USE_VIRTUAL_BUCKET": "true"}
    virtual_url = storage._s3_client(virtual_env).generate_presigned_url(
        "get_object", {"Bucket": s3_bucket, "Key": "k.csv"}
    )
    port = s3_server.endpoint.rsplit(":", 1)[1]
    assert path_url.startswith(f"http://localhost:{port}/{s3_bucket}/k.csv?")
    assert virtual_url.startswith(f"http://{s3_bucket}.localhost:{port}/k.csv?")


def test_credentials_come_from_the_environment(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3_server, s3_bucket, {"data/x.csv": b"a\n1\n"})
    for name, value in s3_server.env.items():  # as a Secret's envFrom sets them in the pod
        monkeypatch.setenv(name, value)

    path = storage.fetch(f"s3://{s3_bucket}/data/x.csv", tmp_path)
    storage.upload(path.parent, f"s3://{s3_bucket}/copy")

    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="copy/")
    assert [o["Key"] for o in listed["Contents"]] == ["copy/x.csv"]


@pytest.mark.parametrize(
    ("override", "code"),
    [
        # versitygw's name for AWS's InvalidAccessKeyId (both 403): why _s3_error reads the status.
        ({"AWS_ACCESS_KEY_ID": "nobody"}, "XAdminUserNotFound"),
        ({"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "SignatureDoesNotMatch"),
    ],
)
def test_wrong_credentials_are_permanent(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, override: dict[str, str], code: str
) -> None:
    put(s3_server, s3_bucket, {"x.csv": b"a\n1\n"})
    uri = f"s3://{s3_bucket}/x.csv"
    with pytest.raises(FetchError) as raised:
        storage.fetch(uri, tmp_path, {**s3_server.env, **override})
    assert raised.value.transient is False
    assert str(raised.value).startswith(f"LIST {uri} failed: {code}: ")


def test_no_credentials_at_all_is_permanent(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No secretRef and no workload identity: boto3's default chain finds nothing. Its instance
    # metadata lookup is switched off: this test must not reach for a link-local address.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    uri = f"s3://{s3_bucket}/x.csv"
    env = {k: v for k, v in s3_server.env.items() if k in ("AWS_ENDPOINT_URL", "AWS_REGION")}
    with pytest.raises(FetchError) as raised:
        storage.fetch(uri, tmp_path / "out", env)
    assert raised.value.transient is False
    assert str(raised.value).startswith(f"LIST {uri} failed: no S3 credentials")


@pytest.mark.parametrize(
    ("objects", "key", "message"),
    [
        ({"other.csv": b"x"}, "missing.csv", "{uri}: no such object or prefix"),
        ({"empty/": b""}, "empty", "{uri}: no such object or prefix"),  # only a folder marker
    ],
    ids=["missing-key", "prefix-without-files"],
)
def test_nothing_to_fetch_is_permanent(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, objects: dict[str, bytes], key: str, message: str
) -> None:
    put(s3_server, s3_bucket, objects)
    uri = f"s3://{s3_bucket}/{key}"
    with pytest.raises(FetchError) as raised:
        storage.fetch(uri, tmp_path, s3_server.env)
    assert raised.value.transient is False
    assert str(raised.value) == message.format(uri=uri)


def test_missing_bucket_is_permanent(tmp_path: Path, s3_server: S3Server) -> None:
    with pytest.raises(FetchError) as raised:
        storage.fetch("s3://no-such-bucket-here/x.csv", tmp_path, s3_server.env)
    assert raised.value.transient is False
    assert str(raised.value).startswith("LIST s3://no-such-bucket-here/x.csv failed: NoSuchBucket: ")

    (tmp_path / "f").write_text("x")
    with pytest.raises(FetchError) as raised:
        storage.upload(tmp_path, "s3://no-such-bucket-here/out", s3_server.env)
    assert raised.value.transient is False
    assert str(raised.value).startswith("PUT s3://no-such-bucket-here/out failed: ")
    assert "NoSuchBucket" in str(raised.value)


def test_server_down_is_transient(tmp_path: Path, s3_server: S3Server) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(FetchError) as raised:
        storage.fetch("s3://bucket/x.csv", tmp_path, {**s3_server.env, "AWS_ENDPOINT_URL": dead})
    assert raised.value.transient is True
    assert str(raised.value).startswith(
        "LIST s3://bucket/x.csv failed: Could not connect to the endpoint URL"
    )


def test_upload_to_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "sub" / "x").write_text("x")

    storage.upload(tmp_path, f"s3://{s3_bucket}/models/m/1", s3_server.env)

    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["models/m/1/model.json", "models/m/1/sub/x"]
    assert client.get_object(Bucket=s3_bucket, Key="models/m/1/sub/x")["Body"].read() == b"x"


def test_s3_without_boto3_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` raise ImportError
    with pytest.raises(FetchError) as raised:
        storage.fetch("s3://bucket/x.csv", tmp_path, {})
    assert raised.value.transient is False
    assert str(raised.value) == "s3:// needs boto3, which is not installed: pip install 'mlops-operator[s3]'"


def test_train_from_https_and_s3_sources(
    trainer: Trainer, http_base: str, s3_server: S3Server, s3_bucket: str
) -> None:
    table = mixed_frame().drop(columns=["spend"])
    Handler.body = table.iloc[:120].to_csv(index=False).encode()
    put(s3_server, s3_bucket, {"more/part-1.csv": table.iloc[120:].to_csv(index=False).encode()})
    spec = make_spec(
        data={
            "source": {"uri": f"{http_base}/data/train.csv"},
            "extraSources": [{"uri": f"s3://{s3_bucket}/more"}],
            "target": "churn",
        }
    )
    try:
        run = trainer.run("train", make_config(spec), MLOPS_HTTP_AUTHORIZATION="Basic abc", **s3_server.env)
    finally:
        Handler.body = b"a,label\n1,x\n2,y\n"

    assert run.code == 0, run.result
    assert Handler.seen_authorization == ["Basic abc"]
    assert run.result["metrics"]["accuracy"] > 0.7


@pytest.mark.parametrize(
    ("uri", "code", "reason"),
    [("/broken", 1, "Transient"), ("/missing.csv", 2, "BadInput")],
)
def test_fetch_failures_map_to_exit_codes(
    trainer: Trainer, http_base: str, uri: str, code: int, reason: str
) -> None:
    spec = make_spec(data={"source": {"uri": f"{http_base}{uri}"}, "target": "churn"})
    run = trainer.run("train", make_config(spec))

    assert (run.code, run.result["reason"]) == (code, reason)
    assert run.result["message"].startswith(f"GET {http_base}{uri} failed: HTTP ")
