"""The server as a process: CLI, refusing bad artifacts (exit code 2), graceful SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from server_factories import ENV, Artifact, StderrLog, server_process

from mlops_contract import artifact


def _log_lines(stderr: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]


def test_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlops_server", "--help"],
        env=ENV,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    for flag in ("--artifact", "--sha256", "--max-batch-delay-ms", "--prediction-log", "MLOPS_PORT"):
        assert flag in done.stdout.decode()


def test_missing_artifact_flag_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlops_server"], env=ENV, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert b"--artifact" in done.stderr


def _copy(art: Artifact, tmp_path: Path) -> Path:
    target = tmp_path / "artifact"
    shutil.copytree(art.directory, target)
    return target


def _corrupt(directory: Path) -> None:
    blob = bytearray((directory / "model.skops").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (directory / "model.skops").write_bytes(bytes(blob))


def _garbage_with_matching_digest(directory: Path) -> None:
    blob = b"this is not a zip file"
    (directory / "model.skops").write_bytes(blob)
    meta = json.loads((directory / "model.json").read_text())
    meta["sha256"] = artifact.sha256_bytes(blob)
    (directory / "model.json").write_text(json.dumps(meta))


def _untrusted(directory: Path) -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    meta = json.loads((directory / "model.json").read_text())
    artifact.write_artifact(directory, Pipeline([("f", FunctionTransformer(func=os.system))]), meta)


REFUSALS = [
    ("expected digest differs", None, ["--sha256", "0" * 64], "sha256 mismatch"),
    ("file corrupted", _corrupt, [], "metadata says"),
    ("not a skops file", _garbage_with_matching_digest, [], "not a valid skops file"),
    ("untrusted type", _untrusted, [], "untrusted types: posix.system"),
]


@pytest.mark.parametrize(
    ("damage", "flags", "message"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS]
)
def test_refuses_to_serve_a_bad_artifact(
    iris: Artifact, tmp_path: Path, damage: Any, flags: list[str], message: str
) -> None:
    directory = _copy(iris, tmp_path)
    if damage is not None:
        damage(directory)
    proc = server_process("--artifact", str(directory), *flags)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr.decode()
    refused = [line for line in _log_lines(stderr) if line["message"] == "Refused to serve the artifact"]
    assert len(refused) == 1, stderr.decode()
    assert message in refused[0]["error"]
    assert refused[0]["level"] == "error"


@pytest.fixture
def process(iris: Artifact, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], StderrLog, Path]]:
    log_dir = tmp_path / "log"
    proc = server_process(
        "--artifact", str(iris.directory), "--sha256", iris.sha256, "--prediction-log", str(log_dir)
    )
    stderr = StderrLog(proc)
    try:
        yield proc, stderr, log_dir
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_sigterm_finishes_the_request_in_flight(
    process: tuple[subprocess.Popen[bytes], StderrLog, Path],
) -> None:
    proc, stderr, log_dir = process
    port = stderr.wait_for("Started listening")["port"]
    loaded = stderr.wait_for("Loaded model")
    assert loaded["sha256"] and loaded["load_seconds"] >= 0
    body = (
        b'{"id":"in-flight","inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}'
    )
    head = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as busy,
        socket.create_connection(("127.0.0.1", port), timeout=10) as idle,
    ):
        idle.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 OK")
        # A complete request with the next one's first bytes behind it: once the first is answered,
        # the server has parsed the second's start, so it is in flight when SIGTERM arrives.
        busy.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n" + head + body[:20])
        assert busy.recv(65536).startswith(b"HTTP/1.1 200 OK")
        proc.send_signal(signal.SIGTERM)
        stderr.wait_for("Draining: readiness is 503 and new connections are refused")
        assert idle.recv(65536) == b""  # the idle keep-alive connection was closed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        busy.sendall(body[20:])
        response = b""
        while chunk := busy.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in response
    assert orjson.loads(response.partition(b"\r\n\r\n")[2])["id"] == "in-flight"
    assert proc.wait(timeout=30) == 0
    stderr.wait_for("Stopped")
    logged = (log_dir / f"predictions-{socket.gethostname()}.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["id"] for line in logged] == ["in-flight"]


def test_sigint_when_idle_exits_zero(process: tuple[subprocess.Popen[bytes], StderrLog, Path]) -> None:
    proc, stderr, _ = process
    stderr.wait_for("Loaded model")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    stderr.wait_for("Stopped")


def test_skip_unused_modules_blocks_only_what_is_not_imported_yet() -> None:
    from mlops_server.__main__ import skip_unused_modules

    meta_path: list[Any] = []
    skip_unused_modules(meta_path, modules={})
    (finder,) = meta_path
    for name in ("pyarrow", "pyarrow.compute"):
        with pytest.raises(ModuleNotFoundError, match="not used by mlops-server"):
            finder.find_spec(name)
    assert finder.find_spec("numpy") is None  # everything else: the next finder decides

    embedding: list[Any] = []
    skip_unused_modules(embedding, modules={"pyarrow": sys})
    assert embedding == []


def test_serves_the_dataframe_path_without_pyarrow(mixed: Artifact) -> None:
    """pyarrow is installed but kept out of the server (issue #10: RSS); text features still work."""
    proc = server_process("--artifact", str(mixed.directory))
    stderr = StderrLog(proc)
    try:
        port = stderr.wait_for("Started listening")["port"]
        stderr.wait_for("Loaded model")
        row = mixed.X.iloc[0]
        body = orjson.dumps(
            {
                "inputs": [
                    {"name": "weight", "shape": [1], "datatype": "FP64", "data": [float(row["weight"])]},
                    {"name": "size", "shape": [1], "datatype": "INT64", "data": [int(row["size"])]},
                    {"name": "color", "shape": [1], "datatype": "BYTES", "data": [str(row["color"])]},
                ]
            }
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                b"POST /v2/models/mixed/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            response = b""
            while chunk := conn.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200 OK"), response
        outputs = orjson.loads(response.partition(b"\r\n\r\n")[2])["outputs"]
        assert outputs[0]["data"] == [str(mixed.pipeline.predict(mixed.X.iloc[:1])[0])]
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libarrow" not in maps
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        proc.stderr.close()


def test_loading_skips_skops_scan_of_every_estimator(iris: Artifact) -> None:
    """skops' default trusted list (every estimator: imports all of scikit-learn) is not built."""
    code = f"""
import sklearn.utils
calls = []
original = sklearn.utils.all_estimators
sklearn.utils.all_estimators = lambda *a, **k: calls.append(1) or original(*a, **k)
patched = sklearn.utils.all_estimators
from mlops_contract import artifact
model, _ = artifact.load_verified({str(iris.directory)!r})
assert calls == [], calls
assert sklearn.utils.all_estimators is patched
assert hasattr(model, "predict_proba")
"""
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()


def _mapped_packages(pid: int) -> set[str]:
    """Which of the heavy packages have a shared library mapped into the process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in ("sklearn", "scipy", "pandas") if f"/{name}/" in maps}


@pytest.mark.parametrize(
    ("runtime", "mapped"), [("auto", set()), ("sklearn", {"sklearn", "scipy", "pandas"})]
)
def test_a_numeric_model_runs_without_scikit_learn_in_the_process(
    iris_ct: Artifact, runtime: str, mapped: set[str]
) -> None:
    # Issue #10 (cold start): the arrays runtime never imports scikit-learn, scipy or pandas.
    proc = server_process(
        "--artifact", str(iris_ct.directory), "--sha256", iris_ct.sha256, "--runtime", runtime
    )
    stderr = StderrLog(proc)
    try:
        loaded = stderr.wait_for("Loaded model", timeout=60)
        assert loaded["runtime"] == ("arrays" if runtime == "auto" else "sklearn")
        assert _mapped_packages(proc.pid) == mapped
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
