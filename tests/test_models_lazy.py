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
