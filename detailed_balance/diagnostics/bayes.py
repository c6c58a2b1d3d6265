"""Bayesian tests of detailed balance on fitted posteriors.

Inputs are fits from `detailed_balance.sampling.fit` (or their DataTrees): the equilibrium model
(n_fg ~ Binomial(m, logit⁻¹(log N_f/N_g + V_f − V_g)), m = n_fg + n_gf) and the non-equilibrium
model (the same plus an antisymmetric A_fg with shrinkage scale τ_A). Everything is computed
from the posterior draws with numpy, vectorised over draws × pairs × cycles.

Tests
-----
- `ppc_pairs`: posterior predictive check of the pair counts. Discrepancy: the binomial deviance
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
- `bayes_verdict` combines them into ``holds`` / ``violated`` / ``inconclusive`` (rule in its
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

import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import expit, log_expit, xlogy

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
from .convergence import MCMC_METHODS, convergence
from .paper import downhill_tally

FDR_Q = 0.05
CI = 0.9
LOOP_PPC_ALPHA = 0.01  # loop χ² posterior predictive p below this: the loops are out of balance
PPC_ALPHA = 0.05  # pair-count posterior predictive p below this: the model misfits
LOO_MIN_DIFF = 4.0  # ELPD differences below 4 are "similar predictions" (Sivula et al. 2022)
LOO_SE_FACTOR = 2.0
SEVERE_RHAT = 1.05  # above this (or > 1% divergent draws) the verdict is withheld
SEVERE_DIVERGENT_FRACTION = 0.01


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _thin(fit: FitArrays, max_draws: int | None) -> np.ndarray:
    """Indices of at most `max_draws` evenly spaced draws of the stacked sample axis."""
    if max_draws is None or fit.n_samples <= max_draws:
        return np.arange(fit.n_samples)
    return np.unique(np.linspace(0, fit.n_samples - 1, max_draws).round().astype(int))


# -- posterior predictive checks ------------------------------------------------------------
def deviance(n: np.ndarray, m: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Binomial deviance G² of counts `n` of `m` trials against log-odds `eta`, summed on the
    last axis. 0 for a perfect fit; ≈ χ² with one degree of freedom per pair when m p is large."""
    saturated = xlogy(n, n / np.maximum(m, 1)) + xlogy(m - n, (m - n) / np.maximum(m, 1))
    model = n * log_expit(eta) + (m - n) * log_expit(-eta)
    return 2.0 * (saturated - model).sum(axis=-1)


def _ppc_draws(fit: FitArrays, rng: np.random.Generator, keep: np.ndarray):
    """Per chunk of the kept draws: (log-odds η, replicated counts n_rep) of every pair."""
    v_all, a_all = fit.V()[keep], fit.A()
    a_all = None if a_all is None else a_all[keep]
    m = fit.m.astype(np.int64)
    for chunk in _chunks(len(keep)):
        eta = fit.log_odds(v_all[chunk], None if a_all is None else a_all[chunk])
        yield eta, rng.binomial(m, expit(eta))


def ppc_pairs(
    result: Any, seed: int | np.random.Generator | None = 0, *, max_draws: int | None = 1000
) -> dict[str, Any]:
    """Posterior predictive check of the pair counts with the binomial deviance.

    Returns ``{"statistic": "deviance", "observed": mean G²(n_obs), "replicated": mean
    G²(n_rep), "p_value": P(G²(n_rep, θ) ≥ G²(n_obs, θ)), "n_pairs", "draws"}``. Small p: the
    counts vary more than the model allows (for the equilibrium model, often a sign that
    detailed balance fails; for both, overdispersion or misfit).
    """
    fit = fit_arrays(result)
    keep = _thin(fit, max_draws)
    m = fit.m
    observed, replicated = [], []
    for eta, n_rep in _ppc_draws(fit, _rng(seed), keep):
        observed.append(deviance(fit.n_fg, m, eta))
        replicated.append(deviance(n_rep, m, eta))
    t_obs, t_rep = np.concatenate(observed), np.concatenate(replicated)
    return {
        "statistic": "deviance",
        "observed": float(t_obs.mean()),
        "replicated": float(t_rep.mean()),
        "p_value": float(np.mean(t_rep >= t_obs)),
        "n_pairs": int(len(m)),
        "draws": int(len(keep)),
    }


