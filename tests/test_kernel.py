"""The exact kernel likelihood (`models/_kernel.py`) against hand-computed truth.

A multinomial per prompt state, computed by scipy on a tiny case; the gradient against finite
differences; exact expected counts recover V exactly; and on counts sampled from the
reversible peer matrix the maximum of the likelihood is deeptime's reversible MLE.
"""

from __future__ import annotations

import dataclasses
import gzip

import numpy as np
import pandas as pd
import pytest
from peer_data import PEER
from scipy.stats import multinomial

from detailed_balance.data import DataError, Transitions
from detailed_balance.models._kernel import KernelDensity, multinomial_loglik
from detailed_balance.models._pairs import pair_data
from detailed_balance.simulation import simulate_from_matrix, stationary_distribution


def _transitions(counts: dict[tuple[str, str], float], visits: dict[str, float]) -> Transitions:
    frame = pd.DataFrame(
        [(f, g, n) for (f, g), n in counts.items()], columns=["source", "target", "count"]
    )
    table = pd.DataFrame({"source": list(visits), "visits": list(visits.values())})
    return Transitions.from_counts(frame, visits=table)


TINY_COUNTS = {("a", "b"): 3, ("b", "a"): 2, ("b", "c"): 4, ("c", "b"): 1, ("a", "c"): 1}
TINY_VISITS = {"a": 10, "b": 9, "c": 7}


def test_loglik_is_the_product_of_multinomials_of_each_prompt_state():
    pairs = pair_data(_transitions(TINY_COUNTS, TINY_VISITS))
    density = KernelDensity(pairs, scale=None, gauge=0.0)
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 0.7, density.size)
    t_fg, t_gf, rest = density.kernel_rows(theta)
    names = list(pairs.states)
    kernel = np.zeros((3, 3))
    for p, (i, j) in enumerate(zip(pairs.i, pairs.j, strict=True)):
        kernel[i, j], kernel[j, i] = t_fg[p], t_gf[p]
    np.testing.assert_allclose(kernel.sum(axis=1) + rest, 1.0)
    expected = 0.0
    for f, name in enumerate(names):
        row = [TINY_COUNTS.get((name, g), 0) for g in names if g != name]
        probs = [kernel[f, names.index(g)] for g in names if g != name]
        x = [*row, TINY_VISITS[name] - sum(row)]
        expected += multinomial.logpmf(x, TINY_VISITS[name], [*probs, 1 - sum(probs)])
    assert multinomial_loglik(pairs, t_fg, t_gf) == pytest.approx(expected, rel=1e-12)
    # the density is that log-likelihood up to the multinomial coefficients
    shifted = KernelDensity(pairs, scale=None, gauge=0.0).logp_grad(theta + 0.3)[0]
    base = density.logp_grad(theta)[0]
    assert shifted == pytest.approx(base, abs=1e-9)  # the gauge direction: T unchanged
    theta2 = rng.normal(0, 0.7, density.size)
    diff = density.logp_grad(theta2)[0] - base
    t2 = density.kernel_rows(theta2)
    assert diff == pytest.approx(
        multinomial_loglik(pairs, t2[0], t2[1]) - multinomial_loglik(pairs, t_fg, t_gf), rel=1e-10
    )


