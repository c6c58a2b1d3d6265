"""The ground-truth simulator against exact properties of its own construction.

Truths used: π ∝ exp(−V) makes π_f T_fg = π_g T_gf exactly for a reversible kernel; the drive
A is the only source of loop affinity; with fixed visits, each row's outcomes are multinomial
with the kernel's probabilities; deeptime's 251×251 matrix is exactly reversible with a
potential spread of about 2.6 kT (its README).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from peer_data import PEER
from scipy import stats
from scipy.sparse.csgraph import connected_components

import detailed_balance
from detailed_balance.cli import main
from detailed_balance.data import read_transitions
from detailed_balance.simulation import (
    Simulation,
    load_peer_matrix,
    simulate,
    simulate_from_matrix,
    stationary_distribution,
)


def _log_t(sim: Simulation, sources, targets) -> np.ndarray:
    """log T(f→g) read straight from the kernel matrix."""
    i = sim.states.get_indexer(np.asarray(sources, dtype=object))
    j = sim.states.get_indexer(np.asarray(targets, dtype=object))
    return np.log(np.asarray(sim.kernel[i, j]).ravel())


def _count_matrix(sim: Simulation) -> np.ndarray:
    """Observed counts (self rows included) as a dense matrix over `sim.states`."""
    c = sim.transitions.counts
    n = len(sim.states)
    i = sim.states.get_indexer(c["source"])
    j = sim.states.get_indexer(c["target"])
    return sp.csr_matrix((c["count"].to_numpy(float), (i, j)), shape=(n, n)).toarray()


# -- the kernel -----------------------------------------------------------------------------------
def test_reversible_kernel_satisfies_detailed_balance_exactly():
    sim = simulate(400, 1000, spread=2.0, seed=1)
    v = sim.potential.to_numpy()
    pi = np.exp(-v) / np.exp(-v).sum()
    flux = sp.diags(pi) @ sim.kernel
    assert abs(flux - flux.T).max() < 1e-12 * pi.max()
    np.testing.assert_allclose(sim.stationary.to_numpy(), pi, rtol=1e-12)
    rows = np.asarray(sim.kernel.sum(axis=1)).ravel()
    np.testing.assert_allclose(rows, 1.0, atol=1e-12)
    assert sim.kernel.min() >= 0
    np.testing.assert_allclose(sim.pair_affinity(sim.transitions.pairs()), 0.0)
    assert not sim.driven


def test_pair_log_ratio_is_potential_difference_plus_drive():
    sim = simulate(300, 1000, drive=0.7, seed=2)
    edges = sim.drive  # both directions of every edge
    log_ratio = _log_t(sim, edges["source"], edges["target"]) - _log_t(
        sim, edges["target"], edges["source"]
    )
    v = sim.potential
    expected = (
        v[edges["source"]].to_numpy() - v[edges["target"]].to_numpy() + edges["drive"].to_numpy()
    )
    np.testing.assert_allclose(log_ratio, expected, atol=1e-12)
    pairs = pd.DataFrame({"f": edges["source"], "g": edges["target"]})
    np.testing.assert_allclose(sim.pair_log_ratio(pairs), expected, atol=1e-12)
    # antisymmetric: A(g→f) = −A(f→g)
    back = pd.DataFrame({"f": edges["target"], "g": edges["source"]})
    np.testing.assert_allclose(sim.pair_affinity(back), -edges["drive"].to_numpy())


def test_loop_affinity_equals_kernel_log_ratio_around_observed_cycles():
    sim = simulate(200, 200_000, mean_degree=10, drive=0.5, seed=3)
    cycles = sim.transitions.cycles()
    assert len(cycles) > 50
    a, b, c = cycles["a"], cycles["b"], cycles["c"]
    forward = _log_t(sim, a, b) + _log_t(sim, b, c) + _log_t(sim, c, a)
    backward = _log_t(sim, b, a) + _log_t(sim, c, b) + _log_t(sim, a, c)
    truth = sim.loop_affinity(cycles)
    np.testing.assert_allclose(truth, forward - backward, atol=1e-12)
    # a real non-equilibrium drive: A_ab + A_bc + A_ca ~ N(0, 3 · drive²), not absorbed into V
    assert 0.5 * np.sqrt(3) * 0.5 < truth.std() < 1.5 * np.sqrt(3) * 0.5
    assert sim.driven
    # and the stationary law is no longer exp(−V), but still stationary
    pi = sim.stationary.to_numpy()
    np.testing.assert_allclose(pi @ sim.kernel, pi, atol=1e-13)
    boltzmann = np.exp(-sim.potential.to_numpy())
    assert np.abs(pi - boltzmann / boltzmann.sum()).max() > 1e-4


def test_reversible_loops_have_zero_affinity():
    sim = simulate(200, 100_000, mean_degree=10, seed=4)
    cycles = sim.transitions.cycles()
    assert len(cycles) > 20
    a, b, c = cycles["a"], cycles["b"], cycles["c"]
    forward = _log_t(sim, a, b) + _log_t(sim, b, c) + _log_t(sim, c, a)
    backward = _log_t(sim, b, a) + _log_t(sim, c, b) + _log_t(sim, a, c)
    np.testing.assert_allclose(forward - backward, 0.0, atol=1e-12)
    np.testing.assert_array_equal(sim.loop_affinity(cycles), 0.0)


def test_truth_is_only_defined_on_graph_edges():
    sim = simulate(50, 100, seed=5)
    edges = set(zip(sim.graph["source"], sim.graph["target"], strict=True))
    non_edge = next((f, g) for f in sim.states for g in sim.states if f < g and (f, g) not in edges)
    with pytest.raises(ValueError, match="not an edge"):
        sim.pair_affinity(pd.DataFrame({"f": [non_edge[0]], "g": [non_edge[1]]}))
    with pytest.raises(ValueError, match="unknown state 'nope'"):
        sim.pair_affinity(pd.DataFrame({"f": ["nope"], "g": [sim.states[0]]}))


def test_move_probability_caps_rows_and_adds_rejections():
    sim = simulate(100, 1000, move_probability=0.3, seed=6)
    off = sim.kernel - sp.diags(sim.kernel.diagonal())
    assert np.asarray(off.sum(axis=1)).max() <= 0.3 + 1e-12
    assert sim.kernel.diagonal().min() >= 0.7 - 1e-12
    v = sim.potential.to_numpy()
    flux = sp.diags(np.exp(-v)) @ sim.kernel
    assert abs(flux - flux.T).max() < 1e-12


def test_driven_stationary_large_graph_uses_the_iterative_solver():
    sim = simulate(3000, 1000, drive=1.0, seed=7)  # > 2000 states: jump-chain BiCGSTAB path
    pi = sim.stationary.to_numpy()
    assert pi.min() > 0
    assert np.abs(pi @ sim.kernel - pi).max() < 1e-12 * pi.max()


# -- graph and potential --------------------------------------------------------------------------
def test_graph_is_connected_simple_and_heavy_tailed():
    n = 5000
    sim = simulate(n, 0, mean_degree=6, seed=8)
    g = sim.graph
    assert (g["i"] < g["j"]).all()  # no self loops, one row per undirected edge
    assert not g.duplicated(["i", "j"]).any()
    adjacency = sp.coo_matrix((np.ones(len(g)), (g["i"], g["j"])), shape=(n, n))
    assert connected_components(adjacency, directed=False)[0] == 1
    degree = np.bincount(np.concatenate([g["i"], g["j"]]), minlength=n)
    assert abs(degree.mean() - 6) < 0.05
    assert degree.max() > 15 * degree.mean()  # hubs: Pareto weights, not Poisson degrees
    assert len(sim.drive) == 2 * len(g)


def test_potentials_are_centred_with_the_requested_shape():
    normal = simulate(20_000, 0, spread=1.5, seed=9)
    skewed = simulate(20_000, 0, potential="skewed", spread=1.5, seed=9)
    for sim in (normal, skewed):
        assert abs(sim.potential.mean()) < 1e-12
        assert abs(sim.potential.std() - 1.5) < 0.08
    assert abs(stats.skew(normal.potential)) < 0.1
    assert stats.skew(skewed.potential) > 2  # heavy uphill tail
    assert skewed.potential.max() > 5 * 1.5  # a few states far uphill
    given = np.linspace(-3, 5, 40)
    sim = simulate(40, 100, potential=given, seed=1)
    np.testing.assert_allclose(sim.potential.to_numpy(), given - given.mean())
    assert list(sim.truth_table().columns) == ["state", "potential"]
    assert sim.states[0] == "s0000" and sim.states[-1] == "s0039"
    assert list(simulate(10, 0, seed=1, state_prefix="w").states[:2]) == ["w0000", "w0001"]


# -- sampling -------------------------------------------------------------------------------------
def test_uniform_counts_match_multinomial_expectation():
    sim = simulate(12, 240_000, mean_degree=4, spread=1.0, move_probability=0.8, seed=10)
    observed = _count_matrix(sim)
    visits = sim.visits
    np.testing.assert_array_equal(visits, 20_000)
    expected = visits[:, None] * sim.kernel.toarray()
    mask = expected > 0
    assert observed[~mask].sum() == 0  # nothing outside the graph
    # Pearson χ² over all cells; df = cells − rows (each row's total is fixed).
    chi2 = ((observed[mask] - expected[mask]) ** 2 / expected[mask]).sum()
    df = mask.sum() - 12
    assert stats.chi2.sf(chi2, df) > 1e-4
    # per cell, binomial z-scores stay moderate
    p = sim.kernel.toarray()[mask]
    z = (observed[mask] - expected[mask]) / np.sqrt(np.repeat(visits, mask.sum(1)) * p * (1 - p))
    assert np.abs(z).max() < 4.5
    merged = sim.expected_counts()
    assert np.isclose(merged["expected"].sum(), 240_000)


def test_visits_are_row_totals_and_sum_to_the_calls():
    for allocation in ("uniform", "chain"):
        sim = simulate(300, 12_345, allocation=allocation, seed=11)
        data = sim.transitions
        totals = data.counts.groupby("source")["count"].sum()
        visits = data.visits.set_index("source")["visits"]
        pd.testing.assert_series_equal(
            totals.astype(float), visits.reindex(totals.index), check_names=False
        )
        assert visits.sum() == 12_345
        assert data.counts["count"].sum() == 12_345
        assert (data.counts["source"] == data.counts["target"]).any()  # self rows kept
    uniform = simulate(300, 12_345, seed=11).visits
    assert set(np.unique(uniform)) == {41, 42}  # 12345 = 41 · 300 + 45
    assert (uniform == 42).sum() == 45
    few = simulate(300, 100, seed=11)
    assert few.visits.sum() == 100 and few.visits.max() == 1
    assert len(few.transitions.visits) == 100  # never-prompted states get no visits row


def test_chain_visits_follow_the_stationary_distribution():
    sim = simulate(20, 200_000, mean_degree=4, allocation="chain", seed=12)
    pi = sim.stationary.to_numpy()
    frequency = sim.visits / sim.visits.sum()
    # a correlated chain: allow several times the iid standard error
    se = np.sqrt(pi * (1 - pi) / sim.visits.sum())
    assert np.all(np.abs(frequency - pi) < 12 * se + 1e-3)
    # consecutive calls form a path: moves into a state = moves out of it, up to the two ends
    observed = _count_matrix(sim)
    imbalance = observed.sum(0) - observed.sum(1)
    assert np.abs(imbalance).sum() <= 2
    with np.errstate(invalid="ignore"):
        rate = observed / sim.visits[:, None]
    t = sim.kernel.toarray()
    big = t > 0.05
    assert np.abs(rate[big] - t[big]).max() < 0.03


def test_seed_makes_runs_reproducible():
    one = simulate(500, 20_000, drive=0.3, seed=13)
    two = simulate(500, 20_000, drive=0.3, seed=13)
    other = simulate(500, 20_000, drive=0.3, seed=14)
    pd.testing.assert_frame_equal(one.transitions.counts, two.transitions.counts)
    pd.testing.assert_frame_equal(one.drive, two.drive)
    pd.testing.assert_series_equal(one.potential, two.potential)
    assert one.transitions.data_hash() == two.transitions.data_hash()
    assert one.transitions.data_hash() != other.transitions.data_hash()
    chain = [simulate(100, 5000, allocation="chain", seed=15).transitions for _ in range(2)]
    assert chain[0].data_hash() == chain[1].data_hash()


def test_transitions_object_is_valid_as_if_read_from_files(tmp_path):
    sim = simulate(200, 8000, drive=0.2, seed=16)
    data = sim.transitions
    data.to_csv(tmp_path / "t.csv", tmp_path / "v.csv")
    again = read_transitions(tmp_path / "t.csv", tmp_path / "v.csv")
    pd.testing.assert_frame_equal(again.counts, data.counts)
    pd.testing.assert_frame_equal(again.visits, data.visits)
    assert again.data_hash() == data.data_hash()


# -- any matrix, and the peer matrix --------------------------------------------------------------
def test_peer_matrix_truth_reproduces_its_detailed_balance():
    matrix = load_peer_matrix(PEER)
    assert matrix.shape == (251, 251)
    assert np.count_nonzero(matrix) == 12_919
    sim = simulate_from_matrix(matrix, 251 * 400, seed=17)
    pi = sim.stationary.to_numpy()
    np.testing.assert_allclose(pi @ matrix, pi, atol=1e-14)
    flux = pi[:, None] * matrix
    assert np.abs(flux - flux.T).max() < 1e-10
    v = sim.potential.to_numpy()
    np.testing.assert_allclose(v, -np.log(pi) - (-np.log(pi)).mean(), atol=1e-12)
    assert 2.4 < v.std() < 2.8  # "spread ≈ 2.6 kT" (deeptime README, peer-data/README.md)
    assert np.abs(sim.drive["drive"]).max() < 1e-9 and not sim.driven
    np.testing.assert_array_equal(sim.visits, 400)
    observed = _count_matrix(sim)
    expected = 400 * matrix
    certain = matrix == 1.0  # a few rows move with certainty
    np.testing.assert_array_equal(observed[certain], 400)
    big = (expected > 20) & ~certain
    z = (observed[big] - expected[big]) / np.sqrt(expected[big] * (1 - matrix[big]))
    assert np.abs(z).max() < 5.5 and abs(z.mean()) < 0.1


def test_matrix_with_a_known_driven_cycle():
    # Three states on a ring, clockwise moves twice as likely: π uniform, loop affinity
    # log(0.4³ / 0.2³) = 3 log 2 and every pair carries A = log 2.
    matrix = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.4, 0.2, 0.4]])
    sim = simulate_from_matrix(matrix, 3000, seed=18, state_names=["a", "b", "c"])
    np.testing.assert_allclose(sim.stationary.to_numpy(), 1 / 3)
    np.testing.assert_allclose(sim.potential.to_numpy(), 0.0, atol=1e-12)
    cycles = pd.DataFrame({"a": ["a"], "b": ["b"], "c": ["c"]})
    np.testing.assert_allclose(sim.loop_affinity(cycles), 3 * np.log(2))
    np.testing.assert_allclose(
        sim.pair_affinity(pd.DataFrame({"f": ["a", "b"], "g": ["b", "a"]})),
        [np.log(2), -np.log(2)],
    )
    assert list(sim.transitions.states) == ["a", "b", "c"]
    sparse = simulate_from_matrix(sp.csr_matrix(matrix), 3000, seed=18, state_names=["a", "b", "c"])
    pd.testing.assert_frame_equal(sparse.transitions.counts, sim.transitions.counts)


def test_bad_matrices_and_options_say_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_text("0.5 0.5\n0.3 0.6\n")
    with pytest.raises(ValueError, match=r"bad.dat: row 1 sums to 0.9"):
        load_peer_matrix(bad)
    (tmp_path / "rect.dat").write_text("0.5 0.5\n")
    with pytest.raises(ValueError, match="square"):
        load_peer_matrix(tmp_path / "rect.dat")
    with pytest.raises(FileNotFoundError, match="no such matrix file"):
        load_peer_matrix(tmp_path / "missing.dat")
    reducible = np.array([[1.0, 0.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="2 strongly connected pieces"):
        simulate_from_matrix(reducible, 10)
    with pytest.raises(ValueError, match="unknown potential 'flat'"):
        simulate(10, 10, potential="flat")
    with pytest.raises(ValueError, match="3 values for 10 states"):
        simulate(10, 10, potential=[1, 2, 3])
    with pytest.raises(ValueError, match="unknown allocation 'random'"):
        simulate(10, 10, allocation="random")
    with pytest.raises(ValueError, match="move_probability"):
        simulate(10, 10, move_probability=0)
    with pytest.raises(ValueError, match="must be sorted"):
        simulate_from_matrix(np.eye(2)[::-1], 10, state_names=["b", "a"])
    np.testing.assert_allclose(stationary_distribution(np.eye(2)[::-1]), [0.5, 0.5])


# -- command line and package surface -------------------------------------------------------------
def test_cli_writes_the_contract_files(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(
        ["simulate", "--states", "150", "--transitions", "6000", "--seed", "3", "--out", str(out)]
    )
    assert code == 0
    summary = capsys.readouterr().out.strip()
    assert summary.count("\n") == 0 and "150 states" in summary and "6000 calls" in summary
    transitions = pd.read_csv(out / "transitions.csv")
    visits = pd.read_csv(out / "visits.csv")
    truth = pd.read_csv(out / "truth.csv")
    assert list(transitions.columns) == ["llm", "source", "target", "count"]
    assert list(visits.columns) == ["llm", "source", "visits"]
    assert list(truth.columns) == ["state", "potential"]
    assert not (out / "drive.csv").exists()
    assert visits["visits"].sum() == 6000 and visits["visits"].dtype.kind == "i"
    same = simulate(150, 6000, seed=3)
    np.testing.assert_allclose(truth["potential"], same.potential.to_numpy())
    assert transitions["count"].sum() == 6000
    data = read_transitions(out / "transitions.csv", out / "visits.csv")
    assert data.data_hash() == same.transitions.data_hash()


def test_cli_driven_writes_drive_and_rejects_bad_options(tmp_path, capsys):
    out = tmp_path / "driven"
    args = ["simulate", "--states", "100", "--transitions", "3000", "--drive", "0.4"]
    assert main([*args, "--seed", "1", "--potential", "skewed", "--out", str(out)]) == 0
    drive = pd.read_csv(out / "drive.csv")
    assert list(drive.columns) == ["source", "target", "drive"]
    forward = drive.set_index(["source", "target"])["drive"]
    backward = drive.set_index(["target", "source"])["drive"]
    backward.index.names = ["source", "target"]
    np.testing.assert_allclose(forward, -backward.reindex(forward.index))
    capsys.readouterr()
    assert main(["simulate", "--states", "1", "--transitions", "10", "--out", str(out)]) == 2
    assert "--states 1" in capsys.readouterr().err
    assert main([*args[:5], "--move-probability", "2", "--out", str(out)]) == 2
    assert "move_probability" in capsys.readouterr().err


def test_package_exports():
    assert detailed_balance.simulate is simulate
    assert detailed_balance.Simulation is Simulation
    assert detailed_balance.simulate_from_matrix is simulate_from_matrix
    assert detailed_balance.load_peer_matrix is load_peer_matrix


@pytest.mark.slow
def test_reaches_100k_states_and_a_million_calls():
    sim = simulate(100_000, 1_000_000, seed=19)
    data = sim.transitions
    assert data.counts["count"].sum() == 1_000_000
    assert data.visits["visits"].sum() == 1_000_000
    assert data.n_states > 99_000
    v = sim.potential.to_numpy()
    flux = sp.diags(np.exp(-v)) @ sim.kernel
    assert abs(flux - flux.T).max() < 1e-12 * np.exp(-v).max()


# -- the one Metropolis–Hastings kernel -----------------------------------------------------------
def test_one_metropolis_kernel_behind_every_simulator():
    """simulate, the LLM panels and the embedded simulated LLM share `metropolis_rates`:
    log T(f→g) − log T(g→f) = β(V_f − V_g) + A_fg on every edge, both evaluations agree, and
    each simulator's kernel is exactly those rates."""
    from detailed_balance.agents import SimulatedLLM
    from detailed_balance.simulation import metropolis_kernel, metropolis_rates, neighbour_graph

    rng = np.random.default_rng(7)
    n = 30
    edges = neighbour_graph(n, 6, rng)
    a, b = edges[:, 0], edges[:, 1]
    v, z = rng.normal(0, 2, n), rng.normal(0, 0.5, len(a))
    src, dst, rate = metropolis_rates(v, a, b, drive=z, beta=1.7, move_probability=0.8)
    _, _, linear = metropolis_rates(
        v, a, b, drive=z, beta=1.7, move_probability=0.8, log_space=False
    )
    np.testing.assert_allclose(linear, rate, rtol=1e-14)
    m = len(a)
    ratio = np.log(rate[:m]) - np.log(rate[m:])
    np.testing.assert_allclose(ratio, 1.7 * (v[a] - v[b]) + z, rtol=0, atol=1e-12)
    degree = np.bincount(src, minlength=n)
    assert np.all(rate <= 0.8 / degree[src] + 1e-15)  # p·min(1/d_f, ·)

    # the panel kernel: one proposal degree for all states (q = 1 / max degree)
    dense = metropolis_kernel(v, edges, 0.5)
    q = 1.0 / degree.max()
    np.testing.assert_allclose(dense[a, b], q * np.minimum(1.0, np.exp(0.5 * (v[a] - v[b]))))
    assert np.count_nonzero(dense) == 2 * m

    # the simulated LLM: the complete graph, d = K − 1, p = 1 − invalid rate
    sim = SimulatedLLM.word100(states=12, seed=3, drive=0.4, invalid_rate=0.1, temperature=2.0)
    kernel = sim.kernel().to_numpy()
    k = len(sim.states)
    i, j = np.triu_indices(k, 1)
    drive = sim._drive_matrix()
    expected = 0.9 * np.minimum(
        1, np.exp((sim.potential[i] - sim.potential[j]) / 2.0 + drive[i, j])
    )
    np.testing.assert_allclose(kernel[i, j], expected / (k - 1), rtol=1e-13)
    np.testing.assert_allclose(kernel.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(kernel[:, -1], 0.1)
