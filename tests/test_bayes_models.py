"""The Bayesian pair models: data view, density, gauge, whitening, MAP and Laplace.

Everything here runs without MCMC (MAP, numpy and compiled-logp checks), against truths known
by construction: hand-built counts, exact expected counts from a reversible kernel, simulated
landscapes with known V and drive, and dense linear algebra for the sparse shortcuts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detailed_balance.data import DataError, Transitions
from detailed_balance.models import EquilibriumModel, NonEquilibriumModel
from detailed_balance.models._density import (
    PairDensity,
    block_pcg,
    gaussian_draws,
    incidence,
    laplacian,
)
from detailed_balance.models._pairs import pair_data
from detailed_balance.models._whiten import ilu_whitening
from detailed_balance.sampling import fit
from detailed_balance.simulation import simulate


def _counts(rows, visits):
    frame = pd.DataFrame(rows, columns=["source", "target", "count"])
    table = pd.DataFrame(list(visits.items()), columns=["source", "visits"])
    return Transitions.from_counts(frame, table)


@pytest.fixture(scope="module")
def small_sim():
    return simulate(50, 6000, seed=3, spread=1.0)


def _centred_truth(result, truth: pd.Series) -> np.ndarray:
    cd = result.posterior["constant_data"]
    states = cd["state"].to_numpy().astype(str)
    values = truth.reindex(states).to_numpy()
    comp, w = cd["component"].to_numpy(), cd["centring_weight"].to_numpy()
    means = np.bincount(comp, w * values)
    return values - means[comp]


# -- the data view ------------------------------------------------------------------------------
def test_pair_data_by_hand():
    # A↔B↔C triangle (all six edges), C→INVALID (never a prompt), D→E one way, F isolated.
    rows = [
        ("A", "B", 5), ("B", "A", 3), ("B", "C", 2), ("C", "B", 4), ("A", "C", 1), ("C", "A", 2),
        ("C", "INVALID", 7), ("D", "E", 3),
    ]  # fmt: skip
    visits = {"A": 20, "B": 20, "C": 20, "D": 10, "E": 10, "F": 5}
    pairs = pair_data(_counts(rows, visits))
    assert list(pairs.states) == ["A", "B", "C", "D", "E"]
    assert list(pairs.unidentified) == ["F", "INVALID"]
    assert pairs.excluded_pairs[["f", "g"]].values.tolist() == [["C", "INVALID"]]
    assert pairs.n_pairs == 4 and pairs.n_components == 2
    assert pairs.bounded.tolist() == [True, True, True, False, False]
    # The D–E component has no bounded state: centred over both; A, B, C share weight 1/3.
    np.testing.assert_allclose(pairs.weights, [1 / 3, 1 / 3, 1 / 3, 0.5, 0.5])
    assert pairs.cycle_names.tolist() == [["A", "B", "C"]]
    ab, bc, ac = pairs.cycle_pairs[0]
    assert (pairs.i[ab], pairs.j[ab], pairs.i[bc], pairs.j[bc], pairs.i[ac], pairs.j[ac]) == (
        0, 1, 1, 2, 0, 2,
    )  # fmt: skip
    np.testing.assert_allclose(pairs.offset[ab], 0.0)
    np.testing.assert_allclose(pairs.n_fg, [5, 1, 2, 3])


def test_no_modelled_pair_is_a_clear_error():
    data = Transitions.from_counts(
        pd.DataFrame({"source": ["A"], "target": ["INVALID"], "count": [3]}), "uniform"
    )
    with pytest.raises(
        DataError, match=r"every transition has an end with no known visits \('INVALID'"
    ):
        pair_data(data)
    self_steps = Transitions.from_counts(
        pd.DataFrame({"source": ["A"], "target": ["A"], "count": [3]}), "uniform"
    )
    with pytest.raises(DataError, match="no transition between two different states"):
        pair_data(self_steps)


def test_unknown_config_and_reference_are_refused():
    with pytest.raises(ValueError, match="unknown model_config"):
        EquilibriumModel({"V_sigma": 3})
    with pytest.raises(ValueError, match="V_prior"):
        EquilibriumModel({"V_prior": "flat"})
    assert EquilibriumModel({"V_scale": 10.0}) == EquilibriumModel()
    assert EquilibriumModel() != NonEquilibriumModel()


# -- density ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "config"),
    [
        (EquilibriumModel, {"likelihood": "pairs"}),
        (EquilibriumModel, {"V_prior": "normal", "ilu_drop_tol": 0.1}),
        (EquilibriumModel, {"V_prior": "student_t"}),
        (NonEquilibriumModel, {"tau_A_prior": "halfcauchy"}),
    ],
)
def test_numpy_density_matches_pymc_logp(small_sim, cls, config):
    model = cls(config)
    prepared = model.prepare(small_sim.transitions)
    pm_model = model.build_model(prepared)
    logp = pm_model.compile_logp()
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(4):
        point = {k: rng.normal(size=np.shape(v)) * 0.5 for k, v in pm_model.initial_point().items()}
        theta = model.theta_from_point(prepared, point)
        diffs.append(logp(point) - prepared.density.logp_grad(theta)[0])
    assert np.ptp(diffs) < 1e-8  # equal up to the dropped constants


@pytest.mark.parametrize(
    "cls, config",
    [
        (EquilibriumModel, {"V_prior": "normal"}),
        (NonEquilibriumModel, {}),
        (NonEquilibriumModel, {"reference": "s0007", "A_pairs": "two_way"}),
    ],
)
def test_expand_equals_the_models_deterministics(small_sim, cls, config):
    """NUTS stores only the sampled coordinates; `expand` computes V, A and the loop
    affinities from them in numpy: equal to the PyMC graph's deterministics at random points."""
    import xarray as xr

    model = cls(config)
    prepared = model.prepare(small_sim.transitions)
    pm_model = model.build_model(prepared)
    names = model.stored_variables
    graphs = pm_model.replace_rvs_by_values([pm_model[n] for n in names])
    outputs = pm_model.compile_fn(graphs, inputs=pm_model.value_vars, on_unused_input="ignore")
    rng = np.random.default_rng(2)
    start = pm_model.initial_point()
    points = [[{k: rng.normal(size=np.shape(v)) for k, v in start.items()} for _ in range(3)]
              for _ in range(2)]  # fmt: skip
    expected = {n: np.array([[outputs(p)[q] for p in chain] for chain in points])
                for q, n in enumerate(names)}  # fmt: skip
    assert prepared.pairs.n_cycles > 0 or not model.nonequilibrium
    draws = {"V_white": (("chain", "draw", "latent"), [[p["V_white"] for p in c] for c in points])}
    if model.nonequilibrium:
        draws["A_white"] = (("chain", "draw", "pair"), [[p["A_white"] for p in c] for c in points])
    for scalar in model.sampler_variables:  # stored by the sampler on the natural scale
        draws[scalar] = (("chain", "draw"), expected[scalar])
    got = model.expand(prepared, xr.Dataset(draws, coords={"chain": [0, 1], "draw": [0, 1, 2]}))
    assert list(got.data_vars) == [*names, "centring_weight"]
    # the graph's V is in the data-only gauge; the stored draws are re-centred in the weights
    # `expand` reports (`PairData.report_gauge`): the same V up to one constant per component
    weights, comp = got["centring_weight"].to_numpy(), prepared.pairs.component
    shift = np.stack(
        [expected["V"][..., comp == c] @ weights[comp == c] for c in range(comp.max() + 1)], -1
    )
    expected["V"] = expected["V"] - shift[..., comp]
    for name in names:
        np.testing.assert_allclose(got[name].to_numpy(), expected[name], rtol=1e-9, atol=1e-9)
    assert list(got["V"]["state"].to_numpy()) == list(prepared.pairs.states.astype(str))


