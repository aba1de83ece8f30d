"""Factories for the server's unit tests: small artifacts and an in-process server with a client.

Artifacts are real: a scikit-learn Pipeline fitted on data scikit-learn ships (or on a small
seeded frame), written with `mlops_contract.artifact.write_artifact`, with the signature and
drift reference the trainer writes.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from mlops_contract import artifact, drift, stats
from mlops_server.config import Settings
from mlops_server.lifecycle import Server

MODEL = "iris"


@dataclass
class Artifact:
    directory: Path
    sha256: str
    pipeline: Any
    X: pd.DataFrame
    y: pd.Series
    metadata: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return [str(c) for c in self.X.columns]


def metadata_for(model: str, pipeline: Any, X: pd.DataFrame, y: pd.Series, task: str) -> dict[str, Any]:
    features = {}
    for c in X.columns:
        if pd.api.types.is_numeric_dtype(X[c]):
            features[str(c)] = drift.numeric_reference(X[c])
        else:
            features[str(c)] = drift.categorical_reference(X[c])
    predicted = pipeline.predict(X)
    signature: dict[str, Any] = {
        "task": task,
        "features": [{"name": str(c), "dtype": str(X[c].dtype)} for c in X.columns],
        "target": "target",
    }
    calibration = None
    if task == "classification":
        signature["classes"] = np.asarray(pipeline.classes_).tolist()
        if hasattr(pipeline, "predict_proba"):  # as the trainer does, on its held-out rows
            top = np.asarray(pipeline.predict_proba(X)).max(axis=1)
            calibration = stats.fit_calibration(top.tolist(), (predicted == np.asarray(y)).tolist()).to_dict()
    return {
        "calibration": calibration,
        "model": model,
        "signature": signature,
        "metrics": {},
        "params": {},
        "reference": {
            "features": features,
            "prediction": drift.categorical_reference(predicted)
            if task == "classification"
            else drift.numeric_reference(predicted),
        },
    }


def write_model(
    directory: Path, model: str, pipeline: Any, X: pd.DataFrame, y: pd.Series, task: str
) -> Artifact:
    meta = artifact.write_artifact(directory, pipeline, metadata_for(model, pipeline, X, y, task))
    return Artifact(directory, meta["sha256"], pipeline, X, y, meta)


def iris_logistic(directory: Path, column_transformer: bool = False) -> Artifact:
    """Iris, StandardScaler + LogisticRegression; optionally behind a ColumnTransformer (the trainer's layout)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True, as_frame=True)
    if column_transformer:
        prepare: Any = ColumnTransformer(
            [
                (
                    "numeric",
                    Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                    list(X.columns),
                )
            ],
            remainder="drop",
            sparse_threshold=0.0,
            verbose_feature_names_out=False,
        )
    else:
        prepare = StandardScaler()
    pipeline = Pipeline([("prepare", prepare), ("estimator", LogisticRegression(max_iter=1000))]).fit(X, y)
    return write_model(directory, MODEL, pipeline, X, y, "classification")


def iris_forest(directory: Path, trees: int = 100) -> Artifact:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    X, y = load_iris(return_X_y=True, as_frame=True)
    pipeline = Pipeline([("estimator", RandomForestClassifier(n_estimators=trees, random_state=0))]).fit(X, y)
    return write_model(directory, MODEL, pipeline, X, y, "classification")


def diabetes_ridge(directory: Path) -> Artifact:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    pipeline = Pipeline([("scale", StandardScaler()), ("estimator", Ridge(alpha=1.0))]).fit(X, y)
    return write_model(directory, "diabetes", pipeline, X, y, "regression")


def mixed_frame(rows: int = 200) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    color = rng.choice(["red", "green", "blue"], size=rows)
    size = rng.integers(1, 5, size=rows)
    weight = rng.normal(10.0, 2.0, size=rows)
    X = pd.DataFrame(
        {"weight": weight, "size": size.astype("int64"), "color": pd.Series(color, dtype=object)}
    )
    y = pd.Series(np.where((color == "red") | (weight > 11), "yes", "no"), name="target")
    return X, y


def mixed_logistic(directory: Path) -> Artifact:
    """Numeric, integer and text features; string classes: the DataFrame (object frame) path."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = mixed_frame()
    prepare = ColumnTransformer(
        [
            ("numeric", StandardScaler(), ["weight", "size"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["color"]),
        ],
        sparse_threshold=0.0,
    )
    pipeline = Pipeline([("prepare", prepare), ("estimator", LogisticRegression(max_iter=1000))]).fit(X, y)
    return write_model(directory, "mixed", pipeline, X, y, "classification")


# ---------------------------------------------------------------------------------------------
# The server as a real process

ROOT = Path(__file__).resolve().parents[3]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "images/server")),
    "PYTHONWARNINGS": "error",
}


def server_process(*args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """`python -m mlops_server` on an ephemeral loopback port; its JSON log on stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "mlops_server", "--host", "127.0.0.1", "--port", "0", *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **popen,
    )


