"""`make demo`: the whole lifecycle on a real cluster, narrated.

    python tests/e2e/demo.py run  --kubeconfig FILE [--kubectl BIN] [--cluster local|kind] [--namespace NS] [--storage pvc|s3]
    python tests/e2e/demo.py down --kubeconfig FILE [--kubectl BIN] [--namespace NS] [--storage pvc|s3]

`make demo` brings the cluster up and deploys the operator (`make deploy`: images, `kubectl apply
-k manifests/overlays/<cluster>`) before calling `run`. `run` applies manifests/samples/lifecycle
into a fresh namespace and drives the loop with the same code as the e2e test
(tests/e2e/loop.py): tuned training, verification, serving, normal then shifted traffic with
labelled feedback, retraining, the canary rollout of the better version. It exits non-zero when
a step does not happen, so the demo doubles as a smoke test.

`--storage s3` (`make demo STORAGE=s3`): no claim at all. The data (iris as a CSV object), the
models and the prediction log live in a bucket named after the namespace on the cluster's S3
server (the Secret mlops-system/mlops-s3, as the e2e tier's S3 mode), copied into the namespace
as the Secret every S3 location names; the sample's TrainingJob and InferenceService are applied
with those locations (tests/e2e/loop.py's `lifecycle`, the e2e loop's own code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import loop  # noqa: E402
from e2ekit import ROOT, Cluster, S3Server, Storage  # noqa: E402

ISVC = "iris"
TRAFFIC = loop.plan()
CLAIM = "artifacts"  # manifests/samples/lifecycle/artifacts-pvc.yaml
SAMPLE = ROOT / "manifests" / "samples" / "lifecycle"
TJ = "iris-tuned-1"

BOLD, DIM, GREEN, RED, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("",) * 5
)


class Narrator:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.phases: list[tuple[str, float]] = []
        self._phase: tuple[str, float] | None = None

    def phase(self, title: str) -> None:
        self.end()
        n = len(self.phases) + 1
        print(f"\n{BOLD}==> {n}. {title}{RESET}  {DIM}(t+{self.elapsed():.0f}s){RESET}", flush=True)
        self._phase = (title, time.monotonic())

    def end(self) -> None:
        if self._phase is not None:
            title, t0 = self._phase
            seconds = time.monotonic() - t0
            self.phases.append((title, seconds))
            print(f"    {GREEN}done in {seconds:.0f}s{RESET}", flush=True)
            self._phase = None

    def say(self, text: str) -> None:
        print(f"    {text}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def snapshot(cluster: Cluster, ns: str) -> None:
    out = cluster.kubectl("-n", ns, "get", "mlops", check=False)
    print(f"    {DIM}$ kubectl get mlops -n {ns}{RESET}")
    for line in out.rstrip().splitlines():
        print(f"      {line}")


def fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def prepare_namespace(cluster: Cluster, ns: str, kind: str, say: Any) -> None:
    """A fresh namespace with the artifacts claim bound and writable by the non-root pods."""
    if cluster.get("default", "namespace", ns):
        say(f"namespace {ns} exists from an earlier run: deleting it first")
        down(cluster, ns)
    cluster.kubectl("create", "namespace", ns)
    if kind == "local":
        # No dynamic provisioner on the local cluster: a hostPath volume on the node, bound to the claim.
        cluster.kubectl("delete", "pv", f"{ns}-artifacts", "--ignore-not-found")
        cluster.apply(
            ns,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{ns}-artifacts", "labels": {"mlops.dev/demo": ns}},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": f"/var/tmp/mlops-demo/{ns}", "type": "DirectoryOrCreate"},
                    "claimRef": {"namespace": ns, "name": CLAIM},
                },
            },
        )
    # kind: the default StorageClass (local-path) provisions the claim when the first pod mounts it.
    cluster.kubectl("-n", ns, "apply", "-f", str(SAMPLE / "artifacts-pvc.yaml"))
    cluster.run_python(
        ns,
        "prepare-artifacts",
        "import os, shutil\n"
        "for p in os.listdir('/data'): shutil.rmtree(os.path.join('/data', p), ignore_errors=True)\n"
        "os.chmod('/data', 0o1777)",
        claim=CLAIM,
        as_root=True,
    )
    cluster.kubectl("-n", ns, "delete", "pod", "prepare-artifacts", "--wait=false")


def prepare_bucket(cluster: Cluster, ns: str, say: Any) -> Storage:
    """S3 mode: a fresh namespace, a bucket named after it, and the server's Secret in it."""
    if cluster.get("default", "namespace", ns):
        say(f"namespace {ns} exists from an earlier run: deleting it first")
        down(cluster, ns, "s3")
    cluster.kubectl("create", "namespace", ns)
    server = S3Server(cluster)
    server.client.create_bucket(Bucket=ns)
    return Storage("s3", f"s3://{ns}", server.secret(cluster, ns), server)


