"""Transition data: the `Transitions` object, readers/writers, validation and graph views."""

from .files import (
    OutputError,
    atomic_path,
    prepare_dir,
    prepare_output,
    write_frame_atomic,
    write_text_atomic,
)
from .graph import component_sizes, strong_components, weak_components
from .io import read_transitions, read_visits
from .transitions import DEFAULT_LLM, DataError, Transitions

__all__ = [
    "DEFAULT_LLM",
    "DataError",
    "OutputError",
    "Transitions",
    "atomic_path",
    "component_sizes",
    "prepare_dir",
    "prepare_output",
    "read_transitions",
    "read_visits",
    "strong_components",
    "weak_components",
    "write_frame_atomic",
    "write_text_atomic",
]