def test_window_restarts_only_where_a_scale_is_sampled():
    """A growing mass-matrix window only for the plain whitened equilibrium model; every model
    with a sampled scale, or unwhitened, keeps nutpie's restarts (80)."""
    assert EquilibriumModel().window_switch_freq == 10_000
    assert EquilibriumModel({"V_prior": "normal"}).window_switch_freq == 80
    assert EquilibriumModel({"parameterization": "direct"}).window_switch_freq == 80
    assert NonEquilibriumModel().window_switch_freq == 80


@pytest.mark.parametrize("nonequilibrium", [False, True])
@pytest.mark.parametrize("prior", ["wide", "student_t"])
def test_gradient_matches_finite_differences(small_sim, nonequilibrium, prior):
    config = {**NonEquilibriumModel.default_model_config, "V_prior": prior}
    density = PairDensity(pair_data(small_sim.transitions), config, nonequilibrium)
    rng = np.random.default_rng(1)
    theta = rng.normal(size=density.layout.size) * 0.3
    _, grad = density.logp_grad(theta)
    direction = rng.normal(size=theta.size)
    eps = 1e-6
    numeric = (
        density.logp_grad(theta + eps * direction)[0]
        - density.logp_grad(theta - eps * direction)[0]
    ) / (2 * eps)
    assert numeric == pytest.approx(grad @ direction, rel=1e-6)


