"""Feature potentials (issue 6): featurisers, feature tables, the joint model V = x·θ + ε.

Truths: hand-computed feature values; finite differences of the density; simulated landscapes
whose V is a known linear function of known features plus noise (θ coverage over replicates,
held-out predictions); exact least action on (nearly) exact rates; LOO against the free model.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from detailed_balance.cli import main
from detailed_balance.data import DataError, Transitions
from detailed_balance.diagnostics import (
    compare_free,
    convergence,
    feature_downhill,
    feature_share,
    predict_potentials,
    sigma_eps,
    theta_summary,
)
from detailed_balance.features import (
    Standardiser,
    expression_features,
    read_feature_csv,
    resolve_features,
    word_features,
)
from detailed_balance.models import EquilibriumModel
from detailed_balance.models._feature_density import FeatureDensity
from detailed_balance.models._pairs import pair_data
from detailed_balance.models._whiten import Whitening
from detailed_balance.models.feature_least_action import feature_least_action
from detailed_balance.models.features import FeaturePotentialModel
from detailed_balance.reports.document import Document
from detailed_balance.reports.features import feature_section, theta_forest_figure
from detailed_balance.sampling import fit, load_fit
from detailed_balance.simulation import simulate

THETA = np.array([1.0, -0.5, 0.3])


def feature_landscape(seed: int, n: int = 200, calls: int = 20_000, sigma: float = 0.5):
    """Simulated counts whose V = X θ + ε (known X, θ, σ_ε): the calibration truth."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(3, 2, n), rng.uniform(0, 10, n), rng.integers(0, 2, n)])
    v = x @ THETA + sigma * rng.standard_normal(n)
    sim = simulate(n, calls, potential=v, seed=seed)
    feats = pd.DataFrame(x, columns=["a", "b", "c"], index=sim.states)
    return sim, feats


# -- featurisers ------------------------------------------------------------------------------
def test_word_features_by_hand():
    table = word_features(["BUZZY", "attitude", "INVALID", "xqzv"])
    buzzy = table.loc["BUZZY"]  # B U Z Z Y = 2 21 26 26 25
    assert buzzy["length"] == 5 and buzzy["letter_sum"] == 100
    assert buzzy["letter_mean"] == 20 and buzzy["letter_min"] == 2 and buzzy["letter_max"] == 26
    assert buzzy["letter_sd"] == pytest.approx(np.std([2, 21, 26, 26, 25]))
    assert buzzy["vowel_share"] == pytest.approx(1 / 5)
    assert buzzy["distinct_share"] == pytest.approx(4 / 5)
    assert buzzy["in_dictionary"] == 1 and buzzy["invalid"] == 0
    attitude = table.loc["attitude"]  # A T T I T U D E: vowels A I U E
    assert attitude["vowel_share"] == pytest.approx(4 / 8) and attitude["letter_sum"] == 100
    assert attitude["in_dictionary"] == 1
    assert table.loc["INVALID", "invalid"] == 1 and table.loc["INVALID", "in_dictionary"] == 0
    assert table.loc["xqzv", "in_dictionary"] == 0 and table.loc["xqzv", "invalid"] == 0


def test_expression_features_by_hand():
    table = expression_features(
        ["p1*exp(-p2*x)*cos(p3*x)", "(p1*x + ", "x", "sin(x)^2/p1", "INVALID", "tan(x)"]
    )
    damped = table.loc["p1*exp(-p2*x)*cos(p3*x)"]
    expected = {
        "n_mul": 4, "n_exp": 1, "n_trig": 1, "n_neg": 1, "n_parameters": 3, "n_x": 2,
        "depth": 6, "n_add": 0, "parses": 1, "brackets_valid": 1, "length": 23,
    }  # fmt: skip
    for key, value in expected.items():
        assert damped[key] == value, key
    broken = table.loc["(p1*x + "]  # does not parse: token counts, bracket depth + 1
    assert broken["parses"] == 0 and broken["brackets_valid"] == 0
    assert (broken["n_mul"], broken["n_add"], broken["n_parameters"], broken["depth"]) == (
        1,
        1,
        1,
        2,
    )
    assert table.loc["x", "depth"] == 1 and table.loc["x", "n_x"] == 1
    power = table.loc["sin(x)^2/p1"]
    assert (power["n_pow"], power["n_div"], power["n_trig"], power["n_constants"]) == (1, 1, 1, 1)
    assert table.loc["INVALID"].sum() == 0
    assert table.loc["tan(x)", "parses"] == 0  # not on the agent's whitelist