class StderrLog:
    """Collects a process's JSON log lines on a thread, so tests can wait for one."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.other: list[bytes] = []  # lines that are not JSON (the log schema allows none)
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            if raw.startswith(b"{"):
                self.lines.put(json.loads(raw))
            elif raw.strip():
                self.other.append(raw)

    def wait_for(self, message: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(line)
            if line["message"] == message:
                return line


# ---------------------------------------------------------------------------------------------
# An in-process server on an ephemeral port, and a small HTTP client


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error(self) -> str:
        doc = self.json
        assert set(doc) >= {"error"}, doc
        return str(doc["error"])


@dataclass
class Client:
    port: int
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Reply:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = (
            raw
            if raw is not None
            else (None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
        )
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        self._conn.request(method, path, body=data, headers=hdrs)
        response = self._conn.getresponse()
        payload = response.read()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
        if response.will_close:
            self.close()
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def infer(self, body: Any, model: str = MODEL) -> Reply:
        return self.post(f"/v2/models/{model}/infer", body)

    def metrics(self) -> dict[str, float]:
        """The exposition as {'name{labels}': value} (labels as printed)."""
        text = self.get("/metrics").body.decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RunningServer:
    """`lifecycle.Server` on its own event loop thread, as the real process runs it (minus signals)."""

    def __init__(self, settings: Settings) -> None:
        self.server = Server(settings)
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._main, name="test-server", daemon=True)
        self._clients: list[Client] = []

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            self.exit_code = loop.run_until_complete(self._serve())
        except BaseException as e:
            self.error = e
        finally:
            self._listening.set()
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _serve(self) -> int:
        await self.server.start()
        self._listening.set()
        return await self.server.run()

    def start(self, wait_ready: bool = True) -> RunningServer:
        self._thread.start()
        assert self._listening.wait(10), "server did not start listening"
        if self.error is not None:
            raise self.error
        if wait_ready:
            deadline = time.monotonic() + 20
            while not self.server.app.ready:
                assert self.exit_code is None, f"server exited with {self.exit_code}"
                assert time.monotonic() < deadline, "model did not load"
                time.sleep(0.005)
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def client(self) -> Client:
        client = Client(self.port)
        self._clients.append(client)
        return client

    def stop(self) -> int | None:
        for client in self._clients:
            client.close()
        self.server.stop()
        self._thread.join(15)
        assert not self._thread.is_alive(), "server did not stop"
        if self.error is not None:
            raise self.error
        return self.exit_code


StartServer = Callable[..., RunningServer]


def settings_for(art: Artifact, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "artifact": str(art.directory),
        "host": "127.0.0.1",
        "port": 0,
        "model_version": "v1",
    }
    values.update(overrides)
    return Settings(**values)


def v2_matrix(rows: Any, datatype: str = "FP64", name: str = "input-0", **extra: Any) -> dict[str, Any]:
    arr = np.asarray(rows, dtype=float)
    return {
        "inputs": [
            {"name": name, "shape": list(arr.shape), "datatype": datatype, "data": arr.ravel().tolist()}
        ],
        **extra,
    }


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels` (KeyError if none, or several)."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    found = [
        value
        for key, value in samples.items()
        if key.partition("{")[0] == name and all(w in key.partition("{")[2] for w in wanted)
    ]
    if len(found) != 1:
        raise KeyError(f"{name} {labels}: {len(found)} samples")
    return found[0]
