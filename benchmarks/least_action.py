"""Least action: our vectorised fit vs the paper's algorithm written plainly (issue 2, §7).

Baseline ("the paper's algorithm, plainly"): one joint optimisation over every state, started
from the topological level of the SCC condensation shifted to zero mean, the summed softplus
action evaluated by a per-edge Python loop, its gradient by central differences (2 action
evaluations per state, h = 1e-5), scipy L-BFGS-B with gtol = 1e-7 and ftol = 0.

Ours: `detailed_balance.models.least_action` (pieces fitted jointly on their internal moves,
analytic vectorised gradient and sparse Hessian, Newton–CG to max|∂S_sum/∂V| ≤ 1e-9).

Three parts, all in one run:
1. subset: a small simulated data set with the paper's density (visits and degree per state),
   where the baseline really runs to its optimum. Times, action values on the finite part
   (moves inside strongly connected pieces, where the optimum exists), and a check of the
   extrapolation rule below against the measured baseline time.
2. paper scale (≈7,500 states, ≈50,000 moves, ≈20,000 distinct moves): the baseline would
   take hours, so it is extrapolated: time = (L-BFGS-B evaluations) × (one central-difference
   gradient + one action), where the evaluation count is what L-BFGS-B needs on the SAME joint
   problem, start and tolerances with the exact analytic gradient (a lower bound: noisy
   finite differences never need fewer), and one gradient's time is measured on 100 states'
   central differences and scaled to all states. Ours is timed directly.
3. 10× paper scale (75,000 states, ≈500,000 moves): our fit time and peak memory.

Run: `python benchmarks/least_action.py` (a few minutes) or `--quick` (a smoke run).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.sparse.csgraph import connected_components

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, max_rss_mb, peak_traced_mb, table, timed, timed_wall  # noqa: E402

from detailed_balance import simulate  # noqa: E402
from detailed_balance.models import least_action, summed_action  # noqa: E402
from detailed_balance.models.least_action import condensation_levels  # noqa: E402

# simulate() parameters that give the paper's density: 88,000 calls on 7,500 states with mean
# degree 4.5 → ≈50,000 moves (f ≠ g; the rest are rejections, i.e. visits without a move) in
# ≈20,500 distinct (f, g).
CALLS_PER_STATE = 88_000 / 7_500
MEAN_DEGREE = 4.5
BASELINE_GTOL = 1e-7
STEP = 1e-5


# -- the baseline, written plainly ------------------------------------------------------------
def baseline_action(v: np.ndarray, edges: list[tuple[int, int, float]]) -> float:
    """Σ w·softplus(−(V_f − V_g)), one edge at a time."""
    values = v.tolist()
    total = 0.0
    for f, g, w in edges:
        x = values[f] - values[g]
        total += w * (max(-x, 0.0) + math.log1p(math.exp(-abs(x))))
    return total


def baseline_gradient(
    v: np.ndarray, edges: list[tuple[int, int, float]], coordinates: range | None = None
) -> np.ndarray:
    """Central differences, one coordinate at a time (2 action evaluations each)."""
    grad = np.zeros(len(v))
    for k in coordinates if coordinates is not None else range(len(v)):
        old = v[k]
        v[k] = old + STEP
        up = baseline_action(v, edges)
        v[k] = old - STEP
        down = baseline_action(v, edges)
        v[k] = old
        grad[k] = (up - down) / (2 * STEP)
    return grad


def joint_problem(data):
    """All moves (i, j, w) and the paper's start: condensation level, shifted to zero mean."""
    moves = data.moves()
    i, j = moves["i"].to_numpy(), moves["j"].to_numpy()
    w = moves["rate"].to_numpy(float)
    n = data.n_states
    graph = data.count_matrix()
    labels = connected_components(graph, directed=True, connection="strong")[1]
    level = condensation_levels(labels, i, j)[labels].astype(float)
    return i, j, w, n, level - level.mean()


def lbfgsb(fun_grad, x0: np.ndarray):
    return minimize(
        fun_grad,
        x0,
        jac=True,
        method="L-BFGS-B",
        options={"gtol": BASELINE_GTOL, "ftol": 0.0, "maxiter": 20_000, "maxfun": 200_000},
    )


