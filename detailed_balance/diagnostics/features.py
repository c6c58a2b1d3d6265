"""What a fitted feature potential says: θ, the share of V it explains, predictions, downhill.

Every function takes a feature fit — a `BayesFit` of `FeaturePotentialModel` or its
`xarray.DataTree` (posterior ``theta`` (feature), ``theta_std``, ``sigma_eps``, ``V``,
``V_features``, ``feature_share``; ``constant_data`` with ``features`` (state, feature),
``feature_mean``, ``feature_scale``) — and works from the file alone: nothing is refitted.
Intervals are equal-tailed (`ci`, 90% by default).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from detailed_balance.data import DataError
from detailed_balance.data.names import as_names
from detailed_balance.features import FeatureSource, resolve_features

from ._fitdata import interval_summary, stack_draws
from .bayes import bayes_downhill, loo_compare

CI = 0.9


class NotAFeatureFit(ValueError):
    """The fit has no feature potential (no ``theta``); fit `--model features`."""


def _tree(fit: Any) -> xr.DataTree:
    tree = fit if isinstance(fit, xr.DataTree) else getattr(fit, "posterior", None)
    if not isinstance(tree, xr.DataTree):
        raise TypeError(f"expected a fit or an xarray.DataTree, got {type(fit).__name__}.")
    if "posterior" not in tree.children or "theta" not in tree["posterior"].data_vars:
        raise NotAFeatureFit(
            "this fit has no feature coefficients theta; fit the feature model "
            "(`detailed-balance fit DATA --model features --features ...`)."
        )
    return tree


def has_features(fit: Any) -> bool:
    """True when `fit` is a feature-potential fit (its posterior has ``theta``)."""
    try:
        _tree(fit)
    except (NotAFeatureFit, TypeError):
        return False
    return True


def _draws(da: xr.DataArray, dim: str | None = None) -> np.ndarray:
    return stack_draws(da, dim)


def _summary(draws: np.ndarray, ci: float) -> dict[str, float]:
    return interval_summary(draws, ci, sd=True)


def theta_summary(fit: Any, ci: float = CI, *, standardised: bool = False) -> pd.DataFrame:
    """``feature, mean, sd, lower, upper``: θ per unit of each feature (the `theta.csv`).

    With ``standardised=True``: θ per standard deviation of the feature over the modelled
    states (``theta_std``; comparable across features: kT per SD).
    """
    tree = _tree(fit)
    name = "theta_std" if standardised else "theta"
    draws = _draws(tree["posterior"][name], "feature")
    lo, hi = np.quantile(draws, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    return pd.DataFrame(
        {
            "feature": as_names(tree["posterior"][name]["feature"]),
            "mean": draws.mean(axis=0),
            "sd": draws.std(axis=0, ddof=1) if len(draws) > 1 else 0.0,
            "lower": lo,
            "upper": hi,
        }
    )


def feature_share(fit: Any, ci: float = CI) -> dict[str, float]:
    """Posterior of the share of V's spread the features explain (the headline number).

    Per draw: var_f(x_f·θ) / (var_f(x_f·θ) + σ_ε²) over the modelled states — 1 when V is a
    function of the features, 0 when they explain nothing. ``{mean, sd, lower, upper}``.
    """
    return _summary(_draws(_tree(fit)["posterior"]["feature_share"]), ci)


def sigma_eps(fit: Any, ci: float = CI) -> dict[str, float]:
    """Posterior of σ_ε, the scale of what the features leave unexplained (kT)."""
    return _summary(_draws(_tree(fit)["posterior"]["sigma_eps"]), ci)


def predict_potentials(
    fit: Any,
    states: Sequence[str] | None = None,
    *,
    features: FeatureSource | None = None,
    ci: float = CI,
    seed: int = 0,
) -> pd.DataFrame:
    """V with a `ci` interval for any states, seen or never seen, from their features.

    A new state's V is x·θ + ε with ε ~ Normal(0, σ_ε) drawn per posterior draw, so the
    interval holds both the uncertainty of θ and the scatter the features do not explain.
    Modelled states get their posterior V instead (``observed`` True). Features come from
    `features` (a source as in `resolve_features`), else from the fit's own source when it is a
    built-in featuriser or a CSV file that still exists. `states` defaults to the index of a
    feature table given as `features`. Returns ``state, mean, sd, lower, upper, observed``.
    """
    tree = _tree(fit)
    post, const = tree["posterior"], tree["constant_data"]
    if states is None:
        if not isinstance(features, pd.DataFrame):
            raise ValueError("give the states to predict (or a feature table indexed by state).")
        states = list(features["state"] if "state" in features.columns else features.index)
    names = pd.Index([str(s) for s in states], dtype=object)
    source = features if features is not None else const.attrs.get("features_source")
    if source is None or (isinstance(source, str) and source in ("table", "callable")):
        raise DataError(
            "this fit's features were a table or a function, which the fit file does not "
            "carry for new states; pass features= (a table indexed by state or the function)."
        )
    feats = list(as_names(post["theta"]["feature"]))
    table = resolve_features(source, names)
    missing = [f for f in feats if f not in table.columns]
    if missing:
        raise DataError(f"the features of the new states lack {missing}; give the fit's columns.")
    mean = const["feature_mean"].to_numpy()
    scale = const["feature_scale"].to_numpy()
    z = (table[feats].to_numpy(float) - mean) / scale
    theta = _draws(post["theta_std"], "feature")
    sigma = _draws(post["sigma_eps"])
    rng = np.random.default_rng(seed)
    draws = theta @ z.T + sigma[:, None] * rng.standard_normal((len(sigma), len(names)))
    fitted_states = pd.Index(as_names(post["V"]["state"]), dtype=object)
    v_fit = _draws(post["V"], "state")
    reference = _reference(tree)
    if reference is not None:  # V is reported relative to the reference state: do the same
        draws = draws - v_fit_raw(tree, reference)[:, None]
    pos = fitted_states.get_indexer(names)
    seen = pos >= 0
    draws[:, seen] = v_fit[:, pos[seen]]
    lo, hi = np.quantile(draws, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    return pd.DataFrame(
        {
            "state": names,
            "mean": draws.mean(axis=0),
            "sd": draws.std(axis=0, ddof=1) if len(draws) > 1 else 0.0,
            "lower": lo,
            "upper": hi,
            "observed": seen,
        }
    )


def _reference(tree: xr.DataTree) -> str | None:
    config = json.loads(str(tree.attrs.get("model_config", "{}")))
    return config.get("reference")


def v_fit_raw(tree: xr.DataTree, reference: str) -> np.ndarray:
    """Draws of the reference state's V before the reference shift (V_features + residual)."""
    post = tree["posterior"]
    if "V_reference" in post.data_vars:
        return _draws(post["V_reference"])
    raise DataError(
        f"the fit reports V relative to {reference!r} but does not store that state's own V; "
        "predict from a fit without a reference state."
    )


