"""Transition data: the `Transitions` object, readers/writers, validation and graph views."""

from .io import read_transitions, read_visits
from .transitions import DEFAULT_LLM, DataError, Transitions

__all__ = ["DEFAULT_LLM", "DataError", "Transitions", "read_transitions", "read_visits"]
