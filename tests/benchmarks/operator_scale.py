"""Operator-at-scale benchmark: many TrainingJobs against the local cluster with simulated nodes.

    python tests/benchmarks/operator_scale.py [--count 1000] [--steady 50] [--idle-seconds 120]

Issue #10. It reports, it never asserts. Against the local cluster (`make cluster-up`, or the
one named by MLOPS_CLUSTER_STATE / MLOPS_CLUSTER_PORT_OFFSET; kwok nodes, so trainer pods never
run: this measures the operator, not training), with the operator running as a separate
process (the `mlops-operator` console script, KUBECONFIG set, one namespace, standalone):

1. burst: creates `--count` TrainingJobs as fast as 8 client threads can (a GitOps sync of a
   whole directory) and times, for each, create returned -> its Job seen on a watch
   (create->Job latency, p50/p99), and the time until every TrainingJob has its Job and
   status.phase Running ("settled"; pods on kwok never finish, so Running is the end state);
2. steady: with those `--count` TrainingJobs live, creates `--steady` more one at a time,
   5 per second, and times create->Job for each (the latency a user sees on a busy operator);
3. idle: once the control plane has stopped writing (the Job controller creates the pods at its
   own pace, and each changes its Job's status, which the operator must reconcile), it measures
   `--idle-seconds` in which nothing changes.

Throughout, a sampler reads the operator's RSS and CPU time from /proc every 0.25 s. API
requests come from the API server's `apiserver_request_total` (it has no user label), as
deltas per phase by verb and resource, minus the requests this script made itself; the
control plane's own traffic (leases, the Job controller, the scheduler, kwok) is in the total,
so the JSON also gives the part only the operator makes (everything on mlops.dev resources,
and GET/POST/PATCH/APPLY on Jobs and PersistentVolumeClaims, which the other components only
watch). Output: a Markdown table on stdout and raw JSON in
tests/benchmarks/results/operator-scale-<count>-<date>-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import loadavg, running

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests/benchmarks/results"
LOCAL = ROOT / "tests/cluster/local"
GROUP = "mlops.dev"
VERSION = "v1alpha1"
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
OPERATOR_ONLY_VERBS = {"GET", "POST", "PATCH", "APPLY", "PUT", "DELETE"}


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# ------------------------------------------------------------------------------------- the API


class Api:
    """The few calls the benchmark makes, counted so they can be subtracted from the server's totals."""

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        self.client = config.new_client_from_config(config_file=kubeconfig)
        self.custom = client.CustomObjectsApi(self.client)
        self.core = client.CoreV1Api(self.client)
        self.batch = client.BatchV1Api(self.client)
        self.mine: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def count(self, verb: str, resource: str) -> None:
        with self.lock:
            self.mine[(verb, resource)] += 1

    def metrics(self) -> Counter[tuple[str, str, str]]:
        """apiserver_request_total summed by (verb, group, resource[/subresource])."""
        response = self.client.call_api(
            "/metrics",
            "GET",
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        out: Counter[tuple[str, str, str]] = Counter()
        for line in response.data.decode().splitlines():
            match = METRIC.match(line)
            if not match:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            out[(labels.get("verb", ""), labels.get("group", ""), resource)] += int(float(match["value"]))
        return out

    def create_tj(self, namespace: str, body: dict[str, Any]) -> None:
        self.count("POST", "trainingjobs")
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", body)

    def list_tjs(self, namespace: str) -> list[dict[str, Any]]:
        self.count("LIST", "trainingjobs")
        items: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs"
        )["items"]
        return items


def trainingjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name, "labels": {"mlops.dev/benchmark": "operator-scale"}},
        "spec": {
            "model": "iris",
            "data": {"source": {"uri": "builtin:iris"}},
            "estimator": {"class": "LogisticRegression", "params": {"max_iter": 200}},
        },
    }


