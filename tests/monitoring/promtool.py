"""`make lint` for the shipped monitoring: the rule groups of manifests/monitoring/prometheusrule.yaml
(the one source) go through `promtool check rules` and `promtool test rules alerts_test.yaml`, and
every query of the Grafana dashboard (manifests/monitoring/dashboard.json, its variables filled
in) is parsed by Prometheus' own parser, as recording rules `promtool check rules` reads.

promtool is Debian's 2.42 (tests/monitoring/promtool.sh fetches and caches it). Exit code: promtool's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RULE = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = ROOT / "manifests" / "monitoring" / "dashboard.json"
VARIABLES = {"$namespace": "ns", "$inference_service": "isvc"}


def rule_groups(path: Path = RULE) -> dict[str, object]:
    """The PrometheusRule's spec as a Prometheus rule file."""
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "PrometheusRule", path
    return {"groups": doc["spec"]["groups"]}


def dashboard_queries(path: Path = DASHBOARD, variables: dict[str, str] = VARIABLES) -> dict[str, str]:
    """Panel title -> its query, with the dashboard's variables replaced by `variables`."""
    doc = json.loads(path.read_text())
    queries = {}
    for panel in doc["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            queries[f"{panel['title']} [{target['refId']}]"] = expr
    return queries


def dashboard_rules() -> dict[str, object]:
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": expr}
        for i, expr in enumerate(dashboard_queries().values())
    ]
    return {"groups": [{"name": "dashboard-queries", "rules": rules}]}


def main() -> int:
    bindir = Path(
        subprocess.run([HERE / "promtool.sh"], check=True, capture_output=True, text=True).stdout.strip()
    )
    promtool = str(bindir / "promtool")
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
        shutil.copy(HERE / "alerts_test.yaml", Path(tmp) / "alerts_test.yaml")
        panels = Path(tmp) / "dashboard.yaml"
        panels.write_text(yaml.safe_dump(dashboard_rules(), sort_keys=False))
        for args in (
            ["check", "rules", str(rules)],
            ["test", "rules", str(Path(tmp) / "alerts_test.yaml")],
            ["check", "rules", str(panels)],
        ):
            done = subprocess.run([promtool, *args], check=False)
            if done.returncode:
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
