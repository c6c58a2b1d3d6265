"""Ground-truth simulators: transition counts from landscapes whose potential V is known.

Public API::

    simulate(n_states, transitions, ...)       # random graph + MH kernel (landscape.py)
    simulate_from_matrix(P, transitions, ...)  # counts from any row-stochastic matrix
    load_peer_matrix(path)                     # dense text matrices of other projects
    Simulation                                 # the data plus the truth (V, drive, kernel, π)
    stationary_distribution(P), make_state_names(n)
    simulate_panel(betas, landscapes=...)      # several simulated LLMs with known β (panel.py)
    Panel, neighbour_graph, metropolis_kernel, sample_counts
    metropolis_rates(v, a, b, ...)             # the one Metropolis–Hastings kernel (kernels.py)

`detailed_balance.agents.simulated` (the embedded simulated LLM) uses the same kernel.
"""

from .kernels import metropolis_rates, stationary_distribution
from .landscape import (
    Allocation,
    PotentialSpec,
    Simulation,
    load_peer_matrix,
    make_state_names,
    simulate,
    simulate_from_matrix,
)
from .panel import Panel, metropolis_kernel, neighbour_graph, sample_counts, simulate_panel

__all__ = [
    "Allocation",
    "Panel",
    "PotentialSpec",
    "Simulation",
    "load_peer_matrix",
    "make_state_names",
    "metropolis_kernel",
    "metropolis_rates",
    "neighbour_graph",
    "sample_counts",
    "simulate",
    "simulate_from_matrix",
    "simulate_panel",
    "stationary_distribution",
]
