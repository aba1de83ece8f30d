"""Serving benchmark: mlops-server against MLServer and KServe on the same models and the same load.

    python tests/benchmarks/serving.py [--rounds 3] [--seconds 10] [--server-core 1] [--client-core 0]

Issue #10. It reports, it never asserts: the numbers depend on the machine and on whatever else
runs on it. What it does:

1. Models: trains an iris LogisticRegression and an iris RandomForest (100 trees) with
   `mlops-trainer train` (a real artifact: model.skops + model.json, the trainer's Pipeline
   with its ColumnTransformer), which our server loads as in production. The competitors get
   the *same fitted steps* as a plain joblib file (imputer + scaler + estimator as a numpy
   Pipeline: their sklearn runtimes receive numpy arrays, which a by-name ColumnTransformer
   cannot take), which is what MLServer's and KServe's sklearn runtimes load. Every server must
   return the same labels for the probe body before it is measured.
2. Competitors run in their own virtualenvs with pinned versions under
   ~/.cache/mlops-operator/bench-venvs/ (created from PyPI when missing):
   MLServer 1.7.1 + mlserver-sklearn 1.7.1 with `parallel_workers: 0` (one process: its default
   `parallel_workers: 1` fails to start beside uvloop), and KServe's Python model server
   (`kserve.Model` subclass loading the joblib file, which is what KServe's sklearn server does).
3. Each server is pinned to one core (taskset), one worker, its own loopback port; wrk runs on
   the other core. Per round and model, servers start in turn (cold start = spawn until
   /v2/models/<name>/ready answers 200), are warmed up, then measured with V2 requests: one row
   at 1 and at 16 connections, and a 100-row request at 1 connection. RSS (the process tree's)
   is read after the load. Rounds interleave the servers so noise from other work on the
   machine hits all of them; the table shows medians over rounds.
4. The in-process predict floor (our ServedModel.predict with each runtime, and the plain numpy
   Pipeline's predict that the competitors call) for 1 and 100 rows, on the server core.

With --grpc, each server is also measured over gRPC (issue #20): the same three loads as
ModelInfer calls (rows in typed fp64 `contents`, which every server accepts) from ghz, all calls
of a scenario multiplexed on one HTTP/2 connection as gRPC clients do; every server must answer
gRPC with the labels it answers over REST. Ours then runs with --grpc-port. ghz is built once
from the Go module proxy into ~/.cache/mlops-operator/bin (`go install`), or taken from PATH.

Ours runs twice: "ours" as deployed (runtime arrays for these numeric pipelines: numpy only, no
scikit-learn import) and "ours-sklearn" (--runtime sklearn: skops + scikit-learn).

Output: a Markdown table on stdout, raw JSON (every sample, 1-min loadavg before/after each
measurement) in tests/benchmarks/results/serving-<date>-<time>.json. Needs wrk and taskset.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import loadavg, run_ghz, run_wrk, running, wrk_script

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests/benchmarks/results"
VENVS = Path.home() / ".cache/mlops-operator/bench-venvs"
MLSERVER_VERSION = "1.7.1"
KSERVE_VERSION = "0.21.0"
MODEL_NAME = "iris"
ROW = [5.1, 3.5, 1.4, 0.2]
SERVERS = ("ours", "ours-sklearn", "mlserver", "kserve", "ours-baseline")
# "ours-baseline": our server (arrays runtime) from another checkout (--baseline), to compare a
# change with what it changes in one interleaved run.
# Our server with each runtime (mlops_server.model): "ours" as deployed (arrays: numpy only, for
# these numeric pipelines), "ours-sklearn" with --runtime sklearn (skops + scikit-learn).
RUNTIMES = {"ours": "auto", "ours-sklearn": "sklearn", "ours-baseline": "auto"}

MODELS: dict[str, dict[str, Any]] = {
    "logistic": {"class": "LogisticRegression", "params": {"max_iter": 1000}},
    "forest-100": {"class": "RandomForestClassifier", "params": {"n_estimators": 100, "random_state": 0}},
}

KSERVE_MODEL = '''"""KServe's sklearn server in 15 lines: a kserve.Model that loads a joblib Pipeline."""
import argparse

