"""What a pair fit stores, in numpy and xarray (no PyMC): the ``map`` method's draws
(`laplace_posterior`) and the pair arrays of the fit's ``constant_data`` group.

The ``map`` method: draws from the Laplace approximation at the MAP.
(V, a) ~ N(θ*, H⁻¹), H the sparse Gauss–Newton precision, drawn by perturb-then-solve
(`_density.gaussian_draws`). For the non-equilibrium model log τ_A comes from a 5-node
quadrature over its Laplace-marginal posterior (`_scales.tau_grid`) and (V, a) from the
Gaussian at each node's conditional mode; τ_A's draws are jittered uniformly within their
node's cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from detailed_balance.data.names import as_names

from ._density import PairDensity, gaussian_draws
from ._pairs import PairData
from ._scales import tau_grid


def laplace_posterior(
    prepared: Any, draws: int, seed: int, reference: str | None, coords: dict[str, Any]
) -> xr.DataTree:
    """`draws` draws (one chain) of the stored variables from a `PreparedPairs`, V reported
    with `reference` (see `PairData.with_reference`), plus the MAP's statistics (``/map``)."""
    pairs, density = prepared.pairs, prepared.density
    rng = np.random.default_rng(int(seed))
    lay = density.layout
    if lay.nonequilibrium and (density.a_mask > 0).any():
        grid = tau_grid(density, prepared.map_result)
        counts = rng.multinomial(draws, [node.weight for node in grid])
        nodes = [(n.payload.theta, c, n.spacing) for n, c in zip(grid, counts, strict=True)]
    else:
        nodes = [(prepared.map_result.theta, draws, 0.0)]
    parts = [_node_draws(density, th, c, rng, cell) for th, c, cell in nodes if c]
    v_draws, antisym, tau = (
        None if x[0] is None else np.concatenate(x) for x in zip(*parts, strict=True)
    )
    if len(parts) > 1:
        order = rng.permutation(draws)
        v_draws, antisym, tau = v_draws[order], antisym[order], tau[order]
    if lay.nonequilibrium and not (density.a_mask > 0).any():
        # No pair carries A: the data say nothing about τ_A, whose posterior is its prior.
        scale = float(density.config["tau_A_scale"])
        if density.config["tau_A_prior"] == "halfcauchy":
            tau = scale * np.abs(rng.standard_cauchy(draws))
        else:
            tau = scale * np.abs(rng.standard_normal(draws))
    theta = prepared.map_result.theta
    v_draws, weights = pairs.report_gauge(v_draws, reference)
    variables: dict[str, Any] = {
        "V": (("chain", "draw", "state"), v_draws[None]),
        "centring_weight": ("state", weights),
    }
    if lay.fitted_sigma:
        variables["sigma_V"] = (("chain", "draw"), np.full((1, draws), density.sigma(theta)))
    if lay.nonequilibrium:
        cp = pairs.cycle_pairs
        variables["A"] = (("chain", "draw", "pair"), antisym[None])
        variables["tau_A"] = (("chain", "draw"), tau[None])
        loops = antisym[:, cp[:, 0]] + antisym[:, cp[:, 1]] - antisym[:, cp[:, 2]]
        variables["loop_affinity"] = (("chain", "draw", "cycle"), loops[None])
    coords = {"chain": [0], "draw": np.arange(draws), **coords}
    posterior = xr.Dataset(variables, coords=coords)
    result = prepared.map_result
    stats = xr.Dataset(
        {
            "map_logp": result.logp,
            "map_iterations": result.iterations,
            "map_converged": result.converged,
        }
    )
    return xr.DataTree.from_dict({"/posterior": posterior, "/map": stats})


def _node_draws(
    density: PairDensity, theta: np.ndarray, draws: int, rng: np.random.Generator, cell: float
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """`draws` Laplace draws of V (and A = τ a, τ_A) around the conditional mode `theta`."""
    pairs, lay = density.pairs, density.layout
    weights = density.pair_weights(theta)
    v_map = theta[lay.v]
    h = density.prior_curvature(pairs.centre(v_map), density.sigma(theta))
    tau = density.tau(theta)
    tau_pairs = tau * density.a_mask if lay.nonequilibrium else 0.0
    dv, da = gaussian_draws(pairs, weights, h, draws, rng, tau_pairs)
    if not lay.nonequilibrium:
        return v_map + dv, None, None
    antisym = tau * density.a_mask * (theta[lay.a] + da)
    log_tau = (
        np.log(tau) + (rng.random(draws) - 0.5) * cell if cell else np.full(draws, np.log(tau))
    )
    return v_map + dv, antisym, np.exp(log_tau)


def pairs_coord(pairs: PairData) -> np.ndarray:
    return np.arange(pairs.n_pairs)


def constant_data(pairs: PairData) -> xr.Dataset:
    """The pair arrays of the fit (contract names) with state names as coordinates."""
    names = as_names(pairs.states)  # objects: `astype(str)` copies each at the longest width
    cycles = as_names(pairs.cycle_names).reshape(-1, 3)
    return xr.Dataset(
        {
            "pair_f": ("pair", names[pairs.i]),
            "pair_g": ("pair", names[pairs.j]),
            "pair_i": ("pair", pairs.i.astype(np.int64)),
            "pair_j": ("pair", pairs.j.astype(np.int64)),
            "n_fg": ("pair", pairs.n_fg.astype(np.int64)),
            "n_gf": ("pair", pairs.n_gf.astype(np.int64)),
            "N_f": ("pair", pairs.N_f),
            "N_g": ("pair", pairs.N_g),
            "visits": ("state", pairs.visits),
            "component": ("state", pairs.component.astype(np.int64)),
            "bounded": ("state", pairs.bounded),
            "centring_weight": ("state", pairs.weights),
            "cycle_a": ("cycle", cycles[:, 0]),
            "cycle_b": ("cycle", cycles[:, 1]),
            "cycle_c": ("cycle", cycles[:, 2]),
            "cycle_pair_ab": ("cycle", pairs.cycle_pairs[:, 0].astype(np.int64)),
            "cycle_pair_bc": ("cycle", pairs.cycle_pairs[:, 1].astype(np.int64)),
            "cycle_pair_ac": ("cycle", pairs.cycle_pairs[:, 2].astype(np.int64)),
        },
        coords={
            "pair": np.arange(pairs.n_pairs),
            "state": names,
            "cycle": np.arange(pairs.n_cycles),
        },
    )