# -- feature sources ----------------------------------------------------------------------------
def test_feature_sources_and_messages(tmp_path):
    good = tmp_path / "f.csv"
    good.write_text("state,len,score\nA,1,0.5\nB,2,1.5\nC,3,-1\n")
    table = resolve_features(str(good), ["C", "A"])
    assert list(table.index) == ["C", "A"] and table.loc["C", "score"] == -1
    frame = pd.DataFrame({"len": [1.0, 2.0]}, index=pd.Index(["A", "B"], name="state"))
    assert resolve_features(frame, ["B"]).loc["B", "len"] == 2
    by_call = resolve_features(lambda s: {"n": len(s)}, ["AB", "ABC"])
    assert list(by_call["n"]) == [2, 3]
    with pytest.raises(DataError, match=r"no features for 1 state.*'D'"):
        resolve_features(str(good), ["A", "D"])
    bad = tmp_path / "bad.csv"
    bad.write_text("state,len\nA,1\nB,two\n")
    with pytest.raises(DataError, match=r"bad.csv.*'len'.*'B' \(row 3\).*'two'"):
        read_feature_csv(bad)
    nostate = tmp_path / "nostate.csv"
    nostate.write_text("name,len\nA,1\n")
    with pytest.raises(DataError, match="no `state` column"):
        read_feature_csv(nostate)
    dup = tmp_path / "dup.csv"
    dup.write_text("state,len\nA,1\nA,2\n")
    with pytest.raises(DataError, match="'A' appears twice"):
        read_feature_csv(dup)
    with pytest.raises(DataError, match="unknown built-in"):
        resolve_features("builtin:colours", ["A"])


def test_standardiser_drops_constants_and_maps_back():
    table = pd.DataFrame({"a": [1.0, 3.0, 5.0], "const": [2.0, 2.0, 2.0], "b": [0.0, 0.0, 3.0]})
    std = Standardiser.fit(table)
    assert std.names == ("a", "b") and std.dropped == ("const",)
    z = std.transform(table)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1)
    theta_std = np.array([2.0, -1.0])
    # z·θ* and x·θ differ by a constant only (the gauge): θ = θ*/s.
    v_std = z @ theta_std
    v_raw = table[["a", "b"]].to_numpy() @ std.to_original(theta_std)
    np.testing.assert_allclose(v_std - v_std.mean(), v_raw - v_raw.mean())
    with pytest.raises(DataError, match="every feature is constant"):
        Standardiser.fit(table[["const"]])