class JobWatch:
    """Records when each training Job of the namespace is first seen (ADDED) on a watch."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.created: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from kubernetes import watch

        resource_version = None
        while not self._stop.is_set():
            w = watch.Watch()
            self.api.count("WATCH", "jobs")
            try:
                for event in w.stream(
                    self.api.batch.list_namespaced_job,
                    self.namespace,
                    timeout_seconds=60,
                    resource_version=resource_version,
                    _request_timeout=70,
                ):
                    obj = event["object"]
                    name = obj.metadata.name
                    resource_version = obj.metadata.resource_version
                    owner = (obj.metadata.labels or {}).get("mlops.dev/training-job") or next(
                        (o.name for o in obj.metadata.owner_references or [] if o.kind == "TrainingJob"), None
                    )
                    if owner and event["type"] in ("ADDED", "MODIFIED"):
                        with self.lock:
                            self.seen.setdefault(owner, time.time())
                            self.created.setdefault(owner, obj.metadata.creation_timestamp.isoformat())
                        del name
                    if self._stop.is_set():
                        w.stop()
            except Exception as e:  # a dropped watch: resume from the last version seen
                log(f"Job watch restarted after {type(e).__name__}")
                resource_version = None
                time.sleep(0.2)


# --------------------------------------------------------------------------------- the operator


class Sampler:
    """RSS and CPU seconds of one process, every `interval` seconds, in a thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (time, rss MiB, cpu seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float, float, float] | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
        cpu = (int(stat[11]) + int(stat[12])) / self.tick  # utime + stime
        return time.time(), rss, cpu

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self.read()
            if sample:
                self.samples.append(sample)
            time.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, start: float, end: float) -> dict[str, float]:
        inside = [s for s in self.samples if start <= s[0] <= end] or self.samples[-1:]
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        cpu = inside[-1][2] - before[-1][2]
        wall = max(end - start, 1e-9)
        return {
            "seconds": round(wall, 2),
            "peak_rss_mib": round(max(s[1] for s in inside), 1),
            "end_rss_mib": round(inside[-1][1], 1),
            "cpu_seconds": round(cpu, 2),
            "cpu_percent": round(100 * cpu / wall, 1),
        }


def operator_command(namespace: str, port: int) -> list[str]:
    """The `mlops-operator` console script of this interpreter's environment, on one namespace."""
    exe = Path(sys.executable).parent / "mlops-operator"
    return [
        str(exe),
        "--namespace",
        namespace,
        "--standalone",
        "--liveness",
        f"http://127.0.0.1:{port}/healthz",
    ]


# ------------------------------------------------------------------------------------- phases


def requests_delta(
    before: Counter[tuple[str, str, str]],
    after: Counter[tuple[str, str, str]],
    mine: Counter[tuple[str, str]],
) -> dict[str, Any]:
    delta = Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0})
    for (verb, resource), n in mine.items():
        for key in list(delta):
            if key[0] == verb and key[2] == resource:
                delta[key] = max(0, delta[key] - n)
                break
    # Non-resource URLs (resource "") are /metrics, /healthz, discovery: not the operator's work.
    total = sum(n for k, n in delta.items() if k[2])
    operator_only = sum(
        n
        for (verb, group, resource), n in delta.items()
        if group == GROUP
        or (resource.split("/")[0] in ("jobs", "persistentvolumeclaims") and verb in OPERATOR_ONLY_VERBS)
    )
    return {
        "total": total,
        "operator_only": operator_only,
        "by_verb_resource": {
            f"{verb} {group + '/' if group else ''}{resource}": n
            for (verb, group, resource), n in sorted(delta.items(), key=lambda kv: -kv[1])
            if resource and n
        },
    }


def quiesce(api: Api, timeout: float, window: float = 10.0) -> float:
    """Seconds until a `window` passes with no writes but leases, node status and events; nan on timeout."""
    t0 = time.time()
    previous = api.metrics()
    while time.time() - t0 < timeout:
        time.sleep(window)
        current = api.metrics()
        writes = sum(
            current[k] - previous.get(k, 0)
            for k in current
            if k[0] in ("POST", "PUT", "PATCH", "APPLY", "DELETE")
            and k[2].split("/")[0] not in ("leases", "nodes", "events")
        )
        previous = current
        if writes == 0:
            return round(time.time() - t0, 1)
    return float("nan")


def settled(api: Api, namespace: str, names: set[str]) -> int:
    done = 0
    for tj in api.list_tjs(namespace):
        status = tj.get("status") or {}
        if tj["metadata"]["name"] in names and status.get("jobName") and status.get("phase") == "Running":
            done += 1
    return done


