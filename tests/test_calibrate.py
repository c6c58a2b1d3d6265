"""Design-matched calibration (`workflow.calibrate`) and its dask engine.

What is checked against an independent truth:

- the replicate kernels: outcome probabilities equal a dense T built from the posterior draw
  (kernel fits: X = exp(u), exp(r); pair fits: reversible with π ∝ e^{−V}, expected pair
  totals = observed ones / c); a drive changes log T_fg − log T_gf by A_p plus a gradient
  (so loop affinities are exactly Σ A), is divergence-free and has RMS = the drive size on
  cycle pairs;
- counts: every state's outcomes sum to its calls, only design pairs occur, a spec is
  reproducible;
- the reported verdicts and coverages equal a brute-force loop (fit both models with
  `sampling.fit`, `bayes_verdict`, coverage computed here) over the same replicates and seeds;
- the dask runs use a real 2-worker `LocalCluster` (processes): a worker killed mid-run
  still leaves every replicate accounted for; a resumed run does only the missing ones;
- slow: on a dense reversible design false alarms ≈ 0 and V coverage in a binomial band of
  0.9; on a sparse design at the paper's density (8 calls per state) the reported numbers
  equal the brute-force loop.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from detailed_balance.diagnostics import bayes_verdict
from detailed_balance.models import EquilibriumModel, NonEquilibriumModel
from detailed_balance.sampling import fit
from detailed_balance.simulation import simulate
from detailed_balance.workflow import calibration as cal
from detailed_balance.workflow._tasks import local_cluster

SMALL = {"n_states": 40, "transitions": 40 * 200, "mean_degree": 8.0}


def _map(model, data, seed):
    return fit(model, data, method="map", draws=1000, chains=1, seed=seed, progressbar=False)


@pytest.fixture(scope="module")
def small_fit():
    sim = simulate(**SMALL, seed=3)
    return _map(EquilibriumModel(), sim.transitions, 1)


@pytest.fixture(scope="module")
def pair_fit():
    sim = simulate(**SMALL, seed=4)
    return _map(EquilibriumModel({"likelihood": "pairs"}), sim.transitions, 2)


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with local_cluster(2) as cluster, Client(cluster, set_as_default=False) as c:
        yield c


def _dense_t(design, spec) -> np.ndarray:
    """T (K × K + remainder column) from the design's arrays, built densely here."""
    rng = np.random.default_rng(int(spec["seed"]))
    a = cal._drive_vector(design, float(spec["drive"]), rng)
    k, n = len(design.states), int(spec["replicate"])
    i, j = design.pair_i, design.pair_j
    x = np.zeros((k, k + 1))
    if design.kernel:
        u, r = design.u[n], design.r[n]
        x[i, j] = np.exp(u + a / 2)
        x[j, i] = np.exp(u - a / 2)
        x[:, k] = np.exp(r)
        return x / x.sum(axis=1, keepdims=True)
    v = design.v[n]
    gap = v[i] - v[j]
    kp = design.moves / (design.calls[i] * np.exp(gap / 2) + design.calls[j] * np.exp(-gap / 2))
    x[i, j] = kp * np.exp((gap + a) / 2)
    x[j, i] = kp * np.exp(-(gap + a) / 2)
    c = max(1.0, x.sum(axis=1).max() * (1 + 1e-9))
    x /= c
    x[:, k] = 1 - x.sum(axis=1)
    return x


def _entry_probabilities(design, spec) -> np.ndarray:
    rng = np.random.default_rng(int(spec["seed"]))
    a = cal._drive_vector(design, float(spec["drive"]), rng)
    w, _ = cal._log_weights(design, int(spec["replicate"]), a)
    e = np.exp(w - w.max())
    totals = np.add.reduceat(e, design.indptr[:-1])
    return e / totals[design.entry_state]


