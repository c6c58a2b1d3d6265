"""The collector: run an agent against an LLM many times and log every call in the run store.

`collect` (sync) / `collect_async` run `concurrency` workers over the run's pending call ids
0..calls−1. Each worker picks a prompt state (the agent's policy), builds the messages, calls
the LLM through `client.complete` (timeout, retries with backoff and Retry-After, optional
requests-per-minute limit), parses the answer and queues the row for the store. A row is
written only once its answer (or final transport error) is known, so an interrupted run
(Ctrl-C, SIGKILL) loses no answered call that was committed, and ``resume=True`` finishes the
missing and errored call ids: the run ends with exactly `calls` answered calls.

Stops early on the cost cap (`max_cost`, from litellm's cost tracking or the given per-token
prices), on an authentication failure (raised as `AuthenticationFailed`), or after
`max_errors_in_row` consecutive transport failures.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from .builtin import load_agent
from .client import (
    REDACTED,
    AuthenticationFailed,
    CallOutcome,
    RateLimiter,
    RetryPolicy,
    complete,
    redact_known,
    redact_options,
    secret_values,
)
from .client import run as run_coroutine
from .simulated import PROVIDER, SimulatedLLM, active_simulator, register_price
from .spec import Agent, SourcePicker
from .store import RunStore


@dataclass
class CollectResult:
    """What a collection run did (this invocation) and where the run stands."""

    run_id: str
    llm: str
    requested: int
    completed: int
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    cost: float = 0.0
    elapsed: float = 0.0
    stopped: str = "done"
    new_calls: int = 0
    message: str | None = None

    @property
    def calls_per_second(self) -> float:
        return self.new_calls / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class _Stats:
    done: int = 0
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    cost: float = 0.0
    errors_in_row: int = 0
    last_error: str | None = None


class Progress:
    """A live status line: done / valid / invalid / errors / cost (on stderr by default).

    On a terminal it redraws one line at most 5 times a second; otherwise it prints a line at
    every 10% of the run. It only ever shows counts and the run id, never prompts or errors.
    """

    def __init__(self, run_id: str, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.run_id = run_id
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last = 0.0
        self._next_decile = 1
        self._printed = -1

    def line(self, stats: _Stats, done_before: int) -> str:
        done = done_before + stats.done
        rate = stats.done / max(time.monotonic() - self.start, 1e-9)
        return (
            f"[{self.run_id}] {done}/{self.total} done | valid {stats.valid} | invalid "
            f"{stats.invalid} | errors {stats.errors} | cost ${stats.cost:.4f} | {rate:.0f} calls/s"
        )

    def update(self, stats: _Stats, done_before: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        done = done_before + stats.done
        if self.tty:
            if final or now - self._last > 0.2:
                self._last = now
                end = "\n" if final else ""
                print("\r" + self.line(stats, done_before), end=end, file=self.stream, flush=True)
        elif done * 10 >= self._next_decile * self.total or (final and done != self._printed):
            while done * 10 >= self._next_decile * self.total:
                self._next_decile += 1
            self._printed = done
            print(self.line(stats, done_before), file=self.stream, flush=True)


@dataclass
class CollectOptions:
    """Everything that shapes a run besides agent, model and store (kept with the run)."""

    calls: int
    concurrency: int = 8
    seed: int = 0
    timeout: float = 60.0
    retries: int = 6
    backoff: float = 0.5
    rpm: float | None = None
    max_cost: float | None = None
    api_base: str | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    max_errors_in_row: int = 50
    params: dict = field(default_factory=dict)

    def litellm_extra(self) -> dict:
        extra = dict(self.params)
        if self.input_cost_per_token is not None or self.output_cost_per_token is not None:
            extra["input_cost_per_token"] = self.input_cost_per_token or 0.0
            extra["output_cost_per_token"] = self.output_cost_per_token or 0.0
        return extra


async def collect_async(
    agent: Agent | str,
    model: str,
    calls: int,
    *,
    store: RunStore | str | Path,
    run_id: str | None = None,
    resume: bool = False,
    llm: str | None = None,
    simulator: SimulatedLLM | None = None,
    progress: bool | TextIO = False,
    api_key: str | None = None,
    **options,
) -> CollectResult:
    """Collect `calls` answered calls of `agent` against `model` into `store` (see module doc).

    `options` are `CollectOptions` fields (concurrency, seed, timeout, retries, backoff, rpm,
    max_cost, api_base, input/output_cost_per_token, max_errors_in_row, params = extra litellm
    arguments such as temperature). `api_key` is only for keys the caller read from its own
    environment; it is never stored. A ``simulated/…`` model uses `simulator` (or the default).
    """
    agent = load_agent(agent)
    opts = CollectOptions(calls=int(calls), **options)
    if opts.calls < 1 or opts.concurrency < 1:
        raise ValueError("calls and concurrency must be at least 1.")
    run_id = run_id or f"{agent.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    own_store = not isinstance(store, RunStore)
    run_store = RunStore(store) if own_store else store
    try:
        # One writer per run: a second collector of this run is refused before any call.
        with run_store.hold_run(run_id):
            if model.startswith(f"{PROVIDER}/"):
                sim = simulator or active_simulator(model)
                register_price(model)
                with sim.active():
                    return await _collect(
                        agent, model, opts, run_store, run_id, resume, llm, progress, api_key, sim
                    )
            return await _collect(
                agent, model, opts, run_store, run_id, resume, llm, progress, api_key, None
            )
    finally:
        if own_store:
            run_store.close()


def collect(agent: Agent | str, model: str, calls: int, **kwargs) -> CollectResult:
    """Synchronous `collect_async` (runs its own event loop, see `client.run`: simulated calls
    skip litellm's worker-thread hop there)."""
    return run_coroutine(collect_async(agent, model, calls, **kwargs))


async def _collect(
    agent: Agent,
    model: str,
    opts: CollectOptions,
    store: RunStore,
    run_id: str,
    resume: bool,
    llm: str | None,
    progress: bool | TextIO,
    api_key: str | None,
    sim: SimulatedLLM | None,
) -> CollectResult:
    llm = llm or model
    config = {k: v for k, v in asdict(opts).items() if k != "calls"}
    config["agent"] = agent.describe
    if sim is not None:
        config["simulator"] = sim.describe()
    # extra litellm params or an api_base with a query key may carry credentials
    config = _redact_config(config, (api_key,) if api_key else ())
    info = store.start_run(
        run_id, agent=agent.name, model=model, llm=llm, calls=opts.calls, seed=opts.seed,
        config=config, resume=resume,
    )  # fmt: skip
    total = int(info["calls"])
    pending = deque(store.pending_calls(run_id, total).tolist())
    done_before = total - len(pending)
    spent = store.previous_attempts(run_id)
    secrets = secret_values((api_key,) if api_key else ())
    picker = SourcePicker(
        agent, store.found_states(run_id), store.last_targets(run_id, opts.concurrency)
    )
    stats = _Stats()
    stream = progress if hasattr(progress, "write") else None
    bar = Progress(run_id, total, stream, enabled=bool(progress))
    policy = RetryPolicy(retries=opts.retries, base=opts.backoff)
    limiter = RateLimiter(opts.rpm)
    jitter = random.Random(opts.seed)
    extra = opts.litellm_extra()
    state = {"stop": None, "message": None}
    start = time.monotonic()

    async def worker(walker: int) -> None:
        while pending and state["stop"] is None:
            if opts.max_cost is not None and stats.cost >= opts.max_cost:
                state["stop"] = "cost cap"
                break
            call_id = pending.popleft()
            source = picker.pick(walker, random.Random(opts.seed * 1_000_003 + call_id))
            outcome = await complete(
                model, agent.build_messages(source), call=call_id, policy=policy, rng=jitter,
                timeout=opts.timeout, api_base=opts.api_base, api_key=api_key, limiter=limiter,
                extra=extra, first_attempt=spent.get(call_id, 0),
            )  # fmt: skip
            outcome.text = redact_known(outcome.text, secrets)
            _record(store, run_id, call_id, llm, agent, source, outcome, picker, walker, stats)
            if stats.errors_in_row >= opts.max_errors_in_row:
                state["stop"] = "too many errors"
                state["message"] = (
                    f"{stats.errors_in_row} calls in a row failed; last error: {stats.last_error}"
                )
            bar.update(stats, done_before)

    status = "interrupted"
    try:
        n_workers = min(opts.concurrency, len(pending) or 1)
        tasks = [asyncio.ensure_future(worker(w)) for w in range(n_workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # One worker failed (auth) or we were cancelled (Ctrl-C): stop the others first.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        answered = done_before + stats.done - stats.errors
        if state["stop"] is not None:
            status = "stopped"
        else:  # calls that ended in a transport error are still to do: resume finishes them
            status = "complete" if not pending and answered >= total else "incomplete"
        await _drain_litellm_logging()
    except AuthenticationFailed:
        status = "auth failed"
        raise
    finally:
        store.finish_run(run_id, status)
        bar.update(stats, done_before, final=True)
    return CollectResult(
        run_id=run_id, llm=llm, requested=total,
        completed=done_before + stats.done - stats.errors,
        valid=stats.valid, invalid=stats.invalid, errors=stats.errors, cost=stats.cost,
        elapsed=time.monotonic() - start, stopped=state["stop"] or "done",
        new_calls=stats.done, message=state["message"],
    )  # fmt: skip


async def _drain_litellm_logging(timeout: float = 10.0) -> None:
    """Let litellm finish its queued per-call logging work inside this event loop.

    litellm defers success logging (cost, payloads) to a background worker; without this the
    backlog spills into the next event loop (and into whatever is timed there).
    """
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:  # pragma: no cover - other litellm versions
        return
    try:
        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout)
    except (TimeoutError, AttributeError, RuntimeError):  # best effort only
        pass


def _redact_config(options: object, extra: tuple[str, ...]) -> object:
    """`client.redact_options` for the stored run config, except that numbers, booleans and
    nulls are kept even under a credential-like name (``input_cost_per_token``,
    ``max_tokens``: prices and limits, never secrets), and HTTP header mappings are redacted
    whole (any header may carry a credential)."""
    if isinstance(options, dict):
        kept = {}
        for key, value in options.items():
            if value is None or isinstance(value, bool | int | float):
                kept[key] = value
            elif isinstance(value, dict) and "header" in str(key).lower():
                kept[key] = REDACTED
            elif isinstance(value, dict | list | tuple):
                secret = redact_options({key: ""})[key] == REDACTED
                kept[key] = REDACTED if secret else _redact_config(value, extra)
            else:
                kept[key] = redact_options({key: value}, extra)[key]
        return kept
    if isinstance(options, list | tuple):
        return [_redact_config(v, extra) for v in options]
    return redact_options(options, extra)


def _record(
    store: RunStore,
    run_id: str,
    call_id: int,
    llm: str,
    agent: Agent,
    source: str,
    outcome: CallOutcome,
    picker: SourcePicker,
    walker: int,
    stats: _Stats,
) -> None:
    """Parse the answer, update the search state and queue the row (store first, then stats)."""
    stats.done += 1
    stats.cost += outcome.cost
    if outcome.error is not None:
        target = valid = reason = None
        stats.errors += 1
        stats.errors_in_row += 1
        stats.last_error = outcome.error
    else:
        parsed = agent.parse(outcome.text or "", source)
        target, valid, reason = parsed.target, int(parsed.valid), parsed.reason
        stats.errors_in_row = 0
    store.add(
        (
            run_id, call_id, llm, agent.name, source, outcome.text, target, valid, reason,
            outcome.tokens_in, outcome.tokens_out, outcome.cost, outcome.latency,
            outcome.attempts, outcome.error, time.time(),
        )
    )  # fmt: skip
    if outcome.error is None:
        picker.observe(walker, parsed)
        if parsed.valid:
            stats.valid += 1
        else:
            stats.invalid += 1


def collect_simulated_demo(
    store: str | Path,
    *,
    calls: int = 3000,
    seed: int = 0,
    states: int = 40,
    temperature: float = 1.0,
    drive: float = 0.0,
    invalid_rate: float = 0.05,
    concurrency: int = 64,
    run_id: str = "demo",
    progress: bool | TextIO = False,
) -> tuple[CollectResult, SimulatedLLM]:
    """Collect `calls` word100 calls from a simulated LLM with a known landscape (for demos).

    Returns the result and the simulator (``simulator.truth_table()`` is the true βV). Resumes
    the run if `store` already holds it, so re-running is idempotent.
    """
    sim = SimulatedLLM.word100(
        states=states, seed=seed, temperature=temperature, drive=drive, invalid_rate=invalid_rate
    )
    result = collect(
        "word100", sim.model, calls, store=store, run_id=run_id, resume=True, simulator=sim,
        seed=seed, concurrency=concurrency, progress=progress,
    )  # fmt: skip
    return result, sim
