"""Data with no two-way 3-cycle among the modelled pairs, though the pair graph has loops
(issue 13: "`check --posterior` then crashes (`ValueError: cannot reshape array of size 0`)
because the data hold no 3-cycle — the normal case at this density"). Such data get a verdict
from the evidence that exists (pair-level tests, the pair-count PPC, LOO): the loop evidence
is "no 3-cycle observed" (``n_cycles`` 0, loop p null, ``flagged_cycles`` 0) and a reason
line says so. Forests (``cycle_rank`` 0) are `tests/test_degenerate.py`'s.

Two data sets: a hand-made reversible ring of six states (one loop of length 6, counts equal
to their expectation under a known V, so the equilibrium model fits them exactly) and a
simulated sparse reversible landscape (200 states, 3 calls each: 70+ independent loops, none
of them a 3-cycle with all six edges seen).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import warnings
from pathlib import Path

import pytest

from detailed_balance.cli import main

NO_CYCLE_REASON = "no 3-cycle observed"
RING_V = [0.0, 0.4, -0.3, 0.8, 0.2, -0.5]
RING_VISITS = 400


def run(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI; assert no traceback and no numpy/PyMC warning got through."""
    out, err = io.StringIO(), io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        warnings.simplefilter("always")
        rc = main(argv)
    text = err.getvalue()
    assert "Traceback" not in text and "unexpected" not in text, text
    loud = [w for w in caught if issubclass(w.category, RuntimeWarning | FutureWarning)]
    assert not loud, [f"{w.category.__name__}: {w.message} ({w.filename})" for w in loud]
    return rc, out.getvalue(), text


