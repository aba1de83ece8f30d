"""`mlops-trainer ship-logs`: the prediction log moved to S3 in immutable per-pod windows, read
back by the trainer with every labelled row once (issue #17), against the real S3 server.

Two replicas' logs are written by the server's own PredictionLog class while their sidecars
ship windows (no lock shared between writer and shipper: only the rename), then the prefix is
read the way a retraining run reads its extra source."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from trainer_factories import Trainer

from mlops_contract.api.trainingjob import DataSource
from mlops_server.predlog import PredictionLog
from mlops_trainer.data import read_source
from mlops_trainer.shiplogs import ship_once
from s3kit import S3Server

FEATURES = ["a", "b"]


def replica(directory: Path, host: str, requests: int, offset: int, stop: threading.Event) -> None:
    """A serving pod: feedback for its own requests and labels relayed for another pod's."""
    log = PredictionLog(directory, "iris", "iris-v1", FEATURES, hostname=host)
    for i in range(requests):
        frame = np.array([[float(offset + i), 1.0]])
        log.predictions(f"{host}-{i}", frame, np.array([0]))
        if i % 2 == 0:
            log.feedback(f"{host}-{i}", frame, np.array([0]), [i % 3])
        if i % 10 == 0:
            log.flush()
    log.flush()
    stop.set()


def test_two_replicas_ship_windows_and_every_labelled_row_is_read_once(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    to = f"s3://{s3_bucket}/predictions/ml/iris"
    dirs = {host: tmp_path / host for host in ("pod-a", "pod-b")}
    done = {host: threading.Event() for host in dirs}
    writers = [
        threading.Thread(target=replica, args=(dirs[h], h, 400, 10_000 * n, done[h]))
        for n, h in enumerate(dirs)
    ]
    for w in writers:
        w.start()
    windows = 0
    while not all(d.is_set() for d in done.values()) or windows < 2:
        for host, directory in dirs.items():
            directory.mkdir(exist_ok=True)
            windows += ship_once(directory, to, host, s3_server.env, settle=0.05) > 0
        time.sleep(0.01)
    for w in writers:
        w.join()
    for host, directory in dirs.items():  # the last window (SIGTERM's)
        ship_once(directory, to, host, s3_server.env, settle=0.05)
        assert not list((directory / ".outbox").iterdir())

    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert len(keys) == len(set(keys)) >= 4  # several windows, each its own object
    assert {k.split("/")[3] for k in keys} == {"pod-a", "pod-b"}  # <prefix>/<host>/<kind>-<host>-<window>
    assert all(k.split("/")[4].startswith(("predictions-", "feedback-")) for k in keys)

    table = read_source(DataSource(uri=to, format="jsonl"), "y", tmp_path / "scratch", s3_server.env)
    # 200 labelled rows per replica (every other request), each exactly once.
    assert len(table) == 400
    assert table["a"].is_unique


def test_sigterm_ships_the_last_window_and_exits_0(
    trainer: Trainer, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    directory = tmp_path / "log"
    host = socket.gethostname()  # the server and its sidecar share the pod's
    log = PredictionLog(directory, "iris", "iris-v1", FEATURES, hostname=host)
    log.feedback("r1", np.array([[1.0, 2.0]]), np.array([0]), [1])
    log.flush()
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()

    run = trainer.run(
        "ship-logs", None, "--dir", str(directory), "--to", f"s3://{s3_bucket}/logs", "--interval", "30",
        **s3_server.env,
    )  # fmt: skip

    assert (run.code, run.result["ok"], run.result["files"]) == (0, True, 1)
    [key] = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert key.startswith(f"logs/{host}/feedback-{host}-")
    assert not list((directory / ".outbox").iterdir())


@pytest.mark.parametrize(
    ("to", "interval", "message"),
    [("pvc://logs/x", "5", "s3:// only"), ("s3://b/x", "0", "--interval must be positive")],
)
def test_ship_logs_refuses_bad_arguments(
    trainer: Trainer, tmp_path: Path, to: str, interval: str, message: str
) -> None:
    run = trainer.run("ship-logs", None, "--dir", str(tmp_path), "--to", to, "--interval", interval)
    assert (run.code, run.result["reason"]) == (2, "BadInput") and message in run.result["message"]
