"""The operator process stays light: it never imports scikit-learn, scipy, pandas, pyarrow or numpy,
nor the official kubernetes client.

They are the trainer's and the server's; loaded by the operator's spec checks they cost it
~190 MiB of RSS (issue #10). The kubernetes client (~57 MiB) is for tests and tools; kopf would
import it, so the operator's entry point keeps it out (`lean_imports`). The check runs in a fresh interpreter, so what other tests imported does
not count.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

HEAVY = ("sklearn", "scipy", "pandas", "pyarrow", "numpy", "kubernetes")


def test_the_operator_imports_no_data_science_libraries() -> None:
    code = textwrap.dedent(
        """
        import sys
        import mlops_operator.__main__

        mlops_operator.__main__.lean_imports()  # what main() does before importing kopf
        import mlops_operator.handlers, mlops_operator.reconcile.trainingjob  # noqa: F401
        from mlops_contract.api.trainingjob import TrainingJobSpec, trial_count
        from mlops_contract.checks import check_spec

        for estimator, metric in [
            ({"class": "SVC", "params": {"probability": True}}, "roc_auc"),
            ({"class": "SGDClassifier", "params": {"loss": "hinge", "alpah": 1}}, "log_loss"),
            ({"class": "RandomForestClassifier"}, "accuracy"),
        ]:
            spec = TrainingJobSpec.model_validate(
                {
                    "model": "m",
                    "data": {"source": {"uri": "builtin:iris"}},
                    "estimator": estimator,
                    "evaluation": {"primaryMetric": metric},
                    "tuning": {"space": {"C": [0.1, 1.0], "kernel": ["rbf", None]}, "maxTrials": 3},
                }
            )
            check_spec(spec)
            assert trial_count(spec.tuning) == 3
        loaded = sorted({m.split(".")[0] for m, mod in sys.modules.items() if mod is not None} & set(HEAVY))
        assert loaded == [], f"the operator imported {loaded}"
        """
    )
    prelude = f"HEAVY = {HEAVY!r}\n"
    subprocess.run([sys.executable, "-W", "error", "-c", prelude + code], check=True, timeout=60)
