"""Figures of a fitted landscape and its detailed-balance tests (matplotlib, Agg backend).

Every function returns a `matplotlib.figure.Figure` and works from the contract layout of a fit
(a `BayesFit` or its `xarray.DataTree`: posterior `V` (chain, draw, state), optional `A`,
`tau_A`, `sigma_V`; `constant_data` pair arrays) and the `Transitions` it was fitted to. The
numbers printed on the figures come from `detailed_balance.diagnostics` (the paper's checks),
so a figure and the report's tables never disagree.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from detailed_balance.data import Transitions  # noqa: E402
from detailed_balance.data.names import as_names  # noqa: E402
from detailed_balance.diagnostics import (
    as_tree,
    db_scatter,
    interval,
    loop_balance,
    ppc_replicates,
)  # noqa: E402

from .text import figure_label  # noqa: E402

DOWN, UP, FLAG, MAIN, BAND = "#2e7d32", "#c62828", "#d84315", "#1f4e79", "#9ecae1"
MAX_DRAWS = 400


def potential_draws(result: Any, max_draws: int = MAX_DRAWS, seed: int = 0) -> pd.DataFrame:
    """Posterior draws of V as a (draws × states) frame, thinned to at most `max_draws` rows."""
    v = as_tree(result)["posterior"]["V"]
    extra = [d for d in v.dims if d not in ("chain", "draw", "state")]
    if extra:
        raise ValueError(f"V has extra dims {extra}; select one (e.g. V.sel(llm=...)) first")
    flat = v.stack(sample=("chain", "draw")).transpose("sample", "state")
    values = flat.to_numpy()
    if len(values) > max_draws:
        pick = np.random.default_rng(seed).choice(len(values), max_draws, replace=False)
        values = values[np.sort(pick)]
    return pd.DataFrame(values, columns=pd.Index(as_names(flat["state"]), dtype=object))


def _figure(width: float = 6.4, height: float = 4.8, ncols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None or not np.isfinite(value) else format(value, spec)


# -- the paper's checks with posterior uncertainty ----------------------------------------------
def db_scatter_figure(
    data: Transitions, result: Any, *, llm: str | None = None, ci: float = 0.9
) -> Figure:
    """log T(f→g)/T(g→f) against V_f − V_g (posterior mean, `ci` interval as x error bars).

    y error bars are the paper's counting errors; the diagonal is exact detailed balance; N,
    Pearson r and χ²/ndf are the paper's numbers for the posterior-mean V.
    """
    draws = potential_draws(result)
    mean_v = draws.mean()
    check = db_scatter(data, mean_v, llm=llm)
    points = check.points
    fig, ax = _figure()
    if points.empty:
        _note(ax, "no pair seen ≥ 2 times in each direction")
        return fig
    gap = (
        draws.reindex(columns=points["f"]).to_numpy()
        - draws.reindex(columns=points["g"]).to_numpy()
    )
    lo, hi = interval(gap, ci)
    x = points["delta_v"].to_numpy()
    ax.errorbar(
        x,
        points["log_ratio"],
        xerr=np.abs(np.stack([x - lo, hi - x])),
        yerr=points["sigma"],
        fmt="o",
        ms=3,
        color=MAIN,
        ecolor=BAND,
        elinewidth=0.8,
        alpha=0.8,
    )
    span = np.nanmax(np.abs(np.concatenate([x, points["log_ratio"].to_numpy()]))) * 1.05
    ax.plot([-span, span], [-span, span], color="0.3", lw=1, ls="--", label="detailed balance")
    s = check.summary
    ax.set_title(
        f"Detailed balance: N = {s['n']}, r = {_fmt(s['pearson_r'])}, "
        f"χ²/ndf = {_fmt(s['chi2_ndf'])}"
    )
    ax.set_xlabel(f"V(f) − V(g)  (posterior mean, {ci:.0%} interval)")
    ax.set_ylabel("log T(f→g) / T(g→f)")
    ax.legend(loc="upper left", frameon=False)
    return fig


def loop_balance_figure(
    data: Transitions,
    *,
    cycles: pd.DataFrame | None = None,
    llm: str | None = None,
    min_count: int = 1,
) -> Figure:
    """Forward vs backward Σ log T per 3-cycle; cycles flagged by the credible test in red.

    `cycles`: the table of `diagnostics.cycle_violations` (columns a, b, c, flagged), if a
    non-equilibrium fit is available.
    """
    check = loop_balance(data, llm=llm, min_count=min_count)
    points = check.points
    fig, ax = _figure()
    if points.empty:
        _note(ax, "no 3-cycle with all six directed edges observed")
        return fig
    flagged = np.zeros(len(points), dtype=bool)
    if cycles is not None and len(cycles):
        key = pd.MultiIndex.from_frame(cycles.loc[cycles["flagged"], ["a", "b", "c"]])
        flagged = pd.MultiIndex.from_frame(points[["a", "b", "c"]]).isin(key)
    for mask, colour, label in ((~flagged, MAIN, "cycles"), (flagged, FLAG, "flagged")):
        if mask.any():
            ax.errorbar(
                points["forward"][mask],
                points["backward"][mask],
                xerr=points["sigma_forward"][mask],
                yerr=points["sigma_backward"][mask],
                fmt="o",
                ms=3,
                color=colour,
                ecolor=colour,
                elinewidth=0.6,
                alpha=0.75,
                label=f"{label} ({int(mask.sum())})",
            )
    both = np.concatenate([points["forward"], points["backward"]])
    lo, hi = both.min() - 0.5, both.max() + 0.5
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--")
    ax.set_title(f"Loop balance: {check.summary['n']} 3-cycles, χ²/ndf = {_fmt(check['chi2_ndf'])}")
    ax.set_xlabel("Σ log T forward (a→b→c→a)")
    ax.set_ylabel("Σ log T backward")
    ax.legend(loc="upper left", frameon=False)
    return fig


def potential_distribution_figure(
    data: Transitions,
    result: Any,
    *,
    llm: str | None = None,
    min_visits: float = 2,
    ci: float = 0.9,
    bins: int = 30,
) -> Figure:
    """Histogram of V (states sampled ≥ `min_visits` times), its Gaussian fit and a band.

    The band is the pointwise `ci` interval of the histogram over posterior draws; the Gaussian
    has the posterior-mean σ of V (the paper's spread), its interval in the title.
    """
    draws = potential_draws(result)
    visits = pd.Series(data.visits_array(llm), index=data.states.astype(str))
    keep = visits.reindex(draws.columns).fillna(0).to_numpy() >= min_visits
    fig, ax = _figure()
    if keep.sum() < 2:
        _note(ax, f"fewer than two states sampled ≥ {min_visits:g} times")
        return fig
    values = draws.to_numpy()[:, keep]
    values = values - values.mean(axis=1, keepdims=True)
    mean_v = values.mean(axis=0)
    edges = np.linspace(np.quantile(values, 0.002), np.quantile(values, 0.998), bins + 1)
    width = np.diff(edges)
    hist = np.stack([np.histogram(row, edges)[0] for row in values[:200]]) / (keep.sum() * width)
    lo, hi = interval(hist, ci)
    centres = (edges[:-1] + edges[1:]) / 2
    ax.hist(mean_v, edges, density=True, color=BAND, edgecolor="white", label="posterior mean V")
    ax.fill_between(centres, lo, hi, step="mid", color=MAIN, alpha=0.25, label=f"{ci:.0%} band")
    sigma_draws = values.std(axis=1)
    sigma = float(mean_v.std())
    grid = np.linspace(edges[0], edges[-1], 200)
    ax.plot(
        grid,
        np.exp(-0.5 * (grid / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)),
        color=MAIN,
        lw=1.5,
        label=f"Gaussian, σ = {sigma:.2f}",
    )
    s_lo, s_hi = interval(sigma_draws, ci)
    ax.set_title(f"Potential distribution: σ = {sigma_draws.mean():.2f} [{s_lo:.2f}, {s_hi:.2f}]")
    ax.set_xlabel("V (centred)")
    ax.set_ylabel("density")
    ax.legend(frameon=False)
    return fig


def landscape_graph_figure(
    data: Transitions,
    result: Any,
    *,
    llm: str | None = None,
    top: int = 40,
    min_rate: float = 0.0,
) -> Figure:
    """The `top` most-visited states at (score if known, else rank of V; V), with their moves.

    Edges go green when they lead downhill (lower V) and red uphill; width ∝ T = min(1, n/N₀).
    """
    draws = potential_draws(result)
    mean_v = draws.mean()
    table = data.state_table(llm)
    table.index = table.index.astype(str)
    busy = (table["visits"] + table["moves_in"]).reindex(mean_v.index).fillna(0)
    chosen = busy.sort_values(ascending=False, kind="stable").index[:top]
    v = mean_v.reindex(chosen)
    scores = table["score"].reindex(chosen) if "score" in table else None
    use_score = scores is not None and scores.notna().all()
    x = scores if use_score else v.rank(method="first")
    fig, ax = _figure(7.2, 5.4)
    moves = data.moves(llm)
    moves = moves[
        moves["source"].astype(str).isin(chosen)
        & moves["target"].astype(str).isin(chosen)
        & (moves["rate"] > min_rate)
    ]
    if len(moves):
        src, dst = moves["source"].astype(str), moves["target"].astype(str)
        segments = np.stack(
            [
                np.stack([x.reindex(src).to_numpy(), v.reindex(src).to_numpy()], axis=1),
                np.stack([x.reindex(dst).to_numpy(), v.reindex(dst).to_numpy()], axis=1),
            ],
            axis=1,
        )
        downhill = v.reindex(dst).to_numpy() < v.reindex(src).to_numpy()
        rate = moves["rate"].to_numpy()
        widths = 0.3 + 4.0 * rate / max(rate.max(), 1e-12)
        ax.add_collection(
            LineCollection(
                segments, colors=np.where(downhill, DOWN, UP), linewidths=widths, alpha=0.45
            )
        )
    ax.scatter(x, v, s=25 + 120 * busy.reindex(chosen) / busy.max(), color=MAIN, zorder=3)
    for name in chosen[: min(12, len(chosen))]:
        ax.annotate(
            figure_label(name, 18),
            (x[name], v[name]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xlabel("score" if use_score else "rank of V")
    ax.set_ylabel("V (posterior mean)")
    ax.set_title(f"Landscape: {len(chosen)} most-visited states (green downhill, red uphill)")
    ax.autoscale()
    return fig


def potential_forest_figure(result: Any, *, n: int = 10, ci: float = 0.9) -> Figure:
    """Posterior mean and `ci` interval of V for the `n` lowest and `n` highest states."""
    draws = potential_draws(result)
    mean_v = draws.mean().sort_values(kind="stable")
    names = list(mean_v.index[:n]) + [s for s in mean_v.index[-n:] if s not in mean_v.index[:n]]
    lo, hi = interval(draws[names].to_numpy(), ci)
    fig, ax = _figure(6.4, 0.28 * len(names) + 1.2)
    y = np.arange(len(names))
    ax.hlines(y, lo, hi, color=MAIN, lw=2)
    ax.plot(mean_v[names], y, "o", color=MAIN)
    ax.set_yticks(y, [figure_label(s, 28) for s in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"V (posterior mean, {ci:.0%} interval)")
    ax.set_title(f"Potentials: {n} lowest and {n} highest states")
    return fig


def violations_figure(
    pairs: pd.DataFrame | None, cycles: pd.DataFrame | None, *, top: int = 15
) -> Figure:
    """Posterior intervals of A_fg (pairs) and loop affinities (3-cycles), flagged in red.

    Inputs are the tables of `diagnostics.pair_violations` / `cycle_violations`; shown are the
    flagged items first, then the ones closest to being flagged (smallest lfsr).
    """
    fig, axes = _figure(10, 0.3 * top + 1.6, ncols=2)
    for ax, table, what, columns in (
        (axes[0], pairs, "pairs", ("f", "g")),
        (axes[1], cycles, "3-cycles", ("a", "b", "c")),
    ):
        if table is None or table.empty:
            _note(ax, f"no {what} to test")
            ax.set_title(what)
            continue
        shown = table.sort_values(["flagged", "lfsr"], ascending=[False, True]).head(top)
        y = np.arange(len(shown))
        colours = np.where(shown["flagged"], FLAG, MAIN)
        ax.hlines(y, shown["lower"], shown["upper"], color=colours, lw=2)
        ax.scatter(shown["mean"], y, color=colours, zorder=3)
        ax.axvline(0, color="0.3", lw=1, ls="--")
        ax.set_yticks(y, _chain_labels(shown, columns, 34), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{what}: {int(table['flagged'].sum())} of {len(table)} flagged")
        ax.set_xlabel("A (antisymmetric term)" if what == "pairs" else "loop affinity Σ A")
    return fig


def _chain_labels(table: pd.DataFrame, columns: tuple[str, ...], width: int) -> list[str]:
    """Tick labels "f→g" / "a→b→c"; each name cut so the whole label fits in `width`."""
    each = max(width // len(columns) - 1, 4)
    names = [table[c].map(lambda name: figure_label(name, each)).astype(object) for c in columns]
    return list(names[0].str.cat(names[1:], sep="→"))


# -- sampler health and posterior predictive check ---------------------------------------------
def _rank_hist(ax, values: np.ndarray, name: str, bins: int = 20) -> None:
    """Rank histogram per chain (uniform when chains agree)."""
    chains, draws = values.shape
    ranks = np.argsort(np.argsort(values.ravel(), kind="stable")).reshape(chains, draws)
    edges = np.linspace(0, chains * draws, bins + 1)
    for c in range(chains):
        counts, _ = np.histogram(ranks[c], edges)
        ax.step(np.arange(bins), counts, where="mid", lw=1, label=f"chain {c}")
    ax.axhline(draws / bins, color="0.3", ls="--", lw=1)
    ax.set_title(f"rank plot: {name}")
    ax.set_xlabel("rank bin")
    ax.set_yticks([])


def sampler_health_figure(result: Any, var_names: tuple[str, ...] = ()) -> Figure:
    """Rank plots of the scalar scales (σ_V, τ_A, ...) and the NUTS energy plot.

    By default every scalar posterior variable is shown. Non-MCMC fits (MAP, ADVI) say so.
    """
    tree = as_tree(result)
    post = tree["posterior"]
    names = list(var_names) or [
        k for k, v in post.data_vars.items() if set(v.dims) == {"chain", "draw"}
    ]
    names = [k for k in names if k in post.data_vars][:3]
    has_energy = "sample_stats" in tree.children and "energy" in tree["sample_stats"]
    panels = len(names) + 1
    fig, axes = _figure(3.4 * panels, 3.2, ncols=panels)
    axes = np.atleast_1d(axes)
    if post.sizes.get("chain", 1) * post.sizes.get("draw", 1) < 4:
        for ax in axes:
            _note(ax, f"no MCMC draws (method: {tree.attrs.get('method', '?')})")
        return fig
    for ax, name in zip(axes, names, strict=False):
        _rank_hist(ax, post[name].transpose("chain", "draw").to_numpy(), name)
    ax = axes[-1]
    if has_energy:
        energy = tree["sample_stats"]["energy"].transpose("chain", "draw").to_numpy()
        marginal = (energy - energy.mean(axis=1, keepdims=True)).ravel()
        transition = np.diff(energy, axis=1).ravel()
        edges = np.linspace(
            min(marginal.min(), transition.min()), max(marginal.max(), transition.max()), 40
        )
        ax.hist(marginal, edges, alpha=0.5, density=True, color=MAIN, label="marginal energy")
        ax.hist(transition, edges, alpha=0.5, density=True, color=FLAG, label="energy transition")
        bfmi = np.mean(np.diff(energy, axis=1) ** 2, axis=1) / np.var(energy, axis=1)
        ax.set_title(f"energy: E-BFMI min {bfmi.min():.2f}")
        ax.legend(frameon=False, fontsize=7)
        ax.set_yticks([])
    else:
        _note(ax, "no energy statistics (not NUTS)")
    return fig


def ppc_figure(result: Any, *, seed: int = 0, ci: float = 0.9, max_draws: int = 200) -> Figure:
    """Posterior predictive check of pair counts.

    Left: binomial deviance of the observed counts against replicated counts, per draw (p = share
    of draws where the replicate is at least as extreme). Right: observed share n_fg/m against
    the predicted share with its `ci` predictive interval.
    """
    ppc = ppc_replicates(result, seed, max_draws=max_draws)
    m = ppc["m"]
    usable = m > 0
    n_obs, m = ppc["n_obs"][usable], m[usable]
    p, n_rep = ppc["share"][:, usable], ppc["n_rep"][:, usable]
    dev_obs, dev_rep = ppc["deviance_obs"], ppc["deviance_rep"]
    p_value = float(np.mean(dev_rep >= dev_obs))
    fig, axes = _figure(10, 4.4, ncols=2)
    ax = axes[0]
    ax.scatter(dev_obs, dev_rep, s=8, color=MAIN, alpha=0.6)
    lim = [min(dev_obs.min(), dev_rep.min()), max(dev_obs.max(), dev_rep.max())]
    ax.plot(lim, lim, color="0.3", ls="--", lw=1)
    ax.set_xlabel("deviance, observed counts")
    ax.set_ylabel("deviance, replicated counts")
    ax.set_title(f"PPC of pair counts: p = {p_value:.2f}")
    ax = axes[1]
    lo, hi = interval(n_rep / m, ci)
    order = np.argsort(p.mean(axis=0))
    ax.fill_between(
        np.arange(len(order)), lo[order], hi[order], color=BAND, label=f"{ci:.0%} predictive"
    )
    ax.plot(np.arange(len(order)), (n_obs / m)[order], ".", ms=3, color=MAIN, label="observed")
    ax.set_xlabel("pairs, ordered by predicted share")
    ax.set_ylabel("n_fg / (n_fg + n_gf)")
    inside = np.mean(((n_obs / m) >= lo) & ((n_obs / m) <= hi))
    ax.set_title(f"{inside:.0%} of pairs inside their {ci:.0%} predictive interval")
    ax.legend(frameon=False, fontsize=8)
    return fig


def point_tree(potentials: Any) -> xr.DataTree:
    """A one-draw 'posterior' holding point potentials (a least-action result or a Series).

    Lets the figures draw a point estimate (intervals collapse to the point); only finite
    potentials are kept, as a fit leaves unbounded states out of V.
    """
    series = pd.Series(getattr(potentials, "potentials", potentials), dtype=float)
    series = series[np.isfinite(series.to_numpy())]
    posterior = xr.Dataset(
        {"V": (("chain", "draw", "state"), series.to_numpy()[None, None, :])},
        coords={"chain": [0], "draw": [0], "state": series.index.astype(str).to_numpy()},
    )
    tree = xr.DataTree.from_dict({"/posterior": posterior})
    tree.attrs["method"] = "point"
    return tree
