"""Simulated panels of LLMs with known landscapes and temperatures (ground truth for comparing).

Each simulated LLM is a Metropolis kernel (`kernels.metropolis_rates`) on one shared random
neighbour graph: T(f→g) = q · min(1, exp(β (V_f − V_g))) for neighbours, q = 1 / max degree, the rest of each row is "escape"
(rejected or invalid answers). It obeys detailed balance exactly with respect to βV, so an LLM
at inverse temperature β on landscape V is the reference LLM on landscape βV. Every state is
used as the prompt the same number of times (the paper's "uniform" visits), and each source's
calls are one multinomial draw, vectorised over all sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from detailed_balance.data import Transitions

from .kernels import metropolis_rates


@dataclass
class Panel:
    """Simulated data of several LLMs plus the truth behind it."""

    data: Transitions
    potentials: pd.DataFrame  # index state, one column per LLM: that LLM's V (reference units)
    betas: pd.Series  # index llm: inverse temperature
    landscapes: pd.Series  # index llm: which landscape the LLM descends (0, 1, ...)


def neighbour_graph(n_states: int, degree: int, rng: np.random.Generator) -> np.ndarray:
    """Undirected edges (i < j) of a connected random graph: a ring plus random chords."""
    ring = np.stack([np.arange(n_states), (np.arange(n_states) + 1) % n_states], axis=1)
    n_chords = max(0, n_states * (degree - 2) // 2)
    chords = rng.integers(0, n_states, size=(n_chords, 2))
    edges = np.concatenate([ring, chords])
    edges = edges[edges[:, 0] != edges[:, 1]]
    edges = np.sort(edges, axis=1)
    return np.unique(edges, axis=0)


def metropolis_kernel(potential: np.ndarray, edges: np.ndarray, beta: float) -> np.ndarray:
    """Dense T (n × n) with T_fg = q·min(1, e^{β(V_f − V_g)}) on the graph's edges."""
    n = len(potential)
    degree = np.bincount(edges.ravel(), minlength=n)
    common = np.full(n, max(1, degree.max()))  # one proposal degree for all: q = 1/max degree
    src, dst, rate = metropolis_rates(
        np.asarray(potential, dtype=float),
        edges[:, 0],
        edges[:, 1],
        degree=common,
        beta=beta,
        log_space=False,
    )
    kernel = np.zeros((n, n))
    kernel[src, dst] = rate
    return kernel


def sample_counts(
    kernel: np.ndarray, visits: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial counts per source row (last category = escape): ((source, target) rows, n)."""
    escape = np.clip(1.0 - kernel.sum(axis=1), 0.0, 1.0)
    probs = np.concatenate([kernel, escape[:, None]], axis=1)
    probs /= probs.sum(axis=1, keepdims=True)
    draws = rng.multinomial(visits.astype(np.int64), probs)[:, :-1]
    src, dst = np.nonzero(draws)
    return np.stack([src, dst], axis=1), draws[src, dst]


def simulate_panel(
    betas: Mapping[str, float],
    *,
    landscapes: Mapping[str, int] | None = None,
    n_states: int = 250,
    visits: int = 160,
    degree: int = 8,
    sigma_v: float = 1.0,
    seed: int = 0,
) -> Panel:
    """Transitions of several simulated LLMs on a shared state space.

    betas: LLM name → inverse temperature. landscapes: LLM name → landscape id (default 0 for
    all); LLMs with the same id descend the same V (drawn N(0, sigma_v²)), others an independent
    one. Every state is the prompt `visits` times per LLM.
    """
    rng = np.random.default_rng(seed)
    landscapes = dict(landscapes or {})
    names = list(betas)
    ids = pd.Series({name: int(landscapes.get(name, 0)) for name in names}, name="landscape")
    fields = {k: sigma_v * rng.standard_normal(n_states) for k in sorted(set(ids))}
    edges = neighbour_graph(n_states, degree, rng)
    states = np.array([f"s{k:04d}" for k in range(n_states)], dtype=object)
    counts, visit_rows = [], []
    for name in names:  # a loop over LLMs (a handful), never over states or edges
        kernel = metropolis_kernel(fields[ids[name]], edges, float(betas[name]))
        index, n = sample_counts(kernel, np.full(n_states, visits), rng)
        counts.append(
            pd.DataFrame(
                {"llm": name, "source": states[index[:, 0]], "target": states[index[:, 1]]}
            ).assign(count=n)
        )
        visit_rows.append(pd.DataFrame({"llm": name, "source": states, "visits": float(visits)}))
    data = Transitions.from_counts(
        pd.concat(counts, ignore_index=True), pd.concat(visit_rows, ignore_index=True)
    )
    potentials = pd.DataFrame({name: fields[ids[name]] for name in names}, index=states)
    potentials.index.name = "state"
    return Panel(data, potentials, pd.Series(dict(betas), name="beta", dtype=float), ids)