# -- MAP and Laplace --------------------------------------------------------------------------------
def test_map_recovers_known_potential(small_sim):
    result = fit(EquilibriumModel(), small_sim.transitions, method="map", draws=500, chains=1)
    truth = _centred_truth(result, small_sim.potential)
    summary = result.summary(0.9).set_index("state").loc[result.potentials["state"].to_numpy()]
    bounded = summary["bounded"].to_numpy()
    assert np.corrcoef(summary["mean"], truth)[0, 1] > 0.95
    error = np.abs(summary["mean"] - truth)[bounded]
    assert np.sqrt(np.mean(error**2)) < 0.35
    covered = ((summary["lower"] <= truth) & (truth <= summary["upper"]))[bounded].mean()
    assert 0.75 <= covered <= 1.0


def test_exact_reversible_counts_shrink_intervals_onto_truth():
    # Expected counts × 10⁶ from a reversible kernel on a 5-state ring with chords: the
    # posterior concentrates on the truth (intervals ~1e-3 wide, and they contain it).
    v = np.array([0.0, 1.0, -0.5, 2.0, 0.3])
    names = [f"s{k}" for k in range(5)]
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (0, 2), (1, 3)]
    rows, visits = [], dict.fromkeys(names, 1e8)
    for f, g in edges:
        rate = 0.05 * np.exp(np.array([v[f] - v[g], v[g] - v[f]]) / 2)
        rows += [
            (names[f], names[g], round(1e8 * rate[0])),
            (names[g], names[f], round(1e8 * rate[1])),
        ]
    result = fit(EquilibriumModel(), _counts(rows, visits), method="map", draws=400, chains=1)
    summary = result.summary(0.9)
    weights = result.posterior["constant_data"]["centring_weight"].to_numpy()
    truth = v - v @ weights  # one component: the fit's (precision-weighted) gauge
    np.testing.assert_allclose(result.in_gauge(pd.Series(v + 7.0, index=names)), truth)
    assert (summary["upper"] - summary["lower"]).max() < 5e-3
    np.testing.assert_allclose(summary["mean"], truth, atol=2e-3)
    assert ((summary["lower"] <= truth + 1e-6) & (truth - 1e-6 <= summary["upper"])).all()


