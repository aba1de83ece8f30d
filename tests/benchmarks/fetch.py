"""Benchmark of the serving pods' artifact fetch (issue #17): `mlops-trainer fetch` from S3.

    python tests/benchmarks/fetch.py [--rounds 3] [--big-mb 200]

Starts the real S3 server (versitygw, tests/s3kit.py) on loopback, uploads two artifacts with
the storage code (a 100-tree RandomForest as the serving benchmark builds it, and a model file
of `--big-mb` MB of random bytes with its model.json: fetch hashes bytes and never loads them),
then runs the init container's program (`python -m mlops_trainer fetch`, a fresh process per
run, as in a pod) `--rounds` times each into a fresh directory: wall time from spawn to exit,
and the download and digest phases from its logs. Reports and never asserts; the serving cold
start (spawn -> ready) comes on top and is in the serving table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import loadavg

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "operator"), str(ROOT / "images/trainer")]


def big_artifact(directory: Path, megabytes: int) -> str:
    from mlops_contract import artifact

    directory.mkdir(parents=True)
    path = directory / artifact.MODEL_FILE
    with path.open("wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(1 << 20))
    sha = artifact.sha256_file(path)
    meta = {"format": artifact.FORMAT, "file": artifact.MODEL_FILE, "sha256": sha}
    (directory / artifact.METADATA_FILE).write_text(json.dumps(meta))
    return sha


def fetch_once(uri: str, sha: str, dest: Path, env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mlops_trainer", "fetch", "--artifact", uri, "--sha256", sha,
         "--dest", str(dest), "--result", str(dest.parent / "result.json")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"fetch failed ({done.returncode}): {done.stderr[-2000:]}")
    phases = {}
    for line in done.stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("phase") in ("download", "digest"):
                phases[record["phase"]] = float(record["seconds"])
    return {"wall": wall, **phases}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=200)
    args = parser.parse_args()

    from serving_self import build

    from mlops_contract import artifact, storage
    from s3kit import S3Server, ensure_binary

    with tempfile.TemporaryDirectory(prefix="mlops-bench-fetch-") as tmp:
        work = Path(tmp)
        server = S3Server.start(ensure_binary(), work / "s3")
        try:
            bucket = server.bucket("bench")
            forest = work / "forest"
            build("forest-100", forest)
            models = {
                "forest-100": (forest, artifact.read_metadata(forest)["sha256"]),
                f"random-{args.big_mb}MB": (work / "big", big_artifact(work / "big", args.big_mb)),
            }
            env = {
                "PATH": os.environ["PATH"],
                "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "images/trainer")),
                **server.env,
            }
            rows: list[dict[str, Any]] = []
            for name, (directory, sha) in models.items():
                uri = f"s3://{bucket}/models/{name}"
                storage.upload(directory, uri, server.env)
                size = sum(p.stat().st_size for p in directory.iterdir())
                runs = []
                for i in range(args.rounds):
                    before = loadavg()
                    runs.append(fetch_once(uri, sha, work / f"dest-{name}-{i}" / "model", env))
                    runs[-1]["loadavg"] = max(before, loadavg())
                row = {
                    "artifact": name,
                    "bytes": size,
                    **{k: statistics.median(r[k] for r in runs) for k in ("wall", "download", "digest")},
                    "loadavg": max(r["loadavg"] for r in runs),
                }
                rows.append(row)
                print(
                    f"{name:>16} {size / 2**20:8.1f} MiB  fetch+verify {row['wall']:.2f} s "
                    f"(download {row['download']:.2f} s, sha256 {row['digest']:.2f} s; median of {args.rounds}, "
                    f"load <= {row['loadavg']:.1f})",
                    flush=True,
                )
            print(json.dumps(rows))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