def run(cluster: Cluster, ns: str, kind: str, deploy_seconds: float | None, storage_mode: str = "pvc") -> int:
    n = Narrator()
    say = n.say
    print(f"{BOLD}mlops-operator demo{RESET}: the whole lifecycle in namespace {ns} ({kind} cluster)")
    if deploy_seconds is not None:
        print(f"    cluster up, images built and operator deployed in {deploy_seconds:.0f}s (make deploy)")

    if storage_mode == "s3":
        n.phase("Storage: a namespace and a bucket (data, models, prediction log), no volume")
        storage = prepare_bucket(cluster, ns, say)
        say(f"bucket {storage.base} with Secret {storage.secret}; no PersistentVolumeClaim anywhere")
        n.phase("Train with tuning: the lifecycle sample, its locations in the bucket")
        cluster.apply(ns, *loop.lifecycle(storage))
        source = storage.uri("data/iris.csv")
    else:
        n.phase("Storage: a namespace and the artifacts volume (models, prediction log)")
        prepare_namespace(cluster, ns, kind, say)
        say(f"claim {CLAIM} bound; models and the prediction log will live on it")
        n.phase("Train with tuning: kubectl apply -k manifests/samples/lifecycle")
        cluster.kubectl("-n", ns, "apply", "-k", str(SAMPLE))
        storage = Storage("pvc", f"pvc://{CLAIM}")
        source = "builtin:iris"
    say(f"TrainingJob {TJ}: RandomForest on {source}, a 6-trial grid in parallel pods, 3-fold CV")
    last: list[str] = [""]

    def progress(status: dict[str, Any]) -> None:
        line = f"phase {status.get('phase') or 'Pending'}, trials {status.get('progress') or '-'}"
        if line != last[0]:
            say(f"{DIM}{line}{RESET}")
            last[0] = line

    tj = loop.wait_phase(cluster, ns, "trainingjob", TJ, "Succeeded", timeout=1200, on_wait=progress)
    say(
        f"best parameters {json.dumps(tj.get('bestParams'))}, hold-out accuracy {fmt(tj['metrics']['accuracy'])}"
    )

    n.phase("Verify: a verification pod checks the artifact (sha256, safe load, a prediction)")
    mv = loop.wait_phase(cluster, ns, "modelversion", "iris-v1", "Verified", timeout=600)
    say(f"ModelVersion iris-v1 {mv['phase']}, gates passed, stage {mv.get('stage') or 'Candidate'}")

    n.phase("Serve: the InferenceService rolls out iris-v1 (policy latest, automatic promotion)")
    cluster.wait(ns, f"inferenceservice/{ISVC}", "condition=Ready", timeout=600)
    status = cluster.status(ns, "inferenceservice", ISVC)
    ip = cluster.get(ns, "service", ISVC)["spec"]["clusterIP"]
    say(f"serving {status['modelVersion']} at {status['url']} (the cluster's DNS answers ClusterIP {ip})")
    snapshot(cluster, ns)

    n.phase("Normal traffic: 200 iris flowers, each answer labelled through the feedback endpoint")
    started = loop.now_rfc3339()
    sent = loop.send(cluster, ns, ISVC, TRAFFIC["normal"], pod="normal-traffic", feedback=True)
    assert not sent.errors, sent.errors
    say(f"{sent.requests} requests, {sent.rows} rows, {sent.feedback} labels posted")
    before = loop.wait_scrape(cluster, ns, ISVC, started, requests=20, labelled=200, timeout=180)["metrics"]
    say(f"status.metrics: drift {fmt(before['drift'])} (threshold 0.2), accuracy {fmt(before['accuracy'])}")

    n.phase("Shifted traffic: half from a second site whose scanner adds +8 cm / +3 cm to the petals")
    sent = loop.send(cluster, ns, ISVC, TRAFFIC["shifted"], pod="shifted-traffic", feedback=True)
    assert not sent.errors, sent.errors
    say(
        f"{sent.requests} requests, {sent.feedback} labels posted; the old model got {sent.accuracy:.0%} right"
    )
    status = loop.wait_retraining(cluster, ns, ISVC, timeout=300)
    shifted, retraining = status["metrics"], status["retraining"]
    say(
        f"status.metrics: drift {fmt(shifted['drift'])}, accuracy {fmt(shifted['accuracy'])} "
        f"on {shifted.get('labelledSamples')} labelled samples"
    )
    job = retraining["activeJobs"][0]
    say(f"{BOLD}retraining fired{RESET} ({retraining['lastTrigger']}): {retraining['lastReason']}")
    retrain = cluster.get(ns, "trainingjob", job)
    say(f"TrainingJob {job} (owned by the InferenceService) trains on: {', '.join(loop.data_uris(retrain))}")
    snapshot(cluster, ns)

    n.phase(f"Retrain: {job} tunes on iris plus the labelled prediction log")
    last[0] = ""
    tj2 = loop.wait_phase(cluster, ns, "trainingjob", job, "Succeeded", timeout=1200, on_wait=progress)
    new_version = tj2["modelVersion"]
    loop.wait_phase(cluster, ns, "modelversion", new_version, "Verified", timeout=600)
    v1 = cluster.get(ns, "modelversion", "iris-v1")["spec"]["metrics"]["accuracy"]
    v2 = cluster.get(ns, "modelversion", new_version)["spec"]["metrics"]["accuracy"]
    say(f"{new_version} verified: hold-out accuracy {fmt(v2)} (iris-v1: {fmt(v1)})")

    n.phase(f"Roll out {new_version} through the canary (50% of traffic for 30 s), under traffic")
    status = loop.roll_out_under_traffic(cluster, ns, ISVC, new_version, TRAFFIC["canary"], timeout=900)
    say(f"canary {status['canary']['phase']}: {status['canary'].get('reason')}")
    loop.wait_served_only_by(cluster, ns, ISVC, new_version, timeout=600)

    n.phase(f"Shifted traffic again, now answered by {new_version}")
    started = loop.now_rfc3339()
    sent = loop.send(cluster, ns, ISVC, TRAFFIC["again"], pod="shifted-again", feedback=True)
    assert not sent.errors, sent.errors
    after_status = loop.wait_scrape(cluster, ns, ISVC, started, requests=1, labelled=200, timeout=180)
    after = after_status["metrics"]
    say(f"status.metrics: drift {fmt(after['drift'])}, accuracy {fmt(after['accuracy'])}")
    snapshot(cluster, ns)

    shadow = shadow_phase(cluster, ns, storage, new_version, n)
    n.end()

    closed = (
        after_status["modelVersion"] == new_version
        and after["drift"] < 0.2
        and after["accuracy"] >= 0.9
        and after_status["retraining"]["count"] == 1
    )
    print(f"\n{BOLD}Summary{RESET}")
    print(f"    {'':28}{'before retraining':>20}{'after':>12}")
    print(f"    {'served version':28}{'iris-v1':>20}{after_status['modelVersion']:>12}")
    print(f"    {'hold-out accuracy':28}{fmt(v1):>20}{fmt(v2):>12}")
    print(f"    {'drift, normal traffic':28}{fmt(before['drift']):>20}{'':>12}")
    print(f"    {'drift, shifted traffic':28}{fmt(shifted['drift']):>20}{fmt(after['drift']):>12}")
    print(f"    {'accuracy, shifted traffic':28}{fmt(shifted['accuracy']):>20}{fmt(after['accuracy']):>12}")
    print(f"    {'retraining runs':28}{after_status['retraining']['count']:>32}")
    judged = f"{shadow.get('verdict')}, {shadow.get('phase')}"
    print(f"    {'shadow challenger':28}{judged:>32}")
    print(f"\n    {'phase':52}{'seconds':>8}")
    for i, (title, seconds) in enumerate(n.phases, 1):
        short = title.split(":")[0].split(" (")[0]
        print(f"    {i:>2}. {short[:48]:48}{seconds:>8.0f}")
    total = n.elapsed() + (deploy_seconds or 0)
    deploy = f" + cluster/images/deploy {deploy_seconds:.0f}s" if deploy_seconds is not None else ""
    print(
        f"    lifecycle {n.elapsed():.0f}s{deploy} = {BOLD}total {total:.0f}s ({total / 60:.1f} min){RESET}"
    )
    verdict = (
        f"{GREEN}the loop closed: the retrained model serves{RESET}"
        if closed
        else f"{RED}the loop did not close{RESET}"
    )
    print(f"\n    {verdict}")
    rejected = shadow.get("phase") == "RolledBack" and shadow.get("verdict") == "Worse"
    print(
        f"    {GREEN}the worse challenger was judged Worse in shadow and never answered a user{RESET}"
        if rejected
        else f"{RED}    the shadow challenger was not rejected: {json.dumps(shadow)}{RESET}"
    )
    kubectl = "" if cluster.kubectl_bin == "kubectl" else f"\n    alias kubectl={cluster.kubectl_bin}"
    print(f"""
{BOLD}Explore{RESET}
    export KUBECONFIG={cluster.kubeconfig}{kubectl}
    kubectl get mlops -n {ns}                       # TrainingJobs, ModelVersions, InferenceService
    kubectl get mv -n {ns} -l mlops.dev/model=iris --sort-by=.spec.version
    kubectl get mlis {ISVC} -n {ns} -o jsonpath='{{.status.metrics}}'; echo
    kubectl describe mlis {ISVC} -n {ns}               # conditions and Events (RetrainingTriggered, Canary*, ShadowVerdict)
    kubectl get mlis {ISVC} -n {ns} -o jsonpath='{{.status.canary}}'; echo   # the shadow verdict
    kubectl get tj {job} -n {ns} -o yaml               # the retraining run and its data sources
    kubectl get events -n {ns} --sort-by=.lastTimestamp
    kubectl logs -n mlops-system deploy/mlops-operator
    make demo-down                                    # delete the namespace and stop the cluster
""")
    return 0 if closed and rejected else 1


