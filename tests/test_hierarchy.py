"""The multi-LLM hierarchical model: exact likelihood, gauge fixing, and recovery of known β."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from detailed_balance.data import DataError, Transitions
from detailed_balance.models.hierarchy import (
    HierarchicalModel,
    _centre,
    _landscape_correlation,
    landscape_correlations,
    odd_one_out,
    panel_arrays,
    temperature_table,
)
from detailed_balance.sampling import BayesFit, fit, sample
from detailed_balance.simulation import metropolis_kernel, simulate_panel


def tiny_panel() -> Transitions:
    """Two LLMs on states a, b, c with hand-countable pairs."""
    counts = pd.DataFrame(
        {
            "llm": ["x", "x", "x", "y", "y", "y"],
            "source": ["a", "b", "b", "a", "b", "c"],
            "target": ["b", "a", "c", "b", "a", "b"],
            "count": [6, 2, 3, 5, 4, 1],
        }
    )
    visits = pd.DataFrame(
        {
            "llm": ["x", "x", "x", "y", "y", "y"],
            "source": ["a", "b", "c", "a", "b", "c"],
            "visits": [10.0, 20.0, 5.0, 8.0, 8.0, 8.0],
        }
    )
    return Transitions.from_counts(counts, visits)


def test_panel_arrays_match_hand_counts():
    arrays = panel_arrays(tiny_panel(), reference="x")
    rows = pd.DataFrame(
        {
            "llm": np.asarray(arrays.llms)[arrays.llm_index],
            "f": arrays.states[arrays.i],
            "g": arrays.states[arrays.j],
            "n_fg": arrays.n_fg,
            "n_gf": arrays.n_gf,
            "N_f": arrays.N_f,
            "N_g": arrays.N_g,
        }
    )
    expected = pd.DataFrame(
        {
            "llm": ["x", "x", "y", "y"],
            "f": ["a", "b", "a", "b"],
            "g": ["b", "c", "b", "c"],
            "n_fg": [6, 3, 5, 0],
            "n_gf": [2, 0, 4, 1],
            "N_f": [10.0, 20.0, 8.0, 8.0],
            "N_g": [20.0, 5.0, 8.0, 8.0],
        }
    )
    pd.testing.assert_frame_equal(rows, expected, check_dtype=False)
    # one deviation cell per (LLM, state) seen: x saw a, b, c; y saw a, b, c
    assert len(arrays.cell_llm) == 6
    assert arrays.component.tolist() == [0, 0, 0]


def test_likelihood_equals_hand_binomial():
    data = tiny_panel()
    model = HierarchicalModel({"reference": "x"})
    arrays = model.prepare(data)
    pm_model = model.build_model(arrays)
    rng = np.random.default_rng(3)
    mu_raw = rng.normal(size=3)
    delta_raw = rng.normal(size=len(arrays.cell_llm))
    sigma_mu, tau, log_beta_y = 1.7, np.array([0.3, 0.6]), np.log(1.8)
    point = {
        "mu_raw": mu_raw,
        "delta_raw": delta_raw,
        "sigma_mu_log__": np.log(sigma_mu),
        "tau_delta_log__": np.log(tau),
        "log_beta_free": np.array([log_beta_y]),
    }
    logp = pm_model.compile_logp(vars=[pm_model["n_fg"]], sum=True)(point)
    beta = np.array([1.0, 1.8])  # x is the reference
    delta = tau[arrays.cell_llm] * delta_raw
    mu = sigma_mu * mu_raw
    u_f = mu[arrays.i] + delta[arrays.cell_f]
    u_g = mu[arrays.j] + delta[arrays.cell_g]
    eta = np.log(arrays.N_f / arrays.N_g) + beta[arrays.llm_index] * (u_f - u_g)
    hand = binom.logpmf(arrays.n_fg, arrays.n_fg + arrays.n_gf, 1 / (1 + np.exp(-eta))).sum()
    assert logp == pytest.approx(hand, rel=1e-9)


def test_one_llm_is_refused_and_bad_config_named():
    one = tiny_panel().select("x")
    with pytest.raises(DataError, match="at least two LLMs"):
        HierarchicalModel().prepare(one)
    with pytest.raises(ValueError, match="unknown model_config"):
        HierarchicalModel({"temperature": 1})
    with pytest.raises(DataError, match="reference LLM 'z'"):
        panel_arrays(tiny_panel(), reference="z")


def test_reference_defaults_to_llm_with_most_calls():
    assert panel_arrays(tiny_panel()).reference == "x"  # 35 calls against 24


def test_centre_per_component_and_mask():
    values = np.array([[[1.0, 3.0, 10.0, 20.0, 7.0]]])
    component = np.array([0, 0, 1, 1, 2])
    mask = np.array([True, True, True, True, False])
    out = _centre(values, component, mask)
    np.testing.assert_allclose(out[0, 0, :4], [-1.0, 1.0, -5.0, 5.0])
    assert np.isnan(out[0, 0, 4])


def test_landscape_correlation_hand_case():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    landscape = np.stack([x, 2 * x + 1, -x, x**2])[None, None]  # (1, 1, llm, state)
    observed = np.ones((4, 4), dtype=bool)
    r = _landscape_correlation(landscape, observed)[0, 0]
    assert r[0, 1] == pytest.approx(1.0)
    assert r[0, 2] == pytest.approx(-1.0)
    assert r[0, 3] == pytest.approx(np.corrcoef(x, x**2)[0, 1])


def test_metropolis_kernel_is_reversible_at_its_temperature():
    rng = np.random.default_rng(0)
    v = rng.normal(size=6)
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [0, 5], [1, 4]])
    for beta in (0.5, 2.0):
        kernel = metropolis_kernel(v, edges, beta)
        i, j = edges[:, 0], edges[:, 1]
        np.testing.assert_allclose(np.log(kernel[i, j] / kernel[j, i]), beta * (v[i] - v[j]))
        assert kernel.sum(axis=1).max() <= 1.0


def test_hierarchy_is_fitted_through_fit_like_every_model():
    """`fit(HierarchicalModel(), data)` is a `BayesFit` whose posterior is the tree `sample`
    gives (same MAP point); the model object keeps no fitted state."""
    panel = simulate_panel({"a": 1.0, "b": 0.6}, n_states=30, visits=40, seed=5)
    model = HierarchicalModel()
    result = fit(model, panel.data, method="map", seed=2, progressbar=False)
    assert isinstance(result, BayesFit) and result.model is model
    assert set(vars(model)) == {"model_config"}
    assert result.prepared.llms == ["a", "b"] and result.posterior.attrs["sampler"] == "find_MAP"
    tree = sample(HierarchicalModel(), panel.data, method="map", seed=2)
    for name in ("V", "beta", "tau_delta", "landscape_correlation"):
        np.testing.assert_array_equal(
            result.posterior["posterior"][name].to_numpy(), tree["posterior"][name].to_numpy()
        )
    assert result.posterior["posterior"]["beta"].sel(llm="a").item() == 1.0  # the reference


@pytest.mark.slow
def test_temperatures_recovered_and_odd_llm_named():
    """Three LLMs at β = 0.5, 1, 2 on one landscape and one on another (issue 5)."""
    betas = {"hot": 0.5, "ref": 1.0, "cold": 2.0, "odd": 1.0}
    panel = simulate_panel(betas, landscapes={"odd": 1}, n_states=150, visits=300, seed=3)
    tree = sample(
        HierarchicalModel({"reference": "ref"}),
        panel.data,
        draws=400,
        tune=400,
        chains=2,
        seed=1,
    )
    table = temperature_table(tree, ci=0.9)
    for name in ("hot", "cold"):
        assert table.loc[name, "beta_lower"] <= betas[name] <= table.loc[name, "beta_upper"]
    assert table.loc["ref", "beta_mean"] == 1.0
    assert odd_one_out(tree) == "odd"
    assert table.loc["odd", "tau_delta_lower"] > 1.0  # its landscape is independent (σ = 1)
    shared = table.drop(index="odd")["tau_delta_upper"]
    assert (shared < 0.2).all()
    corr = landscape_correlations(tree)
    assert corr["cold|hot"]["lower"] > 0.95
    assert corr["odd|ref"]["upper"] < 0.4
    # gauge: V is centred over the identified states in every draw
    v = tree["posterior"]["V"]
    np.testing.assert_allclose(v.mean("state"), 0.0, atol=1e-9)
    assert tree.attrs["model"] == "hierarchical"
    assert tree.attrs["sampler"] == "nutpie"


@pytest.mark.slow
def test_fitted_landscape_scale_removes_attenuation_on_sparse_data():
    """At 40 visits per state a fixed wide prior on μ attenuates β; the fitted scale does not."""
    betas = {"ref": 1.0, "cold": 2.0}
    panel = simulate_panel(betas, n_states=120, visits=40, seed=5)
    means = {}
    for prior, deviations in (("wide", "shared"), ("fitted", "per_llm")):
        config = {"reference": "ref", "mu_prior": prior, "deviations": deviations}
        tree = sample(HierarchicalModel(config), panel.data, draws=250, tune=250, chains=2, seed=2)
        cold = tree["posterior"]["beta"].sel(llm="cold")
        means[prior] = float(cold.mean())
        if prior == "fitted":
            lo, hi = (float(cold.quantile(q)) for q in (0.05, 0.95))
            assert lo <= 2.0 <= hi
    assert means["wide"] < 0.9 * 2.0  # the straightforward model's dilution, measured
    assert abs(means["fitted"] - 2.0) < abs(means["wide"] - 2.0)
