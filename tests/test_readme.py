"""The README's examples run as documented, so they cannot rot.

Every ```python block runs (all in one interpreter, each block in a fresh namespace, in a
temporary folder) and every `detailed-balance` line of a ```bash / ```sh block runs in order in
one temporary folder, so later shell examples may reuse the files of earlier ones (the README
says so). A block whose fence follows a `<!-- skip-test: reason -->` line is not run (the
reason is in the README). Other shell lines (`make`, `export VAR=...`, `.`) are not commands of
this package and are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI = Path(sys.executable).parent / "detailed-balance"
SKIP = re.compile(r"^<!--\s*skip-test\b.*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    text: str
    skipped: bool


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match and match.group(1):
            start = i
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            skipped = start > 0 and bool(SKIP.match(lines[start - 1].strip()))
            blocks.append(Block(match.group(1), start + 1, "\n".join(body), skipped))
        i += 1
    return blocks


def shell_commands(block: Block) -> list[list[str]]:
    """The `detailed-balance` command lines of a shell block (continuations joined)."""
    commands, pending = [], ""
    for raw in block.text.split("\n"):
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        if words and words[0] == "detailed-balance":
            commands.append([str(CLI), *words[1:]])
    assert not pending, f"README line {block.line}: a shell block ends with a continuation"
    return commands


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b.lang == "python" and not b.skipped]
SHELL = [b for b in BLOCKS if b.lang in ("bash", "sh") and not b.skipped]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env.pop("PYTHONPATH", None)  # the installed package, as a user has it
    return env


def test_the_parser_finds_the_examples_and_the_skip_marks():
    text = (
        "```bash\nmake test\ndetailed-balance fit a.csv \\\n    --out b.csv  # note\n```\n"
        "<!-- skip-test: needs a key -->\n```bash\ndetailed-balance collect --model x\n```\n"
        "```python\nprint(1)\n```\n```text\nout\n```\n"
    )
    blocks = readme_blocks(text)
    assert [(b.lang, b.line, b.skipped) for b in blocks] == [
        ("bash", 1, False),
        ("bash", 7, True),
        ("python", 10, False),
        ("text", 13, False),
    ]
    assert shell_commands(blocks[0]) == [[str(CLI), "fit", "a.csv", "--out", "b.csv"]]
    # the README itself: the two make commands come first, and there is something to run
    assert README.read_text(encoding="utf-8").split("\n")[2:6] == [
        "```bash",
        "make demo   # creates .venv, installs, runs the main job end to end on the "
        "embedded default, writes a report",
        "make test   # creates .venv, installs, passes the tests",
        "```",
    ]
    assert len(PYTHON) >= 5
    assert sum(len(shell_commands(b)) for b in SHELL) >= 10
    assert any(b.skipped for b in BLOCKS)  # the real-provider block


def test_python_examples_run(tmp_path):
    assert CLI.exists(), f"{CLI} is missing: run the tests from the package's virtualenv"
    names = []
    for block in PYTHON:
        path = tmp_path / f"readme_line_{block.line}.py"
        path.write_text(block.text + "\n", encoding="utf-8")
        names.append(path.name)
    runner = tmp_path / "run_blocks.py"
    runner.write_text(
        "import runpy, sys\n"
        "for name in sys.argv[1:]:\n"
        "    print('=== ' + name, flush=True)\n"
        "    runpy.run_path(name, run_name='__main__')\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, runner.name, *names],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.count("=== readme_line_") == len(PYTHON)


def test_shell_examples_run(tmp_path):
    assert CLI.exists(), f"{CLI} is missing: run the tests from the package's virtualenv"
    ran = 0
    for block in SHELL:
        for command in shell_commands(block):
            done = subprocess.run(
                command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
            )
            shown = " ".join(command[1:])
            assert done.returncode == 0, (
                f"README line {block.line}: detailed-balance {shown} exited "
                f"{done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
            assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, shown
            ran += 1
    assert ran >= 10
    # what the examples promise to write
    for name in (
        "sim/potentials.csv",
        "eq.nc",
        "potentials.csv",
        "report.html",
        "compare.html",
        "runs.db",
        "transitions.csv",
        "visits.csv",
        "theta.csv",
    ):
        assert (tmp_path / name).is_file(), name


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
