"""Training benchmark (issue #23): a tuned TrainingJob on the real node vs scikit-learn's
GridSearchCV(n_jobs=2) in one process, on the same generated table, grid and folds.

    python tests/benchmarks/training.py --rows 100000 [--rows 1000000] [--skip-trainingjob]

For each size: a seeded table of `rows` x 30 columns (20 float, 4 integer, 6 text; about 5 %
missing values in the float and text columns; a binary target) is written as CSV, then

- in-process: a child process reads the CSV, prepares it with the trainer's own code
  (mlops_trainer.data, the same pipeline the pods build), runs GridSearchCV(n_jobs=2) with the
  trainer's folds on the training split, refits the best and scores the held-out rows. Wall
  time from start to the score; peak memory: the highest sum of the resident memory of the
  process and its workers (sampled from /proc every 0.1 s).
- in-process halving: the same with HalvingGridSearchCV(factor=2): would early stopping of
  hopeless trials (successive halving on the number of rows) pay on this grid?
- TrainingJob: the CSV on a hostPath PersistentVolume of the local cluster's real node, a
  TrainingJob with the same grid (`parallelism` 2: two trials at a time on the 2-core node),
  wall time from create to `Succeeded` as the client sees it; peak memory per pod from each
  trainer's own log line (`peakMemoryBytes`, its ru_maxrss).

Needs the local cluster with NODE=real and the operator deployed (`make deploy`); run it
under `flock /work/realnode.lock` on a shared machine. Reports, never asserts. Results go
to stdout (Markdown) and tests/benchmarks/results/training-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).parent))
from benchkit import loadavg  # noqa: E402

ESTIMATOR = "HistGradientBoostingClassifier"
PARAMS = {"max_iter": 50, "early_stopping": False}
GRID = {"max_depth": [3, 6], "learning_rate": [0.1, 0.3]}
CV = 3
TARGET = "label"


def generate(rows: int, path: Path, seed: int = 23) -> None:
    """rows x 30 columns: f0..f19 float, i0..i3 integer, c0..c5 text; ~5 % missing; binary label."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    signal = np.zeros(rows)
    for i in range(20):
        values = rng.normal(0, 1, rows)
        signal += values * (0.3 if i < 5 else 0.02)
        values[rng.random(rows) < 0.05] = np.nan
        columns[f"f{i}"] = values.round(4)
    for i in range(4):
        values = rng.integers(0, 50, rows)
        signal += (values > 25) * (0.2 if i == 0 else 0.0)
        columns[f"i{i}"] = values
    for i in range(6):
        levels = np.array([f"c{i}_{k}" for k in range(8)], dtype=object)
        codes = rng.integers(0, 8, rows)
        signal += (codes == 0) * (0.5 if i < 2 else 0.0)
        values = levels[codes]
        values[rng.random(rows) < 0.05] = None
        columns[f"c{i}"] = values
    columns[TARGET] = np.where(signal + rng.normal(0, 0.5, rows) > np.median(signal), "yes", "no")
    pd.DataFrame(columns).to_csv(path, index=False)


def memory_limit(rows: int) -> str:
    """The pods' limit: 3 GiB up to 100k rows, 8 GiB at 1M (two trial pods fit the 24 GiB node)."""
    return "3Gi" if rows <= 100_000 else "8Gi"


def spec(uri: str, rows: int) -> dict[str, Any]:
    return {
        "model": "bench",
        "data": {"source": {"uri": uri}, "target": TARGET},
        "estimator": {"class": ESTIMATOR, "params": PARAMS},
        "tuning": {"strategy": "grid", "space": GRID, "cv": CV, "parallelism": 2},
        "output": {"uri": "pvc://bench-data/models"},
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"memory": memory_limit(rows)},
        },
        "activeDeadlineSeconds": 7200,
    }


# --- in one process ---------------------------------------------------------------------------


