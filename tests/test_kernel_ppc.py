"""The kernel fit's posterior predictive check of per-state outcome counts, against a known truth.

Fits are hand-made DataTrees in the kernel fit's layout (posterior `log_conductance` per pair,
`log_remainder` per state, `V`; constant_data pair_i, pair_j, n_fg, n_gf, visits), whose
"posterior" is all mass on the kernel that generated the counts, so the replicated counts and
the data come from one distribution. Counts are drawn here with numpy's own multinomial, one
state at a time, independently of the sampler under test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from detailed_balance.diagnostics import FitError, bayes_verdict, kernel_ppc
from detailed_balance.diagnostics.kernel_ppc import benjamini_hochberg, multinomial_rows


# -- a reversible kernel with known parameters and counts drawn from it -----------------------
def make_kernel(n_states=30, edge_prob=0.25, seed=0, calls=(20, 120)):
    """Pairs of a connected random graph (a ring plus random chords), u, r and visits."""
    rng = np.random.default_rng(seed)
    ring = np.stack([np.arange(n_states), (np.arange(n_states) + 1) % n_states], axis=1)
    iu, ju = np.triu_indices(n_states, 1)
    chords = np.stack([iu, ju], axis=1)[rng.random(len(iu)) < edge_prob]
    pairs = np.unique(np.sort(np.concatenate([ring, chords]), axis=1), axis=0)
    u = rng.normal(0.0, 1.0, len(pairs))
    r = rng.normal(1.0, 1.0, n_states)
    visits = rng.integers(calls[0], calls[1], n_states)
    return pairs[:, 0], pairs[:, 1], u, r, visits


def kernel_rows(pi_, pj, u, r):
    """Dense rows: T (K × K) with the remainder probability on the diagonal."""
    w = np.diag(np.exp(r))
    w[pi_, pj] = np.exp(u)
    w[pj, pi_] = np.exp(u)
    return w / w.sum(axis=1, keepdims=True)


def simulate_counts(pi_, pj, u, r, visits, seed, odd_state=None, odd_row=None):
    """(n_fg, n_gf) per pair from one Multinomial(N_f; row f) per state; `odd_row` replaces
    state `odd_state`'s row (a misfit)."""
    rng = np.random.default_rng(seed)
    t = kernel_rows(pi_, pj, u, r)
    if odd_state is not None:
        t[odd_state] = odd_row
    counts = np.stack([rng.multinomial(n, row) for n, row in zip(visits, t, strict=True)])
    return counts[pi_, pj], counts[pj, pi_]


def kernel_tree(pi_, pj, u, r, visits, n_fg, n_gf, draws=200, names=None, v=None):
    """A kernel fit whose every draw is (u, r): 1 chain × `draws`."""
    k = len(r)
    names = np.array([f"s{i:02d}" for i in range(k)], dtype=object) if names is None else names
    if v is None:
        w = np.bincount(pi_, np.exp(u), k) + np.bincount(pj, np.exp(u), k) + np.exp(r)
        v = np.log(w).mean() - np.log(w)

    def rep(x):
        return np.broadcast_to(x, (1, draws, len(x))).copy()

    dims = ("chain", "draw")
    posterior = xr.Dataset(
        {
            "log_conductance": ((*dims, "pair"), rep(u)),
            "log_remainder": ((*dims, "state"), rep(r)),
            "V": ((*dims, "state"), rep(v)),
        },
        coords={"chain": [0], "draw": np.arange(draws), "state": names, "pair": np.arange(len(u))},
    )
    const = xr.Dataset(
        {
            "pair_f": ("pair", names[pi_]),
            "pair_g": ("pair", names[pj]),
            "pair_i": ("pair", pi_.astype(np.int64)),
            "pair_j": ("pair", pj.astype(np.int64)),
            "n_fg": ("pair", np.asarray(n_fg, dtype=np.int64)),
            "n_gf": ("pair", np.asarray(n_gf, dtype=np.int64)),
            "N_f": ("pair", visits[pi_].astype(float)),
            "N_g": ("pair", visits[pj].astype(float)),
            "visits": ("state", visits.astype(float)),
        },
        coords={"pair": np.arange(len(u)), "state": names},
    )
    tree = xr.DataTree.from_dict({"posterior": posterior, "constant_data": const})
    tree.attrs.update(method="map", model="equilibrium", likelihood="kernel")
    return tree


