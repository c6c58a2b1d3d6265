"""Bayesian tests of detailed balance on fitted posteriors.

Inputs are fits from `detailed_balance.sampling.fit` (or their DataTrees): the equilibrium model
(n_fg ~ Binomial(m, logit⁻¹(log N_f/N_g + V_f − V_g)), m = n_fg + n_gf) and the non-equilibrium
model (the same plus an antisymmetric A_fg with shrinkage scale τ_A). Everything is computed
from the posterior draws with numpy, vectorised over draws × pairs × cycles.

Tests
-----
- `ppc_pairs` (`diagnostics.ppc`, with `loop_chi2_ppc`): posterior predictive check of the pair counts. Discrepancy: the binomial deviance
  G²(n, θ) = 2 Σ_pairs [n log(n / m p) + (m − n) log((m − n) / m (1 − p))]; per draw θ we draw
  n_rep ~ Binomial(m, p_θ) and report p = P(G²(n_rep, θ) ≥ G²(n_obs, θ)).
- `loop_chi2_ppc`: the paper's 3-cycle χ² (forward vs backward Σ log T, σ² = Σ 1/n + 1/N per
  side) as a discrepancy under a posterior (the equilibrium one, in the verdict). The cycles
  are those whose six edges were all seen, so replicated counts are drawn under the same
  condition (a binomial truncated to 1 ≤ n ≤ m − 1); without it replicated zeros inflate the
  replicated χ² and p drifts towards 1.
- `pair_violations`, `cycle_violations`: the posterior of A_fg and of the loop affinity
  Σ A (a→b→c→a), with an equal-tailed interval, P(> 0) and the local false sign rate
  lfsr = min(P(x ≥ 0), P(x ≤ 0)). Flags control the Bayesian false discovery rate (`bayes_fdr`).
- `loo_compare`: PSIS-LOO (``az.loo``/``az.compare``) ELPD of non-equilibrium minus equilibrium
  and the SE of that paired difference.
- `bayes_verdict` (`diagnostics.verdict`) combines them into ``holds`` / ``violated`` / ``inconclusive`` (rule in its
  docstring); `detailed_balance.workflow.bayes_check` fits the model a verdict lacks and calls
  it (``check --posterior`` and the demo); `format_bayes` (its text) is in `reports`.
- `bayes_downhill`, `bayes_potential_spread`: the paper's downhill fraction (moves with
  T > 0.05 that go to lower V) and Gaussian spread σ of V, per draw, with intervals.

Bayesian FDR
------------
For each pair (or cycle) the posterior gives lfsr_k, the probability that the sign we would
declare is wrong. Sorting by lfsr and flagging the largest prefix whose *mean* lfsr is ≤ q makes
the posterior expected proportion of false signs among the flagged ≤ q (Müller et al. 2004;
Stephens 2017's lfsr / s-values). Under reversible data a good shrinkage prior keeps every
lfsr near ½, so nothing is flagged; the control is only as good as the posterior's calibration,
which the calibration tests check.
"""

from __future__ import annotations

import warnings
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from ._fitdata import (
    FitArrays,
    FitError,
    as_tree,
    centre_by_label,
    fit_arrays,
    interval,
    interval_summary,
    stack_draws,
)
from .paper import downhill_tally
from .ppc import (
    _chunks,
)

FDR_Q = 0.05
CI = 0.9
LOOP_PPC_ALPHA = 0.01  # loop χ² posterior predictive p below this: the loops are out of balance
PPC_ALPHA = 0.05  # pair-count posterior predictive p below this: the model misfits
LOO_MIN_DIFF = 4.0  # ELPD differences below 4 are "similar predictions" (Sivula et al. 2022)
LOO_SE_FACTOR = 2.0
SEVERE_RHAT = 1.05  # above this (or > 1% divergent draws) the verdict is withheld
SEVERE_DIVERGENT_FRACTION = 0.01