def feature_downhill(fit: Any, threshold: float = 0.05, ci: float = CI) -> dict[str, Any]:
    """The paper's downhill fraction (moves with T > `threshold` that go to lower V) under the
    fitted *feature* potential x·θ alone, per draw: ``{mean, lower, upper, n}`` — the analogue
    of the paper's 69.56% for its hand-built parametric potential."""
    return bayes_downhill(_tree(fit), threshold, ci=ci, variable="V_features")


def compare_free(feature_fit: Any, free_fit: Any) -> dict[str, Any]:
    """PSIS-LOO of the feature model against the free-V equilibrium model on the same data.

    ``{elpd_free, elpd_features, elpd_diff, elpd_se, high_pareto_k: {free, features}}`` with
    elpd_diff = features − free (> 0: the features predict held-out pairs better; ≈ 0 within a
    few SE: they cost nothing; clearly < 0: the landscape has structure they miss). All None
    when a fit has a single draw.
    """
    _tree(feature_fit)
    out = loo_compare(free_fit, feature_fit)
    pareto = out.get("high_pareto_k") or {}
    return {
        "elpd_free": out["elpd_eq"],
        "elpd_features": out["elpd_neq"],
        "elpd_diff": out["elpd_diff"],
        "elpd_se": out["elpd_se"],
        "high_pareto_k": (
            {"free": pareto.get("eq"), "features": pareto.get("neq")} if pareto else None
        ),
    }


def feature_summary(fit: Any, ci: float = CI, *, threshold: float = 0.05) -> dict[str, Any]:
    """The JSON-ready headline numbers: share explained, σ_ε, θ table, downhill under x·θ."""
    tree = _tree(fit)
    const = tree["constant_data"]
    return {
        "feature_share": feature_share(fit, ci),
        "sigma_eps": sigma_eps(fit, ci),
        "theta": theta_summary(fit, ci).to_dict(orient="records"),
        "downhill_features": feature_downhill(fit, threshold, ci),
        "features_source": const.attrs.get("features_source"),
        "dropped_features": json.loads(str(const.attrs.get("dropped_features", "[]"))),
        "ci": ci,
    }