# -- (c) the multinomial replicate sampler ----------------------------------------------------
def test_multinomial_rows_totals_exact_and_moments_match():
    rng = np.random.default_rng(5)
    degree = np.array([1, 2, 5, 3, 40, 4])
    indptr = np.concatenate([[0], np.cumsum(degree)])
    calls = np.array([7, 0, 50, 1, 300, 25])
    p = rng.dirichlet(np.ones(40), 1)[0]
    rows = [np.array([1.0]), np.array([0.3, 0.7]), np.array([0.1, 0.0, 0.2, 0.6, 0.1])]
    rows += [np.array([0.0, 1.0, 0.0]), p, np.array([0.25, 0.25, 0.25, 0.25])]
    probs = np.concatenate(rows)
    draws = 20_000
    out = multinomial_rows(rng, calls, np.broadcast_to(probs, (draws, len(probs))), indptr)
    state = np.repeat(np.arange(len(degree)), degree)
    totals = np.add.reduceat(out, indptr[:-1], axis=1)
    assert np.array_equal(totals, np.broadcast_to(calls, totals.shape))
    assert (out >= 0).all() and (out[:, probs == 0] == 0).all()
    n_p = calls[state] * probs
    var = calls[state] * probs * (1 - probs)
    se = np.sqrt(var / draws)
    assert np.all(np.abs(out.mean(axis=0) - n_p) <= 4.5 * se + 1e-12)
    # variances too (sd of a sample variance ≈ var √(2/draws) for these counts)
    live = var > 0
    rel = out.var(axis=0)[live] / var[live]
    assert np.all(np.abs(rel - 1) < 6 * np.sqrt(2 / draws) + 0.02)
    # the negative covariance of two outcomes of one row: −N p_a p_b
    a, b = indptr[2] + 0, indptr[2] + 3
    cov = np.cov(out[:, a], out[:, b])[0, 1]
    assert cov == pytest.approx(-50 * probs[a] * probs[b], rel=0.1)


def test_multinomial_rows_broadcasts_draw_specific_rows():
    """Per-draw probabilities: each draw's mean follows its own row."""
    rng = np.random.default_rng(1)
    indptr = np.array([0, 2])
    p = np.array([[0.9, 0.1], [0.1, 0.9]])
    out = multinomial_rows(rng, np.array([1000]), np.repeat(p, 500, axis=0), indptr)
    assert out[:500, 0].mean() == pytest.approx(900, abs=3)
    assert out[500:, 0].mean() == pytest.approx(100, abs=3)


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.2])
    # sorted 0.01, 0.03, 0.04, 0.2, 0.5 against 0.01, 0.02, 0.03, 0.04, 0.05 → k = 1
    assert benjamini_hochberg(p, 0.05).tolist() == [True, False, False, False, False]
    # against 0.02, 0.04, 0.06, 0.08, 0.10 (α 0.1): 0.04 ≤ 0.06 → the three smallest
    assert benjamini_hochberg(p, 0.1).tolist() == [True, True, True, False, False]


# -- (a) calibrated under the true kernel -------------------------------------------------------
def discrepancy(x, expected, statistic):
    """The per-state statistic, written out (x log x with 0 log 0 = 0)."""
    if statistic == "pearson":
        return ((x - expected) ** 2 / expected).sum()
    logs = np.log(np.where(x > 0, x, 1) / expected)
    return 2 * (np.where(x > 0, x * logs, 0) - (x - expected)).sum()


@pytest.mark.parametrize("statistic", ["deviance", "pearson"])
def test_global_p_is_uniform_under_the_true_kernel(statistic):
    pi_, pj, u, r, visits = make_kernel(seed=3)
    p_values, any_flag = [], 0
    for seed in range(40):
        n_fg, n_gf = simulate_counts(pi_, pj, u, r, visits, seed=100 + seed)
        tree = kernel_tree(pi_, pj, u, r, visits, n_fg, n_gf)
        out = kernel_ppc(tree, seed=seed, statistic=statistic)
        assert out["n_states"] == 30 and out["draws"] == 200
        p_values.append(out["p_value"])
        any_flag += out["flagged"] > 0
    p_values = np.array(p_values)
    assert abs(p_values.mean() - 0.5) < 0.12, p_values
    assert np.mean(p_values < 0.05) < 0.1, p_values
    assert stats.kstest(p_values, "uniform").pvalue > 0.01, p_values
    assert any_flag <= 5  # BH under the complete null: P(any flag) ≤ α (measured 0.047)


