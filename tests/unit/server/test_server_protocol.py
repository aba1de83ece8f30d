"""The rest of the protocol (issue #20): compressed bodies, KServe V1 liveness, Triton's extensions."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest
from server_factories import Artifact, RunningServer, StartServer, v2_matrix

ROW = [5.1, 3.5, 1.4, 0.2]
INFER = "/v2/models/iris/infer"


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some clients send it
    ],
    ids=["gzip", "deflate", "raw-deflate"],
)
def test_compressed_bodies_are_served(iris_server: RunningServer, encoding: str, compress: object) -> None:
    body = compress(orjson.dumps(v2_matrix([ROW] * 3)))  # type: ignore[operator]
    reply = iris_server.client().post(INFER, raw=body, headers={"Content-Encoding": encoding})
    assert reply.status == 200, reply.body
    assert reply.json["outputs"][0]["shape"] == [3]
    v1 = compress(orjson.dumps({"instances": [ROW]}))  # type: ignore[operator]
    reply = iris_server.client().post(
        "/v1/models/iris:predict", raw=v1, headers={"Content-Encoding": encoding}
    )
    assert reply.status == 200, reply.body


def test_a_compressed_body_is_bounded_after_decompression(start_server: StartServer, iris: Artifact) -> None:
    server = start_server(iris, max_body_bytes=64 << 10)
    c = server.client()
    bomb = gzip.compress(b" " * (8 << 20))  # 8 MiB in ~8 KiB, under the 64 KiB body limit
    assert len(bomb) < 64 << 10
    reply = c.post(INFER, raw=bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status == 413
    assert "65536-byte limit once decompressed" in reply.error
    assert c.infer(v2_matrix([ROW])).status == 200


@pytest.mark.parametrize(
    ("encoding", "body", "status", "message"),
    [
        ("br", b"x", 415, "'br' is not supported"),
        ("gzip", b"not gzip at all", 400, "not valid gzip"),
        ("gzip", gzip.compress(b'{"inputs": []}')[:-12], 400, "truncated"),
    ],
    ids=["unknown", "corrupt", "truncated"],
)
def test_bad_compressed_bodies(
    iris_server: RunningServer, encoding: str, body: bytes, status: int, message: str
) -> None:
    reply = iris_server.client().post(INFER, raw=body, headers={"Content-Encoding": encoding})
    assert reply.status == status
    assert message in reply.error


def test_kserve_v1_liveness(iris_server: RunningServer) -> None:
    reply = iris_server.client().get("/")
    assert reply.status == 200
    assert reply.json == {"status": "alive"}


def test_repository_index(iris_server: RunningServer) -> None:
    model = iris_server.server.app.model
    assert model is not None
    reply = iris_server.client().post("/v2/repository/index", {})
    assert reply.status == 200
    assert reply.json == [{"name": "iris", "version": model.version, "state": "READY"}]


def test_model_config(iris_server: RunningServer, iris: Artifact) -> None:
    model = iris_server.server.app.model
    assert model is not None
    c = iris_server.client()
    reply = c.get("/v2/models/iris/config")
    assert reply.status == 200
    config = reply.json
    assert config["name"] == "iris"
    assert [t["name"] for t in config["input"]] == iris.names
    assert {t["data_type"] for t in config["input"]} == {"TYPE_FP64"}
    assert [t["name"] for t in config["output"]] == ["predict", "predict_proba"]
    assert c.get(f"/v2/models/iris/versions/{model.version}/config").json == config
    assert c.get("/v2/models/iris/versions/nope/config").status == 404
    assert c.get("/v2/models/other/config").status == 404


def test_statistics_count_successes_failures_and_rows(iris_server: RunningServer) -> None:
    c = iris_server.client()
    assert c.infer(v2_matrix([ROW] * 5)).status == 200
    assert c.infer(v2_matrix([ROW] * 2)).status == 200
    assert c.infer({"inputs": []}).status == 400
    reply = c.get("/v2/models/iris/stats")
    assert reply.status == 200
    (stats,) = reply.json["model_stats"]
    assert stats["name"] == "iris"
    assert stats["inference_count"] == 7
    assert stats["execution_count"] == 2
    assert stats["inference_stats"]["success"]["count"] == 2
    assert stats["inference_stats"]["success"]["ns"] > 0
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert stats["last_inference"] > 0
    assert c.get("/v2/models/stats").json == reply.json