def ppc_replicates(
    result: Any, seed: int | np.random.Generator | None = 0, *, max_draws: int | None = 200
) -> dict[str, np.ndarray]:
    """The draws behind `ppc_pairs`, for figures: ``{"n_obs", "m" (pairs), "share" (predicted
    n_fg/m per draw and pair), "n_rep" (replicated counts per draw and pair), "deviance_obs",
    "deviance_rep" (per draw)}`` over at most `max_draws` evenly spaced draws (memory is draws
    × pairs)."""
    fit = fit_arrays(result)
    keep = _thin(fit, max_draws)
    m = fit.m
    shares, reps, d_obs, d_rep = [], [], [], []
    for eta, n_rep in _ppc_draws(fit, _rng(seed), keep):
        shares.append(expit(eta))
        reps.append(n_rep)
        d_obs.append(deviance(fit.n_fg, m, eta))
        d_rep.append(deviance(n_rep, m, eta))
    empty = np.empty((0, len(m)))
    return {
        "n_obs": fit.n_fg,
        "m": m,
        "share": np.concatenate(shares) if shares else empty,
        "n_rep": np.concatenate(reps) if reps else empty,
        "deviance_obs": np.concatenate(d_obs) if d_obs else np.empty(0),
        "deviance_rep": np.concatenate(d_rep) if d_rep else np.empty(0),
    }


def _chunks(n: int, size: int = 256) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def loop_chi2(
    forward_counts: np.ndarray,
    backward_counts: np.ndarray,
    source_visits: np.ndarray,
    correction: float = 0.5,
) -> np.ndarray:
    """The paper's loop χ² for (..., cycles, 3) directed-edge counts, summed over cycles.

    forward/backward: counts of a→b, b→c, c→a and of the reverse edges; source_visits: N of
    a, b, c (the sources of both sides). log T = log(n + correction) − log N; the N terms cancel
    in forward − backward and enter σ² = Σ 1/(n + c) + Σ 1/N per side. With correction 0 and
    n < N this is exactly `loop_balance`'s χ² (`detailed_balance.diagnostics.paper`).
    """
    nf = forward_counts + correction
    nb = backward_counts + correction
    diff = np.log(nf).sum(axis=-1) - np.log(nb).sum(axis=-1)
    inv_n = (1.0 / source_visits).sum(axis=-1)
    var = (1.0 / nf).sum(axis=-1) + (1.0 / nb).sum(axis=-1) + 2.0 * inv_n
    return (diff**2 / var).sum(axis=-1)


def truncated_binomial(
    rng: np.random.Generator, m: np.ndarray, p: np.ndarray, low: int, max_rounds: int = 64
) -> np.ndarray:
    """Binomial(m, p) draws conditioned on low ≤ n ≤ m − low (elementwise, broadcast).

    Why: the loop statistic is computed on 3-cycles whose six edges were all *seen* (≥ `low`
    times each way); replicated data must pass the same selection, or replicated zeros inflate
    the replicated χ² and the p-value comes out near 1 under a true model. Vectorised rejection
    for the common case, exact inverse-CDF sampling for the few stubborn entries.
    """
    m = np.broadcast_to(m, p.shape).astype(np.int64)
    out = rng.binomial(m, p)
    bad = (out < low) | (out > m - low)
    for _ in range(max_rounds):
        if not bad.any():
            return out
        redraw = rng.binomial(m[bad], p[bad])
        out[bad] = redraw
        bad[bad] = (redraw < low) | (redraw > m[bad] - low)
    if bad.any():
        from scipy.stats import binom

        mb, pb = m[bad], p[bad]
        lo_cdf = binom.cdf(low - 1, mb, pb)
        hi_cdf = binom.cdf(mb - low, mb, pb)
        u = lo_cdf + rng.random(len(mb)) * (hi_cdf - lo_cdf)
        out[bad] = np.clip(binom.ppf(u, mb, pb), low, mb - low).astype(np.int64)
    return out


