"""Feature tables: where state features come from, their checks, and their standardisation.

A feature source is one of

* ``"builtin:words"`` / ``"builtin:expressions"`` — the built-in featurisers (`builtin.py`);
* a path to a CSV file with a ``state`` column and one numeric column per feature;
* a `pandas.DataFrame` indexed by state (or with a ``state`` column), numeric columns;
* a callable ``state -> dict[feature name, number]`` (called once per state).

`resolve_features(source, states)` returns a float DataFrame indexed exactly by `states`.
Every problem (missing state, non-numeric value, NaN, duplicate state) is a `DataError` that
names the file, the row or state, and the fix.

`Standardiser` centres and scales the features over the modelled states so the sampler sees
unit-scale columns (and one prior scale fits all), and maps θ back to original units:
V = Σ_k z_k θ*_k with z_k = (x_k − μ_k)/s_k equals Σ_k x_k (θ*_k / s_k) + const, so
θ_k = θ*_k / s_k (per unit of feature k) and the constant is absorbed by the gauge of V.
Constant columns carry no information about differences of V and are dropped (listed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detailed_balance.data import DataError

from .builtin import BUILTIN

FeatureSource = str | Path | pd.DataFrame | Callable[[str], dict]


def describe_source(source: Any) -> str:
    """A short text for provenance: the builtin name, the file path, or the kind of object."""
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, pd.DataFrame):
        return "table"
    return "callable"


def resolve_features(source: FeatureSource, states: Sequence[str]) -> pd.DataFrame:
    """Features of `states` (rows in that order, float columns) from any feature source."""
    names = pd.Index([str(s) for s in states], dtype=object, name="state")
    if isinstance(source, str) and source.startswith("builtin:"):
        kind = source.split(":", 1)[1]
        if kind not in BUILTIN:
            raise DataError(
                f"unknown built-in featuriser {source!r}; use one of "
                f"{', '.join('builtin:' + k for k in BUILTIN)} or a CSV file."
            )
        return BUILTIN[kind](names)
    if isinstance(source, str | Path):
        return _align(read_feature_csv(source), names, str(source))
    if isinstance(source, pd.DataFrame):
        return _align(_check_table(source, "the feature table"), names, "the feature table")
    if callable(source):
        return _from_callable(source, names)
    raise TypeError(
        f"features must be 'builtin:words', 'builtin:expressions', a CSV path, a DataFrame "
        f"or a callable state -> dict; got {type(source).__name__}."
    )


def read_feature_csv(path: str | Path) -> pd.DataFrame:
    """A feature CSV (``state`` + numeric columns) as a checked DataFrame indexed by state."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: feature file not found (give a CSV with a `state` column).")
    try:
        frame = pd.read_csv(path, dtype={"state": str}, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc}).") from None
    return _check_table(frame, str(path), row_offset=2)


def _check_table(frame: pd.DataFrame, where: str, row_offset: int = 0) -> pd.DataFrame:
    """Index by state, check every value is a finite number; messages name row and column."""
    if "state" in frame.columns:
        frame = frame.set_index("state")
    elif frame.index.name != "state" and pd.api.types.is_numeric_dtype(frame.index.dtype):
        raise DataError(
            f"{where}: no `state` column; the first column must be `state` (the state names as "
            f"in the transition data), then one numeric column per feature."
        )
    frame = frame.copy()
    frame.index = pd.Index(frame.index.astype(str), dtype=object, name="state")
    if frame.shape[1] == 0:
        raise DataError(f"{where}: no feature columns; add one numeric column per feature.")
    dup = frame.index.duplicated()
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        raise DataError(
            f"{where}: state {frame.index[k]!r} appears twice (row {k + row_offset}); "
            f"give one row per state."
        )
    out = {}
    for col in frame.columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: feature {col!r} of state {frame.index[k]!r} (row {k + row_offset}) is "
                f"{frame[col].iloc[k]!r}, not a finite number; every feature must be numeric "
                f"(encode categories as 0/1 columns, fill missing values)."
            )
        out[str(col)] = values
    return pd.DataFrame(out, index=frame.index)


def _align(table: pd.DataFrame, names: pd.Index, where: str) -> pd.DataFrame:
    missing = names.difference(table.index)
    if len(missing):
        shown = ", ".join(repr(s) for s in missing[:5])
        raise DataError(
            f"{where}: no features for {len(missing)} state(s) of the data ({shown}"
            f"{', …' if len(missing) > 5 else ''}); add a row for each state."
        )
    return table.reindex(names)


def _from_callable(func: Callable[[str], dict], names: pd.Index) -> pd.DataFrame:
    records = []
    for state in names:  # user code: one call per state
        value = func(state)
        if not isinstance(value, dict):
            raise DataError(
                f"the feature function returned {type(value).__name__} for state {state!r}; "
                f"it must return a dict of feature name -> number."
            )
        records.append(value)
    frame = pd.DataFrame.from_records(records, index=names)
    return _check_table(frame, "the feature function's output")


@dataclass(frozen=True)
class Standardiser:
    """Centre/scale of each kept feature over the modelled states (see the module docstring)."""

    names: tuple[str, ...]  # kept features, in column order
    means: np.ndarray
    scales: np.ndarray
    dropped: tuple[str, ...]  # constant features (no information about differences of V)

    @classmethod
    def fit(cls, table: pd.DataFrame) -> Standardiser:
        values = table.to_numpy(dtype=float)
        scales = values.std(axis=0) if len(values) else np.zeros(values.shape[1])
        keep = scales > 1e-12 * np.maximum(1.0, np.abs(values).max(axis=0, initial=0.0))
        if not keep.any():
            raise DataError(
                "every feature is constant over the modelled states, so none can explain "
                "differences of V; give features that vary between states."
            )
        cols = np.asarray(table.columns, dtype=object)
        return cls(
            names=tuple(str(c) for c in cols[keep]),
            means=values.mean(axis=0)[keep],
            scales=scales[keep],
            dropped=tuple(str(c) for c in cols[~keep]),
        )

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """Standardised values (rows of `table`, kept features) for the sampler."""
        missing = [n for n in self.names if n not in table.columns]
        if missing:
            raise DataError(
                f"features {missing} are missing; give the same feature columns as the fit."
            )
        return (table[list(self.names)].to_numpy(dtype=float) - self.means) / self.scales

    def to_original(self, theta_std: np.ndarray) -> np.ndarray:
        """θ per unit of the original feature from θ per standard deviation (last axis)."""
        return theta_std / self.scales