def test_gauge_is_centred_per_component_and_reference_moves_it():
    rows = [("A", "B", 5), ("B", "A", 3), ("B", "C", 4), ("C", "B", 4), ("A", "C", 2),
            ("X", "Y", 6), ("Y", "X", 2), ("Y", "Z", 1)]  # fmt: skip
    visits = dict.fromkeys("ABCXYZ", 30)
    data = _counts(rows, visits)
    result = fit(EquilibriumModel(), data, method="map", draws=300, chains=1)
    v = result.potentials.isel(chain=0).to_numpy()  # (draw, state)
    cd = result.posterior["constant_data"]
    weights, comp = cd["centring_weight"].to_numpy(), cd["component"].to_numpy()
    for label in np.unique(comp):
        members = comp == label
        np.testing.assert_allclose(v[:, members] @ weights[members], 0.0, atol=1e-9)
    # Z is entered only from Y (one way): not bounded, so not in its component's centring.
    assert not bool(cd["bounded"].sel(state="Z"))
    assert cd["centring_weight"].sel(state="Z").item() == 0.0
    # `in_gauge` moves any potentials into this gauge: the posterior mean is already there,
    # a shifted copy per component comes back to it, a missing state empties its component
    mean = result.summary().set_index("state")["mean"]
    shifted = mean + np.where(mean.index.isin(["A", "B", "C"]), 3.0, -2.0)
    np.testing.assert_allclose(result.in_gauge(shifted), mean.loc[list("ABCXYZ")], atol=1e-9)
    partial = result.in_gauge(mean.drop("Y"))
    assert partial[["X", "Y", "Z"]].isna().all() and partial[["A", "B", "C"]].notna().all()
    ref = fit(EquilibriumModel({"reference": "B"}), data, method="map", draws=300, chains=1)
    shifted = ref.potentials.isel(chain=0)
    np.testing.assert_allclose(shifted.sel(state="B"), 0.0, atol=1e-12)
    # Differences are gauge-free: the same in both fits.
    a_b = result.potentials.sel(state="A") - result.potentials.sel(state="B")
    np.testing.assert_allclose(shifted.sel(state="A") - shifted.sel(state="B"), a_b[0], atol=1e-9)


def test_reported_gauge_weights_states_by_their_posterior_precision():
    """`report_gauge` by hand: in each component Σ w V = 0 in every draw with w ∝ 1/Var(V)
    over the bounded states (variances in the equal-weight gauge), unbounded states get no
    weight, a component without bounded states keeps equal weights, a reference overrides,
    and a single draw falls back to the data-only weights."""
    rows = [
        ("A", "B", 5), ("B", "A", 3), ("B", "C", 2), ("C", "B", 4), ("A", "C", 1), ("C", "A", 2),
        ("C", "G", 3), ("D", "E", 3),
    ]  # fmt: skip
    visits = {"A": 20, "B": 20, "C": 20, "D": 10, "E": 10, "G": 10}
    pairs = pair_data(_counts(rows, visits))
    assert list(pairs.states) == ["A", "B", "C", "D", "E", "G"]
    assert pairs.bounded.tolist() == [True, True, True, False, False, False]
    rng = np.random.default_rng(0)
    sd = np.array([0.1, 0.2, 2.0, 1.0, 1.0, 3.0])  # C: weakly pinned; G: unbounded
    draws = rng.normal(size=(4000, 6)) * sd + np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    got, weights = pairs.report_gauge(draws.copy())
    first = pairs.centre(draws)  # the equal-weight gauge the variances are read in
    var = first[:, :3].var(axis=0)
    np.testing.assert_allclose(weights[:3], (1 / var) / (1 / var).sum(), rtol=1e-12)
    assert weights[2] < weights[0] / 3  # C, 20× noisier, counts for much less in the zero
    np.testing.assert_allclose(weights[3:], [0.5, 0.5, 0.0])  # D, E: no bounded state
    np.testing.assert_allclose(got[:, :3] @ weights[:3], 0.0, atol=1e-12)
    np.testing.assert_allclose(got[:, 3:5].mean(axis=1), 0.0, atol=1e-12)
    # the same draws up to one constant per component per draw
    diff = got - draws
    np.testing.assert_allclose(diff[:, :3], diff[:, [0]].repeat(3, 1), atol=1e-12)
    # a reference overrides; one draw keeps the data-only weights
    ref, ref_w = pairs.report_gauge(draws.copy(), "B")
    np.testing.assert_allclose(ref[:, 1], 0.0, atol=1e-12)
    assert ref_w[:3].tolist() == [0.0, 1.0, 0.0]
    _, one = pairs.report_gauge(draws[:1].copy())
    np.testing.assert_allclose(one, pairs.weights)