def _dense_from_entries(design, p) -> np.ndarray:
    k = len(design.states)
    out = np.zeros((k, k + 1))
    move = design.entry_pair >= 0
    pair = design.entry_pair[move]
    fwd = design.entry_sign[move] > 0
    src = np.where(fwd, design.pair_i[pair], design.pair_j[pair])
    tgt = np.where(fwd, design.pair_j[pair], design.pair_i[pair])
    out[src, tgt] = p[move]
    out[design.entry_state[~move], k] = p[~move]
    return out


@pytest.mark.parametrize("which", ["small_fit", "pair_fit"])
@pytest.mark.parametrize("drive", [0.0, 0.7])
def test_replicate_kernel_matches_dense(request, which, drive):
    fitted = request.getfixturevalue(which)
    design = cal.calibration_design(fitted, 3, seed=5)
    assert design.kernel == (which == "small_fit")
    spec = next(
        s for s in cal.replicate_specs(3, [drive] if drive else [], 5) if s["drive"] == drive
    )
    dense = _dense_t(design, spec)
    got = _dense_from_entries(design, _entry_probabilities(design, spec))
    np.testing.assert_allclose(got, dense, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, rtol=1e-12)
    i, j = design.pair_i, design.pair_j
    rng = np.random.default_rng(int(spec["seed"]))
    a = cal._drive_vector(design, drive, rng)
    if drive == 0:
        # reversible: π_f T_fg = π_g T_gf with π = exp(−V_true)
        _, v_true = cal._log_weights(design, int(spec["replicate"]), a)
        pi = np.exp(-v_true)
        np.testing.assert_allclose(pi[i] * dense[i, j], pi[j] * dense[j, i], rtol=1e-9)
    else:
        base = _dense_t(design, {**spec, "drive": 0.0})
        gain = np.log(dense[i, j] / dense[j, i]) - np.log(base[i, j] / base[j, i])
        # the gain is A plus a gradient (the rows' new normalisation): loops see exactly A
        residual = cal._cycle_projection(len(design.states), i, j, gain - a)
        np.testing.assert_allclose(residual, 0.0, atol=1e-9)
        assert np.abs(gain - a).max() > 1e-3 or not design.kernel
        # no gradient part: the divergence Σ_p ±A_p at every state is 0
        div = np.bincount(i, a, len(design.states)) - np.bincount(j, a, len(design.states))
        np.testing.assert_allclose(div, 0.0, atol=1e-9)
        np.testing.assert_allclose(np.sqrt(np.mean(a[design.on_cycle] ** 2)), drive, rtol=1e-12)
        assert np.all(a[~design.on_cycle] == 0)


def test_pair_design_expected_moves(pair_fit):
    """Pair fits: each pair's expected number of moves is its observed total / c."""
    design = cal.calibration_design(pair_fit, 2, seed=1)
    spec = cal.replicate_specs(2, [], 1)[0]
    dense = _dense_t(design, spec)
    i, j = design.pair_i, design.pair_j
    expected = design.calls[i] * dense[i, j] + design.calls[j] * dense[j, i]
    ratio = expected / design.moves
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    assert 0 < ratio[0] <= 1


def test_replicate_counts(small_fit):
    design = cal.calibration_design(small_fit, 2, seed=0)
    spec = cal.replicate_specs(2, [1.0], 0)[3]
    rep = cal.replicate_data(design, spec)
    again = cal.replicate_data(design, spec)
    assert rep.data.data_hash() == again.data.data_hash()
    counts = rep.data.counts
    totals = counts.groupby("source")["count"].sum()
    calls = pd.Series(design.calls, index=design.states)
    np.testing.assert_array_equal(totals.reindex(design.states).fillna(0).to_numpy(), calls)
    moved = counts[counts["source"] != counts["target"]]
    index = pd.Index(design.states)
    a, b = index.get_indexer(moved["source"]), index.get_indexer(moved["target"])
    codes = set(design.pair_i * len(index) + design.pair_j)
    assert set(np.minimum(a, b) * len(index) + np.maximum(a, b)) <= codes
    # the loop truth is the sum of the drive around each cycle
    cycles = rep.data.cycles()
    truth = cal.loop_truth(design, rep.affinity, cycles)
    assert len(truth) and np.abs(truth).mean() > 0.3


