"""Data generators for the kernel-likelihood benchmarks, built independently of our simulator.

Issue 13 asks that every model be benchmarked on at least two generators: ours
(`detailed_balance.simulation`) and one built differently, because a fit that is fast on our own
simulator's graphs and visit patterns need not be fast elsewhere (the pair model's 17.8× speed-up
on our simulator fell to 1.8× on a Pareto/lognormal generator). Nothing here imports
`detailed_balance.simulation`: graphs, kernels and sampling are written from the issue's
description.

- `pareto_lognormal`: a random sparse undirected pair graph (a random recursive spanning tree
  plus uniformly random extra edges), symmetric lognormal conductances X_fg, lognormal remainder
  weights X_ff, π_f = Σ_g X_fg + X_ff and the exactly reversible kernel T_fg = X_fg / π_f;
  Pareto-distributed prompt visits N_f (integers ≥ 1 summing to `calls`).
- `peer_scaled`: the reversible peer matrix (deeptime's P_rev, 251 states) tiled `copies` times
  at the conductance level π_f T_fg, each block scaled by a lognormal factor, the blocks linked
  in a ring by a few symmetric low-conductance edges (detailed balance stays exact), uniform
  `calls_per_state`.

Both sample each prompt state's calls as ONE multinomial over its row (its targets and the
remainder, here a self step), by sequential binomials vectorised over states (a loop over the
row length only), and return a `Generated`: `data` (a `Transitions` with explicit true visits),
`true_V` (−log π by state name, mean 0), `kernel` (the true T as CSR, diagonal = remainder) and
`stats`.

    python benchmarks/generators.py --describe
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from detailed_balance.data import Transitions  # noqa: E402

PEER_NAME = "deeptime_P_rev_251x251.dat"
_ROOT = Path(__file__).resolve().parents[1]
_PEER_SHARED = _ROOT.parent / "shared" / "peer-data" / PEER_NAME
_PEER_BUNDLED = _ROOT / "tests" / "data" / f"{PEER_NAME}.gz"


@dataclass(frozen=True)
class Generated:
    """Sampled data with its truth."""

    name: str
    data: Transitions  # explicit visits: N_f true calls per prompt state
    true_V: pd.Series  # −log π by state name (mean 0)
    kernel: sp.csr_matrix  # true T, rows sorted, diagonal = remainder probability
    stats: dict = field(default_factory=dict)


# -- pieces ---------------------------------------------------------------------------------
def state_names(n: int, prefix: str = "s") -> np.ndarray:
    """Zero-padded names (sorted order = numeric order), as an object array of `str`."""
    width = max(4, len(str(n - 1)))
    digits = np.char.zfill(np.arange(n).astype(str), width)
    return np.char.add(prefix, digits).astype(object)


def random_pair_graph(n_states: int, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """`n_pairs` distinct unordered pairs (a < b) over `n_states`, connected: a random recursive
    spanning tree on a random labelling plus uniformly random extra edges. Shape (n_pairs, 2)."""
    if n_states < 2:
        raise ValueError("need at least 2 states")
    max_pairs = n_states * (n_states - 1) // 2
    if not n_states - 1 <= n_pairs <= max_pairs:
        raise ValueError(
            f"n_pairs must be between {n_states - 1} (a spanning tree) and {max_pairs}, "
            f"got {n_pairs}"
        )
    order = rng.permutation(n_states)
    parent = (rng.random(n_states - 1) * np.arange(1, n_states)).astype(np.int64)
    a, b = order[1:], order[parent]
    codes = np.minimum(a, b).astype(np.int64) * n_states + np.maximum(a, b)
    need = n_pairs - len(codes)
    while need > 0:  # a few rounds at most: each draws more candidates than needed
        size = int(need * 1.2) + 16
        x, y = rng.integers(0, n_states, size), rng.integers(0, n_states, size)
        keep = x != y
        cand = np.unique(
            np.minimum(x, y)[keep].astype(np.int64) * n_states + np.maximum(x, y)[keep]
        )
        cand = cand[~np.isin(cand, codes)]
        cand = cand[rng.permutation(len(cand))[:need]]
        codes = np.concatenate([codes, cand])
        need = n_pairs - len(codes)
    codes = np.sort(codes)
    return np.column_stack([codes // n_states, codes % n_states])


def reversible_kernel(conductance: sp.spmatrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """T = diag(1/π) C and π = row sums of a symmetric non-negative C (diagonal = remainder).

    π_f T_fg = C_fg = C_gf = π_g T_gf: detailed balance holds exactly (to rounding)."""
    c = sp.csr_matrix(conductance, dtype=float)
    c.sum_duplicates()
    c.eliminate_zeros()
    c.sort_indices()
    pi = np.asarray(c.sum(axis=1)).ravel()
    if np.any(pi <= 0):
        raise ValueError("every state needs a positive conductance or remainder")
    t = sp.csr_matrix((c.data / np.repeat(pi, np.diff(c.indptr)), c.indices, c.indptr), c.shape)
    return t, pi


def sample_rows(kernel: sp.csr_matrix, visits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One Multinomial(visits_f; T_f·) per row, as counts per stored CSR entry.

    Sequential binomials: entry k of a row gets Binomial(calls left, T_fk / Σ_{l ≥ k} T_fl),
    vectorised over rows (the loop runs over the row length). The suffix masses are summed from
    the end of each row, so no cancellation; the last entry of a row takes all calls left."""
    indptr, p = kernel.indptr, kernel.data
    lengths = np.diff(indptr)
    longest = int(lengths.max()) if len(lengths) else 0
    suffix = np.zeros(len(p))
    ahead = np.zeros(kernel.shape[0])
    for k in range(longest - 1, -1, -1):
        rows = np.flatnonzero(lengths > k)
        idx = indptr[rows] + k
        ahead[rows] += p[idx]
        suffix[idx] = ahead[rows]
    counts = np.zeros(len(p), dtype=np.int64)
    left = np.asarray(visits, dtype=np.int64).copy()
    for k in range(longest):
        rows = np.flatnonzero(lengths > k)
        idx = indptr[rows] + k
        last = lengths[rows] == k + 1
        with np.errstate(divide="ignore", invalid="ignore"):
            cond = np.where(last, 1.0, np.clip(p[idx] / suffix[idx], 0.0, 1.0))
        cond = np.nan_to_num(cond, nan=0.0)
        draw = rng.binomial(left[rows], cond)
        counts[idx] = draw
        left[rows] -= draw
    return counts


