"""The example scripts run end to end with small sizes and print what they promise."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_figures_reproduces_a_reversible_agent(tmp_path, capsys):
    out = load("paper_figures").main(["--states", "80", "--visits", "300", "--out", str(tmp_path)])
    assert out["r_truth"] > 0.9  # least action recovers the known V
    assert out["db"]["pearson_r"] > 0.9  # the paper's scatter on exact detailed balance
    assert out["loops"]["chi2_ndf"] < 2.0
    assert out["down"]["fraction_down"] > 0.5
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "db_scatter.png",
        "loop_balance.png",
        "potential_distribution.png",
        "landscape.png",
    }
    assert "DB scatter: N =" in capsys.readouterr().out


def test_compare_llms_example_recovers_beta(tmp_path, capsys):
    html = load("compare_llms").main(
        ["--states", "40", "--visits", "300", "--draws", "200", "--out", str(tmp_path)]
    )
    assert html == tmp_path / "compare.html" and html.exists()
    summary = json.loads(html.with_suffix(".json").read_text())
    assert summary["llms"]["llm-cold"]["beta"]["mean"] == pytest.approx(2.0, rel=0.15)
    assert summary["llms"]["llm-warm"]["beta"]["mean"] == 1.0
    assert "report:" in capsys.readouterr().out


def test_real_llm_example_explains_a_missing_key(monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert load("real_llm_word100").main(["--model", "openai/gpt-5-nano"]) == 0
    assert "OPENAI_API_KEY" in capsys.readouterr().err


def test_real_llm_example_runs_on_the_simulated_llm(tmp_path, capsys):
    store = tmp_path / "w.db"
    args = ["--model", "simulated/word100", "--calls", "150", "--store", str(store)]
    assert load("real_llm_word100").main(args) == 0
    printed = capsys.readouterr().out
    assert "completed=150" in printed
    assert "downhill:" in printed and store.exists()
