"""Bad input never crashes the server: each case gets its 4xx and a message naming the problem."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from server_factories import Artifact, RunningServer, StartServer, v2_matrix

ROW = [5.1, 3.5, 1.4, 0.2]
NAMES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def tensor(name: str = "x", shape: Any = None, datatype: str = "FP64", data: Any = None) -> dict[str, Any]:
    return {
        "name": name,
        "shape": [1, 4] if shape is None else shape,
        "datatype": datatype,
        "data": ROW if data is None else data,
    }


def per_feature(names: list[str], rows: int = 1, **override: Any) -> list[dict[str, Any]]:
    return [{"name": n, "shape": [rows], "datatype": "FP64", "data": [1.0] * rows, **override} for n in names]


# (case id, body bytes or JSON, expected status, expected substring of the error message)
V2_CASES: list[tuple[str, Any, int, str]] = [
    ("invalid JSON", b"{not json", 400, "invalid JSON"),
    ("empty body", b"", 400, "invalid JSON"),
    ("body is an array", [1, 2], 400, "must be a JSON object"),
    ("no inputs", {"id": "a"}, 400, "non-empty 'inputs'"),
    ("inputs empty", {"inputs": []}, 400, "non-empty 'inputs'"),
    ("input not an object", {"inputs": [3]}, 400, "inputs[0] must be an object"),
    (
        "input without name",
        {"inputs": [{"shape": [1, 4], "datatype": "FP64", "data": ROW}]},
        400,
        "inputs[0] has no name",
    ),
    ("shape not a list", {"inputs": [tensor(shape="1,4")]}, 400, "shape must be a non-empty array"),
    ("negative shape", {"inputs": [tensor(shape=[-1, 4])]}, 400, "shape must be a non-empty array"),
    ("unknown datatype", {"inputs": [tensor(datatype="FLOAT")]}, 400, "unknown datatype 'FLOAT'"),
    ("no data", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64"}]}, 400, "input 'x': no data"),
    ("data not an array", {"inputs": [tensor(data=5)]}, 400, "data must be an array"),
    (
        "data shorter than shape",
        {"inputs": [tensor(shape=[2, 4])]},
        400,
        "shape [2, 4] needs 8 values, got 4",
    ),
    ("too many features", {"inputs": [tensor(shape=[1, 5], data=[*ROW, 1.0])]}, 400, "expected [N, 4]"),
    ("too few features", {"inputs": [tensor(shape=[1, 3], data=ROW[:3])]}, 400, "expected [N, 4]"),
    ("one-dimensional matrix", {"inputs": [tensor(shape=[4])]}, 400, "expected [N, 4]"),
    ("ragged nested data", {"inputs": [tensor(shape=[2, 4], data=[ROW, ROW[:3]])]}, 400, "ragged"),
    ("string in FP64", {"inputs": [tensor(data=[5.1, "abc", 1.4, 0.2])]}, 400, "expected numbers, got 'abc'"),
    (
        "booleans in FP64",
        {"inputs": [tensor(data=[True, False, True, False])]},
        400,
        "expected numbers, got booleans",
    ),
    ("object in FP64", {"inputs": [tensor(data=[5.1, {"a": 1}, 1.4, 0.2])]}, 400, "expected numbers"),
    (
        "float in INT64",
        {"inputs": [tensor(datatype="INT64", data=[5, 3.5, 1, 0])]},
        400,
        "(INT64): expected integers, got 3.5",
    ),
    (
        "INT8 out of range",
        {"inputs": [tensor(datatype="INT8", data=[5, 300, 1, 0])]},
        400,
        "out of range [-128, 127]",
    ),
    (
        "UINT8 negative",
        {"inputs": [tensor(datatype="UINT8", data=[5, -1, 1, 0])]},
        400,
        "out of range [0, 255]",
    ),
    (
        "number in BOOL",
        {"inputs": [tensor(datatype="BOOL", data=[1, 0, 1, 0])]},
        400,
        "(BOOL): expected true or false",
    ),
    (
        "number in BYTES",
        {"inputs": [tensor(datatype="BYTES", data=[1, 2, 3, 4])]},
        400,
        "(BYTES): expected strings",
    ),
    (
        "BYTES for numeric features",
        {"inputs": [tensor(datatype="BYTES", data=["a", "b", "c", "d"])]},
        400,
        "features are numeric",
    ),
    ("empty batch", {"inputs": [tensor(shape=[0, 4], data=[])]}, 400, "empty batch"),
    ("missing feature", {"inputs": per_feature(NAMES[:3])}, 400, "missing features: petal width (cm)"),
    (
        "unknown input",
        {"inputs": [*per_feature(NAMES), *per_feature(["colour"])]},
        400,
        "unknown inputs: colour",
    ),
    (
        "duplicate input",
        {"inputs": per_feature([NAMES[0], *NAMES])},
        400,
        f"input '{NAMES[0]}' appears more than once",
    ),
    (
        "rows differ between features",
        {"inputs": [*per_feature(NAMES[:3]), *per_feature(NAMES[3:], rows=2)]},
        400,
        "has 2 rows but input",
    ),
    (
        "feature tensor 2-D",
        {"inputs": per_feature(NAMES, shape=[1, 2], data=[1.0, 2.0])},
        400,
        "shape [N] or [N, 1]",
    ),
    ("id not a string", v2_matrix([ROW], id=7), 400, "id must be a string"),
    ("parameters not an object", v2_matrix([ROW], parameters=[1]), 400, "parameters must be an object"),
    ("unknown output", v2_matrix([ROW], outputs=[{"name": "scores"}]), 400, "unknown output 'scores'"),
    ("outputs malformed", v2_matrix([ROW], outputs=["predict"]), 400, "outputs must be an array of objects"),
    (
        "binary size without header",
        {
            "inputs": [
                {"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
            ]
        },
        400,
        "no Inference-Header-Content-Length",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "message"), [c[1:] for c in V2_CASES], ids=[c[0] for c in V2_CASES]
)
def test_v2_bad_request(iris_server: RunningServer, body: Any, status: int, message: str) -> None:
    c = iris_server.client()
    reply = c.request("POST", "/v2/models/iris/infer", raw=body) if isinstance(body, bytes) else c.infer(body)
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert message in reply.error
    # ... and the server still serves, on the same connection.
    assert c.infer(v2_matrix([ROW])).status == 200


V1_CASES: list[tuple[str, Any, int, str]] = [
    ("invalid JSON", b"[[", 400, "invalid JSON"),
    ("no instances", {"rows": [ROW]}, 400, '"instances" array'),
    ("empty instances", {"instances": []}, 400, "empty batch"),
    ("row too long", {"instances": [[*ROW, 1.0]]}, 400, "instance 0 has 5 values; expected 4"),
    ("flat row", {"instances": ROW}, 400, "each instance must be a list of 4 values"),
    ("non-numeric value", {"instances": [[5.1, "wide", 1.4, 0.2]]}, 400, "expected numbers, got 'wide'"),
    (
        "unknown key",
        {"instances": [{**dict(zip(NAMES, ROW, strict=True)), "colour": 1}]},
        400,
        "unknown features: colour",
    ),
    (
        "missing key",
        {"instances": [dict(zip(NAMES[:3], ROW[:3], strict=True))]},
        400,
        "missing features: petal width (cm)",
    ),
    ("nested value", {"instances": [[[5.1], 3.5, 1.4, 0.2]]}, 400, "nested values"),
]


@pytest.mark.parametrize(
    ("body", "status", "message"), [c[1:] for c in V1_CASES], ids=[c[0] for c in V1_CASES]
)
def test_v1_bad_request(iris_server: RunningServer, body: Any, status: int, message: str) -> None:
    c = iris_server.client()
    path = "/v1/models/iris:predict"
    reply = c.request("POST", path, raw=body) if isinstance(body, bytes) else c.post(path, body)
    assert reply.status == status, reply.body
    assert message in reply.error


ROUTE_CASES: list[tuple[str, str, str, int, str]] = [
    (
        "unknown model (v2 infer)",
        "POST",
        "/v2/models/wine/infer",
        404,
        "model 'wine' not found; this server serves 'iris'",
    ),
    ("unknown model (metadata)", "GET", "/v2/models/wine", 404, "model 'wine' not found"),
    ("unknown model (ready)", "GET", "/v2/models/wine/ready", 404, "model 'wine' not found"),
    ("unknown model (v1)", "POST", "/v1/models/wine:predict", 404, "model 'wine' not found"),
    ("unknown model (feedback)", "POST", "/v2/models/wine/feedback", 404, "model 'wine' not found"),
    ("unknown path", "GET", "/v3/anything", 404, "no route for /v3/anything"),
    ("unknown model subpath", "GET", "/v2/models/iris/explain", 404, "no route"),
    (
        "GET on infer",
        "GET",
        "/v2/models/iris/infer",
        405,
        "method GET is not allowed on /v2/models/iris/infer; use POST",
    ),
    ("POST on live", "POST", "/v2/health/live", 405, "use GET"),
    ("DELETE on metadata", "DELETE", "/v2/models/iris", 405, "use GET"),
    ("PUT on v1 predict", "PUT", "/v1/models/iris:predict", 405, "use POST"),
]


@pytest.mark.parametrize(
    ("method", "path", "status", "message"), [c[1:] for c in ROUTE_CASES], ids=[c[0] for c in ROUTE_CASES]
)
def test_routing_errors(
    iris_server: RunningServer, method: str, path: str, status: int, message: str
) -> None:
    reply = iris_server.client().request(method, path, body=v2_matrix([ROW]) if method != "GET" else None)
    assert reply.status == status, reply.body
    assert message in reply.error
    if status == 405:
        assert reply.headers["allow"] in ("GET", "POST")


def test_model_rejecting_values_is_a_400_and_spares_its_batch_neighbours(iris_server: RunningServer) -> None:
    # The plain scaler + logistic regression has no imputer: NaN (JSON null) is rejected by the model.
    reply = iris_server.client().infer({"inputs": [tensor(data=[5.1, None, 1.4, 0.2])]})
    assert reply.status == 400
    assert "the model rejected the input" in reply.error
    assert "NaN" in reply.error


def test_unexpected_exception_is_a_500_and_the_server_keeps_serving(iris_server: RunningServer) -> None:
    model = iris_server.server.app.model
    assert model is not None

    class Exploding:
        def predict(self, X: Any) -> Any:
            raise RuntimeError("boom")

        predict_proba = predict

    saved = model._matrix, model._frame_methods
    model._matrix = model._frame_methods = type(saved[1])(Exploding().predict, Exploding().predict_proba)
    try:
        reply = iris_server.client().infer(v2_matrix([ROW]))
    finally:
        model._matrix, model._frame_methods = saved
    assert reply.status == 500
    assert reply.error == "internal server error: RuntimeError"
    assert iris_server.client().infer(v2_matrix([ROW])).status == 200


def test_oversized_body_is_413(start_server: StartServer, iris: Artifact) -> None:
    server = start_server(iris, max_body_bytes=1024)
    c = server.client()
    big = v2_matrix([ROW] * 200)  # ~ 4 KB
    reply = c.infer(big)
    assert reply.status == 413
    assert "exceeds the 1024-byte limit" in reply.error
    assert c.infer(v2_matrix([ROW])).status == 200  # the body was drained: the connection lives on


def test_oversized_chunked_body_is_413(start_server: StartServer, iris: Artifact) -> None:
    server = start_server(iris, max_body_bytes=1024)
    chunks = [b"x" * 600, b"y" * 600]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in chunks:
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 ")


def test_expect_continue_over_the_limit_is_refused_before_the_body(
    start_server: StartServer, iris: Artifact
) -> None:
    server = start_server(iris, max_body_bytes=1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head


def test_expect_continue_within_the_limit_gets_100(iris_server: RunningServer) -> None:
    body = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}'
    with socket.create_connection(("127.0.0.1", iris_server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")


def test_malformed_http_is_400_and_closes(iris_server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", iris_server.port), timeout=10) as sock:
        sock.sendall(b"GARBAGE / NOT-HTTP\r\n\r\n")
        data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 400 ")
        assert b"malformed HTTP request" in data
        assert sock.recv(65536) == b""  # closed
    assert iris_server.client().get("/v2/health/live").status == 200


def test_pipelined_requests_are_answered_in_order(iris_server: RunningServer) -> None:
    infer = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}'
    request = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: "
        + str(len(infer)).encode()
        + b"\r\n\r\n"
        + infer
    )
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection(("127.0.0.1", iris_server.port), timeout=10) as sock:
        sock.sendall(request + live + request + live)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if data.count(b"HTTP/1.1 200 OK") == 4:
                break
    parts = data.split(b"HTTP/1.1 200 OK")[1:]
    assert [b'"outputs"' in p for p in parts] == [True, False, True, False]


def test_many_pipelined_requests_behind_an_inference(iris_server: RunningServer) -> None:
    infer = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}'
    first = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: "
        + str(len(infer)).encode()
        + b"\r\n\r\n"
    )
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    n = 3000  # answered one after another once the inference returns: no recursion, no loss
    with socket.create_connection(("127.0.0.1", iris_server.port), timeout=10) as sock:
        sock.sendall(first + infer + live * n)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == n + 1


def test_an_integer_feature_beyond_int64_is_400_on_the_scikit_learn_path(
    start_server: StartServer, mixed: Artifact
) -> None:
    server = start_server(mixed)
    c = server.client()
    for size in (1 << 63, 1 << 64, 10**30):
        raw = (
            b'{"instances": [{"weight": 10.0, "size": %d, "color": "red"}]}' % size
        )  # orjson stops at 64 bits
        reply = c.post("/v1/models/mixed:predict", raw=raw)
        assert reply.status == 400, reply.error
        assert "out of the int64 range" in reply.error
    ok = c.post("/v1/models/mixed:predict", {"instances": [{"weight": 10.0, "size": 2, "color": "red"}]})
    assert ok.status == 200


def test_an_unencodable_answer_is_a_500_with_a_message(iris_server: RunningServer) -> None:
    import numpy as np

    model = iris_server.server.app.model
    assert model is not None

    def predict(X: Any) -> Any:
        return np.array([object()] * len(X), dtype=object)  # no JSON form

    saved = model._matrix, model._frame_methods, model.has_proba
    model._matrix = model._frame_methods = type(saved[1])(predict, None)
    model.has_proba = False
    try:
        reply = iris_server.client().infer(
            v2_matrix([ROW]),
        )
    finally:
        model._matrix, model._frame_methods, model.has_proba = saved
    assert reply.status == 500
    assert reply.error.startswith("failed to encode the response: ")
    assert "not JSON serializable" in reply.error
    assert iris_server.client().infer(v2_matrix([ROW])).status == 200
