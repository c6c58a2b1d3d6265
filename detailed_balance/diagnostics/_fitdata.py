"""Arrays behind a Bayesian fit, in the layout the diagnostics compute with.

A fit (a `BayesFit` from `detailed_balance.sampling`, or its `xarray.DataTree`) stores draws as
``(chain, draw, state)`` / ``(chain, draw, pair)`` and the data in ``constant_data``. The
diagnostics want flat numpy arrays: draws stacked into one sample axis, pairs indexed by the
position of their ends in the posterior's ``state`` coordinate (matched by *name*, so a fit
that leaves unidentified states out of ``V`` still lines up), and loop affinities per 3-cycle
(taken from the fit, or summed from ``A`` with the right orientation signs when absent).

Everything here is vectorised over draws, pairs and cycles; long draw axes are processed in
chunks (`draw_chunks`) so paper-scale posteriors stay within memory.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr

from detailed_balance.data import DataError, component_sizes, strong_components, weak_components
from detailed_balance.data.names import as_names

SAMPLE_DIMS = ("chain", "draw")


class FitError(DataError):
    """A fit lacks what a diagnostic needs; the message says what and how to get it (a
    `DataError`, so the command line prints it without a traceback)."""


def as_tree(result: Any) -> xr.DataTree:
    """The DataTree of a `BayesFit` (its ``.posterior``) or a DataTree itself."""
    # A DataTree's own `.posterior` is its child group, so test the type first.
    tree = result if isinstance(result, xr.DataTree) else getattr(result, "posterior", result)
    if isinstance(tree, xr.DataTree):
        return tree
    raise FitError(
        f"expected a BayesFit or an xarray.DataTree, got {type(result).__name__}; "
        "fit a model with detailed_balance.sampling.fit or load one with load_fit."
    )


def _group(tree: xr.DataTree, name: str) -> xr.Dataset | None:
    return tree[name].to_dataset() if name in tree.children else None


def stack_draws(da: xr.DataArray, dim: str | None = None) -> np.ndarray:
    """Draws of `da` as (samples,) or (samples, len(dim)) with chains stacked first."""
    order = [d for d in SAMPLE_DIMS if d in da.dims] + ([dim] if dim else [])
    values = da.transpose(*order).values
    # The sample count is explicit: reshape(-1, 0) cannot infer it when `dim` is empty (a fit
    # of data without any 3-cycle has a zero-length `cycle` axis, the normal sparse case).
    samples = int(np.prod([da.sizes[d] for d in SAMPLE_DIMS if d in da.dims], dtype=np.int64))
    return values.reshape(samples) if dim is None else values.reshape(samples, da.sizes[dim])


@dataclass
class FitArrays:
    """Flat arrays of one fit: draws of V (and A, loop affinities) and the pair/cycle data."""

    tree: xr.DataTree
    states: pd.Index  # the posterior's `state` coordinate (identified states)
    n_chains: int
    n_draws: int
    pair_f: np.ndarray  # names, one per modelled pair
    pair_g: np.ndarray
    pair_i: np.ndarray  # positions in `states`
    pair_j: np.ndarray
    n_fg: np.ndarray
    n_gf: np.ndarray
    N_f: np.ndarray
    N_g: np.ndarray
    cycle_abc: np.ndarray  # (cycles, 3) positions in `states`
    cycle_names: np.ndarray  # (cycles, 3) names
    cycle_edges: np.ndarray  # (cycles, 3) pair index of a→b, b→c, c→a
    cycle_signs: np.ndarray  # (cycles, 3) +1 when the pair is stored in loop orientation
    has_A: bool
    method: str

    @property
    def n_samples(self) -> int:
        return self.n_chains * self.n_draws

    @property
    def m(self) -> np.ndarray:
        """Pair totals m = n_fg + n_gf (the binomial size the model conditions on)."""
        return self.n_fg + self.n_gf

    @property
    def offset(self) -> np.ndarray:
        """log(N_f / N_g): the visit part of each pair's log-odds."""
        return np.log(self.N_f) - np.log(self.N_g)

    def V(self) -> np.ndarray:
        """Draws of V, (samples, states)."""
        return stack_draws(self.tree["posterior"]["V"], "state")

    def A(self) -> np.ndarray | None:
        """Draws of the antisymmetric term A_fg, (samples, pairs); None for equilibrium fits."""
        if not self.has_A:
            return None
        return stack_draws(self.tree["posterior"]["A"], "pair")

    def loop_affinity(self) -> np.ndarray | None:
        """Draws of the loop affinity per 3-cycle, (samples, cycles); None without A."""
        post = self.tree["posterior"]
        if "loop_affinity" in post.data_vars and post["loop_affinity"].sizes.get("cycle") == len(
            self.cycle_abc
        ):
            return stack_draws(post["loop_affinity"], "cycle")
        a = self.A()
        if a is None:
            return None
        return (a[:, self.cycle_edges] * self.cycle_signs).sum(axis=-1)

    def draw_chunks(self, size: int = 256) -> Iterator[slice]:
        """Slices over the stacked sample axis, `size` draws at a time (bounded memory)."""
        for start in range(0, self.n_samples, size):
            yield slice(start, min(start + size, self.n_samples))

    def log_odds(self, v: np.ndarray, a: np.ndarray | None = None) -> np.ndarray:
        """η = log(N_f/N_g) + V_f − V_g (+ A_fg) per draw and pair, for V draws `v`."""
        eta = self.offset + v[:, self.pair_i] - v[:, self.pair_j]
        return eta if a is None else eta + a

    def scalar(self, name: str) -> np.ndarray | None:
        post = self.tree["posterior"]
        return stack_draws(post[name]) if name in post.data_vars else None

    def bounded(self) -> np.ndarray:
        """Per state in `states`: True when the likelihood alone pins V (up to the gauge).

        The definition is the one the model used at fit time (`PairData.bounded`, stored in
        ``constant_data["bounded"]``): the largest strongly connected piece (≥ 2 states) of
        the directed graph of observed moves in each component. Inside such a piece every
        difference has moves both ways along some path, so the likelihood has a finite
        maximum. Fits without the stored flag (hand-made trees) fall back to "in a strongly
        connected piece of ≥ 2 states".
        """
        const = self.tree["constant_data"]
        if "bounded" in const.data_vars:
            stored = pd.Series(
                np.asarray(const["bounded"].values, dtype=bool),
                index=pd.Index(as_names(const["state"]), dtype=object),
            )
            return stored.reindex(self.states).fillna(False).to_numpy(dtype=bool)
        return self.strong_components()[1] >= 2

    def strong_components(self) -> tuple[np.ndarray, np.ndarray]:
        """(label per state, size of that state's component) of the directed move graph."""
        fwd = self.n_fg > 0
        bwd = self.n_gf > 0
        rows = np.concatenate([self.pair_i[fwd], self.pair_j[bwd]])
        cols = np.concatenate([self.pair_j[fwd], self.pair_i[bwd]])
        labels = strong_components(rows, cols, len(self.states))
        return labels, component_sizes(labels)

    def cycle_rank(self) -> int:
        """Independent cycles of the undirected graph of modelled pairs (edges − vertices +
        components over the states the pairs touch).

        0 means the pairs form a forest (chains, stars, single pairs): every antisymmetric A on
        a forest is a difference of potentials, so no kernel on these pairs can violate
        detailed balance and the data cannot tell the two models apart.
        """
        if len(self.pair_i) == 0:
            return 0
        touched, edges = np.unique(np.stack([self.pair_i, self.pair_j]), return_inverse=True)
        n_components = len(np.unique(weak_components(edges[0], edges[1], len(touched))))
        return int(len(self.pair_i) - len(touched) + n_components)

    def visits(self) -> np.ndarray:
        """Visits N₀ per state in `states` (0 where unknown)."""
        const = self.tree["constant_data"]
        if "visits" not in const.data_vars:
            return np.zeros(len(self.states))
        vis = const["visits"].to_series()
        return vis.reindex(self.states).fillna(0).to_numpy(dtype=float)


