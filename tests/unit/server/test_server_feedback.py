"""Labelled feedback: rolling accuracy / RMSE against hand-computed values, errors, eviction, the feedback log."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import orjson
import pytest
from server_factories import Artifact, RunningServer, StartServer, metric, v2_matrix


def test_classification_accuracy(iris_server: RunningServer, iris: Artifact) -> None:
    c = iris_server.client()
    rows = iris.X.to_numpy()[[0, 50, 100, 149]]
    reply = c.infer(v2_matrix(rows, id="batch-1"))
    predicted = reply.json["outputs"][0]["data"]
    labels = [*predicted[:3], (predicted[3] + 1) % 3]  # three right, one wrong

    answer = c.post("/v2/models/iris/feedback", {"id": "batch-1", "labels": labels})
    assert answer.status == 200, answer.body
    assert answer.json == {"id": "batch-1", "model": "iris", "version": "v1", "samples": 4, "accuracy": 0.75}

    one = c.infer(v2_matrix(rows[:1], id="single"))
    wrong_label = (one.json["outputs"][0]["data"][0] + 1) % 3
    answer = c.post("/v2/models/iris/feedback", {"id": "single", "label": str(wrong_label)})  # "2" == 2
    assert answer.json["samples"] == 5
    assert answer.json["accuracy"] == pytest.approx(3 / 5)

    samples = c.metrics()
    assert metric(samples, "mlops_feedback_samples", model="iris", version="v1") == 5
    assert metric(samples, "mlops_feedback_accuracy", model="iris", version="v1") == pytest.approx(0.6)


def test_labelled_rows_are_counted_per_pod(start_server: StartServer, iris: Artifact, log_dir: Path) -> None:
    """The counters the split canary compares its tracks with (issue #22): this pod's labelled
    rows by outcome, from zero before any feedback, once per labelled request (a repeat is
    refused), and nothing for labels relayed to a replica that did not serve the request."""
    serving = start_server(iris, prediction_log=str(log_dir))
    other = start_server(iris, prediction_log=str(log_dir))
    c = serving.client()
    before = c.metrics()
    for outcome in ("correct", "incorrect"):
        assert metric(before, "mlops_feedback_rows_total", model="iris", version="v1", outcome=outcome) == 0
    rows = iris.X.to_numpy()[[0, 50, 100]]
    predicted = c.infer(v2_matrix(rows, id="count-1")).json["outputs"][0]["data"]
    labels = [predicted[0], (predicted[1] + 1) % 3, (predicted[2] + 1) % 3]  # one right, two wrong
    assert c.post("/v2/models/iris/feedback", {"id": "count-1", "labels": labels}).status == 200
    assert c.post("/v2/models/iris/feedback", {"id": "count-1", "labels": labels}).status == 409
    assert other.client().post("/v2/models/iris/feedback", {"id": "count-1", "labels": labels}).status == 202

    after = c.metrics()
    assert metric(after, "mlops_feedback_rows_total", outcome="correct") == 1
    assert metric(after, "mlops_feedback_rows_total", outcome="incorrect") == 2
    relayed = other.client().metrics()
    assert metric(relayed, "mlops_feedback_rows_total", outcome="correct") == 0
    assert metric(relayed, "mlops_feedback_rows_total", outcome="incorrect") == 0
    assert "mlops_feedback_abs_error_total" not in "".join(after)


def test_regression_errors_are_counted(start_server: StartServer, diabetes: Artifact) -> None:
    server = start_server(diabetes)
    c = server.client()
    assert metric(c.metrics(), "mlops_feedback_rows_total", outcome="scored") == 0
    predicted = c.infer(v2_matrix(diabetes.X.to_numpy()[:3], id="e1"), model="diabetes").json["outputs"][0][
        "data"
    ]
    labels = [predicted[0] + 1.5, predicted[1] - 2.0, predicted[2]]  # absolute errors 1.5, 2, 0
    assert c.post("/v2/models/diabetes/feedback", {"id": "e1", "labels": labels}).status == 200
    samples = c.metrics()
    assert metric(samples, "mlops_feedback_rows_total", outcome="scored") == 3
    assert metric(samples, "mlops_feedback_abs_error_total") == pytest.approx(3.5)
    assert metric(samples, "mlops_feedback_squared_error_total") == pytest.approx(1.5**2 + 4.0)
    assert "incorrect" not in "".join(k for k in samples if k.startswith("mlops_feedback_rows_total"))


def test_accuracy_is_nan_before_any_feedback(iris_server: RunningServer) -> None:
    samples = iris_server.client().metrics()
    assert math.isnan(metric(samples, "mlops_feedback_accuracy"))
    assert metric(samples, "mlops_feedback_samples") == 0


def test_regression_rmse(start_server: StartServer, diabetes: Artifact) -> None:
    server = start_server(diabetes)
    c = server.client()
    reply = c.infer(v2_matrix(diabetes.X.to_numpy()[:3], id="r1"), model="diabetes")
    predicted = reply.json["outputs"][0]["data"]
    labels = [predicted[0] + 1, predicted[1] - 1, predicted[2] + 2]  # squared errors 1, 1, 4
    answer = c.post("/v2/models/diabetes/feedback", {"id": "r1", "labels": labels})
    assert answer.status == 200, answer.body
    assert answer.json["samples"] == 3
    assert answer.json["rmse"] == pytest.approx(math.sqrt(6 / 3))
    assert metric(c.metrics(), "mlops_feedback_rmse") == pytest.approx(math.sqrt(2))


def test_rolling_window_keeps_the_last_rows(start_server: StartServer, iris: Artifact) -> None:
    server = start_server(iris, drift_window=4)
    c = server.client()
    rows = iris.X.to_numpy()[[0, 50, 100]]
    for i in range(2):
        predicted = c.infer(v2_matrix(rows, id=f"w{i}")).json["outputs"][0]["data"]
        # First request: all wrong; second: all right. The window (4) holds 1 wrong + 3 right.
        labels = [(p + 1) % 3 for p in predicted] if i == 0 else predicted
        answer = c.post("/v2/models/iris/feedback", {"id": f"w{i}", "labels": labels}).json
    assert answer["samples"] == 4
    assert answer["accuracy"] == pytest.approx(3 / 4)


def test_feedback_errors(start_server: StartServer, iris: Artifact) -> None:
    server = start_server(iris, feedback_capacity=2)
    c = server.client()
    for i in range(3):
        c.infer(v2_matrix(iris.X.to_numpy()[:2], id=f"r{i}"))
    evicted = c.post("/v2/models/iris/feedback", {"id": "r0", "labels": [0, 0]})
    assert evicted.status == 404
    assert "unknown request id 'r0'" in evicted.error
    assert c.post("/v2/models/iris/feedback", {"id": "nope", "labels": [0]}).status == 404

    assert c.post("/v2/models/iris/feedback", {"id": "r1", "labels": [0, 0]}).status == 200
    again = c.post("/v2/models/iris/feedback", {"id": "r1", "labels": [0, 0]})
    assert again.status == 409
    assert "already labelled" in again.error

    cases = [
        ({"id": "r2", "labels": [0]}, "had 2 rows; got 1 labels"),
        ({"id": "r2", "label": 0}, "had 2 rows; got 1 labels"),
        ({"id": "r2"}, "needs 'labels'"),
        ({"labels": [0, 0]}, "needs the 'id'"),
        ({"id": "r2", "labels": 0}, "labels must be an array"),
        ({"id": "r2", "labels": [[0], 0]}, "is not a class"),
        ([1], "must be a JSON object"),
    ]
    for body, message in cases:
        reply = c.post("/v2/models/iris/feedback", body)
        assert reply.status == 400, (body, reply.body)
        assert message in reply.error
    assert c.request("POST", "/v2/models/iris/feedback", raw=b"{").status == 400
    # Nothing above consumed r2: it can still be labelled.
    assert c.post("/v2/models/iris/feedback", {"id": "r2", "labels": [1, 1]}).status == 200


def test_regression_label_must_be_a_number(start_server: StartServer, diabetes: Artifact) -> None:
    server = start_server(diabetes)
    c = server.client()
    c.infer(v2_matrix(diabetes.X.to_numpy()[:1], id="x"), model="diabetes")
    reply = c.post("/v2/models/diabetes/feedback", {"id": "x", "label": "high"})
    assert reply.status == 400
    assert "not a finite number" in reply.error


def test_v1_answers_carry_an_id_for_feedback(iris_server: RunningServer, iris: Artifact) -> None:
    c = iris_server.client()
    reply = c.post("/v1/models/iris:predict", {"instances": iris.X.to_numpy()[:1].tolist()}).json
    assert (
        c.post("/v2/models/iris/feedback", {"id": reply["id"], "label": reply["predictions"][0]}).json[
            "accuracy"
        ]
        == 1.0
    )


def test_feedback_log_lines(start_server: StartServer, iris: Artifact, log_dir: Path) -> None:
    server = start_server(iris, prediction_log=str(log_dir))
    c = server.client()
    rows = iris.X.to_numpy()[[0, 100]]
    predicted = c.infer(v2_matrix(rows, id="f1")).json["outputs"][0]["data"]
    c.post("/v2/models/iris/feedback", {"id": "f1", "labels": [0, 2]})
    server.stop()  # flushes
    path = log_dir / f"feedback-{socket.gethostname()}.jsonl"
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(line["id"], line["version"], line["prediction"], line["label"]) for line in lines] == [
        ("f1", "v1", predicted[0], 0),
        ("f1", "v1", predicted[1], 2),
    ]
    assert lines[0]["features"] == dict(zip(iris.names, rows[0].tolist(), strict=True))
    assert lines[0]["time"].endswith("Z")


def test_feedback_memory_is_bounded_in_bytes(start_server: StartServer, iris: Artifact) -> None:
    """A 100-row request fills the byte budget alone and evicts the small ones before it."""
    rows = iris.X.to_numpy()
    server = start_server(iris, feedback_max_bytes=100 * 5 * 8)  # 4 features + a label per row
    c = server.client()
    c.infer(v2_matrix(rows[:2], id="small"))
    c.infer(v2_matrix(rows[:100], id="large"))
    assert c.post("/v2/models/iris/feedback", {"id": "small", "labels": [0, 0]}).status == 404
    assert c.post("/v2/models/iris/feedback", {"id": "large", "labels": [0] * 100}).status == 200


def test_feedback_through_another_replica_is_kept_for_retraining(
    start_server: StartServer, iris: Artifact, log_dir: Path
) -> None:
    """Two replicas share the log directory; a label reaching the one that did not serve the
    request is accepted (202, not in its accuracy) and the trainer joins it with the serving
    replica's prediction line."""
    from mlops_trainer.data import read_path

    serving = start_server(iris, prediction_log=str(log_dir))
    other = start_server(iris, prediction_log=str(log_dir))
    rows = iris.X.to_numpy()[[0, 100]]
    serving.client().infer(v2_matrix(rows, id="across-1"))

    answer = other.client().post("/v2/models/iris/feedback", {"id": "across-1", "labels": [0, 2]})
    assert answer.status == 202, answer.body
    assert answer.json["counted"] is False and answer.json["id"] == "across-1"
    assert metric(other.client().metrics(), "mlops_feedback_samples") == 0
    bad = other.client().post("/v2/models/iris/feedback", {"id": "across-2", "labels": [{"x": 1}]})
    assert bad.status == 400
    serving.stop()
    other.stop()

    table = read_path(log_dir, "jsonl", "target", "pvc://artifacts/predictions")
    assert table["target"].tolist() == [0, 2]
    assert table[iris.names].to_numpy().tolist() == rows.tolist()


def test_without_a_prediction_log_an_unknown_id_is_still_404(
    start_server: StartServer, iris: Artifact
) -> None:
    answer = start_server(iris).client().post("/v2/models/iris/feedback", {"id": "nobody", "labels": [0]})
    assert answer.status == 404
