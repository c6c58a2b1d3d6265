"""The straightforward PyMC models the kernel-likelihood benchmarks (issue 13) measure against.

Written the plain way a new user would: no whitening, no custom Ops, no gauge fixing beyond
the priors, sampled by nutpie with its defaults. Each benchmark reports its own model's time
as a ratio against these, in the same run.

- `straightforward_kernel_model(data)`: the reversible multinomial kernel. Log-conductances
  u ~ Normal(0, 5) per modelled pair, remainder weights r ~ Normal(0, 5) per state,
  π_f = Σ_g e^{u_fg} + e^{r_f} (by `inc_subtensor`), and the log-likelihood
  Σ_p m_p u_p + Σ_f R_f r_f − Σ_f N_f log π_f as a `pm.Potential` (the multinomial without its
  constant; m_p = n_fg + n_gf, R_f = N_f − moves counted out of f). V = −log π is a
  Deterministic.
- `straightforward_pair_model(data)`: the conditional binomial n_fg ~ Binomial(m, logit⁻¹(log
  N_f/N_g + V_f − V_g)) with V ~ Normal(0, 10).
- `sample_nutpie(model, draws, tune, chains, seed)` → (idata, sampling seconds, mean leapfrog
  steps per draw); the compile time is in ``idata.attrs["compile_seconds"]``.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np  # noqa: E402
import pymc as pm  # noqa: E402
import pytensor.tensor as pt  # noqa: E402

from detailed_balance.data import Transitions  # noqa: E402
from detailed_balance.models import pair_data  # noqa: E402


def remainder_counts(pairs) -> np.ndarray:
    """R_f = N_f − Σ_g n_fg over the modelled pairs (self steps, invalid, unmodelled targets)."""
    k = pairs.n_states
    out = np.bincount(pairs.i, pairs.n_fg, k) + np.bincount(pairs.j, pairs.n_gf, k)
    return pairs.visits - out


def straightforward_kernel_model(data: Transitions, llm: str | None = None) -> pm.Model:
    """The reversible multinomial kernel model, plain PyMC (see the module docstring)."""
    pairs = pair_data(data, llm)
    k, p = pairs.n_states, pairs.n_pairs
    m = pairs.trials
    rest = remainder_counts(pairs)
    coords = {"pair": np.arange(p), "state": pairs.states}
    with pm.Model(coords=coords) as model:
        # float64 scales: a Python 5.0 becomes a float32 constant, and log σ loses 3e-8 per variable
        u = pm.Normal("u", 0.0, np.float64(5.0), dims="pair")
        r = pm.Normal("r", 0.0, np.float64(5.0), dims="state")
        x = pt.exp(u)
        pi = pt.zeros(k)[pairs.i].inc(x)  # duplicate indices accumulate
        pi = pi[pairs.j].inc(x)
        pi = pi + pt.exp(r)
        log_pi = pt.log(pi)
        pm.Potential("loglik", pt.dot(m, u) + pt.dot(rest, r) - pt.dot(pairs.visits, log_pi))
        pm.Deterministic("V", -log_pi, dims="state")
    return model


def straightforward_pair_model(data: Transitions, llm: str | None = None) -> pm.Model:
    """The conditional binomial pair model, plain PyMC: V ~ Normal(0, 10)."""
    pairs = pair_data(data, llm)
    coords = {"pair": np.arange(pairs.n_pairs), "state": pairs.states}
    with pm.Model(coords=coords) as model:
        v = pm.Normal("V", 0.0, np.float64(10.0), dims="state")
        eta = np.log(pairs.N_f / pairs.N_g) + v[pairs.i] - v[pairs.j]
        pm.Binomial(
            "n_fg",
            n=pairs.trials.astype(np.int64),
            p=pm.math.invlogit(eta),
            observed=pairs.n_fg.astype(np.int64),
            dims="pair",
        )
    return model


def sample_nutpie(
    model: pm.Model, draws: int = 1000, tune: int = 1000, chains: int = 4, seed: int = 0
):
    """NUTS by nutpie (numba backend): (idata, sampling wall seconds, mean leapfrog steps per
    draw after tuning). Compile seconds are stored in ``idata.attrs["compile_seconds"]``."""
    import nutpie

    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model, backend="numba")
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    idata = nutpie.sample(
        compiled,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        cores=min(chains, os.cpu_count() or 1),
        progress_bar=False,
    )
    seconds = time.perf_counter() - start
    steps = float(idata.sample_stats["n_steps"].mean())
    idata.attrs["compile_seconds"] = compile_seconds
    return idata, seconds, steps
