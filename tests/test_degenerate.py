"""Sparse graphs are the normal case: every verb on degenerate data gives its answer or a clear
"not enough data for X because Y" (exit 2), never a traceback (issue 11, "the rule behind the
fixes"). Before, `report` and `check --posterior` crashed on any data without a 3-cycle
(`cannot reshape array of size 0`), the verdict on a chain said "holds", and `compare` warned
from numpy and failed late on an LLM with no valid answer.

The family: a chain (A⇄B⇄C⇄D, 100 visits each, no cycle), a star (a tree), two components, one
pair, a single state (self-steps only), a one-way 3-cycle (every count one-way), a chain plus a
state seen once, and an LLM whose every answer was invalid (all moves into the pooled INVALID).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detailed_balance.cli import main

CHAIN = [("A", "B", 30), ("B", "A", 40), ("B", "C", 25), ("C", "B", 35), ("C", "D", 20),
         ("D", "C", 30)]  # fmt: skip
SETS = {
    "chain": (CHAIN, {"A": 100, "B": 100, "C": 100, "D": 100}),
    "tree": (
        [("H", leaf, 10) for leaf in "PQRS"] + [(leaf, "H", 15) for leaf in "PQRS"],
        {"H": 100, "P": 50, "Q": 50, "R": 50, "S": 50},
    ),
    "two_components": (
        [
            ("A", "B", 20),
            ("B", "A", 10),
            ("C", "D", 5),
            ("D", "C", 8),
            ("D", "E", 6),
            ("E", "D", 3),
        ],  # fmt: skip
        {"A": 50, "B": 50, "C": 40, "D": 40, "E": 40},
    ),
    "one_pair": ([("A", "B", 7), ("B", "A", 3)], {"A": 20, "B": 20}),
    "single_state": ([("A", "A", 10)], {"A": 10}),
    "one_way": ([("A", "B", 5), ("B", "C", 5), ("C", "A", 5)], {"A": 10, "B": 10, "C": 10}),
    "seen_once": (CHAIN + [("E", "D", 1)], {"A": 100, "B": 100, "C": 100, "D": 100, "E": 1}),
    "no_valid": ([(s, "INVALID", 10) for s in "ABC"], {"A": 10, "B": 10, "C": 10}),
}
FORESTS = ("chain", "tree", "two_components", "one_pair", "seen_once")
NOT_FITTABLE = {  # what the refusal says (the reader already refuses a self-steps-only file)
    "single_state": "there are no transitions between different states in this file",
    "no_valid": "not enough data for a potential: every transition has an end with no known "
    "visits ('INVALID'",
}
# Several LLMs: each set for LLM a, doubled counts for LLM b; an LLM with only invalid answers
# beside one (then two) usable LLMs.
PANELS = {f"m_{name}": {"a": (name, 1), "b": (name, 2)} for name in SETS if name != "no_valid"}
PANELS["m_no_valid"] = {"a": ("chain", 1), "b": ("no_valid", 1)}
PANELS["m_no_valid3"] = {"a": ("chain", 1), "b": ("no_valid", 1), "c": ("chain", 2)}
MODELS = {
    "equilibrium": [],
    "nonequilibrium": [],
    "features": ["--features", "builtin:words"],
}
TREE_REASON = "the observed pairs form a tree (no cycle of states)"


def _write(path: Path, parts: dict[str, tuple[str, int]]) -> Path:
    """`path` (llm,source,target,count) and the visits table beside it."""
    with (
        open(path, "w", newline="") as counts_file,
        open(path.with_name(path.name.replace("transitions", "visits")), "w", newline="") as vf,
    ):
        counts, visits = csv.writer(counts_file), csv.writer(vf)
        counts.writerow(["llm", "source", "target", "count"])
        visits.writerow(["llm", "source", "visits"])
        for llm, (name, factor) in parts.items():
            for source, target, n in SETS[name][0]:
                counts.writerow([llm, source, target, n * factor])
            for source, n in SETS[name][1].items():
                visits.writerow([llm, source, n * factor])
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("degenerate")
    for name in SETS:
        _write(root / f"{name}.transitions.csv", {"m": (name, 1)})
    for name, parts in PANELS.items():
        _write(root / f"{name}.transitions.csv", parts)
    return root


def run(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI; assert it neither crashed nor let a numpy/PyMC warning through."""
    out, err = io.StringIO(), io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        warnings.simplefilter("always")
        rc = main(argv)
    text = err.getvalue()
    assert rc in (0, 2), f"{argv}: rc {rc}\n{text}"
    assert "unexpected" not in text and "Traceback" not in text, text
    loud = [w for w in caught if issubclass(w.category, RuntimeWarning | FutureWarning)]
    assert not loud, [f"{w.category.__name__}: {w.message} ({w.filename})" for w in loud]
    return rc, out.getvalue(), text


