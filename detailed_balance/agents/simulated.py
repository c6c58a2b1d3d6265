"""The embedded simulated LLM: a litellm provider with a known landscape.

`SimulatedLLM` answers the built-in agents' prompts (and any agent whose prompt names its
state in a way a regular expression can find) by sampling from a Metropolis–Hastings kernel
over a fixed vocabulary of states, so the true potential is known:

    T(f→g) = (1 − ε) · min(1/d, exp((V_f − V_g)/τ + A_fg) / d)      for g ≠ f,

with d = K − 1 (every state can propose every other), τ the temperature, A_fg = −A_gf an
optional antisymmetric drive that breaks detailed balance ("driven"; A = 0 is "reversible"),
and ε the invalid-answer rate. With probability (1 − ε)(1 − Σ_g T) the answer repeats the
prompt state (the agent rejects it as "same as the prompt"), and with probability ε it is
garbage text (not a state). For pairs, log T(f→g) − log T(g→f) = (V_f − V_g)/τ + A_fg: the
identifiable potential is βV = V/τ, which `true_potential()` returns (mean 0).

Every call goes through `litellm.acompletion` (provider ``simulated/…``). Answers are
deterministic: call c of a run draws from ``random.Random(f"{seed}/{c}")``, so the
answer to a given prompt does not depend on concurrency or retries; the call number comes from
``metadata={"call": c, "attempt": a}`` (our collector passes it; other callers get a counter).
Injected faults (rate limits with Retry-After, server errors, timeouts) draw from
``(seed, c, attempt)`` so that retries can succeed; `latency` adds an exponential delay.

The provider is registered lazily under the name ``simulated`` the first time a simulator is
activated (never at import). Which simulator answers ``simulated/NAME`` is looked up in a
context variable set by `SimulatedLLM.active()`, so tests and runs do not leak into each other;
``simulated/word100`` and ``simulated/symreg`` fall back to the default landscapes.

This module is the simulator (its truth, answering rule, faults and activation); the built-in
vocabularies, garbage answers and the seeded draw of V are in `_simulated_presets`, and the
litellm `CustomLLM` that renders an answer as a litellm response is in `_simulated_provider`.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._simulated_presets import SYMREG_GARBAGE, SYMREG_VOCABULARY, WORD100_GARBAGE, _potential
from ._simulated_provider import PROVIDER, _provider

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# The simulators visible to the provider in this context: model name → SimulatedLLM.
_ACTIVE: ContextVar[Mapping[str, SimulatedLLM] | None] = ContextVar("_simulated_llms", default=None)
_REGISTERED = False


@dataclass
class Faults:
    """Injected failures per attempt: probabilities of each kind, and answer latency.

    `retry_after` is the Retry-After (seconds) sent with injected rate limits; `latency` is the
    mean of an exponential delay added to every answer (0 = answer at once).
    """

    rate_limit: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    latency: float = 0.0
    retry_after: float = 0.01

    @property
    def total(self) -> float:
        return self.rate_limit + self.server_error + self.timeout


@dataclass
class SimulatedLLM:
    """A known landscape over `states` answering prompts through litellm (see module doc).

    Build with `SimulatedLLM.word100(...)`, `SimulatedLLM.symreg(...)` or directly with any
    vocabulary and a `state_pattern` whose first group finds the prompt's state in the last
    user message.
    """

    states: Sequence[str]
    potential: np.ndarray
    state_pattern: re.Pattern
    name: str = "custom"
    temperature: float = 1.0
    drive: float = 0.0
    invalid_rate: float = 0.0
    garbage: Sequence[str] = ("(no answer)",)
    seed: int = 0
    faults: Faults = field(default_factory=Faults)
    # USD per token (in and out) that the provider reports as each call's cost; with
    # report_cost=False litellm's cost tracking prices the calls from its price map instead
    # (slower; `register_price` registers 0 for simulated models).
    price_per_token: float = 0.0
    report_cost: bool = True
    _counter: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def __post_init__(self) -> None:
        self.states = [str(s) for s in self.states]
        if len(set(self.states)) != len(self.states) or len(self.states) < 2:
            raise ValueError("a simulated LLM needs at least 2 distinct states.")
        self.potential = np.asarray(self.potential, dtype=float)
        if self.potential.shape != (len(self.states),) or not np.isfinite(self.potential).all():
            raise ValueError("potential must be one finite number per state.")
        if not self.temperature > 0:
            raise ValueError("temperature must be > 0.")
        if not 0 <= self.invalid_rate < 1:
            raise ValueError("invalid_rate must be in [0, 1).")
        self.state_pattern = re.compile(self.state_pattern)
        self._index = {s: i for i, s in enumerate(self.states)}
        self._kernel = self._build_kernel()
        # Cumulative rows as Python lists: per-call sampling is a bisect, no numpy call.
        self._rows = np.cumsum(self._kernel, axis=1).tolist()

    # -- construction of the built-in landscapes ----------------------------------------------
    @classmethod
    def word100(
        cls,
        *,
        states: int = 40,
        seed: int = 0,
        spread: float = 1.5,
        potential: Mapping[str, float] | None = None,
        **options,
    ) -> SimulatedLLM:
        """Real words summing to 100: BUZZY, the paper's words, and a seeded sample of others.

        `potential` maps words to V; otherwise V ~ Normal(0, spread²) drawn from `seed`.
        """
        from .word100 import PROMPT_STATE, words_summing_to_100

        rng = np.random.default_rng([seed, 100])
        pool = np.array(words_summing_to_100())
        fixed = ["BUZZY", "ATTITUDE", "TURKEY", "PERSONAL", "PROBLEMS", "DISCIPLINE"]
        if potential is not None:
            vocabulary = list(potential)
        else:
            rest = rng.permutation(pool[~np.isin(pool, fixed)])
            vocabulary = (fixed + rest.tolist())[: max(states, 2)]
        values = _potential(vocabulary, potential, spread, rng)
        return cls(
            vocabulary,
            values,
            PROMPT_STATE,
            name="word100",
            garbage=WORD100_GARBAGE,
            seed=seed,
            **options,
        )

    @classmethod
    def symreg(
        cls,
        *,
        seed: int = 0,
        spread: float = 1.5,
        potential: Mapping[str, float] | str | None = None,
        data: str | None = None,
        **options,
    ) -> SimulatedLLM:
        """A fixed set of 30 expressions. ``potential="score"`` uses V = log10 MSE on the data
        (the LLM then descends the fit error); otherwise V ~ Normal(0, spread²) or a mapping."""
        from .symreg import PROMPT_STATE, canonicalise, fit_expression, load_data

        rng = np.random.default_rng([seed, 200])
        vocabulary = list(SYMREG_VOCABULARY)
        if potential == "score":
            x, y = load_data(data)
            values = np.array([fit_expression(e, x, y).score for e in vocabulary])
        else:
            if isinstance(potential, Mapping):
                vocabulary = [canonicalise(e) for e in potential]
                potential = dict(zip(vocabulary, potential.values(), strict=True))
            values = _potential(vocabulary, potential, spread, rng)
        return cls(
            vocabulary,
            values,
            PROMPT_STATE,
            name="symreg",
            garbage=SYMREG_GARBAGE,
            seed=seed,
            **options,
        )

    @classmethod
    def for_model(cls, model: str) -> SimulatedLLM:
        """The default simulator for ``simulated/word100`` or ``simulated/symreg``."""
        task = model.split("/", 1)[-1]
        if task == "word100":
            return cls.word100()
        if task == "symreg":
            return cls.symreg()
        raise ValueError(
            f"no simulated LLM is active for {model!r}; the built-in ones are simulated/word100 "
            f"and simulated/symreg (or activate your own SimulatedLLM)."
        )

    @property
    def model(self) -> str:
        """The litellm model name this simulator answers."""
        return f"{PROVIDER}/{self.name}"

    # -- the truth ---------------------------------------------------------------------------
    def _drive_matrix(self) -> np.ndarray:
        k = len(self.states)
        if self.drive == 0:
            return np.zeros((k, k))
        upper = np.triu(np.random.default_rng([self.seed, 300]).normal(0, self.drive, (k, k)), 1)
        return upper - upper.T

    def _build_kernel(self) -> np.ndarray:
        """Rows: prompt state; columns: answered state, the last column = garbage (escape)."""
        # The package's one Metropolis–Hastings kernel, on the complete graph (d = K − 1).
        from detailed_balance.simulation import metropolis_rates

        k = len(self.states)
        a, b = np.triu_indices(k, 1)
        src, dst, rate = metropolis_rates(
            self.potential / self.temperature,
            a,
            b,
            drive=self._drive_matrix()[a, b],
            degree=np.full(k, k - 1),
            move_probability=1.0 - self.invalid_rate,
        )
        moves = np.zeros((k, k))
        moves[src, dst] = rate
        stay = (1.0 - self.invalid_rate) - moves.sum(axis=1)
        kernel = np.concatenate([moves, np.full((k, 1), self.invalid_rate)], axis=1)
        kernel[np.arange(k), np.arange(k)] = np.maximum(stay, 0.0)
        return kernel

    def kernel(self) -> pd.DataFrame:
        """The exact per-call answer probabilities: rows prompt state, columns answered state
        (the diagonal = the prompt repeated) and ``INVALID`` (garbage)."""
        columns = [*self.states, "INVALID"]
        return pd.DataFrame(
            self._kernel, index=pd.Index(self.states, name="source"), columns=columns
        )

    def true_potential(self) -> pd.Series:
        """βV = V/τ per state, mean 0 (what a fit of detailed balance estimates)."""
        beta_v = self.potential / self.temperature
        return pd.Series(
            beta_v - beta_v.mean(), index=pd.Index(self.states, name="state"), name="potential"
        )

    def truth_table(self) -> pd.DataFrame:
        """``state, potential`` (as `detailed_balance.simulate` writes truth.csv)."""
        truth = self.true_potential()
        return pd.DataFrame(
            {"state": truth.index.to_numpy(dtype=object), "potential": truth.to_numpy()}
        )

    def describe(self) -> dict:
        """Provenance for the run store (no secrets)."""
        return {
            "name": self.name,
            "states": len(self.states),
            "temperature": self.temperature,
            "drive": self.drive,
            "invalid_rate": self.invalid_rate,
            "seed": self.seed,
            "faults": vars(self.faults),
        }

    # -- answering ---------------------------------------------------------------------------
    def prompt_state(self, messages: list) -> str | None:
        """The state named in the last user message (None when the pattern does not match)."""
        for message in reversed(messages):
            if message.get("role") == "user":
                found = self.state_pattern.search(str(message.get("content") or ""))
                return found.group(1).strip() if found else None
        return None

    def answer(self, messages: list, call: int) -> str:
        """The answer to a prompt for call number `call` (deterministic for the seed)."""
        rng = random.Random(f"{self.seed}/{call}")
        u = rng.random()
        source = self.prompt_state(messages)
        row = self._index.get(source) if source is not None else None
        if row is None:
            # A prompt outside the vocabulary: answer a uniformly chosen state.
            return self.states[int(u * len(self.states))]
        column = bisect.bisect_right(self._rows[row], u)
        if column >= len(self.states):
            return self.garbage[rng.randrange(len(self.garbage))]
        return self.states[column]

    def fault(self, call: int, attempt: int) -> str | None:
        """Which injected fault (if any) this attempt of this call meets."""
        f = self.faults
        if f.total <= 0:
            return None
        u = random.Random(f"{self.seed}/{call}/{attempt}/fault").random()
        for kind, p in (
            ("rate_limit", f.rate_limit),
            ("server_error", f.server_error),
            ("timeout", f.timeout),
        ):
            if u < p:
                return kind
            u -= p
        return None

    def latency(self, call: int, attempt: int) -> float:
        if self.faults.latency <= 0:
            return 0.0
        rng = random.Random(f"{self.seed}/{call}/{attempt}/latency")
        return rng.expovariate(1.0 / self.faults.latency)

    @contextlib.contextmanager
    def active(self) -> Iterator[SimulatedLLM]:
        """Make this simulator answer `self.model` within the block (and tasks started in it)."""
        ensure_registered()
        current = dict(_ACTIVE.get() or {})
        current[self.model] = self
        token = _ACTIVE.set(current)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


def active_simulator(model: str) -> SimulatedLLM:
    """The simulator answering `model` here: the activated one, else the built-in default."""
    name = model if model.startswith(f"{PROVIDER}/") else f"{PROVIDER}/{model}"
    current = _ACTIVE.get() or {}
    if name in current:
        return current[name]
    return _default(name)


_DEFAULTS: dict[str, SimulatedLLM] = {}


def _default(name: str) -> SimulatedLLM:
    if name not in _DEFAULTS:
        _DEFAULTS[name] = SimulatedLLM.for_model(name)
    return _DEFAULTS[name]


def ensure_registered() -> None:
    """Register the ``simulated`` provider with litellm once (lazily, idempotently)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import litellm

    if not any(item.get("provider") == PROVIDER for item in litellm.custom_provider_map):
        litellm.custom_provider_map = [
            *litellm.custom_provider_map,
            {"provider": PROVIDER, "custom_handler": _provider(active_simulator)},
        ]
        litellm.utils.custom_llm_setup()
    _REGISTERED = True


_PRICED: set[str] = set()


def register_price(model: str) -> None:
    """Tell litellm that a ``simulated/…`` model costs 0 per token (once per model name).

    Without an entry litellm's cost tracking searches its whole price map by pattern on every
    call (about a third of its per-call overhead). Prices for cost-cap tests are passed per
    call instead (``input_cost_per_token``), so nothing global depends on a test.
    """
    if model in _PRICED:
        return
    import logging

    ensure_registered()
    import litellm

    entry = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}
    entry |= {"litellm_provider": PROVIDER, "mode": "chat", "max_tokens": 4096}
    logger = logging.getLogger("LiteLLM")
    level = logger.level
    logger.setLevel(logging.ERROR)  # register_model warns that cache prices default to 0
    try:
        litellm.register_model({model: entry})
    finally:
        logger.setLevel(level)
    _PRICED.add(model)
