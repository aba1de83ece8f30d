"""What shadow mode costs the champion (issue #22): req/s and p99 with and without mirroring.

    python tests/benchmarks/shadow.py [--core 1] [--client-cores 0] [--challenger-core 0]
                                      [--seconds 10] [--connections 16] [--rounds 2] [--percent 100]

Builds the iris LogisticRegression artifact (serving_self.build), starts a challenger server
(pinned to `--challenger-core`) and, per round, the champion (pinned to `--core`) once plain and
once with `--shadow-url` to the challenger, interleaved (the challenger at nice 19, so it does
not slow the client down on a shared core); wrk posts a one-row V2 request over
`--connections` keep-alive connections to the champion. Prints both side by side with the
ratio, the champion's CPU time per answered request (less sensitive to a busy machine than
req/s), and how many copies the mirror answered and dropped (from the champion's /metrics).
Reports, never asserts: numbers depend on the (shared) machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import loadavg, run_wrk, wrk_script
from serving_self import BODY, ROOT, build, ready


def start(
    args: argparse.Namespace, core: str, artifact: Path, port: int, *extra: str, nice: int = 0
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "images/server")])}
    cmd = [
        "nice",
        "-n",
        str(nice),
        "taskset",
        "-c",
        core,
        sys.executable,
        "-m",
        "mlops_server",
        "--artifact",
        str(artifact),
    ]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING", *extra]
    proc = subprocess.Popen(cmd, env=env)
    while not ready(port):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        time.sleep(0.01)
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mirrored(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mlops_shadow_requests_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] = out.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def measure(args: argparse.Namespace, artifact: Path, script: Path, shadow: str | None) -> dict[str, float]:
    extra = ["--shadow-url", shadow, "--shadow-percent", str(args.percent)] if shadow else []
    proc = start(args, args.core, artifact, args.port, *extra)
    try:
        url = f"http://127.0.0.1:{args.port}/v2/models/iris/infer"
        run_wrk(url, script, args.connections, 3, args.client_cores, threads=2)  # warm-up
        before, cpu = loadavg(), cpu_seconds(proc.pid)
        result = run_wrk(url, script, args.connections, args.seconds, args.client_cores, threads=2)
        cpu = cpu_seconds(proc.pid) - cpu
        counts = mirrored(args.port) if shadow else {}
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "rps": result["rps"],
        # CPU per answered request: what mirroring costs the champion, whatever else runs.
        "cpu_us": 1e6 * cpu / max(1.0, result["rps"] * args.seconds),
        "p99": result["p99_ms"],
        "errors": result["errors"],
        "load": before,
        "answered": counts.get("answered", 0.0),
        "dropped": sum(v for k, v in counts.items() if k != "answered"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--core", default="1", help="CPU list for the champion (taskset -c)")
    parser.add_argument("--challenger-core", default="0", help="CPU list for the challenger")
    parser.add_argument("--client-cores", default="0", help="CPU list for wrk")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are shown")
    parser.add_argument("--percent", type=float, default=100, help="--shadow-percent of the champion")
    parser.add_argument("--port", type=int, default=18380)
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        raise SystemExit("needs wrk and taskset (apt-get install -y wrk util-linux)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        artifact = work / "logistic"
        build("logistic", artifact)
        script = work / "v2.lua"
        script.write_text(wrk_script(BODY))
        # At the lowest priority: in a cluster the challenger runs in its own pod, and here it
        # must not take the client's core from wrk (which would lower the champion's req/s).
        challenger = start(
            args, args.challenger_core, artifact, args.port + 1, "--model-version", "v2", nice=19
        )
        shadow_url = f"http://127.0.0.1:{args.port + 1}"
        runs: dict[str, list[dict[str, float]]] = {"plain": [], "mirroring": []}
        try:
            for _ in range(args.rounds):
                runs["plain"].append(measure(args, artifact, script, None))
                runs["mirroring"].append(measure(args, artifact, script, shadow_url))
        finally:
            challenger.terminate()
            challenger.wait(30)

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    print(
        f"{args.connections} connections, {args.seconds}s x {args.rounds} rounds, mirroring {args.percent:g}%"
    )
    print(
        f"{'champion':12} {'req/s':>9} {'p99 ms':>8} {'CPU us/req':>10} {'errors':>7} {'answered':>9} "
        f"{'dropped':>8} {'load':>5}"
    )
    for mode in runs:
        print(
            f"{mode:12} {med(mode, 'rps'):9.0f} {med(mode, 'p99'):8.2f} {med(mode, 'cpu_us'):10.1f} "
            f"{med(mode, 'errors'):7.0f} {med(mode, 'answered'):9.0f} {med(mode, 'dropped'):8.0f} "
            f"{med(mode, 'load'):5.2f}"
        )
    cost = 1 - med("mirroring", "rps") / med("plain", "rps")
    p99 = med("mirroring", "p99") / med("plain", "p99")
    cpu = med("mirroring", "cpu_us") / med("plain", "cpu_us")
    print(
        f"req/s mirroring/plain {1 - cost:.3f} (cost {cost:.1%}); p99 x{p99:.2f}; CPU per request x{cpu:.2f}"
    )


if __name__ == "__main__":
    main()
