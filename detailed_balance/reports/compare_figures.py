"""Figures of an LLM comparison (the multi-LLM hierarchy's tree and discovery curves).

Same conventions as `reports.figures`: each function returns a matplotlib `Figure` (Agg), made
from numbers it is given.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from detailed_balance.data.names import as_names

from .figures import FLAG, MAIN, _figure
from .text import figure_label


def discovery_figure(curves: dict[str, pd.DataFrame]) -> Figure:
    """Distinct valid states against calls, one line per LLM (`compare.discovery_curve`)."""
    fig, ax = _figure()
    for name, curve in curves.items():
        ax.plot(curve["calls"], curve["distinct"], lw=1.8, label=figure_label(name, 30))
    ax.set_xscale("log")
    ax.set_xlabel("LLM calls")
    ax.set_ylabel("distinct valid states")
    ax.set_title("Discovery curves")
    ax.legend(frameon=False)
    return fig


def beta_forest_figure(table: pd.DataFrame, ci: float = 0.9) -> Figure:
    """β_m with its `ci` interval per LLM (reference at 1); the odd one out is marked.

    `table`: `models.hierarchy.temperature_table` (beta_mean/lower/upper, reference,
    odd_one_out).
    """
    fig, ax = _figure(6.4, 0.45 * len(table) + 1.4)
    y = np.arange(len(table))
    colours = np.where(table["odd_one_out"], FLAG, MAIN)
    ax.hlines(y, table["beta_lower"], table["beta_upper"], color=colours, lw=2.5)
    ax.scatter(table["beta_mean"], y, color=colours, zorder=3)
    ax.axvline(1.0, color="0.3", ls="--", lw=1)
    labels = [
        f"{figure_label(name, 30)}{' (reference)' if ref else ''}{' (odd one out)' if odd else ''}"
        for name, ref, odd in zip(
            table.index, table["reference"], table["odd_one_out"], strict=True
        )
    ]
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"inverse temperature β (mean, {ci:.0%} interval; > 1 colder)")
    ax.set_title("Temperatures relative to the reference LLM")
    return fig


def landscape_scatter_figure(tree: xr.DataTree, max_panels: int = 6) -> Figure:
    """Posterior-mean landscapes μ + δ_m of pairs of LLMs against each other (r in titles)."""
    post = tree["posterior"]
    landscape = (post["V"] + post["delta"]).mean(("chain", "draw"))
    corr = post["landscape_correlation"].mean(("chain", "draw"))
    names = list(as_names(landscape["llm"]))
    ref = tree.attrs.get("reference_llm", names[0])
    pairs = [(a, b) for k, a in enumerate(names) for b in names[k + 1 :]]
    if len(pairs) > max_panels:
        pairs = [(ref, b) for b in names if b != ref][:max_panels]
    fig, axes = _figure(3.3 * len(pairs), 3.4, ncols=len(pairs))
    for ax, (a, b) in zip(np.atleast_1d(axes), pairs, strict=False):
        x = landscape.sel(llm=a).to_numpy()
        y = landscape.sel(llm=b).to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[ok], y[ok], s=6, color=MAIN, alpha=0.6)
        ax.set_xlabel(f"{figure_label(a, 30)}: μ + δ")
        ax.set_ylabel(f"{figure_label(b, 30)}: μ + δ")
        ax.set_title(f"r = {float(corr.sel(llm_a=a, llm_b=b)):.2f}")
    return fig