def test_binomial_interval_and_summary():
    for k, n in [(0, 10), (3, 10), (10, 10), (7, 40)]:
        ci = binomtest(k, n).proportion_ci(0.95, method="exact")
        assert cal.binomial_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    rows = pd.DataFrame(
        {
            "replicate": [0, 1, 2, 0, 1, 2, 0],
            "drive": [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0],
            "verdict": ["holds", "violated", "holds", "violated", "holds", "violated", "failed"],
            "v_hits": [9, 8, 10, 0, 0, 0, 0],
            "v_total": [10, 10, 10, 0, 0, 0, 0],
            "loop_hits": [1, 2, 0, 3, 2, 1, 0],
            "loop_total": [2, 2, 0, 4, 2, 2, 0],
            "mean_abs_loop": [0, 0, 0, 1.0, 1.2, 0.8, np.nan],
            "status": ["ok"] * 6 + ["failed"],
            "error": [""] * 6 + ["boom"],
        }
    )
    s = cal.summarise(rows, [1.0, 2.0])
    assert s["replicates"] == 6
    assert s["coverage"]["V"] == pytest.approx(27 / 30)
    assert s["coverage"]["loop_affinity"] == pytest.approx(9 / 12)
    assert s["false_alarm"]["rate"] == pytest.approx(1 / 3) and s["false_alarm"]["n"] == 3
    assert [p["drive"] for p in s["power"]] == [1.0, 2.0]
    assert s["power"][0]["rate"] == pytest.approx(2 / 3) and s["power"][1]["n"] == 0
    assert s["min_detectable_drive"] is None
    assert s["failed"] == [{"replicate": 0, "drive": 2.0, "error": "boom"}]


# -- brute force --------------------------------------------------------------------------------
def brute_force(design, specs):
    """Each replicate fitted here with `sampling.fit` and judged by `bayes_verdict`; coverage
    computed here: V on the refit's bounded states (truth centred with its centring weights),
    loop affinities of the non-equilibrium fit's 3-cycles."""
    rows = []
    for spec in specs:
        rep = cal.replicate_data(design, spec)
        seed = int(spec["seed"])
        eq = fit(
            EquilibriumModel(design.model_config),
            rep.data,
            method="map",
            draws=design.sampler["draws"],
            chains=design.sampler["chains"],
            seed=seed,
            progressbar=False,
        )
        neq = fit(
            NonEquilibriumModel(),
            rep.data,
            method="map",
            draws=design.sampler["draws"],
            chains=design.sampler["chains"],
            seed=seed,
            progressbar=False,
        )
        verdict = bayes_verdict(eq, neq, seed=seed, ci=0.9)
        row = {"drive": spec["drive"], "replicate": spec["replicate"], "verdict": verdict.verdict}
        const = eq.posterior["constant_data"]
        names = const["state"].to_numpy().astype(object)
        w = const["centring_weight"].to_numpy()
        comp = const["component"].to_numpy()
        bounded = const["bounded"].to_numpy().astype(bool)
        if spec["drive"] == 0:
            t = rep.potential.reindex(names).to_numpy(dtype=float, copy=True)
            for c in np.unique(comp):
                t[comp == c] -= np.sum(w[comp == c] * t[comp == c])
            v = eq.posterior["posterior"]["V"].sel(state=names).to_numpy().reshape(-1, len(names))
            lo, hi = np.quantile(v, [0.05, 0.95], axis=0)
            inside = ((lo <= t) & (t <= hi))[bounded]
            row.update(v_hits=int(inside.sum()), v_total=int(inside.size))
        else:
            row.update(v_hits=0, v_total=0)
        post = neq.posterior
        n_cycles = post["posterior"].sizes.get("cycle", 0)
        if n_cycles == 0:  # sparse designs: no 3-cycle with all six edges seen
            row.update(loop_hits=0, loop_total=0)
            rows.append(row)
            continue
        loops = post["posterior"]["loop_affinity"].to_numpy().reshape(-1, n_cycles)
        cd = post["constant_data"]
        cycles = pd.DataFrame({k: cd[f"cycle_{k}"].to_numpy() for k in "abc"})
        truth = cal.loop_truth(design, rep.affinity, cycles)
        lo, hi = np.quantile(loops, [0.05, 0.95], axis=0)
        inside = (lo <= truth) & (truth <= hi)
        row.update(loop_hits=int(inside.sum()), loop_total=int(inside.size))
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["drive", "replicate"]).reset_index(drop=True)


