"""The Bayesian kernel model: the exact likelihood (`_kernel.KernelDensity`) behind the pair
models' interface, selected by ``model_config["likelihood"]``.

    likelihood = "kernel": every call of every prompt state is one draw of its row of a
    reversible kernel, (n_f·, R_f) ~ Multinomial(N_f; T_f·, 1 − Σ_g T_fg), with
    T_fg = X_fg / π_f, X_fg = X_gf = exp(u_p), X_ff = exp(r_f), π_f = Σ_g X_fg + X_ff,
    and V = −log π (reported in the pair models' gauge);
    likelihood = "pairs": n_fg | m ~ Binomial(m, ·) (`equilibrium`);
    likelihood = "auto" (default): "kernel" when the visits are true counts (a visits table,
    a run-store export, simulator output: `Transitions.convention == "explicit"`), "pairs"
    when they are an approximation (the paper's uniform N₀, under which a move count can exceed
    N₀; or the outgoing convention, which has no self steps by construction).

Parameters and priors. The likelihood factorises (`_kernel`): with ρ_f = X_ff / π_f the
remainder probability of f and S_f = Σ_g X_fg, it is Binomial(N_f, ρ_f) for the remainder
R_f times the reversible multinomial of f's M_f moves over its targets, X_fg / S_f, and
V_f = −log π_f = −log S_f + log(1 − ρ_f). The model is parameterised by (u, ρ) with
independent priors

    u_p ~ Normal(0, s), s = ``kernel_scale`` (10);   ρ_f ~ Beta(a, a), a = ``remainder_prior`` (1),

so ρ | data ~ Beta(R_f + a, M_f + a) exactly and independently of u: NUTS samples u alone
and each draw of u gets an exact Beta draw of ρ. Why these priors:
- the flat-ish Normal leaves the kernel's relative scales free: a common-scale (hierarchical)
  prior on u shrinks every conductance toward one value, which drags V of weakly measured
  states toward their neighbours' (measured: twice the RMSE of V against the peer matrix's
  truth); the scaling direction of each component (X → cX changes no T) is held by the prior
  alone, and V, reported centred, does not see it;
- a uniform prior on each remainder probability instead of a wide Normal on log X_ff: the
  latter is flat over a range of ~40 in log X_ff for a state that always moved (R_f = 0),
  which NUTS must cross at the likelihood's steep wall (divergences, E-BFMI 0.07, measured),
  and which puts its mass at remainder probabilities ≈ 0 or ≈ 1; Beta(1, 1) is the conjugate,
  exactly sampled, "every remainder probability equally likely" prior.

NUTS samples z with u = u* + B z, B Bᵀ ≈ H⁻¹ the incomplete-factor whitening (`_whiten`) of
the exact Hessian at the MAP (`KernelDensity.explicit_hessian`: one multinomial information
block per state). The posterior of u is log-concave (the likelihood is linear minus a
log-sum-exp), so the MAP is unique and its Hessian a good global scale. The ``map`` method
draws u from the Laplace approximation N(u*, H⁻¹) (`KernelDensity.laplace_draws`) and ρ
exactly.

The stored posterior holds ``V`` (state), ``log_conductance`` u (pair) and ``log_remainder``
r = log X_ff = log S_f + logit ρ_f (state): the whole kernel, for the kernel PPC and the dynamics. The pointwise
``log_likelihood`` stays the conditional pair binomial of V (the pair models' one), so PSIS-LOO
compares a kernel equilibrium fit with a pair non-equilibrium fit on the same observations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numba
import numpy as np
import pymc as pm
import xarray as xr

from detailed_balance.data import DataError, Transitions

from ._density import MapResult
from ._kernel import KernelDensity, parallel_fill
from ._kernel_op import jump_logp
from ._pairs import PairData
from ._whiten import Whitening, ilu_whitening

LIKELIHOODS = ("auto", "kernel", "pairs")


def resolve_likelihood(
    config: dict[str, Any], data: Transitions, nonequilibrium: bool
) -> tuple[str, str]:
    """(likelihood used, why) for a model configuration and data set; a `DataError` (shown
    as a message on the command line) when the asked-for likelihood cannot apply."""
    choice = config["likelihood"]
    if choice == "pairs":
        return "pairs", "asked for (likelihood='pairs')"
    if nonequilibrium:
        if choice == "kernel":
            raise DataError(
                "likelihood='kernel' is not available for the non-equilibrium model yet; use "
                "likelihood='pairs' (or 'auto')."
            )
        return "pairs", "the non-equilibrium model has only the pair likelihood so far"
    if config["V_prior"] != "wide":
        if choice == "kernel":
            raise DataError(
                "likelihood='kernel' puts its priors on the kernel (model_config kernel_scale); "
                f"V_prior={config['V_prior']!r} applies to the pair likelihood only."
            )
        return "pairs", f"V_prior={config['V_prior']!r} is a prior of the pair likelihood"
    if choice == "kernel":
        if data.convention != "explicit":
            raise DataError(
                f"likelihood='kernel' needs true visit counts, but these visits follow the "
                f"{data.convention!r} convention (an approximation); give a visits table or "
                "use likelihood='pairs'."
            )
        return "kernel", "asked for (likelihood='kernel')"
    if data.convention == "explicit":
        return "kernel", "the visits are true call counts: one multinomial per prompt state"
    return "pairs", (
        f"the visits follow the {data.convention!r} convention, an approximation the "
        "per-state multinomial cannot use"
    )


@dataclass(frozen=True, eq=False)
class PreparedKernel:
    """What `PairModel.prepare` derives for the kernel likelihood: the pair arrays, the numpy
    jump density (u only), its MAP, the whitening u = u* + B z (None without whitening), the
    Beta prior of the remainder probabilities and why this likelihood was chosen."""

    pairs: PairData
    density: KernelDensity
    map_result: MapResult
    whitening: Whitening | None
    reason: str
    remainder_prior: float = 1.0
    likelihood: str = "kernel"

    @property
    def llm(self) -> str:
        return self.pairs.llm


def prepare_kernel(
    pairs: PairData, config: dict[str, Any], whiten: bool, reason: str
) -> PreparedKernel:
    density = KernelDensity(pairs, scale=float(config["kernel_scale"]), gauge=0.0, jump=True)
    result = density.mode()
    white = None
    if whiten:
        if config["parameterization"] == "direct":
            white = replace(Whitening.identity(density.size), centre=result.theta.copy())
        else:
            hessian = density.explicit_hessian(result.theta)
            if hessian is None:  # hubs: Jacobi scaling by the exact diagonal
                white = _jacobi(density, result.theta)
            else:
                white = ilu_whitening(
                    hessian,
                    result.theta,
                    float(config["ilu_drop_tol"]),
                    float(config["ilu_fill"]),
                )
    return PreparedKernel(pairs, density, result, white, reason, float(config["remainder_prior"]))


def _jacobi(density: KernelDensity, theta: np.ndarray) -> Whitening:
    from ._kernel import _Hessian

    diagonal = _Hessian(density, theta, density._incidence()).diagonal()
    return replace(Whitening.identity(density.size), centre=theta.copy(), scale=diagonal**-0.5)


def kernel_coords(prepared: PreparedKernel, coords: dict[str, Any]) -> dict[str, Any]:
    return {**coords, "latent": np.arange(prepared.density.size)}


def build_kernel_model(prepared: PreparedKernel, coords: dict[str, Any]) -> pm.Model:
    """u = u* + B z; log p = Σ m u − Σ M log S − |u|² / 2s² (constants dropped), value and
    gradient in one fused numba Op (`_kernel_op.JumpPotential`)."""
    white, density = prepared.whitening, prepared.density
    if white is None:
        raise ValueError("build_model needs data prepared with whiten=True.")
    with pm.Model(coords=kernel_coords(prepared, coords)) as model:
        z = pm.Flat("theta_white", dims="latent")
        pm.Potential("log_density", jump_logp(z, white, density))
    return model


def theta_draws(prepared: PreparedKernel, posterior: xr.Dataset) -> np.ndarray:
    """u per (chain, draw) from the sampled whitened coordinates."""
    z = posterior["theta_white"].transpose("chain", "draw", "latent").to_numpy()
    return prepared.whitening.apply(z)


def kernel_posterior(
    prepared: PreparedKernel,
    u: np.ndarray,
    reference: str | None,
    coords: dict[str, Any],
    rng: np.random.Generator | None = None,
) -> xr.Dataset:
    """The stored variables from draws of u (chain, draw, P), each with an exact draw of the
    remainder probabilities ρ ~ Beta(R + a, M + a): V = −log S + log(1 − ρ), u and
    r = log S + logit ρ. Without `rng` the Beta draws are seeded by the u draws' bits (the
    same u give the same ρ)."""
    pairs, density = prepared.pairs, prepared.density
    if rng is None:
        rng = np.random.default_rng(int(np.float64(u.sum()).view(np.uint64)))
    chains, draws = u.shape[:2]
    a = prepared.remainder_prior
    rho = remainder_draws(density, a, chains * draws, rng)
    flat = np.ascontiguousarray(u.reshape(chains * draws, -1))
    v, r = _potential_and_remainder(flat, pairs.i, pairs.j, rho)
    del rho
    v, weights = pairs.report_gauge(v, reference)
    dims = ("chain", "draw")
    shape = (chains, draws, -1)
    out = {
        "V": ((*dims, "state"), v.reshape(shape)),
        "centring_weight": ("state", weights),
        "log_conductance": ((*dims, "pair"), u),
        "log_remainder": ((*dims, "state"), r.reshape(shape)),
    }
    return xr.Dataset(out, coords=coords)


def remainder_draws(
    density: KernelDensity, a: float, draws: int, rng: np.random.Generator
) -> np.ndarray:
    """(draws × K) exact draws of ρ_f ~ Beta(R_f + a, M_f + a), in parallel row blocks."""
    alpha, beta = density.stays + a, density.moves_out + a

    def fill(child, out):
        out[...] = child.beta(alpha, beta, size=out.shape)

    return parallel_fill(rng, draws, len(alpha), fill)


@numba.njit(parallel=True, cache=True)
def _potential_and_remainder(u, i, j, rho):
    """Per draw (row): S_f = Σ e^u over f's pairs, V = −log S + log(1 − ρ) and
    r = log S + log ρ − log(1 − ρ), in one pass (numpy's version: 4.4 s of temporaries for
    4,000 draws at paper scale)."""
    draws, k = rho.shape
    v = np.empty((draws, k))
    r = np.empty((draws, k))
    for d in numba.prange(draws):
        s = np.zeros(k)
        for p in range(u.shape[1]):
            x = np.exp(u[d, p])
            s[i[p]] += x
            s[j[p]] += x
        for f in range(k):
            log_s = np.log(s[f])
            stay = np.log1p(-rho[d, f])
            v[d, f] = stay - log_s
            r[d, f] = log_s + np.log(rho[d, f]) - stay
    return v, r


def kernel_laplace(
    prepared: PreparedKernel, draws: int, seed: int, reference: str | None, coords: dict[str, Any]
) -> xr.DataTree:
    """The ``map`` method: `draws` draws (one chain) from N(θ*, H⁻¹), plus the MAP's stats."""
    rng = np.random.default_rng(int(seed))
    result = prepared.map_result
    u = prepared.density.laplace_draws(result.theta, draws, rng)
    posterior = kernel_posterior(
        prepared,
        u[None],
        reference,
        {"chain": [0], "draw": np.arange(draws), **coords},
        rng,
    )
    stats = xr.Dataset(
        {
            "map_logp": result.logp,
            "map_iterations": result.iterations,
            "map_converged": result.converged,
        }
    )
    return xr.DataTree.from_dict({"/posterior": posterior, "/map": stats})


__all__ = [
    "LIKELIHOODS",
    "PreparedKernel",
    "build_kernel_model",
    "kernel_laplace",
    "kernel_posterior",
    "prepare_kernel",
    "resolve_likelihood",
    "theta_draws",
]