def _data(root: Path, name: str) -> str:
    return str(root / f"{name}.transitions.csv")


def _expect(name: str, rc: int, err: str) -> bool:
    """True when the command should have worked; else check the clear refusal."""
    if name in NOT_FITTABLE:
        assert rc == 2 and NOT_FITTABLE[name] in err, err
        return False
    assert rc == 0, err
    return True


@pytest.mark.parametrize("name", list(SETS))
def test_least_action_and_paper_checks(root, tmp_path, name):
    out = tmp_path / "potentials.csv"
    rc, _, err = run(["fit", _data(root, name), "--out", str(out)])
    if name == "single_state":  # nothing but self-steps: refused when read, by every verb
        assert _expect(name, rc, err) is False
        assert _expect(name, *run(["check", _data(root, name)])[::2]) is False
        return
    assert rc == 0 and "converged=True" in err, err
    table = pd.read_csv(out).set_index("state")
    if name in ("chain", "seen_once"):
        # V(f) − V(g) = log(n_fg/N_f) − log(n_gf/N_g), exactly on a chain (equal visits)
        v = table.loc[list("ABCD"), "potential"].to_numpy()
        assert np.allclose(np.diff(v), np.log([40 / 30, 35 / 25, 30 / 20]), atol=1e-6)
    rc, stdout, err = run(["check", _data(root, name), "--json"])
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["loops"] is None  # no two-way 3-cycle in any of them
    if name == "chain":
        assert summary["downhill"]["n"] == 6 and summary["downhill"]["fraction_down"] == 0.5


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method", ["map", "advi"])
@pytest.mark.parametrize("name", list(SETS))
def test_bayesian_fit_every_method_and_model(root, tmp_path, name, method, model):
    out = tmp_path / "fit.nc"
    argv = ["fit", _data(root, name), "--method", method, "--model", model, *MODELS[model],
            "--out", str(out), "--no-progress", "--seed", "3"]  # fmt: skip
    rc, _, err = run(argv)
    if not _expect(name, rc, err):
        assert not out.exists()
        return
    from detailed_balance.sampling import load_fit

    mean = load_fit(out).summary().set_index("state")["mean"]
    if name == "chain" and model != "nonequilibrium":  # ~70 counts per pair: the exact gaps
        tolerance = 0.05 if method == "map" else 0.1
        assert np.allclose(
            np.diff(mean[list("ABCD")]), np.log([40 / 30, 35 / 25, 30 / 20]), atol=tolerance
        ), mean


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("name", list(SETS))
def test_nuts_fit_every_model(root, tmp_path, name, model):
    out = tmp_path / "fit.nc"
    argv = ["fit", _data(root, name), "--method", "nuts", "--model", model, *MODELS[model],
            "--draws", "100", "--tune", "100", "--chains", "2", "--out", str(out),
            "--no-progress"]  # fmt: skip
    rc, _, err = run(argv)
    # Non-equilibrium V is not identified on a tree (any A there is a gradient, it trades with
    # V along a ridge): only the equilibrium-type models' V is checked against the counts.
    if _expect(name, rc, err) and name == "chain" and model != "nonequilibrium":
        from detailed_balance.sampling import load_fit

        mean = load_fit(out).summary().set_index("state")["mean"]
        gaps = np.diff(mean[list("ABCD")])
        # 200 draws of a posterior with sd ≈ 0.24 per gap: the mean is within ±0.1
        assert np.allclose(gaps, np.log([40 / 30, 35 / 25, 30 / 20]), atol=0.1), mean


@pytest.fixture(scope="module")
def map_fits(root):
    """An equilibrium MAP fit of every fittable set."""
    fits = {}
    for name in SETS:
        if name in NOT_FITTABLE:
            continue
        out = root / f"{name}.fit.nc"
        rc, _, err = run(["fit", _data(root, name), "--method", "map", "--out", str(out),
                          "--no-progress"])  # fmt: skip
        assert rc == 0, err
        fits[name] = out
    return fits