# -- credible violation tests ------------------------------------------------------------
def bayes_fdr(wrong_sign: np.ndarray, q: float = FDR_Q) -> np.ndarray:
    """Flags controlling the Bayesian false discovery rate of declared signs at level `q`.

    `wrong_sign[k]` is the posterior probability that the sign we would declare for item k is
    wrong (the lfsr). The flagged set is the largest set of smallest lfsr whose mean lfsr is
    ≤ q: its posterior expected false-sign proportion. Returns a boolean mask.
    """
    wrong_sign = np.asarray(wrong_sign, dtype=float)
    order = np.argsort(wrong_sign, kind="stable")
    running = np.cumsum(wrong_sign[order]) / np.arange(1, len(order) + 1)
    # `running` is non-decreasing (sorted ascending), so the admissible sets form a prefix.
    k = int(np.searchsorted(running, q, side="right"))
    flags = np.zeros(len(wrong_sign), dtype=bool)
    flags[order[:k]] = True
    return flags


def _violation_table(draws: np.ndarray, ci: float, fdr: float) -> pd.DataFrame:
    lo, hi = interval(draws, ci)
    p_pos = np.mean(draws > 0, axis=0)
    lfsr = np.minimum(np.mean(draws >= 0, axis=0), np.mean(draws <= 0, axis=0))
    return pd.DataFrame(
        {
            "mean": draws.mean(axis=0),
            "sd": draws.std(axis=0, ddof=1) if len(draws) > 1 else np.zeros(draws.shape[1]),
            "lower": lo,
            "upper": hi,
            "p_positive": p_pos,
            "lfsr": lfsr,
            "flagged": bayes_fdr(lfsr, fdr),
        }
    )


def _require_a(fit: FitArrays, what: str) -> None:
    if not fit.has_A:
        raise FitError(
            f"{what} need the non-equilibrium model's antisymmetric term A; this is an "
            f"equilibrium fit (fit --model nonequilibrium, or pass the non-equilibrium fit)."
        )


def pair_violations(result: Any, fdr: float = FDR_Q, *, ci: float = CI) -> pd.DataFrame:
    """Per pair (f, g): posterior of A_fg (f→g orientation) and Bayesian-FDR flags.

    Columns ``f, g, n_fg, n_gf, mean, sd, lower, upper, p_positive, lfsr, flagged``; attrs hold
    ``q`` and ``expected_false`` (the posterior expected number of false signs among flags).
    A per pair is only partly identified (V can absorb A on edges that lie on no cycle); the
    shrinkage prior resolves that, and loop affinities (`cycle_violations`) are the gauge-free
    evidence.
    """
    fit = fit_arrays(result)
    _require_a(fit, "pair violations")
    table = _violation_table(fit.A(), ci, fdr)
    table.insert(0, "f", fit.pair_f)
    table.insert(1, "g", fit.pair_g)
    table.insert(2, "n_fg", fit.n_fg.astype(np.int64))
    table.insert(3, "n_gf", fit.n_gf.astype(np.int64))
    table.attrs.update(q=fdr, ci=ci, expected_false=float(table.loc[table.flagged, "lfsr"].sum()))
    return table


def cycle_violations(result: Any, fdr: float = FDR_Q, *, ci: float = CI) -> pd.DataFrame:
    """Per 3-cycle (a→b→c→a): posterior of the loop affinity Σ A and Bayesian-FDR flags.

    The loop affinity equals log of forward over backward Σ log T and is gauge-free: it is 0
    for every 3-cycle exactly when detailed balance holds on it. Columns ``a, b, c, mean, sd,
    lower, upper, p_positive, lfsr, flagged`` (attrs as in `pair_violations`).
    """
    fit = fit_arrays(result)
    _require_a(fit, "cycle violations")
    affinity = fit.loop_affinity()
    table = (
        _violation_table(affinity, ci, fdr)
        if affinity.shape[1]
        else _violation_table(np.zeros((2, 0)), ci, fdr)
    )
    names = fit.cycle_names
    table.insert(0, "a", names[:, 0])
    table.insert(1, "b", names[:, 1])
    table.insert(2, "c", names[:, 2])
    table.attrs.update(q=fdr, ci=ci, expected_false=float(table.loc[table.flagged, "lfsr"].sum()))
    return table


def _summary(draws: np.ndarray, ci: float) -> dict[str, float]:
    return interval_summary(draws, ci)


def tau_a_summary(result: Any, ci: float = CI) -> dict[str, float] | None:
    """Posterior mean and interval of τ_A (None for an equilibrium fit)."""
    fit = fit_arrays(result)
    tau = fit.scalar("tau_A")
    return None if tau is None else _summary(tau, ci)


