"""Feedback and /metrics on their own port, and the feedback token (issue #19), over real sockets.

A NetworkPolicy tells ports apart, not paths: with --monitoring-port the prediction port
answers neither /metrics nor feedback, and the monitoring port answers nothing but them and the
health checks. With MLOPS_FEEDBACK_TOKEN set, feedback without the bearer token is a 401 and
changes nothing."""

from __future__ import annotations

import pytest
from server_factories import Artifact, Client, RunningServer, StartServer, metric, v2_matrix

from mlops_server.config import parse_settings

FEEDBACK = "/v2/models/iris/feedback"
TOKEN = "s3cret-token-for-feedback"


@pytest.fixture
def split(start_server: StartServer, iris: Artifact) -> RunningServer:
    return start_server(iris, monitoring_port=0)


def monitoring_client(server: RunningServer) -> Client:
    port = server.server.monitoring_port
    assert port is not None and port != server.port
    client = Client(port)
    server._clients.append(client)
    return client


def answered(server: RunningServer, request_id: str, iris: Artifact) -> list[int]:
    reply = server.client().infer(v2_matrix(iris.X.to_numpy()[:2], id=request_id))
    assert reply.status == 200, reply.body
    return list(reply.json["outputs"][0]["data"])


def test_prediction_port_serves_no_metrics_and_no_feedback(split: RunningServer, iris: Artifact) -> None:
    labels = answered(split, "r1", iris)
    predict = split.client()
    for method, path, body in (("GET", "/metrics", None), ("POST", FEEDBACK, {"id": "r1", "labels": labels})):
        reply = predict.request(method, path, body)
        assert reply.status == 404, reply.body
        assert reply.error == f"{path} is served on the monitoring port"
    assert predict.get("/v2/health/ready").status == 200
    assert predict.get("/v2/models/iris").status == 200


def test_monitoring_port_serves_metrics_feedback_and_health_only(
    split: RunningServer, iris: Artifact
) -> None:
    labels = answered(split, "r1", iris)
    monitoring = monitoring_client(split)
    reply = monitoring.post(FEEDBACK, {"id": "r1", "labels": labels})
    assert reply.status == 200, reply.body
    assert reply.json["accuracy"] == 1.0
    assert metric(monitoring.metrics(), "mlops_feedback_samples", model="iris", version="v1") == 2
    assert monitoring.get("/v2/health/live").status == 200
    assert monitoring.get("/v2/health/ready").status == 200
    refused = monitoring.infer(v2_matrix(iris.X.to_numpy()[:1]))
    assert refused.status == 404
    assert refused.error == "/v2/models/iris/infer is served on the prediction port"
    assert monitoring.get("/v2/models/iris").status == 404


def test_one_port_serves_everything_without_a_monitoring_port(
    iris_server: RunningServer, iris: Artifact
) -> None:
    assert iris_server.server.monitoring_port is None
    labels = answered(iris_server, "r1", iris)
    client = iris_server.client()
    assert client.post(FEEDBACK, {"id": "r1", "labels": labels}).status == 200
    assert client.get("/metrics").status == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", ""],
    ids=["none", "wrong", "other-scheme", "longer", "empty-credentials", "empty"],
)
def test_feedback_without_the_token_is_refused_and_counts_nothing(
    start_server: StartServer, iris: Artifact, authorization: str | None
) -> None:
    server = start_server(iris, monitoring_port=0, feedback_token=TOKEN)
    labels = answered(server, "r1", iris)
    monitoring = monitoring_client(server)
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = monitoring.post(FEEDBACK, {"id": "r1", "labels": labels}, headers=headers)
    assert reply.status == 401, reply.body
    assert reply.headers["www-authenticate"] == 'Bearer realm="feedback"'
    assert reply.error == "feedback needs the header Authorization: Bearer <token>"
    assert metric(monitoring.metrics(), "mlops_feedback_samples", model="iris", version="v1") == 0
    # The right token, any case of the scheme, is let through.
    ok = monitoring.post(
        FEEDBACK, {"id": "r1", "labels": labels}, headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert ok.status == 200, ok.body


def test_the_token_comes_from_the_environment_only() -> None:
    settings = parse_settings(
        ["--artifact", "/a", "--monitoring-port", "8081"], {"MLOPS_FEEDBACK_TOKEN": TOKEN}
    )
    assert (settings.monitoring_port, settings.feedback_token) == (8081, TOKEN)
    assert TOKEN not in repr(settings)
    assert parse_settings(["--artifact", "/a"], {"MLOPS_FEEDBACK_TOKEN": ""}).feedback_token is None
    assert parse_settings(["--artifact", "/a"], {}).monitoring_port is None
    assert parse_settings(["--artifact", "/a"], {"MLOPS_MONITORING_PORT": "9000"}).monitoring_port == 9000
    with pytest.raises(SystemExit):
        parse_settings(["--artifact", "/a", "--feedback-token", TOKEN], {})