@pytest.mark.parametrize("name", list(SETS))
def test_check_posterior_and_report(root, map_fits, tmp_path, name):
    if name in NOT_FITTABLE:  # nothing could be fitted: check says why
        rc, _, err = run(["check", _data(root, name), "--posterior", str(tmp_path / "none.nc")])
        assert rc == 2 and ("no such fit file" in err or NOT_FITTABLE[name] in err), err
        return
    rc, stdout, err = run(["check", _data(root, name), "--posterior", str(map_fits[name]),
                           "--json"])  # fmt: skip
    assert rc == 0, err
    bayes = json.loads(stdout)["bayes"]
    assert bayes["n_cycles"] == 0  # no two-way 3-cycle: the normal case at the paper's density
    out = tmp_path / "report.html"
    rc, _, err = run(["report", str(map_fits[name]), "-o", str(out)])
    assert rc == 0, err
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["verdict"] == bayes["verdict"]
    if name in FORESTS:
        # every kernel on a tree is reversible: these data cannot support either answer
        assert bayes["cycle_rank"] == 0 and bayes["verdict"] == "inconclusive"
        assert bayes["reasons"][0].startswith(TREE_REASON)
        assert TREE_REASON in out.read_text()
    else:  # the one-way triangle is a loop (rank 1), though not a two-way 3-cycle
        assert bayes["cycle_rank"] == 1 and TREE_REASON not in " ".join(bayes["reasons"])
        # every count goes one way round: the equilibrium fit cannot reproduce them
        assert bayes["ppc_p"] < 0.01 and bayes["verdict"] != "holds"


@pytest.mark.parametrize("name", list(PANELS))
def test_compare(root, tmp_path, name):
    out = tmp_path / "compare.html"
    rc, _, err = run(["compare", _data(root, name), "--method", "map", "-o", str(out)])
    parts = PANELS[name]
    usable = [llm for llm, (set_name, _) in parts.items() if set_name not in NOT_FITTABLE]
    if len(usable) < 2:
        assert rc == 2, err
        if name == "m_single_state":  # the file itself has no move: refused when read
            assert NOT_FITTABLE["single_state"] in err
        else:
            assert "compare needs at least two LLMs with a pair of states seen" in err
            assert f"{len(usable)} of {len(parts)} have one" in err
        assert not out.exists()
        return
    assert rc == 0, err
    summary = json.loads(out.with_suffix(".json").read_text())
    assert sorted(summary["llms"]) == usable
    left_out = sorted(set(parts) - set(usable))
    assert sorted(summary["left_out"]) == left_out
    for llm in left_out:
        assert f"leaving out LLM {llm}: every transition has an end with no known visits" in err
    for entry in summary["llms"].values():
        assert entry["verdict"] in ("inconclusive", "holds", "violated")
        if PANELS[name]["a"][0] in FORESTS:
            assert entry["verdict"] == "inconclusive"
        down = entry["downhill_fraction"]
        assert down["mean"] is None or 0 <= down["mean"] <= 1
        assert all(v is None or math.isfinite(v) for v in down.values())


@pytest.mark.slow
def test_paper_density_without_a_three_cycle(tmp_path):
    """Simulated at the paper's density (2,000 states, 6 calls each, seed 1: no two-way
    3-cycle). Before: `check --posterior` and `report` ended in `cannot reshape array of size 0`."""
    sim = tmp_path / "sim"
    assert run(["simulate", "--states", "2000", "--transitions", "12000", "--seed", "1",
                "--out", str(sim)])[0] == 0  # fmt: skip
    data, fit = str(sim / "transitions.csv"), tmp_path / "eq.nc"
    assert run(["fit", data, "--method", "map", "--out", str(fit), "--no-progress"])[0] == 0
    rc, stdout, err = run(["check", data, "--posterior", str(fit), "--json"])
    assert rc == 0, err
    bayes = json.loads(stdout)["bayes"]
    assert bayes["n_cycles"] == 0 and bayes["flagged_cycles"] == 0
    assert bayes["cycle_rank"] > 0  # longer loops exist: not a forest
    assert bayes["verdict"] != "violated"  # reversible data
    out = tmp_path / "report.html"
    rc, _, err = run(["report", str(fit), "-o", str(out)])
    assert rc == 0, err
    assert json.loads(out.with_suffix(".json").read_text())["evidence"]["n_cycles"] == 0


def test_single_llm_verbs_on_several_llms_say_which_option(root, tmp_path):
    """Before: "the data has several LLMs (a, b); pass llm=NAME" (the Python spelling)."""
    data = _data(root, "m_chain")
    for argv in (["fit", data, "--out", str(tmp_path / "p.csv")], ["check", data],
                 ["fit", data, "--method", "map", "--out", str(tmp_path / "f.nc")]):  # fmt: skip
        rc, _, err = run(argv)
        assert (
            rc == 2 and f"{data} holds several LLMs ('a', 'b'); choose one with --llm NAME" in err
        )
        assert "llm=NAME" not in err
    out = tmp_path / "b.csv"
    assert run(["fit", data, "--llm", "b", "--out", str(out)])[0] == 0
    v = pd.read_csv(out).set_index("state").loc[list("ABCD"), "potential"].to_numpy()
    assert np.allclose(np.diff(v), np.log([40 / 30, 35 / 25, 30 / 20]), atol=1e-6)  # b = 2 × a