def test_one_directional_pairs_give_finite_wide_intervals():
    # B is only ever entered (A→B, C→B) and never left: V_B is bounded on one side only.
    rows = [("A", "C", 4), ("C", "A", 5), ("A", "B", 3), ("C", "B", 2)]
    data = _counts(rows, dict.fromkeys("ABC", 40))
    result = fit(EquilibriumModel(), data, method="map", draws=2000, chains=1)
    summary = result.summary(0.9).set_index("state")
    assert np.isfinite(summary[["mean", "lower", "upper"]].to_numpy()).all()
    assert not summary.loc["B", "bounded"]
    assert summary.loc["B", "upper"] - summary.loc["B", "lower"] > 3.0  # wide, prior-limited
    assert summary.loc["B", "upper"] - summary.loc["B", "lower"] < 60.0  # but finite
    assert summary.loc["B", "mean"] < summary.loc["A", "mean"]  # entered from A: downhill


def test_laplace_draws_have_the_inverse_laplacian_covariance():
    rng = np.random.default_rng(4)
    pairs = pair_data(simulate(25, 3000, seed=5).transitions)
    w = rng.uniform(0.5, 3.0, pairs.n_pairs)
    h = np.full(pairs.n_states, 0.05)
    dv, _ = gaussian_draws(pairs, w, h, 40_000, rng)
    dense = laplacian(pairs.i, pairs.j, w, pairs.n_states, h).toarray()
    np.testing.assert_allclose(
        np.cov(dv.T), np.linalg.inv(dense), atol=0.03 * np.abs(np.linalg.inv(dense)).max()
    )
    # Non-equilibrium: the Schur-complement path equals the joint (V, a) Gaussian.
    tau = 0.7
    dv2, da2 = gaussian_draws(pairs, w, h, 40_000, rng, tau)
    e = incidence(pairs.i, pairs.j, pairs.n_states).toarray()
    jac = np.hstack([e, tau * np.eye(pairs.n_pairs)])
    joint = jac.T @ np.diag(w) @ jac + np.diag(np.r_[h, np.ones(pairs.n_pairs)])
    cov = np.linalg.inv(joint)
    sample = np.cov(np.hstack([dv2, da2]).T)
    assert np.abs(sample - cov).max() < 0.05 * np.abs(cov).max()


def test_block_pcg_solves_like_dense():
    pairs = pair_data(simulate(40, 4000, seed=6).transitions)
    w = np.random.default_rng(0).uniform(0.2, 2, pairs.n_pairs)
    matrix = laplacian(pairs.i, pairs.j, w, pairs.n_states, np.full(pairs.n_states, 0.01))
    rhs = np.random.default_rng(1).normal(size=(pairs.n_states, 3))
    np.testing.assert_allclose(
        block_pcg(matrix, rhs, 1 / matrix.diagonal(), tol=1e-12),
        np.linalg.solve(matrix.toarray(), rhs),
        atol=1e-8,
    )


def test_exact_whitening_maps_standard_normal_to_the_laplace_covariance():
    pairs = pair_data(simulate(40, 4000, seed=7).transitions)
    w = np.random.default_rng(2).uniform(0.2, 2, pairs.n_pairs)
    hessian = laplacian(pairs.i, pairs.j, w, pairs.n_states, np.full(pairs.n_states, 0.01))
    white = ilu_whitening(hessian, np.zeros(pairs.n_states), drop_tol=0.0)
    b = white.matrix()
    np.testing.assert_allclose(b @ b.T, np.linalg.inv(hessian.toarray()), rtol=1e-8, atol=1e-10)
    z = np.random.default_rng(3).normal(size=(2, pairs.n_states))
    np.testing.assert_allclose(white.apply(z), z @ b.T, atol=1e-12)


def test_incomplete_whitening_conditions_the_laplacian_far_better_than_jacobi():
    """At the default drop tolerance the factor is incomplete (fewer nonzeros than the exact
    one) yet the whitened curvature Bᵀ H B has √κ < 2.5, where Jacobi scaling leaves ≥ 8."""
    pairs = pair_data(simulate(600, 5000, seed=11, spread=1.5).transitions)
    w = np.random.default_rng(4).uniform(0.05, 3, pairs.n_pairs)
    hessian = laplacian(pairs.i, pairs.j, w, pairs.n_states, np.full(pairs.n_states, 0.01))
    dense = hessian.toarray()
    white = ilu_whitening(hessian, np.zeros(pairs.n_states))
    exact = ilu_whitening(hessian, np.zeros(pairs.n_states), drop_tol=0.0)
    assert white.nnz < 0.8 * exact.nnz
    b = white.matrix()
    whitened = np.linalg.eigvalsh(b.T @ dense @ b)
    d = np.sqrt(np.diag(dense))
    jacobi = np.linalg.eigvalsh(dense / np.outer(d, d))
    assert np.sqrt(whitened.max() / whitened.min()) < 2.5
    assert np.sqrt(jacobi.max() / jacobi.min()) > 8


def test_nonequilibrium_map_tau_small_when_reversible_large_when_driven():
    reversible = simulate(40, 20_000, seed=8, mean_degree=8)
    driven = simulate(40, 20_000, seed=8, mean_degree=8, drive=1.5)
    tau = {}
    for name, sim in (("reversible", reversible), ("driven", driven)):
        result = fit(NonEquilibriumModel(), sim.transitions, method="map", draws=200, chains=1)
        tau[name] = float(result.posterior["posterior"]["tau_A"].mean())
        loops = result.posterior["posterior"]["loop_affinity"].mean(("chain", "draw")).to_numpy()
        cd = result.posterior["constant_data"]
        truth = sim.loop_affinity(pd.DataFrame({k: cd[f"cycle_{k}"].to_numpy() for k in "abc"}))
        if name == "driven":
            assert np.corrcoef(loops, truth)[0, 1] > 0.6
    assert tau["reversible"] < 0.3
    assert 0.7 < tau["driven"] < 2.5


@pytest.mark.parametrize(
    ("cls", "prior"),
    [
        (EquilibriumModel, "wide"),
        (EquilibriumModel, "student_t"),
        (EquilibriumModel, "normal"),
        (NonEquilibriumModel, "wide"),
    ],
)
def test_fused_density_gradient_matches_finite_differences(small_sim, cls, prior):
    """The fused kernel's hand-written gradient (as nutpie and ADVI see it, numba-compiled)
    equals central differences of its own log density, in every value variable."""
    model = cls({"V_prior": prior, "likelihood": "pairs"})
    pm_model = model.build_model(model.prepare(small_sim.transitions))
    fn = pm_model.compile_fn([pm_model.logp(), pm_model.dlogp()], mode="NUMBA")
    names = [v.name for v in pm_model.value_vars]
    sizes = [int(np.size(pm_model.initial_point()[n])) for n in names]
    rng = np.random.default_rng(3)
    point = {n: rng.normal(size=np.shape(pm_model.initial_point()[n])) * 0.5 for n in names}
    _, grad = fn(point)
    flat = np.concatenate([np.atleast_1d(point[n]) for n in names])
    direction = rng.normal(size=flat.size)

    def logp_at(x):
        parts = np.split(x, np.cumsum(sizes)[:-1])
        values = {n: part.reshape(np.shape(point[n])) for n, part in zip(names, parts, strict=True)}
        return fn(values)[0]

    eps = 1e-6
    numeric = (logp_at(flat + eps * direction) - logp_at(flat - eps * direction)) / (2 * eps)
    assert numeric == pytest.approx(grad @ direction, rel=1e-6)


@pytest.mark.parametrize("prior", ["normal", "student_t"])
def test_fitted_prior_scale_does_not_collapse(small_sim, prior):
    # The joint mode of a fitted σ_V is degenerate (σ_V → 0); the empirical-Bayes EM must
    # land near the true spread (1.0, shrunk a little by the likelihood's noise).
    result = fit(EquilibriumModel({"V_prior": prior}), small_sim.transitions, "map", 200, chains=1)
    sigma = float(result.posterior["posterior"]["sigma_V"].mean())
    assert 0.5 < sigma < 1.5
    truth = _centred_truth(result, small_sim.potential)
    mean = result.potentials.mean(("chain", "draw")).to_numpy()
    assert np.corrcoef(mean, truth)[0, 1] > 0.95


