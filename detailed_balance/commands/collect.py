"""`detailed-balance collect`: run an agent against an LLM and log every call in a run store.

API keys are read by litellm from its usual environment variables (OPENAI_API_KEY,
ANTHROPIC_API_KEY, ...); there is deliberately no option to pass a key on the command line
(it would land in shell history and process lists).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--agent", required=True, help="word100, symreg, or module:object (an Agent or factory)"
    )
    parser.add_argument(
        "--model", required=True, help="litellm model, e.g. openai/gpt-5-nano or simulated/word100"
    )
    parser.add_argument(
        "--calls", type=int, required=True, help="answered calls the run must end with"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed for source choice and simulator")
    parser.add_argument("--api-base", help="base URL of an OpenAI-compatible server")
    parser.add_argument("--store", default="runs.db", help="SQLite run store (default runs.db)")
    parser.add_argument("--run-id", help="name of the run (default: agent-date-time-random)")
    parser.add_argument(
        "--resume", action="store_true", help="continue --run-id: redo missing and failed calls"
    )
    parser.add_argument("--llm", help="name of the LLM in the store (default: the model)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=6, help="retries per call (default 6)")
    parser.add_argument("--rpm", type=float, help="at most this many requests per minute")
    parser.add_argument("--max-cost", type=float, help="stop once this many USD are spent")
    parser.add_argument("--temperature", type=float, help="sampling temperature sent to the LLM")
    parser.add_argument(
        "--input-cost-per-token",
        type=float,
        help="USD per prompt token (models litellm does not price)",
    )
    parser.add_argument("--output-cost-per-token", type=float, help="USD per answer token")
    parser.add_argument("--fsync", choices=("normal", "full"), default="normal",
                        help="SQLite synchronous mode (full: fsync every commit)")  # fmt: skip
    parser.add_argument("--no-dictionary", action="store_true",
                        help="word100: accept any alphabetic word summing to 100")  # fmt: skip
    parser.add_argument("--data", help="symreg: CSV with columns x,y (default: bundled oscillator)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    sim = parser.add_argument_group("simulated LLM (models simulated/word100, simulated/symreg)")
    sim.add_argument("--sim-states", type=int, default=40, help="word100 vocabulary size")
    sim.add_argument("--sim-seed", type=int, help="landscape seed (default: --seed)")
    sim.add_argument("--sim-spread", type=float, default=1.5, help="standard deviation of V")
    sim.add_argument("--sim-temperature", type=float, default=1.0, help="τ in exp(−ΔV/τ)")
    sim.add_argument("--sim-drive", type=float, default=0.0,
                     help="scale of the antisymmetric drive (0 = reversible)")  # fmt: skip
    sim.add_argument("--sim-invalid-rate", type=float, default=0.05, help="garbage-answer rate")
    sim.add_argument("--sim-fault-rate", type=float, default=0.0,
                     help="rate of injected rate-limit/server/timeout faults per attempt")  # fmt: skip
    sim.add_argument("--sim-latency", type=float, default=0.0, help="mean answer delay (s)")
    sim.add_argument("--truth-out", help="write the simulator's true potential (state,potential)")


def _simulator(args: argparse.Namespace):
    from detailed_balance.agents import Faults, SimulatedLLM

    if not args.model.startswith("simulated/"):
        return None
    third = args.sim_fault_rate / 3
    common = {
        "seed": args.seed if args.sim_seed is None else args.sim_seed,
        "spread": args.sim_spread,
        "temperature": args.sim_temperature,
        "drive": args.sim_drive,
        "invalid_rate": args.sim_invalid_rate,
        "faults": Faults(
            rate_limit=third, server_error=third, timeout=third, latency=args.sim_latency
        ),
    }
    task = args.model.split("/", 1)[1]
    if task == "word100":
        return SimulatedLLM.word100(states=args.sim_states, **common)
    if task == "symreg":
        return SimulatedLLM.symreg(data=args.data, **common)
    return None


def run(args: argparse.Namespace) -> int:
    from detailed_balance.agents import AuthenticationFailed, collect, load_agent

    from ._common import UserError

    options = {}
    if args.agent == "word100":
        options["dictionary"] = not args.no_dictionary
    elif args.agent == "symreg" and args.data:
        options["data"] = args.data
    try:
        agent = load_agent(args.agent, **options)
        sim = _simulator(args)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    if args.model.startswith("simulated/") and sim is None:
        raise UserError(
            f"unknown simulated model {args.model!r}: use simulated/word100 or simulated/symreg "
            f"(a custom agent needs its own SimulatedLLM from Python, see examples/custom_agent.py)."
        )
    if args.resume and not args.run_id:
        raise UserError("--resume needs --run-id (the run to continue).")
    from detailed_balance.agents import RunStore
    from detailed_balance.data import prepare_output, write_frame_atomic

    # Output folders are made (or refused) before the store is opened or any call is made.
    truth_out = prepare_output(args.truth_out, "truth table") if args.truth_out else None
    prepare_output(args.store, "run store")
    if sim is not None and truth_out is not None:
        write_frame_atomic(sim.truth_table(), truth_out, "truth table", index=False)
    params = {} if args.temperature is None else {"temperature": args.temperature}
    store = RunStore(args.store, fsync=args.fsync)
    try:
        result = collect(
            agent, args.model, args.calls, store=store, run_id=args.run_id, resume=args.resume,
            llm=args.llm, simulator=sim, progress=not args.quiet, concurrency=args.concurrency,
            seed=args.seed, timeout=args.timeout, retries=args.retries, rpm=args.rpm,
            max_cost=args.max_cost, api_base=args.api_base, params=params,
            input_cost_per_token=args.input_cost_per_token,
            output_cost_per_token=args.output_cost_per_token,
        )  # fmt: skip
    except AuthenticationFailed as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        runs = store.runs()
        if args.run_id:
            runs = runs[runs["run_id"] == args.run_id]
        latest = runs.iloc[-1] if len(runs) else None
        if latest is not None:
            print(
                f"\ninterrupted: run {latest['run_id']} has {int(latest['completed'])} of "
                f"{int(latest['requested'])} calls stored; continue with --resume "
                f"--run-id {latest['run_id']}",
                file=sys.stderr,
            )
        return 130
    finally:
        store.close()
    print(
        f"run {result.run_id}: {result.completed}/{result.requested} calls answered "
        f"({result.valid} valid, {result.invalid} invalid, {result.errors} transport errors this "
        f"session), cost ${result.cost:.4f}, {result.calls_per_second:.0f} calls/s → {args.store}"
    )
    if result.stopped != "done":
        print(f"stopped early ({result.stopped}); continue with --resume --run-id {result.run_id}",
              file=sys.stderr)  # fmt: skip
        if result.message:
            print(result.message, file=sys.stderr)
        return 1
    if result.completed < result.requested:
        print(f"{result.requested - result.completed} calls failed at the transport level; "
              f"retry them with --resume --run-id {result.run_id}", file=sys.stderr)  # fmt: skip
        return 1
    return 0