import joblib
import kserve
from kserve.utils.utils import get_predict_input, get_predict_response


class SKLearnModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        instances = get_predict_input(payload)
        return get_predict_response(payload, self.model.predict(instances), self.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([SKLearnModel(args.model_name, args.model_path)])
'''


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def v2_body(rows: int) -> str:
    return json.dumps(
        {
            # No "outputs": KServe's sklearn response refuses names it does not produce, and the
            # body is the same for all three. Ours then returns probabilities too (more work).
            "inputs": [{"name": "input-0", "shape": [rows, 4], "datatype": "FP64", "data": ROW * rows}],
        },
        separators=(",", ":"),
    )


# ------------------------------------------------------------------------------------- environments


def ensure_venv(name: str, packages: list[str], check: str) -> Path:
    """A virtualenv under VENVS with exactly these pinned packages; created (and said so) if missing."""
    venv = VENVS / name
    stamp = venv / ".installed"
    wanted = " ".join(packages)
    if stamp.exists() and stamp.read_text() == wanted:
        return venv
    log(f"Creating {venv} with {wanted} (once; later runs reuse it)")
    shutil.rmtree(venv, ignore_errors=True)
    VENVS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *packages], check=True)
    subprocess.run([str(venv / "bin/python"), "-c", check], check=True)
    stamp.write_text(wanted)
    return venv


def sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def competitor_venvs(servers: list[str]) -> dict[str, Path]:
    """The competitors' virtualenvs, made (once, cached) only for the servers measured."""
    # Same scikit-learn as ours, so the joblib files load and the estimators run the same code.
    sk = f"scikit-learn=={sklearn_version()}"
    venvs = {}
    if "mlserver" in servers:
        venvs["mlserver"] = ensure_venv(
            f"mlserver-{MLSERVER_VERSION}",
            [f"mlserver=={MLSERVER_VERSION}", f"mlserver-sklearn=={MLSERVER_VERSION}", sk],
            "import mlserver, mlserver_sklearn",
        )
    if "kserve" in servers:
        venvs["kserve"] = ensure_venv(
            f"kserve-{KSERVE_VERSION}", [f"kserve=={KSERVE_VERSION}", sk], "import kserve"
        )
    return venvs


def package_version(venv: Path, package: str) -> str:
    out = subprocess.run(
        [str(venv / "bin/python"), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# ------------------------------------------------------------------------------------------- models


def train(work: Path, kind: str) -> tuple[Path, Path]:
    """Our artifact via `mlops-trainer train`, plus the same fitted steps as a numpy joblib Pipeline."""
    import joblib  # type: ignore[import-untyped]  # joblib ships no type hints
    from sklearn.pipeline import Pipeline

    from mlops_contract import artifact

    estimator = MODELS[kind]
    config = {
        "name": f"bench-{kind}",
        "namespace": "default",
        "spec": {
            "model": MODEL_NAME,
            "data": {"source": {"uri": "builtin:iris"}},
            "estimator": estimator,
        },
    }
    pvc = work / "pvc"
    result = work / f"{kind}-result.json"
    env = {**os.environ, "MLOPS_PVC_ROOT": str(pvc), "MLOPS_CONFIG": json.dumps(config)}
    subprocess.run(
        [sys.executable, "-m", "mlops_trainer", "train", "--result", str(result)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ours = pvc / "mlops-artifacts/models" / MODEL_NAME / f"bench-{kind}"
    pipeline, _ = artifact.load_verified(ours)
    prepare = pipeline.steps[0][1]  # the trainer's ColumnTransformer: one numeric block on iris
    (block,) = [t for _, t, _ in prepare.transformers_ if not (isinstance(t, str) and t == "drop")]
    steps = [*block.steps, pipeline.steps[-1]] if hasattr(block, "steps") else [pipeline.steps[-1]]
    for _, step in steps:
        # Fitted on a DataFrame slice; served numpy, they would warn on every call.
        with contextlib.suppress(AttributeError):
            delattr(step, "feature_names_in_")
    plain = Pipeline(steps)
    theirs = work / f"{kind}-joblib"
    theirs.mkdir()
    joblib.dump(plain, theirs / "model.joblib")
    return ours, theirs


@dataclass
class Floor:
    ours_1: float
    ours_100: float
    ours_sklearn_1: float
    ours_sklearn_100: float
    plain_1: float
    plain_100: float


def time_call(fn: Callable[[], Any], seconds: float = 1.0) -> float:
    """Median milliseconds of fn() over `seconds` (after a few warm-up calls)."""
    for _ in range(5):
        fn()
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def predict_floor(ours: Path, theirs: Path, core: str) -> Floor:
    """In-process predict cost, on the server core: what any server adds sits on top of this."""
    import joblib
    import numpy as np

    sys.path[:0] = [str(ROOT / "images/server")]
    from mlops_server.model import ServedModel

    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(c) for c in core.split(",")})
    try:
        served = ServedModel.load(str(ours), None, None, None, runtime="auto")
        with_sklearn = ServedModel.load(str(ours), None, None, None, runtime="sklearn")
        plain = joblib.load(theirs / "model.joblib")
        one, hundred = np.array([ROW]), np.array([ROW] * 100)
        return Floor(
            ours_1=time_call(lambda: served.predict(one, want_proba=False)),
            ours_100=time_call(lambda: served.predict(hundred, want_proba=False)),
            ours_sklearn_1=time_call(lambda: with_sklearn.predict(one, want_proba=False)),
            ours_sklearn_100=time_call(lambda: with_sklearn.predict(hundred, want_proba=False)),
            plain_1=time_call(lambda: plain.predict(one)),
            plain_100=time_call(lambda: plain.predict(hundred)),
        )
    finally:
        os.sched_setaffinity(0, previous)


# ------------------------------------------------------------------------------------------ servers


def ports(base: int) -> dict[str, tuple[int, int, int]]:
    """(http, grpc, metrics) per server; only http is used for load."""
    return {name: (base + 10 * i, base + 10 * i + 1, base + 10 * i + 2) for i, name in enumerate(SERVERS)}


def command(
    server: str, model: tuple[Path, Path], venvs: dict[str, Path], work: Path, port: int, grpc: bool = False
) -> list[str]:
    ours, theirs = model
    http_port, grpc_port, metrics_port = ports(port)[server]
    if server in RUNTIMES:
        return [
            sys.executable,
            "-m",
            "mlops_server",
            "--artifact",
            str(ours),
            "--host",
            "127.0.0.1",
            "--port",
            str(http_port),
            "--log-level",
            "WARNING",
            "--runtime",
            RUNTIMES[server],
            *(["--grpc-port", str(grpc_port)] if grpc and server != "ours-baseline" else []),
        ]
    if server == "mlserver":
        root = work / f"mlserver-{theirs.name}"
        if not root.exists():
            root.mkdir()
            shutil.copy(theirs / "model.joblib", root / "model.joblib")
            settings = {
                "http_port": http_port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
                "host": "127.0.0.1",
                # One process. The default (1) spawns a worker pool that fails to start beside uvloop.
                "parallel_workers": 0,
            }
            (root / "settings.json").write_text(json.dumps(settings))
            model_settings = {
                "name": MODEL_NAME,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
            (root / "model-settings.json").write_text(json.dumps(model_settings))
        return [str(venvs["mlserver"] / "bin/mlserver"), "start", str(root)]
    script = work / "kserve_model.py"
    script.write_text(KSERVE_MODEL)
    return [
        str(venvs["kserve"] / "bin/python"),
        str(script),
        "--model_name",
        MODEL_NAME,
        "--model_path",
        str(theirs / "model.joblib"),
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--workers",
        "1",
    ]


def get(port: int, path: str) -> int:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return 0


def post(port: int, body: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST", f"/v2/models/{MODEL_NAME}/infer", body=body, headers={"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
    doc: dict[str, Any] = json.loads(data)
    return doc


def labels(doc: dict[str, Any]) -> list[Any]:
    (output,) = [o for o in doc["outputs"] if o["name"] == "predict"] or doc["outputs"][:1]
    data = output["data"]
    return [int(v) for v in data]


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


SCENARIOS: dict[str, tuple[int, int]] = {"c1": (1, 1), "c16": (16, 1), "batch100": (1, 100)}
# The same loads over gRPC (--grpc): ModelInfer with the rows in typed fp64 `contents`, which every
# server accepts, `concurrency` calls in flight on one HTTP/2 connection.
GRPC_SCENARIOS: dict[str, tuple[int, int]] = {f"grpc_{k}": v for k, v in SCENARIOS.items()}
PROTO = ROOT / "images/server/mlops_server/proto/inference.proto"
GHZ = Path(os.environ.get("MLOPS_CACHE", Path.home() / ".cache/mlops-operator")) / "bin/ghz"
GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.120.0"


def grpc_request(rows: int) -> bytes:
    """A serialized ModelInferRequest of `rows` copies of ROW, as one [rows, 4] FP64 tensor."""
    from mlops_server.proto import inference_pb2 as pb

    return pb.ModelInferRequest(
        model_name=MODEL_NAME,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="input-0",
                datatype="FP64",
                shape=[rows, len(ROW)],
                contents=pb.InferTensorContents(fp64_contents=ROW * rows),
            )
        ],
    ).SerializeToString()


def grpc_labels(port: int, rows: int) -> list[int]:
    """The labels a server answers over gRPC for `rows` rows (and proof its endpoint is up)."""
    import grpc
    import numpy as np

    from mlops_server.proto import inference_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda m: m,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        deadline = time.perf_counter() + 30
        while True:
            try:
                answer = infer(grpc_request(rows), timeout=10)
                break
            except grpc.RpcError:
                if time.perf_counter() > deadline:
                    raise
                time.sleep(0.05)
    (index,) = [i for i, o in enumerate(answer.outputs) if o.name == "predict"] or [0]
    output = answer.outputs[index]
    if answer.raw_output_contents:
        dtype = {"INT64": "<i8", "INT32": "<i4", "FP64": "<f8", "FP32": "<f4"}[output.datatype]
        return [int(v) for v in np.frombuffer(answer.raw_output_contents[index], dtype)]
    contents = output.contents
    values = (
        contents.int64_contents or contents.int_contents or contents.fp64_contents or contents.fp32_contents
    )
    return [int(v) for v in values]


def ensure_ghz() -> str:
    """ghz built from the Go module proxy into the cache once (`go install`), or the one on PATH."""
    if GHZ.exists():
        return str(GHZ)
    found = shutil.which("ghz")
    if found:
        return found
    log(f"Building {GHZ_MODULE} into {GHZ.parent} (once)")
    env = {**os.environ, "GOBIN": str(GHZ.parent), "GOFLAGS": "-buildvcs=false"}
    subprocess.run(["go", "install", GHZ_MODULE], env=env, check=True)
    return str(GHZ)


def measure_server(
    server: str,
    kind: str,
    model: tuple[Path, Path],
    venvs: dict[str, Path],
    work: Path,
    args: argparse.Namespace,
    expected: list[int] | None,
) -> dict[str, Any]:
    port = ports(args.port)[server][0]
    root = args.baseline if server == "ours-baseline" else ROOT
    if root is None:
        raise SystemExit("ours-baseline needs --baseline DIR (a checkout of this repository)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "operator"), str(root / "images/server")])}
    env.pop("VIRTUAL_ENV", None)
    grpc = args.ghz is not None and server != "ours-baseline"
    cmd = command(server, model, venvs, work, args.port, grpc)
    sample: dict[str, Any] = {"server": server, "model": kind, "loadavg_before_start": loadavg()}
    with running(["taskset", "-c", args.server_core, *cmd], env, work / f"{server}.log") as proc:
        started = time.perf_counter()
        while get(port, f"/v2/models/{MODEL_NAME}/ready") != 200:
            if proc.poll() is not None:
                tail = (work / f"{server}.log").read_text()[-3000:]
                raise RuntimeError(f"{server} exited with {proc.returncode}:\n{tail}")
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"{server} not ready after 120 s")
            time.sleep(0.005)
        sample["cold_start_s"] = time.perf_counter() - started
        sample["rss_ready_mib"] = tree_rss_mib(proc.pid)
        got = labels(post(port, v2_body(100)))
        if expected is not None and got != expected:
            raise RuntimeError(f"{server} predicted {got[:5]}..., ours {expected[:5]}...")
        sample["labels"] = got[:1]
        for name, (connections, rows) in SCENARIOS.items():
            script = work / f"{name}.lua"
            script.write_text(wrk_script(v2_body(rows)))
            url = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer"
            run_wrk(url, script, connections, args.warmup, args.client_core)
            sample[name] = run_wrk(url, script, connections, args.seconds, args.client_core)
        if grpc:
            grpc_port = ports(args.port)[server][1]
            got = grpc_labels(grpc_port, 100)
            if got != labels(post(port, v2_body(100))):
                raise RuntimeError(f"{server} answers gRPC with {got[:5]}..., HTTP otherwise")
            for name, (connections, rows) in GRPC_SCENARIOS.items():
                request = work / f"{name}.bin"
                request.write_bytes(grpc_request(rows))
                address = f"127.0.0.1:{grpc_port}"
                call = "inference.GRPCInferenceService.ModelInfer"
                run_ghz(address, PROTO, call, request, connections, args.warmup, args.client_core, args.ghz)
                sample[name] = run_ghz(
                    address, PROTO, call, request, connections, args.seconds, args.client_core, args.ghz
                )
        sample["rss_after_load_mib"] = tree_rss_mib(proc.pid)
    sample["loadavg_after"] = loadavg()
    return sample


# ------------------------------------------------------------------------------------------- report


def median(samples: list[dict[str, Any]], *path: str) -> float:
    values = []
    for s in samples:
        value: Any = s
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def summarise(samples: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind in MODELS:
        out[kind] = {}
        for server in SERVERS:
            mine = [s for s in samples if s["server"] == server and s["model"] == kind]
            if not mine:
                continue
            row = {
                "cold_start_s": median(mine, "cold_start_s"),
                "rss_ready_mib": median(mine, "rss_ready_mib"),
                "rss_after_load_mib": median(mine, "rss_after_load_mib"),
            }
            for scenario in (*SCENARIOS, *GRPC_SCENARIOS):
                if all(scenario in s for s in mine):
                    for metric in ("rps", "p50_ms", "p99_ms"):
                        row[f"{scenario}_{metric}"] = median(mine, scenario, metric)
            out[kind][server] = row
    return out


def table(summary: dict[str, dict[str, dict[str, float]]], floors: dict[str, Floor]) -> str:
    lines = [
        "| model | server | c1 req/s | c1 p50 / p99 ms | c16 req/s | c16 p50 / p99 ms "
        "| batch-100 p50 / p99 ms | cold start s | RSS ready / after load MiB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for kind, servers in summary.items():
        for server, r in servers.items():
            lines.append(
                f"| {kind} | {server} | {r['c1_rps']:.0f} | {r['c1_p50_ms']:.2f} / {r['c1_p99_ms']:.2f} "
                f"| {r['c16_rps']:.0f} | {r['c16_p50_ms']:.2f} / {r['c16_p99_ms']:.2f} "
                f"| {r['batch100_p50_ms']:.2f} / {r['batch100_p99_ms']:.2f} "
                f"| {r['cold_start_s']:.2f} | {r['rss_ready_mib']:.0f} / {r['rss_after_load_mib']:.0f} |"
            )
    lines += [
        "",
        "| model | ours | vs | c16 req/s ours/theirs | c16 p99 ours/theirs | c1 req/s ours/theirs "
        "| cold start ours/theirs | RSS ours/theirs |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for kind, servers in summary.items():
        for mine, server in [(m, t) for m in RUNTIMES for t in ("mlserver", "kserve")]:
            ours, theirs = servers.get(mine), servers.get(server)
            if ours is None or theirs is None:
                continue
            lines.append(
                f"| {kind} | {mine} | {server} | {ours['c16_rps'] / theirs['c16_rps']:.2f}x "
                f"| {ours['c16_p99_ms'] / theirs['c16_p99_ms']:.2f} "
                f"| {ours['c1_rps'] / theirs['c1_rps']:.2f}x "
                f"| {ours['cold_start_s'] / theirs['cold_start_s']:.2f} "
                f"| {ours['rss_after_load_mib'] / theirs['rss_after_load_mib']:.2f} |"
            )
    lines += grpc_tables(summary)
    lines += [
        "",
        "| model | predict 1 row ms (ours / ours-sklearn / plain numpy Pipeline) "
        "| predict 100 rows ms (ours / ours-sklearn / plain) "
        "| batch-100 p50 over predict(100) ms (ours / ours-sklearn) |",
        "|---|--:|--:|--:|",
    ]
    for kind, f in floors.items():
        overheads = []
        for mine, floor in (("ours", f.ours_100), ("ours-sklearn", f.ours_sklearn_100)):
            measured = summary.get(kind, {}).get(mine)
            overheads.append(f"{measured['batch100_p50_ms'] - floor:.2f}" if measured else "-")
        lines.append(
            f"| {kind} | {f.ours_1:.3f} / {f.ours_sklearn_1:.3f} / {f.plain_1:.3f} "
            f"| {f.ours_100:.3f} / {f.ours_sklearn_100:.3f} / {f.plain_100:.3f} | {' / '.join(overheads)} |"
        )
    return "\n".join(lines)


def grpc_tables(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """The gRPC rows (when measured): each server's numbers, then ours over theirs, then gRPC over REST."""
    rows = [(kind, server, r) for kind, servers in summary.items() for server, r in servers.items()]
    rows = [(kind, server, r) for kind, server, r in rows if "grpc_c1_rps" in r]
    if not rows:
        return []
    lines = [
        "",
        "gRPC (ModelInfer, typed fp64 contents; ghz, calls multiplexed on one connection):",
        "",
        "| model | server | c1 req/s | c1 p50 / p99 ms | c16 req/s | c16 p50 / p99 ms "
        "| batch-100 p50 / p99 ms | c16 req/s gRPC/REST |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for kind, server, r in rows:
        lines.append(
            f"| {kind} | {server} | {r['grpc_c1_rps']:.0f} "
            f"| {r['grpc_c1_p50_ms']:.2f} / {r['grpc_c1_p99_ms']:.2f} | {r['grpc_c16_rps']:.0f} "
            f"| {r['grpc_c16_p50_ms']:.2f} / {r['grpc_c16_p99_ms']:.2f} "
            f"| {r['grpc_batch100_p50_ms']:.2f} / {r['grpc_batch100_p99_ms']:.2f} "
            f"| {r['grpc_c16_rps'] / r['c16_rps']:.2f}x |"
        )
    lines += [
        "",
        "| model | ours | vs | gRPC c16 req/s ours/theirs | gRPC c16 p99 ours/theirs "
        "| gRPC c1 req/s ours/theirs | gRPC batch-100 p50 ours/theirs |",
        "|---|---|---|--:|--:|--:|--:|",
    ]
    for kind, servers in summary.items():
        for mine, server in [(m, t) for m in RUNTIMES for t in ("mlserver", "kserve")]:
            ours, theirs = servers.get(mine), servers.get(server)
            if ours is None or theirs is None or "grpc_c1_rps" not in ours or "grpc_c1_rps" not in theirs:
                continue
            lines.append(
                f"| {kind} | {mine} | {server} | {ours['grpc_c16_rps'] / theirs['grpc_c16_rps']:.2f}x "
                f"| {ours['grpc_c16_p99_ms'] / theirs['grpc_c16_p99_ms']:.2f} "
                f"| {ours['grpc_c1_rps'] / theirs['grpc_c1_rps']:.2f}x "
                f"| {ours['grpc_batch100_p50_ms'] / theirs['grpc_batch100_p50_ms']:.2f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians")
    parser.add_argument("--seconds", type=float, default=10, help="wrk duration per measurement")
    parser.add_argument("--warmup", type=float, default=3, help="wrk warm-up before each measurement")
    parser.add_argument("--server-core", default="1", help="CPU list for the servers (taskset -c)")
    parser.add_argument("--client-core", default="0", help="CPU list for wrk")
    parser.add_argument("--port", type=int, default=18300, help="first of the loopback ports used")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument(
        "--servers", default=",".join(SERVERS[:4]), help="comma-separated: " + ", ".join(SERVERS)
    )
    parser.add_argument(
        "--baseline", type=Path, help="a checkout whose server runs as ours-baseline (e.g. the main branch)"
    )
    parser.add_argument("--output", type=Path, help="JSON path (default: results/serving-<date>-<time>.json)")
    parser.add_argument(
        "--grpc",
        action="store_true",
        help=f"also measure gRPC (ModelInfer) with ghz ({GHZ_MODULE}, built into {GHZ.parent} once)",
    )
    args = parser.parse_args()
    args.ghz = ensure_ghz() if args.grpc else None
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool} on PATH (apt-get install -y wrk util-linux)")
    sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "images/trainer"), str(ROOT / "images/server")]
    servers = [s for s in args.servers.split(",") if s]
    venvs = competitor_venvs(servers)
    kinds = [k for k in args.models.split(",") if k]
    started = datetime.now(UTC)
    samples: list[dict[str, Any]] = []
    floors: dict[str, Floor] = {}
    with tempfile.TemporaryDirectory(prefix="mlops-bench-serving-") as tmp:
        work = Path(tmp)
        models = {}
        for kind in kinds:
            log(f"Training {kind} with mlops-trainer")
            models[kind] = train(work, kind)
            floors[kind] = predict_floor(*models[kind], args.server_core)
        for rnd in range(args.rounds):
            for kind in kinds:
                # Alternate the order each round, so no server always runs first (or after a given one).
                order = servers if rnd % 2 == 0 else servers[::-1]
                expected: list[int] | None = None
                for server in order:
                    log(f"Round {rnd + 1}/{args.rounds}: {kind} on {server}")
                    sample = measure_server(server, kind, models[kind], venvs, work, args, None)
                    sample["round"] = rnd + 1
                    if expected is None:
                        expected = sample["labels"]
                    samples.append(sample)
        # Every server must have predicted the same labels for the same 100 rows.
        for kind in kinds:
            got = {s["server"]: s["labels"] for s in samples if s["model"] == kind}
            if len({json.dumps(v) for v in got.values()}) != 1:
                raise SystemExit(f"servers disagree on {kind}: {got}")
    summary = summarise(samples)
    report = table(summary, floors)
    versions = {
        "python": platform.python_version(),
        "scikit-learn": sklearn_version(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        .stdout.split("\n")[0]
        .strip(),
    }
    if "mlserver" in venvs:
        versions["mlserver"] = package_version(venvs["mlserver"], "mlserver")
        versions["mlserver-sklearn"] = package_version(venvs["mlserver"], "mlserver-sklearn")
    if "kserve" in venvs:
        versions["kserve"] = package_version(venvs["kserve"], "kserve")
    if args.ghz:
        shown = subprocess.run([args.ghz, "--version"], capture_output=True, text=True, check=False)
        printed = (shown.stdout or shown.stderr).strip()
        # `go install` leaves the version unset ("dev"): the module version says which it is.
        versions["ghz"] = GHZ_MODULE.rpartition("@")[2] if printed in ("", "dev") else printed
    doc: dict[str, Any] = {
        "benchmark": "serving",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": next(
                (
                    line.split(":", 1)[1].strip()
                    for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")
                ),
                platform.processor(),
            ),
            "kernel": platform.release(),
        },
        "versions": versions,
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "mlserver": "parallel_workers=0 (its default 1 fails to start beside uvloop)",
            "kserve": f"kserve.Model subclass loading the joblib Pipeline, ModelServer {KSERVE_VERSION} defaults",
            "scenarios": {
                k: {"connections": c, "rows": r}
                for k, (c, r) in {**SCENARIOS, **(GRPC_SCENARIOS if args.ghz else {})}.items()
            },
        },
        "floor_ms": {k: vars(f) for k, f in floors.items()},
        "summary": summary,
        "samples": samples,
    }
    output = args.output or RESULTS / f"serving-{started:%Y-%m-%d-%H%M}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"Serving, {started:%Y-%m-%d}, {doc['machine']['cpu_model']} ({os.cpu_count()} cores), "
        f"one core per server, wrk on another; medians of {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s. Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ". MLServer with parallel_workers=0.\n"
    )
    print(report)
    print(f"\nRaw JSON: {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")


if __name__ == "__main__":
    main()