# -- the density --------------------------------------------------------------------------------
@pytest.mark.parametrize("eps_prior", ["normal", "student_t"])
def test_density_gradient_matches_finite_differences(eps_prior):
    sim, feats = feature_landscape(3, n=40, calls=4000)
    pairs = pair_data(sim.transitions)
    table = feats.loc[pairs.states.astype(str)]
    z = Standardiser.fit(table).transform(table)
    config = {**FeaturePotentialModel.default_model_config, "eps_prior": eps_prior}
    dens = FeatureDensity(pairs, z, config)
    phi = np.random.default_rng(0).normal(size=dens.size) * 0.3
    _, grad = dens.neg_logp_grad(phi)
    h = 1e-6
    for k in [0, 7, dens.k, dens.k + 2, dens.size - 1]:
        e = np.zeros(dens.size)
        e[k] = h
        numeric = (dens.neg_logp_grad(phi + e)[0] - dens.neg_logp_grad(phi - e)[0]) / (2 * h)
        assert numeric == pytest.approx(grad[k], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("eps_prior", ["normal", "student_t"])
def test_pymc_graph_equals_the_numpy_density(eps_prior):
    """The whitened, partially non-centred PyMC graph is the numpy density (up to a constant)."""
    sim, feats = feature_landscape(3, n=40, calls=4000)
    model = FeaturePotentialModel(feats, {"eps_prior": eps_prior})
    prepared = model.prepare(sim.transitions)
    graph = model.build_model(prepared)
    logp = graph.compile_logp(mode="NUMBA")
    outputs = graph.replace_rvs_by_values([graph["V"], graph["theta_std"]])
    values = graph.compile_fn(outputs, inputs=graph.value_vars, mode="NUMBA")
    rng = np.random.default_rng(0)
    start = graph.initial_point()
    differences = []
    for _ in range(2):  # same σ_ε (the Jacobian Σ α log σ_ε is then constant), other V and θ
        point = {
            k: x + (0.3 * rng.standard_normal(np.shape(x)) if "white" in k else 0)
            for k, x in start.items()
        }
        v, theta = values(point)
        phi = np.concatenate([v, theta, [point["sigma_eps_log__"]]])
        differences.append((float(logp(point)), -prepared.density.neg_logp_grad(phi)[0]))
    (a1, b1), (a2, b2) = differences
    assert a1 - a2 == pytest.approx(b1 - b2, rel=1e-8, abs=1e-8)
    assert abs(a1 - a2) > 0.1  # the two points really differ


def test_whitening_is_the_incomplete_factor_and_exact_when_factored_exactly():
    """V = V̂ + B z with the pair models' `_whiten.Whitening`; with ilu_drop_tol = 0 the factor
    is exact, so B Bᵀ is the inverse of the Laplace Hessian A_VV (dense linear algebra)."""
    sim, feats = feature_landscape(3, n=40, calls=4000)
    model = FeaturePotentialModel(feats, {"ilu_drop_tol": 0.0})
    prepared = model.prepare(sim.transitions)
    white = prepared.whitening
    assert isinstance(white, Whitening)
    k = prepared.density.k
    np.testing.assert_array_equal(white.centre, prepared.map_result[:k])
    b = white.matrix()
    hessian = prepared.laplace_fit.a_vv.toarray()
    np.testing.assert_allclose(b @ b.T, np.linalg.inv(hessian), rtol=1e-8, atol=1e-10)
    assert np.linalg.norm(b.T @ hessian @ b - np.eye(k)) < 1e-8
    # The default drop tolerance whitens the same Hessian, maybe approximately.
    default = FeaturePotentialModel(feats).prepare(sim.transitions).whitening
    assert isinstance(default, Whitening)
    eigenvalues = np.linalg.eigvalsh(default.matrix().T @ hessian @ default.matrix())
    assert 0.3 < eigenvalues.min() and eigenvalues.max() < 3.0


def test_whitening_options_are_checked():
    feats = pd.DataFrame({"a": [0.0, 1.0]}, index=["s0", "s1"])
    for bad in ({"ilu_drop_tol": -0.1}, {"ilu_fill": 0.5}):
        with pytest.raises(ValueError, match="ilu_drop_tol >= 0 and ilu_fill >= 1"):
            FeaturePotentialModel(feats, bad)
    with pytest.raises(ValueError, match="unknown model_config key.*dense_blocks"):
        FeaturePotentialModel(feats, {"dense_blocks": 50})
    # The keys of the whitening it replaced set only NUTS's speed: accepted, and dropped.
    retired = FeaturePotentialModel(feats, {"dense_limit": 50, "low_rank": 16})
    assert retired.model_config == FeaturePotentialModel(feats).model_config


# -- fits on simulated landscapes with known θ ---------------------------------------------------
def map_fit(sim, feats, seed: int = 1, draws: int = 1000):
    return fit(
        FeaturePotentialModel(feats), sim.transitions, method="map", draws=draws, chains=1,
        seed=seed, progressbar=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def landscape():
    return feature_landscape(7)


@pytest.fixture(scope="module")
def fitted(landscape):
    sim, feats = landscape
    return map_fit(sim, feats)


def true_share(sim, feats, fitted) -> float:
    """var(x·θ) / (var(x·θ) + var(ε)) over the modelled states, from the simulation's truth."""
    states = fitted.posterior["posterior"]["V"]["state"].to_numpy().astype(str)
    explained = feats.loc[states].to_numpy() @ THETA
    residual = sim.potential.loc[states].to_numpy() - explained
    return np.var(explained) / (np.var(explained) + np.var(residual))


def test_map_fit_layout_and_truth(landscape, fitted, tmp_path):
    sim, feats = landscape
    post, const = fitted.posterior["posterior"], fitted.posterior["constant_data"]
    assert post["theta"].dims == ("chain", "draw", "feature")
    assert list(post["theta"]["feature"].values) == ["a", "b", "c"]
    assert post["V"].dims == ("chain", "draw", "state") and post["sigma_eps"].dims == (
        "chain",
        "draw",
    )
    assert const["features"].dims == ("state", "feature")
    table = theta_summary(fitted)
    assert list(table.columns) == ["feature", "mean", "sd", "lower", "upper"]
    assert np.all(np.abs(table["mean"] - THETA) < 4 * table["sd"])
    # θ in original units is θ per SD divided by the feature's SD over the modelled states.
    std = theta_summary(fitted, standardised=True)
    np.testing.assert_allclose(std["mean"] / const["feature_scale"].values, table["mean"])
    share = feature_share(fitted, ci=0.99)
    assert share["lower"] < true_share(sim, feats, fitted) < share["upper"]
    assert 0.3 < sigma_eps(fitted, ci=0.99)["lower"] and sigma_eps(fitted, ci=0.99)["upper"] < 0.7
    # The saved file alone gives the model back and predicts from the stored features.
    path = fitted.save(tmp_path / "fit.nc")
    loaded = load_fit(path)
    assert isinstance(loaded.model, FeaturePotentialModel)
    pd.testing.assert_frame_equal(theta_summary(loaded), table)


def test_fit_saved_with_the_retired_whitening_keys_still_loads(fitted, tmp_path):
    """A fit file written before the feature model used `_whiten` has dense_limit/low_rank in
    its model_config; loading it (report, check) gives the same model, not an error."""
    tree = fitted.posterior.copy()
    config = {**json.loads(tree.attrs["model_config"]), "dense_limit": 50, "low_rank": 16}
    tree.attrs = {**tree.attrs, "model_config": json.dumps(config)}
    path = tmp_path / "old_fit.nc"
    tree.to_netcdf(path, engine="h5netcdf")
    loaded = load_fit(path)
    assert loaded.model.model_config == fitted.model.model_config
    assert "dense_limit" not in loaded.model.model_config


def test_reference_state_gauge(landscape, fitted):
    sim, feats = landscape
    ref = fit(
        FeaturePotentialModel(feats, {"reference": "s0003"}), sim.transitions, method="map",
        draws=1000, chains=1, seed=1, progressbar=False,
    )  # fmt: skip
    post = ref.posterior["posterior"]
    assert np.all(post["V"].sel(state="s0003").values == 0)
    # Differences of V and predictions are gauge-free: same as the fit without a reference.
    v_ref = post["V"].mean(("chain", "draw")).to_series()
    v_free = fitted.posterior["posterior"]["V"].mean(("chain", "draw")).to_series()
    diff = (v_ref - v_free).to_numpy()
    assert np.ptp(diff) < 0.05
    new = feats.loc[["s0010"]].rename(index={"s0010": "unseen"})
    with_ref = predict_potentials(ref, features=new)["mean"].iloc[0]
    without = predict_potentials(fitted, features=new)["mean"].iloc[0]
    assert with_ref - without == pytest.approx(float(np.mean(diff)), abs=0.1)


def test_features_that_explain_nothing(landscape):
    sim, _ = landscape
    noise = pd.DataFrame(
        np.random.default_rng(5).normal(size=(len(sim.states), 2)), columns=["u", "w"],
        index=sim.states,
    )  # fmt: skip
    result = map_fit(sim, noise)
    assert feature_share(result)["upper"] < 0.2
    # σ_ε then carries the whole spread of V (the simulated V has sd ≈ 2.5).
    assert sigma_eps(result)["mean"] == pytest.approx(np.std(sim.potential), rel=0.25)


@pytest.mark.slow
def test_theta_intervals_cover_the_truth_over_replicates():
    """90% intervals of θ (MAP + Laplace) cover the known θ in ≥ 85% of 40 replicates."""
    hits = []
    for seed in range(40):
        sim, feats = feature_landscape(100 + seed)
        table = theta_summary(map_fit(sim, feats, draws=600))
        hits.append((table["lower"] < THETA) & (THETA < table["upper"]))
    hits = np.array(hits)
    assert hits.mean() >= 0.85, hits.mean(axis=0)
    assert hits.mean(axis=0).min() >= 0.8, hits.mean(axis=0)


def test_predictions_for_unseen_states_beat_the_prior_mean():
    sim, feats = feature_landscape(11, n=250, calls=25_000)
    held = sim.states[::5]  # every fifth state never appears in the fitted data
    counts = sim.transitions.counts
    keep = ~counts["source"].isin(held) & ~counts["target"].isin(held)
    visits = sim.transitions.visits
    data = Transitions.from_counts(
        counts.loc[keep, ["source", "target", "count"]],
        visits=visits.loc[~visits["source"].isin(held), ["source", "visits"]],
    )
    result = fit(
        FeaturePotentialModel(feats), data, method="map", draws=2000, chains=1, progressbar=False
    )
    pred = predict_potentials(result, list(held), features=feats).set_index("state")
    assert not pred["observed"].any()
    seen = predict_potentials(result, ["s0001"], features=feats)
    assert bool(seen["observed"].iloc[0])
    # Align the gauge on the fitted states, then compare with the truth.
    v_fit = result.posterior["posterior"]["V"].mean(("chain", "draw")).to_series()
    offset = float(np.mean(v_fit - sim.potential.reindex(v_fit.index)))
    truth = sim.potential.reindex(held).to_numpy() + offset
    error = pred["mean"].to_numpy() - truth
    prior_error = float(np.mean(v_fit)) - truth  # the prior mean: every state at the average V
    assert np.sqrt(np.mean(error**2)) < 0.4 * np.sqrt(np.mean(prior_error**2))
    inside = (pred["lower"].to_numpy() < truth) & (truth < pred["upper"].to_numpy())
    assert inside.mean() >= 0.8


def test_nuts_and_advi_agree_with_the_laplace_approximation():
    sim, feats = feature_landscape(21, n=80, calls=8000)
    laplace = theta_summary(map_fit(sim, feats, draws=2000))
    nuts = fit(
        FeaturePotentialModel(feats), sim.transitions, method="nuts", draws=300, tune=300,
        chains=2, seed=3, progressbar=False,
    )  # fmt: skip
    assert set(nuts.posterior["posterior"].data_vars) >= {"theta", "sigma_eps", "feature_share"}
    conv = convergence(nuts)
    assert conv.to_dict()["rhat_max"] < 1.05
    sampled = theta_summary(nuts)
    assert np.all(np.abs(sampled["mean"] - laplace["mean"]) < 0.5 * laplace["sd"])
    assert np.all((sampled["sd"] / laplace["sd"]).between(0.7, 1.4))
    assert np.all(np.abs(sampled["mean"] - THETA) < 4 * sampled["sd"])
    advi = fit(
        FeaturePotentialModel(feats), sim.transitions, method="advi", draws=500, chains=1,
        seed=3, progressbar=False, advi_iterations=3000,
    )  # fmt: skip
    assert np.all(np.abs(theta_summary(advi)["mean"] - THETA) < 4 * laplace["sd"])


# -- least action -------------------------------------------------------------------------------
def test_least_action_recovers_theta_from_exact_rates():
    """With V = x·θ exactly and the true rates, θ is the exact minimiser of the action."""
    rng = np.random.default_rng(4)
    n = 120
    x = np.column_stack([rng.normal(0, 1, n), rng.uniform(0, 3, n)])
    sim = simulate(n, 1000, potential=x @ np.array([0.8, -1.2]), seed=4)
    expected = sim.expected_counts()
    scale = 1e6  # counts = ⌊1e6 × expected⌋: rates exact to ~1e-6
    counts = expected.assign(count=np.floor(expected["expected"] * scale).astype(np.int64))
    visits = pd.DataFrame({"source": sim.states, "visits": sim.visits * scale})
    data = Transitions.from_counts(counts[["source", "target", "count"]], visits=visits)
    feats = pd.DataFrame(x, columns=["u", "w"], index=sim.states)
    for kernel in ("softplus", "exp"):
        result = feature_least_action(data, feats, kernel=kernel)
        assert result.converged and not result.runaway
        np.testing.assert_allclose(result.theta.to_numpy(), [0.8, -1.2], atol=1e-4)


def test_least_action_runaway_is_reported_and_ridge_keeps_theta_finite():
    counts = pd.DataFrame({"source": ["A", "B"], "target": ["B", "C"], "count": [50, 40]})
    data = Transitions.from_counts(counts, visits="uniform", calls=300)
    feats = pd.DataFrame({"x": [2.0, 1.0, 0.0]}, index=["A", "B", "C"])
    free = feature_least_action(data, feats)  # every move goes down x: θ → +∞
    assert free.runaway and free.theta["x"] > 10
    held = feature_least_action(data, feats, ridge=0.01)
    assert not held.runaway and 0 < held.theta["x"] < free.theta["x"]


# -- LOO, downhill, report, CLI ------------------------------------------------------------------
def test_loo_prefers_true_features_over_free_potentials(landscape, fitted):
    sim, _ = landscape
    free = fit(EquilibriumModel(), sim.transitions, method="map", draws=1000, chains=1,
               progressbar=False)  # fmt: skip
    loo = compare_free(fitted, free)
    assert loo["elpd_diff"] == pytest.approx(loo["elpd_features"] - loo["elpd_free"])
    assert loo["elpd_diff"] > 2 * loo["elpd_se"]


def test_downhill_under_the_feature_potential(landscape, fitted):
    sim, feats = landscape
    down = feature_downhill(fitted)
    # By hand: per draw, the share of moves with T > 0.05 that go to lower x·θ.
    moves = sim.transitions.moves()
    moves = moves[moves["rate"] > 0.05]
    vf = fitted.posterior["posterior"]["V_features"].stack(s=("chain", "draw")).to_pandas()
    by_hand = (vf.loc[moves["target"]].to_numpy() < vf.loc[moves["source"]].to_numpy()).mean(0)
    assert down["n"] == len(moves)
    assert down["mean"] == pytest.approx(by_hand.mean())
    truth_v = feats.to_numpy() @ THETA
    truth_v = pd.Series(truth_v, index=feats.index)
    truth = np.mean(
        truth_v.loc[moves["target"]].to_numpy() < truth_v.loc[moves["source"]].to_numpy()
    )
    assert abs(down["mean"] - truth) < 0.03


def test_report_feature_section(fitted):
    doc = Document("test")
    numbers = feature_section(fitted, doc, ci=0.9)
    assert [row["feature"] for row in numbers["theta"]] == ["a", "b", "c"]
    assert numbers["feature_share"]["mean"] == pytest.approx(feature_share(fitted)["mean"])
    markdown = doc.to_markdown()
    assert "## Features" in markdown and "The features explain" in markdown
    fig = theta_forest_figure(fitted)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 3 and labels[0].startswith("a ")  # |θ per SD| largest first


def test_cli_fit_features_writes_theta_csv(landscape, tmp_path, capsys):
    sim, feats = landscape
    sim.transitions.to_csv(tmp_path / "transitions.csv", tmp_path / "visits.csv")
    feats.rename_axis("state").reset_index().to_csv(tmp_path / "features.csv", index=False)
    out = tmp_path / "fit.nc"
    args = [
        "fit", str(tmp_path / "transitions.csv"), "--method", "map", "--model", "features",
        "--features", str(tmp_path / "features.csv"), "--out", str(out), "--summary",
        str(tmp_path / "potentials.csv"), "--draws", "500", "--chains", "1", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    theta = pd.read_csv(tmp_path / "theta.csv")
    assert list(theta.columns) == ["feature", "mean", "sd", "lower", "upper"]
    assert np.all(np.abs(theta["mean"] - THETA) < 4 * theta["sd"])
    assert "features explain" in capsys.readouterr().err
    summary = pd.read_csv(tmp_path / "potentials.csv")
    assert list(summary.columns) == ["state", "mean", "sd", "lower", "upper", "bounded"]
    la = tmp_path / "la.csv"
    assert main(args[:3] + ["least-action"] + args[4:8] + ["--out", str(la)]) == 0
    assert list(pd.read_csv(la)["feature"]) == ["a", "b", "c"]
    assert main(args[:6] + ["--out", str(out)]) == 2
    assert "needs --features" in capsys.readouterr().err


def test_builtin_word_features_end_to_end():
    """Words as states: V = 1.0·length − 3·vowel_share + noise, fitted with builtin:words."""
    from detailed_balance.agents.word100 import words_summing_to_100

    words = np.array(words_summing_to_100()[:150])
    table = word_features(words)
    rng = np.random.default_rng(8)
    v = 1.0 * table["length"].to_numpy() - 3.0 * table["vowel_share"].to_numpy()
    sim = simulate(len(words), 15_000, potential=v + 0.3 * rng.standard_normal(len(words)), seed=8)
    rename = dict(zip(sim.states, words, strict=True))
    counts = sim.transitions.counts.assign(
        source=lambda d: d["source"].map(rename), target=lambda d: d["target"].map(rename)
    )
    visits = sim.transitions.visits.assign(source=lambda d: d["source"].map(rename))
    data = Transitions.from_counts(
        counts[["source", "target", "count"]], visits=visits[["source", "visits"]]
    )
    result = fit(FeaturePotentialModel("builtin:words"), data, method="map", draws=1000,
                 chains=1, progressbar=False)  # fmt: skip
    theta = theta_summary(result).set_index("feature")
    assert "letter_sum" not in theta.index  # constant (100) for every word: dropped
    truth = pd.Series(0.0, index=theta.index)
    truth[["length", "vowel_share"]] = [1.0, -3.0]
    assert np.all(np.abs(theta["mean"] - truth) < 4 * theta["sd"])
    assert theta.loc["length", "lower"] > 0.5
