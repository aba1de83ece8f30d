"""mlops_contract.storage: URI parsing, pvc paths, artifact locations, https and s3 downloads."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from trainer_factories import FakeS3, Trainer, make_config, make_spec, mixed_frame

from mlops_contract import storage
from mlops_contract.storage import FetchError, InvalidUri, ParsedUri


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


@pytest.fixture
def fake_s3(monkeypatch: pytest.MonkeyPatch) -> FakeS3:
    fake = FakeS3(
        {
            ("bucket", "train/a.csv"): b"a,label\n1,x\n",
            ("bucket", "train/nested/b.csv"): b"a,label\n2,y\n",
            ("bucket", "single.csv"): b"a,label\n3,z\n",
        }
    )
    monkeypatch.setattr(storage, "_s3_client", lambda env: fake)
    return fake


def test_fetch_s3_object(tmp_path: Path, fake_s3: FakeS3) -> None:
    path = storage.fetch("s3://bucket/single.csv", tmp_path, {})
    assert path == tmp_path / "single.csv"
    assert path.read_bytes() == b"a,label\n3,z\n"


def test_fetch_s3_prefix(tmp_path: Path, fake_s3: FakeS3) -> None:
    path = storage.fetch("s3://bucket/train", tmp_path, {})
    assert path == tmp_path / "train"
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*.csv")) == ["a.csv", "nested/b.csv"]


def test_fetch_s3_missing_is_permanent(tmp_path: Path, fake_s3: FakeS3) -> None:
    with pytest.raises(FetchError) as raised:
        storage.fetch("s3://bucket/nothing", tmp_path, {})
    assert raised.value.transient is False
    assert str(raised.value) == "s3://bucket/nothing: no such object or prefix"


def test_upload_to_s3(tmp_path: Path, fake_s3: FakeS3) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "sub" / "x").write_text("x")
    storage.upload(tmp_path, "s3://bucket/models/m/1", {})
    assert fake_s3.objects[("bucket", "models/m/1/model.json")] == b"{}"
    assert fake_s3.objects[("bucket", "models/m/1/sub/x")] == b"x"


def test_s3_without_boto3_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` raise ImportError
    with pytest.raises(FetchError) as raised:
        storage.fetch("s3://bucket/x.csv", tmp_path, {})
    assert raised.value.transient is False
    assert str(raised.value) == "s3:// needs boto3, which is not installed: pip install 'mlops-operator[s3]'"


def test_s3_client_reads_endpoint_and_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class FakeBoto3:
        @staticmethod
        def client(service: str, **kwargs: Any) -> str:
            calls.append((service, kwargs))
            return "client"

    monkeypatch.setitem(sys.modules, "boto3", FakeBoto3)
    env = {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    assert storage._s3_client(env) == "client"
    assert calls == [
        (
            "s3",
            {
                "endpoint_url": "http://minio:9000",
                "aws_access_key_id": "id",
                "aws_secret_access_key": "secret",
            },
        )
    ]


def test_train_from_https_and_s3_sources(trainer: Trainer, http_base: str, fake_s3: FakeS3) -> None:
    table = mixed_frame().drop(columns=["spend"])
    Handler.body = table.iloc[:120].to_csv(index=False).encode()
    fake_s3.objects[("bucket", "more/part-1.csv")] = table.iloc[120:].to_csv(index=False).encode()
    spec = make_spec(
        data={
            "source": {"uri": f"{http_base}/data/train.csv"},
            "extraSources": [{"uri": "s3://bucket/more"}],
            "target": "churn",
        }
    )
    try:
        run = trainer.run("train", make_config(spec), MLOPS_HTTP_AUTHORIZATION="Basic abc")
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