CHALLENGER_TJ = "iris-site1-only"
SHADOW = {"mode": "shadow", "shadow": {"minPairs": 60, "deadlineSeconds": 600, "onInconclusive": "Rollback"}}


def shadow_phase(cluster: Cluster, ns: str, storage: Storage, champion: str, n: Narrator) -> dict[str, Any]:
    """Shadow mode (issue #22): a version that passes its offline gate but is worse on the live
    traffic is judged on labelled pairs while only the champion answers users; -> status.canary."""
    say = n.say
    n.phase("Shadow: a new version judged on live labelled traffic before it answers anyone")
    patch = json.dumps({"spec": {"canary": SHADOW}})
    cluster.kubectl("-n", ns, "patch", "inferenceservice", ISVC, "--type=merge", "-p", patch)
    say("spec.canary.mode: shadow: the serving pods mirror live requests to a challenger; labels score both")
    # A RandomForest on iris alone: it passes its offline gate (accuracy >= 0.9 on iris's
    # hold-out) but never saw the second site, so it is worse on the live traffic than the champion.
    cluster.apply(ns, loop.forest_job(CHALLENGER_TJ, storage))
    challenger = loop.wait_phase(cluster, ns, "trainingjob", CHALLENGER_TJ, "Succeeded", timeout=900)[
        "modelVersion"
    ]
    loop.wait_phase(cluster, ns, "modelversion", challenger, "Verified", timeout=600)
    accuracy = cluster.get(ns, "modelversion", challenger)["spec"]["metrics"]["accuracy"]
    say(
        f"{challenger}: trained on iris alone, hold-out accuracy {fmt(accuracy)} (its gate passes), never saw the second site"
    )
    loop.wait_shadow_analysis(cluster, ns, ISVC, challenger)
    traffic = loop.shifted_traffic(300, seed=3, share=0.5)

    def report(sent: loop.Sent) -> None:
        say(f"{sent.requests} requests answered by {json.dumps(sent.versions)}, then {sent.feedback} labels")

    status, _ = loop.shadow_verdict(cluster, ns, ISVC, traffic, pod="shadow-traffic", report=report)
    canary = status.get("canary") or {}
    p_value = canary.get("pValue")
    p = f"{p_value:.2g}" if isinstance(p_value, (int, float)) else "-"
    say(
        f"{BOLD}verdict {canary.get('verdict')}{RESET} on {canary.get('pairs')} labelled pairs: "
        f"{champion} {fmt(canary.get('championScore'))} vs {challenger} "
        f"{fmt(canary.get('challengerScore'))}, p = {p}"
    )
    reason = str(canary.get("reason") or "").rstrip(".")
    say(f"{canary.get('phase')}: {reason}; {status.get('modelVersion')} keeps serving")
    snapshot(cluster, ns)
    return dict(canary)


