"""MCMC convergence of a Bayesian fit, judged on what the data identify.

V is identified only up to a constant per connected piece, so R-hat/ESS of raw V measure how
much the (unidentified) constant wanders, not whether the sampler converged. We judge

- V of the *bounded* states (those in a strongly connected piece of the move graph, where the
  likelihood has a finite maximum), centred per piece in every draw;
- loop affinities (sums of A around 3-cycles: gauge-free);
- every scalar of the posterior (``sigma_V``, ``tau_A``, ...);

with rank-normalised split R-hat, bulk and tail ESS (ArviZ 1.x ``az.rhat``/``az.ess``), the
number of divergent transitions, tree-depth saturation and E-BFMI per chain (``az.bfmi``).
Anything off raises a `ConvergenceWarning` (a loud ``warnings.warn``) and sets ``ok=False``.

Fits by ADVI or MAP/Laplace have independent draws from an approximation: there is nothing
for MCMC diagnostics to check, and the report says so instead of inventing numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from ._fitdata import centre_by_label, fit_arrays

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100  # Vehtari et al. (2021): bulk and tail ESS ≥ 100 per chain
BFMI_MIN = 0.3
MCMC_METHODS = {"nuts", "mcmc", "nutpie", "pymc", "numpyro", "blackjax"}


class ConvergenceWarning(UserWarning):
    """The sampler did not converge on identified quantities; do not trust the numbers yet."""


@dataclass
class ConvergenceReport:
    """Convergence diagnostics of identified quantities (see the module docstring)."""

    method: str
    n_chains: int
    n_draws: int
    table: pd.DataFrame  # quantity, rhat, ess_bulk, ess_tail (one row per identified quantity)
    n_divergent: int | None = None
    n_max_treedepth: int | None = None
    bfmi: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    applicable: bool = True

    @property
    def ok(self) -> bool:
        """True when nothing is off (always True for non-MCMC approximations)."""
        return not self.warnings

    @property
    def rhat_max(self) -> float | None:
        return _finite_max(self.table["rhat"]) if len(self.table) else None

    @property
    def ess_bulk_min(self) -> float | None:
        return _finite_min(self.table["ess_bulk"]) if len(self.table) else None

    @property
    def ess_tail_min(self) -> float | None:
        return _finite_min(self.table["ess_tail"]) if len(self.table) else None

    @property
    def bfmi_min(self) -> float | None:
        return float(min(self.bfmi)) if self.bfmi else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "method": self.method,
            "applicable": self.applicable,
            "ok": self.ok,
            "chains": self.n_chains,
            "draws": self.n_draws,
            "rhat_max": self.rhat_max,
            "ess_bulk_min": self.ess_bulk_min,
            "ess_tail_min": self.ess_tail_min,
            "divergences": self.n_divergent,
            "max_treedepth_hits": self.n_max_treedepth,
            "bfmi_min": self.bfmi_min,
            "warnings": list(self.warnings),
        }

    def __str__(self) -> str:
        if not self.applicable:
            return f"convergence: not applicable ({self.method}: independent approximate draws)"
        head = (
            f"convergence ({self.method}, {self.n_chains} chains × {self.n_draws} draws): "
            f"R-hat max {_fmt(self.rhat_max)}, ESS bulk min {_fmt(self.ess_bulk_min)}, "
            f"tail min {_fmt(self.ess_tail_min)}, divergences {self.n_divergent}, "
            f"E-BFMI min {_fmt(self.bfmi_min)}"
        )
        return head + "".join(f"\n  warning: {w}" for w in self.warnings)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _finite_max(values: pd.Series) -> float | None:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.max()) if len(v) else None


def _finite_min(values: pd.Series) -> float | None:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.min()) if len(v) else None


QUANTITIES = ("V", "loop_affinity", "scalars")


def identified_quantities(result: Any, include: Iterable[str] = QUANTITIES) -> xr.Dataset:
    """Identified draws: V of bounded states centred per piece, loop affinities, scalars.

    `include` picks among ``"V"``, ``"loop_affinity"`` and ``"scalars"``. Returns a Dataset
    with dims (chain, draw[, state | cycle]) that ArviZ functions accept.
    """
    include = set(include)
    unknown = include - set(QUANTITIES)
    if unknown:
        raise ValueError(f"unknown quantities {sorted(unknown)}; use {', '.join(QUANTITIES)}.")
    fit = fit_arrays(result)
    post = fit.tree["posterior"]
    out: dict[str, xr.DataArray] = {}
    labels, _ = fit.strong_components()
    bounded = fit.bounded() if "V" in include else np.zeros(len(fit.states), dtype=bool)
    if bounded.any():
        v = post["V"].transpose("chain", "draw", "state").values[..., bounded]
        _, lab = np.unique(labels[bounded], return_inverse=True)
        centred = centre_by_label(v, lab)
        out["V_centred"] = xr.DataArray(
            centred,
            dims=("chain", "draw", "state"),
            coords={"state": np.asarray(fit.states)[bounded]},
        )
    affinity = fit.loop_affinity() if "loop_affinity" in include else None
    if affinity is not None and affinity.shape[1]:
        out["loop_affinity"] = xr.DataArray(
            affinity.reshape(fit.n_chains, fit.n_draws, -1), dims=("chain", "draw", "cycle")
        )
    for name, da in post.data_vars.items():
        if "scalars" in include and set(da.dims) == {"chain", "draw"}:
            out[str(name)] = da.transpose("chain", "draw")
    return xr.Dataset(out)


def _table(ds: xr.Dataset) -> pd.DataFrame:
    rhat = az.rhat(ds)
    ess_bulk = az.ess(ds, method="bulk")
    # Vehtari et al.'s tail ESS uses the 5% and 95% quantiles (ArviZ 1.x would default to
    # its 89% interval).
    ess_tail = az.ess(ds, method="tail", prob=(0.05, 0.95))
    frames = []
    for name in ds.data_vars:
        da = ds[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        labels = [f"{name}[{c}]" for c in da[extra[0]].values] if extra else [str(name)]
        frames.append(
            pd.DataFrame(
                {
                    "quantity": labels,
                    "rhat": np.ravel(rhat[name].values),
                    "ess_bulk": np.ravel(ess_bulk[name].values),
                    "ess_tail": np.ravel(ess_tail[name].values),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["quantity", "rhat", "ess_bulk", "ess_tail"])
    return pd.concat(frames, ignore_index=True)


def convergence(
    result: Any,
    *,
    rhat_max: float = RHAT_MAX,
    ess_per_chain: float = ESS_PER_CHAIN,
    bfmi_min: float = BFMI_MIN,
    warn: bool = True,
    include: Iterable[str] = QUANTITIES,
) -> ConvergenceReport:
    """R-hat, bulk/tail ESS, divergences, tree depth and E-BFMI of identified quantities.

    Emits a `ConvergenceWarning` for each problem when `warn` (the default), so a script that
    ignores the report still hears about it. `include` restricts R-hat/ESS to some of
    ``"V"``, ``"loop_affinity"``, ``"scalars"`` (e.g. what a verdict relies on).
    """
    fit = fit_arrays(result)
    method = fit.method
    if method not in MCMC_METHODS:
        empty = pd.DataFrame(columns=["quantity", "rhat", "ess_bulk", "ess_tail"])
        return ConvergenceReport(method, fit.n_chains, fit.n_draws, empty, applicable=False)
    ds = identified_quantities(fit.tree, include)
    table = (
        _table(ds)
        if fit.n_draws >= 4
        else pd.DataFrame(columns=["quantity", "rhat", "ess_bulk", "ess_tail"])
    )
    report = ConvergenceReport(method, fit.n_chains, fit.n_draws, table)
    problems = report.warnings
    if fit.n_chains < 2:
        problems.append("only one chain: R-hat cannot detect chains stuck in different modes")
    worst = table.loc[table["rhat"].astype(float).idxmax()] if len(table) else None
    if worst is not None and float(worst["rhat"]) > rhat_max:
        n_bad = int((table["rhat"].astype(float) > rhat_max).sum())
        problems.append(
            f"R-hat {float(worst['rhat']):.3f} > {rhat_max} for {worst['quantity']} "
            f"({n_bad} identified quantities above); run more tuning/draws or reparameterise"
        )
    need = ess_per_chain * fit.n_chains
    for kind in ("bulk", "tail"):
        column = table[f"ess_{kind}"].astype(float) if len(table) else pd.Series(dtype=float)
        if len(column) and column.min() < need:
            low = table.loc[column.idxmin(), "quantity"]
            problems.append(
                f"{kind} ESS {column.min():.0f} < {need:.0f} ({ess_per_chain:g} per chain) for "
                f"{low}; draw more samples"
            )
    stats = fit.tree["sample_stats"].to_dataset() if "sample_stats" in fit.tree.children else None
    if stats is not None and "diverging" in stats.data_vars:
        report.n_divergent = int(stats["diverging"].values.sum())
        if report.n_divergent:
            problems.append(
                f"{report.n_divergent} divergent transitions: the posterior has regions the "
                "sampler cannot follow (often a funnel in a scale parameter); results are biased"
            )
    if stats is not None and "maxdepth_reached" in stats.data_vars:
        report.n_max_treedepth = int(stats["maxdepth_reached"].values.sum())
        if report.n_max_treedepth:
            problems.append(
                f"{report.n_max_treedepth} draws hit the maximum tree depth: the sampler is "
                "inefficient (poor mass matrix or strong correlations)"
            )
    if stats is not None and "energy" in stats.data_vars and fit.n_draws >= 4:
        report.bfmi = [float(x) for x in np.ravel(az.bfmi(fit.tree)["energy"].values)]
        low = [b for b in report.bfmi if b < bfmi_min]
        if low:
            problems.append(
                f"E-BFMI {min(low):.2f} < {bfmi_min} in {len(low)} chain(s): momentum resampling "
                "explores the energy poorly (heavy tails or a poorly scaled parameter)"
            )
    if warn:
        for message in problems:
            warnings.warn(f"convergence: {message}", ConvergenceWarning, stacklevel=2)
    return report
