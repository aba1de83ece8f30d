"""What the benchmark scripts share: child processes they own, wrk with a Lua body, ghz, the load average.

Not a test module (pytest collects test_*.py only); the scripts import it from their own directory.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def loadavg() -> float:
    """The 1-minute load average: recorded around each measurement, since the machine is shared."""
    return float(Path("/proc/loadavg").read_text().split()[0])


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], logfile: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` in its own session, output appended to `logfile`; terminate it (then kill) on exit."""
    with logfile.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wrk_script(body: str) -> str:
    """A wrk Lua script POSTing `body` (JSON, no single quotes) that prints one RESULT line."""
    return f"""
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.3f %.3f %.3f %d %d %d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def run_wrk(
    url: str, script: Path, connections: int, seconds: float, core: str, threads: int = 1
) -> dict[str, Any]:
    """wrk pinned to `core`: requests/s, p50/p99/mean latency (ms), errors, loadavg before/after."""
    before = loadavg()
    out = subprocess.run(
        [
            "taskset",
            "-c",
            core,
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\S+) (\S+) (\S+) (\S+) (\d+) (\d+) (\d+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    rps, p50, p99, mean, requests, errors, non2xx = match.groups()
    return {
        "rps": float(rps),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "mean_ms": float(mean),
        "requests": int(requests),
        "errors": int(errors) + int(non2xx),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


def run_ghz(
    address: str,
    proto: Path,
    call: str,
    request: Path,
    concurrency: int,
    seconds: float,
    core: str,
    ghz: str = "ghz",
) -> dict[str, Any]:
    """ghz (gRPC load) pinned to `core`, `concurrency` calls in flight on one HTTP/2 connection (as a
    gRPC client multiplexes): requests/s, p50/p99/mean latency (ms), errors, loadavg before/after.
    `request` is the serialized request message (ghz --binary-file)."""
    before = loadavg()
    out = subprocess.run(
        [
            "taskset",
            "-c",
            core,
            ghz,
            "--insecure",
            "--proto",
            str(proto),
            "--import-paths",
            str(proto.parent),
            "--call",
            call,
            "--binary-file",
            str(request),
            "--concurrency",
            str(concurrency),
            "--connections",
            "1",
            "--duration",
            f"{seconds:g}s",
            "--timeout",
            "10s",
            "--format",
            "json",
            address,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = json.loads(out)
    latencies = {int(p["percentage"]): p["latency"] / 1e6 for p in doc.get("latencyDistribution") or []}
    codes = doc.get("statusCodeDistribution") or {}
    return {
        "rps": float(doc["rps"]),
        "p50_ms": latencies.get(50, float("nan")),
        "p99_ms": latencies.get(99, float("nan")),
        "mean_ms": doc["average"] / 1e6,
        "requests": int(doc["count"]),
        "errors": sum(n for code, n in codes.items() if code != "OK"),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }
