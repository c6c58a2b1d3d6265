"""The Bayesian kernel model (`models/_kernel_model.py`) behind the pair models' interface.

Which likelihood the data get (and the message saying why), the PyMC density against the
numpy one (value and gradient, on a tiny case), and fits with known truth: the ``map`` and
``nuts`` posteriors of V on a simulated landscape cover the true V, agree with each other,
and everything downstream (summary, save/load, verdict) reads a kernel fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detailed_balance.data import Transitions
from detailed_balance.models import EquilibriumModel, NonEquilibriumModel
from detailed_balance.models._kernel import KernelDensity
from detailed_balance.models._kernel_model import PreparedKernel
from detailed_balance.sampling import fit, load_fit
from detailed_balance.simulation import simulate

COUNTS = {("a", "b"): 3, ("b", "a"): 2, ("b", "c"): 4, ("c", "b"): 1, ("a", "c"): 1}
VISITS = {"a": 10, "b": 9, "c": 7}


def _counts_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [(f, g, n) for (f, g), n in COUNTS.items()], columns=["source", "target", "count"]
    )


def _explicit() -> Transitions:
    table = pd.DataFrame({"source": list(VISITS), "visits": list(VISITS.values())})
    return Transitions.from_counts(_counts_frame(), visits=table)


def _coverage(result, sim) -> tuple[float, float, int]:
    """90% coverage and RMSE of the posterior mean on bounded states, up to one constant."""
    table = result.summary().set_index("state")
    bounded = table[table["bounded"]]
    truth = sim.potential.reindex(bounded.index)
    shift = float((bounded["mean"] - truth).mean())
    inside = (bounded["lower"] - shift <= truth) & (truth <= bounded["upper"] - shift)
    rmse = float(np.sqrt(((bounded["mean"] - shift - truth) ** 2).mean()))
    return float(inside.mean()), rmse, len(bounded)


def _moments(result, weights) -> pd.DataFrame:
    """Posterior mean and sd of V with every draw centred by `weights` (one component)."""
    v = result.posterior["posterior"]["V"].stack(s=("chain", "draw")).transpose("s", "state")
    v = v.to_numpy() - (v.to_numpy() @ weights)[:, None]
    return pd.DataFrame({"mean": v.mean(axis=0), "sd": v.std(axis=0)})


def test_auto_uses_the_kernel_only_for_true_visit_counts():
    model = EquilibriumModel()
    prepared = model.prepare(_explicit(), whiten=False)
    assert isinstance(prepared, PreparedKernel)
    assert "true call counts" in prepared.reason
    uniform = Transitions.from_counts(_counts_frame(), visits="uniform", calls=30)
    prepared = model.prepare(uniform, whiten=False)
    assert prepared.likelihood == "pairs" and "'uniform' convention" in prepared.reason
    outgoing = Transitions.from_counts(_counts_frame(), visits="outgoing")
    assert model.prepare(outgoing, whiten=False).likelihood == "pairs"
    # the non-equilibrium model and fitted-scale priors stay on the pair likelihood
    assert NonEquilibriumModel().prepare(_explicit(), whiten=False).likelihood == "pairs"
    normal = EquilibriumModel({"V_prior": "normal"})
    assert normal.prepare(_explicit(), whiten=False).likelihood == "pairs"


def test_asking_for_the_kernel_where_it_cannot_apply_is_a_clear_error():
    uniform = Transitions.from_counts(_counts_frame(), visits="uniform", calls=30)
    with pytest.raises(ValueError, match="needs true visit counts"):
        EquilibriumModel({"likelihood": "kernel"}).prepare(uniform)
    with pytest.raises(ValueError, match="non-equilibrium"):
        NonEquilibriumModel({"likelihood": "kernel"}).prepare(_explicit())
    with pytest.raises(ValueError, match="likelihood"):
        EquilibriumModel({"likelihood": "multinomial"})
    with pytest.raises(ValueError, match="kernel_scale"):
        EquilibriumModel({"kernel_scale": 0.0})


def test_pymc_density_equals_the_numpy_density():
    model = EquilibriumModel({"likelihood": "kernel", "kernel_scale": 2.0})
    prepared = model.prepare(_explicit())
    pm_model = model.build_model(prepared)
    logp = pm_model.compile_logp()
    dlogp = pm_model.compile_dlogp()
    density = KernelDensity(prepared.pairs, scale=2.0, gauge=0.0, jump=True)
    assert density.size == prepared.pairs.n_pairs  # u only: ρ is drawn exactly
    white = prepared.whitening
    basis = white.matrix()  # θ = θ* + B z
    rng = np.random.default_rng(4)
    points = [rng.normal(0, 0.8, density.size) for _ in range(3)]
    values = [logp({"theta_white": z}) for z in points]
    reference = [density.logp_grad(white.apply(z))[0] for z in points]
    # equal up to one constant (the multinomial coefficients and the prior's normaliser)
    np.testing.assert_allclose(np.diff(values), np.diff(reference), rtol=1e-10, atol=1e-9)
    grad = dlogp({"theta_white": points[0]})
    np.testing.assert_allclose(
        grad, basis.T @ density.logp_grad(white.apply(points[0]))[1], rtol=1e-9, atol=1e-9
    )
    # the whitening comes from the exact Hessian at the MAP: B Bᵀ = H⁻¹ on this tiny case
    hessian = density.explicit_hessian(prepared.map_result.theta).toarray()
    np.testing.assert_allclose(basis @ basis.T, np.linalg.inv(hessian), rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def landscape():
    return simulate(120, 24_000, seed=11)


def test_map_posterior_covers_the_true_potential(landscape):
    result = fit(EquilibriumModel(), landscape.transitions, method="map", draws=500, chains=2)
    attrs = result.posterior.attrs
    assert attrs["likelihood"] == "kernel" and "true call counts" in attrs["likelihood_reason"]
    post = result.posterior["posterior"]
    assert set(post.data_vars) == {"V", "log_conductance", "log_remainder"}
    assert post["log_conductance"].shape == (1, 1000, result.pairs.n_pairs)
    coverage, rmse, bounded = _coverage(result, landscape)
    assert bounded == 120
    assert 0.8 <= coverage <= 0.99
    assert rmse < 0.35  # true spread 1 kT, 200 calls per state
    # the draws are V = −log π of the stored kernel draws
    density = KernelDensity(result.pairs, scale=10.0, gauge=0.0)
    theta = np.concatenate(
        [post["log_conductance"].values[0, :5], post["log_remainder"].values[0, :5]], axis=1
    )
    # (in the fit's gauge: the stored draws are centred with its precision weights)
    weights = result.posterior["constant_data"]["centring_weight"].to_numpy()
    assert np.isclose(weights.sum(), 1.0) and weights.std() > 0  # one component, unequal
    expected = density.potential_draws(theta)
    expected -= (expected @ weights)[:, None]
    np.testing.assert_allclose(expected, post["V"].values[0, :5], rtol=1e-10, atol=1e-10)


def test_nuts_agrees_with_the_truth_and_with_the_laplace_posterior(landscape, tmp_path):
    data = landscape.transitions
    nuts = fit(EquilibriumModel(), data, method="nuts", draws=400, tune=400, chains=2, seed=3,
               progressbar=False)  # fmt: skip
    stats = nuts.posterior["sample_stats"]
    assert int(stats["diverging"].sum()) == 0
    coverage, rmse, _ = _coverage(nuts, landscape)
    assert 0.8 <= coverage <= 0.99 and rmse < 0.35
    laplace = fit(EquilibriumModel(), data, method="map", draws=1000, chains=1)
    # compared in one gauge (each fit reports V centred with its own precision weights)
    weights = laplace.posterior["constant_data"]["centring_weight"].to_numpy()
    a, b = (_moments(result, weights) for result in (nuts, laplace))
    # 200 calls per state: the posterior is close to Gaussian, so the two agree to a small
    # fraction of the posterior sd (NUTS Monte Carlo error ≈ sd / √ESS ≈ 0.05 sd)
    assert float(np.max(np.abs(a["mean"] - b["mean"]) / b["sd"])) < 0.35
    # ... and in spread, including the states that never stayed (R = 0, ρ's Beta posterior
    # piled against 0: exact in both methods)
    assert (laplace.prepared.density.stays == 0).sum() > 5
    np.testing.assert_allclose(a["sd"] / b["sd"], 1.0, atol=0.25)
    # save / load: the likelihood is in the provenance, the kernel draws are kept
    path = nuts.save(tmp_path / "kernel.nc")
    loaded = load_fit(path)
    assert loaded.posterior.attrs["likelihood"] == "kernel"
    assert "log_remainder" in loaded.posterior["posterior"]
    pd.testing.assert_frame_equal(loaded.summary(), nuts.summary())


def test_pymc_sampler_and_advi_store_the_same_variables(landscape):
    sim = simulate(30, 3_000, seed=2)
    model = EquilibriumModel()
    for method, extra in (("nuts", {"sampler": "pymc"}), ("advi", {"advi_iterations": 300})):
        result = fit(model, sim.transitions, method=method, draws=50, tune=50, chains=1,
                     progressbar=False, **extra)  # fmt: skip
        post = result.posterior["posterior"]
        assert set(post.data_vars) == {"V", "log_conductance", "log_remainder"}
        assert np.isfinite(post["V"].values).all()
        # the draws are of this landscape's V (100 calls per state: RMSE ≈ 0.3 kT)
        _, rmse, bounded = _coverage(result, sim)
        assert bounded == 30 and rmse < 0.6


def test_the_likelihood_factorises_into_remainder_binomials_and_the_jump_chain():
    """log L(u, r) = Σ_f log Binomial(R_f | N_f, ρ_f) + jump log-likelihood of u, with
    ρ_f = X_ff / π_f: what lets the model draw ρ exactly and sample u alone."""
    from scipy.stats import binom

    from detailed_balance.models._kernel import multinomial_loglik
    from detailed_balance.models._pairs import pair_data

    pairs = pair_data(_explicit())
    full = KernelDensity(pairs, scale=None, gauge=0.0)
    jump = KernelDensity(pairs, scale=None, gauge=0.0, jump=True)
    rng = np.random.default_rng(7)
    base = None
    for _ in range(3):
        theta = rng.normal(0, 0.8, full.size)
        u, r = full.split(theta)
        t_fg, t_gf, rho = full.kernel_rows(theta)
        total = multinomial_loglik(pairs, t_fg, t_gf)
        remainder = float(binom.logpmf(full.stays, pairs.visits, rho).sum())
        gap = total - remainder - jump.logp_grad(u)[0]
        base = gap if base is None else base
        assert gap == pytest.approx(base, abs=1e-10)  # equal up to the multinomial constants


def test_cli_fit_says_which_likelihood_and_refuses_kernel_on_approximate_visits(tmp_path, capsys):
    from detailed_balance.cli import main

    sim_dir = tmp_path / "sim"
    assert main(["simulate", "--states", "40", "--transitions", "4000", "--seed", "2",
                 "--out", str(sim_dir)]) == 0  # fmt: skip
    counts = sim_dir / "transitions.csv"
    out = tmp_path / "fit.nc"
    capsys.readouterr()
    assert main(["fit", str(counts), "--method", "map", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "kernel likelihood: the visits are true call counts" in err
    assert load_fit(out).posterior.attrs["likelihood"] == "kernel"
    pairs_out = tmp_path / "pairs.nc"
    assert main(["fit", str(counts), "--method", "map", "--likelihood", "pairs",
                 "--out", str(pairs_out)]) == 0  # fmt: skip
    assert "pairs likelihood: asked for" in capsys.readouterr().err
    assert main(["fit", str(counts), "--method", "map", "--likelihood", "kernel", "--visits",
                 "uniform", "--out", str(tmp_path / "no.nc")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "needs true visit counts" in err and "Traceback" not in err
    assert not (tmp_path / "no.nc").exists()
