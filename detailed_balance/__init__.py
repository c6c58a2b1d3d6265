"""detailed-balance."""

from detailed_balance.simulation import (
    Simulation,
    load_peer_matrix,
    simulate,
    simulate_from_matrix,
)

__all__ = ["Simulation", "load_peer_matrix", "simulate", "simulate_from_matrix"]
