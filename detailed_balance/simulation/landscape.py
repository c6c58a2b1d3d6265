"""Ground-truth simulator: transition counts from a landscape whose potential V is known.

Two entry points share one sampler:

* `simulate` builds n states with known V on a sparse random graph with heavy-tailed degrees
  and a generalised Metropolis–Hastings kernel that satisfies detailed balance *exactly* with
  respect to π ∝ exp(−V) (optionally broken by a known antisymmetric drive A), then counts
  LLM-like calls on it.
* `simulate_from_matrix` samples counts from any given row-stochastic matrix; its truth is
  V = −log π with π the matrix's stationary distribution (`load_peer_matrix` reads the dense
  text matrices of other projects, e.g. deeptime's exactly reversible 251×251 test matrix).

The truth, precisely. For every graph edge f–g,

    log T(f→g) − log T(g→f) = V_f − V_g + A_fg,        A_fg = −A_gf,

so with ``drive=0`` the kernel is reversible with π_f ∝ exp(−V_f), and the loop affinity of a
cycle f→g→h→f is A_fg + A_gh + A_hf = Σ log T(forward) − Σ log T(backward) (V cancels around a
loop). With a drive the stationary distribution is no longer exp(−V); `Simulation.stationary`
is then computed from the kernel. A call that is rejected (the self step, probability
1 − Σ_{g≠f} T(f→g)) is a visit of f without a move, like an invalid or repeated LLM answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from detailed_balance.data import DEFAULT_LLM, Transitions
from detailed_balance.data.transitions import normalise_visits

from .kernels import (
    _as_stochastic,
    _boltzmann,
    _graph,
    _mh_kernel,
    _sample,
    stationary_distribution,
)

Allocation = Literal["uniform", "chain"]
PotentialSpec = Literal["normal", "skewed"] | np.ndarray | list | pd.Series

# Lognormal shape of the "skewed" landscape: skewness ≈ 3.7, so a few states sit far uphill.
_SKEW_SIGMA = 0.8


@dataclass
class Simulation:
    """A simulated data set and the truth it was drawn from.

    Attributes
    ----------
    transitions:
        The counted calls as `Transitions` with an explicit visits table (every call counts as
        a visit of its source, rejections included; self rows are kept in ``counts``).
    potential:
        True V per state (pd.Series indexed by state name, mean 0, units of kT).
    drive:
        ``source, target, drive``: A_fg for both directions of every graph edge (A_gf = −A_fg);
        all zero for a reversible kernel.
    kernel:
        The transition matrix T (scipy.sparse CSR, states in `potential.index` order, diagonal =
        probability of a call that does not move).
    graph:
        The undirected edges once each: ``source, target, i, j`` with i < j.
    visits:
        Calls per state (aligned with `potential.index`; zero for never-prompted states).
    settings:
        The arguments the data was generated with (for provenance).
    """

    transitions: Transitions
    potential: pd.Series
    drive: pd.DataFrame
    kernel: sp.csr_matrix
    graph: pd.DataFrame
    visits: np.ndarray
    settings: dict = field(default_factory=dict)
    _stationary: np.ndarray | None = field(default=None, repr=False)
    _drive_index: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    # -- truth -------------------------------------------------------------------------------
    @property
    def states(self) -> pd.Index:
        """All simulated state names (sorted; a superset of `transitions.states`)."""
        return self.potential.index

    @property
    def stationary(self) -> pd.Series:
        """Stationary distribution π of `kernel` (exp(−V)/Z when reversible), by state."""
        if self._stationary is None:
            guess = _boltzmann(self.potential.to_numpy())
            self._stationary = stationary_distribution(self.kernel, guess)
        return pd.Series(self._stationary, index=self.states, name="stationary")

    @property
    def driven(self) -> bool:
        """True when some pair has a non-zero drive (the kernel breaks detailed balance)."""
        # 1e-9: a matrix that is reversible up to rounding (e.g. a peer's P) is not "driven".
        return bool(np.any(np.abs(self.drive["drive"].to_numpy()) > 1e-9))

    def truth_table(self) -> pd.DataFrame:
        """``state, potential``: the true V (mean 0), as written to ``truth.csv``."""
        return pd.DataFrame(
            {"state": self.states.to_numpy(dtype=object), "potential": self.potential.to_numpy()}
        )

    def _drive_lookup(self, sources, targets) -> np.ndarray:
        """A_fg for directed edges given by state names; a non-edge is an error."""
        n = len(self.states)
        i = self._positions(sources)
        j = self._positions(targets)
        codes = i.astype(np.int64) * n + j
        if self._drive_index is None:
            d = self.drive
            all_codes = self._positions(d["source"]).astype(np.int64) * n
            all_codes += self._positions(d["target"])
            order = np.argsort(all_codes)
            self._drive_index = (all_codes[order], d["drive"].to_numpy(float)[order])
        table, values = self._drive_index
        pos = np.searchsorted(table, codes)
        found = pos < len(table)
        found[found] = table[pos[found]] == codes[found]
        if not found.all():
            k = np.flatnonzero(~found)[0]
            raise ValueError(
                f"{np.asarray(sources, dtype=object)[k]!r} → {np.asarray(targets, dtype=object)[k]!r}"
                f" is not an edge of the simulated graph; truth is only defined on graph edges."
            )
        return values[pos]

    def _positions(self, names) -> np.ndarray:
        names = np.asarray(names, dtype=object)
        pos = self.states.get_indexer(names)
        if (pos < 0).any():
            bad = names[np.flatnonzero(pos < 0)[0]]
            raise ValueError(f"unknown state {bad!r}: not one of the simulated states.")
        return pos

    def pair_affinity(self, pairs: pd.DataFrame) -> np.ndarray:
        """True A_fg for each row of `Transitions.pairs()` (columns ``f, g``).

        log T(f→g)/T(g→f) = V_f − V_g + A_fg; A is 0 everywhere when the kernel is reversible.
        """
        return self._drive_lookup(pairs["f"].to_numpy(), pairs["g"].to_numpy())

    def pair_log_ratio(self, pairs: pd.DataFrame) -> np.ndarray:
        """True log T(f→g) − log T(g→f) = V_f − V_g + A_fg for each row (columns ``f, g``)."""
        v = self.potential.to_numpy()
        i, j = self._positions(pairs["f"]), self._positions(pairs["g"])
        return v[i] - v[j] + self.pair_affinity(pairs)

    def loop_affinity(self, cycles: pd.DataFrame) -> np.ndarray:
        """True affinity of each row of `Transitions.cycles()` (forward a→b→c→a).

        A_ab + A_bc + A_ca = Σ log T(forward) − Σ log T(backward); 0 for a reversible kernel.
        """
        a, b, c = (cycles[k].to_numpy() for k in ("a", "b", "c"))
        return self._drive_lookup(a, b) + self._drive_lookup(b, c) + self._drive_lookup(c, a)

    def expected_counts(self) -> pd.DataFrame:
        """``source, target, expected``: E[n(f→g)] = visits_f · T(f→g) for every kernel entry.

        Exact for ``allocation="uniform"`` (visits are fixed there); includes the self rows.
        """
        k = self.kernel.tocoo()
        names = self.states.to_numpy(dtype=object)
        return pd.DataFrame(
            {
                "source": names[k.row],
                "target": names[k.col],
                "expected": self.visits[k.row] * k.data,
            }
        )

    def __repr__(self) -> str:
        kind = "driven" if self.driven else "reversible"
        return (
            f"Simulation({len(self.states)} states, {len(self.graph)} edges, {kind}, "
            f"{int(self.visits.sum())} calls, allocation={self.settings.get('allocation')!r})"
        )


# -- public entry points -------------------------------------------------------------------------
def simulate(
    n_states: int = 300,
    transitions: int = 30_000,
    *,
    potential: PotentialSpec = "normal",
    spread: float = 1.0,
    mean_degree: float = 6.0,
    degree_exponent: float = 2.5,
    drive: float = 0.0,
    allocation: Allocation = "uniform",
    move_probability: float = 1.0,
    seed: int | np.random.Generator | None = None,
    llm: str = DEFAULT_LLM,
    state_prefix: str = "s",
) -> Simulation:
    """Counts of `transitions` calls on a random landscape with known potential (and drive).

    potential: ``"normal"`` (V ~ N(0, spread²)), ``"skewed"`` (a standardised lognormal times
    `spread`: heavy upper tail, a few states far uphill) or an array of n_states values.
    V is centred to mean 0. The graph is Chung–Lu with Pareto weights (tail exponent
    `degree_exponent`, mean degree ≈ `mean_degree`) plus a random spanning tree, so it is
    connected, without self loops or duplicate edges. The kernel is
    T(f→g) = p · min(1/d_f, exp(u_fg)/d_g) with u_fg = V_f − V_g + A_fg and
    A_fg = drive · z_fg (z ~ N(0, 1) per edge, antisymmetric), p = `move_probability`.
    allocation: ``"uniform"`` (every state is the prompt transitions/n times, the paper's
    scheme) or ``"chain"`` (one Markov chain of `transitions` steps started from π).
    """
    _check_positive_int(n_states, "n_states", minimum=2)
    _check_common(transitions, allocation, llm)
    if not 0 < move_probability <= 1:
        raise ValueError(f"move_probability must be in (0, 1], got {move_probability}.")
    if not (np.isfinite(drive) and drive >= 0):
        raise ValueError(f"drive must be a finite number >= 0, got {drive}.")
    if not (np.isfinite(spread) and spread >= 0):
        raise ValueError(f"spread must be a finite number >= 0, got {spread}.")
    if degree_exponent <= 1:
        raise ValueError(f"degree_exponent must be > 1 (Pareto tail), got {degree_exponent}.")
    if mean_degree <= 0:
        raise ValueError(f"mean_degree must be > 0, got {mean_degree}.")
    rng = np.random.default_rng(seed)
    v = _potential(potential, n_states, spread, rng)
    a, b = _graph(n_states, mean_degree, degree_exponent, rng)
    z = rng.standard_normal(len(a)) * drive if drive > 0 else np.zeros(len(a))
    kernel = _mh_kernel(v, a, b, z, move_probability)
    names = make_state_names(n_states, state_prefix)
    pi = None if drive > 0 else _boltzmann(v)
    settings = {
        "generator": "simulate",
        "n_states": n_states,
        "transitions": transitions,
        "potential": potential if isinstance(potential, str) else "array",
        "spread": spread,
        "mean_degree": mean_degree,
        "degree_exponent": degree_exponent,
        "drive": drive,
        "allocation": allocation,
        "move_probability": move_probability,
        "seed": seed if isinstance(seed, int | None) else "generator",
        "llm": llm,
    }
    if pi is None and allocation == "chain":  # the chain starts from π: solve for it once
        pi = stationary_distribution(kernel, _boltzmann(v))
    visits, counts = _sample(kernel, transitions, allocation, rng, pi)
    drive_frame = _drive_frame(names, a, b, z)
    return _assemble(names, v, kernel, a, b, drive_frame, visits, counts, llm, settings, pi)


def simulate_from_matrix(
    matrix,
    transitions: int,
    *,
    allocation: Allocation = "uniform",
    seed: int | np.random.Generator | None = None,
    state_names: list[str] | pd.Index | None = None,
    llm: str = DEFAULT_LLM,
) -> Simulation:
    """Counts of `transitions` calls from a given row-stochastic matrix P (dense or sparse).

    The diagonal is the probability of a call that does not move. The truth is V = −log π
    (centred to mean 0) with π the stationary distribution of P; the drive is
    A_fg = log(P_fg / P_gf) − (V_f − V_g), 0 for a reversible P and ±inf for an edge that
    P allows in one direction only. P must be irreducible (one strongly connected piece).
    """
    _check_common(transitions, allocation, llm)
    kernel = _as_stochastic(matrix)
    n = kernel.shape[0]
    if state_names is None:
        names = make_state_names(n)
    else:
        names = np.asarray(state_names, dtype=object).astype(str).astype(object)
        if len(names) != n or len(set(names)) != n:
            raise ValueError(f"state_names must be {n} distinct names, one per row of the matrix.")
        if np.any(names[:-1] > names[1:]):
            raise ValueError("state_names must be sorted (Transitions orders states by name).")
    rng = np.random.default_rng(seed)
    pi = stationary_distribution(kernel)
    v = -np.log(pi)
    v -= v.mean()
    off = sp.triu(kernel + kernel.T, k=1).tocoo()
    a, b = off.row.astype(np.int64), off.col.astype(np.int64)
    p_ab = np.asarray(kernel[a, b]).ravel()
    p_ba = np.asarray(kernel[b, a]).ravel()
    with np.errstate(divide="ignore"):
        z = np.log(p_ab) - np.log(p_ba) - (v[a] - v[b])
    settings = {
        "generator": "simulate_from_matrix",
        "n_states": n,
        "transitions": transitions,
        "allocation": allocation,
        "seed": seed if isinstance(seed, int | None) else "generator",
        "llm": llm,
    }
    visits, counts = _sample(kernel, transitions, allocation, rng, pi)
    drive_frame = _drive_frame(names, a, b, z)
    return _assemble(names, v, kernel, a, b, drive_frame, visits, counts, llm, settings, pi)


def load_peer_matrix(path: str | Path) -> np.ndarray:
    """A dense transition matrix from a whitespace-separated text file (one row per line).

    Checks that it is square, finite, non-negative and row-stochastic (to 1e-8) and says which
    row is wrong otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such matrix file.")
    try:
        matrix = np.loadtxt(path, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: not a whitespace-separated numeric matrix ({exc}).") from None
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{path}: a transition matrix must be square, got shape {matrix.shape}.")
    _as_stochastic(matrix, origin=str(path))
    return matrix


def make_state_names(n: int, prefix: str = "s") -> np.ndarray:
    """Zero-padded names (``s0000``, ``s0001``, ...) so that sorted order is numeric order."""
    width = max(4, len(str(n - 1)))
    digits = np.char.zfill(np.arange(n).astype(str), width)
    return np.char.add(prefix, digits).astype(object)


# -- construction ---------------------------------------------------------------------------------
def _check_common(transitions, allocation: str, llm: str) -> None:
    _check_positive_int(transitions, "transitions", minimum=0)
    if allocation not in ("uniform", "chain"):
        raise ValueError(f"unknown allocation {allocation!r}; use 'uniform' or 'chain'.")
    if not isinstance(llm, str) or not llm.strip():
        raise ValueError(f"llm must be a non-empty name, got {llm!r}.")


def _check_positive_int(value, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")


def _potential(spec: PotentialSpec, n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """True V, centred to mean 0."""
    if isinstance(spec, str):
        if spec == "normal":
            v = rng.normal(0.0, spread, n)
        elif spec == "skewed":
            s2 = _SKEW_SIGMA**2
            x = rng.lognormal(0.0, _SKEW_SIGMA, n)
            mean, sd = np.exp(s2 / 2), np.sqrt((np.exp(s2) - 1) * np.exp(s2))
            v = spread * (x - mean) / sd
        else:
            raise ValueError(f"unknown potential {spec!r}; use 'normal', 'skewed' or an array.")
    else:
        v = np.asarray(spec, dtype=float).ravel()
        if len(v) != n:
            raise ValueError(f"the potential array has {len(v)} values for {n} states.")
        if not np.all(np.isfinite(v)):
            raise ValueError("the potential array must be finite everywhere.")
    return v - v.mean()


# -- assembly -------------------------------------------------------------------------------------
def _drive_frame(names: np.ndarray, a: np.ndarray, b: np.ndarray, z: np.ndarray) -> pd.DataFrame:
    src, dst = np.concatenate([a, b]), np.concatenate([b, a])
    order = np.argsort(src * len(names) + dst)  # names sort like indices: sorted by name
    return pd.DataFrame(
        {
            "source": names[src[order]],
            "target": names[dst[order]],
            "drive": np.concatenate([z, -z])[order],
        }
    )


def _assemble(
    names: np.ndarray,
    v: np.ndarray,
    kernel: sp.csr_matrix,
    a: np.ndarray,
    b: np.ndarray,
    drive: pd.DataFrame,
    visits: np.ndarray,
    counts: np.ndarray,
    llm: str,
    settings: dict,
    pi: np.ndarray | None,
) -> Simulation:
    """Build the `Transitions` directly (already sorted and valid) plus the truth."""
    rows = np.repeat(np.arange(kernel.shape[0]), np.diff(kernel.indptr))
    seen = counts > 0
    count_frame = pd.DataFrame(
        {
            "llm": np.full(int(seen.sum()), llm, dtype=object),
            "source": names[rows[seen]],
            "target": names[kernel.indices[seen]],
            "count": counts[seen].astype(np.int64),
        }
    )
    prompted = visits > 0
    visit_frame = pd.DataFrame(
        {
            "llm": np.full(int(prompted.sum()), llm, dtype=object),
            "source": names[prompted],
            "visits": visits[prompted].astype(float),
        }
    )
    # Same dtypes as `Transitions.from_counts` gives (so hashes match a round trip through files).
    count_frame = count_frame.astype({"llm": object, "source": object, "target": object})
    visit_frame = normalise_visits(visit_frame)
    data = Transitions(count_frame, visit_frame, origin="simulated", convention="explicit")
    potential = pd.Series(v, index=pd.Index(names, name="state", dtype=object), name="potential")
    graph = pd.DataFrame({"source": names[a], "target": names[b], "i": a, "j": b})
    return Simulation(data, potential, drive, kernel, graph, visits, settings, pi)
