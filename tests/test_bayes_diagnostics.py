"""Bayesian diagnostics against hand-computed cases and posteriors whose truth is known.

Fits here are hand-made DataTrees in the layout of `detailed_balance.sampling.fit` (posterior
V / A / loop_affinity / tau_A, constant_data pairs and cycles), so these tests pin the
diagnostics without running a sampler; `test_calibration.py` runs them on real fits.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from detailed_balance.data import Transitions
from detailed_balance.diagnostics import (
    bayes_downhill,
    bayes_fdr,
    bayes_potential_spread,
    bayes_verdict,
    cycle_violations,
    deviance,
    downhill_fraction,
    log_likelihood_tree,
    loo_compare,
    loop_balance,
    loop_chi2_ppc,
    pair_violations,
    potential_fit,
    ppc_pairs,
    truncated_binomial,
)
from detailed_balance.diagnostics.convergence import (
    ConvergenceWarning,
    convergence,
    identified_quantities,
)
from detailed_balance.reports import format_bayes


# -- helpers: data with a known truth and fits in the contract layout ------------------------
def make_data(
    n_states: int = 12,
    visits: float = 2000.0,
    drive: float = 0.0,
    seed: int = 0,
    edge_prob: float = 0.6,
) -> tuple[Transitions, pd.Series, pd.DataFrame]:
    """Poisson counts n_fg ~ Poisson(N T_fg), log T_fg − log T_gf = V_f − V_g + A_fg.

    Returns (data, true V by state, true A per pair of data.pairs() in f→g orientation).
    """
    rng = np.random.default_rng(seed)
    names = np.array([f"s{k:02d}" for k in range(n_states)], dtype=object)
    v = rng.normal(0, 1, n_states)
    iu, ju = np.triu_indices(n_states, 1)
    keep = rng.random(len(iu)) < edge_prob
    iu, ju = iu[keep], ju[keep]
    a = drive * rng.standard_normal(len(iu))
    u = v[iu] - v[ju] + a
    t_fg, t_gf = np.exp(u / 2), np.exp(-u / 2)
    # one common scale (log-ratios unchanged) so that Σ_g T(f→g) ≤ 0.8: visits ≥ moves out
    out = np.bincount(iu, t_fg, minlength=n_states) + np.bincount(ju, t_gf, minlength=n_states)
    t_fg, t_gf = 0.8 * t_fg / out.max(), 0.8 * t_gf / out.max()
    n_fg, n_gf = rng.poisson(visits * t_fg), rng.poisson(visits * t_gf)
    counts = pd.DataFrame(
        {
            "source": np.concatenate([names[iu], names[ju]]),
            "target": np.concatenate([names[ju], names[iu]]),
            "count": np.concatenate([n_fg, n_gf]),
        }
    )
    counts = counts[counts["count"] > 0]
    table = pd.DataFrame({"source": names, "visits": visits})
    data = Transitions.from_counts(counts, table)
    pairs = data.pairs()
    lookup = pd.Series(a, index=pd.MultiIndex.from_arrays([names[iu], names[ju]]))
    true_a = lookup.reindex(pd.MultiIndex.from_arrays([pairs["f"], pairs["g"]])).to_numpy()
    return data, pd.Series(v - v.mean(), index=names), pd.DataFrame({"A": true_a})


def make_fit(
    data: Transitions,
    v_draws: np.ndarray,
    a_draws: np.ndarray | None = None,
    *,
    method: str = "nuts",
    sample_stats: dict | None = None,
    loop_affinity: bool = False,
) -> xr.DataTree:
    """A fit DataTree in the sampling contract's layout from given draws.

    v_draws: (chain, draw, state) over data.states; a_draws: (chain, draw, pair) over
    data.pairs() (f→g orientation).
    """
    pairs = data.pairs()
    cycles = data.cycles()
    states = data.states.to_numpy()
    chains, draws = v_draws.shape[:2]
    post = {"V": (("chain", "draw", "state"), v_draws)}
    if a_draws is not None:
        post["A"] = (("chain", "draw", "pair"), a_draws)
        post["tau_A"] = (("chain", "draw"), np.abs(a_draws).mean(axis=-1))
        if loop_affinity:
            # Deliberately computed independently of the package: by explicit lookup.
            index = {(f, g): k for k, (f, g) in enumerate(zip(pairs["f"], pairs["g"], strict=True))}
            columns = []
            for a, b, c in zip(cycles["a"], cycles["b"], cycles["c"], strict=True):
                total = 0
                for x, y in ((a, b), (b, c), (c, a)):
                    total = total + (
                        a_draws[..., index[(x, y)]]
                        if (x, y) in index
                        else -a_draws[..., index[(y, x)]]
                    )
                columns.append(total)
            post["loop_affinity"] = (("chain", "draw", "cycle"), np.stack(columns, axis=-1))
    coords = {"chain": np.arange(chains), "draw": np.arange(draws), "state": states}
    posterior = xr.Dataset(post, coords={**coords, "pair": np.arange(len(pairs))})
    if "loop_affinity" in post:
        posterior = posterior.assign_coords(cycle=np.arange(len(cycles)))
    const = xr.Dataset(
        {
            "pair_f": ("pair", pairs["f"].to_numpy(dtype=str)),
            "pair_g": ("pair", pairs["g"].to_numpy(dtype=str)),
            "pair_i": ("pair", pairs["i"].to_numpy()),
            "pair_j": ("pair", pairs["j"].to_numpy()),
            "n_fg": ("pair", pairs["n_fg"].to_numpy()),
            "n_gf": ("pair", pairs["n_gf"].to_numpy()),
            "N_f": ("pair", pairs["N_f"].to_numpy()),
            "N_g": ("pair", pairs["N_g"].to_numpy()),
            "visits": ("state", data.visits_array()),
            "cycle_a": ("cycle", cycles["a"].to_numpy(dtype=str)),
            "cycle_b": ("cycle", cycles["b"].to_numpy(dtype=str)),
            "cycle_c": ("cycle", cycles["c"].to_numpy(dtype=str)),
        },
        coords={"pair": np.arange(len(pairs)), "state": states, "cycle": np.arange(len(cycles))},
    )
    groups = {
        "posterior": posterior,
        "constant_data": const,
        "observed_data": xr.Dataset({"n_fg": ("pair", pairs["n_fg"].to_numpy())}),
    }
    if sample_stats is not None:
        groups["sample_stats"] = xr.Dataset(
            {k: (("chain", "draw"), v) for k, v in sample_stats.items()}
        )
    tree = xr.DataTree.from_dict(groups)
    tree.attrs.update(
        method=method, model="nonequilibrium" if a_draws is not None else "equilibrium"
    )
    return tree


def point_fit(data: Transitions, v: pd.Series, a: np.ndarray | None = None, draws: int = 400):
    """A 'posterior' that is all mass on the given V (and A): 1 chain × `draws` copies."""
    vv = np.broadcast_to(v.reindex(data.states).to_numpy(), (1, draws, data.n_states)).copy()
    aa = None if a is None else np.broadcast_to(a, (1, draws, len(a))).copy()
    return make_fit(data, vv, aa, method="map")


def gaussian_fit(data, v, a=None, sd=0.05, chains=4, draws=250, seed=0, method="nuts"):
    """Draws N(truth, sd²) per state (and pair): a posterior centred on the truth."""
    rng = np.random.default_rng(seed)
    v0 = v.reindex(data.states).to_numpy()
    vv = v0 + sd * rng.standard_normal((chains, draws, data.n_states))
    aa = None if a is None else a + sd * rng.standard_normal((chains, draws, len(a)))
    stats_ = {
        "diverging": np.zeros((chains, draws), dtype=bool),
        "energy": rng.standard_normal((chains, draws)),
    }
    return make_fit(data, vv, aa, method=method, sample_stats=stats_)


@pytest.fixture(scope="module")
def reversible():
    return make_data(drive=0.0, seed=1)


@pytest.fixture(scope="module")
def driven():
    return make_data(drive=1.5, seed=2)


# -- hand-computed pieces --------------------------------------------------------------------
def test_bayes_fdr_by_hand():
    wrong = np.array([0.01, 0.2, 0.02, 0.5, 0.06])
    # sorted 0.01, 0.02, 0.06, 0.2 → running means 0.01, 0.015, 0.0300, 0.0725: the first 3
    assert bayes_fdr(wrong, 0.05).tolist() == [True, False, True, False, True]
    assert bayes_fdr(wrong, 0.005).tolist() == [False] * 5
    assert bayes_fdr(wrong, 1.0).all()
    assert bayes_fdr(np.array([]), 0.05).tolist() == []


def test_deviance_is_twice_the_binomial_log_likelihood_ratio():
    n = np.array([3.0, 0.0, 10.0, 7.0])
    m = np.array([10.0, 4.0, 10.0, 7.0])
    eta = np.array([0.3, -1.0, 2.0, -0.5])
    p = 1 / (1 + np.exp(-eta))
    saturated = stats.binom.logpmf(n, m, n / m)
    expected = 2 * np.sum(saturated - stats.binom.logpmf(n, m, p))
    assert deviance(n, m, eta) == pytest.approx(expected)


def test_loop_affinity_orientation_by_hand():
    # Pairs are stored (a,b), (a,c), (b,c); the loop a→b→c→a uses c→a = −A_ac.
    counts = pd.DataFrame(
        {
            "source": ["a", "b", "b", "c", "c", "a"],
            "target": ["b", "a", "c", "b", "a", "c"],
            "count": [5, 4, 6, 3, 2, 7],
        }
    )
    data = Transitions.from_counts(counts, pd.DataFrame({"source": list("abc"), "visits": 50}))
    assert data.pairs()[["f", "g"]].to_numpy().tolist() == [["a", "b"], ["a", "c"], ["b", "c"]]
    a = np.array([1.0, 0.5, 2.0])
    fit = point_fit(data, pd.Series(0.0, index=list("abc")), a, draws=3)
    table = cycle_violations(fit)
    assert table["mean"].tolist() == pytest.approx([1.0 + 2.0 - 0.5])
    # the same when the fit stores loop_affinity itself
    with_la = make_fit(data, np.zeros((1, 3, 3)), np.tile(a, (1, 3, 1)), loop_affinity=True)
    assert cycle_violations(with_la)["mean"].tolist() == pytest.approx([2.5])


def test_loop_chi2_without_correction_is_the_papers(driven):
    data, v, _ = driven
    fit = point_fit(data, v)
    out = loop_chi2_ppc(fit, correction=0.0, max_draws=20)
    paper = loop_balance(data)
    assert out["n_cycles"] == paper["n"] > 5
    assert out["observed_chi2_ndf"] == pytest.approx(paper["chi2_ndf"], rel=1e-10)


def test_downhill_and_spread_of_a_point_posterior_match_the_paper_checks(reversible):
    data, v, _ = reversible
    fit = point_fit(data, v, draws=5)
    down = bayes_downhill(fit)
    paper = downhill_fraction(data, v)
    assert down["n"] == paper["n"] > 10
    assert down["mean"] == down["lower"] == down["upper"] == pytest.approx(paper["fraction_down"])
    spread = bayes_potential_spread(fit)
    assert spread["mean"] == pytest.approx(potential_fit(data, v)["sigma"])


def test_downhill_interval_reflects_posterior_uncertainty(reversible):
    data, v, _ = reversible
    truth = downhill_fraction(data, v, threshold=0.1)["fraction_down"]
    assert truth > 0.8
    tight = bayes_downhill(gaussian_fit(data, v, sd=0.001), threshold=0.1)
    loose = bayes_downhill(gaussian_fit(data, v, sd=1.0), threshold=0.1)
    assert tight["lower"] == tight["upper"] == pytest.approx(truth)
    assert loose["upper"] - loose["lower"] > 0.1
    # noise in V randomises the direction of close moves: the fraction drifts toward ½
    assert 0.5 <= loose["mean"] < truth


# -- posterior predictive checks with a known truth --------------------------------------------
def test_ppc_p_values_are_uniform_under_the_true_parameters():
    """With all posterior mass on the true V, p = P(T_rep ≥ T_obs) is uniform over data sets."""
    p_values = []
    for seed in range(40):
        data, v, _ = make_data(n_states=8, visits=300.0, seed=100 + seed)
        p_values.append(ppc_pairs(point_fit(data, v, draws=300), seed=seed)["p_value"])
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert 0.3 < np.mean(p_values) < 0.7


def test_truncated_binomial_is_the_conditional_binomial():
    rng = np.random.default_rng(0)
    m, p = np.array([2, 5, 3]), np.array([0.97, 0.3, 0.02])  # m=2, p=.97: P(n=1) only 6%
    draws = truncated_binomial(rng, np.tile(m, (20000, 1)), np.tile(p, (20000, 1)), 1)
    for k in range(3):
        support = np.arange(1, m[k])
        pmf = stats.binom.pmf(support, m[k], p[k])
        freq = np.array([np.mean(draws[:, k] == s) for s in support])
        assert freq == pytest.approx(pmf / pmf.sum(), abs=0.015)


def test_loop_ppc_p_values_are_uniform_under_the_true_parameters():
    """Counts small enough that unseen edges are common: replicates must be selected like the
    data (all six loop edges seen), else p piles up near 1."""
    p_values = []
    for seed in range(40):
        data, v, _ = make_data(n_states=9, visits=120.0, seed=500 + seed, edge_prob=0.7)
        out = loop_chi2_ppc(point_fit(data, v, draws=300), seed=seed)
        assert out["n_cycles"] > 0
        p_values.append(out["p_value"])
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert 0.3 < np.mean(p_values) < 0.7


def test_ppc_rejects_equilibrium_on_driven_data(driven):
    data, v, _ = driven
    eq = point_fit(data, v)
    assert ppc_pairs(eq)["p_value"] < 0.01
    assert loop_chi2_ppc(eq)["p_value"] < 0.01


def test_ppc_accepts_the_true_non_equilibrium_posterior(driven):
    data, v, a = driven
    neq = point_fit(data, v, a["A"].to_numpy())
    assert ppc_pairs(neq)["p_value"] > 0.05
    assert loop_chi2_ppc(neq)["p_value"] > 0.05


# -- violation tables and FDR ------------------------------------------------------------------
def test_pair_and_cycle_tables_on_a_posterior_around_the_truth(driven):
    data, v, a = driven
    fit = gaussian_fit(data, v, a["A"].to_numpy(), sd=0.1)
    pairs = pair_violations(fit)
    assert pairs[["f", "g"]].to_numpy().tolist() == data.pairs()[["f", "g"]].to_numpy().tolist()
    assert np.corrcoef(pairs["mean"], a["A"])[0, 1] > 0.99
    # a flagged pair has the sign of its truth (sd 0.1 ⇒ only |A| ≳ 0.1 get flagged)
    flagged = pairs[pairs["flagged"]]
    assert len(flagged) > len(pairs) / 2
    assert (np.sign(flagged["mean"]) == np.sign(a["A"][pairs["flagged"]])).all()
    assert pairs.attrs["expected_false"] <= 0.05 * len(flagged) + 1e-12
    cycles = cycle_violations(fit)
    assert len(cycles) == len(data.cycles()) > 5
    assert cycles["flagged"].sum() > 0


def test_nothing_is_flagged_when_the_posterior_straddles_zero(reversible):
    data, v, a = reversible
    # posterior of A: N(0, 0.3²) independent of the data → lfsr ≈ ½ everywhere
    fit = gaussian_fit(data, v, np.zeros(len(a)), sd=0.3, seed=5)
    assert not pair_violations(fit)["flagged"].any()
    assert not cycle_violations(fit)["flagged"].any()


def test_interval_coverage_of_exact_loop_posteriors():
    """Flat-prior exact posteriors: per pair logit p ~ logit Beta(n_fg + 1, n_gf + 1).

    With A = logit p − offset (V = 0) the loop affinity draws are exact; their 90% intervals
    must cover the true loop affinities ≈ 90% of the time. Wrong orientation signs or interval
    arithmetic would break this.
    """
    hits, total = 0, 0
    for seed in range(30):
        data, v, a = make_data(n_states=10, visits=400.0, drive=1.0, seed=300 + seed)
        pairs = data.pairs()
        rng = np.random.default_rng(seed)
        p = rng.beta(pairs["n_fg"] + 1, pairs["n_gf"] + 1, size=(2000, len(pairs)))
        x = np.log(p) - np.log1p(-p) - (np.log(pairs["N_f"]) - np.log(pairs["N_g"])).to_numpy()
        fit = make_fit(data, np.zeros((1, 2000, data.n_states)), x[None], method="advi")
        table = cycle_violations(fit)
        cyc = data.cycles()
        lookup = dict(zip(zip(pairs["f"], pairs["g"], strict=True), a["A"], strict=True))

        signed = {**lookup, **{(g, f): -x for (f, g), x in lookup.items()}}
        truth = np.array(
            [signed[(r.a, r.b)] + signed[(r.b, r.c)] + signed[(r.c, r.a)] for r in cyc.itertuples()]
        )
        hits += int(np.sum((table["lower"] <= truth) & (truth <= table["upper"])))
        total += len(truth)
    assert total > 500
    assert 0.85 <= hits / total <= 0.95


# -- LOO ----------------------------------------------------------------------------------------
def test_log_likelihood_matches_scipy(reversible):
    data, v, _ = reversible
    fit = gaussian_fit(data, v, chains=2, draws=3)
    tree = log_likelihood_tree(fit)
    pairs = data.pairs()
    v0 = fit["posterior"]["V"].values[1, 2]
    eta = np.log(pairs["N_f"] / pairs["N_g"]).to_numpy() + v0[pairs["i"]] - v0[pairs["j"]]
    expected = stats.binom.logpmf(
        pairs["n_fg"], pairs["n_fg"] + pairs["n_gf"], 1 / (1 + np.exp(-eta))
    )
    assert tree["log_likelihood"]["n_fg"].values[1, 2] == pytest.approx(expected)


def test_loo_prefers_the_model_that_generated_the_data(driven, reversible):
    data, v, a = driven
    true_a = a["A"].to_numpy()
    eq, neq = gaussian_fit(data, v, sd=0.02), gaussian_fit(data, v, true_a, sd=0.02)
    out = loo_compare(eq, neq)
    assert out["elpd_diff"] > 2 * out["elpd_se"] > 0
    assert out["elpd_diff"] == pytest.approx(out["elpd_neq"] - out["elpd_eq"])
    data, v, a = reversible
    eq, neq = gaussian_fit(data, v, sd=0.02), gaussian_fit(data, v, np.zeros(len(a)), sd=0.02)
    out = loo_compare(eq, neq)
    assert abs(out["elpd_diff"]) < 2


# -- verdict --------------------------------------------------------------------------------
def test_verdict_on_ideal_posteriors(driven, reversible):
    data, v, a = driven
    verdict = bayes_verdict(
        gaussian_fit(data, v, sd=0.05), gaussian_fit(data, v, a["A"].to_numpy(), sd=0.05)
    )
    assert verdict.verdict == "violated"
    ev = verdict.evidence
    assert ev["flagged_cycles"] > 0 and ev["loop_ppc_p"] < 0.01 and ev["elpd_diff"] > 4
    assert set(ev) >= {
        "verdict",
        "tau_A",
        "elpd_diff",
        "elpd_se",
        "ppc_p",
        "flagged_pairs",
        "flagged_cycles",
        "downhill_fraction",
    }
    assert set(ev["tau_A"]) == {"mean", "lower", "upper"}
    assert "VIOLATED" in format_bayes(ev)
    data, v, a = reversible
    verdict = bayes_verdict(
        gaussian_fit(data, v, sd=0.02), gaussian_fit(data, v, np.zeros(len(a)), sd=0.02)
    )
    assert verdict.verdict == "holds", verdict.reasons
    assert verdict.evidence["loo_counted"] is True


def test_verdict_counts_loo_only_for_mcmc_fits(driven):
    """PSIS-LOO needs posterior draws: on MAP/Laplace fits it is reported, not counted."""
    data, v, a = driven
    eq = gaussian_fit(data, v, sd=0.02, chains=1, method="map")
    neq = gaussian_fit(data, v, a["A"].to_numpy(), sd=0.02, chains=1, method="map")
    verdict = bayes_verdict(eq, neq)
    ev = verdict.evidence
    assert ev["loo_counted"] is False and ev["elpd_diff"] > 4
    assert not any(r.startswith("LOO prefers") for r in verdict.reasons)
    # still violated: flagged loops, the loop PPC and the pair-count PPC agree
    assert verdict.verdict == "violated", verdict.reasons
    assert ev["flagged_cycles"] > 0 and ev["loop_ppc_p"] < 0.01 and ev["ppc_p"] < 0.01


# -- convergence ----------------------------------------------------------------------------
def _drifting_fit(data, v, offset_per_chain, seed=0):
    """Chains that agree on centred V but each wander in the unidentified constant."""
    rng = np.random.default_rng(seed)
    fit = gaussian_fit(data, v, sd=0.1, seed=seed)
    vv = fit["posterior"]["V"].values
    shift = np.asarray(offset_per_chain)[:, None, None] + rng.normal(0, 3, vv.shape[:2])[..., None]
    return make_fit(
        data,
        vv + shift,
        sample_stats={
            "diverging": np.zeros(vv.shape[:2], dtype=bool),
            "energy": rng.standard_normal(vv.shape[:2]),
        },
    )


def test_convergence_ignores_the_unidentified_constant(reversible):
    data, v, _ = reversible
    fit = _drifting_fit(data, v, [0.0, 5.0, -5.0, 10.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        report = convergence(fit)
    assert report.ok, report.warnings
    assert report.rhat_max < 1.01
    ids = identified_quantities(fit)
    centred = ids["V_centred"].values
    assert np.allclose(centred.mean(axis=-1), 0)


def test_convergence_warns_loudly_on_disagreeing_chains_and_divergences(reversible):
    data, v, _ = reversible
    fit = gaussian_fit(data, v, sd=0.1)
    vv = fit["posterior"]["V"].values.copy()
    vv[0, :, 0] += 1.0  # chain 0 disagrees about one state's centred potential
    stats_ = {
        "diverging": np.zeros(vv.shape[:2], dtype=bool),
        "energy": np.cumsum(np.random.default_rng(1).standard_normal(vv.shape[:2]), axis=1),
    }
    stats_["diverging"][1, :3] = True
    bad = make_fit(data, vv, sample_stats=stats_)
    with pytest.warns(ConvergenceWarning) as caught:
        report = convergence(bad)
    text = " ".join(str(w.message) for w in caught)
    assert "R-hat" in text and "divergent" in text and "E-BFMI" in text
    assert not report.ok and report.n_divergent == 3 and report.rhat_max > 1.1
    assert report.to_dict()["divergences"] == 3


def test_convergence_is_not_applicable_to_approximations(reversible):
    data, v, _ = reversible
    report = convergence(point_fit(data, v))
    assert not report.applicable and report.ok
    assert "not applicable" in str(report)


def test_loo_of_a_point_posterior_is_undefined_not_an_error(reversible):
    data, v, a = reversible
    out = loo_compare(point_fit(data, v), point_fit(data, v, np.zeros(len(a))))
    assert out["elpd_diff"] is None and out["elpd_se"] is None


def test_errors_name_what_is_missing(reversible):
    data, v, _ = reversible
    with pytest.raises(ValueError, match="non-equilibrium"):
        pair_violations(point_fit(data, v))
    with pytest.raises(ValueError, match="BayesFit or an xarray.DataTree"):
        ppc_pairs({"V": 1})


def test_math_sanity_of_helpers():
    assert math.isclose(
        deviance(np.array([5.0]), np.array([10.0]), np.array([0.0])), 0.0, abs_tol=1e-12
    )


# -- command line: check --posterior ------------------------------------------------------------
BAYES_KEYS = {
    "verdict",
    "tau_A",
    "elpd_diff",
    "elpd_se",
    "ppc_p",
    "flagged_pairs",
    "flagged_cycles",
    "downhill_fraction",
}


@pytest.fixture(scope="module")
def driven_files(tmp_path_factory):
    """A small strongly driven simulation on disk and MAP fits of both models."""
    from detailed_balance.cli import main

    out = tmp_path_factory.mktemp("bayes_cli")
    args = ["--states", "40", "--transitions", "12000", "--mean-degree", "10", "--seed", "5"]
    assert main(["simulate", *args, "--drive", "1.5", "--out", str(out / "driven")]) == 0
    assert main(["simulate", *args, "--out", str(out / "reversible")]) == 0
    data = out / "driven" / "transitions.csv"
    for model in ("equilibrium", "nonequilibrium"):
        code = main(
            [
                "fit",
                str(data),
                "--method",
                "map",
                "--model",
                model,
                "--draws",
                "400",
                "--chains",
                "1",
                "--no-progress",
                "--out",
                str(out / f"{model}.nc"),
            ]
        )
        assert code == 0
    return out


@pytest.mark.slow  # fits models (MAP) through the CLI / sampling
def test_check_posterior_json_contract(driven_files, capsys):
    from detailed_balance.cli import main

    out = driven_files
    capsys.readouterr()
    code = main(
        [
            "check",
            str(out / "driven" / "transitions.csv"),
            "--json",
            "--posterior",
            str(out / "equilibrium.nc"),
            "--posterior",
            str(out / "nonequilibrium.nc"),
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    bayes = payload["bayes"]
    assert set(bayes) >= BAYES_KEYS
    assert bayes["verdict"] == "violated"  # drive 1.5 on a dense graph: unmistakable
    assert set(bayes["tau_A"]) == {"mean", "lower", "upper"}
    tau = bayes["tau_A"]  # MAP: τ_A drawn over the grid of its Laplace-marginal posterior
    assert tau["lower"] - 1e-9 <= tau["mean"] <= tau["upper"] + 1e-9 and tau["mean"] > 0.5
    assert bayes["elpd_diff"] > 0 and bayes["elpd_se"] > 0
    assert 0 <= bayes["ppc_p"] <= 1 and bayes["ppc_p"] < 0.05
    assert isinstance(bayes["flagged_pairs"], int) and bayes["flagged_cycles"] > 0
    down = bayes["downhill_fraction"]
    assert 0 <= down["lower"] <= down["mean"] <= down["upper"] <= 1
    assert bayes["fitted_here"] == {}
    # the paper's checks are still there
    assert payload["loops"]["n"] == bayes["n_cycles"]


@pytest.mark.slow  # fits models (MAP) through the CLI / sampling
def test_check_posterior_fits_the_missing_model_and_prints_a_table(driven_files, capsys):
    from detailed_balance.cli import main

    out = driven_files
    capsys.readouterr()
    code = main(
        [
            "check",
            str(out / "driven" / "transitions.csv"),
            "--posterior",
            str(out / "equilibrium.nc"),
            "--bayes-method",
            "map",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "Bayesian detailed-balance tests" in text and "VIOLATED" in text
    assert "flagged 3-cycles" in text


@pytest.mark.slow  # fits models (MAP) through the CLI / sampling
def test_check_posterior_refuses_a_fit_of_other_data(driven_files, capsys):
    from detailed_balance.cli import main

    out = driven_files
    code = main(
        [
            "check",
            str(out / "reversible" / "transitions.csv"),
            "--posterior",
            str(out / "equilibrium.nc"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "equilibrium.nc was fitted to different data" in err and "Traceback" not in err
    code = main(
        [
            "check",
            str(out / "driven" / "transitions.csv"),
            "--posterior",
            str(out / "equilibrium.nc"),
            "--posterior",
            str(out / "equilibrium.nc"),
        ]
    )
    assert code == 2
    assert "two equilibrium fits" in capsys.readouterr().err


@pytest.mark.slow  # fits models (MAP) through the CLI / sampling
def test_bayes_check_fits_the_missing_model_for_the_fits_llm():
    """Two LLMs in one data set: the missing model is fitted to the given fit's LLM."""
    from detailed_balance.models import EquilibriumModel
    from detailed_balance.sampling import fit
    from detailed_balance.workflow import bayes_check

    frames, visit_frames = [], []
    for name, drive, seed in (("cold", 1.5, 41), ("warm", 0.0, 42)):
        data, _, _ = make_data(n_states=10, visits=3000.0, drive=drive, seed=seed)
        frames.append(data.counts.assign(llm=name))
        visit_frames.append(data.visits.assign(llm=name))
    both = Transitions.from_counts(pd.concat(frames), pd.concat(visit_frames))
    eq = fit(EquilibriumModel(), both, method="map", llm="cold", draws=300, chains=1, seed=1)
    out = bayes_check(both, eq, method="map", draws=300)
    assert out["fitted_here"]["nonequilibrium"]["method"] == "map"
    assert out["verdict"] == "violated", out["reasons"]  # the driven LLM, not the other one
