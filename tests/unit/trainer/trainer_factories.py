"""Factories for the trainer's unit tests: configs, seeded data, an in-process CLI runner."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_trainer.__main__ import main

CLAIM = "data"


def merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `patch` into a copy of `base`; a None value deletes the key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_spec(**patch: Any) -> dict[str, Any]:
    """A small, fast TrainingJob spec (camelCase, as stored in Kubernetes), patched.

    `data`, `evaluation`, ... are deep-merged; `estimator` replaces the default one whole.
    """
    base: dict[str, Any] = {
        "model": "demo",
        "data": {"source": {"uri": "builtin:iris"}},
        "estimator": {"class": "RandomForestClassifier", "params": {"n_estimators": 10}},
    }
    if "estimator" in patch:
        base["estimator"] = patch["estimator"]
    return merge(base, {k: v for k, v in patch.items() if k != "estimator"})


def make_config(spec: dict[str, Any] | None = None, name: str = "demo-1", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "default",
        "spec": spec or make_spec(),
        "trainerImage": "trainer:test",
        **extra,
    }


def mixed_frame(n: int = 240, seed: int = 7) -> pd.DataFrame:
    """Seeded table with numeric and text columns, missing values, a class and a numeric target."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n).round(1)
    visits = rng.poisson(5, n)
    city = rng.choice(["paris", "lyon", "nice"], n)
    plan = rng.choice(["basic", "pro"], n, p=[0.6, 0.4])
    signal = (
        0.08 * (age - 40)
        + 1.6 * (city == "paris")
        + 1.2 * (plan == "pro")
        + 0.2 * visits
        + rng.normal(0, 0.5, n)
    )
    frame = pd.DataFrame(
        {
            "age": age,
            "visits": visits,
            "city": city.astype(object),
            "plan": plan.astype(object),
            "spend": (20 + 10 * signal + rng.normal(0, 2, n)).round(2),
            "churn": np.where(signal > np.median(signal), "yes", "no").astype(object),
        }
    )
    frame.loc[rng.random(n) < 0.1, "age"] = np.nan
    frame.loc[rng.random(n) < 0.1, "city"] = None
    return frame


@dataclass
class Run:
    code: int
    result: dict[str, Any]
    stdout: str
    stderr: str


@dataclass
class Trainer:
    """Runs the CLI in-process against a scratch PVC root; writes data files onto claim 'data'."""

    root: Path
    capsys: pytest.CaptureFixture[str]

    @property
    def pvc_root(self) -> Path:
        return self.root / "pvc"

    def env(self, config: Mapping[str, Any] | None = None, **extra: str) -> dict[str, str]:
        env = {"MLOPS_PVC_ROOT": str(self.pvc_root), **extra}
        if config is not None:
            env["MLOPS_CONFIG"] = json.dumps(config)
        return env

    def run(self, command: str, config: Mapping[str, Any] | None = None, *args: str, **env: str) -> Run:
        result_file = self.root / "result.json"
        result_file.unlink(missing_ok=True)
        self.capsys.readouterr()
        code = main([command, "--result", str(result_file), *args], env=self.env(config, **env))
        captured = self.capsys.readouterr()
        return Run(code, json.loads(result_file.read_text()), captured.out, captured.err)

    def logs(self, run: Run) -> list[dict[str, Any]]:
        return [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]

    def path(self, relative: str) -> Path:
        path = self.pvc_root / CLAIM / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, relative: str, frame: pd.DataFrame) -> str:
        """Write `frame` as csv or parquet (by suffix) on the claim; return its pvc:// URI."""
        path = self.path(relative)
        if relative.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return f"pvc://{CLAIM}/{relative}"

    def write_text(self, relative: str, text: str | bytes) -> str:
        path = self.path(relative)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return f"pvc://{CLAIM}/{relative}"

    def artifact_dir(self, model: str = "demo", name: str = "demo-1") -> Path:
        return self.pvc_root / "mlops-artifacts" / "models" / model / name
