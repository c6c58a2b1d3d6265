"""The paper's detailed-balance checks (Song et al., PAPER.md "The checks the paper runs").

Each check returns a `Check`: a tidy frame of the points it used and a summary dict with the
numbers the paper reports. Filters and error formulas are the paper's:

- detailed-balance scatter: pairs seen ≥ 2 times each way, x = V_f − V_g, y = log T_fg/T_gf,
  σ_y² = 1/n_fg + 1/N_f + 1/n_gf + 1/N_g, pairs with |x| > log(total transitions) dropped;
- 3-cycle loop balance: σ² = Σ (1/n_edge + 1/N_source) per side, χ² = Σ (b − f)²/(σ_f² + σ_b²);
- downhill fraction among moves with T > 0.05;
- Gaussian fit of V over states sampled ≥ 2 times; action size vs 1/(√π σ).

T is the paper's kernel estimate min(1, n/N₀). All checks are vectorised over pairs/cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from detailed_balance.data import Transitions


@dataclass
class Check:
    """The points a check used (`points`) and the numbers it reports (`summary`)."""

    name: str
    points: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]


def _series(potentials: Any) -> pd.Series:
    """Potentials as a Series indexed by state (a least-action result or a Series/mapping)."""
    series = getattr(potentials, "potentials", potentials)
    return pd.Series(series, dtype=float)


def _aligned(data: Transitions, potentials: Any) -> np.ndarray:
    """Potentials aligned with `data.states` (NaN where unknown or unbounded)."""
    return _series(potentials).reindex(data.states).to_numpy(dtype=float)


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def db_scatter(
    data: Transitions, potentials: Any, *, llm: str | None = None, min_count: int = 2
) -> Check:
    """Detailed-balance scatter: log T(f→g)/T(g→f) against V_f − V_g for well-seen pairs."""
    pairs = data.pairs(llm)
    v = _aligned(data, potentials)
    total = float(data.moves(llm)["count"].sum())
    keep = (
        (pairs["n_fg"] >= min_count)
        & (pairs["n_gf"] >= min_count)
        & pairs["N_f"].notna()
        & pairs["N_g"].notna()
    ).to_numpy()
    p = pairs[keep]
    x = v[p["i"].to_numpy()] - v[p["j"].to_numpy()]
    t_fg = np.minimum(1.0, p["n_fg"].to_numpy() / p["N_f"].to_numpy())
    t_gf = np.minimum(1.0, p["n_gf"].to_numpy() / p["N_g"].to_numpy())
    y = np.log(t_fg) - np.log(t_gf)
    sigma = np.sqrt(
        1 / p["n_fg"].to_numpy()
        + 1 / p["N_f"].to_numpy()
        + 1 / p["n_gf"].to_numpy()
        + 1 / p["N_g"].to_numpy()
    )
    usable = np.isfinite(x) & (np.abs(x) <= math.log(max(total, 1.0)))
    points = pd.DataFrame(
        {
            "f": p["f"],
            "g": p["g"],
            "n_fg": p["n_fg"],
            "n_gf": p["n_gf"],
            "delta_v": x,
            "log_ratio": y,
            "sigma": sigma,
        }
    )[usable].reset_index(drop=True)
    n = len(points)
    resid = (points["log_ratio"] - points["delta_v"]) / points["sigma"]
    summary = {
        "n": n,
        "pearson_r": _pearson(points["delta_v"].to_numpy(), points["log_ratio"].to_numpy()),
        "chi2_ndf": float(np.sum(resid**2) / n) if n else None,
    }
    return Check("detailed_balance", points, summary)


def loop_log_rates(data: Transitions, cycles: pd.DataFrame, llm: str | None = None) -> pd.DataFrame:
    """Forward (a→b→c→a) and backward Σ log T per 3-cycle with the paper's σ² per side."""
    visits = data.visits_array(llm)
    a, b, c = (cycles[k].to_numpy() for k in ("i", "j", "k"))

    def side(sources: list[np.ndarray], targets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        src, dst = np.concatenate(sources), np.concatenate(targets)
        n = data.edge_counts(src, dst, llm).astype(float).reshape(3, -1)
        big_n = visits[src].reshape(3, -1)
        log_t = np.log(np.minimum(1.0, n / big_n))
        return log_t.sum(axis=0), (1 / n + 1 / big_n).sum(axis=0)

    forward, var_f = side([a, b, c], [b, c, a])
    backward, var_b = side([a, c, b], [c, b, a])
    return pd.DataFrame(
        {
            "a": cycles["a"],
            "b": cycles["b"],
            "c": cycles["c"],
            "forward": forward,
            "backward": backward,
            "sigma_forward": np.sqrt(var_f),
            "sigma_backward": np.sqrt(var_b),
        }
    )


def loop_balance(data: Transitions, *, llm: str | None = None, min_count: int = 1) -> Check:
    """3-cycle loop balance (Kolmogorov criterion) over triangles with all six edges observed."""
    points = loop_log_rates(data, data.cycles(llm, min_count=min_count), llm)
    n = len(points)
    chi2 = (points["backward"] - points["forward"]) ** 2 / (
        points["sigma_forward"] ** 2 + points["sigma_backward"] ** 2
    )
    points["chi2"] = chi2
    summary = {"n": n, "chi2_ndf": float(chi2.sum() / n) if n else None}
    return Check("loops", points, summary)


def downhill_tally(drop: np.ndarray, tolerance: float = 0.0) -> dict[str, np.ndarray]:
    """Count moves by the sign of their potential change ΔV = V_target − V_source.

    `drop` is (..., moves): one row per posterior draw, or a single row of point estimates;
    NaN marks a move whose ΔV is unknown (left out). Returns counts along the last axis:
    ``{"down": ΔV < −tol, "up": ΔV > tol, "flat", "known", "fraction_down": down / known
    (NaN where nothing is known)}``. The one definition of "downhill" every check uses.
    """
    drop = np.asarray(drop, dtype=float)
    known = ~np.isnan(drop)
    down = (known & (drop < -tolerance)).sum(axis=-1)
    up = (known & (drop > tolerance)).sum(axis=-1)
    n = known.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(n > 0, down / np.maximum(n, 1), np.nan)
    return {"down": down, "up": up, "flat": n - down - up, "known": n, "fraction_down": fraction}


def downhill_fraction(
    data: Transitions,
    potentials: Any,
    *,
    llm: str | None = None,
    threshold: float = 0.05,
    tolerance: float = 1e-9,
) -> Check:
    """Share of high-probability moves (T > `threshold`) that go to lower V.

    With a least-action result, a move between different strongly connected pieces has an
    unbounded gap in the downhill direction (the action drives V_f − V_g → +∞), so it counts as
    down; moves touching a state with no finite potential are otherwise left out.
    """
    moves = data.moves(llm)
    moves = moves[moves["rate"] > threshold]
    v = _aligned(data, potentials)
    i, j = moves["i"].to_numpy(), moves["j"].to_numpy()
    drop = v[j] - v[i]
    if hasattr(potentials, "bounded"):
        scc = data.strong_components(llm)
        drop = np.where(scc[i] != scc[j], -np.inf, drop)
    tally = downhill_tally(drop, tolerance)
    points = moves.assign(delta_v=drop)[~np.isnan(drop)].reset_index(drop=True)
    n = int(tally["known"])
    summary = {
        "n": n,
        "down": int(tally["down"]),
        "up": int(tally["up"]),
        "flat": int(tally["flat"]),
        "fraction_down": float(tally["fraction_down"]) if n else None,
    }
    return Check("downhill", points, summary)


def potential_fit(
    data: Transitions, potentials: Any, *, llm: str | None = None, min_visits: float = 2
) -> Check:
    """Gaussian fit (maximum likelihood μ, σ) of V over states sampled ≥ `min_visits` times."""
    v = _aligned(data, potentials)
    keep = (data.visits_array(llm) >= min_visits) & np.isfinite(v)
    points = pd.DataFrame({"state": data.states[keep], "potential": v[keep]})
    n = len(points)
    summary = {
        "n": n,
        "mu": float(points["potential"].mean()) if n else None,
        "sigma": float(points["potential"].std(ddof=0)) if n > 1 else None,
    }
    return Check("potential_fit", points, summary)


def action_size(action: float | Any, sigma: float | None) -> Check:
    """The minimum action against the 1/(√π σ) the paper expects from the spread of V."""
    value = float(getattr(action, "action", action))
    expected = 1.0 / (math.sqrt(math.pi) * sigma) if sigma else None
    return Check("action", pd.DataFrame(), {"value": value, "expected": expected})


def paper_checks(
    data: Transitions,
    result: Any,
    *,
    llm: str | None = None,
    threshold: float = 0.05,
    loop_min_count: int = 1,
) -> dict[str, Check]:
    """All five checks for a least-action `result` (anything with `.potentials`, `.action`)."""
    fit = potential_fit(data, result, llm=llm)
    return {
        "detailed_balance": db_scatter(data, result, llm=llm),
        "loops": loop_balance(data, llm=llm, min_count=loop_min_count),
        "downhill": downhill_fraction(data, result, llm=llm, threshold=threshold),
        "potential_fit": fit,
        "action": action_size(result, fit.summary["sigma"]),
    }


def checks_json(checks: dict[str, Check]) -> dict[str, Any]:
    """The `check --json` object: the summaries, null where a check had no data."""
    keys = {
        "detailed_balance": ("n", "pearson_r", "chi2_ndf"),
        "loops": ("n", "chi2_ndf"),
        "downhill": ("n", "down", "up", "flat", "fraction_down"),
        "potential_fit": ("mu", "sigma"),
        "action": ("value", "expected"),
    }
    out: dict[str, Any] = {}
    for name, wanted in keys.items():
        check = checks.get(name)
        has_data = check is not None and check.summary.get("n", 1) != 0
        out[name] = {k: check.summary[k] for k in wanted} if has_data else None
    return out
