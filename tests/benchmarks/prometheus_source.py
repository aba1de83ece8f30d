"""Pod scraping vs Prometheus (issue #21): what reading the serving metrics costs the operator.

    python tests/benchmarks/prometheus_source.py [--services 100] [--replicas 3] [--seconds 120]

It reports, it never asserts. Against the local cluster with kwok nodes (`NODE=kwok up.sh`, or the
one named by MLOPS_CLUSTER_STATE / MLOPS_CLUSTER_PORT_OFFSET), the operator running as its own
process (as operator_scale.py runs it), `--services` InferenceServices of one Verified iris
version, `--replicas` kwok pods each, monitoring every `--interval` seconds. kwok pods serve
nothing, so a few loopback servers stand in for them: each answers /metrics with the exposition
of a real inference server (mlops_server.monitoring, after traffic, drift and feedback) and counts
the requests it gets. The run is made twice, with the same services:

- pods: the operator scrapes every serving pod (its scraper maps each kwok pod to a stand-in);
- prometheus: spec.monitoring.prometheusUrl names a real Prometheus (tests/promkit.py) that
  scrapes one stand-in target per pod every 15 s with the PodMonitor's labels; the operator
  queries it.

Each is measured over `--seconds` once every service reports metrics: the operator's API
requests (the API server's apiserver_request_total, by verb and resource: kopf's watches and
the operator's own calls; the control plane's LIST/WATCH traffic for other components is
excluded by the operator-only rule of operator_scale.py), its outbound HTTP requests (stand-in
pods: scrapes counted by User-Agent; Prometheus: its own prometheus_http_requests_total for
/api/v1/query), and its CPU seconds and RSS (from /proc). Output: a Markdown table on stdout,
JSON in tests/benchmarks/results/prometheus-source-<services>x<replicas>-<date>-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from benchkit import loadavg, running
from operator_scale import Api, Sampler, deployment_env, requests_delta

ROOT: Final = Path(__file__).resolve().parents[2]
RESULTS: Final = ROOT / "tests/benchmarks/results"
LOCAL: Final = ROOT / "tests/cluster/local"
for source_root in ("tests", "tests/cluster", "operator", "images/server", "images/trainer"):
    sys.path.insert(0, str(ROOT / source_root))

from clusterkit import create, modelversion, run_verification, status_of, train_locally  # noqa: E402

from promkit import Prometheus, Target, ensure_binary  # noqa: E402

STAND_INS: Final = 4
MODEL_VERSION: Final = "iris-v1"

# The operator as deployed, with one addition for the pods mode: kwok pods have no reachable IP,
# so its scraper maps each pod (by name) to one of the stand-in servers' ports.
LAUNCHER: Final = """
import asyncio, sys, zlib
from mlops_operator.__main__ import lean_imports
lean_imports()
import kopf
from mlops_operator import handlers
from mlops_operator.logs import configure_logging
from mlops_operator.scraper import HttpScraper
from mlops_operator.settings import Settings
namespace, ports, health = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], sys.argv[3]
def address(pod):
    return "127.0.0.1", ports[zlib.crc32(pod["metadata"]["name"].encode()) % len(ports)]
configure_logging(json_format=True)
memo = kopf.Memo(settings=Settings.from_env(), scraper=HttpScraper(address=address))
asyncio.run(kopf.operator(namespaces=[namespace], standalone=True, memo=memo,
                          liveness_endpoint=f"http://127.0.0.1:{health}/healthz"))
