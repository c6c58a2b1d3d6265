"""`detailed_balance.models` re-exports lazily: the least-action estimator (numpy/SciPy) loads
without PyMC, pytensor or numba, which only the Bayesian models need (fit --method least-action
started ~2 s slower before)."""

from __future__ import annotations

import json
import subprocess
import sys

BAYES = ("pymc", "pytensor", "numba", "arviz")

PROBE = f"""
import json, sys
from detailed_balance.models import least_action, feature_least_action
print(json.dumps(sorted(m for m in {BAYES!r} if m in sys.modules)))
"""


def test_least_action_imports_no_bayesian_stack():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == []


def test_every_public_name_still_resolves():
    import detailed_balance.models as models
    from detailed_balance.models.equilibrium import MODELS
    from detailed_balance.models.features import FeaturePotentialModel
    from detailed_balance.models.least_action import least_action

    for name in models.__all__:
        assert getattr(models, name) is not None, name
    assert set(models.__all__) <= set(dir(models))
    assert models.least_action is least_action
    assert models.FeaturePotentialModel is FeaturePotentialModel
    # model_from_name knows the feature model (registered when features.py is imported)
    assert MODELS["features"] is FeaturePotentialModel
    assert type(models.model_from_name("features", {"features": "builtin:words"})).__name__ == (
        "FeaturePotentialModel"
    )


CLI_PROBE = f"""
import contextlib, io, json, sys
from detailed_balance.cli import main
with contextlib.redirect_stderr(io.StringIO()) as err:
    code = main(sys.argv[1:])
print(json.dumps({{"code": code, "stderr": err.getvalue(),
                  "heavy": sorted(m for m in {BAYES!r} if m in sys.modules)}}))
"""


def test_fit_features_by_least_action_imports_no_bayesian_stack(tmp_path):
    # `fit --model features --method least-action` is numpy/SciPy only (before: the feature
    # branch imported the PyMC model and the posterior summaries at module level).
    data, features, out = tmp_path / "t.csv", tmp_path / "feat.csv", tmp_path / "theta.csv"
    data.write_text("source,target,count\nA,B,3\nB,A,2\nB,C,4\nC,B,1\nA,C,2\nC,A,2\n"
                    "C,D,3\nD,C,1\nD,A,2\nA,D,1\n")  # fmt: skip
    features.write_text("state,x,y\nA,0.1,1\nB,0.5,0\nC,1.2,1\nD,2.0,0\n")
    argv = ["fit", str(data), "--model", "features", "--method", "least-action",
            "--features", str(features), "--out", str(out)]  # fmt: skip
    run = subprocess.run([sys.executable, "-c", CLI_PROBE, *argv], capture_output=True,
                         text=True, check=True)  # fmt: skip
    probe = json.loads(run.stdout)
    assert probe["code"] == 0, probe["stderr"]
    assert "least action over 2 features" in probe["stderr"]
    assert out.read_text().splitlines()[0] == "feature,theta,theta_std"
    assert probe["heavy"] == []