def _transitions(
    kernel: sp.csr_matrix, visits: np.ndarray, counts: np.ndarray, names: np.ndarray
) -> Transitions:
    rows = np.repeat(np.arange(kernel.shape[0]), np.diff(kernel.indptr))
    seen = counts > 0
    frame = pd.DataFrame(
        {
            "source": names[rows[seen]],
            "target": names[kernel.indices[seen]],
            "count": counts[seen],
        }
    )
    prompts = visits > 0
    visit_frame = pd.DataFrame({"source": names[prompts], "visits": visits[prompts]})
    return Transitions.from_counts(frame, visit_frame)


def _generated(
    name: str,
    kernel: sp.csr_matrix,
    pi: np.ndarray,
    visits: np.ndarray,
    rng: np.random.Generator,
    extra: dict,
) -> Generated:
    names = state_names(kernel.shape[0])
    counts = sample_rows(kernel, visits, rng)
    data = _transitions(kernel, visits, counts, names)
    v = -np.log(pi)
    true_v = pd.Series(v - v.mean(), index=pd.Index(names, name="state"), name="V")
    coo = kernel.tocoo()
    seen = (coo.row != coo.col) & (counts > 0)
    lo, hi = np.minimum(coo.row, coo.col)[seen], np.maximum(coo.row, coo.col)[seen]
    pair_codes = lo.astype(np.int64) * kernel.shape[0] + hi
    off = coo.row != coo.col
    stats = {
        "states": int(kernel.shape[0]),
        "pairs": int(off.sum() // 2),
        "pairs_observed": int(len(np.unique(pair_codes))),
        "calls": int(visits.sum()),
        "max_row_length": int(np.diff(kernel.indptr).max()),
        **extra,
    }
    return Generated(name, data, true_v, kernel, stats)


# -- generators -----------------------------------------------------------------------------
def pareto_visits(n_states: int, calls: int, shape: float, rng: np.random.Generator) -> np.ndarray:
    """Integers ≥ 1 summing to `calls`: 1 + Multinomial(calls − n, w / Σw), w ~ Pareto(shape)."""
    if calls < n_states:
        raise ValueError(f"calls ({calls}) must be at least n_states ({n_states})")
    w = rng.pareto(shape, n_states) + 1.0
    return 1 + rng.multinomial(calls - n_states, w / w.sum())


def pareto_lognormal(
    n_states: int = 7484,
    n_pairs: int = 16000,
    calls: int = 100_000,
    seed: int = 0,
    pareto_shape: float = 1.2,
    log_sd: float = 1.0,
    remainder_log_mean: float = 0.0,
) -> Generated:
    """The issue's independent generator: random sparse graph, lognormal conductances (and
    remainder weights, log-mean `remainder_log_mean`), Pareto prompt visits, one multinomial
    per prompt state."""
    rng = np.random.default_rng(seed)
    edges = random_pair_graph(n_states, n_pairs, rng)
    x = rng.lognormal(0.0, log_sd, len(edges))
    rem = rng.lognormal(remainder_log_mean, log_sd, n_states)
    diag = np.arange(n_states)
    c = sp.coo_matrix(
        (
            np.concatenate([x, x, rem]),
            (
                np.concatenate([edges[:, 0], edges[:, 1], diag]),
                np.concatenate([edges[:, 1], edges[:, 0], diag]),
            ),
        ),
        shape=(n_states, n_states),
    )
    kernel, pi = reversible_kernel(c)
    visits = pareto_visits(n_states, calls, pareto_shape, rng)
    return _generated(
        "pareto_lognormal", kernel, pi, visits, rng, {"pareto_shape": pareto_shape, "seed": seed}
    )


def load_peer() -> np.ndarray:
    """deeptime's reversible P_rev (251 × 251): the shared copy beside the checkout, else the
    bundled one in tests/data (the same file the tests use)."""
    path = _PEER_SHARED if _PEER_SHARED.is_file() else _PEER_BUNDLED
    return np.loadtxt(path, ndmin=2)


def peer_conductance(matrix: np.ndarray) -> np.ndarray:
    """Symmetric conductances C = ½(diag(π) P + (diag(π) P)ᵀ), π the stationary law of P."""
    values, vectors = np.linalg.eig(matrix.T)
    pi = np.abs(np.real(vectors[:, np.argmin(np.abs(values - 1.0))]))
    pi /= pi.sum()
    c = pi[:, None] * matrix
    return 0.5 * (c + c.T)


def peer_scaled(
    copies: int = 30,
    calls_per_state: int = 8,
    seed: int = 0,
    block_log_sd: float = 0.5,
    links: int = 3,
    link_strength: float = 0.05,
) -> Generated:
    """The peer matrix tiled `copies` times (block b's conductances × exp(block_log_sd · z_b)),
    blocks joined in a ring by `links` symmetric edges per neighbouring pair, each of
    conductance `link_strength` × the smaller endpoint's π (≈ that probability per call)."""
    rng = np.random.default_rng(seed)
    base = sp.csr_matrix(peer_conductance(load_peer()))
    n = base.shape[0]
    scales = np.exp(block_log_sd * rng.standard_normal(copies))
    c = sp.kron(sp.diags(scales), base, format="csr")
    pi0 = np.asarray(c.sum(axis=1)).ravel()
    boundaries = copies if copies > 2 else copies - 1  # a ring from 3 blocks on
    block = np.repeat(np.arange(boundaries), links)
    a = block * n + rng.integers(0, n, len(block))
    b = ((block + 1) % copies) * n + rng.integers(0, n, len(block))
    w = link_strength * np.minimum(pi0[a], pi0[b])
    link = sp.coo_matrix(
        (np.concatenate([w, w]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=c.shape
    )
    kernel, pi = reversible_kernel(c + link)
    visits = np.full(n * copies, int(calls_per_state), dtype=np.int64)
    return _generated(
        "peer_scaled",
        kernel,
        pi,
        visits,
        rng,
        {"copies": copies, "links": int(len(block)), "seed": seed},
    )


# -- description ------------------------------------------------------------------------------
def describe(gen: Generated) -> dict:
    """What a model sees: modelled pairs, calls per prompt state, 3-cycles, one-way pairs."""
    from detailed_balance.models import pair_data

    pairs = pair_data(gen.data)
    one_way = (pairs.n_fg == 0) | (pairs.n_gf == 0)
    return {
        "generator": gen.name,
        "states": gen.stats["states"],
        "graph_pairs": gen.stats["pairs"],
        "calls": gen.stats["calls"],
        "modelled_states": pairs.n_states,
        "modelled_pairs": pairs.n_pairs,
        "median_calls": float(np.median(gen.data.visits["visits"])),
        "max_calls": int(gen.data.visits["visits"].max()),
        "cycles3": pairs.n_cycles,
        "one_way_fraction": float(one_way.mean()),
        "bounded_states": int(pairs.bounded.sum()),
        "components": pairs.n_components,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--describe", action="store_true", help="print what each generator gives")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.describe:
        parser.print_help()
        return
    rows = []
    for make in (pareto_lognormal, peer_scaled):
        start = time.perf_counter()
        gen = make(seed=args.seed)
        seconds = time.perf_counter() - start
        row = describe(gen)
        row["seconds"] = round(seconds, 2)
        rows.append(row)
    shown = [
        {key: (f"{val:.3g}" if isinstance(val, float) else str(val)) for key, val in row.items()}
        for row in rows
    ]
    print(pd.DataFrame(shown).set_index("generator").T.to_string())


if __name__ == "__main__":
    main()
