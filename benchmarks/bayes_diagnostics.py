"""Benchmark of the Bayesian diagnostics at paper scale, with baselines measured in the same run.

A hand-made posterior in the fit layout (4 chains × 1000 draws of V for ≈7,500 states and A
for every pair, around a simulated truth) so that only the diagnostics are timed. Baselines:

- LOO: ArviZ's defaults (`az.loo` on all draws, r_eff averaged over the ESS of every
  posterior variable) against `loo_compare` (≤ 1000 thinned draws, r_eff from the pointwise
  log-likelihood); the ELPD differences are printed side by side;
- posterior predictive check: one draw at a time in a Python loop against the vectorised,
  chunked `ppc_pairs`.

    python benchmarks/bayes_diagnostics.py           # paper scale
    python benchmarks/bayes_diagnostics.py --quick   # 1,000 states
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from _common import machine, max_rss_mb, table, timed, timed_wall  # noqa: E402
from scipy.special import expit  # noqa: E402

from detailed_balance.diagnostics import (  # noqa: E402  # noqa: E402
    bayes_downhill,
    bayes_verdict,
    convergence,
    deviance,
    log_likelihood_tree,
    loo_compare,
    pair_violations,
    ppc_pairs,
)
from detailed_balance.simulation import simulate  # noqa: E402


def posterior(data, truth, chains: int, draws: int, with_a: bool, seed: int) -> xr.DataTree:
    """A fit DataTree (contract layout) with draws N(truth, 0.3²) for V and N(0, 0.1²) for A."""
    rng = np.random.default_rng(seed)
    pairs = data.pairs()
    states = data.states.to_numpy().astype(str)
    v = truth.reindex(data.states).to_numpy() + 0.3 * rng.standard_normal(
        (chains, draws, data.n_states)
    )
    post = {"V": (("chain", "draw", "state"), v)}
    if with_a:
        post["A"] = (
            ("chain", "draw", "pair"),
            0.1 * rng.standard_normal((chains, draws, len(pairs))),
        )
        post["tau_A"] = (("chain", "draw"), 0.1 + 0.01 * rng.standard_normal((chains, draws)))
    const = xr.Dataset(
        {
            "pair_f": ("pair", pairs["f"].to_numpy(dtype=str)),
            "pair_g": ("pair", pairs["g"].to_numpy(dtype=str)),
            "n_fg": ("pair", pairs["n_fg"].to_numpy()),
            "n_gf": ("pair", pairs["n_gf"].to_numpy()),
            "N_f": ("pair", pairs["N_f"].to_numpy()),
            "N_g": ("pair", pairs["N_g"].to_numpy()),
            "visits": ("state", data.visits_array()),
            "cycle_a": ("cycle", np.array([], dtype=str)),
            "cycle_b": ("cycle", np.array([], dtype=str)),
            "cycle_c": ("cycle", np.array([], dtype=str)),
        },
        coords={"state": states},
    )
    stats = {
        "diverging": (("chain", "draw"), np.zeros((chains, draws), dtype=bool)),
        "energy": (("chain", "draw"), rng.standard_normal((chains, draws))),
    }
    tree = xr.DataTree.from_dict(
        {
            "posterior": xr.Dataset(post, coords={"state": states}),
            "constant_data": const,
            "sample_stats": xr.Dataset(stats),
        }
    )
    tree.attrs.update(method="nuts", model="nonequilibrium" if with_a else "equilibrium")
    return tree


def loo_arviz_default(eq, neq) -> float:
    """Baseline: az.loo with every draw and ArviZ's r_eff; returns ELPD_neq − ELPD_eq."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = [az.loo(log_likelihood_tree(t), var_name="n_fg") for t in (eq, neq)]
    return float(out[1].elpd - out[0].elpd)


def ppc_loop(tree, seed: int) -> float:
    """Baseline: the deviance PPC one draw at a time."""
    rng = np.random.default_rng(seed)
    post, const = tree["posterior"], tree["constant_data"]
    states = list(post["state"].values)
    index = {s: k for k, s in enumerate(states)}
    i = np.array([index[s] for s in const["pair_f"].values])
    j = np.array([index[s] for s in const["pair_g"].values])
    n = const["n_fg"].values.astype(float)
    m = n + const["n_gf"].values
    offset = np.log(const["N_f"].values) - np.log(const["N_g"].values)
    v_all = post["V"].values.reshape(-1, len(states))
    hits = 0
    for v in v_all[:: max(1, len(v_all) // 1000)]:
        eta = offset + v[i] - v[j]
        rep = rng.binomial(m.astype(np.int64), expit(eta))
        hits += deviance(rep, m, eta) >= deviance(n, m, eta)
    return hits / len(v_all[:: max(1, len(v_all) // 1000)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n_states, transitions = (1000, 7000) if args.quick else (7500, 50_000)
    sim = simulate(n_states, transitions, seed=1)
    data = sim.transitions
    eq = posterior(data, sim.potential, 4, 1000, False, 1)
    neq = posterior(data, sim.potential, 4, 1000, True, 2)
    print(f"{machine()}; {data.n_states} states, {len(data.pairs())} pairs, 4 × 1000 draws")
    rows = []
    t_base, diff_base = timed(lambda: loo_arviz_default(eq, neq))
    t_ours, ours = timed(lambda: loo_compare(eq, neq))
    rows.append(
        {
            "step": "LOO (eq vs neq)",
            "baseline s": f"{t_base:.1f}",
            "ours s": f"{t_ours:.1f}",
            "ratio": f"{t_base / t_ours:.1f}×",
            "note": f"ELPD diff {diff_base:.1f} (all draws) vs {ours['elpd_diff']:.1f} ± "
            f"{ours['elpd_se']:.1f}",
        }
    )
    t_base, p_base = timed(lambda: ppc_loop(eq, 0))
    t_ours, p_ours = timed(lambda: ppc_pairs(eq, 0))
    rows.append(
        {
            "step": "pair-count PPC (1000 draws)",
            "baseline s": f"{t_base:.1f}",
            "ours s": f"{t_ours:.1f}",
            "ratio": f"{t_base / t_ours:.1f}×",
            "note": f"p {p_base:.3f} vs {p_ours['p_value']:.3f}",
        }
    )
    for name, func in (
        ("convergence (V centred, ArviZ)", lambda: convergence(eq, warn=False)),
        ("pair_violations", lambda: pair_violations(neq)),
        ("bayes_downhill", lambda: bayes_downhill(eq)),
    ):
        seconds, _ = timed(func)
        rows.append(
            {"step": name, "baseline s": "", "ours s": f"{seconds:.1f}", "ratio": "", "note": ""}
        )
    seconds, verdict = timed_wall(lambda: bayes_verdict(eq, neq))
    rows.append(
        {
            "step": "bayes_verdict (wall)",
            "baseline s": "",
            "ours s": f"{seconds:.1f}",
            "ratio": "",
            "note": f"verdict {verdict.verdict}; peak RSS {max_rss_mb() / 1024:.2f} GB",
        }
    )
    print(table(rows))


if __name__ == "__main__":
    main()