def inprocess_child(csv: str, halving: bool) -> None:
    """Runs in the measured child: the trainer's preparation, then GridSearchCV(n_jobs=2) or,
    `halving`, HalvingGridSearchCV(factor=2, n_jobs=2) on the same grid and folds (does early
    stopping of hopeless trials pay on this grid? issue #23)."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import GridSearchCV, HalvingGridSearchCV, StratifiedKFold

    from mlops_contract.api.trainingjob import TrainingJobSpec
    from mlops_trainer.data import load_dataset, split_dataset
    from mlops_trainer.metrics import scorer
    from mlops_trainer.pipeline import build_model, resolve_params

    started = time.perf_counter()
    s = TrainingJobSpec.model_validate(spec(f"pvc://bench/{Path(csv).name}", 0))
    env = {"MLOPS_PVC_ROOT": str(Path(csv).parent.parent), "MLOPS_MEMORY_LIMIT": str(64 << 30)}
    with tempfile.TemporaryDirectory() as work:
        ds = load_dataset(s, Path(work), env)
    split = split_dataset(ds, s.data.split)
    model = build_model(ds, s, resolve_params(s, {}))
    folds = StratifiedKFold(n_splits=CV, shuffle=True, random_state=s.data.split.seed)
    classes = sorted(split.y_train.unique().tolist())
    grid = {f"estimator__{k}": v for k, v in GRID.items()}
    scoring = scorer("accuracy", ds.task, classes)
    search: GridSearchCV | HalvingGridSearchCV
    if halving:
        search = HalvingGridSearchCV(
            model, grid, cv=folds, n_jobs=2, scoring=scoring, factor=2, random_state=0
        )
    else:
        search = GridSearchCV(model, grid, cv=folds, n_jobs=2, scoring=scoring)
    search.fit(split.X_train, split.y_train)
    score = float(search.best_estimator_.score(split.X_test, split.y_test))
    print(
        json.dumps({"seconds": time.perf_counter() - started, "accuracy": score, "best": search.best_params_})
    )


def _tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry.name)] = int(line.split()[1]) * 1024
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def run_inprocess(csv: Path, *, halving: bool = False) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "images/trainer"))}
    load_before = loadavg()
    child = [sys.executable, __file__, "--child", str(csv), *(["--halving"] if halving else [])]
    proc = subprocess.Popen(child, env=env, stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"the in-process search failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result | {"peakMemoryBytes": peak, "loadBefore": load_before, "loadAfter": loadavg()}


# --- as a TrainingJob -----------------------------------------------------------------------------


class Kubectl:
    def __init__(self, kubectl: str, kubeconfig: str) -> None:
        self.base = [kubectl, "--kubeconfig", kubeconfig]

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [*self.base, *args], input=input, capture_output=True, text=True, timeout=600, check=False
        )
        if check and proc.returncode:
            raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout


def run_trainingjob(k: Kubectl, csv: Path, host_dir: Path, timeout: float, rows: int) -> dict[str, Any]:
    ns = f"bench-training-{uuid.uuid4().hex[:6]}"
    pv = f"{ns}-data"
    k("create", "namespace", ns)
    try:
        volume = [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": "20Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(host_dir), "type": "Directory"},
                    "claimRef": {"namespace": ns, "name": "bench-data"},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "bench-data", "namespace": ns},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "20Gi"}},
                },
            },
        ]
        k("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": volume}))
        tj = {
            "apiVersion": "mlops.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "bench", "namespace": ns},
            "spec": spec(f"pvc://bench-data/{csv.name}", rows),
        }
        load_before = loadavg()
        started = time.monotonic()
        k("apply", "-f", "-", input=json.dumps(tj))
        status: dict[str, Any] = {}
        while time.monotonic() - started < timeout:
            status = json.loads(k("-n", ns, "get", "trainingjob", "bench", "-o", "json")).get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        seconds = time.monotonic() - started
        pods = json.loads(k("-n", ns, "get", "pods", "-l", "mlops.dev/training-job=bench", "-o", "json"))[
            "items"
        ]
        per_pod = {}
        for pod in pods:
            name = pod["metadata"]["name"]
            for line in k("-n", ns, "logs", name, check=False).splitlines():
                if line.startswith("{") and '"peakMemoryBytes"' in line:
                    per_pod[name] = json.loads(line)["peakMemoryBytes"]
        return {
            "seconds": seconds,
            "phase": status.get("phase"),
            "message": status.get("message"),
            "accuracy": (status.get("metrics") or {}).get("accuracy"),
            "bestParams": status.get("bestParams"),
            "trials": status.get("trials"),
            "podPeakMemoryBytes": per_pod,
            "loadBefore": load_before,
            "loadAfter": loadavg(),
        }
    finally:
        k("delete", "namespace", ns, "--wait=false", check=False)
        k("delete", "pv", pv, "--wait=false", check=False)


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / (1 << 20):,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, action="append", help="table sizes (default 100000)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--halving", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skip-trainingjob", action="store_true", help="measure only the in-process search")
    parser.add_argument("--kubectl", default=os.environ.get("MLOPS_KUBECTL", "kubectl"))
    parser.add_argument("--kubeconfig", default=os.environ.get("MLOPS_BENCH_KUBECONFIG", ""))
    parser.add_argument(
        "--data-dir", default="/var/tmp/mlops-bench-training", help="host directory for the CSV"
    )
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    if args.child:
        inprocess_child(args.child, args.halving)
        return
    rows_list = args.rows or [100_000]
    k = None if args.skip_trainingjob else Kubectl(args.kubectl, args.kubeconfig)
    results = []
    for rows in rows_list:
        host_dir = Path(args.data_dir) / "bench"
        host_dir.mkdir(parents=True, exist_ok=True)
        host_dir.chmod(0o1777)  # the trainer runs as a non-root user and writes its artifact here
        csv = host_dir / f"table-{rows}.csv"
        if not csv.exists():
            generate(rows, csv)
        csv.chmod(0o644)
        entry: dict[str, Any] = {"rows": rows, "columns": 30, "csvBytes": csv.stat().st_size}
        entry["inProcess"] = run_inprocess(csv)
        print(f"{rows} rows in-process: {json.dumps(entry['inProcess'])}", file=sys.stderr)
        entry["inProcessHalving"] = run_inprocess(csv, halving=True)
        print(f"{rows} rows in-process halving: {json.dumps(entry['inProcessHalving'])}", file=sys.stderr)
        if k is not None:
            entry["trainingJob"] = run_trainingjob(k, csv, host_dir, args.timeout, rows)
            print(f"{rows} rows TrainingJob: {json.dumps(entry['trainingJob'])[:2000]}", file=sys.stderr)
        results.append(entry)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"training-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {"estimator": ESTIMATOR, "params": PARAMS, "grid": GRID, "cv": CV, "results": results}, indent=1
        )
    )
    print(
        "| rows | in-process GridSearchCV(n_jobs=2) | peak | TrainingJob | peak per pod (max) | ratio "
        "| in-process HalvingGridSearchCV(factor=2) | halving / grid |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for e in results:
        ip, tj, hv = e["inProcess"], e.get("trainingJob"), e["inProcessHalving"]
        pods = (tj or {}).get("podPeakMemoryBytes") or {}
        ratio = f"{tj['seconds'] / ip['seconds']:.2f}x" if tj and tj.get("phase") == "Succeeded" else "-"
        measured = f"{tj['seconds']:.1f} s ({tj['phase']})" if tj else "not measured"
        pod_peak = mib(max(pods.values())) if pods else "-"
        print(
            f"| {e['rows']:,} | {ip['seconds']:.1f} s | {mib(ip['peakMemoryBytes'])} | "
            f"{measured} | {pod_peak} | {ratio} | {hv['seconds']:.1f} s, accuracy {hv['accuracy']:.4f} "
            f"(grid {ip['accuracy']:.4f}) | {hv['seconds'] / ip['seconds']:.2f}x |"
        )
    print(f"\nraw: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