@pytest.mark.parametrize("statistic", ["deviance", "pearson"])
def test_per_state_p_equals_the_enumerated_exact_value(statistic):
    """A triangle: each state has three outcomes (two moves, the remainder); under the true
    kernel its p is P(χ²(n) ≥ χ²(n_obs)) over all compositions n of N_f, computed exactly."""
    pi_, pj = np.array([0, 0, 1]), np.array([1, 2, 2])
    u, r = np.array([0.0, -1.0, 0.5]), np.array([0.3, 1.0, -0.5])
    visits = np.array([12, 9, 15])
    t = kernel_rows(pi_, pj, u, r)
    n_fg, n_gf = simulate_counts(pi_, pj, u, r, visits, seed=4)
    counts = np.zeros((3, 3), dtype=int)
    counts[pi_, pj], counts[pj, pi_] = n_fg, n_gf
    counts[np.arange(3), np.arange(3)] = visits - counts.sum(axis=1)
    exact = {}
    for f in range(3):
        n = visits[f]
        expected = n * t[f]
        observed = discrepancy(counts[f], expected, statistic)
        total = 0.0
        for a, b in itertools.product(range(n + 1), repeat=2):
            if a + b > n:
                continue
            x = np.zeros(3, dtype=int)
            others = [g for g in range(3) if g != f]
            x[others[0]], x[others[1]], x[f] = a, b, n - a - b
            chi = discrepancy(x, expected, statistic)
            if chi >= observed - 1e-9:
                lp = (
                    np.sum(np.log(np.arange(1, n + 1)))
                    - sum(np.sum(np.log(np.arange(1, c + 1))) for c in x)
                    + np.sum(x * np.log(t[f]))
                )
                total += np.exp(lp)
        exact[f"s{f:02d}"] = min(total, 1.0)
    tree = kernel_tree(pi_, pj, u, r, visits, n_fg, n_gf, draws=4000)
    out = kernel_ppc(tree, draws=4000, statistic=statistic)
    assert out["statistic"] == statistic
    got = {w["state"]: w["p_value"] for w in out["worst"]}
    assert got.keys() == exact.keys()
    for name, p in exact.items():
        assert got[name] == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / 4000) + 1e-3), name
    assert {w["state"]: w["calls"] for w in out["worst"]} == {"s00": 12, "s01": 9, "s02": 15}


# -- (b) a misfit state is found -------------------------------------------------------------
@pytest.mark.parametrize("statistic", ["deviance", "pearson"])
def test_a_state_with_a_foreign_row_is_flagged(statistic):
    pi_, pj, u, r, visits = make_kernel(seed=3)
    visits = visits.copy()
    odd = 7
    visits[odd] = 400
    row = np.zeros(30)
    targets = np.concatenate([pj[pi_ == odd], pi_[pj == odd]])
    row[targets] = 1.0  # uniform over its neighbours, never a remainder
    row[targets[0]] = 10.0  # and one neighbour ten times as likely
    row /= row.sum()
    n_fg, n_gf = simulate_counts(pi_, pj, u, r, visits, seed=9, odd_state=odd, odd_row=row)
    names = np.array([f"<b>s{i:02d}</b>" for i in range(30)], dtype=object)
    tree = kernel_tree(pi_, pj, u, r, visits, n_fg, n_gf, names=names)
    out = kernel_ppc(tree, seed=2, statistic=statistic)
    assert out["p_value"] < 0.01
    assert out["flagged"] >= 1
    worst = out["worst"][0]
    assert worst == {"state": "<b>s07</b>", "p_value": worst["p_value"], "calls": 400}
    # replicated until Benjamini–Hochberg can decide on one state of 30 at α = 0.05
    assert worst["p_value"] <= 0.05 / 30
    assert len(out["worst"]) == 10
    assert [w["p_value"] for w in out["worst"]] == sorted(w["p_value"] for w in out["worst"])


def test_thinning_and_extreme_log_weights():
    """Huge u and r (exp overflows a naive normalisation) give finite, valid results; draws
    are thinned evenly to `draws`."""
    pi_, pj, u, r, visits = make_kernel(n_states=12, seed=1)
    n_fg, n_gf = simulate_counts(pi_, pj, u, r, visits, seed=1)
    tree = kernel_tree(
        pi_, pj, u + 800.0, r + 800.0, visits, n_fg, n_gf, draws=1000, v=np.zeros(12)
    )
    out = kernel_ppc(tree, draws=150)
    assert out["draws"] == 150 and 0 <= out["p_value"] <= 1 and np.isfinite(out["observed"])
    same = kernel_ppc(kernel_tree(pi_, pj, u, r, visits, n_fg, n_gf, draws=1000), draws=150)
    assert out["observed"] == pytest.approx(same["observed"], rel=1e-9)


def test_states_without_calls_are_not_tested():
    pi_, pj, u, r, visits = make_kernel(n_states=12, seed=2)
    visits = visits.copy()
    visits[[3, 5]] = 0
    n_fg, n_gf = simulate_counts(pi_, pj, u, r, visits, seed=2)
    out = kernel_ppc(kernel_tree(pi_, pj, u, r, visits, n_fg, n_gf))
    assert out["n_states"] == 10
    assert {"s03", "s05"}.isdisjoint(w["state"] for w in out["worst"])


