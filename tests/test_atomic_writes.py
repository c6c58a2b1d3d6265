"""An OS error while writing an output (read-only folder, disk full, a file where a folder
should be, a target replaced by a folder) is an `OutputError` naming the path and the reason,
raised by `atomic_path` itself; the old file survives and no temporary sibling is left."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from detailed_balance.cli import main
from detailed_balance.data.files import (
    OutputError,
    atomic_path,
    write_frame_atomic,
    write_text_atomic,
)


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable") as info:
            write_text_atomic(folder / "old.txt", "new", "report")
        assert str(folder / "old.txt") in str(info.value)
        assert (folder / "old.txt").read_text() == "old"
    finally:
        folder.chmod(0o755)
    assert sorted(p.name for p in folder.iterdir()) == ["old.txt"]


@pytest.mark.parametrize("depth", ["file/x.csv", "file/sub/x.csv"])
def test_parent_is_a_regular_file(tmp_path, depth):
    (tmp_path / "file").write_text("not a folder")
    target = tmp_path / depth
    frame = pd.DataFrame({"a": [1]})
    with pytest.raises(OutputError) as info:
        write_frame_atomic(frame, target, "theta table", index=False)
    message = str(info.value)
    assert str(target) in message and "theta table" in message
    assert "is a file, not a folder" in message or "Not a directory" in message
    with pytest.raises(OutputError, match="is a file, not a folder|Not a directory"):
        with atomic_path(target, "figure"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_disk_full_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.csv"
    target.write_text("old\n")
    monkeypatch.setattr(pd.DataFrame, "to_csv", _disk_full)
    with pytest.raises(OutputError) as info:
        write_frame_atomic(pd.DataFrame({"a": [1]}), target, "--summary", index=False)
    assert str(info.value) == f"cannot write --summary {target}: No space left on device."
    assert isinstance(info.value.__cause__, OSError)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]


def test_target_turned_into_a_folder_before_the_rename(tmp_path):
    target = tmp_path / "report.html"
    with pytest.raises(OutputError) as info:
        with atomic_path(target, "report") as tmp:
            tmp.write_text("<html>")
            target.mkdir()  # someone else made a folder there meanwhile
            (target / "keep").write_text("x")
    assert str(info.value).startswith(f"cannot write report {target}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_one_body_writing_two_files_names_both(tmp_path):
    counts, visits = tmp_path / "t.csv", tmp_path / "visits.csv"
    with pytest.raises(OutputError) as info:
        with atomic_path(counts, "transitions file") as a, atomic_path(visits, "visits file") as b:
            a.write_text("source,target,count\n")
            b.write_text("source,visits\n")
            _disk_full()
    assert str(info.value) == (
        f"cannot write transitions file {counts} and visits file {visits}: No space left on device."
    )
    assert list(tmp_path.iterdir()) == []


def test_a_finished_inner_write_is_not_blamed(tmp_path):
    outer, inner = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(OutputError) as info:
        with atomic_path(outer, "report") as tmp:
            write_text_atomic(inner, "done", "figure")
            tmp.write_text("half")
            _disk_full()
    assert str(info.value) == f"cannot write report {outer}: No space left on device."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]


def test_collect_truth_table_on_a_full_disk_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pd.DataFrame, "to_csv", _disk_full)
    truth = tmp_path / "truth.csv"
    argv = ["collect", "--agent", "word100", "--model", "simulated/word100", "--calls", "5",
            "--store", str(tmp_path / "runs.db"), "--truth-out", str(truth), "--quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot write truth table {truth}: No space left on device." in err, err
    assert "unexpected" not in err and not truth.exists()


def test_export_calls_on_a_full_disk_is_exit_2(tmp_path, monkeypatch, capsys):
    db = tmp_path / "runs.db"
    argv = ["collect", "--agent", "word100", "--model", "simulated/word100", "--calls", "5",
            "--store", str(db), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    monkeypatch.setattr(pd.DataFrame, "to_json", _disk_full)
    calls = tmp_path / "calls.jsonl"
    argv = ["export", "--store", str(db), "--out", str(tmp_path / "t.csv"),
            "--calls-out", str(calls)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot write calls file {calls}: No space left on device." in err, err
    assert not calls.exists() and not list(Path(tmp_path).glob(".*.tmp"))
