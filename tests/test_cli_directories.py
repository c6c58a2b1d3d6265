"""A directory where a data file is expected: every verb that reads one says so, exit 2.

(Before: `fit DIR` printed "unexpected IsADirectoryError" and exited 1.)"""

from __future__ import annotations

import pytest

from detailed_balance.cli import main


@pytest.fixture
def files(tmp_path):
    data = tmp_path / "transitions.csv"
    data.write_text("source,target,count\nA,B,3\nB,A,2\nB,C,4\nC,B,1\nA,C,2\nC,A,2\n")
    for name in ("folder", "folder.csv", "fit.nc", "feat.csv", "xy.csv"):
        (tmp_path / name).mkdir()
    return tmp_path


CASES = {
    "fit DIR": (["fit", "{d}/folder", "--out", "{d}/p.csv"], "{d}/folder", "transitions"),
    "fit DIR.csv": (["fit", "{d}/folder.csv", "--out", "{d}/p.csv"], "{d}/folder.csv",
                    "transitions"),
    "check DIR": (["check", "{d}/folder"], "{d}/folder", "transitions"),
    "compare DIRS": (["compare", "{d}/folder", "{d}/folder.csv", "--out", "{d}/c"],
                     "{d}/folder", "transitions"),
    "fit --visits DIR": (["fit", "{d}/transitions.csv", "--visits", "{d}/folder",
                          "--out", "{d}/p.csv"], "{d}/folder", "visits"),
    "check --posterior DIR": (["check", "{d}/transitions.csv", "--posterior", "{d}/fit.nc"],
                              "{d}/fit.nc", "fit"),
    "report DIR": (["report", "{d}/fit.nc", "--out", "{d}/r.html"], "{d}/fit.nc", "fit"),
    "fit --features DIR": (["fit", "{d}/transitions.csv", "--model", "features", "--method",
                            "least-action", "--features", "{d}/feat.csv", "--out",
                            "{d}/p.csv"], "{d}/feat.csv", "feature"),
    "collect --data DIR": (["collect", "--agent", "symreg", "--model", "simulated/symreg",
                            "--calls", "5", "--store", "{d}/runs.db", "--data", "{d}/xy.csv",
                            "--quiet"], "{d}/xy.csv", "x,y"),
    "export --store DIR": (["export", "--store", "{d}/folder", "--out", "{d}/t.csv"],
                           "{d}/folder", "run store"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_directory_instead_of_a_file_is_a_clear_error(case, files, capsys):
    argv, where, expected = CASES[case]
    argv = [a.format(d=files) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unexpected" not in err and "Traceback" not in err
    assert f"{where.format(d=files)} is a directory" in err, err
    assert "expected" in err or "pass the store file" in err, err
    assert expected in err, err
