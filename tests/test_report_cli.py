"""`detailed-balance report` on a real saved fit: simulate → fit (MAP) → report, from files only."""

from __future__ import annotations

import json
import re

import pandas as pd
from scipy.stats import spearmanr

from detailed_balance.cli import main


def test_report_from_a_saved_fit(tmp_path):
    sim_dir = tmp_path / "sim"
    assert main(["simulate", "--states", "80", "--transitions", "16000", "--seed", "5",
                 "--out", str(sim_dir)]) == 0  # fmt: skip
    fit_path = tmp_path / "fit.nc"
    assert main(["fit", str(sim_dir / "transitions.csv"), "--method", "map", "--model",
                 "equilibrium", "--out", str(fit_path), "--no-progress"]) == 0  # fmt: skip
    out = tmp_path / "report.html"
    assert main(["report", str(fit_path), "-o", str(out)]) == 0  # the fit carries its data
    html = out.read_text()
    assert out.with_suffix(".md").exists()
    # self-contained: figures embedded, nothing fetched from the network
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', html)) >= 6
    assert "http://" not in html and "https://" not in html
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["verdict"] == "holds"  # the simulated kernel is exactly reversible
    assert summary["evidence"]["flagged_pairs"] == 0
    states = pd.DataFrame(summary["states"]).set_index("state")
    truth = pd.read_csv(sim_dir / "truth.csv").set_index("state")["potential"]
    assert spearmanr(states["mean"], truth[states.index]).statistic > 0.9
