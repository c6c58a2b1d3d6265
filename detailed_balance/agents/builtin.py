"""The registry of agents: the built-in ones by name, and user agents as ``module:object``.

It lives apart from `spec` (what an agent is) because it imports the built-in agents, which
themselves import `spec`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from .spec import Agent
from .symreg import symreg_agent
from .word100 import word100_agent

BUILTIN_AGENTS: dict[str, Callable[..., Agent]] = {
    "word100": word100_agent,
    "symreg": symreg_agent,
}


def _import_from_cwd(module_name: str):
    """Import a module, also looking in the working directory (console scripts do not put it
    on sys.path, unlike ``python -m``), as ``uvicorn module:app`` does."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        cwd = os.getcwd()
        if cwd in sys.path:
            raise
        sys.path.insert(0, cwd)
        return importlib.import_module(module_name)


def load_agent(spec: str | Agent, **options) -> Agent:
    """An agent from a name (``word100``, ``symreg``) or ``module:object``.

    ``module:object`` names an `Agent` or a callable returning one (called with `options`).
    """
    if isinstance(spec, Agent):
        return spec
    if spec in BUILTIN_AGENTS:
        return BUILTIN_AGENTS[spec](**options)
    if ":" not in spec:
        raise ValueError(
            f"unknown agent {spec!r}; use word100, symreg or module:object (an Agent or a "
            f"function returning one, e.g. examples.custom_agent:city_agent)."
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = _import_from_cwd(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(
            f"agent {spec!r}: cannot import module {module_name!r} ({exc}); run from the "
            f"directory that contains it or install it."
        ) from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ValueError(f"agent {spec!r}: module {module_name!r} has no attribute {attr!r}.")
    agent = obj if isinstance(obj, Agent) else obj(**options) if callable(obj) else None
    if not isinstance(agent, Agent):
        raise ValueError(
            f"agent {spec!r} is not a detailed_balance.agents.Agent nor a function returning one."
        )
    return agent
