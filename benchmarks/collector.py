"""Collector throughput: calls/s and harness overhead per call, against baselines in the same run.

Two transports, each at concurrency 64:

* in-process simulated LLM (``simulated/word100`` through litellm's CustomLLM path);
* the loopback OpenAI-compatible server of the tests (``openai/…`` + ``api_base``).

Baseline = bare ``litellm.acompletion`` calls with an ``asyncio.Semaphore(64)``, the same
prompts, no agent, no parsing, no store. Harness overhead per call = (collector CPU time −
baseline CPU time) / calls, CPU time of the whole process (less sensitive than wall time to
other work on a shared machine). The collector rows also show the store's fsync policy
(synchronous=NORMAL, the default, vs FULL).

The "litellm defaults" rows undo, one at a time, what `client` does for simulated calls (the
provider reporting its own cost, litellm's internal-sub-call context that skips its success
logging, the inline executor for litellm's synchronous half), measured in the same run: the
before/after of those settings. Run: ``python benchmarks/collector.py [--calls 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from detailed_balance.agents import RunStore, SimulatedLLM, client, collect_async  # noqa: E402
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


class Timer:
    """Wall time and CPU time of this process (all threads) over a block."""

    @classmethod
    def zero(cls) -> Timer:
        timer = cls()
        timer.wall = timer.cpu = 0.0
        return timer

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def bare_simulated(sim: SimulatedLLM, calls: int) -> Timer:
    async def run() -> None:
        with sim.active():
            await _bare(sim.model, calls)

    with Timer() as timer:
        asyncio.run(run())
    return timer


def bare_loopback(api_base: str, calls: int) -> Timer:
    with Timer() as timer:
        asyncio.run(_bare("openai/bench", calls, api_base=api_base, api_key="sk-local-bench-0000"))
    return timer


def collector(
    model: str, calls: int, store: Path, fsync: str, inline: bool = True, **kwargs
) -> Timer:
    """The collector as `collect` runs it (``inline=False``: on a plain `asyncio.run` loop,
    so litellm's synchronous half goes through the default thread pool as before)."""
    with RunStore(store, fsync=fsync) as run_store, Timer() as timer:
        coroutine = collect_async(
            "word100", model, calls, store=run_store, concurrency=CONCURRENCY, **kwargs
        )
        result = client.run(coroutine) if inline else asyncio.run(coroutine)
    assert result.completed == calls, result
    return timer


def litellm_defaults(sim: SimulatedLLM, calls: int, store: Path, undo: set[str]) -> Timer:
    """The collector with some of `client`'s settings for simulated calls undone: ``cost``
    (litellm prices the calls), ``logging`` (litellm's success logging runs), ``inline``
    (litellm's synchronous half hops to a worker thread)."""
    sim.report_cost = "cost" not in undo
    context = client._simulated_call_context
    if "logging" in undo:
        client._simulated_call_context = lambda model: contextlib.nullcontext()
    try:
        return collector(sim.model, calls, store, "normal", "inline" not in undo, simulator=sim)
    finally:
        sim.report_cost = True
        client._simulated_call_context = context


def harness_only(sim: SimulatedLLM, calls: int, store: Path) -> Timer:
    """The collector with `litellm.acompletion` replaced by a stub that builds the same
    response object: what the harness itself (agent, policy, retries wrapper, parse, store,
    progress) costs per call, without litellm's own work."""

    async def stub(model, messages, **kwargs):
        response = litellm.ModelResponse()
        response.choices[0].message.content = sim.answer(messages, kwargs["metadata"]["call"])
        response.usage = litellm.Usage(prompt_tokens=40, completion_tokens=3, total_tokens=43)
        return response

    real, litellm.acompletion = litellm.acompletion, stub
    try:
        return collector(sim.model, calls, store, "normal", simulator=sim)
    finally:
        litellm.acompletion = real


def _fresh(folder: Path) -> Path:
    """A new store file per measured run (so no run resumes another)."""
    return Path(tempfile.mkstemp(suffix=".db", dir=folder)[1]).with_suffix(".run.db")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per row")
    args = parser.parse_args()
    n = args.calls

    def best(run) -> Timer:
        return min((run() for _ in range(args.repeats)), key=lambda t: t.wall)

    sim = SimulatedLLM.word100(states=40, seed=0, invalid_rate=0.05)
    register_price(sim.model)
    tmp = Path(tempfile.mkdtemp())
    bare_simulated(sim, 300)  # warm-up: litellm's lazy imports
    rows = []
    t_bare = best(lambda: bare_simulated(sim, n))
    rows.append(("simulated", "bare litellm.acompletion (baseline)", t_bare, t_bare))
    steps = [
        ({"cost", "logging", "inline"}, "collector, litellm defaults (before)"),
        ({"logging", "inline"}, "… + provider reports its cost"),
        ({"inline"}, "… + no litellm success logging"),
    ]
    for undo, what in steps:
        t = best(lambda undo=undo: litellm_defaults(sim, n, _fresh(tmp), undo))
        rows.append(("simulated", what, t, t_bare))
    for fsync in ("normal", "full"):
        t = best(lambda fsync=fsync: collector(sim.model, n, _fresh(tmp), fsync, simulator=sim))
        label = "… + inline executor = collector now" if fsync == "normal" else "collector now"
        rows.append(("simulated", f"{label}, store synchronous={fsync.upper()}", t, t_bare))
    t = best(lambda: harness_only(sim, n, _fresh(tmp)))
    rows.append(("none (stub)", "collector with litellm.acompletion stubbed out", t, None))
    with FaultServer(["ok"]) as server:
        bare_loopback(server.api_base, 200)
        t_loop = best(lambda: bare_loopback(server.api_base, n))
        rows.append(("loopback", "bare litellm.acompletion (baseline)", t_loop, t_loop))
        t = best(lambda: collector("openai/bench", n, _fresh(tmp), "normal",
                                   api_base=server.api_base, api_key="sk-local-bench-0000"))  # fmt: skip
        rows.append(("loopback", "collector, store synchronous=NORMAL", t, t_loop))
    print(f"\n{n} calls per row (best of {args.repeats}), concurrency {CONCURRENCY}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| transport | what | calls/s (wall) | wall vs baseline | CPU ms per call | "
          "harness CPU overhead per call |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for transport, what, t, base in rows:
        base = base or Timer.zero()
        cpu, overhead = t.cpu / n * 1e3, (t.cpu - base.cpu) / n * 1e3
        print(f"| {transport} | {what} | {n / t.wall:.0f} | {t.wall / base.wall if base.wall else 0:.2f}× | "
              f"{cpu:.2f} | {overhead:+.2f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
