"""Serving benchmark of mlops-server alone: throughput, latency and cold start with wrk.

    python tests/benchmarks/serving_self.py [--core 1] [--client-cores 0] [--seconds 10] [--connections 16]

For each model (iris LogisticRegression in the trainer's ColumnTransformer layout, the same
without it, and a 100-tree RandomForest) it writes an artifact, starts `python -m mlops_server`
pinned to one core (taskset), measures cold start (spawn -> /v2/health/ready 200), warms up,
then runs wrk on other cores posting a one-row V2 request over `--connections` keep-alive
connections. It reports and never asserts (numbers depend on the machine). Needs `wrk` and
`taskset` on PATH.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import run_wrk, wrk_script

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "images/server")]

BODY = '{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}'


def build(kind: str, directory: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mlops_contract import artifact, drift

    X, y = load_iris(return_X_y=True, as_frame=True)
    steps: list[tuple[str, Any]]
    if kind == "logistic-trainer-layout":
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        prepare = ColumnTransformer([("numeric", numeric, list(X.columns))], sparse_threshold=0.0)
        steps = [("prepare", prepare), ("estimator", LogisticRegression(max_iter=1000))]
    elif kind == "logistic":
        steps = [("scale", StandardScaler()), ("estimator", LogisticRegression(max_iter=1000))]
    else:
        steps = [("estimator", RandomForestClassifier(n_estimators=100, random_state=0))]
    pipeline = Pipeline(steps).fit(X, y)
    metadata = {
        "model": "iris",
        "signature": {
            "task": "classification",
            "features": [{"name": c, "dtype": str(X[c].dtype)} for c in X.columns],
            "target": "target",
            "classes": [0, 1, 2],
        },
        "reference": {
            "features": {c: drift.numeric_reference(X[c]) for c in X.columns},
            "prediction": drift.categorical_reference(pipeline.predict(X)),
        },
    }
    artifact.write_artifact(directory, pipeline, metadata)


def ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/v2/health/ready")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def wrk(args: argparse.Namespace, port: int, script: Path, seconds: int) -> tuple[float, float, float, int]:
    url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
    result = run_wrk(url, script, args.connections, seconds, args.client_cores, threads=2)
    return result["rps"], result["p50_ms"], result["p99_ms"], result["errors"]


def bench(args: argparse.Namespace, kind: str, work: Path, script: Path) -> str:
    directory = work / kind
    build(kind, directory)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "images/server")])}
    started = time.perf_counter()
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            args.core,
            sys.executable,
            "-m",
            "mlops_server",
            "--artifact",
            str(directory),
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
            "--log-level",
            "WARNING",
        ],
        env=env,
    )
    try:
        while not ready(args.port):
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode}")
            time.sleep(0.005)
        cold = time.perf_counter() - started
        wrk(args, args.port, script, 3)  # warm-up
        rps, p50, p99, errors = wrk(args, args.port, script, args.seconds)
    finally:
        server.terminate()
        server.wait(30)
    return f"{kind:26} {rps:10.0f} {p50:9.2f} {p99:9.2f} {cold:9.2f} {errors:7d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", default="1", help="CPU list for the server (taskset -c)")
    parser.add_argument("--client-cores", default="0", help="CPU list for wrk")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--models", default="logistic-trainer-layout,logistic,forest-100")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        raise SystemExit("needs wrk and taskset (apt-get install -y wrk util-linux)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "v2.lua"
        script.write_text(wrk_script(BODY))
        print(f"{'model':26} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'ready s':>9} {'errors':>7}")
        for kind in args.models.split(","):
            print(bench(args, kind, work, script), flush=True)


if __name__ == "__main__":
    main()
