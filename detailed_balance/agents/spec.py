"""What an agent is: data plus three functions.

An `Agent` turns a state into chat messages (`build_messages`), turns the LLM's answer text
into a state or an invalid verdict with a reason (`parse`), and names how the next prompt
state is chosen (`policy`): ``"uniform"`` over the valid states found so far (the paper's
scheme, seeded with the agent's seed states) or ``"chain"`` (each concurrent walker continues
from the state it just produced and restarts from a seed after an invalid answer).

Answers are untrusted text: `parse` must never evaluate them. Invalid answers pool into one
state, `INVALID` by default, and keep their reason.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

INVALID = "INVALID"
Policy = Literal["uniform", "chain"]
Messages = list[dict[str, str]]


class Parsed(NamedTuple):
    """The verdict on one answer: the target state, whether it is valid, and why not."""

    target: str
    valid: bool
    reason: str | None = None


@dataclass
class Agent:
    """An LLM-driven agent: ``build_messages(state)``, ``parse(answer, source)``, a policy.

    `seed_states` start the search; `invalid_state` is where invalid answers pool. `describe`
    is free-form provenance stored with each run (never put secrets in it).
    """

    name: str
    seed_states: Sequence[str]
    build_messages: Callable[[str], Messages]
    parse: Callable[[str, str], Parsed]
    policy: Policy = "uniform"
    invalid_state: str = INVALID
    describe: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.seed_states:
            raise ValueError(f"agent {self.name!r} needs at least one seed state.")
        if self.policy not in ("uniform", "chain"):
            raise ValueError(f"agent {self.name!r}: policy must be 'uniform' or 'chain'.")
        self.seed_states = [str(s) for s in self.seed_states]


class SourcePicker:
    """Chooses each call's prompt state from what the run has found so far.

    ``uniform``: uniformly over the distinct valid states found (seeds included), the paper's
    scheme. ``chain``: walker w continues from its last valid target. Randomness comes from the
    caller's generator so a run's choices are reproducible for a seed at concurrency 1.
    """

    def __init__(self, agent: Agent, found: Sequence[str] = (), chains: Sequence[str] = ()):
        self.agent = agent
        self.found: list[str] = []
        self._known: set[str] = set()
        for state in [*agent.seed_states, *found]:
            self.add(state)
        self.chains: dict[int, str] = dict(enumerate(chains))

    def add(self, state: str) -> bool:
        """Record a valid state; True when it is new."""
        if state in self._known or state == self.agent.invalid_state:
            return False
        self._known.add(state)
        self.found.append(state)
        return True

    def pick(self, walker: int, rng: random.Random) -> str:
        if self.agent.policy == "chain":
            state = self.chains.get(walker)
            if state is not None:
                return state
            return self.agent.seed_states[walker % len(self.agent.seed_states)]
        return self.found[rng.randrange(len(self.found))]

    def observe(self, walker: int, parsed: Parsed) -> None:
        if parsed.valid:
            self.add(parsed.target)
            self.chains[walker] = parsed.target
        else:
            self.chains.pop(walker, None)
