"""Design-matched calibration: how often is the verdict wrong, and do the intervals cover, on
data like the user's?

`calibrate(data, posterior, ...)` (``detailed-balance calibrate``):

1. **The design** (`calibration_design`) is read off the user's fit: its modelled states, the
   calls per state N_f (rounded visits), its modelled pairs (the set of possible moves) and,
   per replicate, one draw of the fitted equilibrium posterior.
2. **Replicates** (`replicate_data`): per state one Multinomial(N_f; T_f·, remainder) over its
   modelled neighbours and a remainder outcome (written as a self step), all states at once
   (`diagnostics.kernel_ppc.multinomial_rows`, no loop over states). The kernel:

   - kernel-likelihood fits store per draw the log-conductances u (pair) and log-remainders r
     (state): X_fg = X_gf = exp(u_p), X_ff = exp(r_f), π_f = Σ_g X_fg + X_ff,
     T_fg = X_fg / π_f; the true V is −log π_f;
   - pair-likelihood fits store no kernel, only V: the conductances come from the data,
     T_fg = k_p exp((V_f − V_g) / 2) / c with k_p = m_p / (N_f e^{(V_f−V_g)/2} +
     N_g e^{(V_g−V_f)/2}), so each pair's expected number of moves is its observed
     m_p = n_fg + n_gf, and one constant c = max(1, largest row sum) for all states keeps every
     row a probability (the rest is the remainder); the chain is reversible with π ∝ e^{−V}.

   **Driven** replicates add an antisymmetric drive of size d on the cycle space of the pair
   graph: z ~ N(0, 1) per pair, its gradient part (the least-squares φ_f − φ_g) removed, scaled
   to root-mean-square d over the pairs on cycles; then log X_fg += A_p / 2, log X_gf −= A_p / 2
   and the rows are renormalised, so log T_fg − log T_gf gains A_p plus a gradient (the new
   row normalisation), and the loop affinity of every cycle is exactly the sum of its A. The same posterior draw is used at every
   drive size of one replicate number (paired replicates).
3. **Refit** each replicate exactly as the user's fit was made (model, model_config with the
   likelihood it resolved to, method, sampler settings from the fit's provenance), then the
   verdict by `bayes_check` (the ``check --posterior`` path: it fits the non-equilibrium model
   with the same method and draws). Recorded per replicate: the verdict, coverage of the 90%
   intervals of V on the refit's bounded states (reversible replicates; truth centred with the
   refit's own centring weights per component) and of the loop affinities of its 3-cycles.
4. **Summary** (`summarise`): false-alarm rate (``violated`` on reversible replicates), power
   per drive (``violated`` on driven ones), each with a 95% Clopper–Pearson interval, the
   smallest drive detected ≥ 80% of the time, pooled coverages → ``calibration.json``.

Replicates run as independent tasks on dask.distributed (`_tasks.run_tasks`); each finished
replicate is written to ``replicates.parquet`` at once, so a killed run resumes where it
stopped (`resume=True` skips the replicate ids already finished with the same settings).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from detailed_balance.data import DataError, Transitions
from detailed_balance.data.files import OutputError, prepare_dir, write_frame_atomic
from detailed_balance.data.files import write_text_atomic as _write_text
from detailed_balance.diagnostics import FitError, as_tree, same_data, stack_draws
from detailed_balance.diagnostics.kernel_ppc import multinomial_rows
from detailed_balance.models import model_from_name
from detailed_balance.sampling import fit, in_gauge, load_fit

from ._tasks import run_tasks
from .verdict import bayes_check

CALIBRATION_CI = 0.9
POWER_TARGET = 0.8
BINOMIAL_LEVEL = 0.95
REPLICATES_FILE = "replicates.parquet"
SUMMARY_FILE = "calibration.json"
TABLE_FILE = "calibration.csv"
REPORT_FILE = "calibration.html"
# settings a resumed run must share with the rows it keeps
_SETTING_COLUMNS = ("design_hash", "seed", "method")


@dataclass(frozen=True)
class Design:
    """Everything a replicate task needs (scattered to the workers once).

    Outcome entries of every state in CSR order (its moves, then its remainder last):
    ``entry_pair`` (−1 for the remainder), ``entry_sign`` (+1 for i → j, −1 for j → i).
    ``u``/``r`` (kernel) or ``v`` (pairs) hold only the posterior draws the replicates use.
    """

    states: np.ndarray  # (K,) names
    llm: str
    calls: np.ndarray  # (K,) int64, N_f
    pair_i: np.ndarray  # (P,)
    pair_j: np.ndarray  # (P,)
    moves: np.ndarray  # (P,) observed m_p = n_fg + n_gf
    kernel: bool
    u: np.ndarray | None  # (D, P) log-conductances (kernel fits)
    r: np.ndarray | None  # (D, K) log-remainders (kernel fits)
    v: np.ndarray | None  # (D, K) V (pair fits)
    indptr: np.ndarray
    entry_state: np.ndarray
    entry_pair: np.ndarray
    entry_sign: np.ndarray
    on_cycle: np.ndarray  # (P,) bool: pair lies on a cycle of the pair graph
    model: str
    model_config: dict[str, Any]
    method: str
    sampler: dict[str, Any]
    verdict_method: str
    ci: float
    design_hash: str
    origin: str = ""

    @property
    def n_cycle_pairs(self) -> int:
        return int(self.on_cycle.sum())


@dataclass
class Calibration:
    """What `calibrate` returns: the ``calibration.json`` object, the per-replicate rows, the
    per-drive table and the files written (empty without `out`)."""

    summary: dict[str, Any]
    replicates: pd.DataFrame
    table: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


# -- the design ---------------------------------------------------------------------------
def _sampler_settings(attrs: dict[str, Any], method: str) -> dict[str, Any]:
    """The sampler options of the user's fit that a refit must repeat."""
    saved = json.loads(str(attrs.get("sampler_config", "{}")) or "{}")
    keep = ["draws", "chains"]
    if method == "nuts":
        keep += ["tune", "target_accept", "maxdepth", "sampler", "window_switch_freq"]
    if method == "advi":
        keep += ["advi_iterations", "advi_learning_rate", "advi_method"]
    settings = {k: saved[k] for k in keep if saved.get(k) is not None}
    settings.setdefault("draws", 1000)
    settings.setdefault("chains", 1 if method == "map" else 4)
    if method == "nuts":
        settings.setdefault("tune", 1000)
    return settings


