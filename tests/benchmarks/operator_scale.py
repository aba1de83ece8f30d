"""Operator-at-scale benchmark: many TrainingJobs against the local cluster with simulated nodes.

    python tests/benchmarks/operator_scale.py [--count 1000] [--steady 50] [--idle-seconds 120]
    python tests/benchmarks/operator_scale.py --mix [TJ:MV:ISVC] ...   (alone: 3000:1500:500)

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

--mix (the issue's 5,000 run across the three kinds): the burst and the steady phase create
TrainingJobs, ModelVersions and InferenceServices interleaved in these proportions (`mix_plan`),
and the report is per kind: create -> first child or status (TrainingJob: its Job; ModelVersion:
its `<name>-verify` Job; InferenceService: its first status write, as it gets no Deployment),
the time each kind reaches its end state on kwok (`state`: Running; Verifying, since
verification Jobs never complete; NoServableVersion with VersionNotVerified or NoCandidate), the
operator's API requests per resource (`by_kind`: shared requests apportioned) and per minute at
idle. No version is ever Verified, the InferenceServices ask for 0 replicas, and a watch kills
the operator should a Deployment appear all the same: the operator scrapes serving pods at
their pod IP, and kwok's simulated pod IPs are not loopback. The quiet wait ignores the Service
every InferenceService pass re-applies. JSON: operator-scale-mix-<tj>-<mv>-<isvc>-<date>-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from benchkit import loadavg, running

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests/benchmarks/results"
LOCAL = ROOT / "tests/cluster/local"
GROUP = "mlops.dev"
VERSION = "v1alpha1"
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
OPERATOR_ONLY_VERBS = {"GET", "POST", "PATCH", "APPLY", "PUT", "DELETE"}
DEFAULT_MIX: Final = "3000:1500:500"


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
        self.apps = client.AppsV1Api(self.client)
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

    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> None:
        self.count("POST", plural)
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)

    def list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        self.count("LIST", plural)
        items: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural
        )["items"]
        return items


# ----------------------------------------------------------------------------- the resources

PLURALS: Final = {
    "TrainingJob": "trainingjobs",
    "ModelVersion": "modelversions",
    "InferenceService": "inferenceservices",
}
# What create->first times for each kind: its first child, or (an InferenceService gets no
# Deployment without a Verified version) its first status.
FIRST: Final = {"TrainingJob": "Job", "ModelVersion": "verify Job", "InferenceService": "status"}
BENCH_LABEL: Final = {"mlops.dev/benchmark": "operator-scale"}


def trainingjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name, "labels": dict(BENCH_LABEL)},
        "spec": {
            "model": "iris",
            "data": {"source": {"uri": "builtin:iris"}},
            "estimator": {"class": "LogisticRegression", "params": {"max_iter": 200}},
        },
    }


def modelversion(name: str, model: str, version: int) -> dict[str, Any]:
    """A registered version whose artifact is on the unbound claim: its verify pod never runs."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelVersion",
        "metadata": {"name": name, "labels": {**BENCH_LABEL, "mlops.dev/model": model}},
        "spec": {
            "model": model,
            "version": version,
            "artifact": {
                "uri": f"pvc://mlops-artifacts/bench/{model}/v{version}",
                "sha256": hashlib.sha256(name.encode()).hexdigest(),
            },
            "signature": {
                "task": "classification",
                "features": [{"name": f"x{i}", "dtype": "float64"} for i in range(4)],
                "classes": [0, 1, 2],
            },
            "metrics": {"accuracy": 0.9},
            "primaryMetric": "accuracy",
            "gates": [{"metric": "accuracy", "op": ">=", "threshold": 0.8}],
        },
    }


