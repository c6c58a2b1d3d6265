"""The symbolic-regression agent: expressions in x and parameters p1..p9, fitted to 1-D data.

Safety first: an answer is untrusted text. It is parsed by the whitelist parser of
`detailed_balance.features.expressions` (Python's `ast`, bounded size; nothing is ever passed
to `eval`, `exec`, `compile` or sympy) and evaluated by its numpy tree walker. States are the
canonical expression strings of `features.expressions.canonicalise`.

The score of a state is log10 of the mean squared error after fitting the parameters by
`scipy.optimize.least_squares` under a time cap (lower is better).

The bundled data set (`data/damped_oscillator.csv`) is a damped oscillator
y(t) = 1.0 · exp(−0.3 t) · cos(2.0 t) + ε, ε ~ N(0, 0.02²), at 100 points t ∈ [0, 10];
`damped_oscillator()` regenerates it exactly (seed 20251210). Users can pass their own CSV
with columns x,y.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from detailed_balance.features.expressions import (
    MAX_CHARS,
    ExpressionError,
    canonicalise,
    evaluate,
    n_parameters,
    parse_expression,
)

from .spec import INVALID, Agent, Messages, Parsed

MAX_PARAMETERS = 9
MSE_FLOOR = 1e-30
SEED_EXPRESSION = "p1 * x + p2"
PROMPT = (
    "We are searching for a formula y = f(x) that fits a data set. Parameters p1, p2, ..., p9 "
    "are fitted to the data automatically.\n"
    "Current formula: {expression}\n"
    "Its score (log10 of the mean squared error; lower is better): {score}\n"
    "Propose a different formula that may fit better. Use x, p1..p9, numbers, + - * / **, "
    "and the functions exp, log, sqrt, sin, cos, tanh, abs. Answer with the formula only."
)
PROMPT_STATE = re.compile(r"Current formula: (.+)")


# -- parsing -------------------------------------------------------------------------------------
def extract_expression(answer: str) -> str:
    """The expression part of an answer: code fences, ``y =``/``f(x) =`` prefixes removed."""
    text = answer.strip().replace("```python", "").replace("```", "").strip("` \n\t")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    return text.strip().rstrip(".;").strip()


# -- fitting ---------------------------------------------------------------------------------
class _TimeUp(Exception):
    pass


@dataclass(frozen=True)
class Fit:
    """A fitted expression: parameters and score = log10 MSE (inf when it cannot be fitted)."""

    expression: str
    params: tuple[float, ...]
    mse: float
    score: float


def fit_expression(
    expression: str, x: np.ndarray, y: np.ndarray, *, time_cap: float = 0.5, starts: int = 3
) -> Fit:
    """Fit p1..pk by least squares (several starts, stopped at `time_cap` seconds)."""
    tree = parse_expression(expression)
    k = n_parameters(tree)
    if k > MAX_PARAMETERS:
        raise ExpressionError(f"more than {MAX_PARAMETERS} parameters")

    def mse_of(params: np.ndarray) -> float:
        r = evaluate(tree, x, params) - y
        return float(np.mean(r * r)) if np.all(np.isfinite(r)) else math.inf

    if k == 0:
        mse = mse_of(np.zeros(0))
        return Fit(expression, (), mse, _log10(mse))
    deadline = time.perf_counter() + time_cap
    best_p, best = np.ones(k), mse_of(np.ones(k))

    def residuals(params: np.ndarray) -> np.ndarray:
        nonlocal best_p, best
        if time.perf_counter() > deadline:
            raise _TimeUp
        r = evaluate(tree, x, params) - y
        if not np.all(np.isfinite(r)):
            return np.full_like(y, 1e6)
        value = float(np.mean(r * r))
        if value < best:
            best_p, best = params.copy(), value
        return r

    rng = np.random.default_rng(0)
    inits = [np.ones(k), *(rng.normal(0.0, 2.0, k) for _ in range(starts - 1))]
    for p0 in inits:
        try:
            least_squares(residuals, p0, method="lm" if len(y) >= k else "trf", max_nfev=200 * k)
        except _TimeUp:
            break
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
    return Fit(expression, tuple(float(p) for p in best_p), best, _log10(best))


def _log10(mse: float) -> float:
    """log10 MSE, floored at MSE = 1e-30 so an exact fit still has a finite score."""
    return math.log10(max(mse, MSE_FLOOR)) if math.isfinite(mse) else math.inf


# -- data --------------------------------------------------------------------------------------
def damped_oscillator(n: int = 100, seed: int = 20251210, noise: float = 0.02) -> pd.DataFrame:
    """y = exp(−0.3 t) cos(2 t) + N(0, noise²) at n points t ∈ [0, 10] (the bundled data)."""
    t = np.linspace(0.0, 10.0, n)
    y = np.exp(-0.3 * t) * np.cos(2.0 * t) + np.random.default_rng(seed).normal(0.0, noise, n)
    return pd.DataFrame({"x": t, "y": np.round(y, 6)})


@lru_cache(maxsize=4)
def load_data(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x, y from a CSV with columns x,y (the bundled damped oscillator when `path` is None)."""
    if path is None:
        source = resources.files(__package__).joinpath("data/damped_oscillator.csv")
        with resources.as_file(source) as file:
            frame = pd.read_csv(file, comment="#")
        origin = "bundled damped_oscillator.csv"
    else:
        if not Path(path).exists():
            raise FileNotFoundError(f"symreg data file {path} does not exist.")
        if Path(path).is_dir():
            raise ValueError(f"{path} is a directory, expected a symreg data CSV file (x,y).")
        frame = pd.read_csv(path, comment="#")
        origin = path
    if not {"x", "y"} <= set(frame.columns):
        raise ValueError(f"{origin}: symreg data needs columns x,y (found {list(frame.columns)}).")
    x = pd.to_numeric(frame["x"], errors="coerce").to_numpy(float)
    y = pd.to_numeric(frame["y"], errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise ValueError(
            f"{origin}: row {int(np.flatnonzero(bad)[0]) + 2} has a non-numeric x or y."
        )
    if len(x) < 3:
        raise ValueError(f"{origin}: symreg data needs at least 3 rows.")
    return x, y


# -- the agent ---------------------------------------------------------------------------------
class SymbolicRegression:
    """Prompt building and answer parsing for one data set, with a per-state fit cache."""

    def __init__(self, data: str | None = None, time_cap: float = 0.5) -> None:
        self.x, self.y = load_data(data)
        self.time_cap = time_cap
        self._fits: dict[str, Fit] = {}

    def fit(self, state: str) -> Fit:
        if state not in self._fits:
            self._fits[state] = fit_expression(state, self.x, self.y, time_cap=self.time_cap)
        return self._fits[state]

    def score(self, state: str) -> float:
        return self.fit(state).score

    def build_messages(self, state: str) -> Messages:
        score = self.score(state)
        return [{"role": "user", "content": PROMPT.format(expression=state, score=f"{score:.3f}")}]

    def parse(self, answer: str | None, source: str) -> Parsed:
        if not answer or not answer.strip():
            return Parsed(INVALID, False, "empty answer")
        try:
            state = canonicalise(extract_expression(answer[: 4 * MAX_CHARS]))
            fit = self.fit(state)
        except ExpressionError as exc:
            return Parsed(INVALID, False, str(exc))
        if not math.isfinite(fit.score):
            return Parsed(INVALID, False, "expression is not finite on the data")
        if state == source:
            return Parsed(INVALID, False, "same as the prompt expression")
        return Parsed(state, True, None)


def symreg_agent(
    *,
    data: str | None = None,
    seed: str = SEED_EXPRESSION,
    time_cap: float = 0.5,
    policy: str = "uniform",
) -> Agent:
    """The symbolic-regression agent on the bundled damped oscillator (or a CSV x,y)."""
    task = SymbolicRegression(data, time_cap)
    return Agent(
        name="symreg",
        seed_states=[canonicalise(seed)],
        build_messages=task.build_messages,
        parse=task.parse,
        policy=policy,  # type: ignore[arg-type]
        describe={"data": data or "bundled:damped_oscillator.csv", "time_cap": time_cap},
    )
