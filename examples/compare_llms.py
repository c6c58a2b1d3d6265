"""Compare two simulated LLMs on one landscape: which runs hotter, do they share a potential?

The demo behind `make demo`'s last step: two LLMs descend the same landscape at β = 1 and 2;
the hierarchical model recovers β of the colder one relative to the warmer and the report
`compare.html` (with `compare.md` and `compare.json`) is written.

    .venv/bin/python examples/compare_llms.py [--states 80] [--visits 200] [--out compare-demo]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from detailed_balance.workflow import run_compare_demo  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=80)
    parser.add_argument("--visits", type=int, default=200)
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="compare-demo")
    args = parser.parse_args(argv)
    html = run_compare_demo(
        args.out, args.seed, n_states=args.states, visits=args.visits, draws=args.draws
    )
    summary = json.loads(html.with_suffix(".json").read_text())
    for name, entry in summary["llms"].items():
        beta = entry["beta"]
        print(
            f"{name:10s} β = {beta['mean']:.2f} [{beta['lower']:.2f}, {beta['upper']:.2f}]  "
            f"downhill {entry['downhill_fraction']['mean']:.0%}  verdict {entry['verdict']}"
        )
    print(f"report: {html}")
    return html


if __name__ == "__main__":
    main()
