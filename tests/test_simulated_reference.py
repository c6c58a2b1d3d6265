"""The simulated LLM's seeded outputs are fixed: exact kernels and the first 5,000 answers for
seeds 0..3 of both built-in landscapes, and a small run through the litellm provider, against
values recorded before `agents/simulated.py` was split (issue 12: no behaviour change)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import detailed_balance.agents as agents
import detailed_balance.agents.simulated as simulated
from detailed_balance.agents import Faults, RunStore, SimulatedLLM, collect

# (task, seed) → (kernel[0, :3], trace of the kernel, sha256[:16] of the first 5,000 answers)
REFERENCE = {
    ("word100", 0): ([0.22007144, 0.03103448, 0.00086057], 9.677080678488133, "136898eb5e6852e9"),
    ("word100", 1): ([0.73337062, 0.03103448, 0.03103448], 9.27638134163145, "5da93b6f7bd468a6"),
    ("word100", 2): ([0.74569221, 0.00087755, 0.0015365], 9.273498634380115, "29729f3a96033ecd"),
    ("word100", 3): ([0.46263282, 0.03103448, 0.00173058], 9.217889630198025, "1a33e91cb904c09f"),
    ("symreg", 0): ([0.78785898, 0.00237918, 0.00404311], 10.99986657299188, "2822dacd7164c987"),
    ("symreg", 1): ([0.59650895, 0.0019762, 0.03448276], 10.502913329766693, "947114dfef170aac"),
    ("symreg", 2): ([0.42844984, 0.00863626, 0.02218793], 10.379271080799782, "4977dae51a9c639f"),
    ("symreg", 3): ([0.54198698, 0.01892741, 0.00836146], 9.285862228540145, "58e2b60bfc712de5"),
}  # fmt: skip


def _simulator(task: str, seed: int) -> SimulatedLLM:
    if task == "word100":
        return SimulatedLLM.word100(states=30, seed=seed, invalid_rate=0.1, drive=0.5 * (seed % 2))
    return SimulatedLLM.symreg(seed=seed)


def _prompt(task: str, state: str) -> list[dict]:
    if task == "word100":
        text = f"The letters of the word {state} add up to 100."
    else:
        text = f"Current formula: {state}"
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(("task", "seed"), sorted(REFERENCE))
def test_seeded_kernel_and_answers_are_unchanged(task, seed):
    row, trace, answers = REFERENCE[task, seed]
    sim = _simulator(task, seed)
    kernel = sim.kernel().to_numpy()
    assert kernel.shape == (30, 31)
    np.testing.assert_allclose(kernel[0, :3], row, rtol=0, atol=5e-9)
    assert np.trace(kernel) == pytest.approx(trace, rel=1e-12)
    np.testing.assert_allclose(kernel.sum(axis=1), 1.0, atol=1e-12)
    prompts = [_prompt(task, s) for s in sim.states]
    text = "\n".join(sim.answer(prompts[c % len(prompts)], c) for c in range(5000))
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == answers


def test_run_through_the_litellm_provider_is_unchanged(tmp_path):
    sim = SimulatedLLM.word100(
        states=10,
        seed=2,
        invalid_rate=0.1,
        faults=Faults(server_error=0.2, rate_limit=0.1, retry_after=0.0),
    )
    result = collect("word100", sim.model, 300, store=tmp_path / "runs.db", simulator=sim,
                     run_id="x", concurrency=8, seed=2)  # fmt: skip
    assert (result.completed, result.errors) == (300, 0)
    with RunStore(tmp_path / "runs.db") as store:
        counts = store.transitions().counts.to_csv()
    assert hashlib.sha256(counts.encode()).hexdigest()[:16] == "01a0d53f9af03a64"


def test_public_names_stay_where_they_were():
    assert agents.SimulatedLLM is simulated.SimulatedLLM
    assert agents.Faults is simulated.Faults
    for name in ("PROVIDER", "active_simulator", "ensure_registered", "register_price",
                 "WORD100_GARBAGE", "SYMREG_GARBAGE", "SYMREG_VOCABULARY"):  # fmt: skip
        assert hasattr(simulated, name), name
    assert simulated.PROVIDER == "simulated"
    assert len(simulated.SYMREG_VOCABULARY) == 30