def inferenceservice(name: str, model: str, pinned: bool) -> dict[str, Any]:
    """Serve `model`, pinned to version 1 or by policy `latest`.

    No version is ever Verified on kwok, so the operator creates no Deployment. replicas 0 and
    no retraining or canary make sure that even then no serving pod could exist: the operator
    HTTP-scrapes serving pods at their pod IP, and kwok's pod IPs are not on loopback.
    """
    choice: dict[str, Any] = {"version": 1} if pinned else {"policy": {"select": "latest"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": dict(BENCH_LABEL)},
        "spec": {"model": model, **choice, "replicas": 0},
    }


@dataclass(frozen=True)
class Item:
    kind: str
    name: str
    body: dict[str, Any]
    expect: str  # its end state on kwok nodes, as `state` names it


def parse_mix(text: str) -> tuple[int, int, int]:
    try:
        tj, mv, isvc = (int(n) for n in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give TJ:MV:ISVC counts, e.g. {DEFAULT_MIX}") from None
    if min(tj, mv, isvc) < 0 or tj + mv + isvc == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: counts must be >= 0 and not all 0")
    return tj, mv, isvc


def split(total: int, weights: tuple[int, int, int]) -> tuple[int, int, int]:
    """`total` divided in proportion to `weights` (largest remainder)."""
    exact = [total * w / sum(weights) for w in weights]
    out = [int(x) for x in exact]
    for i in sorted(range(3), key=lambda i: out[i] - exact[i])[: total - sum(out)]:
        out[i] += 1
    return out[0], out[1], out[2]


def mix_plan(counts: tuple[int, int, int], prefix: str = "") -> list[Item]:
    """TrainingJobs, ModelVersions and InferenceServices, interleaved in proportion.

    One model per InferenceService (per ModelVersion when there are none); ModelVersion i is
    version i // models + 1 of model i % models. InferenceServices alternate between pinned to
    version 1 and policy `latest`; with no version ever Verified, each ends NoServableVersion,
    because its pinned version is not Verified (VersionNotVerified; VersionNotFound when its
    model got no ModelVersion) or its policy has no candidate (NoCandidate).
    """
    tjs, mvs, isvcs = counts
    models = isvcs or mvs or 1
    keyed: list[tuple[float, int, Item]] = []
    for i in range(tjs):
        name = f"{prefix}tj-{i:05d}"
        keyed.append(((i + 0.5) / tjs, 0, Item("TrainingJob", name, trainingjob(name), "Running")))
    for i in range(mvs):
        name, model = f"{prefix}mv-{i:05d}", f"{prefix}m-{i % models:05d}"
        body = modelversion(name, model, i // models + 1)
        keyed.append(((i + 0.5) / mvs, 1, Item("ModelVersion", name, body, "Verifying")))
    for i in range(isvcs):
        name, pinned = f"{prefix}isvc-{i:05d}", i % 2 == 0
        expect = ("VersionNotVerified" if i < mvs else "VersionNotFound") if pinned else "NoCandidate"
        body = inferenceservice(name, f"{prefix}m-{i:05d}", pinned)
        keyed.append(((i + 0.5) / isvcs, 2, Item("InferenceService", name, body, expect)))
    return [item for *_, item in sorted(keyed, key=lambda k: k[:2])]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def state(kind: str, obj: dict[str, Any]) -> str:
    """Where a resource stands, in the terms of `Item.expect`.

    TrainingJob: its phase once it has a Job (Running is the end on kwok: pods never finish).
    ModelVersion: its phase once it has a verification Job (Verifying is the end: the Job never
    completes). InferenceService: the reason of its VersionResolved condition, once it has a
    status of its current generation.
    """
    status = obj.get("status") or {}
    if kind == "TrainingJob":
        return str(status.get("phase")) if status.get("jobName") else "no Job"
    if kind == "ModelVersion":
        return str(status.get("phase")) if status.get("verificationJob") else "no verify Job"
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return "no status"
    return str(condition(obj, "VersionResolved").get("reason"))


class FirstSeen:
    """Records when each owner is first seen on a watch of one resource of the namespace.

    `owner(type, obj)` names the object's owner (and gives a creation timestamp), or None to skip
    the event; `on_seen(name)`, if given, is called once per owner, from the watch thread.
    """

    def __init__(
        self,
        api: Api,
        resource: str,
        list_fn: Callable[..., Any],
        list_args: tuple[str, ...],
        owner: Callable[[str, Any], tuple[str, str] | None],
        on_seen: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self.resource = resource
        self.list_fn = list_fn  # not a partial: the watch reads the return type from its docstring
        self.list_args = list_args
        self.owner = owner
        self.on_seen = on_seen
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
            self.api.count("WATCH", self.resource)
            try:
                for event in w.stream(
                    self.list_fn,
                    *self.list_args,
                    timeout_seconds=60,
                    resource_version=resource_version,
                    _request_timeout=70,
                ):
                    obj = event["object"]
                    resource_version = (
                        obj["metadata"]["resourceVersion"]
                        if isinstance(obj, dict)
                        else obj.metadata.resource_version
                    )
                    found = self.owner(event["type"], obj)
                    if found:
                        with self.lock:
                            first = found[0] not in self.seen
                            self.seen.setdefault(found[0], time.time())
                            self.created.setdefault(*found)
                        if first and self.on_seen:
                            self.on_seen(found[0])
                    if self._stop.is_set():
                        w.stop()
            except Exception as e:  # a dropped watch: resume from the last version seen
                log(f"{self.resource} watch restarted after {type(e).__name__}")
                resource_version = None
                time.sleep(0.2)


def job_owner(kind: str, obj: Any) -> tuple[str, str] | None:
    """A TrainingJob's Job, or a ModelVersion's verification Job: (owner name, Job creationTimestamp)."""
    owner = (obj.metadata.labels or {}).get("mlops.dev/training-job") or next(
        (o.name for o in obj.metadata.owner_references or [] if o.kind in ("TrainingJob", "ModelVersion")),
        None,
    )
    if owner and kind in ("ADDED", "MODIFIED"):
        return owner, obj.metadata.creation_timestamp.isoformat()
    return None


def status_owner(kind: str, obj: Any) -> tuple[str, str] | None:
    """An InferenceService whose status the operator has written (it sets observedGeneration)."""
    if kind in ("ADDED", "MODIFIED") and (obj.get("status") or {}).get("observedGeneration"):
        return obj["metadata"]["name"], obj["metadata"]["creationTimestamp"]
    return None


def any_owner(kind: str, obj: Any) -> tuple[str, str] | None:
    """Any object at all (the Deployment guard: the runs here must never create one)."""
    return obj.metadata.name, obj.metadata.creation_timestamp.isoformat()


def job_watch(api: Api, namespace: str) -> FirstSeen:
    """When each TrainingJob's (and ModelVersion's) Job is first seen (ADDED) on a watch."""
    return FirstSeen(api, "jobs", api.batch.list_namespaced_job, (namespace,), job_owner)


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


def deployment_env() -> dict[str, str]:
    """The environment the operator's Deployment (manifests/base) gives it, so the benchmark runs
    the operator as deployed (e.g. MALLOC_ARENA_MAX); not HOME, and no metrics port."""
    import yaml

    docs = yaml.safe_load_all((ROOT / "manifests/base/deployment.yaml").read_text())
    deploy = next(d for d in docs if d and d.get("kind") == "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    return {
        e["name"]: str(e["value"])
        for e in container.get("env") or []
        if "value" in e and e["name"] not in ("HOME", "MLOPS_METRICS_PORT")
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

# What else the operator touches for the three kinds (Services, Deployments, HPAs of an
# InferenceService); the other components only watch these, or write their status subresource.
MIX_CHILDREN: Final = (
    "jobs",
    "persistentvolumeclaims",
    "services",
    "deployments",
    "horizontalpodautoscalers",
)
TJ, MV, ISVC = PLURALS


def is_operators(verb: str, group: str, resource: str, mix: bool) -> bool:
    """Whether a request is the operator's. The TrainingJob-only rule is the one published first
    (it also counts the Job controller's PUT jobs/status); the mix rule leaves out status
    subresources of built-in kinds, and counts LIST pods (the ModelVersion and InferenceService
    passes list their pods; the other components watch them)."""
    base, _, sub = resource.partition("/")
    if group == GROUP:
        return True
    if not mix:
        return base in ("jobs", "persistentvolumeclaims") and verb in OPERATOR_ONLY_VERBS
    return (base in MIX_CHILDREN and not sub and verb in OPERATOR_ONLY_VERBS) or (base, verb) == (
        "pods",
        "LIST",
    )


def by_kind(delta: Counter[tuple[str, str, str]], jobs: Mapping[str, int]) -> dict[str, float]:
    """The operator's requests of a phase, per kind of resource whose reconcile pass made them.

    Requests on a kind's own resource are that kind's (kopf's LIST and WATCH are no kind's);
    LIST inferenceservices is the ModelVersion pass's; PVCs are TrainingJobs'; Services,
    Deployments and HPAs are InferenceServices'. Shared ones are divided by how many passes each
    kind made (its GETs of its own resource: every pass starts by reading the object afresh):
    GET jobs between TrainingJobs and ModelVersions, LIST modelversions and LIST pods between
    ModelVersions and InferenceServices; POST jobs by the Jobs each kind got (`jobs`).
    """
    passes = {kind: delta.get(("GET", GROUP, plural), 0) for kind, plural in PLURALS.items()}
    kind_of = {plural: kind for kind, plural in PLURALS.items()}
    out = dict.fromkeys(PLURALS, 0.0)

    def share(n: int, kinds: tuple[str, str], weights: Mapping[str, int] = passes) -> None:
        total = sum(weights.get(k, 0) for k in kinds)
        for k in kinds:
            out[k] += n * (weights.get(k, 0) / total if total else 1 / len(kinds))

    for (verb, group, resource), n in delta.items():
        base = resource.partition("/")[0]
        if group == GROUP and (verb, base) == ("LIST", "modelversions"):
            share(n, (MV, ISVC))
        elif group == GROUP and (verb, base) == ("LIST", "inferenceservices"):
            out[MV] += n
        elif group == GROUP and verb not in ("LIST", "WATCH"):
            out[kind_of[base]] += n
        elif group == GROUP or not is_operators(verb, group, resource, mix=True):
            continue
        elif base == "persistentvolumeclaims":
            out[TJ] += n
        elif base == "jobs":
            share(n, (TJ, MV), jobs if verb == "POST" else passes)
        elif base == "pods":
            share(n, (MV, ISVC))
        else:  # services, deployments, horizontalpodautoscalers
            out[ISVC] += n
    return {k: round(v, 1) for k, v in out.items()}


def requests_delta(
    before: Counter[tuple[str, str, str]],
    after: Counter[tuple[str, str, str]],
    mine: Counter[tuple[str, str]],
    jobs: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Requests between two metric reads, less the script's own; with `jobs` (the mix mode:
    Jobs created per kind in the phase), the mix rule for the operator's, and `by_kind`."""
    delta = Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0})
    for (verb, resource), n in mine.items():
        for key in list(delta):
            if key[0] == verb and key[2] == resource:
                delta[key] = max(0, delta[key] - n)
                break
    # Non-resource URLs (resource "") are /metrics, /healthz, discovery: not the operator's work.
    total = sum(n for k, n in delta.items() if k[2])
    operator_only = sum(n for key, n in delta.items() if is_operators(*key, mix=jobs is not None))
    out: dict[str, Any] = {"total": total, "operator_only": operator_only}
    if jobs is not None:
        out["by_kind"] = by_kind(delta, jobs)
    out["by_verb_resource"] = {
        f"{verb} {group + '/' if group else ''}{resource}": n
        for (verb, group, resource), n in sorted(delta.items(), key=lambda kv: -kv[1])
        if resource and n
    }
    return out


def quiesce(
    api: Api, timeout: float, window: float = 10.0, ignore: frozenset[tuple[str, str]] = frozenset()
) -> float:
    """Seconds until a `window` passes with no writes but leases, node status, events and the
    (verb, resource) pairs in `ignore`; nan on timeout."""
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
            and (k[0], k[2]) not in ignore
        )
        previous = current
        if writes == 0:
            return round(time.time() - t0, 1)
    return float("nan")


def poll(api: Api, namespace: str, kinds: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every object of `kinds` in the namespace, by name: (kind, body). One LIST per kind."""
    return {
        obj["metadata"]["name"]: (kind, obj) for kind in kinds for obj in api.list(PLURALS[kind], namespace)
    }


def describe(kind: str, obj: dict[str, Any]) -> str:
    """`state`, and for an InferenceService the reason of Ready before it."""
    if kind == ISVC:
        return f"{condition(obj, 'Ready').get('reason')}: {state(kind, obj)}"
    return state(kind, obj)


def latencies(created: dict[str, float], watch: FirstSeen) -> list[float]:
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


def p50_p99(summary: Mapping[str, float], unit: str = "ms") -> str:
    if not summary.get("count"):
        return "-"
    return f"{summary['p50_ms']:.0f} / {summary['p99_ms']:.0f} {unit}"


class Run:
    """The watches of one run and what they tell per kind."""

    def __init__(self, api: Api, namespace: str, items: list[Item], mix: bool) -> None:
        self.kind_of = {i.name: i.kind for i in items}
        self.jobs = job_watch(api, namespace)
        self.statuses: FirstSeen | None = None
        self.guard: FirstSeen | None = None
        self.guarded: Callable[[str], None] = lambda name: None
        if mix:
            self.statuses = FirstSeen(
                api,
                "inferenceservices",
                api.custom.list_namespaced_custom_object,
                (GROUP, VERSION, namespace, PLURALS[ISVC]),
                status_owner,
            )
            # The runs never let a version be Verified, so no Deployment: if one appears all the
            # same, the operator is killed before any serving pod could exist to be scraped.
            self.guard = FirstSeen(
                api,
                "deployments",
                api.apps.list_namespaced_deployment,
                (namespace,),
                any_owner,
                on_seen=self._guarded,
            )

    def _guarded(self, name: str) -> None:
        self.guarded(name)

    def watches(self) -> list[FirstSeen]:
        return [w for w in (self.jobs, self.statuses, self.guard) if w is not None]

    def check(self) -> None:
        if self.guard is not None and self.guard.seen:
            raise SystemExit(
                f"Deployment {', '.join(self.guard.seen)} was created: the operator was stopped so that it "
                "cannot scrape serving pods at their (simulated, non-loopback) pod IPs; nothing is reported"
            )

    def first(self, kind: str) -> FirstSeen:
        return self.statuses if kind == ISVC and self.statuses is not None else self.jobs

    def seen(self, name: str) -> bool:
        watch = self.first(self.kind_of[name])
        with watch.lock:
            return name in watch.seen

    def jobs_between(self, t0: float, t1: float) -> dict[str, int]:
        with self.jobs.lock:
            return Counter(self.kind_of.get(n, "") for n, t in self.jobs.seen.items() if t0 <= t <= t1)

    def by_kind(self, created: dict[str, float]) -> dict[str, dict[str, Any]]:
        """create->first (Job, verify Job, status) per kind."""
        out = {}
        for kind in PLURALS:
            mine = {n: t for n, t in created.items() if self.kind_of[n] == kind}
            if mine:
                out[kind] = {"created": len(mine), "first": FIRST[kind]} | summary_ms(
                    latencies(mine, self.first(kind))
                )
        return out


def counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--count", type=int, help="TrainingJobs created in the burst (TrainingJob-only mode; default 1000)"
    )
    parser.add_argument(
        "--mix",
        type=parse_mix,
        nargs="?",
        const=parse_mix(DEFAULT_MIX),
        metavar="TJ:MV:ISVC",
        help=f"create all three kinds in these numbers instead (alone: {DEFAULT_MIX}, the 5,000 run)",
    )
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
    if args.mix and args.count is not None:
        parser.error("--count and --mix exclude each other")
    mix: tuple[int, int, int] | None = args.mix
    if mix is None and args.count is None:
        args.count = 1000
    sys.path[:0] = [str(ROOT / "operator")]
    if mix:
        plan, steady_plan = mix_plan(mix), mix_plan(split(args.steady, mix), "steady-")
    else:
        plan = [
            Item(TJ, f"bench-{i:05d}", trainingjob(f"bench-{i:05d}"), "Running") for i in range(args.count)
        ]
        steady_plan = [
            Item(TJ, f"steady-{i:04d}", trainingjob(f"steady-{i:04d}"), "Running") for i in range(args.steady)
        ]
    kinds = [k for k in PLURALS if any(i.kind == k for i in plan + steady_plan)]
    planned = Counter(i.kind for i in plan)

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
    if poll(api, args.namespace, kinds):
        raise SystemExit(f"namespace {args.namespace} already has {' or '.join(kinds)}s; delete it first")
    started = datetime.now(UTC)
    phases: dict[str, Any] = {}
    logfile = Path(f"/tmp/mlops-bench-operator-{os.getpid()}.log")
    run = Run(api, args.namespace, plan + steady_plan, mix is not None)
    for w in run.watches():
        w.start()
    env = {**os.environ, **deployment_env(), "KUBECONFIG": kubeconfig}
    with running(operator_command(args.namespace, args.health_port), env, logfile) as proc:

        def stop_operator(name: str) -> None:
            log(f"Deployment {name} appeared: killing the operator (pid {proc.pid})")
            proc.kill()

        run.guarded = stop_operator
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
        log(f"Creating {counts_text(planned)}s" if mix else f"Creating {args.count} TrainingJobs")
        metrics0, load0 = api.metrics(), loadavg()
        mine0 = Counter(api.mine)
        created: dict[str, float] = {}
        t0 = time.time()

        def create(item: Item) -> None:
            api.create(PLURALS[item.kind], args.namespace, item.body)
            created[item.name] = time.time()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, plan))
        t_created = time.time()
        log(
            f"Created {len(plan)} in {t_created - t0:.1f} s; waiting for every Job and phase Running"
            + (", every verify Job, every InferenceService's status" if mix else "")
        )
        done: Counter[str] = Counter()
        settled_at: dict[str, float] = {}
        while time.time() - t0 < args.timeout:
            run.check()
            objects = poll(api, args.namespace, kinds)
            done = Counter(
                i.kind for i in plan if i.name in objects and state(i.kind, objects[i.name][1]) == i.expect
            )
            for kind in planned:
                if done[kind] == planned[kind]:
                    settled_at.setdefault(kind, time.time())
            if len(settled_at) == len(planned):
                break
            time.sleep(1)
        t_settled = time.time()
        mine = api.mine - mine0
        phases["burst"] = {
            "created": len(plan),
            "create_seconds": round(t_created - t0, 2),
            "settled": sum(done.values()),
            "settle_seconds": round(t_settled - t0, 2),
        }
        if not mix:
            phases["burst"]["create_to_job"] = summary_ms(latencies(created, run.jobs))
        phases["burst"] |= {
            "operator": sampler.window(t0, t_settled),
            "requests": requests_delta(
                metrics0, api.metrics(), mine, run.jobs_between(t0, t_settled) if mix else None
            ),
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }
        if mix:
            objects = poll(api, args.namespace, kinds)
            by = run.by_kind(created)
            for kind, entry in by.items():
                entry["settled"] = done[kind]
                entry["settle_seconds"] = round(settled_at.get(kind, t_settled) - t0, 2)
                entry["end_state"] = dict(
                    Counter(describe(k, obj) for k, obj in objects.values() if k == kind)
                )
                entry["operator_requests"] = phases["burst"]["requests"]["by_kind"][kind]
            phases["burst"]["by_kind"] = by
        else:
            with run.jobs.lock:
                stamps = [(n, run.jobs.created[n]) for n in created if n in run.jobs.created]
            tj_stamps = {
                t["metadata"]["name"]: t["metadata"]["creationTimestamp"]
                for t in api.list(PLURALS[TJ], args.namespace)
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
        log(f"Creating {len(steady_plan)} more, 5 per second, with {len(plan)} live")
        time.sleep(3)
        metrics0, load0, mine0 = api.metrics(), loadavg(), Counter(api.mine)
        steady: dict[str, float] = {}
        t0 = time.time()
        for i, item in enumerate(steady_plan):
            api.create(PLURALS[item.kind], args.namespace, item.body)
            steady[item.name] = time.time()
            time.sleep(max(0.0, t0 + (i + 1) * 0.2 - time.time()))
        deadline = time.time() + 60
        while time.time() < deadline and not all(run.seen(n) for n in steady):
            run.check()
            time.sleep(0.2)
        t1 = time.time()
        phases["steady"] = {"live_before": len(plan), "created": len(steady_plan)}
        if mix:
            phases["steady"]["by_kind"] = run.by_kind(steady)
        else:
            phases["steady"]["create_to_job"] = summary_ms(latencies(steady, run.jobs))
        phases["steady"] |= {
            "operator": sampler.window(t0, t1),
            "requests": requests_delta(
                metrics0, api.metrics(), api.mine - mine0, run.jobs_between(t0, t1) if mix else None
            ),
            "loadavg_before": load0,
            "loadavg_after": loadavg(),
        }

        if mix:
            # On kwok a verify pod never runs: each verify Job fails at its deadline (600 s) and
            # its ModelVersion turns Failed (VerificationError), which is work, not idling.
            log("Waiting for the verify Jobs' deadlines: every ModelVersion Failed")
            t0 = time.time()
            while time.time() < t0 + args.timeout:
                mvs = [obj for kind, obj in poll(api, args.namespace, ["ModelVersion"]).values()]
                if all((o.get("status") or {}).get("phase") == "Failed" for o in mvs):
                    break
                time.sleep(10)
            phases["verify_deadlines"] = {"seconds": round(time.time() - t0, 1)}

        # idle: first let the control plane finish (the Job controller creates the pods at its own
        # pace, and each pod changes its Job's status, which the operator rightly reconciles)
        log("Waiting for the control plane to stop writing (Job controller, scheduler)")
        t0 = time.time()
        # Every InferenceService pass re-applies its Service (at least every 30 s): not a change.
        ignore = frozenset({("APPLY", "services")}) if mix else frozenset()
        phases["quiesce"] = {"seconds": quiesce(api, args.timeout, ignore=ignore)}
        if ignore:
            phases["quiesce"]["ignored"] = sorted(" ".join(k) for k in ignore)
        phases["quiesce"]["operator"] = sampler.window(t0, time.time())
        run.check()
        log(f"Quiet after {phases['quiesce']['seconds']} s; idle for {args.idle_seconds:g} s")
        metrics0, load0, mine0 = api.metrics(), loadavg(), Counter(api.mine)
        t0 = time.time()
        time.sleep(args.idle_seconds)
        t1 = time.time()
        run.check()
        requests = requests_delta(metrics0, api.metrics(), api.mine - mine0, {} if mix else None)
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
        if mix:
            phases["idle"]["operator_per_minute_by_kind"] = {
                k: round(n / minutes, 1) for k, n in requests["by_kind"].items()
            }
        if not args.keep:
            # While the operator runs: it removes its finalizer from each resource being deleted.
            plurals = ",".join(PLURALS[k] for k in kinds)
            log(f"Deleting every {' and '.join(kinds)}, then namespace {args.namespace}")
            t0 = time.time()
            subprocess.run(
                [*kctl, "-n", args.namespace, "delete", plurals, "--all", "--wait=false"],
                check=False,
                stdout=subprocess.DEVNULL,
            )
            while poll(api, args.namespace, kinds) and time.time() - t0 < args.timeout:
                time.sleep(2)
            phases["delete"] = {
                "seconds": round(time.time() - t0, 1),
                "operator": sampler.window(t0, time.time()),
            }
            subprocess.run([*kctl, "delete", "namespace", args.namespace, "--wait=false"], check=False)
        sampler.stop()
        phases["whole_run"] = sampler.window(sampler.samples[0][0], sampler.samples[-1][0])
    for w in run.watches():
        w.stop()
    if run.guard is not None:
        phases["deployments_created"] = len(run.guard.seen)
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
    size = "mix-" + "-".join(map(str, mix)) if mix else str(args.count)
    output = args.output or RESULTS / f"operator-scale-{size}-{started:%Y-%m-%d-%H%M}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n")

    print(
        f"Operator at scale, {started:%Y-%m-%d}, {os.cpu_count()} cores, Kubernetes {versions['kubernetes']} "
        f"(local cluster, kwok nodes), kopf {versions['kopf']}; operator in its own process, one namespace.\n"
    )
    if mix:
        print_kinds(phases)
    print("| measure | value |")
    print("|---|--:|")
    for name, value in rows(phases, mix is not None):
        print(f"| {name} | {value} |")
    print(f"\nRaw JSON: {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")


def print_kinds(phases: dict[str, Any]) -> None:
    """The per-kind table of the mix mode."""
    burst, steady, idle = phases["burst"]["by_kind"], phases["steady"]["by_kind"], phases["idle"]
    kinds = list(burst)
    table = [
        ("burst: created", [str(burst[k]["created"]) for k in kinds]),
        ("burst: create→first child / status", [FIRST[k] for k in kinds]),
        ("burst: create→first p50 / p99", [p50_p99(burst[k]) for k in kinds]),
        (
            "burst: settled (end state reached) after",
            [f"{burst[k]['settle_seconds']} s ({burst[k]['settled']}/{burst[k]['created']})" for k in kinds],
        ),
        ("end state after the burst", [counts_text(burst[k]["end_state"]) for k in kinds]),
        (
            "burst: operator's API requests per resource (shared ones apportioned)",
            [f"{burst[k]['operator_requests'] / burst[k]['created']:.1f}" for k in kinds],
        ),
        (
            f"steady: create→first p50 / p99 with {phases['steady']['live_before']} live",
            [f"{p50_p99(steady[k])} (of {steady[k]['created']})" if k in steady else "-" for k in kinds],
        ),
        (
            "idle: operator's API requests per minute",
            [str(idle["operator_per_minute_by_kind"][k]) for k in kinds],
        ),
    ]
    print("| measure | " + " | ".join(kinds) + " |")
    print("|---|" + "--:|" * len(kinds))
    for name, values in table:
        print(f"| {name} | " + " | ".join(values) + " |")
    print()


def rows(phases: dict[str, Any], mix: bool) -> list[tuple[str, str]]:
    b, s, i = phases["burst"], phases["steady"], phases["idle"]
    what = "resources" if mix else "TrainingJobs"
    settled = "every kind at its end state" if mix else "every Job created, phase Running"
    out = [(f"burst: {b['created']} {what} created in", f"{b['create_seconds']} s")]
    if not mix:
        out.append(
            (
                "burst: create→Job p50 / p99",
                f"{b['create_to_job']['p50_ms']:.0f} / {b['create_to_job']['p99_ms']:.0f} ms",
            )
        )
    out.append((f"burst: settled ({settled})", f"{b['settle_seconds']} s ({b['settled']}/{b['created']})"))
    if not mix:
        out.append(
            (
                f"steady: create→Job p50 / p99 with {s['live_before']} live",
                f"{s['create_to_job']['p50_ms']:.0f} / {s['create_to_job']['p99_ms']:.0f} ms",
            )
        )
    out += [
        ("operator peak RSS (whole run)", f"{phases['whole_run']['peak_rss_mib']} MiB"),
        (
            "operator CPU during the burst",
            f"{b['operator']['cpu_seconds']} s ({b['operator']['cpu_percent']} % of a core)",
        ),
        (
            f"API requests per {'resource' if mix else 'TrainingJob'} in the burst (operator's / all)",
            f"{b['requests']['operator_only'] / b['created']:.1f} / {b['requests']['total'] / b['created']:.1f}",
        ),
    ]
    if mix:
        out.append(("Deployments created (guard: must be 0)", str(phases.get("deployments_created", 0))))
    out += [
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
    return out


if __name__ == "__main__":
    main()
