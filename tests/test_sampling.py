"""`fit` (NUTS via nutpie, ADVI, MAP + Laplace), the DataTree layout, save/load and the CLI.

Fits are small and shared per module (one NUTS fit per model) to stay fast on 2 cores.
Truths: simulated landscapes with known V and drive, scipy's binomial pmf, the data hash.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from detailed_balance.cli import main
from detailed_balance.models import EquilibriumModel, NonEquilibriumModel
from detailed_balance.sampling import FitFileError, fit, load_fit
from detailed_balance.simulation import simulate

PROVENANCE = (
    "package_version",
    "data_hash",
    "model",
    "model_config",
    "sampler_config",
    "sampler",
    "method",
    "seed",
    "created",
)


@pytest.fixture(scope="module")
def sim():
    return simulate(40, 5000, seed=11, spread=1.0)


@pytest.fixture(scope="module")
def nuts_eq(sim):
    return fit(EquilibriumModel(), sim.transitions, "nuts", 400, 400, 2, seed=3, progressbar=False)


@pytest.fixture(scope="module")
def map_eq(sim):
    return fit(EquilibriumModel(), sim.transitions, method="map", draws=4000, chains=1, seed=3)


def _centred_truth(result, truth: pd.Series) -> np.ndarray:
    cd = result.posterior["constant_data"]
    values = truth.reindex(cd["state"].to_numpy().astype(str)).to_numpy()
    comp, w = cd["component"].to_numpy(), cd["centring_weight"].to_numpy()
    return values - np.bincount(comp, w * values)[comp]


def test_nuts_recovers_known_potential_and_records_nutpie(sim, nuts_eq):
    tree = nuts_eq.posterior
    assert tree.attrs["sampler"] == "nutpie" and tree.attrs["method"] == "nuts"
    assert json.loads(tree.attrs["sampler_config"])["sampler"] == "nutpie"
    # the growing mass-matrix window this model asks for, recorded as used
    assert json.loads(tree.attrs["sampler_config"])["window_switch_freq"] == 10_000
    v = tree["posterior"]["V"]
    assert v.dims == ("chain", "draw", "state") and v.shape[:2] == (2, 400)
    assert int(tree["sample_stats"]["diverging"].sum()) == 0
    truth = _centred_truth(nuts_eq, sim.potential)
    mean = v.mean(("chain", "draw")).to_numpy()
    bounded = tree["constant_data"]["bounded"].to_numpy()
    assert np.corrcoef(mean, truth)[0, 1] > 0.95
    assert np.sqrt(np.mean((mean - truth)[bounded] ** 2)) < 0.35
    # Gauge: every draw has weighted mean 0 over the bounded states.
    w = tree["constant_data"]["centring_weight"].to_numpy()
    np.testing.assert_allclose(v.to_numpy() @ w, 0.0, atol=1e-9)


@pytest.mark.parametrize("cls", [EquilibriumModel, NonEquilibriumModel])
def test_one_model_object_fitted_twice_gives_independent_results(sim, cls):
    """The model holds configuration only: fitting it to a second data set leaves the first
    result (its model, prepared data and draws) as it was."""
    model = cls()
    other = simulate(25, 3000, seed=4, spread=1.0).transitions
    first = fit(model, sim.transitions, method="map", draws=200, chains=1, seed=3)
    v_first = first.potentials.to_numpy().copy()
    second = fit(model, other, method="map", draws=200, chains=1, seed=3)
    assert set(vars(model)) == {"model_config"}  # no fitted state on the model
    assert first.model == second.model == model
    assert first.prepared is not second.prepared
    assert (first.pairs.n_states, second.pairs.n_states) == (40, 25)
    assert first.potentials.sizes["state"] == 40 and second.potentials.sizes["state"] == 25
    np.testing.assert_array_equal(first.potentials.to_numpy(), v_first)
    again = fit(model, sim.transitions, method="map", draws=200, chains=1, seed=3)
    np.testing.assert_array_equal(again.potentials.to_numpy(), v_first)


def test_laplace_sd_matches_nuts_sd(nuts_eq, map_eq):
    nuts = nuts_eq.summary().set_index("state")
    lap = map_eq.summary().set_index("state")
    bounded = nuts["bounded"]
    ratio = (lap["sd"] / nuts["sd"])[bounded]
    assert 0.85 < np.median(ratio) < 1.15
    assert ratio.between(0.6, 1.6).mean() > 0.9
    diff = (lap["mean"] - nuts["mean"])[bounded].abs() / nuts["sd"][bounded]
    assert diff.median() < 0.3


def test_advi_is_close_to_nuts(sim, nuts_eq):
    advi = fit(
        EquilibriumModel(), sim.transitions, "advi", 500, chains=1, seed=4, progressbar=False
    )
    assert advi.posterior.attrs["method"] == "advi"
    a, n = advi.summary().set_index("state"), nuts_eq.summary().set_index("state")
    assert np.corrcoef(a["mean"], n["mean"])[0, 1] > 0.98
    assert 0.6 < np.median(a["sd"] / n["sd"]) < 1.3  # mean-field in whitened space


def test_tree_layout_and_log_likelihood(nuts_eq):
    tree = nuts_eq.posterior
    for group in ("posterior", "constant_data", "observed_data", "log_likelihood", "data"):
        assert group in tree.children, group
    cd = tree["constant_data"]
    for name in ("pair_f", "pair_g", "pair_i", "pair_j", "n_fg", "n_gf", "N_f", "N_g"):
        assert cd[name].dims == ("pair",)
    for name in ("visits", "component", "bounded"):
        assert cd[name].dims == ("state",)
    assert (cd["state"].to_numpy()[cd["pair_i"].to_numpy()] == cd["pair_f"].to_numpy()).all()
    v = tree["posterior"]["V"].isel(chain=1, draw=7).to_numpy()
    x = np.log(cd["N_f"] / cd["N_g"]).to_numpy() + v[cd["pair_i"]] - v[cd["pair_j"]]
    n_fg, n_gf = cd["n_fg"].to_numpy(), cd["n_gf"].to_numpy()
    expected = binom.logpmf(n_fg, n_fg + n_gf, 1 / (1 + np.exp(-x)))
    got = tree["log_likelihood"]["n_fg"].isel(chain=1, draw=7).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    for key in PROVENANCE:
        assert key in tree.attrs, key
    assert tree.attrs["data_hash"] == nuts_eq.data.data_hash()


def test_save_load_round_trip_and_mismatch_refusal(tmp_path, nuts_eq):
    path = nuts_eq.save(tmp_path / "fit.nc")
    loaded = load_fit(path)
    assert loaded.data.data_hash() == nuts_eq.data.data_hash()
    assert loaded.model == nuts_eq.model
    np.testing.assert_array_equal(
        loaded.posterior["posterior"]["V"].to_numpy(),
        nuts_eq.posterior["posterior"]["V"].to_numpy(),
    )
    pd.testing.assert_frame_equal(loaded.summary(), nuts_eq.summary())
    for key in PROVENANCE:
        assert loaded.posterior.attrs[key] == nuts_eq.posterior.attrs[key]
    assert load_fit(path, model=EquilibriumModel()).model == nuts_eq.model
    with pytest.raises(FitFileError, match="made with"):
        load_fit(path, model=EquilibriumModel({"V_scale": 5.0}))
    with pytest.raises(FitFileError, match="made with"):
        load_fit(path, model=NonEquilibriumModel())
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(FitFileError, match="not a readable"):
        load_fit(tmp_path / "junk.nc")


def test_same_seed_same_draws(sim):
    def run(method, seed):
        result = fit(
            EquilibriumModel(), sim.transitions, method, 30, 30, 2, seed, progressbar=False
        )
        return result.posterior["posterior"]["V"].to_numpy()

    np.testing.assert_array_equal(run("map", 5), run("map", 5))
    assert not np.array_equal(run("map", 5), run("map", 6))
    np.testing.assert_array_equal(run("nuts", 5), run("nuts", 5))


def test_nonequilibrium_nuts_finds_the_drive():
    driven = simulate(30, 20_000, seed=12, mean_degree=8, drive=1.5)
    result = fit(
        NonEquilibriumModel(), driven.transitions, "nuts", 300, 300, 2, seed=1, progressbar=False
    )
    post = result.posterior["posterior"]
    cd = result.posterior["constant_data"]
    assert post["A"].dims == ("chain", "draw", "pair")
    assert post["loop_affinity"].dims == ("chain", "draw", "cycle") and cd.sizes["cycle"] > 10
    a = post["A"].to_numpy()
    loops = post["loop_affinity"].to_numpy()
    ab, bc, ac = (cd[f"cycle_pair_{k}"].to_numpy() for k in ("ab", "bc", "ac"))
    np.testing.assert_allclose(loops, a[..., ab] + a[..., bc] - a[..., ac])
    truth = driven.loop_affinity(pd.DataFrame({k: cd[f"cycle_{k}"].to_numpy() for k in "abc"}))
    mean = loops.mean(axis=(0, 1))
    assert np.corrcoef(mean, truth)[0, 1] > 0.7
    assert float(post["tau_A"].quantile(0.05)) > 0.5  # the data pull τ_A away from 0


def test_cli_fit_writes_netcdf_and_summary(tmp_path, sim):
    data, visits = tmp_path / "t.csv", tmp_path / "t.visits.csv"
    sim.transitions.to_csv(data, visits)
    out, summary = tmp_path / "fit.nc", tmp_path / "v.csv"
    code = main(
        ["fit", str(data), "--method", "map", "--out", str(out), "--summary", str(summary),
         "--ci", "0.8", "--draws", "200", "--chains", "1"]
    )  # fmt: skip
    assert code == 0
    table = pd.read_csv(summary)
    assert list(table.columns) == ["state", "mean", "sd", "lower", "upper", "bounded"]
    assert len(table) == sim.transitions.n_states
    loaded = load_fit(out)
    assert loaded.posterior.attrs["method"] == "map"
    pd.testing.assert_frame_equal(loaded.summary(0.8), table, check_dtype=False)
    assert main(["fit", str(data), "--method", "map", "--out", str(out), "--ci", "2"]) == 2


def test_two_way_option_keeps_A_off_one_way_pairs(sim):
    model = NonEquilibriumModel({"A_pairs": "two_way"})
    result = fit(model, sim.transitions, method="map", draws=100, chains=1)
    a = result.posterior["posterior"]["A"].to_numpy()
    cd = result.posterior["constant_data"]
    one_way = (cd["n_fg"].to_numpy() == 0) | (cd["n_gf"].to_numpy() == 0)
    assert one_way.any() and (~one_way).any()
    assert np.all(a[..., one_way] == 0.0) and np.all(a[..., ~one_way] != 0.0)
