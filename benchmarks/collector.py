"""Collector throughput: calls/s and harness overhead per call, against baselines in the same run.

Two transports, each at concurrency 64:

* in-process simulated LLM (``simulated/word100`` through litellm's CustomLLM path);
* the loopback OpenAI-compatible server of the tests (``openai/…`` + ``api_base``).

Baseline = bare ``litellm.acompletion`` calls with an ``asyncio.Semaphore(64)``, the same
prompts, no agent, no parsing, no store. Harness overhead per call = (collector time − baseline
time) / calls. The collector rows also show the store's fsync policy (synchronous=NORMAL, the
default, vs FULL). Run: ``python benchmarks/collector.py [--calls 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import litellm  # noqa: E402
from fault_server import FaultServer  # noqa: E402
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER  # noqa: E402

from detailed_balance.agents import RunStore, SimulatedLLM, collect  # noqa: E402
from detailed_balance.agents import word100 as w  # noqa: E402
from detailed_balance.agents.simulated import register_price  # noqa: E402

CONCURRENCY = 64


async def _bare(model: str, calls: int, **kwargs) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)
    words = w.words_summing_to_100()[:40]

    async def one(i: int) -> None:
        async with sem:
            await litellm.acompletion(
                model=model, messages=w.build_messages(words[i % len(words)]), **kwargs
            )

    await asyncio.gather(*(one(i) for i in range(calls)))
    await GLOBAL_LOGGING_WORKER.flush()  # litellm's deferred per-call logging, as the collector


def bare_simulated(sim: SimulatedLLM, calls: int) -> float:
    async def run() -> None:
        with sim.active():
            await _bare(sim.model, calls)

    start = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - start


def bare_loopback(api_base: str, calls: int) -> float:
    start = time.perf_counter()
    asyncio.run(_bare("openai/bench", calls, api_base=api_base, api_key="sk-local-bench-0000"))
    return time.perf_counter() - start


def collector(model: str, calls: int, store: Path, fsync: str, **kwargs) -> float:
    with RunStore(store, fsync=fsync) as run_store:
        start = time.perf_counter()
        result = collect(
            "word100", model, calls, store=run_store, concurrency=CONCURRENCY, **kwargs
        )
        elapsed = time.perf_counter() - start
    assert result.completed == calls, result
    return elapsed


def _fresh(folder: Path) -> Path:
    """A new store file per measured run (so no run resumes another)."""
    return Path(tempfile.mkstemp(suffix=".db", dir=folder)[1]).with_suffix(".run.db")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per row")
    args = parser.parse_args()
    n, best = args.calls, lambda f: min(f() for _ in range(args.repeats))
    sim = SimulatedLLM.word100(states=40, seed=0, invalid_rate=0.05)
    register_price(sim.model)
    tmp = Path(tempfile.mkdtemp())
    bare_simulated(sim, 300)  # warm-up: litellm's lazy imports
    rows = []
    t_bare = best(lambda: bare_simulated(sim, n))
    rows.append(("simulated", "bare litellm.acompletion (baseline)", t_bare, t_bare))
    for fsync in ("normal", "full"):
        t = best(lambda fsync=fsync: collector(sim.model, n, _fresh(tmp), fsync, simulator=sim))
        rows.append(("simulated", f"collector, store synchronous={fsync.upper()}", t, t_bare))
    with FaultServer(["ok"]) as server:
        bare_loopback(server.api_base, 200)
        t_loop = best(lambda: bare_loopback(server.api_base, n))
        rows.append(("loopback", "bare litellm.acompletion (baseline)", t_loop, t_loop))
        t = best(lambda: collector("openai/bench", n, _fresh(tmp), "normal",
                                   api_base=server.api_base, api_key="sk-local-bench-0000"))  # fmt: skip
        rows.append(("loopback", "collector, store synchronous=NORMAL", t, t_loop))
    print(f"\n{n} calls per row (best of {args.repeats}), concurrency {CONCURRENCY}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| transport | what | calls/s | time vs baseline | harness overhead per call |")
    print("|---|---|---|---|---|")
    for transport, what, t, base in rows:
        overhead = (t - base) / n * 1e3
        print(f"| {transport} | {what} | {n / t:.0f} | {t / base:.2f}× | {overhead:+.2f} ms |")


if __name__ == "__main__":
    main()