def _ring(folder: Path) -> Path:
    """A ring r0–r1–…–r5–r0 with n_fg = N · 0.2 · min(1, e^(V_f − V_g)) both ways (rounded)."""
    folder.mkdir()
    names = [f"r{k}" for k in range(len(RING_V))]
    with open(folder / "transitions.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["source", "target", "count"])
        for k, f in enumerate(names):
            for step in (1, -1):
                g = names[(k + step) % len(names)]
                rate = 0.2 * min(1.0, math.exp(RING_V[k] - RING_V[(k + step) % len(names)]))
                out.writerow([f, g, round(RING_VISITS * rate)])
    with open(folder / "visits.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["source", "visits"])
        out.writerows([name, RING_VISITS] for name in names)
    return folder / "transitions.csv"


@pytest.fixture(scope="module")
def ring(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ring")
    data = _ring(root / "ring")
    fits = {"data": data}
    for model in ("equilibrium", "nonequilibrium"):
        fits[model] = root / f"{model}.nc"
        rc, _, err = run(["fit", str(data), "--method", "map", "--model", model,
                          "--out", str(fits[model]), "--no-progress"])  # fmt: skip
        assert rc == 0, err
    return fits


@pytest.fixture(scope="module")
def sparse(tmp_path_factory) -> dict[str, Path]:
    """Reversible, 200 states × 3 calls (seed 0): 265 pairs, 78 independent loops, no
    two-way 3-cycle among the modelled pairs (checked on the model's own pair table)."""
    root = tmp_path_factory.mktemp("sparse")
    rc, _, err = run(["simulate", "--states", "200", "--transitions", "600", "--seed", "0",
                      "--out", str(root / "sim")])  # fmt: skip
    assert rc == 0, err
    data = root / "sim" / "transitions.csv"
    from detailed_balance.data import read_transitions
    from detailed_balance.models._pairs import pair_data

    pairs = pair_data(read_transitions(str(data)))
    assert pairs.n_cycles == 0 and pairs.n_pairs - pairs.n_states + pairs.n_components > 0
    fit = root / "equilibrium.nc"
    rc, _, err = run(["fit", str(data), "--method", "map", "--out", str(fit), "--no-progress"])
    assert rc == 0, err
    return {"data": data, "equilibrium": fit}


def _bayes(data: Path, *fits: Path) -> dict:
    argv = ["check", str(data), "--json"]
    for fit in fits:
        argv += ["--posterior", str(fit)]
    rc, stdout, err = run(argv)
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["loops"] is None  # the paper's loop check: no 3-cycle either
    return summary["bayes"]


def _no_cycle_evidence(bayes: dict, n_pairs: int) -> None:
    assert bayes["n_cycles"] == 0 and bayes["flagged_cycles"] == 0
    assert bayes["loop_ppc_p"] is None and bayes["loop_chi2_ndf"] is None
    assert bayes["n_pairs"] == n_pairs and bayes["cycle_rank"] > 0
    assert 0 <= bayes["ppc_p"] <= 1
    assert bayes["verdict"] in ("holds", "inconclusive")  # reversible data: never "violated"
    said = [r for r in bayes["reasons"] if r.startswith(NO_CYCLE_REASON)]
    assert len(said) == 1, bayes["reasons"]
    assert "pair-level tests, the pair-count PPC and LOO" in said[0]


@pytest.mark.parametrize("given", [("equilibrium",), ("nonequilibrium",),
                                   ("equilibrium", "nonequilibrium")])  # fmt: skip
def test_ring_check_posterior(ring, given):
    """One loop of six states, counts at their reversible expectation: the equilibrium model
    reproduces them, nothing is flagged, so the pair-level evidence says `holds`."""
    bayes = _bayes(ring["data"], *(ring[name] for name in given))
    _no_cycle_evidence(bayes, n_pairs=6)
    assert bayes["cycle_rank"] == 1
    assert bayes["flagged_pairs"] == 0 and bayes["ppc_p"] >= 0.05
    assert bayes["verdict"] == "holds", bayes["reasons"]
    assert bayes["reasons"][0].startswith(NO_CYCLE_REASON)
    assert bayes["fitted_here"].keys() == {"equilibrium", "nonequilibrium"} - set(given)


def test_ring_check_without_json_prints_the_verdict(ring):
    rc, stdout, err = run(["check", str(ring["data"]), "--posterior", str(ring["equilibrium"])])
    assert rc == 0, err
    assert "verdict                             HOLDS" in stdout, stdout
    assert f"- {NO_CYCLE_REASON}" in stdout, stdout


@pytest.mark.parametrize("model", ["equilibrium", "nonequilibrium"])
def test_ring_report(ring, tmp_path, model):
    out = tmp_path / "report.html"
    rc, _, err = run(["report", str(ring[model]), "-o", str(out)])
    assert rc == 0, err
    assert out.exists()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["verdict"] == "holds"
    evidence = summary["evidence"]
    assert evidence["n_cycles"] == 0 and evidence["loop_ppc_p"] is None
    html = out.read_text()
    assert "HOLDS" in html and NO_CYCLE_REASON in html
    markdown = out.with_suffix(".md").read_text()
    assert "| loop χ²/ndf, PPC p (eq) | – (no 3-cycle observed) |" in markdown
    assert "| flagged 3-cycles (FDR 0.05) | 0 of 0 |" in markdown
    assert "no 3-cycle was observed (the verdict rests on the pair-level evidence)" in markdown
    assert "0 of 0 3-cycles" not in markdown  # the summary does not count what is not there


def test_sparse_simulated_data(sparse, tmp_path):
    """200 states seen 3 times each: the verdict rests on the pair-level evidence."""
    bayes = _bayes(sparse["data"], sparse["equilibrium"])
    _no_cycle_evidence(bayes, n_pairs=265)
    out = tmp_path / "report.html"
    rc, _, err = run(["report", str(sparse["equilibrium"]), "-o", str(out)])
    assert rc == 0, err
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["verdict"] == bayes["verdict"] and summary["evidence"]["n_cycles"] == 0
    assert bayes["verdict"].upper() in out.read_text()


def test_no_modelled_pair_left_is_refused_clearly(ring, tmp_path):
    """Asking for a verdict where no pair is left to model: exit 2 and why, no traceback."""
    argv = ["check", str(ring["data"]), "--visits", "outgoing", "--min-visits", "1000",
            "--posterior", str(ring["equilibrium"]), "--json"]  # fmt: skip
    rc, stdout, err = run(argv)
    assert rc == 2 and stdout == ""
    assert "no transitions between different states are left" in err
    assert "lower --min-visits" in err


# -- the verdict's rule on ideal posteriors of the ring (LOO counted: "MCMC" draws) ----------
def _ring_data(drive: float):
    """The ring's states and V with counts at their expectation under T_fg = 0.1 e^(u/2),
    u = V_f − V_g + A_fg, A = `drive` on every r_k → r_k+1 (a circulation of 6·drive round
    the one loop, no 3-cycle); returns the data, the true V and A (pairs' f→g orientation)."""
    import numpy as np
    import pandas as pd

    from detailed_balance.data import Transitions

    names = [f"r{k}" for k in range(len(RING_V))]
    rows = []
    for k, f in enumerate(names):
        g = names[(k + 1) % len(names)]
        u = RING_V[k] - RING_V[(k + 1) % len(names)] + drive
        rows += [(f, g, round(RING_VISITS * 0.1 * math.exp(u / 2))),
                 (g, f, round(RING_VISITS * 0.1 * math.exp(-u / 2)))]  # fmt: skip
    counts = pd.DataFrame(rows, columns=["source", "target", "count"])
    data = Transitions.from_counts(counts, pd.DataFrame({"source": names, "visits": RING_VISITS}))
    pairs = data.pairs()
    step = {(f, names[(k + 1) % len(names)]) for k, f in enumerate(names)}
    orient = zip(pairs["f"], pairs["g"], strict=True)
    a = np.array([drive if (f, g) in step else -drive for f, g in orient])
    return data, pd.Series(RING_V, index=names) - np.mean(RING_V), a


def test_verdict_rule_without_a_three_cycle():
    """No 3-cycle, one 6-loop: with posteriors centred on the truth (NUTS-labelled, so LOO is
    counted) reversible counts `hold` and a circulation of 9 round the loop is `violated` by
    the pair-level evidence alone (a flagged pair, the pair-count PPC and LOO agree)."""
    from test_bayes_diagnostics import gaussian_fit

    from detailed_balance.diagnostics import bayes_verdict

    data, v, a = _ring_data(0.0)
    verdict = bayes_verdict(gaussian_fit(data, v, sd=0.02), gaussian_fit(data, v, a, sd=0.02))
    ev = verdict.evidence
    assert (ev["n_cycles"], ev["cycle_rank"], ev["loop_ppc_p"]) == (0, 1, None)
    assert ev["loo_counted"] is True and ev["flagged_pairs"] == 0 and ev["ppc_p"] >= 0.05
    assert verdict.verdict == "holds", verdict.reasons
    assert verdict.reasons[0].startswith(NO_CYCLE_REASON)

    data, v, a = _ring_data(1.5)
    verdict = bayes_verdict(gaussian_fit(data, v, sd=0.02), gaussian_fit(data, v, a, sd=0.02))
    ev = verdict.evidence
    assert ev["n_cycles"] == 0 and ev["flagged_cycles"] == 0 and ev["loop_ppc_p"] is None
    assert ev["flagged_pairs"] == 6 and ev["ppc_p"] < 0.01 and ev["elpd_diff"] > 4
    assert verdict.verdict == "violated", verdict.reasons
    assert verdict.reasons[0].startswith(NO_CYCLE_REASON)