# -- LOO ---------------------------------------------------------------------------------
LOO_MAX_DRAWS = 1000


def _draw_step(n_chains: int, n_draws: int, max_draws: int | None) -> int:
    """Keep every k-th draw of each chain so that at most `max_draws` remain in total."""
    if max_draws is None or n_chains * n_draws <= max_draws:
        return 1
    return int(np.ceil(n_chains * n_draws / max_draws))


def log_likelihood_tree(result: Any, max_draws: int | None = None) -> xr.DataTree:
    """A DataTree with the fit's posterior and a pointwise ``log_likelihood`` of ``n_fg``.

    Uses the fit's own ``log_likelihood`` group when present, else computes the binomial
    log-likelihood of every pair from the draws (MAP/Laplace or hand-made fits). With
    `max_draws`, every k-th draw of each chain is kept (chains stay intact for r_eff).
    """
    tree = as_tree(result)
    post = tree["posterior"].to_dataset()
    step = _draw_step(post.sizes.get("chain", 1), post.sizes.get("draw", 1), max_draws)
    thin = {"draw": slice(None, None, step)}
    post = post.isel(thin)
    if "log_likelihood" in tree.children and "n_fg" in tree["log_likelihood"].data_vars:
        loglik = tree["log_likelihood"]["n_fg"].isel(thin).transpose("chain", "draw", ...)
        observed = tree["observed_data"].to_dataset() if "observed_data" in tree.children else None
    else:
        # Deferred: the models package loads PyMC, which the paper checks do not need.
        from detailed_balance.models import pointwise_loglik

        fit = fit_arrays(tree)
        v = fit.V().reshape(fit.n_chains, fit.n_draws, -1)[:, ::step]
        a = fit.A()
        a = None if a is None else a.reshape(fit.n_chains, fit.n_draws, -1)[:, ::step]
        shape = v.shape[:2]
        v = v.reshape(-1, v.shape[-1])
        a = None if a is None else a.reshape(-1, a.shape[-1])
        values = pointwise_loglik(fit.n_fg, fit.m, fit.offset, fit.pair_i, fit.pair_j, v, a)
        loglik = xr.DataArray(
            values.reshape(*shape, -1),
            dims=("chain", "draw", "pair"),
            coords={"chain": post["chain"], "draw": post["draw"]},
        )
        observed = xr.Dataset({"n_fg": (("pair",), fit.n_fg)})
    groups = {"posterior": post, "log_likelihood": xr.Dataset({"n_fg": loglik})}
    if observed is not None:
        groups["observed_data"] = observed
    return xr.DataTree.from_dict(groups)


def _psis_loo(result: Any, max_draws: int | None) -> Any:
    """``az.loo`` on (thinned) draws with r_eff from the log-likelihood itself.

    ArviZ's default r_eff averages the ESS of *every* posterior variable (20,000+ at paper
    scale: slower than LOO itself); the relative efficiency of the pointwise log-likelihood on
    up to 256 evenly spaced pairs estimates the same thing cheaply (r_eff = 1 for independent
    draws of MAP/Laplace or ADVI).
    """
    tree = log_likelihood_tree(result, max_draws)
    loglik = tree["log_likelihood"]["n_fg"]
    n_samples = loglik.sizes["chain"] * loglik.sizes["draw"]
    if loglik.sizes["chain"] == 1:
        reff = 1.0
    else:
        pairs = np.unique(np.linspace(0, loglik.sizes["pair"] - 1, 256).astype(int))
        ess = az.ess(loglik.isel(pair=pairs), method="mean").values
        reff = float(np.nanmean(ess) / n_samples) if np.isfinite(ess).any() else 1.0
    return az.loo(tree, pointwise=True, var_name="n_fg", reff=reff)


