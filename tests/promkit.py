"""A real Prometheus for tests (issue #21), scraping loopback targets from a static config.

`ensure_binary` takes the Prometheus 3 that tests/monitoring/prometheus.sh builds (the e2e tier's)
when it is in the cache, else Debian's 2.42 that tests/monitoring/promtool.sh fetches for `make
lint` (it never builds: a cold build takes 10-16 min). `Prometheus.start` writes a config with one
scrape job whose targets carry the labels the shipped PodMonitor relabels onto the serving pods'
series (namespace, pod, inference_service, track), starts the binary on a free loopback port,
waits for /-/ready, and `stop` ends it by its PID. Nothing here skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from s3kit import free_port, stop_process

ROOT: Final = Path(__file__).resolve().parents[1]
CACHE: Final = Path(os.environ.get("MLOPS_CACHE", Path.home() / ".cache" / "mlops-operator"))
GO_BUILT: Final = CACHE / "prometheus" / "go-v0.316.0" / "prometheus"


def log(message: str) -> None:
    print(f"[promkit] {message}", file=sys.stderr, flush=True)


def ensure_binary() -> Path:
    """The Prometheus binary: the e2e tier's v3 when cached, else Debian's 2.42 (fetched if missing)."""
    if GO_BUILT.exists():
        return GO_BUILT
    done = subprocess.run(
        ["bash", str(ROOT / "tests" / "monitoring" / "promtool.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promtool.sh failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "prometheus"


@dataclass(frozen=True)
class Target:
    """A loopback /metrics endpoint and the labels the PodMonitor would give its series."""

    port: int
    labels: Mapping[str, str]


def config(targets: Sequence[Target], interval: str = "1s") -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "mlops-inference-servers",
                "scrape_timeout": interval,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{t.port}"], "labels": dict(t.labels)} for t in targets
                ],
            }
        ],
    }


class Prometheus:
    def __init__(self, process: subprocess.Popen[bytes], url: str, workdir: Path) -> None:
        self.process, self.url, self.workdir = process, url, workdir

    @classmethod
    def start(
        cls, binary: Path, workdir: Path, targets: Sequence[Target], interval: str = "1s"
    ) -> Prometheus:
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config(targets, interval)))
        port = free_port()
        log_path = workdir / "prometheus.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = cls(process, f"http://127.0.0.1:{port}", workdir)
        deadline = time.monotonic() + 60
        while not server._ready():
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"prometheus did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        log(f"prometheus {binary} pid {process.pid} serving {server.url}")
        return server

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:  # loopback only
                return bool(answer.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (the test's own view, independent of the operator's client)."""
        data = urllib.parse.urlencode({"query": expr}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as answer:
            doc = json.load(answer)
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def scraped_after(self, after: float, targets: int, timeout: float = 30.0) -> None:
        """Wait until every one of `targets` targets was scraped after the Unix time `after`."""
        deadline = time.monotonic() + timeout
        while True:
            fresh = self.query(f"timestamp(up) > {after:.3f}")  # on a selector: the scrape time
            if len(fresh) >= targets:
                return
            assert time.monotonic() < deadline, f"{len(fresh)}/{targets} targets scraped after {after}"
            time.sleep(0.2)

    def stop(self) -> None:
        """TERM, wait, then KILL: by this process's PID only."""
        stop_process(self.process)
        log(f"prometheus pid {self.process.pid} stopped (exit {self.process.returncode})")
