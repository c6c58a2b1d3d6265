"""detailed-balance.

The simulator's names are re-exported lazily (module `__getattr__`): importing the package (as
the `detailed-balance` command does for ``--help``) does not import pandas, SciPy or PyMC.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Simulation", "load_peer_matrix", "simulate", "simulate_from_matrix"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("detailed_balance.simulation"), name)
    raise AttributeError(f"module 'detailed_balance' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