def _cycle_counts(fit: FitArrays, n_fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward loop-edge counts (..., cycles, 3) from pair counts (..., pairs)."""
    n_gf = fit.m - n_fg
    e, s = fit.cycle_edges, fit.cycle_signs > 0
    fwd = np.where(s, n_fg[..., e], n_gf[..., e])
    bwd = np.where(s, n_gf[..., e], n_fg[..., e])
    return fwd, bwd


def _state_visits(fit: FitArrays) -> np.ndarray:
    visits = np.zeros(len(fit.states))
    visits[fit.pair_i] = fit.N_f
    visits[fit.pair_j] = fit.N_g
    return visits


def loop_chi2_ppc(
    result: Any,
    seed: int | np.random.Generator | None = 0,
    *,
    min_count: int = 1,
    correction: float = 0.0,
    max_draws: int | None = 1000,
) -> dict[str, Any]:
    """Posterior predictive p-value of the paper's 3-cycle loop χ² under `result`'s model.

    Replicated pair counts n_rep ~ Binomial(m, p_θ) per draw (m fixed, as the model conditions
    on it), conditioned like the data on every loop edge being seen ≥ `min_count` times each
    way (`truncated_binomial`; `min_count` must be the one the fit's cycles were selected
    with, 1 by default); the statistic is `loop_chi2` over the fit's 3-cycles, the paper's χ²
    exactly when `correction` is 0. Under the equilibrium model a small p says the observed
    loops are further from balance than reversible dynamics with these potentials produce.
    ``None`` p-value when the data have no 3-cycle.
    """
    if min_count < 1 and correction <= 0:
        raise ValueError("min_count 0 lets replicated loop edges be unseen: give correction > 0.")
    fit = fit_arrays(result)
    n_cycles = len(fit.cycle_abc)
    if n_cycles == 0:
        return {
            "statistic": "loop_chi2",
            "n_cycles": 0,
            "observed_chi2_ndf": None,
            "replicated_chi2_ndf": None,
            "p_value": None,
        }
    rng = _rng(seed)
    keep = _thin(fit, max_draws)
    visits = _state_visits(fit)[fit.cycle_abc]
    fwd, bwd = _cycle_counts(fit, fit.n_fg)
    t_obs = float(loop_chi2(fwd, bwd, visits, correction))
    # Only the pairs on some cycle matter: replicate those.
    used = np.unique(fit.cycle_edges)
    m_used = fit.m[used].astype(np.int64)
    v_all, a_all = fit.V()[keep], fit.A()
    a_all = None if a_all is None else a_all[keep][:, used]
    offset = fit.offset[used]
    pi, pj = fit.pair_i[used], fit.pair_j[used]
    t_rep = []
    for chunk in _chunks(len(keep)):
        v = v_all[chunk]
        eta = offset + v[:, pi] - v[:, pj]
        if a_all is not None:
            eta = eta + a_all[chunk]
        n_rep_used = truncated_binomial(rng, m_used, expit(eta), min_count)
        n_rep = np.zeros((n_rep_used.shape[0], len(fit.m)))
        n_rep[:, used] = n_rep_used
        f_rep, b_rep = _cycle_counts(fit, n_rep)
        t_rep.append(loop_chi2(f_rep, b_rep, visits, correction))
    t_rep = np.concatenate(t_rep)
    return {
        "statistic": "loop_chi2",
        "n_cycles": n_cycles,
        "observed_chi2_ndf": t_obs / n_cycles,
        "replicated_chi2_ndf": float(t_rep.mean() / n_cycles),
        "p_value": float(np.mean(t_rep >= t_obs)),
    }


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


# -- verdict ------------------------------------------------------------------------------
@dataclass
class Verdict:
    """``holds`` / ``violated`` / ``inconclusive`` with the numbers behind it.

    `evidence` is the ``bayes`` JSON object of ``check --posterior --json``; `reasons` says in
    words which signals fired; `pairs` / `cycles` are the per-item tables.
    """

    verdict: str
    evidence: dict[str, Any]
    reasons: list[str] = field(default_factory=list)
    pairs: pd.DataFrame | None = None
    cycles: pd.DataFrame | None = None

    def to_json(self) -> str:
        return json.dumps(self.evidence)


def bayes_verdict(
    eq_result: Any,
    neq_result: Any,
    *,
    fdr: float = FDR_Q,
    ci: float = CI,
    seed: int | None = 0,
    loop_alpha: float = LOOP_PPC_ALPHA,
    ppc_alpha: float = PPC_ALPHA,
    check_convergence: bool = True,
) -> Verdict:
    """One verdict on detailed balance from an equilibrium and a non-equilibrium fit.

    Lines of evidence against detailed balance:

    1. cycles: ≥ 1 3-cycle whose loop affinity is flagged at Bayesian FDR `fdr` (neq fit);
    2. loops PPC: the paper's loop χ² has posterior predictive p < `loop_alpha` under the
       equilibrium fit;
    3. pair fit: the equilibrium fit's deviance PPC has p < `loop_alpha` (it cannot
       reproduce the pair counts);
    4. LOO: elpd_neq − elpd_eq > max(4, 2 SE), counted only when both fits are MCMC: PSIS
       needs draws from the posterior, and on MAP/Laplace draws the difference was biased
       towards the non-equilibrium model (+2.5 ± 1 on reversible data). It is always reported.

    ``violated`` when two agree and at least one is loop-specific (1 or 2; with no 3-cycle in
    the data: LOO and pair fit, and some pair flagged); ``holds`` when none fires, no pair is
    flagged and the equilibrium fit reproduces the pair counts (deviance PPC p ≥
    `ppc_alpha`); ``inconclusive`` otherwise (a single signal, a misfitting equilibrium model
    without loop evidence, or MCMC badly unconverged: R-hat > 1.05 or > 1% divergent draws;
    milder problems only warn). Data whose pairs form a forest (``cycle_rank`` 0: chains,
    stars, single pairs) are always ``inconclusive``: there every kernel satisfies detailed
    balance, so neither answer has evidence behind it.
    """
    rng = np.random.default_rng(seed)
    pairs = pair_violations(neq_result, fdr, ci=ci)
    cycles = cycle_violations(neq_result, fdr, ci=ci)
    ppc = ppc_pairs(eq_result, rng)
    loops = loop_chi2_ppc(eq_result, rng)
    loo = loo_compare(eq_result, neq_result)
    n_cycles = len(cycles)
    flagged_cycles = int(cycles["flagged"].sum())
    flagged_pairs = int(pairs["flagged"].sum())
    diff, se = loo["elpd_diff"], loo["elpd_se"]
    eq_arrays = fit_arrays(eq_result)
    methods = {
        "equilibrium": eq_arrays.method,
        "nonequilibrium": fit_arrays(neq_result).method,
    }
    loo_counted = all(m in MCMC_METHODS for m in methods.values())
    loo_prefers_neq = diff is not None and diff > max(LOO_MIN_DIFF, LOO_SE_FACTOR * se)
    signals = {
        "cycles": flagged_cycles > 0,
        "loops_ppc": loops["p_value"] is not None and loops["p_value"] < loop_alpha,
        "pair_fit": ppc["p_value"] < loop_alpha,
        "loo": loo_counted and loo_prefers_neq,
    }
    reasons = []
    if signals["cycles"]:
        reasons.append(
            f"{flagged_cycles} of {n_cycles} 3-cycles have a loop affinity of credible sign "
            f"(Bayesian FDR ≤ {fdr})"
        )
    if signals["loops_ppc"]:
        reasons.append(
            f"loop χ²/ndf {loops['observed_chi2_ndf']:.2f} is beyond equilibrium replicates "
            f"(posterior predictive p = {loops['p_value']:.3g})"
        )
    if signals["pair_fit"]:
        reasons.append(
            f"the equilibrium fit cannot reproduce the pair counts (deviance PPC p = "
            f"{ppc['p_value']:.3g})"
        )
    if signals["loo"]:
        reasons.append(f"LOO prefers non-equilibrium: ELPD difference {diff:.1f} ± {se:.1f}")
    elif loo_prefers_neq:
        reasons.append(
            f"LOO difference {diff:.1f} ± {se:.1f} not counted: PSIS-LOO on approximate "
            f"({methods['equilibrium']}/{methods['nonequilibrium']}) draws"
        )
    fired = sum(signals.values())
    loop_specific = signals["cycles"] or signals["loops_ppc"]
    if n_cycles:
        violated = fired >= 2 and loop_specific
    else:
        violated = signals["loo"] and signals["pair_fit"] and flagged_pairs > 0
    converged = True
    conv = {}
    if check_convergence:
        # Judge each fit on what the verdict uses: V (PPCs, downhill) from the equilibrium
        # fit; loop affinities and τ_A from the non-equilibrium one, whose V mixes slowly
        # along the V/A ridge (A's gradient part trades with V) without touching loops.
        uses = {"equilibrium": ("V", "scalars"), "nonequilibrium": ("loop_affinity", "scalars")}
        for name, res in (("equilibrium", eq_result), ("nonequilibrium", neq_result)):
            report = convergence(res, include=uses[name])
            conv[name] = report.to_dict()
            if report.applicable and _badly_unconverged(report):
                converged = False
                reasons.append(f"{name} fit did not converge: {report.warnings[0]}")
    cycle_rank = eq_arrays.cycle_rank()
    if cycle_rank == 0:
        # On a forest every drive A is a gradient (it can be moved into V): the data hold no
        # loop, so neither "holds" nor "violated" is supported, whatever the other signals say.
        verdict = "inconclusive"
        reasons.insert(
            0,
            "the observed pairs form a tree (no cycle of states): every kernel on a tree "
            "satisfies detailed balance, so these data cannot show a violation nor support "
            "it; collect until states close loops",
        )
    elif violated and converged:
        verdict = "violated"
    elif fired == 0 and flagged_pairs == 0 and ppc["p_value"] >= ppc_alpha and converged:
        verdict = "holds"
        reasons.append(
            "no 3-cycle or pair of credible sign, LOO does not prefer non-equilibrium, "
            f"equilibrium reproduces pair counts (PPC p = {ppc['p_value']:.2f})"
        )
    else:
        verdict = "inconclusive"
        if fired == 1:
            reasons.append("only one line of evidence against detailed balance")
        elif fired >= 2 and not loop_specific:
            reasons.append(
                "the equilibrium model fails, but no loop-level evidence (over-dispersed "
                "counts can do that without any violation of detailed balance)"
            )
        if loop_alpha <= ppc["p_value"] < ppc_alpha:
            reasons.append(
                f"the equilibrium model misfits the pair counts (PPC p = {ppc['p_value']:.3g})"
            )
        if flagged_pairs and not fired:
            reasons.append(f"{flagged_pairs} pairs flagged but no loop-level evidence")
    downhill = bayes_downhill(eq_result, ci=ci)
    evidence = {
        "verdict": verdict,
        "tau_A": tau_a_summary(neq_result, ci),
        "elpd_diff": diff,
        "elpd_se": se,
        "ppc_p": ppc["p_value"],
        "loop_ppc_p": loops["p_value"],
        "loop_chi2_ndf": loops["observed_chi2_ndf"],
        "flagged_pairs": flagged_pairs,
        "flagged_cycles": flagged_cycles,
        "n_pairs": int(len(pairs)),
        "n_cycles": n_cycles,
        "cycle_rank": cycle_rank,
        "fdr": fdr,
        "ci": ci,
        "downhill_fraction": {k: downhill[k] for k in ("mean", "lower", "upper")},
        "downhill_moves": downhill["n"],
        "potential_spread": bayes_potential_spread(eq_result, ci=ci),
        "high_pareto_k": loo["high_pareto_k"],
        "methods": methods,
        "loo_counted": loo_counted,
        "convergence": conv or None,
        "reasons": reasons,
    }
    return Verdict(verdict, evidence, reasons, pairs, cycles)


def _badly_unconverged(report: Any) -> bool:
    """Bad enough to withhold a verdict: R-hat > 1.05 or > 1% divergent draws.

    Milder problems (R-hat 1.01–1.05, low ESS) are warned about by `convergence` but leave the
    verdict standing: they blur intervals slightly, they do not flip signs of loop affinities.
    """
    rhat = report.rhat_max
    draws = max(report.n_chains * report.n_draws, 1)
    divergent = (report.n_divergent or 0) / draws
    return (rhat is not None and rhat > SEVERE_RHAT) or divergent > SEVERE_DIVERGENT_FRACTION


def same_data(data: Any, fitted: Any) -> bool:
    """True when DATA holds the same counts and visits as the fit, for the LLM it fitted."""
    stored = getattr(fitted, "data", None)
    if stored is None:
        return True  # a bare DataTree: nothing to compare against
    if data.data_hash() == stored.data_hash():
        return True
    llm = as_tree(fitted).attrs.get("llm")
    try:
        return bool(llm) and data.select(llm).data_hash() == stored.select(llm).data_hash()
    except ValueError:  # DataError: that LLM is not in DATA
        return False
