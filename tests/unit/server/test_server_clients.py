"""Other people's clients against a real server process on loopback (issue #20).

tritonclient (http and grpc, a test dependency) makes every call it offers: health, metadata,
model config, repository index, statistics, inference with binary and JSON tensors (sync and
async), and the calls one served model has no use for (load/unload, trace and log settings,
shared memory, the stream RPC), which must be refused cleanly while the server keeps serving.
KServe's client (InferenceRESTClient and InferenceGRPCClient) runs from the KServe virtualenv the
serving benchmark uses: kserve 0.21 pins pandas < 3, which the development environment does not
have. Each client runs in a child process (see clients/*.py for why), bounded in time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_factories import MODEL, Artifact, StderrLog, server_process

CLIENTS = Path(__file__).parent / "clients"
ROWS_PREDICTED = [0, 2, 1]
TRITON_UNSUPPORTED = (
    "load_model",
    "unload_model",
    "get_trace_settings",
    "update_trace_settings",
    "get_log_settings",
    "update_log_settings",
    "system_shared_memory_status",
    "register_system_shared_memory",
    "unregister_system_shared_memory",
    "cuda_shared_memory_status",
    "register_cuda_shared_memory",
    "unregister_cuda_shared_memory",
)


@pytest.fixture(scope="module")
def ports(iris: Artifact) -> Iterator[tuple[int, int]]:
    """`python -m mlops_server` with HTTP and gRPC on ephemeral ports; stopped with SIGTERM."""
    proc = server_process("--artifact", str(iris.directory), "--model-version", "v1", "--grpc-port", "0")
    stderr = StderrLog(proc)
    try:
        started = stderr.wait_for("Started listening")
        stderr.wait_for("Loaded model")
        yield started["port"], started["grpc_port"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        # grpc's C core prints nothing of its own: the log stays one JSON object per line.
        assert stderr.other == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def run_client(python: str, script: str, *args: Any) -> dict[str, Any]:
    done = subprocess.run(
        [python, str(CLIENTS / script), *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def triton(ports: tuple[int, int]) -> dict[str, Any]:
    return run_client(sys.executable, "triton_calls.py", *ports, MODEL)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_health_and_metadata(triton: dict[str, Any], protocol: str) -> None:
    calls = triton[protocol]
    assert (calls["live"], calls["ready"], calls["model_ready"]) == (True, True, True)
    assert calls["server_metadata"]["name"] == "mlops-server"
    assert "statistics" in calls["server_metadata"]["extensions"]
    meta = calls["model_metadata"]
    assert (meta["name"], meta["versions"], meta["platform"]) == (MODEL, ["v1"], "sklearn")
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    config = calls["model_config"] if protocol == "http" else calls["model_config"]["config"]
    assert (config["name"], config["backend"]) == (MODEL, "mlops-server")
    assert [i["data_type"] for i in config["input"]] == ["TYPE_FP64"] * 4
    assert config["parameters"]["task"] == {"string_value": "classification"}
    index = calls["repository_index"] if protocol == "http" else calls["repository_index"]["models"]
    assert index == [{"name": MODEL, "version": "v1", "state": "READY"}]


def test_tritonclient_unknown_model(triton: dict[str, Any]) -> None:
    assert triton["http"]["other_model_ready"] is False
    assert triton["grpc"]["other_model_ready"]["status"] == "StatusCode.NOT_FOUND"
    assert triton["http"]["bad_infer"]["status"] == "404"
    assert triton["grpc"]["bad_infer"]["status"] == "StatusCode.NOT_FOUND"
    assert "not found" in triton["grpc"]["bad_infer"]["error"]


@pytest.mark.parametrize(
    ("protocol", "call"),
    [
        ("http", "infer_binary_True"),
        ("http", "infer_binary_False"),
        ("grpc", "infer_FP64"),
        ("grpc", "infer_FP32"),
    ],
)
def test_tritonclient_infer(triton: dict[str, Any], protocol: str, call: str) -> None:
    result = triton[protocol][call]
    assert result["predict"] == ROWS_PREDICTED
    assert result["proba_rows"] == [1.0, 1.0, 1.0]
    assert result["id"] == call.replace("infer_binary_", "http-").replace("infer_", "grpc-")
    assert triton[protocol]["async_infer"] == ROWS_PREDICTED


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_statistics(triton: dict[str, Any], protocol: str) -> None:
    """Both protocols count into one set of statistics (the gRPC calls came after the HTTP ones)."""
    stats = triton[protocol]["statistics"]["model_stats"][0]
    # HTTP: 3 infer calls of 3 rows before its statistics call; gRPC: those plus its own 3.
    executed = 3 if protocol == "http" else 6
    assert int(stats["execution_count"]) == executed
    assert int(stats["inference_count"]) == 3 * executed
    assert int(stats["inference_stats"]["success"]["count"]) == executed
    assert int(stats["inference_stats"]["fail"]["count"]) == (1 if protocol == "http" else 2)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_unsupported_calls_are_refused_cleanly(triton: dict[str, Any], protocol: str) -> None:
    refused = triton[protocol]["refused"]
    expected = "404" if protocol == "http" else "StatusCode.UNIMPLEMENTED"
    names = TRITON_UNSUPPORTED + (("stream_infer",) if protocol == "grpc" else ())
    assert {name: refused[name]["status"] for name in names} == dict.fromkeys(names, expected)
    assert triton[protocol]["live_after"] is True


# --- KServe's client ----------------------------------------------------------------------------

KSERVE_VENV = Path(
    os.environ.get("MLOPS_KSERVE_VENV", Path.home() / ".cache/mlops-operator/bench-venvs/kserve-0.21.0")
)


@pytest.fixture(scope="module")
def kserve(ports: tuple[int, int]) -> dict[str, Any]:
    python = KSERVE_VENV / "bin/python"
    if not python.exists():
        pytest.skip(
            f"no KServe virtualenv at {KSERVE_VENV}: `make kserve-venv` (part of `make unit`) makes it (kserve 0.21 pins "
            "pandas < 3, so it cannot share the development environment)"
        )
    return run_client(str(python), "kserve_calls.py", *ports, MODEL)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_kserve_client(kserve: dict[str, Any], protocol: str) -> None:
    calls = kserve[protocol]
    assert (calls["live"], calls["ready"], calls["model_ready"]) == (True, True, True)
    # Binary tensors (raw_input_contents / the binary extension) and typed ones (contents / JSON).
    for call in ("infer_raw", "infer_typed"):
        assert calls[call]["predict"] == ROWS_PREDICTED, call
        assert calls[call]["proba_rows"] == [1.0, 1.0, 1.0], call
        assert calls[call]["id"] == f"kserve-{protocol}-{call.removeprefix('infer_')}"


def test_kserve_client_v1_and_errors(kserve: dict[str, Any]) -> None:
    rest = kserve["rest"]
    assert (rest["v1_live"], rest["v1_model_ready"], rest["v1_infer"]) == (True, True, ROWS_PREDICTED)
    assert kserve["grpc"]["bad_infer"]["status"] == "StatusCode.NOT_FOUND"