"""


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def exposition() -> bytes:
    """What a real inference server answers on /metrics after some traffic, drift and feedback."""
    from mlops_server.monitoring import Metrics

    features = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    m = Metrics("iris", MODEL_VERSION, "ab" * 32, features=features, classification=True)
    for i in range(1000):
        m.count_request("v2", 200 if i % 50 else 500, 0.0004 + (i % 40) * 0.0001)
    m.set_drift(dict(zip(features, (0.02, 0.05, 0.31, 0.27), strict=True)), 0.12, 1000)
    m.set_feedback(200, 0.86)
    return m.exposition()


class StandIns:
    """Loopback servers answering /metrics, counting requests by client (operator or Prometheus)."""

    def __init__(self, count: int, body: bytes) -> None:
        self.counts: Counter[str] = Counter()
        lock = threading.Lock()
        counts = self.counts

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                who = "prometheus" if "Prometheus" in self.headers.get("User-Agent", "") else "operator"
                with lock:
                    counts[who] += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(count)]
        for s in self.servers:
            s.daemon_threads = True
            threading.Thread(target=s.serve_forever, daemon=True).start()
        self.ports = [s.server_address[1] for s in self.servers]

    def stop(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()


def kubectl(kctl: list[str], *args: str, data: Any = None, check: bool = True) -> str:
    done = subprocess.run(
        [*kctl, *args],
        input=json.dumps(data).encode() if data is not None else None,
        capture_output=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.decode()[-2000:]}")
    return done.stdout.decode()


def claim(kctl: list[str], namespace: str, host_dir: Path) -> None:
    """A bound claim `artifacts` on a hostPath volume (the ISVCs' Deployments mount it)."""
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-artifacts"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(host_dir)},
            "claimRef": {"namespace": namespace, "name": "artifacts"},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "artifacts", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": pv["metadata"]["name"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    kubectl(kctl, "apply", "-f", "-", data={"apiVersion": "v1", "kind": "List", "items": [pv, pvc]})


PODS_PER_NODE: Final = 110


def kwok_nodes(kctl: list[str], pods: int) -> list[str]:
    """Extra kwok nodes so that `pods` more pods fit (up.sh's two take 110 each, and other pods
    may be there already); returns their names, for deletion at the end."""
    free = 0
    for node in json.loads(kubectl(kctl, "get", "nodes", "-o", "json"))["items"]:
        used = kubectl(kctl, "get", "pods", "-A", "--field-selector", f"spec.nodeName={node['metadata']['name']}", "-o", "name")  # fmt: skip
        free += int(node["status"]["allocatable"]["pods"]) - len(used.split())
    added = []
    for i in range(max(0, -(-(pods - free) // PODS_PER_NODE))):
        name = f"bench-kwok-{i}"
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": name},
            },
            "status": {
                "capacity": {"cpu": "32", "memory": "128Gi", "pods": str(PODS_PER_NODE)},
                "allocatable": {"cpu": "32", "memory": "128Gi", "pods": str(PODS_PER_NODE)},
                # kwok's pod stage gives pods their host IP from here: without one they stay Pending.
                "addresses": [
                    {"type": "InternalIP", "address": f"10.240.1.{10 + i}"},
                    {"type": "Hostname", "address": name},
                ],
            },
        }
        kubectl(kctl, "create", "-f", "-", data=node, check=False)
        added.append(name)
    if added:
        log(f"Added kwok nodes {', '.join(added)} for {pods} pods ({free} free)")
    return added


def inferenceservice(name: str, replicas: int, interval: int, prometheus_url: str | None) -> dict[str, Any]:
    monitoring: dict[str, Any] = {"intervalSeconds": interval}
    if prometheus_url:
        monitoring["prometheusUrl"] = prometheus_url
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"model": "iris", "version": 1, "replicas": replicas, "monitoring": monitoring},
    }


def prometheus_queries(prom: Prometheus) -> float:
    """Instant queries Prometheus has answered (its own /metrics: it does not scrape itself here)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{prom.url}/metrics", timeout=10) as answer:  # loopback only
        text = answer.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "prometheus_http_requests_total" and s.labels.get("handler") == "/api/v1/query"
    )


def all_reporting(api: Api, namespace: str, names: list[str], mode: str) -> int:
    """How many of the services are Ready (every pod running: the rollout is over, so the
    window measures the steady state) with status.metrics from this mode's source."""
    items = {i["metadata"]["name"]: i for i in api.list("inferenceservices", namespace)}
    done = 0
    for name in names:
        status = (items.get(name) or {}).get("status") or {}
        metrics = status.get("metrics") or {}
        from_prometheus = any(c.get("type") == "MetricsAvailable" and c.get("status") == "True" for c in status.get("conditions") or [])  # fmt: skip
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])  # fmt: skip
        rolled = status.get("readyReplicas") == status.get("replicas")
        if ready and rolled and metrics.get("requests") and (from_prometheus == (mode == "prometheus")):
            done += 1
    return done