def down(cluster: Cluster, ns: str, storage_mode: str = "pvc") -> None:
    """Delete the demo's resources (while the operator runs, so finalizers are released), then the
    namespace, then its volume (or, S3 mode, its bucket)."""
    if cluster.get("default", "namespace", ns):
        cluster.kubectl("-n", ns, "delete", "mlops", "--all", "--timeout=180s", check=False)
        cluster.kubectl("delete", "namespace", ns, "--timeout=300s", check=False)
    cluster.kubectl("delete", "pv", "-l", f"mlops.dev/demo={ns}", "--ignore-not-found", check=False)
    if storage_mode == "s3":
        server = S3Server(cluster)
        if ns in {b["Name"] for b in server.client.list_buckets().get("Buckets") or []}:
            server.remove_bucket(ns)
        server.client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["run", "down"])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--kubectl", default=os.environ.get("MLOPS_KUBECTL", "kubectl"))
    parser.add_argument("--cluster", choices=["local", "kind"], default="local")
    parser.add_argument("--namespace", default="mlops-demo")
    parser.add_argument("--deploy-started", type=float, help="epoch seconds when `make demo` started")
    parser.add_argument("--storage", choices=["pvc", "s3"], default="pvc", help="a claim, or the S3 server")
    args = parser.parse_args(argv)
    os.environ["MLOPS_KUBECTL"] = args.kubectl
    cluster = Cluster(args.kubeconfig)
    if args.command == "down":
        down(cluster, args.namespace, args.storage)
        print(f"deleted namespace {args.namespace} and its {'bucket' if args.storage == 's3' else 'volume'}")
        return 0
    deploy_seconds = time.time() - args.deploy_started if args.deploy_started else None
    return run(cluster, args.namespace, args.cluster, deploy_seconds, args.storage)


if __name__ == "__main__":
    sys.exit(main())
