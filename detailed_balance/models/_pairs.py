"""The modelled pairs of the Bayesian pair models, and the gauge they are reported in.

`pair_data` turns `Transitions` into the arrays the equilibrium and non-equilibrium models
share: the unordered pairs (f, g) whose both visits N_f, N_g are known (only they can enter the
conditional binomial likelihood), the states they touch, the connected components of that pair
graph, which states are *bounded* (finite V from the data alone), the 3-cycles whose three pairs
are all modelled, and the centring weights that fix the gauge.

Gauge. The likelihood only sees V_f − V_g inside a connected component, so V is reported with
one constant removed per component: the weighted mean over the component's bounded states is 0
(the mean over all its states when it has none). Bounded states are those of the largest
strongly connected piece (size ≥ 2) of the component's directed count graph: inside it every
difference is pinned from both sides; anything outside is pinned from one side only and its
position comes from the prior. Centring over the bounded states keeps such prior-driven states
from dragging the gauge of the well-measured ones. The models' own gauge term uses these
data-only weights; the reported draws (`PairData.report_gauge`) are then centred with weights
∝ 1 / posterior variance over the bounded states (the precision-weighted gauge), which the
fit stores as ``constant_data["centring_weight"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from detailed_balance.data import DataError, Transitions
from detailed_balance.data.names import as_names


@dataclass(frozen=True)
class PairData:
    """Arrays of one LLM's modelled pairs (P) over its modelled states (K).

    ``i, j`` index `states` (i < j, f = states[i]); counts and visits are floats for numerics.
    """

    llm: str
    states: np.ndarray  # (K,) names of the modelled states, in `Transitions.states` order
    i: np.ndarray  # (P,) positions of f in `states`
    j: np.ndarray  # (P,) positions of g in `states`
    n_fg: np.ndarray  # (P,)
    n_gf: np.ndarray  # (P,)
    N_f: np.ndarray  # (P,)
    N_g: np.ndarray  # (P,)
    visits: np.ndarray  # (K,)
    component: np.ndarray  # (K,) labels 0..C-1 of the pair graph's connected components
    bounded: np.ndarray  # (K,) bool
    weights: np.ndarray  # (K,) centring weights; they sum to 1 within each component
    cycle_pairs: np.ndarray  # (Y, 3) pair positions of a→b, b→c, a→c
    cycle_names: np.ndarray  # (Y, 3) state names a, b, c
    unidentified: np.ndarray  # names of states with no modelled pair
    excluded_pairs: pd.DataFrame  # pairs left out because a visit count is unknown

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def n_pairs(self) -> int:
        return len(self.i)

    @property
    def n_components(self) -> int:
        return int(self.component.max()) + 1 if len(self.component) else 0

    @property
    def n_cycles(self) -> int:
        return len(self.cycle_pairs)

    @property
    def trials(self) -> np.ndarray:
        """m = n_fg + n_gf per pair: the binomial number of trials."""
        return self.n_fg + self.n_gf

    @property
    def offset(self) -> np.ndarray:
        """log(N_f / N_g): the part of the binomial logit that does not depend on V."""
        return np.log(self.N_f) - np.log(self.N_g)

    @property
    def component_sizes(self) -> np.ndarray:
        return np.bincount(self.component, minlength=self.n_components)

    def centre(self, values: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Remove the gauge: subtract the weighted component mean (last axis = state); with
        `inplace`, in `values` itself (no full-size temporaries beyond one: at 4,000 draws
        each costs ~0.2 s of fresh pages)."""
        if values.ndim == 1:
            means = np.bincount(self.component, values * self.weights, self.n_components)
        else:
            means = _segment_sum(values, self.component, self.n_components, self.weights)
        if inplace:
            values -= means[..., self.component]
            return values
        return values - means[..., self.component]

    def report_gauge(
        self, values: np.ndarray, reference: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draws of V (last axis = state) in the reported gauge, in place, and its centring
        weights (K,). With `reference`: V(reference) = 0 in its component. Otherwise the
        precision-weighted gauge: in each component, Σ w_f V_f = 0 with w_f ∝ 1 / Var(V_f)
        over its bounded states, the variances those of the draws themselves (in the
        equal-weight gauge). The gauge is arbitrary, but its choice sets how much of the
        noise of a few weakly pinned states every other state's interval carries: with equal
        weights, a handful of states resting on one count (wide, skewed posteriors) shift all
        the well-measured ones by their own sd (measured on the peer matrix at 3,000 calls per
        state: 0.82 coverage of 90% intervals, against 0.91 in this gauge). Components whose
        draws do not vary (a single draw) keep the equal weights."""
        if reference is not None:
            report = self.with_reference(reference)
            return report.centre(values, inplace=True), report.weights
        self.centre(values, inplace=True)
        flat = values.reshape(-1, values.shape[-1])
        if len(flat) < 2:
            return values, self.weights
        comp, n = self.component, self.n_components
        bounded = self.bounded & (self.weights > 0)
        # One pass, not a fixed point: re-reading the variances in the new gauge makes the
        # most precise state the reference (its variance → 0), which is no better a gauge.
        var = _column_variance(flat)
        raw = np.where(bounded, 1.0 / np.where(var > 0, var, np.nan), 0.0)
        total = np.bincount(comp, np.where(np.isfinite(raw), raw, 0.0), n)
        usable = (np.bincount(comp, ~np.isfinite(raw), n) == 0) & (total > 0)
        weights = np.where(usable[comp], raw / np.where(total > 0, total, 1.0)[comp], self.weights)
        _replace(self, weights=weights).centre(values, inplace=True)
        return values, weights

    def with_reference(self, reference: str | None) -> PairData:
        """The same data with the gauge 'V(reference) = 0' in the reference's component."""
        if reference is None:
            return self
        pos = np.flatnonzero(self.states == reference)
        if len(pos) == 0:
            raise DataError(
                f"reference state {reference!r} is not in any modelled pair, so its potential "
                f"is not identified; choose a state that has transitions with known visits."
            )
        weights = self.weights.copy()
        comp = self.component[pos[0]]
        weights[self.component == comp] = 0.0
        weights[pos[0]] = 1.0
        return _replace(self, weights=weights)


def _replace(data: PairData, **changes) -> PairData:
    fields = {name: getattr(data, name) for name in data.__dataclass_fields__}
    fields.update(changes)
    return PairData(**fields)


def _column_variance(flat: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Variance of each column over the rows, two passes in blocks of rows (no full-size
    temporary: at 10× the paper's scale the draws alone are gigabytes)."""
    mean = np.zeros(flat.shape[1])
    for start in range(0, len(flat), chunk):
        mean += flat[start : start + chunk].sum(axis=0)
    mean /= len(flat)
    sq = np.zeros(flat.shape[1])
    for start in range(0, len(flat), chunk):
        block = flat[start : start + chunk] - mean
        sq += np.einsum("ij,ij->j", block, block)
    return sq / len(flat)


def _segment_sum(
    values: np.ndarray, labels: np.ndarray, n: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted sum of `values` (last axis) per label, over leading axes (sparse product)."""
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=float)
    indicator = sp.csr_matrix((w, (np.arange(len(labels)), labels)), shape=(len(labels), n))
    flat = values.reshape(-1, values.shape[-1])
    out = np.asarray((indicator.T @ flat.T).T)
    return out.reshape(values.shape[:-1] + (n,))


def _llm_name(data: Transitions, llm: str | None) -> str:
    names = data.llms
    if llm is None:
        if len(names) != 1:
            raise DataError(f"the data has several LLMs ({', '.join(names)}); pass llm=NAME.")
        return names[0]
    if llm not in names:
        raise DataError(f"unknown llm {llm!r}; the data has {', '.join(names)}.")
    return llm


def pair_data(data: Transitions, llm: str | None = None) -> PairData:
    """The modelled pairs, components, bounded states, cycles and gauge weights of one LLM."""
    name = _llm_name(data, llm)
    pairs = data.pairs(name)
    known = (
        np.isfinite(pairs["N_f"].to_numpy(float))
        & np.isfinite(pairs["N_g"].to_numpy(float))
        & (pairs["N_f"].to_numpy(float) > 0)
        & (pairs["N_g"].to_numpy(float) > 0)
    )
    excluded = pairs[~known].reset_index(drop=True)
    kept = pairs[known].reset_index(drop=True)
    if kept.empty:
        where = f"{data.origin + ': ' if data.origin else ''}"
        if pairs.empty:
            raise DataError(
                f"{where}not enough data for a potential: there is no transition between two "
                f"different states{f' for LLM {name!r}' if len(data.llms) > 1 else ''} (only "
                f"self-steps, or no rows), so no potential difference can be estimated."
            )
        unvisited = sorted(
            set(pairs.loc[~(pairs["N_f"].to_numpy(float) > 0), "f"].astype(str))
            | set(pairs.loc[~(pairs["N_g"].to_numpy(float) > 0), "g"].astype(str))
        )
        shown = ", ".join(repr(s if len(s) <= 60 else s[:59] + "…") for s in unvisited[:3])
        more = f" and {len(unvisited) - 3} more" if len(unvisited) > 3 else ""
        raise DataError(
            f"{where}not enough data for a potential: every transition has an end with no "
            f"known visits ({shown}{more}; a pooled state such as INVALID is never a prompt), "
            f"so no potential difference can be estimated. Give those states' visits (a "
            f"visits table, or --visits uniform/outgoing), or collect valid answers."
        )
    gi, gj = kept["i"].to_numpy(np.int64), kept["j"].to_numpy(np.int64)
    used = np.unique(np.concatenate([gi, gj]))
    i, j = np.searchsorted(used, gi), np.searchsorted(used, gj)
    n_fg = kept["n_fg"].to_numpy(float)
    n_gf = kept["n_gf"].to_numpy(float)
    k = len(used)
    undirected = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(k, k))
    component = connected_components(undirected, directed=False)[1]
    bounded = _bounded(i, j, n_fg, n_gf, component, k)
    weights = _centring_weights(component, bounded)
    names = as_names(data.states.to_numpy()[used])
    cycle_pairs, cycle_names = _modelled_cycles(data, name, used, gi, gj)
    # names stay objects: `astype(str)` would copy every name at the width of the longest
    unidentified = as_names(data.states[~np.isin(np.arange(data.n_states), used)])
    return PairData(
        llm=name,
        states=names,
        i=i,
        j=j,
        n_fg=n_fg,
        n_gf=n_gf,
        N_f=kept["N_f"].to_numpy(float),
        N_g=kept["N_g"].to_numpy(float),
        visits=data.visits_array(name)[used],
        component=component,
        bounded=bounded,
        weights=weights,
        cycle_pairs=cycle_pairs,
        cycle_names=cycle_names,
        unidentified=unidentified,
        excluded_pairs=excluded,
    )


def _bounded(i, j, n_fg, n_gf, component, k) -> np.ndarray:
    """States in the largest strongly connected piece (size ≥ 2) of their component."""
    rows = np.concatenate([i[n_fg > 0], j[n_gf > 0]])
    cols = np.concatenate([j[n_fg > 0], i[n_gf > 0]])
    directed = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(k, k))
    scc = connected_components(directed, directed=True, connection="strong")[1]
    size = np.bincount(scc)[scc]
    table = pd.DataFrame({"component": component, "scc": scc, "size": size})
    best = table.sort_values(["size", "scc"], ascending=[False, True]).drop_duplicates("component")
    chosen = pd.Series(best["scc"].to_numpy(), index=best["component"].to_numpy())
    return (scc == chosen.reindex(component).to_numpy()) & (size >= 2)


def _centring_weights(component: np.ndarray, bounded: np.ndarray) -> np.ndarray:
    n = int(component.max()) + 1
    n_bounded = np.bincount(component, weights=bounded.astype(float), minlength=n)
    n_all = np.bincount(component, minlength=n).astype(float)
    use_bounded = n_bounded[component] > 0
    return np.where(
        use_bounded, bounded / np.maximum(n_bounded[component], 1), 1.0 / n_all[component]
    )


def _modelled_cycles(data, name, used, gi, gj) -> tuple[np.ndarray, np.ndarray]:
    """3-cycles (all six edges seen) whose three pairs are modelled; pair positions of ab, bc, ac."""
    cycles = data.cycles(name)
    if cycles.empty:
        return np.empty((0, 3), dtype=np.int64), np.empty((0, 3), dtype=object)
    n = data.n_states
    codes = gi * n + gj  # sorted: pairs() orders by (i, j)
    order = np.argsort(codes)
    ca, cb, cc = (cycles[c].to_numpy(np.int64) for c in ("i", "j", "k"))
    wanted = np.stack([ca * n + cb, cb * n + cc, ca * n + cc], axis=1)
    pos = np.searchsorted(codes[order], wanted)
    pos = np.minimum(pos, len(codes) - 1)
    found = codes[order][pos] == wanted
    keep = found.all(axis=1)
    pair_pos = order[pos[keep]]
    names = cycles[["a", "b", "c"]].to_numpy(dtype=object)[keep]
    return pair_pos.astype(np.int64), names
