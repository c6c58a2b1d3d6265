"""Outputs: folders made (or refused) before any work, files replaced atomically, damaged or
foreign fit files refused with a message naming them, reports keep their own summary, and a
report is never made of a fit and data that do not belong together (issue 11, items 2, 4, 10)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from detailed_balance.cli import main
from detailed_balance.data import OutputError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Simulated data (30 states) and a MAP fit of them."""
    root = tmp_path_factory.mktemp("outputs")
    assert main(["simulate", "--states", "30", "--transitions", "3000", "--seed", "3",
                 "--out", str(root / "sim")]) == 0  # fmt: skip
    data = root / "sim" / "transitions.csv"
    fit = root / "fit.nc"
    assert main(["fit", str(data), "--method", "map", "--out", str(fit), "--no-progress"]) == 0
    return {"root": root, "data": data, "fit": fit}


def _no_fitting(monkeypatch):
    """Make any model fit fail loudly: the command must refuse before it gets there."""
    import detailed_balance.sampling as sampling

    def boom(*args, **kwargs):
        raise AssertionError("the fit ran before the output path was checked")

    monkeypatch.setattr(sampling, "fit", boom)


def test_fit_makes_missing_folders_for_every_output(made, tmp_path):
    out = tmp_path / "a" / "b" / "fit.nc"
    summary = tmp_path / "c" / "summary.csv"
    assert main(["fit", str(made["data"]), "--method", "map", "--out", str(out), "--summary",
                 str(summary), "--no-progress"]) == 0  # fmt: skip
    assert out.stat().st_size > 0 and summary.read_text().startswith("state,mean,sd")
    potentials = tmp_path / "d" / "potentials.csv"
    assert main(["fit", str(made["data"]), "--out", str(potentials)]) == 0
    assert potentials.read_text().startswith("state,potential,bounded")
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file is left behind"


