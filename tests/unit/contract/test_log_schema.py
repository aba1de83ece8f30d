"""One log schema for the three programs (issue #16): the real output of the operator, the
trainer and the server, each started as its own process, parsed with one JSON schema."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema

from mlops_contract.logs import LOG_SCHEMA


def _lines(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "the program logged nothing"
    docs = [json.loads(line) for line in lines]  # every line is JSON, nothing else
    for doc in docs:
        jsonschema.validate(doc, LOG_SCHEMA)
    return docs


def test_the_trainer_logs_the_schema(tmp_path: Path) -> None:
    config = {
        "name": "demo-1",
        "namespace": "default",
        "trainerImage": "trainer:test",
        "spec": {
            "model": "demo",
            "data": {"source": {"uri": "builtin:iris"}},
            "estimator": {"class": "LogisticRegression", "params": {"max_iter": 200}},
        },
    }
    done = subprocess.run(
        [sys.executable, "-m", "mlops_trainer", "train"],
        env={
            **os.environ,
            "MLOPS_CONFIG": json.dumps(config),
            "MLOPS_PVC_ROOT": str(tmp_path),
            "MLOPS_RESULT_PATH": str(tmp_path / "result"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    docs = _lines(done.stderr)
    assert {d["logger"] for d in docs} == {"mlops_trainer"}
    assert any(d.get("phase") == "fit" and isinstance(d.get("seconds"), float) for d in docs)


def test_the_server_logs_the_schema(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlops_server", "--artifact", str(tmp_path / "missing"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    docs = _lines(done.stderr)
    assert all(d["logger"].startswith("mlops_server") for d in docs)
    assert any(d["level"] == "error" and d["message"] == "Refused to serve the artifact" for d in docs)


def test_the_operator_logs_the_schema(tmp_path: Path) -> None:
    """The operator and kopf, against an API server that is not there (connection refused on loopback)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_operator", "--standalone", "-n", "default", "--liveness", ""],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    # Stop it only once it has failed to reach the API server (a SIGINT during start-up, on a
    # loaded machine, would interrupt the imports before logging is set up).
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        seen.append(line)
        if "127.0.0.1:9" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=30)
    stderr = "".join(seen) + rest
    docs = _lines(stderr)
    loggers = {d["logger"] for d in docs}
    assert "mlops_operator" in loggers and any(name.startswith("kopf") for name in loggers), loggers
    assert any(d["level"] == "error" and "127.0.0.1:9" in d["message"] for d in docs)