def _compare_with_brute_force(result, design, specs):
    expected = brute_force(design, specs)
    got = result.replicates
    assert (got["status"] == "ok").all()
    cols = ["drive", "replicate", "verdict", "v_hits", "v_total", "loop_hits", "loop_total"]
    pd.testing.assert_frame_equal(
        got[cols].reset_index(drop=True), expected[cols], check_dtype=False
    )
    s = result.summary
    rev = expected["drive"] == 0
    assert s["coverage"]["V"] == pytest.approx(
        expected.loc[rev, "v_hits"].sum() / expected.loc[rev, "v_total"].sum()
    )
    if expected["loop_total"].sum():
        assert s["coverage"]["loop_affinity"] == pytest.approx(
            expected["loop_hits"].sum() / expected["loop_total"].sum()
        )
    false = int((expected.loc[rev, "verdict"] == "violated").sum())
    assert s["false_alarm"]["n"] == int(rev.sum())
    assert s["false_alarm"]["rate"] == pytest.approx(false / rev.sum())
    for entry in s["power"]:
        at = expected["drive"] == entry["drive"]
        assert entry["rate"] == pytest.approx((expected.loc[at, "verdict"] == "violated").mean())


def test_calibrate_on_cluster_equals_brute_force(small_fit, client, tmp_path):
    result = cal.calibrate(
        posterior=small_fit, out=tmp_path, replicates=3, drive=[1.0], client=client, seed=11
    )
    design = cal.calibration_design(small_fit, 3, seed=11)
    _compare_with_brute_force(result, design, cal.replicate_specs(3, [1.0], 11))
    assert (tmp_path / "calibration.json").is_file() and (tmp_path / "calibration.csv").is_file()
    stored = pd.read_parquet(tmp_path / "replicates.parquet")
    assert len(stored) == 6 and set(stored["status"]) == {"ok"}


def test_resume_does_only_the_missing(small_fit, client, tmp_path):
    seen = []
    first = cal.calibrate(
        posterior=small_fit,
        out=tmp_path,
        replicates=2,
        drive=[1.0],
        client=client,
        seed=2,
        callback=lambda row: seen.append((row["drive"], row["replicate"])),
    )
    assert sorted(seen) == [(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)]
    seen.clear()
    second = cal.calibrate(
        posterior=small_fit,
        out=tmp_path,
        replicates=3,
        drive=[1.0],
        client=client,
        seed=2,
        callback=lambda row: seen.append((row["drive"], row["replicate"])),
    )
    assert sorted(seen) == [(0.0, 2), (1.0, 2)]
    assert second.summary["resumed"] == 4 and second.summary["replicates"] == 6
    kept = second.replicates.merge(first.replicates, on=["drive", "replicate"])
    np.testing.assert_array_equal(kept["seconds_x"], kept["seconds_y"])  # not redone
    with pytest.raises(Exception, match="another calibration"):
        cal.calibrate(posterior=small_fit, out=tmp_path, replicates=3, client=client, seed=3)