def test_vectorised_pair_loglik_matches_numpy_to_rounding():
    """The numba likelihood (polynomial exp/log1p) equals the numpy formula over logits from
    −800 to 800 (underflow and overflow ends included) and random counts."""
    from scipy.special import expit

    from detailed_balance.models._loglik import pair_loglik_jit

    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-800, 800, 20_001), rng.normal(0, 3, 5_000)])
    n_fg = rng.integers(0, 4, len(x)).astype(float)
    trials = n_fg + rng.integers(0, 4, len(x))
    i = rng.integers(0, 30, len(x))
    j = (i + 1 + rng.integers(0, 28, len(x))) % 30
    v = rng.normal(size=30)
    total, grad, resid = pair_loglik_jit(v, np.zeros(len(x)), x, n_fg, trials, i, j)
    logit = x + v[i] - v[j]
    terms = n_fg * logit - trials * np.logaddexp(0.0, logit)
    ref_resid = n_fg - trials * expit(logit)
    assert float(total) == pytest.approx(terms.sum(), rel=1e-13)
    np.testing.assert_allclose(resid, ref_resid, rtol=0, atol=1e-13)
    ref_grad = np.bincount(i, ref_resid, 30) - np.bincount(j, ref_resid, 30)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-10)


def test_pointwise_loglik_equals_scipy_binomial():
    """The per-(draw, pair) log-likelihood LOO uses is scipy's binomial log pmf of the same
    logits, with and without an antisymmetric part, including far-out logits."""
    from scipy.special import gammaln
    from scipy.stats import binom

    from detailed_balance.models import pointwise_loglik

    rng = np.random.default_rng(5)
    k, p, d = 40, 300, 7
    i = rng.integers(0, k, p)
    j = (i + 1 + rng.integers(0, k - 1, p)) % k
    n_fg = rng.integers(0, 6, p).astype(float)
    trials = n_fg + rng.integers(0, 6, p)
    offset = rng.normal(0, 2, p)
    v = rng.normal(0, 15, (d, k))
    a = rng.normal(0, 1, (d, p))
    for extra in (None, a):
        x = offset + v[:, i] - v[:, j] + (0.0 if extra is None else extra)
        got = pointwise_loglik(n_fg, trials, offset, i, j, v, extra)
        # scipy where p = σ(x) is representable to full precision ...
        moderate = np.abs(x) < 10
        expected = binom.logpmf(n_fg, trials, 1 / (1 + np.exp(-x)))
        assert moderate.mean() > 0.25
        np.testing.assert_allclose(got[moderate], expected[moderate], rtol=1e-9)
        # ... and the log-space formula everywhere (logits out to ±100 here)
        log_c = gammaln(trials + 1) - gammaln(n_fg + 1) - gammaln(trials - n_fg + 1)
        exact = log_c + n_fg * x - trials * np.logaddexp(0.0, x)
        np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-12)


def test_solver_falls_back_to_ilu_preconditioned_cg():
    """Where the sparse LU would fill in, `SpdSolver` runs CG preconditioned by the
    incomplete factor, a column per thread: same solution as dense linear algebra, and a
    warning (not a silent wrong answer) when the iterations run out."""
    from detailed_balance.models._density import SpdSolver

    pairs = pair_data(simulate(600, 5000, seed=11, spread=1.5).transitions)
    w = np.random.default_rng(4).uniform(0.05, 3, pairs.n_pairs)
    matrix = laplacian(pairs.i, pairs.j, w, pairs.n_states, np.full(pairs.n_states, 0.01))
    solver = SpdSolver(matrix, max_fill=0)
    assert solver.method == "pcg"
    rhs = np.random.default_rng(1).normal(size=(pairs.n_states, 5))
    expected = np.linalg.solve(matrix.toarray(), rhs)
    np.testing.assert_allclose(solver.solve(rhs, tol=1e-12), expected, atol=1e-7)
    np.testing.assert_allclose(solver.solve(rhs[:, 0], tol=1e-12), expected[:, 0], atol=1e-7)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        solver.solve(rhs, tol=1e-14, maxiter=2)
