"""Figures, the report document and the comparison, against known numbers."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from reports_support import fake_fit

from detailed_balance.cli import main
from detailed_balance.data import Transitions
from detailed_balance.diagnostics import bayes_verdict, db_scatter, loop_balance
from detailed_balance.reports import (
    Document,
    build_report,
    comparison_document,
    db_scatter_figure,
    discovery_curve,
    landscape_graph_figure,
    loop_balance_figure,
    potential_distribution_figure,
    potential_forest_figure,
    ppc_figure,
    sampler_health_figure,
    violations_figure,
)
from detailed_balance.reports.compare import visit_entropy
from detailed_balance.simulation import simulate_panel
from detailed_balance.workflow import compare_llms


@pytest.fixture(scope="module")
def fitted():
    data, truth, eq = fake_fit(with_a=False)
    _, _, neq = fake_fit(with_a=True)
    return data, truth, eq, neq


def _title(fig: Figure, k: int = 0) -> str:
    return fig.axes[k].get_title()


def test_db_scatter_figure_reports_the_paper_numbers(fitted):
    data, truth, eq, _ = fitted
    fig = db_scatter_figure(data, eq)
    mean_v = eq["posterior"]["V"].mean(("chain", "draw")).to_series()
    check = db_scatter(data, mean_v)
    assert f"N = {check['n']}" in _title(fig)
    assert f"r = {check['pearson_r']:.2f}" in _title(fig)
    # exact detailed balance in the simulation: the scatter hugs the diagonal
    assert check["pearson_r"] > 0.9
    assert 0.5 < check["chi2_ndf"] < 2.0


def test_loop_balance_figure_counts_cycles_and_flags(fitted):
    data, _, _, _ = fitted
    points = loop_balance(data).points
    flags = points[["a", "b", "c"]].assign(flagged=False)
    flags.loc[:2, "flagged"] = True
    fig = loop_balance_figure(data, cycles=flags)
    assert f"{len(points)} 3-cycles" in _title(fig)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"cycles ({len(points) - 3})", "flagged (3)"]


def test_potential_distribution_shows_the_true_spread(fitted):
    data, truth, eq, _ = fitted
    fig = potential_distribution_figure(data, eq)
    sigma = float(re.search(r"σ = ([0-9.]+)", _title(fig)).group(1))
    assert sigma == pytest.approx(truth.std(ddof=0), abs=0.05)


def test_forest_lists_lowest_and_highest_states(fitted):
    _, truth, eq, _ = fitted
    fig = potential_forest_figure(eq, n=5)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 10
    assert labels[0] == truth.idxmin()
    assert labels[-1] == truth.idxmax()


def test_landscape_graph_colours_downhill_green(fitted):
    data, _, eq, _ = fitted
    fig = landscape_graph_figure(data, eq, top=20)
    lines = fig.axes[0].collections[0]
    colours = lines.get_colors()
    green = np.isclose(colours[:, 1], 0x7D / 255, atol=0.01)
    ends = np.array([seg[-1, 1] - seg[0, 1] for seg in lines.get_segments()])
    # segment by segment: green exactly when the move ends lower on the V axis
    assert len(ends) > 20 and np.array_equal(green, ends < 0)


def test_violations_ppc_and_health_figures(fitted):
    data, _, eq, neq = fitted
    verdict = bayes_verdict(eq, neq, check_convergence=False)
    fig = violations_figure(verdict.pairs, verdict.cycles)
    assert f"of {len(verdict.pairs)} flagged" in _title(fig, 0)
    # exact detailed balance: nothing is flagged and the equilibrium model fits the counts
    assert f"0 of {len(verdict.pairs)} flagged" in _title(fig, 0)
    assert not verdict.pairs["flagged"].any()
    ppc = ppc_figure(eq)
    p_value = float(re.search(r"p = ([0-9.]+)", _title(ppc)).group(1))
    assert 0.0 <= p_value <= 1.0
    health = sampler_health_figure(eq)
    assert "rank plot: sigma_V" in _title(health, 0)
    assert "E-BFMI" in _title(health, len(health.axes) - 1)


def test_discovery_curve_rarefaction_hand_case():
    counts = pd.DataFrame(
        {"source": ["a", "a", "b"], "target": ["b", "INVALID", "a"], "count": [3, 5, 2]}
    )
    visits = pd.DataFrame({"source": ["a", "b"], "visits": [8.0, 2.0]})
    data = Transitions.from_counts(counts, visits)
    curve = discovery_curve(data, data.llms[0]).set_index("calls")["distinct"]
    # N = 10 calls: 3 land on b, 2 on a, 5 invalid. One call: E = (3 + 2) / 10.
    assert curve.loc[1.0] == pytest.approx(0.5)
    # two calls: Σ 1 − C(N−n, 2)/C(N, 2) = (1 − 21/45) + (1 − 28/45)
    assert curve.loc[2.0] == pytest.approx(2 - 49 / 45)
    assert curve.loc[10.0] == pytest.approx(2.0)
    p = np.array([3, 2]) / 5
    assert visit_entropy(data, data.llms[0]) == pytest.approx(-(p * np.log(p)).sum())


def test_document_is_self_contained(tmp_path, fitted):
    data, _, eq, _ = fitted
    doc = Document("T", "sub")
    doc.verdict("holds")
    doc.table(pd.DataFrame({"a": [1.23456, np.nan]}))
    doc.figure(potential_forest_figure(eq, n=3), "forest <b>")
    written = doc.write(tmp_path / "r.html", {"x": np.float64(1.5)})
    html = written["html"].read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert html.count('src="data:image/png;base64,') == 1
    assert "forest &lt;b&gt;" in html and "1.23" in html and "–" in html
    md = written["markdown"].read_text()
    assert "](r_figures/01-forest-b.png)" in md
    assert (tmp_path / "r_figures" / "01-forest-b.png").stat().st_size > 1000
    assert json.loads(written["summary"].read_text()) == {"x": 1.5}


def test_report_summary_and_reading(tmp_path, fitted):
    data, truth, eq, neq = fitted
    verdict = bayes_verdict(eq, neq, check_convergence=False)
    doc, summary = build_report(eq, data, evidence=verdict, source="fake.nc")
    paths = doc.write(tmp_path / "report.html", summary)
    loaded = json.loads(paths["summary"].read_text())
    assert loaded["verdict"] == verdict.verdict
    assert loaded["evidence"]["flagged_cycles"] == verdict.evidence["flagged_cycles"]
    states = pd.DataFrame(loaded["states"])
    assert states["mean"].is_monotonic_increasing
    assert states.iloc[0]["state"] == truth.idxmin()
    assert "descends its potential landscape" in loaded["reading"]
    assert loaded["provenance"]["sampler"] == "nutpie"
    html = paths["html"].read_text()
    assert html.count("<img ") == 8


def _two_llm_panel():
    return simulate_panel({"warm": 1.0, "cold": 2.0}, n_states=40, visits=300, seed=4)


def test_compare_json_shape_and_temperature(tmp_path):
    panel = _two_llm_panel()
    comparison = compare_llms(
        panel.data,
        draws=200,
        tune=200,
        chains=2,
        model_config={"reference": "warm"},
        verdict_method=None,
    )
    doc, summary = comparison_document(comparison)
    assert set(summary) >= {"llms", "shared_landscape", "landscape_correlation"}
    cold = summary["llms"]["cold"]
    assert set(cold) >= {"calls", "distinct_valid", "beta", "downhill_fraction", "verdict"}
    assert cold["calls"] == 40 * 300
    assert cold["distinct_valid"] == 40
    # truth 2; 40 states only, and the fitted model runs a few % high on small panels (README)
    assert cold["beta"]["mean"] == pytest.approx(2.0, rel=0.15)
    assert cold["beta"]["lower"] < cold["beta"]["mean"] < cold["beta"]["upper"]
    assert summary["llms"]["warm"]["beta"]["mean"] == 1.0
    # the colder LLM moves downhill more often
    assert cold["downhill_fraction"]["mean"] > summary["llms"]["warm"]["downhill_fraction"]["mean"]
    assert set(summary["shared_landscape"]["tau_delta"]) == {"mean", "lower", "upper"}
    assert summary["landscape_correlation"]["cold|warm"]["lower"] > 0.9
    assert "colder than warm" in doc.to_html()


def test_compare_cli_writes_report_and_json(tmp_path, capsys):
    panel = _two_llm_panel()
    warm = panel.data.select("warm")
    cold = panel.data.select("cold")
    warm.counts.drop(columns="llm").to_csv(tmp_path / "warm.csv", index=False)
    warm.visits.drop(columns="llm").to_csv(tmp_path / "warm.visits.csv", index=False)
    cold.counts.drop(columns="llm").to_csv(tmp_path / "cold.csv", index=False)
    cold.visits.drop(columns="llm").to_csv(tmp_path / "cold.visits.csv", index=False)
    out = tmp_path / "cmp" / "compare.html"
    args = [str(tmp_path / "warm.csv"), str(tmp_path / "cold.csv"), "-o", str(out)]
    args += ["--draws", "150", "--tune", "150", "--chains", "2", "--verdicts", "none"]
    args += ["--reference", "warm", "--json"]
    assert main(["compare", *args]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["llms"]["cold"]["beta"]["mean"] == pytest.approx(2.0, rel=0.15)

    assert json.loads(out.with_suffix(".json").read_text()) == printed
    assert out.with_suffix(".md").exists() and out.exists()


def test_compare_cli_errors_name_the_fix(tmp_path, capsys):
    panel = _two_llm_panel()
    one = tmp_path / "one.csv"
    panel.data.select("warm").counts.to_csv(one, index=False)
    assert main(["compare", str(one), "-o", str(tmp_path / "c.html")]) == 2
    assert "at least two LLMs" in capsys.readouterr().err
    assert main(["compare", "-o", str(tmp_path / "c.html")]) == 2
    assert "needs DATA" in capsys.readouterr().err
    assert main(["compare", "--store", str(tmp_path / "missing.db")]) == 2
    assert "no such run store" in capsys.readouterr().err
