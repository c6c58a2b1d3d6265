"""Kernel-likelihood fit times against the straightforward PyMC multinomial model, same run.

For each design (our simulator at the paper's scale, and `generators.pareto_lognormal`, a
generator written independently of it), one seeded data set is fitted by

- the package: `EquilibriumModel()` (kernel likelihood) by ``map`` (MAP + Laplace, 4,000
  draws) and by NUTS (nutpie, 4 × `--draws` after `--tune`);
- the straightforward model (`baseline.straightforward_kernel_model`: the same likelihood
  written the plain way, no whitening, no custom Op) by `pm.find_MAP` and by nutpie with its
  defaults and the same draws,

and the wall times, their ratios (straightforward / package), leapfrog steps per draw and the
worst R-hat of V over the bounded states are printed. ``--skip-baseline-nuts`` leaves out the
slowest cell (the straightforward NUTS at paper scale runs for many minutes).

    python benchmarks/kernel_speed.py --design paper pareto
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402


def _rhat_bounded(v, bounded) -> float:
    import arviz as az

    sub = v.isel(state=np.flatnonzero(bounded))
    centred = sub - sub.mean("state")
    return float(np.nanmax(az.rhat(centred.to_dataset(name="V"))["V"].values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--design", nargs="+", default=["paper", "pareto"])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-baseline-nuts", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import pymc as pm
    from baseline import sample_nutpie, straightforward_kernel_model
    from kernel_model import design

    from detailed_balance.models import EquilibriumModel
    from detailed_balance.sampling import fit

    print(
        f"{'design':>7s} {'states':>6s} {'pairs':>6s} {'fit':>22s} {'seconds':>8s} "
        f"{'ratio':>6s} {'steps':>6s} {'rhat_V':>7s}",
        flush=True,
    )
    for name in args.design:
        data, _ = design(name, args.seed)
        rows = []
        # warm-up of the package's compiled kernels (numba caches them on disk after this)
        fit(EquilibriumModel(), data, method="map", draws=10, chains=1, seed=1)
        start = time.perf_counter()
        ours = fit(EquilibriumModel(), data, method="map", seed=args.seed + 1)
        rows.append(("package map", time.perf_counter() - start, np.nan, np.nan))
        pairs = ours.pairs
        start = time.perf_counter()
        nuts = fit(EquilibriumModel(), data, method="nuts", draws=args.draws, tune=args.tune,
                   seed=args.seed + 1, progressbar=False)  # fmt: skip
        seconds = time.perf_counter() - start
        steps = float(nuts.posterior["sample_stats"]["n_steps"].mean())
        rhat = _rhat_bounded(nuts.posterior["posterior"]["V"], pairs.bounded)
        rows.append(("package nuts", seconds, steps, rhat))
        model = straightforward_kernel_model(data)
        start = time.perf_counter()
        with model:
            pm.find_MAP(progressbar=False)
        rows.append(("straightforward map", time.perf_counter() - start, np.nan, np.nan))
        if not args.skip_baseline_nuts:
            start = time.perf_counter()
            idata, _, steps = sample_nutpie(model, args.draws, args.tune, 4, args.seed + 1)
            seconds = time.perf_counter() - start
            rhat = _rhat_bounded(idata["posterior"]["V"], pairs.bounded)
            rows.append(("straightforward nuts", seconds, steps, rhat))
        base = {label.split()[1]: s for label, s, _, _ in rows if label.startswith("straight")}
        for label, seconds, steps, rhat in rows:
            method = label.split()[1]
            ratio = base.get(method, np.nan) / seconds if label.startswith("package") else 1.0
            print(
                f"{name:>7s} {pairs.n_states:>6d} {pairs.n_pairs:>6d} {label:>22s} "
                f"{seconds:>8.1f} {ratio:>6.1f} {steps:>6.1f} {rhat:>7.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
