"""The report's feature section: what the landscape is made of (feature potential fits only).

`feature_section(fit, doc)` appends to a report `Document`: a plain reading with the headline
number (the share of V's spread the features explain), the θ table in original units, the
forest plot of θ per standard deviation of each feature, and the downhill fraction under the
feature potential x·θ alone. It returns the JSON-ready numbers (`feature_summary`) for the
report's summary (``report.json``). `theta_forest_figure` is the forest plot on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from detailed_balance.diagnostics import feature_summary, theta_summary

from .document import Document
from .figures import DOWN, MAIN, UP, _figure
from .text import figure_label, label


def theta_forest_figure(fit: Any, *, ci: float = 0.9) -> Figure:
    """Posterior mean and `ci` interval of θ per standard deviation of each feature.

    Per SD (kT per SD over the modelled states) so features in different units compare; the
    labels carry θ per original unit. Green: credibly lowers V (downhill), red: raises it.
    """
    std = theta_summary(fit, ci, standardised=True)
    raw = theta_summary(fit, ci).set_index("feature")
    std = std.iloc[np.argsort(-np.abs(std["mean"].to_numpy()), kind="stable")]
    fig, ax = _figure(6.4, 0.32 * len(std) + 1.3)
    y = np.arange(len(std))
    colour = np.where(std["upper"] < 0, DOWN, np.where(std["lower"] > 0, UP, MAIN))
    ax.hlines(y, std["lower"], std["upper"], color=colour, lw=2)
    ax.scatter(std["mean"], y, color=colour, zorder=3)
    ax.axvline(0, color="0.3", lw=1, ls="--")
    labels = [
        f"{figure_label(name, 24)} ({raw.loc[name, 'mean']:+.3g}/unit)" for name in std["feature"]
    ]
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"θ: change of V per SD of the feature (kT; mean, {ci:.0%} interval)")
    ax.set_title("Feature potential V = x·θ + ε")
    return fig


def _interval(value: dict[str, Any], spec: str) -> str:
    if value.get("mean") is None:
        return "–"
    return (
        f"{format(value['mean'], spec)} [{format(value['lower'], spec)}, "
        f"{format(value['upper'], spec)}]"
    )


def feature_reading(numbers: dict[str, Any]) -> str:
    """A few plain sentences: how much the features explain and which matter most."""
    share, sigma = numbers["feature_share"], numbers["sigma_eps"]
    ci = numbers["ci"]
    theta = pd.DataFrame(numbers["theta"])
    credible = theta[(theta["lower"] > 0) | (theta["upper"] < 0)]
    parts = [
        f"The features explain {share['mean']:.0%} ({share['lower']:.0%}–{share['upper']:.0%}, "
        f"{ci:.0%} interval) of the spread of the potential; what they leave has scale "
        f"σ_ε ≈ {sigma['mean']:.2f} kT."
    ]
    if len(credible):
        names = ", ".join(
            f"{label(r.feature)} ({'raises' if r.mean > 0 else 'lowers'} V)"
            for r in credible.itertuples()
        )
        parts.append(f"Credibly non-zero: {names}.")
    else:
        parts.append("No single feature has a credibly non-zero effect.")
    down = numbers["downhill_features"]
    if down.get("mean") is not None:
        parts.append(
            f"Under the feature potential alone, {down['mean']:.0%} ({down['lower']:.0%}–"
            f"{down['upper']:.0%}) of the {down['n']} frequent moves (T > 0.05) go downhill "
            f"(the paper's parametric potential: 69.56%)."
        )
    return " ".join(parts)


def feature_section(fit: Any, doc: Document | None = None, *, ci: float = 0.9) -> dict[str, Any]:
    """Append the feature section to `doc` (when given); return its numbers (JSON-ready)."""
    numbers = feature_summary(fit, ci)
    if doc is not None:
        doc.heading("Features")
        doc.reading(feature_reading(numbers))
        table = pd.DataFrame(numbers["theta"])
        table["feature"] = table["feature"].map(label)  # shown cut; the JSON keeps them whole
        doc.table(table, f"θ per unit of each feature (mean, sd, {ci:.0%} interval)")
        doc.figure(theta_forest_figure(fit, ci=ci), "Feature effects θ (per SD of the feature)")
        headline = pd.DataFrame(
            [
                (
                    "share of V explained by the features",
                    _interval(numbers["feature_share"], ".3f"),
                ),
                ("σ_ε (unexplained scale, kT)", _interval(numbers["sigma_eps"], ".3f")),
                (
                    "downhill fraction under x·θ (T > 0.05)",
                    _interval(numbers["downhill_features"], ".3f"),
                ),
                ("features", str(numbers["features_source"])),
                (
                    "dropped (constant) features",
                    ", ".join(map(label, numbers["dropped_features"])) or "–",
                ),
            ],
            columns=["quantity", "value"],
        )
        doc.table(headline)
    return numbers