def test_killed_worker_every_replicate_accounted_for(small_fit, tmp_path):
    """A worker process killed (SIGKILL) while it runs a replicate: its nanny restarts it,
    the task is rescheduled, and the run ends with every replicate in the table."""
    from distributed import Client

    killed = []
    with local_cluster(2) as cluster, Client(cluster, set_as_default=False) as c:

        def kill_one(row):
            if killed:
                return
            pids = c.run(os.getpid)
            busy = [w for w, keys in c.processing().items() if keys]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(busy[0])

        result = cal.calibrate(
            posterior=small_fit,
            out=tmp_path,
            replicates=4,
            drive=[1.0],
            client=c,
            seed=4,
            callback=kill_one,
        )
    assert killed
    rows = result.replicates
    assert sorted(zip(rows["drive"], rows["replicate"], strict=True)) == [
        (d, n) for d in (0.0, 1.0) for n in range(4)
    ]
    failed = rows[rows["status"] != "ok"]
    assert (failed["error"].str.len() > 0).all()
    assert result.summary["replicates"] + len(result.summary["failed"]) == 8
    stored = pd.read_parquet(tmp_path / "replicates.parquet")
    assert len(stored) == 8


def test_failed_replicate_is_reported(small_fit, client):
    """A replicate whose fit raises is retried once, then reported (not dropped)."""
    design = cal.calibration_design(small_fit, 1, seed=0)
    broken = cal.Design(**{**design.__dict__, "model": "no-such-model"})
    errors = []
    from detailed_balance.workflow._tasks import run_tasks

    run_tasks(
        cal.run_replicate,
        broken,
        cal.replicate_specs(1, [], 0),
        on_result=lambda spec, row: None,
        on_failure=lambda spec, error: errors.append((spec["id"], error)),
        client=client,
        progress=None,
    )
    assert errors == [("0/0", errors[0][1])] and "no-such-model" in errors[0][1]


# -- statistical ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_dense_reversible_design_false_alarms_and_coverage(client):
    """Dense reversible design (60 states, mean degree 12, 300 calls each): false alarms ≈ 0
    (≤ 1 of 16) and pooled V coverage within the binomial band of 0.9 (states of one
    replicate are correlated, so the band is widened ×2 around the nominal)."""
    sim = simulate(60, 60 * 300, mean_degree=12.0, seed=21)
    fitted = _map(EquilibriumModel(), sim.transitions, 3)
    result = cal.calibrate(posterior=fitted, replicates=16, drive=[], client=client, seed=5)
    s = result.summary
    assert s["false_alarm"]["n"] == 16
    assert s["false_alarm"]["rate"] <= 1 / 16
    n = int(result.replicates["v_total"].sum())
    half = 2 * 1.96 * np.sqrt(0.9 * 0.1 / n)
    assert abs(s["coverage"]["V"] - 0.9) <= max(half, 0.05)


@pytest.mark.slow
def test_sparse_paper_density_equals_brute_force(client):
    """A sparse design at the paper's density (8 calls per state): the reported verdicts,
    coverage and false-alarm rate equal the brute-force loop over the same replicates."""
    sim = simulate(200, 200 * 8, seed=31)
    fitted = _map(EquilibriumModel(), sim.transitions, 4)
    result = cal.calibrate(posterior=fitted, replicates=4, drive=[1.0], client=client, seed=6)
    design = cal.calibration_design(fitted, 4, seed=6)
    _compare_with_brute_force(result, design, cal.replicate_specs(4, [1.0], 6))