def run_baseline(data):
    """The paper's algorithm, plainly, to its optimum; returns V, result, evaluations."""
    i, j, w, _, x0 = joint_problem(data)
    edges = list(zip(i.tolist(), j.tolist(), w.tolist(), strict=True))
    evaluations = 0

    def fun_grad(v: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations
        evaluations += 1
        v = v.copy()
        return baseline_action(v, edges), baseline_gradient(v, edges)

    result = lbfgsb(fun_grad, x0)
    return result.x, result, evaluations


def analytic_evaluations(data) -> tuple[int, object]:
    """L-BFGS-B evaluations on the baseline's joint problem with the exact gradient."""
    i, j, w, _, x0 = joint_problem(data)
    result = lbfgsb(lambda v: summed_action(v, i, j, w), x0)
    return int(result.nfev), result


def finite_part(data, potentials: np.ndarray, pieces: np.ndarray) -> tuple[float, float]:
    """Summed action over moves inside pieces, and max|gradient| there (the finite problem)."""
    moves = data.moves()
    i, j = moves["i"].to_numpy(), moves["j"].to_numpy()
    inside = (pieces[i] == pieces[j]) & (pieces[i] >= 0)
    value, grad = summed_action(potentials, i[inside], j[inside], moves["rate"].to_numpy()[inside])
    return value, float(np.max(np.abs(grad[pieces >= 0])))


def main_piece_gap(ours, potentials: np.ndarray) -> float:
    """Max |V_ours − V_other| on the main piece, both centred there."""
    main = (ours.piece == ours.main_piece).to_numpy()
    a = ours.potentials.to_numpy()[main]
    b = potentials[main]
    return float(np.max(np.abs((a - a.mean()) - (b - b.mean()))))


def describe(data) -> str:
    moves = data.moves()
    return (
        f"{data.n_states:,} states, {int(moves['count'].sum()):,} moves "
        f"({len(moves):,} distinct), {int(data.counts['count'].sum()):,} calls"
    )


# -- the three parts ----------------------------------------------------------------------------
def subset(n_states: int, seed: int) -> dict:
    data = simulate(
        n_states, round(n_states * CALLS_PER_STATE), mean_degree=MEAN_DEGREE, seed=seed
    ).transitions
    print(f"\n[1] subset: {describe(data)}")
    ours_time, ours = timed(lambda: least_action(data), repeat=5)
    base_time, (v_base, base, evaluations) = timed(lambda: run_baseline(data))
    pieces = ours.piece.to_numpy()
    base_value, base_grad = finite_part(data, v_base, pieces)
    n_eval, _ = analytic_evaluations(data)
    edges, x0 = _edges(data), joint_problem(data)[4]
    eval_time, _ = timed(lambda: baseline_action(x0, edges), repeat=20)
    predicted = n_eval * (2 * data.n_states + 1) * eval_time
    print(f"  ours     {ours_time * 1e3:9.1f} ms CPU  {ours.n_iter} Newton steps, {ours.message}")
    print(
        f"  baseline {base_time:9.1f} s CPU   {base.nit} iterations, {evaluations} gradients, "
        f"{base.message}"
    )
    print(f"  speed-up {base_time / ours_time:,.0f}x (measured)")
    print(
        f"  finite-part action: ours {ours.action_sum:.10f} (max|grad| {ours.gradient_max:.1e}),"
        f" baseline {base_value:.10f} (max|grad| {base_grad:.1e}); "
        f"max|ΔV| on the main piece {main_piece_gap(ours, v_base):.1e}"
    )
    print(
        f"  extrapolation rule check: predicted baseline {predicted:.1f} s from {n_eval} exact-"
        f"gradient evaluations, measured {base_time:.1f} s (ratio {base_time / predicted:.2f})"
    )
    return {
        "data": f"subset, {data.n_states} states, {len(data.moves())} distinct moves",
        "baseline": f"{base_time:.1f} s (measured)",
        "ours": f"{ours_time * 1e3:.1f} ms",
        "speed-up": f"{base_time / ours_time:,.0f}×",
        "finite-part S (ours / baseline)": f"{ours.action:.6f} / {base_value / data.n_states:.6f}",
    }


def _edges(data) -> list[tuple[int, int, float]]:
    i, j, w, _, _ = joint_problem(data)
    return list(zip(i.tolist(), j.tolist(), w.tolist(), strict=True))


def paper_scale(n_states: int, seed: int, repeat: int, label: str) -> dict:
    data = simulate(
        n_states, round(n_states * CALLS_PER_STATE), mean_degree=MEAN_DEGREE, seed=seed
    ).transitions
    print(f"\n[2] {label}: {describe(data)}")
    ours_time, ours = timed(lambda: least_action(data), repeat=repeat)
    edges = _edges(data)
    x0 = joint_problem(data)[4]
    eval_time, _ = timed(lambda: baseline_action(x0, edges), repeat=10)
    sample = range(min(100, data.n_states))
    part_time, _ = timed(lambda: baseline_gradient(x0.copy(), edges, sample))
    grad_time = part_time * data.n_states / len(sample)
    n_eval, exact = analytic_evaluations(data)
    estimate = n_eval * (grad_time + eval_time)
    exact_value, exact_grad = finite_part(data, exact.x, ours.piece.to_numpy())
    print(f"  ours     {ours_time:9.3f} s CPU  {ours.n_iter} Newton steps, {ours.message}")
    print(
        f"  baseline one action {eval_time * 1e3:.1f} ms, one central-difference gradient "
        f"{grad_time:.0f} s (2·{data.n_states} actions: {2 * data.n_states * eval_time:.0f} s)"
    )
    print(
        f"  baseline needs ≥ {n_eval} evaluations (L-BFGS-B with the exact gradient on the same "
        f"joint problem: {exact.nit} iterations, {exact.message})"
    )
    print(
        f"  baseline estimate ≥ {estimate / 3600:.1f} h → speed-up ≥ {estimate / ours_time:,.0f}x"
    )
    print(
        f"  finite-part action: ours {ours.action_sum:.10f} (max|grad| {ours.gradient_max:.1e}), "
        f"L-BFGS-B exact-gradient joint fit {exact_value:.10f} (max|grad| {exact_grad:.1e}); "
        f"max|ΔV| on the main piece {main_piece_gap(ours, exact.x):.1e}"
    )
    return {
        "data": f"{label}, {describe(data)}",
        "baseline": f"≥ {estimate / 3600:.1f} h (extrapolated)",
        "ours": f"{ours_time:.2f} s",
        "speed-up": f"≥ {estimate / ours_time:,.0f}×",
        "finite-part S (ours / baseline)": (
            f"{ours.action:.6f} / {exact_value / data.n_states:.6f} (exact-gradient L-BFGS-B)"
        ),
    }


def ten_x(n_states: int, seed: int, repeat: int, label: str) -> dict:
    data = simulate(
        n_states, round(n_states * CALLS_PER_STATE), mean_degree=MEAN_DEGREE, seed=seed
    ).transitions
    data.moves()  # the view is cached on the data; time the fit itself
    print(f"\n[3] {label}: {describe(data)}")
    fit_time, result = timed(lambda: least_action(data), repeat=repeat)
    wall_time, _ = timed_wall(lambda: least_action(data), repeat=repeat)
    fresh = simulate(
        n_states, round(n_states * CALLS_PER_STATE), mean_degree=MEAN_DEGREE, seed=seed
    ).transitions
    cold_time, _ = timed_wall(lambda: least_action(fresh))
    peak, _ = peak_traced_mb(lambda: least_action(data))
    print(
        f"  ours {fit_time:.2f} s CPU, {wall_time:.2f} s wall (medians of {repeat}; "
        f"{cold_time:.2f} s wall on fresh data, building its moves/pairs views), "
        f"{result.n_iter} Newton steps, max|grad| {result.gradient_max:.1e}, "
        f"converged={result.converged}"
    )
    print(f"  peak traced memory of the fit {peak:.0f} MB; process max RSS {max_rss_mb():.0f} MB")
    print(f"  {int(result.bounded.sum()):,} bounded states in {result.n_pieces:,} pieces")
    return {
        "data": f"{label}, {describe(data)}",
        "baseline": "–",
        "ours": f"{fit_time:.2f} s ({cold_time:.2f} s wall, fresh data), peak {peak:.0f} MB",
        "speed-up": "–",
        "finite-part S (ours / baseline)": f"{result.action:.6f} / –",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    repeat = 1 if args.quick else 3
    print(f"least-action benchmark ({'quick' if args.quick else 'full'}), {machine()}")
    rows = [
        subset(50 if args.quick else 150, args.seed),
        paper_scale(round(7_500 * scale), args.seed, repeat, f"{scale:g}x paper scale"),
        ten_x(round(75_000 * scale), args.seed, repeat, f"{10 * scale:g}x paper scale"),
    ]
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
