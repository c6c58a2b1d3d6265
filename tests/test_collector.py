"""The collector and the simulated LLM: exact kernel, determinism, sampling frequencies,
retries (backoff, Retry-After), caps, a real loopback server with faults, Ctrl-C, key leaks."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from detailed_balance.agents import (
    AuthenticationFailed,
    Faults,
    RunStore,
    SimulatedLLM,
    collect,
    word100_agent,
)
from detailed_balance.agents import client as cl
from detailed_balance.agents import word100 as w

sys.path.insert(0, str(Path(__file__).parent))
from fault_server import FaultServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIVE = {"ATTITUDE": 0.0, "TURKEY": 1.0, "PERSONAL": -0.5, "PROBLEMS": 2.0, "DISCIPLINE": 0.7}


# -- the simulated LLM's truth -------------------------------------------------------------------
def test_kernel_is_exact_metropolis_hastings():
    sim = SimulatedLLM.word100(potential=FIVE, temperature=2.0, invalid_rate=0.1)
    k = sim.kernel()
    assert np.allclose(k.sum(axis=1), 1.0)
    assert np.allclose(k["INVALID"], 0.1)
    v = np.array(list(FIVE.values()))
    moves = k[sim.states].to_numpy()
    i, j = np.triu_indices(5, 1)
    # Hand formula: T(f→g) = 0.9 · min(1/4, exp((V_f − V_g)/τ)/4).
    assert moves[0, 1] == pytest.approx(0.9 * min(0.25, np.exp((0.0 - 1.0) / 2) / 4))
    np.testing.assert_allclose(np.log(moves[i, j] / moves[j, i]), (v[i] - v[j]) / 2.0)
    truth = sim.true_potential()
    np.testing.assert_allclose(truth.to_numpy(), (v - v.mean()) / 2.0)


def test_driven_kernel_breaks_detailed_balance_by_the_drive():
    sim = SimulatedLLM.word100(potential=FIVE, drive=0.8, seed=4)
    moves = sim.kernel()[sim.states].to_numpy()
    drive = sim._drive_matrix()
    v = np.array(list(FIVE.values()))
    i, j = np.triu_indices(5, 1)
    np.testing.assert_allclose(np.log(moves[i, j] / moves[j, i]), v[i] - v[j] + drive[i, j])
    a, b, c = 0, 1, 2  # loop affinity = Σ drive around the loop, V cancels
    forward = np.log(moves[a, b] * moves[b, c] * moves[c, a])
    backward = np.log(moves[a, c] * moves[c, b] * moves[b, a])
    assert forward - backward == pytest.approx(drive[a, b] + drive[b, c] + drive[c, a])
    assert abs(drive[a, b] + drive[b, c] + drive[c, a]) > 1e-3


def _prompt(word):
    return w.build_messages(word)


async def _answers(sim, calls, concurrency):
    import litellm

    sem = asyncio.Semaphore(concurrency)

    async def one(call, word):
        async with sem:
            r = await litellm.acompletion(
                model=sim.model, messages=_prompt(word), metadata={"call": call, "attempt": 0}
            )
            return call, r.choices[0].message.content

    with sim.active():
        return dict(await asyncio.gather(*(one(c, word) for c, word in calls)))


def test_simulated_answers_do_not_depend_on_concurrency_or_order():
    sim = SimulatedLLM.word100(states=12, seed=5, invalid_rate=0.2)
    words = sim.states
    calls = [(c, words[c % len(words)]) for c in range(150)]
    serial = asyncio.run(_answers(sim, calls, 1))
    shuffled = calls[:]
    random.Random(1).shuffle(shuffled)
    parallel = asyncio.run(_answers(sim, shuffled, 32))
    assert serial == parallel
    other_seed = SimulatedLLM.word100(states=12, seed=6, invalid_rate=0.2)
    other_seed.states = sim.states  # same vocabulary, different draws
    assert asyncio.run(_answers(other_seed, calls, 8)) != serial


def test_simulated_frequencies_follow_the_kernel():
    """2,000 litellm calls from one prompt state: χ² goodness of fit to the exact kernel row."""
    sim = SimulatedLLM.word100(potential=FIVE, invalid_rate=0.1)
    answers = asyncio.run(_answers(sim, [(c, "ATTITUDE") for c in range(2000)], 64))
    row = sim.kernel().loc["ATTITUDE"]
    labels = np.array([a if a in FIVE else "INVALID" for a in answers.values()])
    observed = np.array([(labels == name).sum() for name in row.index])
    result = chisquare(observed, row.to_numpy() * len(labels))
    assert result.pvalue > 1e-3, (observed, row.to_numpy() * len(labels))


def test_prompt_outside_vocabulary_and_unknown_model():
    sim = SimulatedLLM.word100(potential=FIVE)
    assert sim.answer(_prompt("BUZZY"), 0) in FIVE  # BUZZY is not in this vocabulary
    with pytest.raises(ValueError, match="no simulated LLM is active"):
        SimulatedLLM.for_model("simulated/nothing")
    with pytest.raises(ValueError, match="2 distinct states"):
        SimulatedLLM(["A"], [0.0], r"(A)")


# -- the collector on the simulated LLM -----------------------------------------------------------
def test_collect_counts_and_uniform_policy(tmp_path):
    sim = SimulatedLLM.word100(states=15, seed=1, invalid_rate=0.1)
    result = collect("word100", sim.model, 400, store=tmp_path / "r.db", simulator=sim,
                     run_id="u", concurrency=16)  # fmt: skip
    assert (result.completed, result.new_calls, result.errors) == (400, 400, 0)
    assert result.valid + result.invalid == 400
    with RunStore(tmp_path / "r.db") as store:
        rows = store.calls()
        data = store.transitions()
    assert len(rows) == 400 and rows["call_id"].tolist() == list(range(400))
    assert data.total_calls == 400
    # Uniform policy: every prompt state is the seed or a valid answer found earlier.
    found = {"BUZZY"} | set(rows.loc[rows["valid"] == 1, "target"])
    assert set(rows["source"]) <= found
    assert rows.loc[0, "source"] == "BUZZY"


def test_chain_policy_continues_from_the_last_valid_answer(tmp_path):
    sim = SimulatedLLM.word100(states=10, seed=2, invalid_rate=0.3)
    agent = word100_agent(policy="chain")
    collect(
        agent, sim.model, 120, store=tmp_path / "c.db", simulator=sim, run_id="c", concurrency=1
    )
    with RunStore(tmp_path / "c.db") as store:
        rows = store.calls()
    expected = ["BUZZY"]
    for target, valid in zip(rows["target"][:-1], rows["valid"][:-1], strict=True):
        expected.append(target if valid else "BUZZY")
    assert rows["source"].tolist() == expected
    assert (rows["valid"] == 0).sum() > 10  # restarts actually happened


def test_faults_are_retried_and_do_not_change_answers(tmp_path):
    clean = SimulatedLLM.word100(states=10, seed=3)
    faulty = SimulatedLLM.word100(states=10, seed=3,
                                  faults=Faults(rate_limit=0.2, server_error=0.1, timeout=0.1))  # fmt: skip
    common = {"concurrency": 1, "seed": 3, "backoff": 0.001}
    collect(
        "word100", clean.model, 200, store=tmp_path / "a.db", simulator=clean, run_id="a", **common
    )
    result = collect("word100", faulty.model, 200, store=tmp_path / "b.db", simulator=faulty,
                     run_id="b", retries=8, **common)  # fmt: skip
    assert result.completed == 200 and result.errors == 0
    with RunStore(tmp_path / "a.db") as a, RunStore(tmp_path / "b.db") as b:
        rows_a, rows_b = a.calls(), b.calls()
    assert rows_a["answer"].tolist() == rows_b["answer"].tolist()
    # P(first attempt fails) = 0.4 → about 80 of 200 calls needed a retry (binomial sd ≈ 6.9).
    retried = int((rows_b["attempts"] > 1).sum())
    assert abs(retried - 80) < 4 * np.sqrt(200 * 0.4 * 0.6)
    # Attempts are geometric: mean 1 / 0.6.
    assert rows_b["attempts"].mean() == pytest.approx(1 / 0.6, abs=0.25)


def test_exhausted_retries_are_error_rows_not_visits(tmp_path):
    sim = SimulatedLLM.word100(states=6, seed=0, faults=Faults(server_error=0.5))
    result = collect("word100", sim.model, 200, store=tmp_path / "e.db", simulator=sim,
                     run_id="e", retries=1, backoff=0.001, concurrency=4)  # fmt: skip
    # P(both attempts fail) = 0.25.
    assert abs(result.errors - 50) < 4 * np.sqrt(200 * 0.25 * 0.75)
    assert result.completed == 200 - result.errors
    with RunStore(tmp_path / "e.db") as store:
        data = store.transitions()
        errors = store.calls().query("error == error")
        assert data.total_calls == result.completed
        assert (errors["attempts"] == 2).all() and errors["target"].isna().all()
        assert errors["error"].str.contains("InternalServerError").all()
    # Resume redoes exactly the failed calls (now with more retries) and ends with 200.
    again = collect("word100", sim.model, 200, store=tmp_path / "e.db", simulator=sim,
                    run_id="e", resume=True, retries=20, backoff=0.001)  # fmt: skip
    assert again.new_calls == result.errors and again.completed == 200
    with RunStore(tmp_path / "e.db") as store:
        redone = store.calls().set_index("call_id").loc[errors["call_id"], "attempts"]
    assert (redone >= 3).all()  # attempt numbers continued from the first session


def test_cost_cap_with_a_fake_price(tmp_path):
    sim = SimulatedLLM.word100(states=6)
    price = 1e-3  # USD per token, in and out
    result = collect("word100", sim.model, 1000, store=tmp_path / "p.db", simulator=sim,
                     run_id="p", input_cost_per_token=price, output_cost_per_token=price,
                     max_cost=1.0, concurrency=4)  # fmt: skip
    per_call = (len(w.PROMPT.format(word="ATTITUDE")) // 4 + 1 + 3) * price  # ≈ 0.046
    assert result.stopped == "cost cap"
    assert 1.0 <= result.cost < 1.0 + 5 * per_call
    with RunStore(tmp_path / "p.db") as store:
        rows = store.calls()
    assert rows["cost"].sum() == pytest.approx(result.cost)
    assert len(rows) < 1.0 / per_call + 6


def test_requests_per_minute_limit(tmp_path):
    sim = SimulatedLLM.word100(states=6)
    start = time.monotonic()
    collect("word100", sim.model, 8, store=tmp_path / "q.db", simulator=sim, rpm=600, concurrency=8)
    assert time.monotonic() - start >= 0.7 - 0.05  # 8 starts 0.1 s apart


def test_backoff_is_jittered_exponential_and_honours_retry_after():
    policy = cl.RetryPolicy(base=0.5, cap=4.0)
    rng = random.Random(0)
    for attempt, bound in [(0, 0.5), (1, 1.0), (3, 4.0), (6, 4.0)]:
        delays = np.array([policy.delay(attempt, None, rng) for _ in range(2000)])
        assert delays.min() >= 0 and delays.max() <= bound
        assert delays.mean() == pytest.approx(bound / 2, rel=0.08)  # full jitter: U(0, bound)
    assert policy.delay(5, 0.25, rng) == 0.25
    assert cl.RetryPolicy(max_retry_after=10).delay(0, 3600, rng) == 10


def test_redaction():
    os.environ["TEST_SERVICE_API_KEY"] = "abcd1234secretvalue"
    try:
        text = "key abcd1234secretvalue and Bearer sk-anything-0123456789 and sk-proj-ABCDEFGH12345"
        assert cl.redact(text) == "key [REDACTED] and [REDACTED] and [REDACTED]"
    finally:
        del os.environ["TEST_SERVICE_API_KEY"]


# -- real transport: a loopback server with faults ------------------------------------------------
def test_retry_after_from_a_real_429():
    async def run():
        with FaultServer(["429", "ok"], retry_after=0.4) as server:
            policy = cl.RetryPolicy(retries=3, base=10.0)  # backoff would wait up to 10 s
            out = await cl.complete("openai/fake", _prompt("BUZZY"), call=0, policy=policy,
                                    rng=random.Random(0), timeout=5, api_base=server.api_base,
                                    api_key="sk-local-test-000000")  # fmt: skip
            return out, server.requests

    out, requests = asyncio.run(run())
    assert out.error is None and out.attempts == 2 and requests == 2
    assert 0.4 <= out.latency < 2.0  # waited Retry-After, not the 10 s backoff


@pytest.mark.slow
def test_fault_server_run_accounts_for_every_call(tmp_path):
    schedule = ["ok", "429", "ok", "500", "ok", "hang", "ok", "malformed", "ok", "empty", "ok"]
    # Timeout well above a loaded machine's answer time, hang well above the timeout, and
    # enough retries that no call can exhaust them on the cyclic fault schedule.
    with FaultServer(schedule, retry_after=0.02, hang_seconds=2.0) as server:
        result = collect("word100", "openai/fake-model", 120, store=tmp_path / "f.db",
                         api_base=server.api_base, api_key="sk-local-test-000000", run_id="f",
                         timeout=1.0, retries=12, backoff=0.01, concurrency=6)  # fmt: skip
        served = dict(server.served)
    assert result.completed == 120 and result.errors == 0
    with RunStore(tmp_path / "f.db") as store:
        rows = store.calls()
        data = store.transitions()
    assert len(rows) == 120 and sorted(rows["call_id"]) == list(range(120))
    # Every request the server saw is one attempt of one call.
    assert rows["attempts"].sum() == sum(served.values())
    faults = sum(served.get(k, 0) for k in ("429", "500", "hang", "malformed"))
    assert rows["attempts"].sum() - len(rows) == faults
    # Empty answers are answered calls (visits) that pool into INVALID with their reason.
    empty = rows[rows["reason"] == "empty answer"]
    assert len(empty) == served["empty"] and (empty["target"] == "INVALID").all()
    assert data.total_calls == 120


def test_key_never_leaks(tmp_path, monkeypatch, caplog, capsys):
    key = "sk-test-LEAKCHECK-7f3a9c1d2e4b5a6f"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    caplog.set_level(logging.DEBUG)
    progress = io.StringIO()
    store_path = tmp_path / "leak.db"
    # The server echoes the Authorization header in 500 bodies and in answers, then refuses the
    # key (401).
    schedule = ["echo500"] * 6 + ["ok", "echoanswer"] * 10 + ["auth"] * 100
    with FaultServer(schedule) as server, pytest.raises(AuthenticationFailed) as caught:
        collect("word100", "openai/leaky", 200, store=store_path, api_base=server.api_base,
                run_id="leak", progress=progress, backoff=0.001, retries=2, concurrency=2)  # fmt: skip
    assert any(key in h for h in server.auth_headers)  # the key really was sent …
    message = str(caught.value)
    assert "authentication failed" in message and "OPENAI_API_KEY" in message
    dump = "\n".join(sqlite3.connect(store_path).iterdump())
    # Echoed error bodies and an answer that echoes the key were stored redacted.
    assert dump.count("[REDACTED]") >= 2 + 10
    out, err = capsys.readouterr()
    for name, text in [("exception", message + repr(caught.value)), ("store", dump),
                       ("progress", progress.getvalue()), ("logs", caplog.text),
                       ("stdout", out), ("stderr", err)]:  # fmt: skip
        assert key not in text, f"key leaked into {name}"
        assert "LEAKCHECK" not in text, f"key fragment leaked into {name}"
    assert "done" in progress.getvalue()
    with RunStore(store_path) as store:
        assert store.runs().loc[0, "status"] == "auth failed"


# -- command line -------------------------------------------------------------------------------
def test_cli_collect_simulated_and_export(tmp_path):
    from detailed_balance.cli import main

    db = tmp_path / "cli.db"
    args = ["collect", "--agent", "word100", "--model", "simulated/word100", "--calls", "200",
            "--store", str(db), "--run-id", "x", "--quiet", "--sim-states", "12",
            "--truth-out", str(tmp_path / "truth.csv"), "--concurrency", "16"]  # fmt: skip
    assert main(args) == 0
    assert main(args) == 2  # the run exists: the message says --resume
    assert main([*args[:6], "300", *args[7:], "--resume"]) == 0
    assert main(["export", "--store", str(db), "--out", str(tmp_path / "t.csv")]) == 0
    visits = (tmp_path / "visits.csv").read_text().splitlines()
    assert sum(float(line.split(",")[2]) for line in visits[1:]) == 300
    truth = (tmp_path / "truth.csv").read_text().splitlines()
    assert truth[0] == "state,potential" and len(truth) == 13
    assert main(["collect", "--agent", "nope", "--model", "simulated/word100", "--calls", "1"]) == 2


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resume_completes(tmp_path):
    db = tmp_path / "int.db"
    cmd = [sys.executable, "-m", "detailed_balance.cli", "collect", "--agent", "word100",
           "--model", "simulated/word100", "--calls", "600", "--store", str(db), "--run-id",
           "i", "--sim-latency", "0.01", "--concurrency", "8"]  # fmt: skip
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120

    def count() -> int:
        try:
            with sqlite3.connect(db) as con:
                return con.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    while count() < 100 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume --run-id i" in err
    stored = count()
    assert 100 <= stored < 600
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
    # Resume in-process (same run, same simulator settings as the CLI defaults).
    sim = SimulatedLLM.word100(states=40, seed=0, invalid_rate=0.05,
                               faults=Faults(latency=0.01))  # fmt: skip
    result = collect("word100", sim.model, 600, store=db, run_id="i", resume=True, simulator=sim)
    assert result.completed == 600 and result.new_calls == 600 - stored
    with sqlite3.connect(db) as con:
        ids = sorted(r[0] for r in con.execute("SELECT call_id FROM calls"))
    assert ids == list(range(600))


def test_run_config_in_the_store_holds_no_credentials(tmp_path):
    """Options the user passes through (extra litellm params, an api_base with a query key)
    reach the store's config column redacted."""
    sim = SimulatedLLM.word100(states=12, seed=5)
    secret = "AIza" + "Q" * 30  # a Google-style key shape
    collect(
        "word100", sim.model, 20, store=tmp_path / "c.db", run_id="c", simulator=sim,
        params={"aws_secret_access_key": "s3cr3t-value-123", "metadata": {"note": secret}},
    )  # fmt: skip
    dump = "\n".join(sqlite3.connect(tmp_path / "c.db").iterdump())
    assert "s3cr3t-value-123" not in dump and secret not in dump
    assert dump.count("[REDACTED]") >= 2
    assert cl.redact_known(f"answer {secret}", []) == "answer [REDACTED]"