# -- command line ---------------------------------------------------------------------------------
def test_cli_calibrate_against_a_scheduler_address(small_fit, client, tmp_path, capsys):
    """`calibrate DATA --posterior FIT --scheduler ADDRESS` submits to an existing cluster;
    the printed numbers are calibration.json's."""
    import json

    from detailed_balance.cli import main

    small_fit.save(tmp_path / "fit.nc")
    small_fit.data.to_csv(tmp_path / "transitions.csv", tmp_path / "visits.csv")
    out = tmp_path / "cal"
    code = main(
        [
            "calibrate",
            str(tmp_path / "transitions.csv"),
            "--posterior",
            str(tmp_path / "fit.nc"),
            "--replicates",
            "2",
            "--drive",
            "1.0",
            "--scheduler",
            client.scheduler.address,
            "--out",
            str(out),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "calibration.json").read_text())
    assert summary["false_alarm"]["n"] == 2 and summary["power"][0]["n"] == 2
    assert f"false alarms {round(summary['false_alarm']['rate'] * 2)}/2" in printed
    assert (out / "calibration.html").is_file()
    stored = pd.read_parquet(out / "replicates.parquet")
    assert len(stored) == 4 and {"replicate", "drive", "verdict", "v_hits"} <= set(stored)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--drive", "a,b"], "comma-separated numbers"),
        (["--drive", "-1"], "positive"),
        (["--replicates", "0"], "at least 1"),
        (["--workers", "0"], "at least 1"),
    ],
)
def test_cli_calibrate_option_errors(tmp_path, capsys, options, message):
    from detailed_balance.cli import main

    code = main(["calibrate", "--out", str(tmp_path / "c"), *options])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c" / "replicates.parquet").exists()


# -- fit-many -------------------------------------------------------------------------------------
def _datasets():
    sets = {f"run{k}": simulate(30, 30 * 100, seed=40 + k).transitions for k in range(3)}
    self_only = pd.DataFrame({"source": ["a", "b"], "target": ["a", "b"], "count": [3, 4]})
    from detailed_balance.data import Transitions

    visits = pd.DataFrame({"source": ["a", "b"], "visits": [3.0, 4.0]})
    sets["broken"] = Transitions.from_counts(self_only, visits)
    return sets


def test_fit_many_equals_one_by_one_and_resumes(client, tmp_path):
    from detailed_balance.sampling import load_fit
    from detailed_balance.workflow import fit_many

    sets = _datasets()
    table = fit_many(sets, out=tmp_path, method="map", seed=5, client=client, progress=None)
    by_name = table.set_index("name")
    assert list(table["name"]) == ["run0", "run1", "run2", "broken"]
    assert (by_name.loc[["run0", "run1", "run2"], "status"] == "fitted").all()
    assert by_name.loc["broken", "status"] == "failed"
    assert "no transition between two different states" in by_name.loc["broken", "error"]
    for name in ("run0", "run1", "run2"):
        saved = load_fit(tmp_path / f"{name}.nc")
        here = _map_seed(sets[name], 5)
        np.testing.assert_array_equal(saved.potentials.to_numpy(), here.potentials.to_numpy())
        assert saved.data.data_hash() == sets[name].data_hash()
    stored = pd.read_csv(tmp_path / "fits.csv")
    assert len(stored) == 4
    again = fit_many(sets, out=tmp_path, method="map", seed=5, client=client, progress=None)
    status = again.set_index("name")["status"]
    assert (status[["run0", "run1", "run2"]] == "skipped").all() and status["broken"] == "failed"


def _map_seed(data, seed):
    return fit(EquilibriumModel(), data, method="map", chains=1, seed=seed, progressbar=False)


def test_cli_fit_many(client, tmp_path, capsys):
    from detailed_balance.cli import main

    sets = _datasets()
    paths = []
    for name in ("run0", "run1"):
        folder = tmp_path / name
        folder.mkdir()
        sets[name].to_csv(folder / "transitions.csv", folder / "visits.csv")
        paths.append(str(folder / "transitions.csv"))
    code = main(
        [
            "fit-many",
            *paths,
            "--out",
            str(tmp_path / "fits"),
            "--scheduler",
            client.scheduler.address,
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "run0: fitted" in out and "run1: fitted" in out
    assert (tmp_path / "fits" / "run0.nc").is_file() and (tmp_path / "fits" / "run1.nc").is_file()