def latencies(created: dict[str, float], watch: JobWatch) -> list[float]:
    with watch.lock:
        return [watch.seen[n] - t for n, t in created.items() if n in watch.seen]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="TrainingJobs created in the burst")
    parser.add_argument(
        "--steady", type=int, default=50, help="more created one by one once the burst settled"
    )
    parser.add_argument("--idle-seconds", type=float, default=120)
    parser.add_argument("--namespace", default=f"bench-scale-{datetime.now():%H%M%S}")
    parser.add_argument(
        "--kubeconfig", help="default: the local cluster's (tests/cluster/local/kubeconfig.sh)"
    )
    parser.add_argument("--health-port", type=int, default=18480, help="the operator's liveness endpoint")
    parser.add_argument("--timeout", type=float, default=900, help="give up settling after this long")
    parser.add_argument("--keep", action="store_true", help="leave the namespace and its objects behind")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "operator")]

    kubeconfig = (
        args.kubeconfig
        or subprocess.run(
            [str(LOCAL / "kubeconfig.sh")], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    kubectl = subprocess.run([str(LOCAL / "build.sh")], capture_output=True, text=True, check=True)
    kubectl_bin = kubectl.stdout.strip().splitlines()[-1] + "/kubectl"
    kctl = [kubectl_bin, "--kubeconfig", kubeconfig]
    log(f"Applying the CRDs and namespace {args.namespace} (cluster: {kubeconfig})")
    subprocess.run([*kctl, "apply", "-k", str(ROOT / "crds")], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        [*kctl, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [*kctl, "create", "namespace", args.namespace], check=False, capture_output=True
    )  # may exist from an interrupted run
    # The claim the default output URI names (pvc://mlops-artifacts/...); the operator only checks
    # it exists. Unbound on purpose: pods stay Pending, nothing runs, the operator is measured.
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "mlops-artifacts", "namespace": args.namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    subprocess.run(
        [*kctl, "apply", "-f", "-"], input=json.dumps(pvc).encode(), check=True, stdout=subprocess.DEVNULL
    )

    api = Api(kubeconfig)
    if api.list_tjs(args.namespace):
        raise SystemExit(f"namespace {args.namespace} already has TrainingJobs; delete it first")
    started = datetime.now(UTC)
    phases: dict[str, Any] = {}
    logfile = Path(f"/tmp/mlops-bench-operator-{os.getpid()}.log")
    watch = JobWatch(api, args.namespace)
    watch.start()
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    with running(operator_command(args.namespace, args.health_port), env, logfile) as proc:
        sampler = Sampler(proc.pid)
        sampler.start()
        t_spawn = time.time()
        while True:  # kopf answers its liveness endpoint once its watches are up
            with contextlib.suppress(OSError):
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{args.health_port}/healthz", timeout=1):
                    break
            if proc.poll() is not None:
                raise SystemExit(f"the operator exited ({proc.returncode}); see {logfile}")
            time.sleep(0.1)
        phases["startup"] = {
            "ready_seconds": round(time.time() - t_spawn, 2),
            **sampler.window(t_spawn, time.time()),
        }
        time.sleep(2)

        # burst
        log(f"Creating {args.count} TrainingJobs")
        metrics0, load0 = api.metrics(), loadavg()
        mine0 = Counter(api.mine)
        created: dict[str, float] = {}
        t0 = time.time()

        def create(i: int) -> None:
            name = f"bench-{i:05d}"
            api.create_tj(args.namespace, trainingjob(name))
            created[name] = time.time()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(args.count)))
        t_created = time.time()
        names = set(created)
        log(f"Created {args.count} in {t_created - t0:.1f} s; waiting for every Job and phase Running")
        done = 0
        while time.time() - t0 < args.timeout:
            done = settled(api, args.namespace, names)
            if done == len(names):
                break
            time.sleep(1)
        t_settled = time.time()
        mine = api.mine - mine0
        phases["burst"] = {
            "created": args.count,
            "create_seconds": round(t_created - t0, 2),
            "settled": done,
            "settle_seconds": round(t_settled - t0, 2),
            "create_to_job": summary_ms(latencies(created, watch)),
            "operator": sampler.window(t0, t_settled),
            "requests": requests_delta(metrics0, api.metrics(), mine),
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }
        with watch.lock:
            stamps = [(n, watch.created[n]) for n in names if n in watch.created]
        tj_stamps = {
            t["metadata"]["name"]: t["metadata"]["creationTimestamp"] for t in api.list_tjs(args.namespace)
        }
        coarse = [
            (
                datetime.fromisoformat(job) - datetime.fromisoformat(tj_stamps[n].replace("Z", "+00:00"))
            ).total_seconds()
            for n, job in stamps
            if n in tj_stamps
        ]
        phases["burst"]["create_to_job_by_timestamps_s"] = {
            "p50": percentile(coarse, 50),
            "p99": percentile(coarse, 99),
            "note": "creationTimestamps have 1 s resolution",
        }

        # steady
        log(f"Creating {args.steady} more, 5 per second, with {args.count} live")
        time.sleep(3)
        metrics0, load0, mine0 = api.metrics(), loadavg(), Counter(api.mine)
        steady: dict[str, float] = {}
        t0 = time.time()
        for i in range(args.steady):
            name = f"steady-{i:04d}"
            api.create_tj(args.namespace, trainingjob(name))
            steady[name] = time.time()
            time.sleep(max(0.0, t0 + (i + 1) * 0.2 - time.time()))
        deadline = time.time() + 60
        while time.time() < deadline:
            with watch.lock:
                if all(n in watch.seen for n in steady):
                    break
            time.sleep(0.2)
        t1 = time.time()
        phases["steady"] = {
            "live_before": args.count,
            "created": args.steady,
            "create_to_job": summary_ms(latencies(steady, watch)),
            "operator": sampler.window(t0, t1),
            "requests": requests_delta(metrics0, api.metrics(), api.mine - mine0),
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }

        # idle: first let the control plane finish (the Job controller creates the pods at its own
        # pace, and each pod changes its Job's status, which the operator rightly reconciles)
        log("Waiting for the control plane to stop writing (Job controller, scheduler)")
        t0 = time.time()
        phases["quiesce"] = {"seconds": quiesce(api, args.timeout)}
        phases["quiesce"]["operator"] = sampler.window(t0, time.time())
        log(f"Quiet after {phases['quiesce']['seconds']} s; idle for {args.idle_seconds:g} s")
        metrics0, load0, mine0 = api.metrics(), loadavg(), Counter(api.mine)
        t0 = time.time()
        time.sleep(args.idle_seconds)
        t1 = time.time()
        requests = requests_delta(metrics0, api.metrics(), api.mine - mine0)
        minutes = (t1 - t0) / 60
        phases["idle"] = {
            "seconds": round(t1 - t0, 1),
            "operator": sampler.window(t0, t1),
            "requests": requests,
            "total_per_minute": round(requests["total"] / minutes, 1),
            "operator_only_per_minute": round(requests["operator_only"] / minutes, 1),
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }
        if not args.keep:
            # While the operator runs: it removes its finalizer from each TrainingJob being deleted.
            log(f"Deleting every TrainingJob, then namespace {args.namespace}")
            t0 = time.time()
            subprocess.run(
                [*kctl, "-n", args.namespace, "delete", "trainingjobs", "--all", "--wait=false"],
                check=False,
                stdout=subprocess.DEVNULL,
            )
            while api.list_tjs(args.namespace) and time.time() - t0 < args.timeout:
                time.sleep(2)
            phases["delete"] = {
                "seconds": round(time.time() - t0, 1),
                "operator": sampler.window(t0, time.time()),
            }
            subprocess.run([*kctl, "delete", "namespace", args.namespace, "--wait=false"], check=False)
        sampler.stop()
        phases["whole_run"] = sampler.window(sampler.samples[0][0], sampler.samples[-1][0])
    watch.stop()
    versions = {
        "python": platform.python_version(),
        "kubernetes": json.loads(
            subprocess.run(
                [*kctl, "version", "-o", "json"], capture_output=True, text=True, check=False
            ).stdout
        )
        .get("serverVersion", {})
        .get("gitVersion"),
        "kopf": __import__("importlib.metadata").metadata.version("kopf"),
    }
    doc = {
        "benchmark": "operator-scale",
        "started": started.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "versions": versions,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "operator_log": str(logfile),
        "phases": phases,
    }
    output = args.output or RESULTS / f"operator-scale-{args.count}-{started:%Y-%m-%d-%H%M}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n")

    b, s, i = phases["burst"], phases["steady"], phases["idle"]
    print(
        f"Operator at scale, {started:%Y-%m-%d}, {os.cpu_count()} cores, Kubernetes {versions['kubernetes']} "
        f"(local cluster, kwok nodes), kopf {versions['kopf']}; operator in its own process, one namespace.\n"
    )
    print("| measure | value |")
    print("|---|--:|")
    rows = [
        (f"burst: {b['created']} TrainingJobs created in", f"{b['create_seconds']} s"),
        (
            "burst: create→Job p50 / p99",
            f"{b['create_to_job']['p50_ms']:.0f} / {b['create_to_job']['p99_ms']:.0f} ms",
        ),
        (
            "burst: settled (every Job created, phase Running)",
            f"{b['settle_seconds']} s ({b['settled']}/{b['created']})",
        ),
        (
            f"steady: create→Job p50 / p99 with {s['live_before']} live",
            f"{s['create_to_job']['p50_ms']:.0f} / {s['create_to_job']['p99_ms']:.0f} ms",
        ),
        ("operator peak RSS (whole run)", f"{phases['whole_run']['peak_rss_mib']} MiB"),
        (
            "operator CPU during the burst",
            f"{b['operator']['cpu_seconds']} s ({b['operator']['cpu_percent']} % of a core)",
        ),
        (
            "API requests per TrainingJob in the burst (operator's / all)",
            f"{b['requests']['operator_only'] / b['created']:.1f} / {b['requests']['total'] / b['created']:.1f}",
        ),
        (
            "control plane quiet after the steady phase (Job controller done)",
            f"{phases['quiesce']['seconds']} s",
        ),
        (
            "idle: API requests per minute (operator's / all)",
            f"{i['operator_only_per_minute']} / {i['total_per_minute']}",
        ),
        ("idle: operator CPU", f"{i['operator']['cpu_percent']} % of a core"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nRaw JSON: {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")


if __name__ == "__main__":
    main()
