"""`detailed-balance --help` and every verb's `--help` answer without importing the numerical
stack: the package root re-exports lazily and the subcommands import heavy modules in `run`.
(Before: importing the package imported pandas, SciPy and PyMC through `simulation`, 1.7–3.3 s.)"""

from __future__ import annotations

import json
import subprocess
import sys

from detailed_balance.cli import COMMANDS

HEAVY = ("pandas", "numpy", "scipy", "pymc", "pytensor", "arviz", "matplotlib", "litellm")

PROBE = f"""
import contextlib, io, json, sys
HEAVY = {HEAVY!r}
from detailed_balance.cli import main
verb = sys.argv[1:]
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main([*verb, "--help"])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({{"code": code, "help": out.getvalue(),
                  "heavy": sorted(m for m in HEAVY if m in sys.modules)}}))
"""


def _help(*verb: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *verb], capture_output=True, text=True, check=True
    )
    return json.loads(run.stdout)


def test_help_imports_no_numerical_package():
    for verb in ((), *((name,) for name in COMMANDS)):
        out = _help(*verb)
        assert out["code"] == 0, verb
        assert "usage: detailed-balance" in out["help"], verb
        assert out["heavy"] == [], f"{' '.join(verb) or '--help'} imported {out['heavy']}"


def test_package_root_still_exports_the_simulator_lazily():
    import detailed_balance
    from detailed_balance import simulate
    from detailed_balance.simulation import simulate as direct

    assert simulate is direct
    assert set(detailed_balance.__all__) <= set(dir(detailed_balance))
