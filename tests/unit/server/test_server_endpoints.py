"""Every endpoint over real HTTP: V2 health/metadata/infer, V1, and the request layouts of standard clients."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pandas as pd
import pytest
from server_factories import Artifact, Client, RunningServer, StartServer, v2_matrix


def _outputs(reply: Any) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in reply.json["outputs"]}


def _assert_iris_outputs(reply: Any, art: Artifact, rows: np.ndarray) -> None:
    assert reply.status == 200, reply.body
    outputs = _outputs(reply)
    frame = pd.DataFrame(rows, columns=art.X.columns)
    expected = art.pipeline.predict(frame)
    assert outputs["predict"] == {
        "name": "predict",
        "datatype": "INT64",
        "shape": [len(rows)],
        "data": expected.tolist(),
    }
    proba = art.pipeline.predict_proba(frame)
    assert outputs["predict_proba"]["shape"] == [len(rows), 3]
    assert outputs["predict_proba"]["datatype"] == "FP64"
    np.testing.assert_allclose(outputs["predict_proba"]["data"], proba.ravel(), rtol=1e-12)


# --- health and metadata ---------------------------------------------------------------------


def test_health_and_server_metadata(iris_server: RunningServer) -> None:
    c = iris_server.client()
    assert c.get("/v2/health/live").json == {"live": True}
    assert c.get("/v2/health/ready").json == {"ready": True}
    meta = c.get("/v2").json
    assert meta["name"] == "mlops-server"
    assert isinstance(meta["version"], str)
    assert isinstance(meta["extensions"], list)


def test_model_metadata_and_readiness(iris_server: RunningServer, iris: Artifact) -> None:
    c = iris_server.client()
    meta = c.get("/v2/models/iris").json
    assert meta["name"] == "iris"
    assert meta["versions"] == ["v1"]
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": name, "datatype": "FP64", "shape": [-1]} for name in iris.names]
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert meta["parameters"]["sha256"] == iris.sha256
    assert meta["parameters"]["classes"] == [0, 1, 2]
    assert c.get("/v2/models/iris/versions/v1").json == meta
    assert c.get("/v2/models/iris/ready").json == {"name": "iris", "ready": True}
    assert c.get("/v2/models/iris/versions/v1/ready").status == 200
    assert c.get("/v1/models/iris").json == {"name": "iris", "ready": True}
    assert c.get("/v1/models").json == {"models": ["iris"]}


def test_not_ready_until_loaded_and_while_draining(iris: Artifact) -> None:
    # The App alone, as the server holds it before the model thread finished, then while draining.
    from mlops_server.app import App
    from mlops_server.http import Request, Response

    app = App("iris")
    answers: list[Response] = []
    app.handle(Request("GET", "/v2/health/ready"), answers.append)
    app.handle(Request("GET", "/v2/health/live"), answers.append)
    app.handle(Request("POST", "/v2/models/iris/infer", body=b'{"inputs": []}'), answers.append)
    app.handle(Request("GET", "/v2/models/iris"), answers.append)
    assert [a.status for a in answers] == [503, 200, 503, 503]
    assert b"not loaded yet" in answers[2].body
    app.model = object()  # type: ignore[assignment]  # readiness only looks at presence
    app.closing = True
    answers.clear()
    app.handle(Request("GET", "/v2/health/ready"), answers.append)
    assert answers[0].status == 503
    assert b"shutting down" in answers[0].body


# --- V2 inference ----------------------------------------------------------------------------


def test_v2_matrix_flat_data(iris_server: RunningServer, iris: Artifact) -> None:
    rows = iris.X.to_numpy()[[0, 60, 120]]
    reply = iris_server.client().infer(v2_matrix(rows, id="req-1", parameters={"trace": "abc"}))
    _assert_iris_outputs(reply, iris, rows)
    assert reply.json["id"] == "req-1"
    assert reply.json["model_name"] == "iris"
    assert reply.json["model_version"] == "v1"
    assert reply.json["parameters"] == {"trace": "abc"}


def test_v2_matrix_nested_data_and_fp32(iris_server: RunningServer, iris: Artifact) -> None:
    rows = iris.X.to_numpy()[[1, 51]]
    body = {"inputs": [{"name": "predict", "shape": [2, 4], "datatype": "FP32", "data": rows.tolist()}]}
    _assert_iris_outputs(iris_server.client().infer(body), iris, rows)


def test_v2_generates_an_id_when_absent(iris_server: RunningServer, iris: Artifact) -> None:
    reply = iris_server.client().infer(v2_matrix(iris.X.to_numpy()[:1]))
    assert len(reply.json["id"]) == 36  # a uuid4


@pytest.mark.parametrize("shape", ["[N]", "[N,1]"])
def test_v2_one_tensor_per_feature(iris_server: RunningServer, iris: Artifact, shape: str) -> None:
    rows = iris.X.to_numpy()[[3, 70, 140]]
    inputs = []
    for name in reversed(iris.names):  # the order of the inputs does not matter
        column = rows[:, iris.names.index(name)]
        dims = [3] if shape == "[N]" else [3, 1]
        inputs.append({"name": name, "shape": dims, "datatype": "FP64", "data": column.tolist()})
    _assert_iris_outputs(iris_server.client().infer({"inputs": inputs}), iris, rows)


def test_v2_requested_outputs(iris_server: RunningServer, iris: Artifact) -> None:
    c = iris_server.client()
    rows = iris.X.to_numpy()[:2]
    only_proba = c.infer(v2_matrix(rows, outputs=[{"name": "predict_proba"}]))
    assert [o["name"] for o in only_proba.json["outputs"]] == ["predict_proba"]
    only_predict = c.infer(
        v2_matrix(rows, outputs=[{"name": "predict", "parameters": {"binary_data": False}}])
    )
    assert [o["name"] for o in only_predict.json["outputs"]] == ["predict"]


def test_v2_versioned_infer(iris_server: RunningServer, iris: Artifact) -> None:
    c = iris_server.client()
    assert c.post("/v2/models/iris/versions/v1/infer", v2_matrix(iris.X.to_numpy()[:1])).status == 200
    wrong = c.post("/v2/models/iris/versions/v9/infer", v2_matrix(iris.X.to_numpy()[:1]))
    assert wrong.status == 404
    assert "no version 'v9'" in wrong.error


# --- requests as standard clients write them ------------------------------------------------


def test_kserve_infer_request_to_rest_layout(iris_server: RunningServer, iris: Artifact) -> None:
    # kserve.InferRequest(...).to_rest(): id, inputs with name/shape/datatype/data (+ parameters), flat data.
    rows = iris.X.to_numpy()[[5, 55]]
    body = {
        "id": "kserve-1",
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
                "parameters": {},
            }
        ],
    }
    reply = iris_server.client().infer(body)
    _assert_iris_outputs(reply, iris, rows)
    assert reply.json["id"] == "kserve-1"


def test_mlserver_pandas_codec_layout(iris_server: RunningServer, iris: Artifact) -> None:
    # mlserver's PandasCodec: one input per column, shape [N, 1], request content_type "pd".
    rows = iris.X.to_numpy()[[7, 77]]
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": name,
                "shape": [2, 1],
                "datatype": "FP64",
                "parameters": {"content_type": "np"},
                "data": rows[:, j].tolist(),
            }
            for j, name in enumerate(iris.names)
        ],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    reply = iris_server.client().infer(body)
    _assert_iris_outputs(reply, iris, rows)
    assert reply.json["parameters"] == {"content_type": "pd"}


def test_tritonclient_json_layout(iris_server: RunningServer, iris: Artifact) -> None:
    # tritonclient.http with binary_data=False: JSON tensors, outputs with parameters.binary_data.
    rows = iris.X.to_numpy()[[9]]
    body = {
        "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP64", "data": rows.ravel().tolist()}],
        "outputs": [
            {"name": "predict", "parameters": {"binary_data": False}},
            {"name": "predict_proba", "parameters": {"binary_data": False}},
        ],
    }
    _assert_iris_outputs(iris_server.client().infer(body), iris, rows)


def test_tritonclient_binary_tensor_layout(iris_server: RunningServer, iris: Artifact) -> None:
    # tritonclient.http's default: the JSON header, then raw little-endian tensor bytes.
    rows = iris.X.to_numpy()[[11, 111]].astype("<f4")
    header = (
        b'{"inputs":[{"name":"INPUT0","shape":[2,4],"datatype":"FP32","parameters":{"binary_data_size":32}}],'
        b'"parameters":{"binary_data_output":false}}'
    )
    reply = iris_server.client().request(
        "POST",
        "/v2/models/iris/infer",
        raw=header + rows.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    _assert_iris_outputs(reply, iris, rows.astype(float))


def test_binary_bytes_tensor_for_a_text_feature(start_server: StartServer, mixed: Artifact) -> None:
    def bytes_tensor(values: list[str]) -> bytes:
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)

    color = bytes_tensor(["red", "blue"])
    weight = np.array([9.0, 12.5], dtype="<f8").tobytes()
    size = np.array([1, 3], dtype="<i8").tobytes()
    header = (
        '{"inputs":['
        f'{{"name":"color","shape":[2],"datatype":"BYTES","parameters":{{"binary_data_size":{len(color)}}}}},'
        f'{{"name":"weight","shape":[2],"datatype":"FP64","parameters":{{"binary_data_size":{len(weight)}}}}},'
        f'{{"name":"size","shape":[2],"datatype":"INT64","parameters":{{"binary_data_size":{len(size)}}}}}]}}'
    ).encode()
    server = start_server(mixed)
    reply = server.client().request(
        "POST",
        "/v2/models/mixed/infer",
        raw=header + color + weight + size,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status == 200, reply.body
    expected = mixed.pipeline.predict(
        pd.DataFrame({"weight": [9.0, 12.5], "size": [1, 3], "color": ["red", "blue"]})
    )
    assert _outputs(reply)["predict"]["data"] == expected.tolist()


# --- text features, string classes, regression ------------------------------------------------


def test_mixed_features_per_feature_tensors(start_server: StartServer, mixed: Artifact) -> None:
    server = start_server(mixed)
    assert not server.server.app.model.matrix_input  # type: ignore[union-attr]  # text forces the DataFrame path
    frame = mixed.X.iloc[:5]
    body = {
        "inputs": [
            {"name": "weight", "shape": [5], "datatype": "FP64", "data": frame["weight"].tolist()},
            {"name": "size", "shape": [5], "datatype": "INT32", "data": frame["size"].tolist()},
            {"name": "color", "shape": [5], "datatype": "BYTES", "data": frame["color"].tolist()},
        ]
    }
    reply = server.client().infer(body, model="mixed")
    assert reply.status == 200, reply.body
    outputs = _outputs(reply)
    assert outputs["predict"]["datatype"] == "BYTES"
    assert outputs["predict"]["data"] == mixed.pipeline.predict(frame).tolist()
    meta = server.client().get("/v2/models/mixed").json
    assert [i["datatype"] for i in meta["inputs"]] == ["FP64", "INT64", "BYTES"]


def test_mixed_features_v1_objects_and_lists(start_server: StartServer, mixed: Artifact) -> None:
    server = start_server(mixed)
    frame = mixed.X.iloc[10:13]
    expected = mixed.pipeline.predict(frame).tolist()
    c = server.client()
    objects = c.post("/v1/models/mixed:predict", {"instances": frame.to_dict(orient="records")})
    assert objects.status == 200, objects.body
    assert objects.json["predictions"] == expected
    lists = c.post("/v1/models/mixed:predict", {"instances": frame.to_numpy().tolist()})
    assert lists.json["predictions"] == expected


def test_regression(start_server: StartServer, diabetes: Artifact) -> None:
    server = start_server(diabetes, model_name="diabetes")
    c = server.client()
    rows = diabetes.X.to_numpy()[:4]
    reply = c.infer(v2_matrix(rows), model="diabetes")
    assert reply.status == 200, reply.body
    outputs = reply.json["outputs"]
    assert [o["name"] for o in outputs] == ["predict"]
    assert outputs[0]["datatype"] == "FP64"
    np.testing.assert_allclose(outputs[0]["data"], diabetes.pipeline.predict(diabetes.X.iloc[:4]), rtol=1e-12)
    meta = c.get("/v2/models/diabetes").json
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    v1 = c.post("/v1/models/diabetes:predict", {"instances": rows.tolist()})
    np.testing.assert_allclose(
        v1.json["predictions"], diabetes.pipeline.predict(diabetes.X.iloc[:4]), rtol=1e-12
    )


@pytest.mark.parametrize("runtime,expected", [("auto", "arrays"), ("sklearn", "sklearn")])
def test_column_transformer_pipeline_uses_the_matrix_path(
    start_server: StartServer, iris_ct: Artifact, runtime: str, expected: str
) -> None:
    # auto: the trainer's layout runs from its arrays; sklearn: scikit-learn's steps on a matrix.
    server = start_server(iris_ct, runtime=runtime)
    model = server.server.app.model
    assert model is not None and model.matrix_input and model.runtime == expected
    assert server.client().get("/v2/models/iris").json["parameters"]["runtime"] == expected
    rows = iris_ct.X.to_numpy()[[2, 62, 122]]
    _assert_iris_outputs(server.client().infer(v2_matrix(rows)), iris_ct, rows)


# --- V1 ----------------------------------------------------------------------------------------


def test_v1_rows_as_lists_and_objects(iris_server: RunningServer, iris: Artifact) -> None:
    c = iris_server.client()
    frame = iris.X.iloc[[0, 50, 100]]
    expected = iris.pipeline.predict(frame).tolist()
    lists = c.post("/v1/models/iris:predict", {"instances": frame.to_numpy().tolist()})
    assert lists.status == 200
    assert lists.json["predictions"] == expected
    objects = c.post("/v1/models/iris:predict", {"instances": frame.to_dict(orient="records")})
    assert objects.json["predictions"] == expected


def test_nan_from_null_reaches_an_imputing_pipeline(start_server: StartServer, iris_ct: Artifact) -> None:
    # JSON null in an FP tensor is NaN; the trainer's pipelines impute it.
    server = start_server(iris_ct)
    reply = server.client().infer(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, None, 1.4, 0.2]}]}
    )
    assert reply.status == 200, reply.body
    assert all(math.isfinite(p) for p in _outputs(reply)["predict_proba"]["data"])


def test_keep_alive_serves_many_requests_on_one_connection(
    iris_server: RunningServer, iris: Artifact
) -> None:
    c: Client = iris_server.client()
    for i in range(20):
        assert c.infer(v2_matrix(iris.X.to_numpy()[i : i + 1])).status == 200
    assert c._conn is not None  # never closed by the server


def test_concurrent_clients_get_their_own_answers(iris_server: RunningServer, iris: Artifact) -> None:
    # Merged batches are split back correctly: every answer matches its own request.
    import threading

    data = iris.X.to_numpy()
    expected = iris.pipeline.predict(iris.X).tolist()
    failures: list[str] = []

    def client(worker: int) -> None:
        c = Client(iris_server.port)
        for k in range(25):
            i = (worker * 25 + k) % len(data)
            rows = data[i : i + 1 + k % 3]  # 1 to 3 rows
            reply = c.infer(v2_matrix(rows, id=f"{worker}-{k}"))
            got = reply.json
            if got["id"] != f"{worker}-{k}" or got["outputs"][0]["data"] != expected[i : i + len(rows)]:
                failures.append(f"{worker}-{k}: {got}")
        c.close()

    threads = [threading.Thread(target=client, args=(w,)) for w in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == []
