"""The paper's route for features: θ minimising the least-action objective S[V = x·θ]
(`feature_least_action`), numpy and SciPy only (no PyMC)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy.optimize import minimize

from detailed_balance.data import DataError, Transitions
from detailed_balance.data.names import as_names
from detailed_balance.features import FeatureSource, Standardiser, describe_source, resolve_features

from .least_action import kernel_values


# -- the paper's route: θ by least action ---------------------------------------------------------
@dataclass
class FeatureLeastAction:
    """θ minimising the paper's action with V = x·θ (see `feature_least_action`)."""

    theta: pd.Series  # per unit of the original feature
    theta_std: pd.Series  # per standard deviation of the feature
    potentials: pd.Series  # x·θ per state (centred over the featured states)
    action: float  # (1/#states) Σ w K(V_f − V_g) at the optimum
    converged: bool
    iterations: int
    gradient_max: float
    runaway: bool  # some direction of θ keeps lowering the action: θ is not finite there
    dropped: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """``feature, theta, theta_std``."""
        return pd.DataFrame(
            {
                "feature": self.theta.index,
                "theta": self.theta.to_numpy(),
                "theta_std": self.theta_std.to_numpy(),
            }
        )


def feature_least_action(
    data: Transitions,
    features: FeatureSource,
    *,
    llm: str | None = None,
    kernel: str = "softplus",
    ridge: float = 0.0,
    maxiter: int = 20_000,
    gtol: float = 1e-9,
) -> FeatureLeastAction:
    """θ = argmin S[x·θ], S = (1/#states) Σ_{f→g} min(1, n_fg/N₀(f)) K(V_f − V_g) (PAPER.md).

    The action is convex in θ (K is convex and V is linear in θ), so L-BFGS-B with the analytic
    gradient ∂S/∂θ = Zᵀ ∂S/∂V finds the global minimum; cost O(moves × features) per step.
    Features are standardised over the states that move or are moved to; θ is returned in
    original units. Moves whose source has no known visits are left out (no rate). With no
    regulariser (the paper's choice, ``ridge=0``) θ runs off to infinity along any feature
    direction that points downhill along every move it changes (the feature analogue of an
    unbounded potential): the optimiser stops where the kernel has flattened, and ``runaway``
    says so (see `_runaway`); a small ``ridge`` (penalty ½ ridge |θ*|²) keeps θ finite.
    """
    moves = data.moves(_llm(data, llm))
    rate = moves["rate"].to_numpy(float)
    keep = np.isfinite(rate) & (rate > 0)
    moves = moves[keep]
    if moves.empty:
        raise DataError("no move with a known visit count; the action is empty.")
    used, inverse = np.unique(
        np.concatenate([moves["i"].to_numpy(), moves["j"].to_numpy()]), return_inverse=True
    )
    src, dst = inverse[: len(moves)], inverse[len(moves) :]
    names = as_names(data.states.to_numpy()[used])
    table = resolve_features(features, names)
    std = Standardiser.fit(table)
    z = std.transform(table)
    weight = moves["rate"].to_numpy(float)
    n_states = data.n_states

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v = z @ theta
        value, slope, _ = kernel_values(v[src] - v[dst], kernel)
        flux = weight * slope
        grad_v = np.bincount(src, flux, len(used)) - np.bincount(dst, flux, len(used))
        total = float(weight @ value) + 0.5 * ridge * float(theta @ theta)
        return total, z.T @ grad_v + ridge * theta

    result = minimize(
        objective,
        np.zeros(z.shape[1]),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": maxiter, "ftol": 1e-15, "gtol": gtol},
    )
    theta_std = result.x
    grad = objective(theta_std)[1]
    v = z @ theta_std
    runaway = _runaway(z[src] - z[dst], weight, v[src] - v[dst], kernel, ridge)
    feats = list(std.names)
    return FeatureLeastAction(
        theta=pd.Series(std.to_original(theta_std), index=feats, name="theta"),
        theta_std=pd.Series(theta_std, index=feats, name="theta_std"),
        potentials=pd.Series(v - v.mean(), index=names, name="potential"),
        action=float(result.fun - 0.5 * ridge * float(theta_std @ theta_std)) / n_states,
        converged=bool(np.max(np.abs(grad)) <= max(gtol, 1e-6) * max(1.0, weight.sum())),
        iterations=int(result.nit),
        gradient_max=float(np.max(np.abs(grad))),
        runaway=runaway,
        dropped=std.dropped,
        settings={"kernel": kernel, "ridge": ridge, "features": describe_source(features)},
    )


def _runaway(edge_z: np.ndarray, weight: np.ndarray, x: np.ndarray, kernel: str, ridge: float):
    """True when the action is flat in some direction of θ* at the optimum: its curvature
    there, relative to the curvature the same direction has with every move at x = 0 (where
    K″ = 1/4 for both kernels), is below 1e-6 — the kernel has flattened because θ ran off
    (or the direction changes no move at all)."""
    reference = edge_z.T @ ((0.25 * weight)[:, None] * edge_z)
    eig0 = np.linalg.eigvalsh(reference)
    if eig0[0] <= 1e-12 * max(eig0[-1], 1e-300):
        return True
    curvature = kernel_values(x, kernel)[2] * weight
    hessian = edge_z.T @ (curvature[:, None] * edge_z) + ridge * np.eye(edge_z.shape[1])
    chol = np.linalg.cholesky(reference)
    scaled = sla.solve_triangular(
        chol, sla.solve_triangular(chol, hessian, lower=True).T, lower=True
    )
    return bool(np.linalg.eigvalsh(0.5 * (scaled + scaled.T))[0] < 1e-6)


def _llm(data: Transitions, llm: str | None) -> str:
    if llm is None:
        if len(data.llms) != 1:
            raise DataError(f"the data has several LLMs ({', '.join(data.llms)}); pass llm=NAME.")
        return data.llms[0]
    return llm


__all__ = ["FeatureLeastAction", "feature_least_action"]