def run_mode(
    mode: str, args: argparse.Namespace, ctx: dict[str, Any], stand_ins: StandIns, prom: Prometheus
) -> dict[str, Any]:
    api, kctl, namespace = ctx["api"], ctx["kctl"], args.namespace
    names = [f"svc-{i:03d}" for i in range(args.services)]
    url = prom.url if mode == "prometheus" else None
    env = {**os.environ, **deployment_env(), "KUBECONFIG": ctx["kubeconfig"], "MLOPS_PROMETHEUS_MIN_WINDOW_SECONDS": "60"}  # fmt: skip
    cmd = [
        sys.executable,
        "-c",
        LAUNCHER,
        namespace,
        ",".join(map(str, stand_ins.ports)),
        str(args.health_port),
    ]
    logfile = Path(f"/tmp/mlops-bench-prometheus-{mode}-{os.getpid()}.log")
    with running(cmd, env, logfile) as proc:
        sampler = Sampler(proc.pid)
        sampler.start()
        deadline = time.time() + 60
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{args.health_port}/healthz", timeout=1),
            ):
                break
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"the operator did not start; see {logfile}")
            time.sleep(0.2)
        log(f"{mode}: applying {len(names)} InferenceServices x{args.replicas}")
        items = [inferenceservice(n, args.replicas, args.interval, url) for n in names]
        kubectl(kctl, "apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-", data={"apiVersion": "v1", "kind": "List", "items": items})  # fmt: skip
        t0 = time.time()
        while (n := all_reporting(api, namespace, names, mode)) < len(names):
            if time.time() - t0 > args.timeout:
                raise SystemExit(
                    f"{mode}: only {n}/{len(names)} services report metrics after {args.timeout}s"
                )
            time.sleep(5)
        settled = time.time() - t0
        time.sleep(args.settle)  # the last rollout's status writes and Events
        log(f"{mode}: every service reports metrics after {settled:.0f} s; measuring {args.seconds:g} s")
        api.mine.clear()
        before, scrapes0, queries0, start = api.metrics(), stand_ins.counts["operator"], prometheus_queries(prom), time.time()  # fmt: skip
        load0 = loadavg()
        time.sleep(args.seconds)
        after, scrapes1, queries1, end = api.metrics(), stand_ins.counts["operator"], prometheus_queries(prom), time.time()  # fmt: skip
        sampler.stop()
        result = {
            "settled_seconds": round(settled, 1),
            "window_seconds": round(end - start, 1),
            "operator_api_requests": requests_delta(before, after, api.mine, jobs={}),
            "pod_scrapes": scrapes1 - scrapes0,
            "prometheus_queries": round(queries1 - queries0),
            "process": sampler.window(start, end),
            "loadavg": [load0, loadavg()],
        }
        kubectl(kctl, "delete", "inferenceservices", "--all", "-n", namespace, "--wait=true", "--timeout=300s", check=False)  # fmt: skip
    return result


