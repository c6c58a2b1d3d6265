"""The command line contract: simulate → fit → check, JSON keys, and errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from detailed_balance.cli import main

CHECK_KEYS = {
    "detailed_balance": {"n", "pearson_r", "chi2_ndf"},
    "loops": {"n", "chi2_ndf"},
    "downhill": {"n", "down", "up", "flat", "fraction_down"},
    "potential_fit": {"mu", "sigma"},
    "action": {"value", "expected"},
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    code = main(
        ["simulate", "--states", "200", "--transitions", "40000", "--seed", "3", "--out", str(out)]
    )
    assert code == 0
    return out


def test_simulate_fit_recovers_truth(simulated, tmp_path):
    out = tmp_path / "potentials.csv"
    assert main(["fit", str(simulated / "transitions.csv"), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["state", "potential", "bounded"]
    truth = pd.read_csv(simulated / "truth.csv").set_index("state")["potential"]
    fitted = table.set_index("state")
    bounded = fitted[fitted["bounded"]]
    # potentials are empty exactly where unbounded
    assert fitted.loc[~fitted["bounded"], "potential"].isna().all()
    assert bounded["potential"].notna().all()
    rho = spearmanr(bounded["potential"], truth[bounded.index]).statistic
    assert rho > 0.9


def test_check_json_contract(simulated, capsys):
    assert main(["check", str(simulated / "transitions.csv"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {k: set(v) for k, v in payload.items()} == CHECK_KEYS
    # reversible simulated data: the scatter lies on the diagonal and loops balance
    assert payload["detailed_balance"]["n"] > 50
    assert payload["detailed_balance"]["pearson_r"] > 0.8
    assert 0.5 < payload["detailed_balance"]["chi2_ndf"] < 2.0
    assert payload["loops"]["n"] > 10 and payload["loops"]["chi2_ndf"] < 2.0
    assert (
        payload["downhill"]["down"] + payload["downhill"]["up"] + payload["downhill"]["flat"]
        == payload["downhill"]["n"]
    )
    # the simulated truth has V ~ N(0, 1)
    assert payload["potential_fit"]["sigma"] == pytest.approx(1.0, abs=0.25)


def test_check_reports_null_without_data(tmp_path, capsys):
    path = tmp_path / "tiny.csv"
    path.write_text("source,target,count\na,b,3\nb,c,2\n")
    assert main(["check", str(path), "--visits", "uniform", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["detailed_balance"] is None and payload["loops"] is None


def test_errors_are_messages_not_tracebacks(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("source,target,count\na,b,-4\n")
    proc = subprocess.run(
        [sys.executable, "-m", "detailed_balance.cli", "check", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "data row 1, column 'count': '-4' is negative" in proc.stderr  # the first record
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    debug = subprocess.run(
        [sys.executable, "-m", "detailed_balance.cli", "--debug", "check", str(path)],
        capture_output=True,
        text=True,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_missing_file_and_unknown_reference(tmp_path, simulated, capsys):
    assert main(["check", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    code = main(
        [
            "fit",
            str(simulated / "transitions.csv"),
            "--reference",
            "zzz",
            "--out",
            str(tmp_path / "x.csv"),
        ]
    )
    assert code == 2
    assert "unknown --reference state 'zzz'" in capsys.readouterr().err


def test_claude_table_from_the_command_line(tmp_path):
    path = tmp_path / "claude.csv"
    pd.DataFrame(
        {
            "source": ["TURKEY", "PERSONAL", "PROBLEMS", "BUZZY", "BUZZY", "ATTITUDE", "ATTITUDE"],
            "target": ["ATTITUDE"] * 4 + ["TURKEY", "PERSONAL", "PROBLEMS"],
            "count": [4122, 3879, 3558, 3859, 238, 66, 20],
        }
    ).to_csv(path, index=False)
    out = tmp_path / "v.csv"
    args = ["fit", str(path), "--visits", "uniform", "--calls", "20000", "--out", str(out)]
    assert main(args) == 0
    table = pd.read_csv(out).set_index("state")
    v = table["potential"]
    assert v["PERSONAL"] - v["ATTITUDE"] == pytest.approx(4.1, abs=0.05)
    assert v["PROBLEMS"] - v["ATTITUDE"] == pytest.approx(5.2, abs=0.05)
    assert not table.loc["TURKEY", "bounded"] and np.isnan(v["BUZZY"])
