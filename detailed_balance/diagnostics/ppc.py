"""Posterior predictive checks of a fit: the pair counts (binomial deviance) and the paper's
3-cycle χ², with replicated counts drawn from the posterior (see `diagnostics.bayes` for the
tests they feed). Vectorised over draws × pairs × cycles, in chunks of draws."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, log_expit, xlogy

from ._fitdata import (
    FitArrays,
    fit_arrays,
)


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