@pytest.mark.parametrize("option", ["--out", "--summary"])
def test_fit_refuses_an_impossible_output_before_fitting(made, tmp_path, monkeypatch, capsys,
                                                         option):  # fmt: skip
    _no_fitting(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    paths = {"--out": tmp_path / "fit.nc", "--summary": tmp_path / "s.csv"}
    paths[option] = blocker / "x.out"
    argv = ["fit", str(made["data"]), "--method", "map", "--out", str(paths["--out"]),
            "--summary", str(paths["--summary"]), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(blocker / "x.out") in err and "is a file, not a folder" in err
    assert "unexpected" not in err and not paths["--out"].exists()


def test_a_failed_save_keeps_the_old_fit_and_leaves_no_partial(made, tmp_path, monkeypatch):
    from detailed_balance.sampling import load_fit

    fit = tmp_path / "fit.nc"
    fit.write_bytes(made["fit"].read_bytes())
    before = fit.read_bytes()

    def half_written(self, path, *args, **kwargs):
        Path(path).write_bytes(before[: len(before) // 3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.DataTree, "to_netcdf", half_written)
    with pytest.raises(OutputError, match=re.escape(f"cannot write fit {fit}: No space left")):
        load_fit(fit).save(fit)
    assert fit.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.nc"]


def test_killed_fit_never_truncates_the_previous_fit(made, tmp_path):
    """The issue's reproduction: re-run `fit --out fit.nc` over a good fit and kill -9 it as
    soon as it starts writing. The old fit must survive whole (before: 0 bytes)."""
    from detailed_balance.sampling import load_fit

    fit = tmp_path / "fit.nc"
    fit.write_bytes(made["fit"].read_bytes())
    before = fit.read_bytes()
    cmd = [sys.executable, "-m", "detailed_balance.cli", "fit", str(made["data"]), "--method",
           "map", "--out", str(fit), "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed = time.monotonic() + 120, False
    while time.monotonic() < deadline and proc.poll() is None:
        if list(tmp_path.glob(".fit.nc.*.tmp")):  # the new fit is being written
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert killed, "the fit finished before its write could be interrupted"
    assert fit.read_bytes() == before
    assert load_fit(fit).potentials.sizes["state"] == 30


@pytest.fixture
def bad_fits(made, tmp_path):
    whole = made["fit"].read_bytes()
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(whole[:20_000])
    foreign = tmp_path / "foreign.nc"
    foreign.write_text("state,potential\nA,1\n")
    tree = xr.open_datatree(made["fit"], engine="h5netcdf").load()
    tree["posterior"].dataset = tree["posterior"].to_dataset().drop_vars("V")
    no_v = tmp_path / "no_v.nc"
    tree.to_netcdf(no_v, engine="h5netcdf")
    return {
        truncated: f"it is truncated: 20,000 of its {len(whole):,} bytes are there",
        foreign: "it is not a netCDF/HDF5 file",
        no_v: "the fit holds no posterior draws of V",
    }


@pytest.mark.parametrize("verb", ["report", "check"])
def test_damaged_or_foreign_fit_is_refused_naming_it(made, bad_fits, tmp_path, capsys, verb):
    for path, why in bad_fits.items():
        if verb == "report":
            argv = ["report", str(path), "-o", str(tmp_path / "r.html")]
        else:
            argv = ["check", str(made["data"]), "--posterior", str(path)]
        assert main(argv) == 2, path
        err = capsys.readouterr().err
        assert f"error: {path}: " in err and why in err
        assert "unexpected" not in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_python_dash_m_reports_user_errors_as_such(bad_fits, tmp_path):
    """`python -m detailed_balance.cli` runs cli.py as __main__; its errors must still be the
    clear ones (exit 2), not "unexpected UserError" (exit 1)."""
    path = next(iter(bad_fits))
    run = subprocess.run([sys.executable, "-m", "detailed_balance.cli", "report", str(path), "-o",
                          str(tmp_path / "r.html")], env=ENV, capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and "unexpected" not in run.stderr
    assert run.stderr.startswith(f"error: {path}: not a readable fit file")


def test_two_reports_in_one_folder_keep_their_own_summary(made, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    assert main(["report", str(made["fit"]), "-o", str(a)]) == 0
    assert main(["report", str(made["fit"]), "-o", str(b), "--ci", "0.5"]) == 0
    assert json.loads(a.with_suffix(".json").read_text())["ci"] == 0.9
    assert json.loads(b.with_suffix(".json").read_text())["ci"] == 0.5
    assert not (tmp_path / "summary.json").exists()
    for name in ("a", "b"):
        assert (tmp_path / f"{name}.md").exists() and (tmp_path / f"{name}_figures").is_dir()
    assert not list(tmp_path.rglob("*.tmp"))


def test_report_output_folder_checked_before_the_evidence(made, tmp_path, monkeypatch, capsys):
    import detailed_balance.workflow.report as report

    monkeypatch.setattr(report, "compute_evidence", lambda *a, **k: pytest.fail("ran"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", str(made["fit"]), "-o", str(blocker / "r.html")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["report", str(made["fit"]), "-o", str(tmp_path / "r.md")]) == 2
    assert "give the HTML path (e.g. " in capsys.readouterr().err
    nested = tmp_path / "x" / "y" / "r.html"
    monkeypatch.undo()
    assert main(["report", str(made["fit"]), "-o", str(nested)]) == 0
    assert nested.exists() and nested.with_suffix(".json").exists()


def test_report_refuses_data_the_fit_was_not_made_on(made, tmp_path, capsys):
    """Before: `--visits outgoing` on a fit made with the simulated visits wrote a report (rc 0)
    mixing the two; other states said "the equilibrium and non-equilibrium fits were made on
    different data"."""
    out = tmp_path / "r.html"
    assert main(["report", str(made["fit"]), "--data", str(made["data"]), "--visits",
                 "outgoing", "-o", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"{made['fit']} was made on other data than {made['data']}" in err
    other = tmp_path / "other"
    assert main(["simulate", "--states", "20", "--transitions", "2000", "--seed", "9", "--out",
                 str(other)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["report", str(made["fit"]), "--data", str(other / "transitions.csv"), "-o",
                 str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "was made on other data than" in err and "non-equilibrium" not in err
    assert not out.exists()
    # the data it was made on are accepted
    assert main(["report", str(made["fit"]), "--data", str(made["data"]), "-o", str(out)]) == 0


def test_simulate_refuses_a_file_as_its_folder_before_simulating(tmp_path, capsys):
    blocker = tmp_path / "sim"
    blocker.write_text("x")
    assert main(["simulate", "--states", "10", "--transitions", "100", "--out", str(blocker)]) == 2
    assert f"{blocker} exists and is not a folder" in capsys.readouterr().err
    deep = tmp_path / "p" / "q"
    assert main(["simulate", "--states", "10", "--transitions", "100", "--out", str(deep)]) == 0
    assert sorted(p.name for p in deep.iterdir()) == ["transitions.csv", "truth.csv", "visits.csv"]
