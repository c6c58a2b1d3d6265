"""Priors on the log-conductances u of the kernel model, screened on designs with a known V.

The Bayesian kernel model (`detailed_balance.models._kernel_model`) samples the jump chain's
log-conductances u (one per modelled pair) and draws each remainder probability exactly,
ρ_f ~ Beta(R_f + 1, M_f + 1); V_f = −log S_f + log(1 − ρ_f), S_f = Σ_g exp(u_fg). Its prior is
u ~ Normal(0, s) per pair. This script swaps that prior for others and measures the 90%
coverage of V on the bounded states and the RMSE of the posterior mean (truth centred in the
fit's gauge), by MAP + Laplace (dense Hessian, exact; ≤ 8,000 coordinates) or by NUTS
(``--nuts``: nutpie, whitened by the incomplete factor of the exact Hessian at the MAP, as
the package does), and, on the peer designs, deeptime's reversible MLE RMSE on the same data.

Priors (``--prior``, several allowed; the likelihood never sees a common shift of u, so every
prior's location is free up to that shift):

- ``normal:s``: u_p ~ N(0, s) independently (the package's prior, kernel_scale = s);
- ``t:s:nu``: u_p ~ Student-t(ν, 0, s);
- ``logs:sig``: normal:10 plus log S_f ~ N(0, σ) per state (a prior on the jump chain's
  stationary weights, i.e. on V up to the remainder term);
- ``additive:sig:tau``: u_p ~ N(w_f + w_g, σ) with a level w_f ~ N(0, τ) per state (sampled
  with u): conductances of one state share its level, so a weakly measured conductance is
  shrunk toward what its two states' other pairs say, not toward the global mean.

    python benchmarks/kernel_prior_study.py --design sparse peer30 peer300 peer3000 \
        --prior normal:10 additive:10:10 [--nuts]
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
import scipy.linalg as sl  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from scipy.optimize import minimize  # noqa: E402


class StudyDensity:
    """−log posterior of the jump chain in θ = [u (P), w (K, additive prior only)]."""

    def __init__(self, pairs, prior: str) -> None:
        from detailed_balance.models._kernel import KernelDensity

        kind, *numbers = prior.split(":")
        self.kind, self.numbers = kind, [float(x) for x in numbers]
        self.pairs = pairs
        self.lik = KernelDensity(pairs, scale=None, gauge=0.0, jump=True)
        self.p, self.k = pairs.n_pairs, pairs.n_states
        self.a = self.lik._incidence().tocsr()  # K × P: state × its pairs
        self.z = self.a.T.tocsr()  # P × K: pair × its two states
        self.levels = self.k if kind == "additive" else 0
        if kind not in ("normal", "t", "logs", "additive"):
            raise SystemExit(f"unknown prior {prior!r}")

    @property
    def size(self) -> int:
        return self.p + self.levels

    # separable part on the residual e (u itself, or u − w_f − w_g): value, gradient, curvature
    def _residual_prior(self, e: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        if self.kind == "t":
            s, nu = self.numbers
            q = 1 + (e / s) ** 2 / nu
            curv = (nu + 1) / (nu * s**2) * (1 - (e / s) ** 2 / nu) / q**2
            return -0.5 * (nu + 1) * float(np.log(q).sum()), -(nu + 1) * e / (nu * s**2 * q), curv
        s = 10.0 if self.kind == "logs" else self.numbers[0]
        return -0.5 * float(e @ e) / s**2, -e / s**2, np.full_like(e, 1 / s**2)

    def _split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u, w = theta[: self.p], theta[self.p :]
        return u, (u - self.z @ w if self.levels else u)

    def logp_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        u, e = self._split(theta)
        logp, grad_u = self.lik.logp_grad(u)
        value, grad_e, _ = self._residual_prior(e)
        logp += value
        grad = np.concatenate([grad_u + grad_e, -(self.z.T @ grad_e) if self.levels else []])
        if self.levels:
            tau = self.numbers[1]
            w = theta[self.p :]
            logp -= 0.5 * float(w @ w) / tau**2
            grad[self.p :] -= w / tau**2
        if self.kind == "logs":
            x = np.exp(u)
            s = self.a @ x
            log_s = np.log(s)
            logp -= 0.5 * float(log_s @ log_s) / self.numbers[0] ** 2
            grad[: self.p] -= x * (self.a.T @ (log_s / (self.numbers[0] ** 2 * s)))
        return logp, grad

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """−∇² log p, dense (the study's designs have ≤ 8,000 coordinates)."""
        u, e = self._split(theta)
        h = np.zeros((self.size, self.size))
        h[: self.p, : self.p] = self.lik.explicit_hessian(u).toarray()
        curv = self._residual_prior(e)[2]
        if self.levels:
            g = sp.hstack([sp.identity(self.p), -self.z]).tocsr()
            h += (g.T @ sp.diags(curv) @ g).toarray()
            h[self.p :, self.p :] += np.eye(self.k) / self.numbers[1] ** 2
        else:
            h[np.diag_indices(self.p)] += curv
        if self.kind == "logs":
            sig2 = self.numbers[0] ** 2
            x = np.exp(u)
            s = self.a @ x
            q = (sp.diags(1 / s) @ self.a @ sp.diags(x)).toarray()  # K × P, ∇ log S_f
            c = np.log(s) / sig2
            h[: self.p, : self.p] += q.T @ ((1 / sig2 - c)[:, None] * q)
            h[np.diag_indices(self.p)] += c @ q
        return h

    def mode(self) -> np.ndarray:
        u0 = self.lik.initial()
        w0 = 0.5 * (self.z.T @ u0) / np.maximum(np.diff(self.a.indptr), 1)
        theta = np.concatenate([u0, w0[: self.levels]])
        gtol = 1e-8 * max(1.0, float(np.sqrt(self.lik.calls.sum())))

        def objective(t):
            logp, grad = self.logp_grad(t)
            return -logp, -grad

        result = minimize(
            objective,
            theta,
            jac=True,
            hessp=lambda t, v: _fd_hessp(self, t, v),
            method="trust-krylov",
            options={"maxiter": 3000, "gtol": gtol},
        )
        return result.x

    def laplace(self, theta: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
        """u draws (draws × P) from N(θ*, H⁻¹)."""
        factor = np.linalg.cholesky(self.hessian(theta))
        delta = sl.solve_triangular(factor.T, rng.standard_normal((self.size, draws)))
        return (theta[:, None] + delta).T[:, : self.p]


def _fd_hessp(density: StudyDensity, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
    """H v by a central difference of the exact gradient (for the MAP's Newton steps)."""
    eps = 1e-6 / max(1.0, float(np.abs(v).max()))
    g1 = density.logp_grad(theta + eps * v)[1]
    g0 = density.logp_grad(theta - eps * v)[1]
    return -(g1 - g0) / (2 * eps)


def potential_draws(density: StudyDensity, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """V per draw with an exact Beta(R + 1, M + 1) draw of each remainder probability."""
    log_s = np.log(np.exp(u) @ density.a.T)
    lik = density.lik
    rho = rng.beta(lik.stays + 1.0, lik.moves_out + 1.0, size=log_s.shape)
    return density.pairs.centre(-log_s + np.log1p(-rho))


def nuts_draws(density: StudyDensity, theta: np.ndarray, seed: int, draws: int, tune: int):
    """u draws (chains·draws × P) by nutpie, and (max R-hat input, divergences, steps)."""
    import nutpie
    import pymc as pm
    import pytensor.tensor as pt

    from detailed_balance.models._whiten import ilu_whitening

    pairs, p, k = density.pairs, density.p, density.k
    white = ilu_whitening(sp.csc_matrix(density.hessian(theta)), theta, 0.03, 5.0)
    with pm.Model() as model:
        z = pm.Flat("z", shape=density.size)
        t = white.centre + white.deviation(z)
        u = t[:p]
        x = pt.exp(u)
        s = pt.zeros(k)
        s = pt.inc_subtensor(s[pairs.i], x)
        s = pt.inc_subtensor(s[pairs.j], x)
        logp = pt.dot(density.lik.m, u) - pt.dot(density.lik.calls, pt.log(s))
        if density.kind == "additive":
            sigma, tau = density.numbers
            w = t[p:]
            e = u - w[pairs.i] - w[pairs.j]
            logp -= 0.5 * pt.sum(e**2) / sigma**2 + 0.5 * pt.sum(w**2) / tau**2
        elif density.kind == "normal":
            logp -= 0.5 * pt.sum(u**2) / density.numbers[0] ** 2
        elif density.kind == "t":
            scale, nu = density.numbers
            logp -= 0.5 * (nu + 1) * pt.sum(pt.log1p((u / scale) ** 2 / nu))
        else:
            logp -= (
                0.5 * pt.sum(u**2) / 100.0 + 0.5 * pt.sum(pt.log(s) ** 2) / density.numbers[0] ** 2
            )
        pm.Potential("logp", logp)
    compiled = nutpie.compile_pymc_model(model, backend="numba")
    tree = nutpie.sample(
        compiled,
        draws=draws,
        tune=tune,
        chains=4,
        cores=2,
        seed=seed,
        progress_bar=False,
        window_switch_freq=10_000,
        early_window_switch_freq=10_000,
    )
    zz = tree["posterior"]["z"].transpose("chain", "draw", ...).to_numpy()
    stats = tree["sample_stats"]
    u = white.apply(zz.reshape(-1, density.size))[:, :p]
    return u, int(stats["diverging"].sum()), float(stats["n_steps"].mean())


def deeptime_rmse(name: str, seed: int) -> float:
    from deeptime.markov.msm import MaximumLikelihoodMSM
    from kernel import _peer, _peer_data

    from detailed_balance.simulation import stationary_distribution

    peer = _peer()
    truth = -np.log(stationary_distribution(peer))
    _, _, index, counts = _peer_data(peer, int(name.removeprefix("peer")), seed)
    msm = MaximumLikelihoodMSM(reversible=True).fit_from_counts(counts).fetch_model()
    active = np.asarray(msm.count_model.state_symbols)
    d = -np.log(msm.stationary_distribution) - truth[index][active]
    return float(np.sqrt(np.mean((d - d.mean()) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--design", nargs="+", default=["sparse", "peer30", "peer300", "peer3000"])
    parser.add_argument("--prior", nargs="+", default=["normal:10", "additive:10:10"])
    parser.add_argument("--nuts", action="store_true")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from kernel_model import design

    from detailed_balance.models._pairs import pair_data

    method = "nuts" if args.nuts else "laplace"
    print(
        f"{'design':>9s} {'prior':>16s} {'method':>7s} {'coverage':>8s} {'cov_w':>6s} {'rmse':>6s} "
        f"{'deeptime':>8s} {'div':>4s} {'steps':>5s} {'seconds':>7s}",
        flush=True,
    )
    for name in args.design:
        data, truth = design(name, args.seed)
        pairs = pair_data(data)
        true_v = pairs.centre(truth.reindex(pairs.states).to_numpy(float))
        reference = deeptime_rmse(name, args.seed) if name.startswith("peer") else float("nan")
        for prior in args.prior:
            start = time.perf_counter()
            density = StudyDensity(pairs, prior)
            theta = density.mode()
            rng = np.random.default_rng(args.seed + 1)
            divergent, steps = 0, float("nan")
            if args.nuts:
                u, divergent, steps = nuts_draws(
                    density, theta, args.seed + 1, args.draws, args.tune
                )
            else:
                u = density.laplace(theta, args.draws * 4, rng)
            v = potential_draws(density, u, rng)
            lo, hi = np.quantile(v, [0.05, 0.95], axis=0)
            b = pairs.bounded
            cover = float(np.mean((lo[b] <= true_v[b]) & (true_v[b] <= hi[b])))
            rmse = float(np.sqrt(np.mean((v.mean(axis=0) - true_v)[b] ** 2)))
            # the same in a precision-weighted gauge (weights ∝ 1 / posterior variance of V),
            # which the few heavy-tailed, weakly determined states cannot shift
            w = b / v.var(axis=0)
            w /= w.sum()
            vw, tw = v - (v @ w)[:, None], true_v - true_v @ w
            lo, hi = np.quantile(vw, [0.05, 0.95], axis=0)
            cover_w = float(np.mean((lo[b] <= tw[b]) & (tw[b] <= hi[b])))
            print(
                f"{name:>9s} {prior:>16s} {method:>7s} {cover:8.3f} {cover_w:6.3f} {rmse:6.3f} "
                f"{reference:8.3f} {divergent:4d} {steps:5.1f} "
                f"{time.perf_counter() - start:7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