@pytest.mark.parametrize("scale", [None, 2.0])
def test_gradient_matches_finite_differences(scale):
    pairs = pair_data(_transitions(TINY_COUNTS, TINY_VISITS))
    density = KernelDensity(pairs, scale=scale)
    theta = np.random.default_rng(1).normal(0, 1, density.size)
    grad = density.logp_grad(theta)[1]
    step = 1e-6
    for index in range(density.size):
        e = np.zeros(density.size)
        e[index] = step
        fd = (density.logp_grad(theta + e)[0] - density.logp_grad(theta - e)[0]) / (2 * step)
        assert grad[index] == pytest.approx(fd, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("scale", [None, 2.0])
def test_hessian_vector_product_matches_finite_differences(scale):
    pairs = pair_data(_transitions(TINY_COUNTS, TINY_VISITS))
    density = KernelDensity(pairs, scale=scale)
    rng = np.random.default_rng(2)
    theta, v = rng.normal(0, 1, density.size), rng.normal(0, 1, density.size)
    step = 1e-6
    fd = -(density.logp_grad(theta + step * v)[1] - density.logp_grad(theta - step * v)[1])
    np.testing.assert_allclose(density.hessp(theta, v), fd / (2 * step), rtol=1e-6, atol=1e-8)


def _peer() -> np.ndarray:
    opener = gzip.open if str(PEER).endswith(".gz") else open
    with opener(PEER, "rt") as handle:
        return np.loadtxt(handle)


def test_exact_expected_counts_recover_v_exactly():
    """n_fg = N_f T_fg exactly (real-valued) on the reversible peer matrix, the pair set of a
    sampled data set (unmodelled moves join the remainder): the maximum of the likelihood is
    the kernel itself, so V = −log π of the peer matrix to optimiser precision."""
    peer = _peer()
    pairs = pair_data(simulate_from_matrix(peer, 100 * len(peer), seed=3).transitions)
    assert pairs.n_components == 1
    index = np.array([int(str(s).removeprefix("s")) for s in pairs.states])
    p_fg, p_gf = peer[index[pairs.i], index[pairs.j]], peer[index[pairs.j], index[pairs.i]]
    exact = dataclasses.replace(
        pairs, n_fg=pairs.visits[pairs.i] * p_fg, n_gf=pairs.visits[pairs.j] * p_gf
    )
    density = KernelDensity(exact, scale=None)
    theta = density.find_map()
    truth = -np.log(stationary_distribution(peer))[index]
    np.testing.assert_allclose(density.potential(theta), exact.centre(truth), atol=1e-6)


def test_remainder_below_zero_is_refused():
    with pytest.raises(DataError, match="true visit counts"):
        counts = pd.DataFrame({"source": ["a", "b"], "target": ["b", "a"], "count": [5, 1]})
        KernelDensity(pair_data(Transitions.from_counts(counts, "uniform", calls=6)))


def test_maximum_equals_deeptimes_reversible_mle():
    """Counts sampled from the peer matrix (300 calls per state), restricted to the largest
    strongly connected set deeptime keeps: our flat-prior maximum is deeptime's reversible MLE
    (transition matrix and −log π to 1e-6)."""
    from deeptime.markov.msm import MaximumLikelihoodMSM  # a test dependency (pyproject)

    peer = _peer()
    pairs = pair_data(simulate_from_matrix(peer, 300 * len(peer), seed=5).transitions)
    k = pairs.n_states
    full = np.zeros((k, k))
    full[pairs.i, pairs.j] = pairs.n_fg
    full[pairs.j, pairs.i] = pairs.n_gf
    full[np.arange(k), np.arange(k)] = pairs.visits - full.sum(axis=1)
    estimator = MaximumLikelihoodMSM(reversible=True, maxiter=1_000_000, maxerr=1e-14)
    msm = estimator.fit_from_counts(full).fetch_model()
    active = np.asarray(msm.count_model.state_symbols)
    assert 200 < len(active) < k  # deeptime drops the states outside its connected set
    counts = full[np.ix_(active, active)]
    names = [f"s{n}" for n in range(len(active))]
    f, g = np.nonzero(counts - np.diag(np.diag(counts)))
    frame = pd.DataFrame(
        {"source": np.array(names)[f], "target": np.array(names)[g], "count": counts[f, g]}
    )
    visits = pd.DataFrame({"source": names, "visits": counts.sum(axis=1)})
    sub = pair_data(Transitions.from_counts(frame, visits=visits))
    index = np.array([int(str(s).removeprefix("s")) for s in sub.states])
    density = KernelDensity(sub, scale=None)
    theta = density.find_map()
    t_fg, t_gf, rest = density.kernel_rows(theta)
    reference = msm.transition_matrix[np.ix_(index, index)]
    np.testing.assert_allclose(t_fg, reference[sub.i, sub.j], atol=1e-6)
    np.testing.assert_allclose(t_gf, reference[sub.j, sub.i], atol=1e-6)
    np.testing.assert_allclose(rest, np.diag(reference), atol=1e-6)
    v_ref = sub.centre(-np.log(msm.stationary_distribution[index]))
    np.testing.assert_allclose(density.potential(theta), v_ref, atol=1e-6)


def test_laplace_draws_have_the_inverse_hessian_as_covariance():
    """Perturb-then-solve: the draws' mean is θ* and their covariance H⁻¹, with H built
    column by column from the exact Hessian-vector product (dense linear algebra)."""
    pairs = pair_data(_transitions(TINY_COUNTS, TINY_VISITS))
    density = KernelDensity(pairs, scale=3.0)
    theta = density.find_map()
    n = density.size
    hessian = np.column_stack([density.hessp(theta, e) for e in np.eye(n)])
    draws = density.laplace_draws(theta, 40_000, np.random.default_rng(4), direct=False)
    assert draws.shape == (40_000, n)
    cov = np.cov(draws.T)
    target = np.linalg.inv(hessian)
    np.testing.assert_allclose(
        draws.mean(axis=0), theta, atol=4 * np.sqrt(target.diagonal().max() / 40_000)
    )
    np.testing.assert_allclose(cov, target, atol=0.03 * np.abs(target).max())
    # V per draw is −log π of that draw
    v = density.potential_draws(draws[:3])
    np.testing.assert_allclose(v[1], density.potential(draws[1]), atol=1e-12)


def test_direct_laplace_draws_factor_the_explicit_hessian_and_agree_on_v():
    """The explicit Hessian (per-state multinomial blocks + prior) is the exact one minus the
    gauge term; direct draws have its inverse as covariance, and their V = −log π matches the
    matrix-free draws' in mean and covariance (the gauge direction is invisible to V)."""
    pairs = pair_data(_transitions(TINY_COUNTS, TINY_VISITS))
    density = KernelDensity(pairs, scale=3.0)
    theta = density.find_map()
    n = density.size
    full = np.column_stack([density.hessp(theta, e) for e in np.eye(n)])
    explicit = density.explicit_hessian(theta).toarray()
    sizes = np.maximum(density.sizes, 1)
    same = density.component[:, None] == density.component[None, :]
    gauge = density.gauge * same / sizes[density.component][:, None]
    np.testing.assert_allclose(explicit + gauge, full, atol=1e-9)
    direct = density.laplace_draws(theta, 40_000, np.random.default_rng(5))
    np.testing.assert_allclose(
        np.cov(direct.T), np.linalg.inv(explicit), atol=0.03 * np.abs(np.linalg.inv(explicit)).max()
    )
    cg = density.laplace_draws(theta, 40_000, np.random.default_rng(6), direct=False)
    v_direct, v_cg = density.potential_draws(direct), density.potential_draws(cg)
    np.testing.assert_allclose(v_direct.mean(axis=0), v_cg.mean(axis=0), atol=0.02)
    np.testing.assert_allclose(np.cov(v_direct.T), np.cov(v_cg.T), atol=0.02)


def test_parallel_draws_are_reproducible_whatever_the_thread_count():
    """`parallel_fill` makes its blocks from spawned child generators: the same seed gives the
    same numbers on one thread or several, the blocks are distinct streams, and the values are
    standard normal."""
    import numba

    from detailed_balance.models._kernel import parallel_normals

    threads = numba.get_num_threads()
    try:
        many = parallel_normals(np.random.default_rng(5), (400, 3000))
        numba.set_num_threads(1)
        one = parallel_normals(np.random.default_rng(5), (400, 3000))
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(many, one)
    assert not np.array_equal(many[:50], many[50:100])  # block 0 vs block 1
    assert abs(many.mean()) < 0.005 and abs(many.std() - 1.0) < 0.005


def test_laplace_draws_fall_back_to_conjugate_gradients_when_the_factor_does_not_fit(monkeypatch):
    """At 10× the paper's scale SuperLU cannot hold the exact factor of C (MemoryError): the
    draws then come, with a warning, from the matrix-free path — the same numbers it gives."""
    pairs = pair_data(_transitions(TINY_COUNTS, TINY_VISITS))
    density = KernelDensity(pairs, scale=3.0)
    theta = density.find_map()
    expected = density.laplace_draws(theta, 50, np.random.default_rng(7), direct=False)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(KernelDensity, "_woodbury_draws", no_memory)
    with pytest.warns(RuntimeWarning, match="does not fit in memory"):
        got = density.laplace_draws(theta, 50, np.random.default_rng(7))
    np.testing.assert_array_equal(got, expected)
