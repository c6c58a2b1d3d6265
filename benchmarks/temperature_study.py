"""How much data does a trustworthy temperature need? (multi-LLM hierarchical model)

Three simulated LLMs descend one landscape (250 states, V ~ N(0, 1)) at β = 0.5, 1 (reference)
and 2. For each number of visits per state and each prior on the shared landscape μ, fit the
hierarchical model with NUTS and report the relative bias of the posterior-mean β of the two
non-reference LLMs and whether their 90% intervals cover the truth.

    .venv/bin/python benchmarks/temperature_study.py [--visits 40 160 800] [--seeds 0]

"wide" is the straightforward model (fixed wide prior on μ, one shared τ_δ); "fitted" is the
default (μ ~ N(0, σ_μ) with σ_μ fitted, per-LLM τ_δ,m). Numbers in docs/models.md, "Hierarchical model".
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pandas as pd  # noqa: E402

from detailed_balance.models.hierarchy import HierarchicalModel  # noqa: E402
from detailed_balance.sampling import sample  # noqa: E402
from detailed_balance.simulation import simulate_panel  # noqa: E402

BETAS = {"hot": 0.5, "ref": 1.0, "cold": 2.0}
PRIORS = {
    "wide": {"mu_prior": "wide", "deviations": "shared"},
    "fitted": {"mu_prior": "fitted", "deviations": "per_llm"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, nargs="+", default=[40, 160, 800])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--states", type=int, default=250)
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()
    rows = []
    for visits in args.visits:
        for seed in args.seeds:
            panel = simulate_panel(BETAS, n_states=args.states, visits=visits, seed=seed)
            for prior, config in PRIORS.items():
                start = time.perf_counter()
                model = HierarchicalModel({"reference": "ref", **config})
                tree = sample(
                    model, panel.data, draws=args.draws, tune=args.draws, chains=2, seed=seed + 1
                )
                beta = tree["posterior"]["beta"]
                for name in ("hot", "cold"):
                    draws = beta.sel(llm=name)
                    lo, hi = (float(draws.quantile(q)) for q in (0.05, 0.95))
                    rows.append(
                        {
                            "visits/state": visits,
                            "seed": seed,
                            "prior": prior,
                            "llm": f"{name} (β={BETAS[name]})",
                            "bias_%": round(100 * (float(draws.mean()) / BETAS[name] - 1), 1),
                            "covered": lo <= BETAS[name] <= hi,
                            "width_%": round(100 * (hi - lo) / BETAS[name], 1),
                            "seconds": round(time.perf_counter() - start, 1),
                        }
                    )
                print(pd.DataFrame(rows).tail(2).to_string(header=False), flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False) if _has_tabulate() else pd.DataFrame(rows))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
