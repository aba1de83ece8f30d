"""The real process: `python -m mlops_trainer` exit codes, stdout result, JSON logs on stderr."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from trainer_factories import make_config, make_spec


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "mlops_trainer", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_process_train_verify_and_exit_codes(tmp_path: Path) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(
        json.dumps(make_config(make_spec(evaluation={"gates": [{"metric": "accuracy", "threshold": 0.99}]})))
    )
    result_file = tmp_path / "termination-log"
    env = {"MLOPS_PVC_ROOT": str(tmp_path / "pvc"), "MLOPS_RESULT_PATH": str(result_file)}

    trained = run(["train", "--config", str(config_file)], env)
    assert trained.returncode == 0, trained.stderr  # failing a gate is still a successful run
    result = json.loads(trained.stdout)
    assert result == json.loads(result_file.read_text())
    assert result["gatesPassed"] is False and result["failedGates"] == ["accuracy >= 0.99 (was 0.9667)"]
    logs = [json.loads(line) for line in trained.stderr.splitlines()]
    assert [entry["phase"] for entry in logs if "phase" in entry] == [
        "load",
        "split",
        "fit",
        "evaluate",
        "write",
        "done",
    ]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in logs)

    artifact_dir = tmp_path / "pvc" / "mlops-artifacts" / "models" / "demo" / "demo-1"
    verified = run(["verify", "--artifact", str(artifact_dir), "--sha256", result["sha256"]], env)
    assert verified.returncode == 0, verified.stderr

    (artifact_dir / "model.skops").write_bytes(b"not a model")
    tampered = run(["verify", "--artifact", str(artifact_dir), "--sha256", result["sha256"]], env)
    assert tampered.returncode == 3
    assert json.loads(tampered.stdout)["reason"] == "VerificationFailed"

    bad = run(["train"], {**env, "MLOPS_CONFIG": json.dumps(make_config(make_spec(data={"minRows": 1000})))})
    assert bad.returncode == 2
    assert json.loads(bad.stdout) == {
        "ok": False,
        "reason": "BadInput",
        "message": "only 150 usable rows; data.minRows is 1000",
    }


def test_sigterm_before_a_trial_finishes_exits_143_without_a_score(tmp_path: Path) -> None:
    """A trial pod deleted gracefully (eviction, drain) exits non-zero, so its Job index is run
    again, and leaves no score behind (issue #19). The trial blocks downloading its data from a
    loopback server that accepts the connection and never answers, until the signal arrives."""
    stall = socket.create_server(("127.0.0.1", 0))
    stall.listen(8)
    port = stall.getsockname()[1]
    spec = make_spec(
        data={"source": {"uri": f"http://127.0.0.1:{port}/rows.csv"}, "target": "y"},
        tuning={"space": {"n_estimators": [5, 10]}},
    )
    result_file = tmp_path / "termination-log"
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "mlops_trainer", "trial", "--index", "0"],
        env={
            **os.environ,
            "MLOPS_CONFIG": json.dumps(make_config(spec)),
            "MLOPS_PVC_ROOT": str(tmp_path / "pvc"),
            "MLOPS_RESULT_PATH": str(result_file),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the trial has started (and is blocked on its data)
            if json.loads(line).get("message") == "Started trial":
                break
        else:
            raise AssertionError(f"the trial ended before it started: {proc.communicate()}")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        stall.close()
    assert proc.returncode == 143, out
    result = json.loads(out)
    assert result == json.loads(result_file.read_text())
    assert result["ok"] is False and result["reason"] == "Terminated"
    assert "score" not in result