def setup(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    kubeconfig = subprocess.run([str(LOCAL / "kubeconfig.sh")], capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    built = subprocess.run([str(LOCAL / "build.sh")], capture_output=True, text=True, check=True)
    kctl = [built.stdout.strip().splitlines()[-1] + "/kubectl", "--kubeconfig", kubeconfig]
    os.environ["KUBECONFIG"] = kubeconfig
    kubectl(kctl, "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    kubectl(kctl, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    kubectl(kctl, "create", "namespace", args.namespace, check=False)
    pvc_root = work / "pvc"
    (pvc_root / "artifacts").mkdir(parents=True)
    claim(kctl, args.namespace, pvc_root / "artifacts")
    from kubernetes import client, config

    from mlops_operator.kube import Kube

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return {"kubeconfig": kubeconfig, "kctl": kctl, "api": Api(kubeconfig), "kube": Kube(client.ApiClient(cfg)), "pvc_root": pvc_root}  # fmt: skip


def verified_version(ctx: dict[str, Any], args: argparse.Namespace, stand_ins: StandIns) -> None:
    """iris-v1: trained here, registered, verified by its verify pod run here (as the cluster
    tier does), with the operator (pods mode) running to verify it."""
    result = train_locally(ctx["pvc_root"], "bench")
    body = modelversion(MODEL_VERSION, 1, result["artifactUri"], result["sha256"], signature=result["signature"], metrics=result["metrics"], primaryMetric=result["primaryMetric"])  # fmt: skip
    env = {**os.environ, **deployment_env(), "KUBECONFIG": ctx["kubeconfig"]}
    cmd = [
        sys.executable,
        "-c",
        LAUNCHER,
        args.namespace,
        ",".join(map(str, stand_ins.ports)),
        str(args.health_port),
    ]
    with running(cmd, env, Path(f"/tmp/mlops-bench-prometheus-setup-{os.getpid()}.log")):
        create(ctx["kube"], args.namespace, body)
        run_verification(ctx["kube"], args.namespace, MODEL_VERSION, ctx["pvc_root"])
        t0 = time.time()
        while (
            status_of(ctx["kube"], "ModelVersion", args.namespace, MODEL_VERSION).get("phase") != "Verified"
        ):
            if time.time() - t0 > 120:
                raise SystemExit(f"{MODEL_VERSION} not Verified")
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--interval", type=int, default=30, help="spec.monitoring.intervalSeconds")
    parser.add_argument("--seconds", type=float, default=120, help="the measured window per mode")
    parser.add_argument(
        "--timeout", type=float, default=600, help="give up waiting for metrics after this long"
    )
    parser.add_argument("--settle", type=float, default=20, help="wait this long after the rollouts ended")
    parser.add_argument("--namespace", default=f"bench-prom-{datetime.now():%H%M%S}")
    parser.add_argument("--health-port", type=int, default=18481)
    parser.add_argument("--modes", default="pods,prometheus")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlops-bench-prom-"))
    stand_ins = StandIns(STAND_INS, exposition())
    names = [f"svc-{i:03d}" for i in range(args.services)]
    targets = [
        Target(
            stand_ins.ports[(i * args.replicas + r) % STAND_INS],
            {"namespace": args.namespace, "pod": f"{n}-{r}", "inference_service": n, "track": "stable"},
        )
        for i, n in enumerate(names)
        for r in range(args.replicas)
    ]
    prom = Prometheus.start(ensure_binary(), work, targets, interval="15s")
    ctx: dict[str, Any] = {}
    results: dict[str, Any] = {}
    try:
        ctx = setup(args, work)
        ctx["nodes"] = kwok_nodes(ctx["kctl"], args.services * args.replicas + 2)
        verified_version(ctx, args, stand_ins)
        for mode in args.modes.split(","):
            results[mode] = run_mode(mode, args, ctx, stand_ins, prom)
            log(
                f"{mode}: {json.dumps({k: v for k, v in results[mode].items() if k != 'operator_api_requests'})}"
            )
    finally:
        prom.stop()
        stand_ins.stop()
        if ctx:
            kubectl(ctx["kctl"], "delete", "namespace", args.namespace, "--wait=false", check=False)
            kubectl(ctx["kctl"], "delete", "pv", f"{args.namespace}-artifacts", "--wait=false", check=False)
            for node in ctx.get("nodes") or []:
                kubectl(ctx["kctl"], "delete", "node", node, "--wait=false", check=False)
            ctx["kube"].close()
        shutil.rmtree(work, ignore_errors=True)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    doc = {
        "benchmark": "prometheus-source",
        "date": datetime.now().isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "services": args.services,
        "replicas": args.replicas,
        "interval_seconds": args.interval,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = (
        args.output
        or RESULTS / f"prometheus-source-{args.services}x{args.replicas}-{datetime.now():%Y%m%d-%H%M%S}.json"
    )
    out.write_text(json.dumps(doc, indent=2) + "\n")
    minutes = {mode: r["window_seconds"] / 60 for mode, r in results.items()}
    print(f"| {args.services} InferenceServices x {args.replicas} pods, interval {args.interval} s | " + " | ".join(results) + " |")  # fmt: skip
    print("|---|" + "---|" * len(results))
    rows = {
        "operator API requests / min": lambda r, m: r["operator_api_requests"]["operator_only"] / m,
        "outbound HTTP requests / min (pod scrapes + PromQL queries)": lambda r, m: (
            (r["pod_scrapes"] + r["prometheus_queries"]) / m
        ),
        "operator CPU (% of a core)": lambda r, m: r["process"]["cpu_percent"],
        "operator peak RSS (MiB)": lambda r, m: r["process"]["peak_rss_mib"],
    }
    for title, value in rows.items():
        print(
            f"| {title} | "
            + " | ".join(f"{value(r, minutes[mode]):.1f}" for mode, r in results.items())
            + " |"
        )
    log(f"JSON: {out}")


if __name__ == "__main__":
    main()
