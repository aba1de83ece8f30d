"""The gRPC endpoint (issue #20) over real sockets on loopback, with grpcio's own client.

Each RPC of `inference.GRPCInferenceService`; ModelInfer with raw and typed tensors, answered as
the HTTP route answers the same rows; the state shared with HTTP (metrics with protocol="grpc",
feedback, the prediction log, statistics); the status code of each failure; and the limits:
message size, rows, concurrent calls, deadlines, UNAVAILABLE before the model is loaded, a
graceful stop that lets a call in progress finish.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
from server_factories import MODEL, Artifact, RunningServer, StartServer, metric, v2_matrix

from mlops_server.app import App
from mlops_server.grpcapi import GrpcServer
from mlops_server.proto import inference_pb2 as pb

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
METHODS = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
}


T = pb.ModelInferRequest.InferInputTensor


class Stub:
    """A client of the service from our messages (what any generated stub does)."""

    def __init__(self, port: int, **options: Any) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=list(options.items()))
        self.calls = {
            name: self.channel.unary_unary(
                f"/inference.GRPCInferenceService/{name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response.FromString,
            )
            for name, (_, response) in METHODS.items()
        }

    def __call__(self, method: str, timeout: float = 10, **fields: Any) -> Any:
        return self.calls[method](METHODS[method][0](**fields), timeout=timeout)

    def code(self, method: str, **fields: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as info:
            self(method, **fields)
        error: Any = info.value
        return error.code(), error.details()

    def close(self) -> None:
        self.channel.close()


def raw_request(rows: Any, datatype: str = "FP32", **fields: Any) -> pb.ModelInferRequest:
    arr = np.asarray(rows, dtype={"FP32": "<f4", "FP64": "<f8", "INT64": "<i8"}[datatype])
    return pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input-0", datatype=datatype, shape=arr.shape)],
        raw_input_contents=[arr.tobytes()],
        **fields,
    )


@pytest.fixture
def grpc_server(start_server: StartServer, iris: Artifact) -> RunningServer:
    return start_server(iris, grpc_port=0)


@pytest.fixture
def stub(grpc_server: RunningServer) -> Iterator[Stub]:
    client = Stub(grpc_server.server.grpc_port)
    yield client
    client.close()


def http_labels(server: RunningServer, rows: Any) -> list[Any]:
    reply = server.client().infer(v2_matrix(rows))
    assert reply.status == 200, reply.body
    return next(o["data"] for o in reply.json["outputs"] if o["name"] == "predict")


def test_health_and_metadata(stub: Stub, grpc_server: RunningServer) -> None:
    version = grpc_server.server.app.model.version  # type: ignore[union-attr]
    assert stub("ServerLive").live
    assert stub("ServerReady").ready
    assert stub("ModelReady", name=MODEL).ready
    assert stub("ModelReady", name=MODEL, version=version).ready
    meta = stub("ServerMetadata")
    assert meta.name == "mlops-server"
    assert "model_configuration" in meta.extensions
    model = stub("ModelMetadata", name=MODEL)
    assert (model.name, list(model.versions), model.platform) == (MODEL, [version], "sklearn")
    assert [t.name for t in model.inputs] == [
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("predict", "INT64", [-1]),
        ("predict_proba", "FP64", [-1, 3]),
    ]
    config = stub("ModelConfig", name=MODEL).config
    assert (config.name, config.backend, config.max_batch_size) == (MODEL, "mlops-server", 0)
    assert next((i.name, pb.DataType.Name(i.data_type), list(i.dims)) for i in config.input) == (
        "sepal length (cm)",
        "TYPE_FP64",
        [-1],
    )
    assert config.parameters["task"].string_value == "classification"
    index = stub("RepositoryIndex", ready=True)
    assert [(m.name, m.version, m.state) for m in index.models] == [(MODEL, version, "READY")]


def test_infer_raw_matches_http(stub: Stub, grpc_server: RunningServer) -> None:
    answer = stub.calls["ModelInfer"](raw_request(ROWS, id="req-raw"), timeout=10)
    assert (answer.model_name, answer.id) == (MODEL, "req-raw")
    assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
        ("predict", "INT64", [3]),
        ("predict_proba", "FP64", [3, 3]),
    ]
    assert len(answer.raw_output_contents) == 2
    assert not answer.outputs[0].HasField("contents")
    labels = np.frombuffer(answer.raw_output_contents[0], "<i8").tolist()
    assert labels == http_labels(grpc_server, ROWS) == [0, 2, 1]
    proba = np.frombuffer(answer.raw_output_contents[1], "<f8").reshape(3, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba.argmax(axis=1).tolist() == labels


def test_infer_typed_columns_and_requested_output(stub: Stub, grpc_server: RunningServer) -> None:
    """One FP64 tensor per feature in `contents`; only `predict` asked for; answered in `contents`."""
    names = [t.name for t in stub("ModelMetadata", name=MODEL).inputs]
    columns = np.asarray(ROWS).T
    request = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name=name, datatype="FP64", shape=[3], contents=pb.InferTensorContents(fp64_contents=col)
            )
            for name, col in zip(names, columns, strict=True)
        ],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="predict")],
    )
    answer = stub.calls["ModelInfer"](request, timeout=10)
    assert [o.name for o in answer.outputs] == ["predict"]
    assert not answer.raw_output_contents
    assert list(answer.outputs[0].contents.int64_contents) == [0, 2, 1]
    assert answer.id  # one was made up, for feedback


def test_infer_typed_int_and_bytes(start_server: StartServer, mixed: Artifact) -> None:
    """A mixed model: FP64, INT64 and BYTES columns in `contents`; string labels come back as BYTES."""
    server = start_server(mixed, grpc_port=0)
    stub = Stub(server.server.grpc_port)
    try:
        request = pb.ModelInferRequest(
            model_name="mixed",
            inputs=[
                T(
                    name="weight",
                    datatype="FP64",
                    shape=[2],
                    contents=pb.InferTensorContents(fp64_contents=[3.0, 15.0]),
                ),
                T(
                    name="size",
                    datatype="INT64",
                    shape=[2],
                    contents=pb.InferTensorContents(int64_contents=[1, 3]),
                ),
                T(
                    name="color",
                    datatype="BYTES",
                    shape=[2],
                    contents=pb.InferTensorContents(bytes_contents=[b"red", b"blue"]),
                ),
            ],
        )
        answer = stub.calls["ModelInfer"](request, timeout=10)
        predict = answer.outputs[0]
        assert predict.datatype == "BYTES"
        labels = [v.decode() for v in predict.contents.bytes_contents]
        body = {
            "inputs": [
                {"name": "weight", "datatype": "FP64", "shape": [2], "data": [3.0, 15.0]},
                {"name": "size", "datatype": "INT64", "shape": [2], "data": [1, 3]},
                {"name": "color", "datatype": "BYTES", "shape": [2], "data": ["red", "blue"]},
            ]
        }
        http = server.client().infer(body, model="mixed").json
        assert labels == next(o["data"] for o in http["outputs"] if o["name"] == "predict")
        assert set(labels) <= {"yes", "no"}
    finally:
        stub.close()


def test_shared_state_metrics_feedback_statistics(
    start_server: StartServer, iris: Artifact, log_dir: Path
) -> None:
    server = start_server(iris, grpc_port=0, prediction_log=str(log_dir))
    stub = Stub(server.server.grpc_port)
    try:
        stub.calls["ModelInfer"](raw_request(ROWS, id="grpc-1"), timeout=10)
        code, _ = stub.code("ModelInfer", model_name=MODEL)  # no inputs: a 400
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        client = server.client()
        samples = client.metrics()
        assert metric(samples, "mlops_requests_total", protocol="grpc", code="200") == 1
        assert metric(samples, "mlops_requests_total", protocol="grpc", code="400") == 1
        # The id answered over gRPC takes labels over HTTP.
        reply = client.post(f"/v2/models/{MODEL}/feedback", {"id": "grpc-1", "labels": [0, 2, 1]})
        assert reply.status == 200, reply.body
        assert reply.json["accuracy"] == 1.0
        stats = stub("ModelStatistics", name=MODEL).model_stats[0]
        assert (stats.inference_count, stats.execution_count) == (3, 1)
        assert stats.inference_stats.fail.count == 1
        server.server.app.predlog.flush()  # type: ignore[union-attr]
        logged = [
            orjson.loads(line)
            for f in log_dir.glob("predictions-*.jsonl")
            for line in f.read_bytes().splitlines()
        ]
        assert [r["id"] for r in logged] == ["grpc-1"]
    finally:
        stub.close()


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        pytest.param({"model_name": "nope"}, grpc.StatusCode.NOT_FOUND, "not found", id="unknown-model"),
        pytest.param({"model_version": "v9"}, grpc.StatusCode.NOT_FOUND, "no version", id="unknown-version"),
        pytest.param(
            {"outputs": [pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown output",
            id="unknown-output",
        ),
    ],
)
def test_infer_errors(stub: Stub, fields: dict[str, Any], code: grpc.StatusCode, text: str) -> None:
    request = raw_request(ROWS)
    for key, value in fields.items():
        if key == "outputs":
            request.outputs.extend(value)
        else:
            setattr(request, key, value)
    with pytest.raises(grpc.RpcError) as info:
        stub.calls["ModelInfer"](request, timeout=10)
    error: Any = info.value
    assert error.code() is code
    assert text in error.details()


def typed(datatype: str, **contents: Any) -> Any:
    """A one-row [1, 4] input with its values in `contents`."""
    return T(name="x", datatype=datatype, shape=[1, 4], contents=pb.InferTensorContents(**contents))


@pytest.mark.parametrize(
    ("inputs", "raw", "text"),
    [
        pytest.param(
            [T(name="x", datatype="FP32", shape=[3, 5])], [b"\0" * 60], "expected [N, 4]", id="wrong-width"
        ),
        pytest.param(
            [T(name="x", datatype="FP32", shape=[3, 4])],
            [b"\0" * 7],
            "binary data has 7 bytes",
            id="short-raw",
        ),
        pytest.param(
            [T(name="x", datatype="FP9", shape=[1, 4])], [b"\0" * 16], "unknown datatype", id="datatype"
        ),
        pytest.param(
            [T(name="x", datatype="FP32", shape=[1, 4])], [b"\0" * 16, b""], "2 entries for 1", id="raw-count"
        ),
        pytest.param(
            [typed("INT8", int_contents=[1, 2, 3, 300])],
            [],
            "out of range",
            id="int8-range",
        ),
        pytest.param(
            [typed("FP64", fp64_contents=[1, 2])],
            [],
            "needs 4 values, got 2",
            id="typed-count",
        ),
        pytest.param(
            [typed("BYTES", bytes_contents=[b"\xff"] * 4)],
            [],
            "not UTF-8",
            id="bytes-utf8",
        ),
    ],
)
def test_bad_tensors_are_invalid_argument(stub: Stub, inputs: list[Any], raw: list[bytes], text: str) -> None:
    request = pb.ModelInferRequest(model_name=MODEL, inputs=inputs, raw_input_contents=raw)
    with pytest.raises(grpc.RpcError) as info:
        stub.calls["ModelInfer"](request, timeout=10)
    error: Any = info.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert text in error.details()


def test_limits_rows_and_message_size(start_server: StartServer, iris: Artifact) -> None:
    server = start_server(iris, grpc_port=0, max_rows=10, max_body_bytes=4096)
    stub = Stub(server.server.grpc_port, **{"grpc.max_send_message_length": 1 << 20})
    try:
        # 11 rows declared: refused from the shape, the data never decoded (it is not even there).
        request = pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[T(name="x", datatype="FP32", shape=[11, 4])],
            raw_input_contents=[b""],
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.calls["ModelInfer"](request, timeout=10)
        error: Any = info.value
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 10 rows" in error.details()
        # A message over the body limit: grpc's own RESOURCE_EXHAUSTED, before our handler.
        big = raw_request(np.zeros((10, 4)), datatype="FP64")
        big.id = "x" * 5000
        with pytest.raises(grpc.RpcError) as info:
            stub.calls["ModelInfer"](big, timeout=10)
        error = info.value
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # Still serving.
        assert stub.calls["ModelInfer"](raw_request(ROWS), timeout=10).outputs
    finally:
        stub.close()


def test_deadline_is_honoured(start_server: StartServer, iris: Artifact) -> None:
    """A batch that waits 2 s for company; a client allowing 0.3 s gets DEADLINE_EXCEEDED in time."""
    server = start_server(iris, grpc_port=0, max_batch_delay_ms=2000)
    stub = Stub(server.server.grpc_port)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.calls["ModelInfer"](raw_request(ROWS), timeout=0.3)
        error: Any = info.value
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 1.5
    finally:
        stub.close()


def test_concurrent_calls_are_capped(start_server: StartServer, iris: Artifact) -> None:
    """--max-connections calls in progress at once; one more is RESOURCE_EXHAUSTED, the others answered."""
    server = start_server(iris, grpc_port=0, max_batch_delay_ms=500, max_connections=2)
    stub = Stub(server.server.grpc_port)
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(stub.calls["ModelInfer"], raw_request(ROWS), timeout=10) for _ in range(3)]
            codes = []
            for future in futures:
                try:
                    future.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())  # type: ignore[attr-defined]
        assert sorted(c.name for c in codes) == ["OK", "OK", "RESOURCE_EXHAUSTED"]
    finally:
        stub.close()


def test_connections_are_capped(start_server: StartServer, iris: Artifact) -> None:
    """--max-connections HTTP/2 connections; one more is closed at once, and a freed place is reused."""
    server = start_server(iris, grpc_port=0, max_connections=2)
    # A subchannel pool per channel: grpc would otherwise share one connection between channels.
    stubs = [Stub(server.server.grpc_port, **{"grpc.use_local_subchannel_pool": 1}) for _ in range(3)]
    try:
        assert stubs[0]("ServerLive").live and stubs[1]("ServerLive").live
        code, details = stubs[2].code("ServerLive")
        assert code is grpc.StatusCode.UNAVAILABLE, details
        stubs[0].close()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert stubs[2]("ServerLive", timeout=1).live
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the freed connection's place was not reused"
                time.sleep(0.1)
    finally:
        for stub in stubs:
            stub.close()


def test_graceful_stop_finishes_calls_in_progress(start_server: StartServer, iris: Artifact) -> None:
    server = start_server(iris, grpc_port=0, max_batch_delay_ms=400)
    stub = Stub(server.server.grpc_port)
    try:
        result: dict[str, Any] = {}
        call = threading.Thread(
            target=lambda: result.update(answer=stub.calls["ModelInfer"](raw_request(ROWS), timeout=10))
        )
        call.start()
        time.sleep(0.15)
        assert server.stop() == 0
        call.join(10)
        assert len(result["answer"].outputs) == 2
        # The port is closed afterwards.
        with pytest.raises(grpc.RpcError) as info:
            stub("ServerLive", timeout=2)
        error: Any = info.value
        assert error.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        stub.close()


def test_unavailable_before_the_model_is_loaded() -> None:
    """An App with no model attached yet, as between listening and loading."""

    async def scenario() -> dict[str, Any]:
        endpoint = GrpcServer(
            App(MODEL),
            max_message_bytes=1 << 20,
            max_metadata_bytes=8192,
            max_streams=10,
            max_connections=10,
            idle_timeout=5,
        )
        port = await endpoint.start("127.0.0.1", 0)
        try:
            stub = Stub(port)
            loop = asyncio.get_running_loop()
            out: dict[str, Any] = {}
            out["live"] = (await loop.run_in_executor(None, stub, "ServerLive")).live
            out["ready"] = (await loop.run_in_executor(None, stub, "ServerReady")).ready
            out["model_ready"] = (
                await loop.run_in_executor(None, lambda: stub("ModelReady", name=MODEL))
            ).ready
            out["infer"] = await loop.run_in_executor(None, lambda: stub.code("ModelInfer", model_name=MODEL))
            out["meta"] = await loop.run_in_executor(None, lambda: stub.code("ModelMetadata", name=MODEL))
            out["other"] = await loop.run_in_executor(None, lambda: stub.code("ModelReady", name="other"))
            stub.close()
            return out
        finally:
            await endpoint.stop(0)

    out = asyncio.run(scenario())
    assert (out["live"], out["ready"], out["model_ready"]) == (True, False, False)
    assert out["infer"][0] is grpc.StatusCode.UNAVAILABLE
    assert "not loaded yet" in out["infer"][1]
    assert out["meta"][0] is grpc.StatusCode.UNAVAILABLE
    assert out["other"][0] is grpc.StatusCode.NOT_FOUND


def test_port_in_use_fails_to_start(start_server: StartServer, iris: Artifact) -> None:
    first = start_server(iris, grpc_port=0)
    from server_factories import settings_for

    from mlops_server.lifecycle import EXIT_FAILED, Server

    second = Server(settings_for(iris, grpc_port=first.server.grpc_port))
    assert asyncio.run(second.run()) == EXIT_FAILED
