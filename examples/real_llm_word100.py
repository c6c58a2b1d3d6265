"""The paper's word task (letters worth 1..26, words summing to 100) on a real LLM via litellm.

    .venv/bin/python examples/real_llm_word100.py --model openai/gpt-5-nano --calls 2000
    .venv/bin/python examples/real_llm_word100.py --model simulated/word100 --calls 300

Needs the provider's key in the environment (litellm's usual variables, e.g. OPENAI_API_KEY);
without one the script says which variable is missing and exits. A `simulated/...` model runs
the embedded simulated LLM instead (no key, no network). The calls go to a run store
(`word100.db`), then the least-action potential and the paper's checks are printed; the store
can be compared with other LLMs' runs by `detailed-balance compare --store word100.db`.
Keys never reach the store, logs or output.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def missing_keys(model: str) -> list[str]:
    """Environment variables litellm needs for `model` that are not set (none for simulated/)."""
    if model.startswith("simulated/"):
        return []
    import litellm

    try:
        check = litellm.validate_environment(model=model)
    except Exception as exc:  # noqa: BLE001 - an unknown provider is the user's to fix
        return [f"(litellm cannot check this model: {type(exc).__name__})"]
    return [] if check.get("keys_in_environment") else list(check.get("missing_keys", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="openai/gpt-5-nano", help="any litellm model name")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--store", default="word100.db")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    missing = missing_keys(args.model)
    if missing:
        print(
            f"{args.model} needs {', '.join(missing)} in the environment; set it and run again, "
            f"or try the embedded simulated LLM: --model simulated/word100",
            file=sys.stderr,
        )
        return 0
    from detailed_balance.agents import RunStore, collect, word100_agent
    from detailed_balance.diagnostics import paper_checks
    from detailed_balance.models import least_action

    result = collect(word100_agent(), args.model, args.calls, store=args.store, seed=args.seed)
    print(result)
    with RunStore(Path(args.store)) as store:
        data = store.transitions(llm=result.llm if hasattr(result, "llm") else None)
        found = store.discovery()
    print(f"{data}; distinct valid words found: {int(found['distinct_states'].max())}")
    fit = least_action(data)
    for name, check in paper_checks(data, fit).items():
        print(f"{name}: {check.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