def _positions(states: pd.Index, names: np.ndarray, what: str) -> np.ndarray:
    pos = states.get_indexer(pd.Index(names, dtype=object))
    if (pos < 0).any():
        bad = names[np.flatnonzero(pos < 0)[0]]
        raise FitError(
            f"{what} {bad!r} has no potential V in the posterior; the fit's constant_data and "
            "posterior disagree (refit, or load the file written with this fit)."
        )
    return pos


def _cycle_edges(
    pair_i: np.ndarray, pair_j: np.ndarray, abc: np.ndarray, n_states: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pair index and orientation sign of the loop edges a→b, b→c, c→a of each cycle."""
    if len(abc) == 0:
        return np.empty((0, 3), dtype=np.int64), np.empty((0, 3))
    codes = np.minimum(pair_i, pair_j).astype(np.int64) * n_states + np.maximum(pair_i, pair_j)
    order = np.argsort(codes)
    src = abc
    dst = np.roll(abc, -1, axis=1)
    probe = np.minimum(src, dst).astype(np.int64) * n_states + np.maximum(src, dst)
    at = np.searchsorted(codes[order], probe)
    at = np.minimum(at, len(codes) - 1)
    if len(codes) == 0 or (codes[order][at] != probe).any():
        raise FitError(
            "a 3-cycle in constant_data uses a pair that is not modelled; the fit file is "
            "inconsistent (refit)."
        )
    edge = order[at]
    signs = np.where(pair_i[edge] == src, 1.0, -1.0)
    return edge, signs


# One FitArrays per fit: every diagnostic of a verdict reads the same arrays. Keyed by the
# tree (held weakly) and the identity of its posterior and constant_data variables, so a tree
# whose groups are replaced is read again.
_CACHE: dict[int, tuple[weakref.ref, tuple[int, ...], FitArrays]] = {}


def _stamp(tree: xr.DataTree) -> tuple[int, ...]:
    return tuple(
        id(var)
        for name in ("posterior", "constant_data")
        if name in tree.children
        for var in tree[name].variables.values()
    )


def fit_arrays(result: Any) -> FitArrays:
    """The arrays of a fit, built once per fit and cached; raises `FitError` naming what is
    missing."""
    tree = as_tree(result)
    stamp = _stamp(tree)
    hit = _CACHE.get(id(tree))
    if hit is not None and hit[0]() is tree and hit[1] == stamp:
        return hit[2]
    fit = _build(tree)
    for key in [k for k, (ref, _, _) in _CACHE.items() if ref() is None]:
        del _CACHE[key]
    _CACHE[id(tree)] = (weakref.ref(tree), stamp, fit)
    return fit


def _stored_cycle_edges(
    const: xr.Dataset, keep_index: np.ndarray, n_cycles: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Loop edges a→b, b→c, c→a from the pair indices stored at fit time (`cycle_pair_*`,
    in the full pair coordinate; the fit stores a < b < c so the pairs read a→b, b→c, a→c and
    the loop is A_ab + A_bc − A_ac). None when they are absent or refer to unusable pairs."""
    names = ("cycle_pair_ab", "cycle_pair_bc", "cycle_pair_ac")
    if n_cycles == 0 or not set(names) <= set(const.data_vars):
        return None
    full = np.stack([np.asarray(const[k].values, dtype=np.int64) for k in names], axis=1)
    local = np.full(int(const.sizes.get("pair", 0)), -1, dtype=np.int64)
    local[keep_index] = np.arange(len(keep_index))
    if full.shape != (n_cycles, 3) or full.min() < 0 or full.max() >= len(local):
        return None
    edges = local[full]
    if (edges < 0).any():
        return None
    return edges, np.tile([1.0, 1.0, -1.0], (n_cycles, 1))


def _build(tree: xr.DataTree) -> FitArrays:
    post = _group(tree, "posterior")
    const = _group(tree, "constant_data")
    if post is None or "V" not in post.data_vars:
        raise FitError("the fit has no posterior group with a variable V (state potentials).")
    if const is None or not {"pair_f", "pair_g", "n_fg", "n_gf", "N_f", "N_g"} <= set(
        const.data_vars
    ):
        raise FitError(
            "the fit has no constant_data with pair_f, pair_g, n_fg, n_gf, N_f, N_g; it was not "
            "written by detailed_balance.sampling.fit (refit the model)."
        )
    # names as objects: `astype(str)` copies each at the width of the longest (issue 11)
    states = pd.Index(as_names(post["V"]["state"]), dtype=object)
    pair_f = as_names(const["pair_f"])
    pair_g = as_names(const["pair_g"])
    n_fg = np.asarray(const["n_fg"].values, dtype=float)
    n_gf = np.asarray(const["n_gf"].values, dtype=float)
    big_f = np.asarray(const["N_f"].values, dtype=float)
    big_g = np.asarray(const["N_g"].values, dtype=float)
    # Pairs whose ends have no visits carry no information in the conditional binomial model.
    usable = np.isfinite(big_f) & np.isfinite(big_g) & (big_f > 0) & (big_g > 0)
    keep_index = np.flatnonzero(usable)
    pair_i = _positions(states, pair_f[usable], "state")
    pair_j = _positions(states, pair_g[usable], "state")
    if "cycle_a" in const.data_vars and const.sizes.get("cycle", 0) > 0:
        columns = [const[k].values for k in ("cycle_a", "cycle_b", "cycle_c")]
        names = np.stack([as_names(c) for c in columns], axis=1)
    else:
        names = np.empty((0, 3), dtype=object)
    abc = np.stack([_positions(states, names[:, k], "cycle state") for k in range(3)], axis=1)
    abc = abc.reshape(-1, 3).astype(np.int64)
    stored = _stored_cycle_edges(const, keep_index, len(abc))
    edges, signs = stored if stored is not None else _cycle_edges(pair_i, pair_j, abc, len(states))
    has_a = "A" in post.data_vars
    fit = FitArrays(
        tree=tree,
        states=states,
        n_chains=int(post.sizes.get("chain", 1)),
        n_draws=int(post.sizes.get("draw", 1)),
        pair_f=pair_f[usable],
        pair_g=pair_g[usable],
        pair_i=pair_i,
        pair_j=pair_j,
        n_fg=n_fg[usable],
        n_gf=n_gf[usable],
        N_f=big_f[usable],
        N_g=big_g[usable],
        cycle_abc=abc,
        cycle_names=names,
        cycle_edges=edges,
        cycle_signs=signs,
        has_A=has_a,
        method=str(tree.attrs.get("method", "unknown")),
    )
    if has_a and len(keep_index) != const.sizes.get("pair", len(keep_index)):
        # A is indexed by the full pair coordinate; keep the usable pairs only.
        full_a = tree["posterior"]["A"]
        tree = tree.copy()
        tree["posterior"] = tree["posterior"].to_dataset().assign(A=full_a.isel(pair=keep_index))
        fit.tree = tree
    return fit


def interval(draws: np.ndarray, ci: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed `ci` interval of draws along `axis`."""
    lo, hi = np.quantile(draws, [(1 - ci) / 2, (1 + ci) / 2], axis=axis)
    return lo, hi


def interval_summary(draws: np.ndarray, ci: float, *, sd: bool = False) -> dict[str, float]:
    """``{"mean", "lower", "upper"}`` (and ``"sd"``, ddof 1, when asked) of scalar draws: the
    one interval summary the diagnostics report."""
    lo, hi = interval(draws, ci)
    out = {"mean": float(np.mean(draws)), "lower": float(lo), "upper": float(hi)}
    if sd:
        out = {
            "mean": out["mean"],
            "sd": float(np.std(draws, ddof=1)) if len(draws) > 1 else 0.0,
            "lower": out["lower"],
            "upper": out["upper"],
        }
    return out


def centre_by_label(v: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`v` (..., states) minus, in every draw, the mean over the states sharing a label.

    `labels` are 0..K−1 per state; one sparse product gives all K means at once.
    """
    n = v.shape[-1]
    k = int(labels.max()) + 1 if n else 0
    counts = np.bincount(labels, minlength=k)
    mean_op = sp.csr_matrix((1.0 / counts[labels], (np.arange(n), labels)), shape=(n, k))
    flat = v.reshape(-1, n)
    means = np.asarray(mean_op.T.dot(flat.T)).T  # (draws, K)
    return (flat - means[:, labels]).reshape(v.shape)
