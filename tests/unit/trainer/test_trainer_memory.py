"""The pre-flight memory estimate (issue #23): data a pod cannot train on is refused before loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from trainer_factories import Trainer, make_config, make_spec

from mlops_trainer import memory

MIB = 2**20


def wide_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """20 numeric columns and 3 text ones of 10, 20 and 30 categories, 5 % missing, a class."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for i in range(20):
        values = rng.normal(size=rows).round(4)
        values[rng.random(rows) < 0.05] = np.nan
        data[f"num{i}"] = values
    for i, size in enumerate((10, 20, 30)):
        text = np.char.add("c", rng.integers(0, size, size=rows).astype(str)).astype(object)
        text[rng.random(rows) < 0.05] = None
        data[f"cat{i}"] = text
    data["label"] = (rng.random(rows) < 0.5).astype(int)
    return pd.DataFrame(data)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_estimate_counts_rows_and_prepared_columns(tmp_path: Path, fmt: str) -> None:
    frame = wide_frame(20_000)
    path = tmp_path / f"t.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
    onehot = memory.estimate([path], fmt, "label", onehot=True)
    ordinal = memory.estimate([path], fmt, "label", onehot=False)
    assert onehot is not None and ordinal is not None
    if fmt == "parquet":
        assert onehot.rows == 20_000  # the footer's count
    else:
        assert onehot.rows == pytest.approx(20_000, rel=0.02)  # from the first rows' bytes
    assert onehot.columns == 20 + 10 + 20 + 30
    assert ordinal.columns == 23
    assert onehot.peak_bytes == memory.BASE_BYTES + 2 * onehot.rows * 80 * 8


def test_estimate_of_a_file_shorter_than_the_sample_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    wide_frame(300).to_csv(path, index=False)
    found = memory.estimate([path], "csv", "label", onehot=True)
    assert found is not None and found.rows == 300


def test_memory_limit_from_env_then_cgroup(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    files = (str(v2), str(v1))
    assert memory.memory_limit({}, files) is None  # neither file: no limit known
    v1.write_text("9223372036854771712\n")  # cgroup v1's "unlimited"
    assert memory.memory_limit({}, files) is None
    v1.write_text(f"{512 * MIB}\n")
    assert memory.memory_limit({}, files) == 512 * MIB
    v2.write_text("max\n")  # cgroup v2 without a limit: the v1 file is not consulted
    assert memory.memory_limit({}, files) is None
    v2.write_text(f"{256 * MIB}\n")
    assert memory.memory_limit({}, files) == 256 * MIB
    assert memory.memory_limit({"MLOPS_MEMORY_LIMIT": str(64 * MIB)}, files) == 64 * MIB


def test_too_small_a_limit_fails_before_loading_with_the_numbers(trainer: Trainer) -> None:
    uri = trainer.write("wide.csv", wide_frame(20_000))
    spec = make_spec(data={"source": {"uri": uri}, "target": "label"})
    run = trainer.run("train", make_config(spec), MLOPS_MEMORY_LIMIT=str(260 * MIB))
    assert run.code == 2, run.result
    assert run.result["reason"] == "InsufficientMemory"
    message = run.result["message"]
    for fragment in ("wide.csv", "260 MiB", "80 prepared columns", "spec.resources.limits.memory"):
        assert fragment in message, message
    phases = [entry.get("message") for entry in trainer.logs(run)]
    assert "Estimated memory" in phases
    assert not trainer.artifact_dir().exists()


def test_enough_memory_trains(trainer: Trainer) -> None:
    uri = trainer.write("wide.parquet", wide_frame(2_000))
    spec = make_spec(data={"source": {"uri": uri, "format": "parquet"}, "target": "label"})
    run = trainer.run("train", make_config(spec), MLOPS_MEMORY_LIMIT=str(1024 * MIB))
    assert run.code == 0, run.result
    estimated = [e for e in trainer.logs(run) if e.get("message") == "Estimated memory"]
    assert estimated and estimated[0]["rows"] == 2_000 and estimated[0]["limitMiB"] == 1024
