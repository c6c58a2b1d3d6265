"""The built-in simulated LLMs' presets: the symbolic-regression vocabulary, the garbage
answers of each task, and the seeded draw of a landscape's V (see `simulated.SimulatedLLM.word100`
and `.symreg`, which build their simulators from these).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

WORD100_GARBAGE = (
    "I'm sorry, I can't help with that.",
    "XQZVBW",
    "HELLO",
    "Sure! Here is a word whose letters add up to 100: ",
    "",
)
SYMREG_GARBAGE = (
    "p1 * x +",
    "__import__('os').system('echo pwned')",
    "x.__class__",
    "p1 * foo(x)",
    "Here is a better formula: it depends on the data.",
    "(lambda: x)()",
)
# A fixed vocabulary for the simulated symbolic-regression LLM (canonical forms).
SYMREG_VOCABULARY = (
    "p1 * x + p2",
    "p1",
    "p1 * x",
    "p1 * x ** 2 + p2 * x + p3",
    "p1 * x ** 3 + p2 * x ** 2 + p3 * x + p4",
    "p1 * exp(-p2 * x)",
    "p1 * exp(-p2 * x) + p3",
    "p1 * cos(p2 * x)",
    "p1 * sin(p2 * x)",
    "p1 * cos(p2 * x + p3)",
    "p1 * sin(p2 * x) + p3 * cos(p4 * x)",
    "p1 * exp(-p2 * x) * cos(p3 * x)",
    "p1 * exp(-p2 * x) * cos(p3 * x + p4)",
    "p1 * exp(-p2 * x) * sin(p3 * x)",
    "p1 * exp(-p2 * x) * cos(p3 * x) + p4",
    "exp(-p1 * x) * cos(p2 * x)",
    "p1 / (1 + p2 * x)",
    "p1 / (1 + p2 * x ** 2)",
    "p1 * cos(p2 * x) / (1 + p3 * x)",
    "p1 * tanh(p2 * x) + p3",
    "p1 * cos(p2 * x) * tanh(p3 * x)",
    "p1 * log(1 + p2 * x)",
    "p1 * sqrt(x) + p2",
    "p1 * x * exp(-p2 * x)",
    "p1 * cos(p2 * x) * exp(-p3 * x ** 2)",
    "p1 * cos(p2 * x) - p3 * x",
    "p1 * exp(-p2 * x) * cos(p3 * x) * cos(p4 * x)",
    "p1 * abs(cos(p2 * x)) * exp(-p3 * x)",
    "p1 * cos(p2 * x) ** 2 * exp(-p3 * x)",
    "(p1 + p2 * x) * exp(-p3 * x) * cos(p4 * x)",
)


def _potential(
    vocabulary: list[str], potential, spread: float, rng: np.random.Generator
) -> np.ndarray:
    if potential is None:
        return rng.normal(0.0, spread, len(vocabulary))
    if isinstance(potential, Mapping):
        return np.array([float(potential[s]) for s in vocabulary])
    raise ValueError("potential must be a mapping state → V (or 'score' for symreg).")
