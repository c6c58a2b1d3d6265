"""The LLM side: agents, the litellm collector, the SQLite run store, the simulated LLM.

Public API::

    Agent, Parsed, INVALID                       # what an agent is (spec)
    load_agent, BUILTIN_AGENTS                   # agents by name or module:object
    word100_agent, symreg_agent                  # built-in agents
    SimulatedLLM, Faults                         # the embedded simulated LLM (known landscape)
    collect, collect_async, CollectResult        # the collector
    collect_simulated_demo                       # a few thousand simulated calls for demos
    RunStore, StoreError                         # the run store (SQLite)
    redact                                       # remove secrets from text

Importing this package neither imports nor configures litellm; that happens on first use.
"""

from .builtin import BUILTIN_AGENTS, load_agent
from .client import AuthenticationFailed, redact
from .collector import CollectResult, collect, collect_async, collect_simulated_demo
from .simulated import Faults, SimulatedLLM
from .spec import INVALID, Agent, Parsed
from .store import RunStore, StoreError
from .symreg import ExpressionError, canonicalise, symreg_agent
from .word100 import letter_sum, word100_agent

__all__ = [
    "BUILTIN_AGENTS",
    "INVALID",
    "Agent",
    "AuthenticationFailed",
    "CollectResult",
    "ExpressionError",
    "Faults",
    "Parsed",
    "RunStore",
    "SimulatedLLM",
    "StoreError",
    "canonicalise",
    "collect",
    "collect_async",
    "collect_simulated_demo",
    "letter_sum",
    "load_agent",
    "redact",
    "symreg_agent",
    "word100_agent",
]