def _entries(k: int, pair_i: np.ndarray, pair_j: np.ndarray) -> tuple[np.ndarray, ...]:
    p = np.arange(len(pair_i))
    state = np.concatenate([pair_i, pair_j, np.arange(k)])
    pair = np.concatenate([p, p, np.full(k, -1)])
    sign = np.concatenate([np.ones(len(p)), -np.ones(len(p)), np.zeros(k)])
    order = np.lexsort((pair < 0, state))  # by state, remainder last
    degree = np.bincount(state, minlength=k)
    indptr = np.concatenate([[0], np.cumsum(degree)]).astype(np.int64)
    return indptr, state[order], pair[order], sign[order]


def _on_cycle(k: int, pair_i: np.ndarray, pair_j: np.ndarray) -> np.ndarray:
    """Pairs that lie on some cycle of the pair graph (the non-bridges): the cycle-space
    projection of a random vector is non-zero exactly there (with probability 1)."""
    z = np.random.default_rng(12345).standard_normal(len(pair_i))
    a = _cycle_projection(k, pair_i, pair_j, z)
    return np.abs(a) > 1e-8 * max(1.0, float(np.abs(z).max(initial=0.0)))


def _cycle_projection(k: int, pair_i: np.ndarray, pair_j: np.ndarray, z: np.ndarray) -> np.ndarray:
    """z minus its gradient part: z − (φ_i − φ_j) with φ the least-squares fit (per component;
    the Laplacian solve is grounded at one state per component)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla
    from scipy.sparse.csgraph import connected_components

    n = len(pair_i)
    if n == 0:
        return z.copy()
    rows = np.concatenate([np.arange(n), np.arange(n)])
    d = sp.csr_matrix(
        (np.concatenate([np.ones(n), -np.ones(n)]), (rows, np.concatenate([pair_i, pair_j]))),
        shape=(n, k),
    )
    lap = (d.T @ d).tocsc()
    rhs = d.T @ z
    comp = connected_components(lap, directed=False)[1]
    ground = np.unique(comp, return_index=True)[1]
    keep = np.setdiff1d(np.arange(k), ground)
    phi = np.zeros(k)
    if len(keep):
        phi[keep] = spla.spsolve(lap[keep][:, keep].tocsc(), rhs[keep])
    return z - d @ phi


def calibration_design(
    fitted: Any,
    replicates: int,
    *,
    seed: int = 0,
    method: str | None = None,
    ci: float = CALIBRATION_CI,
) -> Design:
    """The design of the user's fit (module docstring, step 1) with the posterior draws of
    `replicates` replicate numbers (drawn with `seed`)."""
    tree = as_tree(fitted)
    attrs = dict(tree.attrs)
    data = getattr(fitted, "data", None)
    if data is None:
        raise FitError("calibrate needs a fit that carries its data (a BayesFit or a fit file).")
    const = tree["constant_data"]
    post = tree["posterior"]
    names = np.asarray(const["state"].values, dtype=object)
    pair_i = np.asarray(const["pair_i"].values, dtype=np.int64)
    pair_j = np.asarray(const["pair_j"].values, dtype=np.int64)
    visits = np.asarray(const["visits"].values, dtype=float)
    calls = np.rint(visits).astype(np.int64)
    moves = (const["n_fg"].values + const["n_gf"].values).astype(float)
    out = np.bincount(pair_i, const["n_fg"].values, len(names))
    out += np.bincount(pair_j, const["n_gf"].values, len(names))
    calls = np.maximum(calls, np.rint(out).astype(np.int64))
    model_name = str(attrs.get("model", "equilibrium"))
    config = json.loads(str(attrs.get("model_config", "{}")) or "{}")
    if "likelihood" in config and attrs.get("likelihood"):
        config["likelihood"] = str(attrs["likelihood"])  # what 'auto' resolved to on the data
    fit_method = str(attrs.get("method", "map"))
    chosen = method or fit_method
    sampler = _sampler_settings(attrs, fit_method)
    if chosen != fit_method:
        sampler = _sampler_settings({}, chosen)
    kernel = "log_conductance" in post.data_vars and "log_remainder" in post.data_vars
    n_samples = int(np.prod([post["V"].sizes[d] for d in ("chain", "draw") if d in post["V"].dims]))
    # replicate number n uses draw chosen_draws[n], the same whatever the number of replicates
    chosen_draws = np.array(
        [
            np.random.default_rng([int(seed), 0, n]).integers(0, n_samples)
            for n in range(int(replicates))
        ],
        dtype=np.int64,
    )
    u = r = v = None
    if kernel:
        u = stack_draws(post["log_conductance"], "pair")[chosen_draws]
        r_all = post["log_remainder"]
        r_names = pd.Index(np.asarray(r_all["state"].values, dtype=object))
        r = stack_draws(r_all, "state")[chosen_draws][:, r_names.get_indexer(names)]
    else:
        v_all = post["V"]
        v_names = pd.Index(np.asarray(v_all["state"].values, dtype=object))
        v = stack_draws(v_all, "state")[chosen_draws][:, v_names.get_indexer(names)]
    indptr, entry_state, entry_pair, entry_sign = _entries(len(names), pair_i, pair_j)
    digest = hashlib.sha256()  # the data, the posterior (its mean V) and the refit settings
    digest.update(str(attrs.get("data_hash", data.data_hash())).encode())
    digest.update(json.dumps([model_name, config, chosen, sampler, ci], sort_keys=True).encode())
    digest.update(np.ascontiguousarray(post["V"].mean(("chain", "draw")).values).tobytes())
    return Design(
        states=names,
        llm=str(attrs.get("llm", "")) or data.llms[0],
        calls=calls,
        pair_i=pair_i,
        pair_j=pair_j,
        moves=moves,
        kernel=kernel,
        u=u,
        r=r,
        v=v,
        indptr=indptr,
        entry_state=entry_state,
        entry_pair=entry_pair,
        entry_sign=entry_sign,
        on_cycle=_on_cycle(len(names), pair_i, pair_j),
        model=model_name,
        model_config=config,
        method=chosen,
        sampler=sampler,
        verdict_method=chosen,
        ci=float(ci),
        design_hash=digest.hexdigest()[:16],
        origin=str(data.origin or ""),
    )


def replicate_specs(replicates: int, drives: Sequence[float], seed: int) -> list[dict]:
    """One spec per (drive, replicate number): ``replicate`` (the number n: its posterior
    draw, shared by every drive size), ``drive`` (0 = reversible), ``id`` (``"drive/n"``, the
    key a resumed run skips), ``seed`` (of its counts and its fits)."""
    specs = []
    for drive in [0.0, *[float(d) for d in drives]]:
        for number in range(int(replicates)):
            code = int(round(drive * 1_000_000))
            state = np.random.SeedSequence([int(seed), 1, number, code]).generate_state(1)[0]
            specs.append(
                {
                    "id": replicate_id(drive, number),
                    "replicate": number,
                    "drive": drive,
                    "seed": int(state) % 2**31,
                }
            )
    return specs


def replicate_id(drive: float, number: int) -> str:
    return f"{float(drive):g}/{int(number)}"


# -- one replicate ----------------------------------------------------------------------------
@dataclass
class Replicate:
    """A replicate data set and its truth."""

    data: Transitions
    potential: pd.Series  # true V by state name (reversible replicates; NaN when driven)
    affinity: np.ndarray  # (P,) A_p of each design pair (i → j)


def _drive_vector(design: Design, size: float, rng: np.random.Generator) -> np.ndarray:
    z = rng.standard_normal(len(design.pair_i))
    if size == 0 or design.n_cycle_pairs == 0:
        return np.zeros(len(design.pair_i))
    a = _cycle_projection(len(design.states), design.pair_i, design.pair_j, z)
    a[~design.on_cycle] = 0.0
    rms = float(np.sqrt(np.mean(a[design.on_cycle] ** 2)))
    return a * (size / rms)


def _log_weights(design: Design, draw: int, affinity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per outcome entry: the log weight (unnormalised) and the true V of the undriven kernel."""
    move = design.entry_pair >= 0
    pair = np.where(move, design.entry_pair, 0)
    half = design.entry_sign * affinity[pair] / 2
    w = np.empty(len(design.entry_pair))
    if design.kernel:
        u, r = design.u[draw], design.r[draw]
        w[move] = u[pair[move]] + half[move]
        w[~move] = r[design.entry_state[~move]]
        base = np.where(move, u[pair], r[design.entry_state])
        top = np.maximum.reduceat(base, design.indptr[:-1])
        log_pi = top + np.log(
            np.add.reduceat(np.exp(base - top[design.entry_state]), design.indptr[:-1])
        )
        return w, -log_pi
    v = design.v[draw]
    gap = v[design.pair_i] - v[design.pair_j]  # V_f − V_g per pair (f = i)
    n_i = design.calls[design.pair_i].astype(float)
    n_j = design.calls[design.pair_j].astype(float)
    log_k = np.log(design.moves) - np.logaddexp(np.log(n_i) + gap / 2, np.log(n_j) - gap / 2)
    moves = log_k[pair] + design.entry_sign * (gap[pair] / 2) + half
    rows = np.add.reduceat(np.where(move, np.exp(moves), 0.0), design.indptr[:-1])
    c = max(1.0, float(rows.max()) * (1 + 1e-9))
    w[move] = moves[move] - np.log(c)
    rest = np.clip(1.0 - rows / c, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        w[~move] = np.log(rest[design.entry_state[~move]])
    return w, v - v.mean()


def replicate_data(design: Design, spec: dict) -> Replicate:
    """The counts of one replicate (module docstring, step 2); the same spec gives the same
    counts."""
    rng = np.random.default_rng(int(spec["seed"]))
    affinity = _drive_vector(design, float(spec["drive"]), rng)
    w, v_true = _log_weights(design, int(spec["replicate"]), affinity)
    starts = design.indptr[:-1]
    top = np.maximum.reduceat(w, starts)
    e = np.exp(w - top[design.entry_state])
    p = e / np.add.reduceat(e, starts)[design.entry_state]
    counts = multinomial_rows(rng, design.calls, p, design.indptr)
    move = design.entry_pair >= 0
    pair = design.entry_pair[move]
    forward = design.entry_sign[move] > 0
    source = np.where(forward, design.pair_i[pair], design.pair_j[pair])
    target = np.where(forward, design.pair_j[pair], design.pair_i[pair])
    src = np.concatenate([source, design.entry_state[~move]])
    tgt = np.concatenate([target, design.entry_state[~move]])
    n = np.concatenate([counts[move], counts[~move]])
    keep = n > 0
    names = design.states
    table = pd.DataFrame(
        {
            "llm": design.llm,
            "source": names[src[keep]],
            "target": names[tgt[keep]],
            "count": n[keep].astype(np.int64),
        }
    )
    visits = pd.DataFrame(
        {"llm": design.llm, "source": names, "visits": design.calls.astype(float)}
    )
    data = Transitions.from_counts(table, visits, origin=f"calibration replicate {spec['id']}")
    potential = pd.Series(v_true, index=pd.Index(names, dtype=object), name="potential")
    if float(spec["drive"]) != 0:
        potential[:] = np.nan
    return Replicate(data, potential, affinity)


def refit(design: Design, data: Transitions, seed: int) -> Any:
    """`data` fitted exactly as the user's fit was (model, config, method, sampler settings)."""
    model = model_from_name(design.model, design.model_config)
    options = dict(design.sampler)
    if design.method == "nuts":
        options["cores"] = 1
    return fit(model, data, method=design.method, seed=int(seed), progressbar=False, **options)


def centred_truth(result: Any, potential: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(truth, bounded) on the fit's states, the truth centred with the fit's own centring
    weights per component (the gauge the fit reports V in)."""
    const = as_tree(result)["constant_data"]
    truth = in_gauge(const.to_dataset(), potential).to_numpy()
    return truth, np.asarray(const["bounded"].values, dtype=bool)


def v_coverage(result: Any, potential: pd.Series, ci: float = CALIBRATION_CI) -> np.ndarray:
    """Per bounded state of the fit: does its `ci` interval of V cover the centred truth?"""
    truth, bounded = centred_truth(result, potential)
    post = as_tree(result)["posterior"]["V"]
    names = pd.Index(np.asarray(post["state"].values, dtype=object))
    const_names = pd.Index(
        np.asarray(as_tree(result)["constant_data"]["state"].values, dtype=object)
    )
    draws = stack_draws(post, "state")[:, names.get_indexer(const_names)]
    lo, hi = np.quantile(draws[:, bounded], [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    t = truth[bounded]
    return (lo <= t) & (t <= hi)


def loop_truth(design: Design, affinity: np.ndarray, cycles: pd.DataFrame) -> np.ndarray:
    """True affinity A_ab + A_bc + A_ca of each cycle (columns ``a, b, c``: state names)."""
    if cycles is None or not len(cycles):
        return np.zeros(0)
    index = pd.Index(design.states)
    k = len(design.states)
    codes = pd.Index(design.pair_i * k + design.pair_j)

    def edge(x, y):
        pi, pj = index.get_indexer(cycles[x].to_numpy()), index.get_indexer(cycles[y].to_numpy())
        lo, hi = np.minimum(pi, pj), np.maximum(pi, pj)
        pos = codes.get_indexer(lo * k + hi)
        if (pos < 0).any():
            raise FitError("a cycle of the replicate's fit is not a pair of the design.")
        return np.where(pi < pj, affinity[pos], -affinity[pos])

    return edge("a", "b") + edge("b", "c") + edge("c", "a")


def run_replicate(design: Design, spec: dict) -> dict[str, Any]:
    """One replicate end to end (simulate, refit, verdict, coverage) → its row."""
    start = time.perf_counter()
    rep = replicate_data(design, spec)
    eq = refit(design, rep.data, int(spec["seed"]))
    settings = {k: design.sampler.get(k) for k in ("draws", "tune", "chains")}
    verdict = bayes_check(
        rep.data,
        eq,
        method=design.verdict_method,
        seed=int(spec["seed"]),
        ci=design.ci,
        return_verdict=True,
        **settings,
    )
    row: dict[str, Any] = {
        "replicate": int(spec["replicate"]),
        "drive": float(spec["drive"]),
        "verdict": verdict.verdict,
    }
    if float(spec["drive"]) == 0:
        inside = v_coverage(eq, rep.potential, design.ci)
        row.update(v_hits=int(inside.sum()), v_total=int(inside.size))
    else:
        row.update(v_hits=0, v_total=0)
    cycles = verdict.cycles
    if cycles is not None and len(cycles):
        truth = loop_truth(design, rep.affinity, cycles)
        inside = (cycles["lower"].to_numpy() <= truth) & (truth <= cycles["upper"].to_numpy())
        row.update(
            loop_hits=int(inside.sum()),
            loop_total=int(inside.size),
            mean_abs_loop=float(np.abs(truth).mean()),
        )
    else:
        row.update(loop_hits=0, loop_total=0, mean_abs_loop=float("nan"))
    row["seconds"] = time.perf_counter() - start
    return row


# -- the summary ------------------------------------------------------------------------------
def binomial_interval(k: int, n: int, level: float = BINOMIAL_LEVEL) -> tuple[float, float]:
    """Clopper–Pearson interval of a rate k / n (NaN for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import beta

    alpha = 1 - level
    lower = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


def _rate(violated: int, n: int) -> dict[str, Any]:
    lower, upper = binomial_interval(violated, n)
    rate = violated / n if n else float("nan")
    return {"rate": _num(rate), "lower": _num(lower), "upper": _num(upper), "n": int(n)}


def _num(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def summarise(rows: pd.DataFrame, drives: Sequence[float] = (), ci: float = CALIBRATION_CI) -> dict:
    """The ``calibration.json`` object from the per-replicate rows (finished ones count;
    failed ones are listed)."""
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    failed = rows[rows["status"] != "ok"] if "status" in rows else rows.iloc[:0]
    violated = ok["verdict"] == "violated"
    reversible = ok["drive"] == 0
    v_total = int(ok.loc[reversible, "v_total"].sum())
    loop_total = int(ok["loop_total"].sum())
    power = []
    levels = sorted({float(d) for d in drives} | set(ok.loc[~reversible, "drive"].astype(float)))
    for drive in levels:
        at = ok["drive"] == drive
        entry = {"drive": drive, **_rate(int(violated[at].sum()), int(at.sum()))}
        loops = ok.loc[at, "mean_abs_loop"].to_numpy(float)
        entry["mean_abs_loop_affinity"] = (
            _num(np.nanmean(loops)) if np.isfinite(loops).any() else None
        )
        power.append(entry)
    detected = [p["drive"] for p in power if p["rate"] is not None and p["rate"] >= POWER_TARGET]
    return {
        "replicates": int(len(ok)),
        "ci": ci,
        "coverage": {
            "V": _num(ok.loc[reversible, "v_hits"].sum() / v_total) if v_total else None,
            "loop_affinity": _num(ok["loop_hits"].sum() / loop_total) if loop_total else None,
            "beta": None,
        },
        "false_alarm": _rate(int(violated[reversible].sum()), int(reversible.sum())),
        "power": power,
        "min_detectable_drive": min(detected) if detected else None,
        "verdicts": {str(k): int(v) for k, v in ok["verdict"].value_counts().items()},
        "failed": [
            {"replicate": int(r.replicate), "drive": float(r.drive), "error": str(r.error)}
            for r in failed.itertuples()
        ],
    }


def calibration_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per drive level: replicates, verdicts ``violated``, the rate and its interval, coverages."""
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    out = []
    for drive, group in ok.groupby("drive", sort=True):
        k, n = int((group["verdict"] == "violated").sum()), len(group)
        lower, upper = binomial_interval(k, n)
        v_total, loop_total = int(group["v_total"].sum()), int(group["loop_total"].sum())
        out.append(
            {
                "drive": float(drive),
                "replicates": n,
                "violated": k,
                "rate": k / n,
                "lower": lower,
                "upper": upper,
                "V_coverage": group["v_hits"].sum() / v_total if v_total else np.nan,
                "loop_coverage": group["loop_hits"].sum() / loop_total if loop_total else np.nan,
                "mean_abs_loop": group["mean_abs_loop"].mean(),
            }
        )
    return pd.DataFrame(out)


# -- the job ----------------------------------------------------------------------------------
def _the_fit(data: Transitions | None, posterior: Any, method: str | None, seed: int) -> Any:
    if posterior is None:
        if data is None:
            raise FitError("calibrate needs DATA or a fit (posterior=...).")
        from detailed_balance.models import EquilibriumModel

        chosen = method or "map"
        options = {"draws": 1000, "chains": 1 if chosen == "map" else 4}
        if chosen == "nuts":
            options["tune"] = 1000
        return fit(EquilibriumModel(), data, method=chosen, seed=seed, progressbar=False, **options)
    fitted = load_fit(posterior) if isinstance(posterior, str | Path) else posterior
    if data is not None and not same_data(data, fitted):
        raise FitError(
            "the fit was made on other data than DATA (their counts or visits differ); pass the "
            "data the fit was made from, or leave DATA out (the fit carries its data)."
        )
    if "A" in as_tree(fitted)["posterior"].data_vars:
        raise FitError(
            "calibrate draws reversible replicates from an equilibrium posterior; give the "
            "equilibrium fit (`fit --model equilibrium`), not the non-equilibrium one."
        )
    return fitted


def _resume_rows(path: Path, design: Design, seed: int) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    rows = pd.read_parquet(path)
    mine = (
        (rows["design_hash"] == design.design_hash)
        & (rows["seed"] == int(seed))
        & (rows["method"] == design.method)
    )
    if not mine.all():
        raise OutputError(
            f"{path} holds replicates of another calibration (other data, posterior, seed or "
            f"method); give another --out folder, or delete the file to start again."
        )
    return rows


def calibrate(
    data: Transitions | None = None,
    posterior: Any = None,
    *,
    out: str | Path | None = None,
    replicates: int = 40,
    method: str | None = None,
    drive: Sequence[float] = (0.5, 1.0),
    workers: int = 2,
    scheduler: str | None = None,
    client: Any = None,
    seed: int = 0,
    ci: float = CALIBRATION_CI,
    resume: bool = True,
    progress: IO[str] | None = sys.stderr,
    callback: Callable[[dict], None] | None = None,
) -> Calibration:
    """Design-matched calibration of the verdict and the intervals (module docstring).

    `posterior`: the user's equilibrium fit (a `BayesFit` or a fit file); without it the
    equilibrium model is fitted to `data` with `method` (default map). `method` given with a
    fit refits the replicates by that method instead of the fit's own (e.g. a quick ``map``
    calibration of a NUTS fit). `replicates` per drive level (0 = reversible, then each of
    `drive`). With `out`, every finished replicate is written to ``out/replicates.parquet``
    at once and a rerun with the same settings does only the missing ones (`resume`);
    ``calibration.json`` and ``calibration.csv`` are written at the end. `callback(row)` is
    called after each finished replicate (tests kill a worker there).
    """
    if int(replicates) < 1:
        raise ValueError(f"replicates must be at least 1, got {replicates}.")
    drives = [float(d) for d in drive]
    if any(not np.isfinite(d) or d <= 0 for d in drives):
        raise ValueError(f"every drive must be a positive number, got {list(drive)}.")
    out_dir = prepare_dir(out, "calibration folder") if out is not None else None
    fitted = _the_fit(data, posterior, method, seed)
    design = calibration_design(fitted, replicates, seed=seed, method=method, ci=ci)
    specs = replicate_specs(replicates, drives if design.n_cycle_pairs else [], seed)
    notes = []
    if drives and not design.n_cycle_pairs:
        notes.append(
            "the pair graph has no cycle: no drive can break detailed balance, so no driven replicates were run"
        )
    path = out_dir / REPLICATES_FILE if out_dir is not None else None
    done = _resume_rows(path, design, seed) if (path is not None and resume) else None
    rows = [] if done is None else done.to_dict("records")
    finished = {replicate_id(r["drive"], r["replicate"]) for r in rows if r.get("status") == "ok"}
    rows = [r for r in rows if replicate_id(r["drive"], r["replicate"]) in finished]
    todo = [s for s in specs if s["id"] not in finished]
    stamp = {"design_hash": design.design_hash, "seed": int(seed), "method": design.method}

    def write() -> None:
        if path is not None:
            frame = pd.DataFrame(rows).sort_values(["drive", "replicate"], kind="stable")
            write_frame_atomic(frame, path, "replicates table", index=False)

    def on_result(spec: dict, row: dict) -> None:
        rows.append({**row, "status": "ok", "error": "", **stamp})
        write()
        if callback is not None:
            callback(rows[-1])

    def on_failure(spec: dict, error: str) -> None:
        rows.append(
            {
                "replicate": int(spec["replicate"]),
                "drive": float(spec["drive"]),
                "verdict": "failed",
                "v_hits": 0,
                "v_total": 0,
                "loop_hits": 0,
                "loop_total": 0,
                "mean_abs_loop": float("nan"),
                "seconds": float("nan"),
                "status": "failed",
                "error": error,
                **stamp,
            }
        )
        write()

    run_tasks(
        run_replicate,
        design,
        todo,
        on_result=on_result,
        on_failure=on_failure,
        workers=workers,
        scheduler=scheduler,
        client=client,
        label="calibrate",
        progress=progress,
    )
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise DataError("no replicate was run.")
    frame = frame.sort_values(["drive", "replicate"], kind="stable").reset_index(drop=True)
    summary = summarise(frame, drives if design.n_cycle_pairs else [], ci)
    summary.update(
        method=design.method,
        model=design.model,
        likelihood=str(design.model_config.get("likelihood", "")),
        kernel_from=(
            "posterior kernel (u, r)" if design.kernel else "posterior V + observed pair totals"
        ),
        states=int(len(design.states)),
        pairs=int(len(design.pair_i)),
        calls=int(design.calls.sum()),
        seed=int(seed),
        resumed=len(finished),
        notes=notes,
    )
    table = calibration_table(frame)
    files: dict[str, Path] = {}
    if out_dir is not None:
        files["replicates"] = path
        files["summary"] = _write_text(
            out_dir / SUMMARY_FILE, json.dumps(summary, indent=2), "calibration summary"
        )
        files["table"] = write_frame_atomic(
            table, out_dir / TABLE_FILE, "calibration table", index=False
        )
        from detailed_balance.reports.calibration import calibration_document

        written = calibration_document(summary, table).write(out_dir / REPORT_FILE)
        files["report"] = written["html"]
    return Calibration(summary, frame, table, files)