def loo_compare(eq: Any, neq: Any, *, max_draws: int | None = LOO_MAX_DRAWS) -> dict[str, Any]:
    """PSIS-LOO ELPD of the non-equilibrium minus the equilibrium model, with the paired SE.

    Returns ``{"elpd_eq", "elpd_neq", "elpd_diff", "elpd_se", "high_pareto_k": {"eq", "neq"}}``
    (all None when a fit has a single draw). elpd_diff > 0 means the non-equilibrium model
    predicts held-out pairs better. Many high Pareto k (one A per pair makes each observation
    influential) mean the difference is approximate; they are reported, not hidden. At most
    `max_draws` evenly thinned draws are used (PSIS needs hundreds, not thousands).
    """
    none = {
        "elpd_eq": None,
        "elpd_neq": None,
        "elpd_diff": None,
        "elpd_se": None,
        "high_pareto_k": None,
    }
    eq_fit, neq_fit = fit_arrays(eq), fit_arrays(neq)
    if eq_fit.n_samples < 2 or neq_fit.n_samples < 2:
        return none
    if len(eq_fit.n_fg) != len(neq_fit.n_fg) or (eq_fit.n_fg != neq_fit.n_fg).any():
        raise FitError(
            "the equilibrium and non-equilibrium fits were made on different data (their pair "
            "counts differ); fit both models to the same transitions."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # high Pareto k are reported in the result instead
        try:
            loo_eq = _psis_loo(eq, max_draws)
            loo_neq = _psis_loo(neq, max_draws)
        except ValueError:  # degenerate draws (e.g. a point posterior): PSIS is undefined
            return none
        table = az.compare(
            {"equilibrium": loo_eq, "nonequilibrium": loo_neq},
            reference="equilibrium",
            round_to="none",
        )
    return {
        "elpd_eq": float(loo_eq.elpd),
        "elpd_neq": float(loo_neq.elpd),
        "elpd_diff": float(table.loc["nonequilibrium", "elpd_diff"]),
        "elpd_se": float(table.loc["nonequilibrium", "dse"]),
        "high_pareto_k": {
            "eq": int(np.sum(loo_eq.pareto_k.values > loo_eq.good_k)),
            "neq": int(np.sum(loo_neq.pareto_k.values > loo_neq.good_k)),
        },
    }


# -- the paper's numbers, with intervals ------------------------------------------------------
def bayes_downhill(
    result: Any, threshold: float = 0.05, *, ci: float = CI, variable: str = "V"
) -> dict[str, Any]:
    """Posterior of the paper's downhill fraction: moves with T = min(1, n/N₀) > `threshold`
    that go to lower V, computed per draw. ``{"mean", "lower", "upper", "n"}``; n is the
    number of such moves (directed, distinct). `variable` names another per-state potential
    of the posterior to judge the moves by (e.g. the feature part ``V_features``)."""
    fit = fit_arrays(result)
    rate_fg = np.minimum(1.0, fit.n_fg / fit.N_f)
    rate_gf = np.minimum(1.0, fit.n_gf / fit.N_g)
    fwd = (fit.n_fg > 0) & (rate_fg > threshold)
    bwd = (fit.n_gf > 0) & (rate_gf > threshold)
    src = np.concatenate([fit.pair_i[fwd], fit.pair_j[bwd]])
    dst = np.concatenate([fit.pair_j[fwd], fit.pair_i[bwd]])
    if len(src) == 0:
        return {"mean": None, "lower": None, "upper": None, "n": 0}
    if variable == "V":
        v = fit.V()
    else:
        da = fit.tree["posterior"][variable]
        v = stack_draws(da.sel(state=np.asarray(fit.states, dtype=object)), "state")
    fractions = [
        downhill_tally(v[chunk][:, dst] - v[chunk][:, src])["fraction_down"]
        for chunk in _chunks(fit.n_samples)
    ]
    return {**_summary(np.concatenate(fractions), ci), "n": int(len(src))}


def bayes_potential_spread(result: Any, *, min_visits: float = 2, ci: float = CI) -> dict[str, Any]:
    """Posterior of the Gaussian spread σ of V over bounded states sampled ≥ `min_visits` times.

    In every draw V is centred per strongly connected piece (its only identified part) and σ is
    the maximum-likelihood Gaussian width (ddof 0), as the paper's fit. ``{"mean", "lower",
    "upper", "n"}``.
    """
    fit = fit_arrays(result)
    labels, _ = fit.strong_components()
    keep = fit.bounded() & (fit.visits() >= min_visits)
    if keep.sum() < 2:
        return {"mean": None, "lower": None, "upper": None, "n": int(keep.sum())}
    _, lab = np.unique(labels[keep], return_inverse=True)
    centred = centre_by_label(fit.V()[:, keep], lab)
    return {**_summary(centred.std(axis=1), ci), "n": int(keep.sum())}
