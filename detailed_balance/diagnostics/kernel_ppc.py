"""Posterior predictive check of a kernel fit: every prompt state's outcome counts.

The kernel likelihood models each prompt state f's calls as one multinomial,
(n_f·, R_f) ~ Multinomial(N_f; T_f·, remainder), with the reversible parameterisation
X_p = exp(u_p) per modelled pair, π_f = Σ_{p ∋ f} X_p + exp(r_f), T_fg = X_p / π_f and
remainder probability exp(r_f) / π_f (`detailed_balance.models` `_kernel`). This check asks
whether the fitted kernel can reproduce those outcome vectors. Per kept posterior draw θ it
replicates every state's outcome vector from its row of T (`multinomial_rows`) and compares a
discrepancy D_f(n, θ) of the observed and the replicated counts against E = N_f T(θ): per
state p_f = P(D_f(rep) ≥ D_f(obs)), and globally the same on Σ_f D_f. The pair-count PPC
(`ppc_pairs`) conditions on the pair totals m = n_fg + n_gf and so cannot see how many calls of
a state leave it at all (the remainder: self steps, invalid answers, unmodelled targets); this
check does.

The discrepancy is the multinomial deviance D_f = 2 Σ [n log(n / E) − (n − E)] by default
(the pair PPC's statistic), or Pearson's Σ (n − E)² / E; outcomes with E = 0 are skipped.
Pearson's χ² is calibrated at the true kernel but not under a posterior: an outcome seen once
whose posterior puts E near 0 in some draws adds (1 − E)² / E ≈ 1 / E to the observed χ² (its
posterior mean diverges like that of 1 / E) but ≈ 1 to the replicated one. Measured on
reversible simulated data (200 states, 100 calls each, NUTS 2 × 500 kernel fits, two data
sets): Pearson p 0.01 and 0, deviance p 0.36 and 0.235; on driven data (drive 0.7) both ≤ 0.005.

Per-state p-values are Monte Carlo estimates (1 + exceedances) / (1 + replicates), which are
valid (never anti-conservative) at any number of replicates. With one replicate per draw their
floor 1 / (draws + 1) is above what Benjamini–Hochberg needs to flag one state of many
(α / states), so the states whose p is small get a new p from fresh replicates, ten times as
many per round (each round keeps the states whose p is below a threshold ten times smaller),
until the floor is below α / (2 · states) or a work budget is spent. Every state's p then
rests on ≳ 20 exceedances or on enough replicates to be decided, for a few times the cost of
one round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import xlogy

from detailed_balance.data.names import as_names

from ._fitdata import FitError, as_tree, stack_draws
from .bayes import FDR_Q

KERNEL_PPC_DRAWS = 200
STATISTICS = ("deviance", "pearson")
MAX_WORST = 10
_CHUNK_ELEMENTS = 1_000_000  # draws × outcome entries held at once
_ROUND_BUDGET = 10_000_000  # binomial draws (replicates × entries) per refinement round
_MAX_ROUNDS = 8
_FIRST_THRESHOLD = 0.1  # states with a first-round p at or below this are replicated further


@dataclass(frozen=True)
class _Rows:
    """The outcome entries of a set of prompt states in CSR order (sorted by state, each
    state's remainder last)."""

    calls: np.ndarray  # (S,) N_f, int64
    indptr: np.ndarray  # (S + 1,)
    entry_state: np.ndarray  # (E,) local state index
    entry_pair: np.ndarray  # (E,) pair index, −1 for the remainder
    entry_remainder: np.ndarray  # (E,) state position in the fit's states, −1 for a move
    observed: np.ndarray  # (E,) observed counts


@dataclass(frozen=True)
class _KernelData:
    u: np.ndarray  # (draws, P) log-conductances of the kept draws
    r: np.ndarray  # (draws, K) log remainder weights, in constant_data's state order
    pair_i: np.ndarray
    pair_j: np.ndarray
    n_fg: np.ndarray
    n_gf: np.ndarray
    visits: np.ndarray  # (K,)
    names: np.ndarray  # (K,) state names (untrusted text, data only)


def is_kernel_fit(result: Any) -> bool:
    """True when the fit's posterior holds the kernel likelihood's `log_conductance`."""
    tree = as_tree(result)
    return "posterior" in tree.children and "log_conductance" in tree["posterior"].data_vars


def _thin(n_samples: int, draws: int | None) -> np.ndarray:
    if draws is None or n_samples <= draws:
        return np.arange(n_samples)
    return np.unique(np.linspace(0, n_samples - 1, draws).round().astype(int))


def _kernel_data(tree: xr.DataTree, draws: int | None) -> _KernelData:
    post = tree["posterior"]
    if "log_remainder" not in post.data_vars or "constant_data" not in tree.children:
        raise FitError(
            "a kernel fit needs posterior log_remainder and constant_data (pair_i, pair_j, "
            "n_fg, n_gf, visits); the fit file is incomplete (refit the model)."
        )
    const = tree["constant_data"]
    missing = {"pair_i", "pair_j", "n_fg", "n_gf", "visits"} - set(const.data_vars)
    if missing:
        raise FitError(
            f"the kernel fit's constant_data lacks {', '.join(sorted(missing))}; refit the model."
        )
    names = as_names(const["state"]) if "state" in const.coords else None
    u_all = stack_draws(post["log_conductance"], "pair")
    r_all = stack_draws(post["log_remainder"], "state")
    n_pairs = int(const["n_fg"].size)
    if u_all.shape[1] != n_pairs:
        raise FitError(
            f"log_conductance has {u_all.shape[1]} pairs but constant_data {n_pairs}; the fit "
            "file is inconsistent (refit)."
        )
    n_states = int(const["visits"].size)
    if names is not None and "state" in post["log_remainder"].coords:
        stored = pd.Index(as_names(post["log_remainder"]["state"]), dtype=object)
        pos = stored.get_indexer(pd.Index(names, dtype=object))
        if (pos < 0).any():
            raise FitError(
                "log_remainder lacks states that constant_data models; the fit file is "
                "inconsistent (refit)."
            )
        r_all = r_all[:, pos]
    if r_all.shape[1] != n_states:
        raise FitError(
            f"log_remainder has {r_all.shape[1]} states but constant_data {n_states}; refit."
        )
    keep = _thin(u_all.shape[0], draws)
    return _KernelData(
        u=u_all[keep],
        r=r_all[keep],
        pair_i=np.asarray(const["pair_i"].values, dtype=np.int64),
        pair_j=np.asarray(const["pair_j"].values, dtype=np.int64),
        n_fg=np.asarray(const["n_fg"].values, dtype=np.int64),
        n_gf=np.asarray(const["n_gf"].values, dtype=np.int64),
        visits=np.asarray(const["visits"].values, dtype=float),
        names=names if names is not None else np.arange(n_states).astype(str).astype(object),
    )


def _rows(data: _KernelData, states: np.ndarray) -> _Rows:
    """The entries of `states` (positions, ascending): moves to each modelled neighbour, then
    the remainder R_f = N_f − Σ moves out of f."""
    k = len(data.visits)
    local = np.full(k, -1, dtype=np.int64)
    local[states] = np.arange(len(states))
    p = np.arange(len(data.pair_i))
    from_i, from_j = local[data.pair_i] >= 0, local[data.pair_j] >= 0
    entry_state = np.concatenate(
        [local[data.pair_i[from_i]], local[data.pair_j[from_j]], np.arange(len(states))]
    )
    entry_pair = np.concatenate([p[from_i], p[from_j], np.full(len(states), -1)])
    entry_remainder = np.concatenate(
        [np.full(from_i.sum() + from_j.sum(), -1), states.astype(np.int64)]
    )
    calls = np.rint(data.visits[states]).astype(np.int64)
    out = np.bincount(data.pair_i, data.n_fg, k) + np.bincount(data.pair_j, data.n_gf, k)
    remainder = calls - np.rint(out[states]).astype(np.int64)
    if (remainder < 0).any():
        raise FitError(
            "a state of the kernel fit has more counted moves than calls; the kernel likelihood "
            "needs true visit counts (refit with likelihood='pairs')."
        )
    observed = np.concatenate([data.n_fg[from_i], data.n_gf[from_j], remainder])
    order = np.lexsort((entry_pair < 0, entry_state))  # by state, remainder last
    degree = np.bincount(entry_state, minlength=len(states))
    return _Rows(
        calls=calls,
        indptr=np.concatenate([[0], np.cumsum(degree)]),
        entry_state=entry_state[order],
        entry_pair=entry_pair[order],
        entry_remainder=entry_remainder[order],
        observed=observed[order].astype(np.int64),
    )


def _probabilities(rows: _Rows, u: np.ndarray, r: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """(len(draw), E) outcome probabilities under draws `draw` of `u` (draws, P) and `r`
    (draws, K): exp(w_e − log π_f) with w = u_p or r_f, each state's normalisation shifted by
    its largest weight (no overflow for any u, r). Only the entries' columns are gathered."""
    move = rows.entry_pair >= 0
    w = np.empty((len(draw), len(rows.entry_pair)))
    w[:, move] = u[draw[:, None], rows.entry_pair[move]]
    w[:, ~move] = r[draw[:, None], rows.entry_remainder[~move]]
    starts = rows.indptr[:-1]
    top = np.maximum.reduceat(w, starts, axis=1)
    e = np.exp(w - top[:, rows.entry_state])
    return e / np.add.reduceat(e, starts, axis=1)[:, rows.entry_state]


def multinomial_rows(
    rng: np.random.Generator, calls: np.ndarray, p: np.ndarray, indptr: np.ndarray
) -> np.ndarray:
    """One Multinomial(calls[s]; p of row s) per row s and per draw, rows stored in CSR order.

    `calls` (..., S) totals, `p` (..., E) probabilities whose entries indptr[s]:indptr[s+1]
    are row s (summing to 1). Conditional binomials by halving: a segment of a row holding n
    calls sends Binomial(n, P(left half) / P(segment)) to its left half and the rest to its
    right half, until every segment is one outcome. That is the multinomial exactly (the
    chain rule over a binary tree instead of the entry rank), every row's total is exactly
    `calls`, and the loop is over the depth ⌈log₂ longest row⌉ (a hub of 2,000 targets: 11
    levels, where the rank order needs 2,000), vectorised across rows and draws.
    """
    calls = np.asarray(calls, dtype=np.int64)
    p = np.asarray(p, dtype=float)
    lead = p.shape[:-1]
    if (np.diff(indptr) < 1).any():
        raise ValueError("every row needs at least one outcome")
    # one zero column past the end, so a segment ending at E is a valid reduceat index
    padded = np.concatenate([p, np.zeros((*lead, 1))], axis=-1)
    out = np.zeros(p.shape, dtype=np.int64)
    lo, hi = indptr[:-1].astype(np.int64), indptr[1:].astype(np.int64)
    n = np.broadcast_to(calls, (*lead, len(lo))).copy()
    while len(lo):
        single = hi - lo == 1
        out[..., lo[single]] = n[..., single]
        lo, hi, n = lo[~single], hi[~single], n[..., ~single]
        if not len(lo):
            break
        mid = (lo + hi) // 2
        # Segments stay sorted and disjoint, so the index lists below increase and each
        # reduceat reads every entry once; its odd outputs (the gaps) are not used.
        left = np.add.reduceat(padded, np.stack([lo, mid], 1).ravel(), axis=-1)[..., ::2]
        right = np.add.reduceat(padded, np.stack([mid, hi], 1).ravel(), axis=-1)[..., ::2]
        total = left + right
        share = np.divide(left, total, out=np.zeros_like(left), where=total > 0)
        n_left = rng.binomial(n, np.clip(share, 0.0, 1.0))
        lo = np.stack([lo, mid], 1).ravel()
        hi = np.stack([mid, hi], 1).ravel()
        n = np.stack([n_left, n - n_left], -1).reshape(*lead, -1)
    return out


def _discrepancy(
    rows: _Rows, counts: np.ndarray, expected: np.ndarray, statistic: str
) -> np.ndarray:
    """Per state (..., S), summed over its outcomes with E > 0 (the others skipped): the
    multinomial deviance 2 Σ [n log(n / E) − (n − E)] or Pearson's Σ (n − E)² / E."""
    live = expected > 0
    safe = np.where(live, expected, 1.0)
    if statistic == "deviance":
        terms = 2.0 * (xlogy(counts, counts / safe) - (counts - expected))
    else:
        terms = (counts - expected) ** 2 / safe
    return np.add.reduceat(np.where(live, terms, 0.0), rows.indptr[:-1], axis=-1)


def _replicate_discrepancy(
    rows: _Rows,
    data: _KernelData,
    repeats: int,
    rng: np.random.Generator,
    statistic: str,
):
    """`repeats` replicates per kept draw, in chunks: D(obs) and D(rep), each (repeats in
    the chunk, draws in the chunk, S). A chunk's kernel rows and D(obs) are computed once and
    shared by its repeats."""
    n_draws, n_entries = data.u.shape[0], max(len(rows.observed), 1)
    size = max(1, _CHUNK_ELEMENTS // n_entries)
    for start in range(0, n_draws, size):
        draw = np.arange(start, min(start + size, n_draws))
        p = _probabilities(rows, data.u, data.r, draw)
        expected = rows.calls[rows.entry_state] * p
        d_obs = _discrepancy(rows, rows.observed, expected, statistic)
        per = max(1, _CHUNK_ELEMENTS // (len(draw) * n_entries))
        for first in range(0, repeats, per):
            k = min(per, repeats - first)
            rep = multinomial_rows(rng, rows.calls, np.broadcast_to(p, (k, *p.shape)), rows.indptr)
            d_rep = _discrepancy(rows, rep, np.broadcast_to(expected, rep.shape), statistic)
            yield np.broadcast_to(d_obs, d_rep.shape), d_rep


def benjamini_hochberg(p: np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini–Hochberg step-up: reject the k smallest p-values for the largest k with
    p_(k) ≤ α k / m. Returns a boolean mask."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    below = p[order] <= alpha * np.arange(1, m + 1) / max(m, 1)
    k = int(np.flatnonzero(below)[-1]) + 1 if below.any() else 0
    flags = np.zeros(m, dtype=bool)
    flags[order[:k]] = True
    return flags


def kernel_ppc(
    result: Any,
    draws: int | None = KERNEL_PPC_DRAWS,
    seed: int | np.random.Generator | None = 0,
    alpha: float = FDR_Q,
    statistic: str = "deviance",
) -> dict[str, Any] | None:
    """Posterior predictive check of a kernel fit's per-state outcome counts; None for a fit
    without the kernel likelihood (pair fits).

    Over at most `draws` evenly thinned posterior draws, every prompt state (N_f > 0) gets one
    replicated outcome vector per draw (moves to each modelled target and the remainder),
    compared with the observed one by `statistic` (``"deviance"`` or ``"pearson"``) under that
    draw's kernel (module docstring). Returns ``{"statistic", "p_value": P(Σ_f D_rep ≥
    Σ_f D_obs), "observed", "replicated" (posterior means of Σ_f D), "n_states" (states tested),
    "flagged" (states whose per-state p is rejected by Benjamini–Hochberg at level `alpha`),
    "alpha", "draws", "worst": up to 10 ``{"state", "p_value", "calls"}`` with the smallest
    per-state p}``. Small p: the reversible kernel cannot produce these counts (over-dispersed
    calls, a misfit state, or a kernel that is not reversible).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    tree = as_tree(result)
    if not is_kernel_fit(tree):
        return None
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    data = _kernel_data(tree, draws)
    tested = np.flatnonzero(data.visits > 0)
    n_draws = data.u.shape[0]
    empty = {
        "statistic": statistic,
        "p_value": None,
        "observed": None,
        "replicated": None,
        "n_states": 0,
        "flagged": 0,
        "alpha": alpha,
        "draws": int(n_draws),
        "worst": [],
    }
    if len(tested) == 0 or n_draws == 0:
        return empty
    rows = _rows(data, tested)
    exceed = np.zeros(len(tested))
    obs_mean = np.zeros(len(tested))
    total_obs, total_rep = [], []
    for d_obs, d_rep in _replicate_discrepancy(rows, data, 1, rng, statistic):
        exceed += (d_rep >= d_obs).sum(axis=(0, 1))
        obs_mean += d_obs.sum(axis=(0, 1))
        total_obs.append(d_obs.sum(axis=-1).ravel())
        total_rep.append(d_rep.sum(axis=-1).ravel())
    t_obs, t_rep = np.concatenate(total_obs), np.concatenate(total_rep)
    replicates = np.full(len(tested), float(n_draws))
    _refine(data, tested, exceed, replicates, alpha, rng, statistic)
    p_state = (1.0 + exceed) / (1.0 + replicates)
    flags = benjamini_hochberg(p_state, alpha)
    order = np.lexsort((-obs_mean, p_state))[:MAX_WORST]
    worst = [
        {
            "state": str(data.names[tested[s]]),
            "p_value": float(p_state[s]),
            "calls": int(rows.calls[s]),
        }
        for s in order
    ]
    return {
        **empty,
        "p_value": float(np.mean(t_rep >= t_obs)),
        "observed": float(t_obs.mean()),
        "replicated": float(t_rep.mean()),
        "n_states": int(len(tested)),
        "flagged": int(flags.sum()),
        "worst": worst,
    }


def _refine(
    data: _KernelData,
    tested: np.ndarray,
    exceed: np.ndarray,
    replicates: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
    statistic: str,
) -> None:
    """Replicate the states with small p further, in place (module docstring): each round
    takes the states whose p is ≤ a threshold (÷ 10 per round) and replaces their p by one
    from fresh replicates, ten times as many, until the p floor is below α / (2 · states) or
    the round budget is spent. Fresh, because the selection used the earlier replicates: a
    p from replicates the selection never saw is a valid Monte Carlo p-value, P(p ≤ t) ≤ t
    (measured at the true kernel, 2,000 data sets of 30 states: some state flagged by
    Benjamini–Hochberg at α = 0.05 in 5.3%)."""
    needed = 2.0 * len(tested) / alpha
    n_draws = data.u.shape[0]
    threshold = _FIRST_THRESHOLD
    for _ in range(_MAX_ROUNDS):
        p = (1.0 + exceed) / (1.0 + replicates)
        pick = np.flatnonzero((p <= threshold) & (replicates + 1 < needed))
        if len(pick) == 0:
            return
        rows = _rows(data, tested[pick])
        # Candidates are a subset of the previous round's, so they share one replicate count.
        have = int(replicates[pick].min())
        wanted = min(10 * have, int(np.ceil(needed)))
        affordable = _ROUND_BUDGET // len(rows.observed)
        repeats = min(wanted, affordable) // n_draws  # whole passes over the draws
        if repeats * n_draws <= have:
            return  # the budget buys no more replicates than the states already have
        fresh = np.zeros(len(pick))
        for d_obs, d_rep in _replicate_discrepancy(rows, data, repeats, rng, statistic):
            fresh += (d_rep >= d_obs).sum(axis=(0, 1))
        exceed[pick] = fresh
        replicates[pick] = repeats * n_draws
        if affordable < wanted:
            return  # budget spent
        threshold /= 10.0
