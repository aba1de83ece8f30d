"""/metrics (the names are a contract with the operator), drift, batching and the prediction log."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from server_factories import Artifact, Client, RunningServer, StartServer, metric, v2_matrix

from mlops_contract import stats


def test_metric_names_and_labels(iris_server: RunningServer, iris: Artifact) -> None:
    c = iris_server.client()
    assert c.infer(v2_matrix(iris.X.to_numpy()[[0, 1, 100]])).status == 200
    assert c.post("/v1/models/iris:predict", {"instances": iris.X.to_numpy()[:1].tolist()}).status == 200
    assert c.infer({"inputs": []}).status == 400
    reply = c.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    s = c.metrics()
    labels = {"model": "iris", "version": "v1"}
    assert metric(s, "mlops_requests_total", protocol="v2", code="200", **labels) == 1
    assert metric(s, "mlops_requests_total", protocol="v1", code="200", **labels) == 1
    assert metric(s, "mlops_requests_total", protocol="v2", code="400", **labels) == 1
    assert metric(s, "mlops_request_duration_seconds_count", **labels) == 3
    assert metric(s, "mlops_request_duration_seconds_bucket", le="0.0005", **labels) >= 0
    assert metric(s, "mlops_request_duration_seconds_bucket", le="2.5", **labels) == 3
    assert metric(s, "mlops_predictions_total", **{"class": "0"}, **labels) == 3
    assert metric(s, "mlops_predictions_total", **{"class": "2"}, **labels) == 1
    assert metric(s, "mlops_batch_size_sum", **labels) == 4
    for name in iris.names:
        assert metric(s, "mlops_drift_psi", feature=name, **labels) >= 0
    for name in ("mlops_prediction_drift_psi", "mlops_drift_score", "mlops_feedback_samples"):
        assert metric(s, name, **labels) >= 0
    assert metric(s, "mlops_drift_window_rows", **labels) == 4
    assert np.isnan(metric(s, "mlops_feedback_accuracy", **labels))
    assert metric(s, "mlops_model_info", sha256=iris.sha256, **labels) == 1


def test_regression_prediction_histogram(start_server: StartServer, diabetes: Artifact) -> None:
    server = start_server(diabetes)
    c = server.client()
    c.infer(v2_matrix(diabetes.X.to_numpy()[:10]), model="diabetes")
    s = c.metrics()
    assert metric(s, "mlops_prediction_value_count", model="diabetes") == 10
    assert metric(s, "mlops_prediction_value_sum", model="diabetes") == pytest.approx(
        float(diabetes.pipeline.predict(diabetes.X.iloc[:10]).sum())
    )
    assert not any(k.startswith("mlops_predictions_total") for k in s)
    assert "mlops_feedback_rmse" in "".join(s)


def _drift(c: Client, names: list[str]) -> tuple[dict[str, float], float, float, float]:
    s = c.metrics()
    features = {n: metric(s, "mlops_drift_psi", feature=n) for n in names}
    return (
        features,
        metric(s, "mlops_drift_score"),
        metric(s, "mlops_prediction_drift_psi"),
        metric(s, "mlops_drift_window_rows"),
    )


def test_drift_is_zero_in_distribution_and_large_when_shifted(
    start_server: StartServer, iris: Artifact
) -> None:
    server = start_server(iris, drift_window=150)
    c = server.client()
    data = iris.X.to_numpy()

    assert c.infer(v2_matrix(data)).status == 200  # the training data itself
    features, score, prediction, rows = _drift(c, iris.names)
    assert rows == 150
    assert max(features.values()) == pytest.approx(0.0, abs=1e-9)
    assert score == pytest.approx(0.0, abs=1e-9)
    assert prediction == pytest.approx(0.0, abs=1e-9)

    shifted = data + np.array([3.0, 2.0, 4.0, 2.0])
    for start in range(0, 150, 50):  # several requests; the window slides over the old rows
        c.infer(v2_matrix(shifted[start : start + 50]))
    features, score, prediction, rows = _drift(c, iris.names)
    assert rows == 150
    assert min(features.values()) > 1.0
    assert score == max(features.values())
    assert prediction > 0.25  # almost everything is now predicted as one class

    c.infer(v2_matrix(data[::2]))  # half the window back in distribution
    c.infer(v2_matrix(data[1::2]))
    features, score, _, _ = _drift(c, iris.names)
    assert score == pytest.approx(0.0, abs=1e-9)


def test_drift_of_a_representative_sample_stays_small(start_server: StartServer, iris: Artifact) -> None:
    server = start_server(iris)
    c = server.client()
    sample = np.random.default_rng(7).choice(len(iris.X), size=120, replace=False)
    c.infer(v2_matrix(iris.X.to_numpy()[sample]))
    _, score, prediction, rows = _drift(c, iris.names)
    assert rows == 120
    assert score < 0.1  # "stable" by the usual PSI rule of thumb
    assert prediction < 0.1


def test_concurrent_requests_share_one_model_call(iris_server: RunningServer, iris: Artifact) -> None:
    server = iris_server.server
    batcher = server.app.batcher
    assert batcher is not None
    gate = threading.Event()
    server.executor.submit(gate.wait)  # occupy the model thread: batches queue behind it
    n = 8
    rows = iris.X.to_numpy()
    replies: list[int] = []

    def send(i: int) -> None:
        client = Client(iris_server.port)
        replies.append(client.infer(v2_matrix(rows[i : i + 1])).status)
        client.close()

    first = threading.Thread(target=send, args=(0,))
    first.start()
    _wait(lambda: batcher.batches == 1)  # request 0 is a batch of its own, waiting for the thread
    others = [threading.Thread(target=send, args=(i,)) for i in range(1, n)]
    for t in others:
        t.start()
    _wait(lambda: batcher.queued == n - 1)  # the rest arrived while "computing"
    gate.set()
    for t in [first, *others]:
        t.join(10)
    assert replies == [200] * n
    s = iris_server.client().metrics()
    assert metric(s, "mlops_batch_size_count") == 2  # 8 requests, 2 model calls
    assert metric(s, "mlops_batch_size_sum") == n
    assert metric(s, "mlops_batch_size_bucket", le="1.0") == 1
    assert metric(s, "mlops_batch_size_bucket", le="8.0") == 2  # the second call took the other 7


def _wait(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def test_prediction_log(start_server: StartServer, iris: Artifact, log_dir: Path) -> None:
    server = start_server(iris, prediction_log=str(log_dir), model_version="iris-v3")
    c = server.client()
    rows = iris.X.to_numpy()[[0, 120]]
    reply = c.infer(v2_matrix(rows, id="p1")).json
    c.post("/v1/models/iris:predict", {"instances": rows[:1].tolist()})
    server.stop()
    lines = [
        orjson.loads(x)
        for x in (log_dir / f"predictions-{socket.gethostname()}.jsonl").read_bytes().splitlines()
    ]
    assert len(lines) == 2
    first = lines[0]
    assert set(first) == {"id", "time", "model", "version", "rows", "predictions"}
    assert (first["id"], first["model"], first["version"]) == ("p1", "iris", "iris-v3")
    assert first["rows"] == [dict(zip(iris.names, r.tolist(), strict=True)) for r in rows]
    assert first["predictions"] == reply["outputs"][0]["data"]


def test_prediction_log_sampling(start_server: StartServer, iris: Artifact, log_dir: Path) -> None:
    server = start_server(iris, prediction_log=str(log_dir), log_sample_rate=0.0)
    c = server.client()
    for i in range(5):
        c.infer(v2_matrix(iris.X.to_numpy()[i : i + 1], id=f"s{i}"))
    c.post("/v2/models/iris/feedback", {"id": "s0", "label": 0})  # feedback is never sampled away
    server.stop()
    assert not (log_dir / f"predictions-{socket.gethostname()}.jsonl").exists()
    assert len((log_dir / f"feedback-{socket.gethostname()}.jsonl").read_bytes().splitlines()) == 1


def test_prediction_log_is_flushed_while_running(
    start_server: StartServer, iris: Artifact, log_dir: Path
) -> None:
    server = start_server(iris, prediction_log=str(log_dir))
    server.client().infer(v2_matrix(iris.X.to_numpy()[:1]))
    path = log_dir / f"predictions-{socket.gethostname()}.jsonl"
    _wait(lambda: path.exists() and path.stat().st_size > 0, timeout=5)  # the 1 s flusher


def test_estimated_accuracy_before_labels(start_server: StartServer, iris: Artifact) -> None:
    """Issue #22: the server turns its window's top-class probabilities and the version's
    calibration table into the accuracy to expect, before any label; rows the model is unsure
    about (between two classes) lower it."""
    server = start_server(iris, drift_window=150)
    c = server.client()
    labels = {"model": "iris", "version": "v1"}
    assert np.isnan(metric(c.metrics(), "mlops_estimated_accuracy", **labels))

    data = iris.X.to_numpy()
    assert c.infer(v2_matrix(data)).status == 200
    table = stats.Calibration.from_dict(iris.metadata["calibration"])
    assert table is not None
    counts = [0] * 10
    for p in iris.pipeline.predict_proba(iris.X).max(axis=1):
        counts[stats.confidence_bin(float(p))] += 1
    in_distribution = metric(c.metrics(), "mlops_estimated_accuracy", **labels)
    assert in_distribution == pytest.approx(stats.estimate_accuracy(table, counts), abs=1e-12)
    assert in_distribution > 0.9

    # Rows half-way between versicolor and virginica: the model hesitates, the estimate drops.
    y = iris.y.to_numpy()
    middle = (data[y == 1].mean(axis=0) + data[y == 2].mean(axis=0)) / 2
    hesitant = middle + np.random.default_rng(3).normal(0.0, 0.05, size=(150, 4))
    assert c.infer(v2_matrix(hesitant)).status == 200
    shifted = metric(c.metrics(), "mlops_estimated_accuracy", **labels)
    assert shifted < in_distribution - 0.15


def test_no_estimate_for_a_regressor(start_server: StartServer, diabetes: Artifact) -> None:
    server = start_server(diabetes)
    c = server.client()
    c.infer(v2_matrix(diabetes.X.to_numpy()[:10]), model="diabetes")
    assert not any(k.startswith("mlops_estimated_accuracy") for k in c.metrics())