# -- (d) pair fits and the verdict ---------------------------------------------------------------
@pytest.fixture(scope="module")
def reversible_kernel():
    pi_, pj, u, r, visits = make_kernel(n_states=20, edge_prob=0.5, seed=11, calls=(300, 600))
    n_fg, n_gf = simulate_counts(pi_, pj, u, r, visits, seed=12)
    return pi_, pj, u, r, visits, n_fg, n_gf


def _neq(tree):
    """The non-equilibrium twin: the same V, A ≡ 0 (with a small spread so nothing is
    credibly signed), τ_A."""
    post = tree["posterior"].to_dataset()
    chains, draws = post.sizes["chain"], post.sizes["draw"]
    n_pairs = post.sizes["pair"]
    a = 0.01 * np.random.default_rng(0).standard_normal((chains, draws, n_pairs))
    neq = post[["V"]].assign(
        A=(("chain", "draw", "pair"), a), tau_A=(("chain", "draw"), np.full((chains, draws), 0.01))
    )
    out = xr.DataTree.from_dict(
        {"posterior": neq, "constant_data": tree["constant_data"].to_dataset()}
    )
    out.attrs.update(method="map", model="nonequilibrium")
    return out


def test_pair_fits_have_no_kernel_ppc(reversible_kernel):
    pi_, pj, u, r, visits, n_fg, n_gf = reversible_kernel
    tree = kernel_tree(pi_, pj, u, r, visits, n_fg, n_gf)
    post = tree["posterior"].to_dataset().drop_vars(["log_conductance", "log_remainder"])
    pair_fit = xr.DataTree.from_dict(
        {"posterior": post, "constant_data": tree["constant_data"].to_dataset()}
    )
    assert kernel_ppc(pair_fit) is None
    verdict = bayes_verdict(pair_fit, _neq(tree), check_convergence=False)
    assert verdict.evidence["kernel_ppc"] is None
    assert not any("kernel" in reason for reason in verdict.reasons)


def test_verdict_holds_on_the_true_kernel_and_not_when_it_misfits(reversible_kernel):
    pi_, pj, u, r, visits, n_fg, n_gf = reversible_kernel
    tree = kernel_tree(pi_, pj, u, r, visits, n_fg, n_gf)
    verdict = bayes_verdict(tree, _neq(tree), check_convergence=False)
    ev = verdict.evidence
    assert ev["kernel_ppc"]["n_states"] == 20 and ev["kernel_ppc"]["p_value"] >= 0.05
    assert ev["ppc_p"] >= 0.05
    assert verdict.verdict == "holds", verdict.reasons
    assert "kernel PPC p" in verdict.reasons[-1]
    # A kernel whose remainder weights are off by e² (V kept at the truth, so the pair-count
    # PPC, which conditions on pair totals, is as before): the per-state counts misfit.
    w = np.bincount(pi_, np.exp(u), 20) + np.bincount(pj, np.exp(u), 20) + np.exp(r)
    v = -np.log(w) - np.mean(-np.log(w))
    wrong = kernel_tree(pi_, pj, u, r + 2.0, visits, n_fg, n_gf, v=v)
    verdict = bayes_verdict(wrong, _neq(wrong), check_convergence=False)
    ev = verdict.evidence
    assert ev["ppc_p"] >= 0.05 and ev["kernel_ppc"]["p_value"] < 0.05
    assert ev["kernel_ppc"]["flagged"] > 0
    assert verdict.verdict == "inconclusive"
    assert any(
        reason.startswith("the equilibrium kernel fit cannot reproduce")
        for reason in verdict.reasons
    ), verdict.reasons


def test_errors_name_what_is_missing(reversible_kernel):
    pi_, pj, u, r, visits, n_fg, n_gf = reversible_kernel
    tree = kernel_tree(pi_, pj, u, r, visits, n_fg, n_gf)
    with pytest.raises(ValueError, match="statistic must be one of"):
        kernel_ppc(tree, statistic="gsquare")
    const = tree["constant_data"].to_dataset().drop_vars("visits")
    broken = xr.DataTree.from_dict(
        {"posterior": tree["posterior"].to_dataset(), "constant_data": const}
    )
    with pytest.raises(FitError, match="lacks visits"):
        kernel_ppc(broken)
    # moves counted beyond the calls: visits that are not true counts
    fewer = kernel_tree(pi_, pj, u, r, visits // 10, n_fg, n_gf)
    with pytest.raises(FitError, match="true visit counts"):
        kernel_ppc(fewer)
