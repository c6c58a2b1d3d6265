"""`Transitions`: the one in-memory representation of counted agent transitions.

A tidy frame of ``llm, source, target, count`` (one row per distinct triple, self steps kept)
plus a per-(llm, source) ``visits`` table: how many LLM calls used that state as the prompt
(the paper's N₀), including calls that produced nothing valid or the same state.

Everything downstream (estimators, models, checks, reports) receives data through this class
and its vectorised views (`moves`, `pairs`, `cycles`, components), which index states by
position in `Transitions.states` so that several LLMs share one state index.

One module on purpose (~800 lines): `Transitions` is one data type; its validation and its
cached views (moves, pairs, cycles, components) share its private layout and cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .names import as_names

DEFAULT_LLM = "default"
VisitsSpec = Literal["uniform", "outgoing"] | pd.DataFrame | None


class DataError(ValueError):
    """Bad transition data: the message names the file, the row or state, and the fix."""


def _where(origin: str | None) -> str:
    return f"{origin}: " if origin else ""


#: The largest count or number of visits accepted: 2**53, the largest whole number a float
#: holds exactly (models and checks compute in floats; larger numbers of LLM calls are errors).
MAX_COUNT = 2**53


def _show(value) -> str:
    """A value for a message: numpy scalars as plain Python values (``-1``, not ``np.int64(-1)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value) -> str:
    """The type of a value as a user would say it (``list`` for an array read from Parquet)."""
    if isinstance(value, np.ndarray):
        return "list"
    if isinstance(value, np.bool_):
        return "bool"
    return type(value).__name__


def _refuse(origin: str | None, row, column: str, text: str):
    raise DataError(f"{_where(origin)}data row {row}, column {column!r}: {text}")


def _is_missing(value) -> bool:
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float | np.floating) and np.isnan(value))
    )


def _clean_names(values: pd.Series, what: str, origin: str | None, rows: pd.Index) -> np.ndarray:
    """State/LLM names as an object array of `str`; refuse anything that is not a name.

    Strings are kept as they are and whole numbers (a Parquet/JSONL integer column) become their
    decimal text; missing or empty names, names with a NUL character and values of any other
    type (bool, float, bytes, dates, lists, objects...) are refused, naming the first bad row.
    """
    array = values.to_numpy(dtype=object)
    if set(map(type, array)) - {str}:
        is_str = np.fromiter((type(v) is str for v in array), dtype=bool, count=len(array))
        array = array.copy()  # `to_numpy` of an object column may be a read-only view
        for position in np.flatnonzero(~is_str):
            value = array[position]
            if isinstance(value, str):
                continue
            if _is_missing(value):
                _refuse(
                    origin,
                    rows[position],
                    what,
                    f"the {what} name is empty or missing; every row needs a non-empty {what} "
                    f"(fix or delete the row).",
                )
            if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
                array[position] = str(int(value))
                continue
            _refuse(
                origin,
                rows[position],
                what,
                f"{_show(value)} is a {_kind(value)}; {what} names must be strings "
                f"(write the name as text).",
            )
    # names repeat: check each distinct name once, then find the first row of a bad one
    distinct = pd.Series(pd.unique(array), dtype=object)
    bad_empty = set(distinct[distinct.str.strip().eq("").to_numpy()])
    if bad_empty:
        first = np.flatnonzero(pd.Series(array, dtype=object).isin(bad_empty).to_numpy())[0]
        _refuse(
            origin,
            rows[first],
            what,
            f"the {what} name is empty or missing; every row needs a non-empty {what} "
            f"(fix or delete the row).",
        )
    bad_nul = set(distinct[distinct.str.contains("\x00", regex=False).to_numpy()])
    if bad_nul:
        first = np.flatnonzero(pd.Series(array, dtype=object).isin(bad_nul).to_numpy())[0]
        _refuse(
            origin,
            rows[first],
            what,
            f"the {what} name {_show(array[first])} contains a NUL character (\\x00); "
            f"names are text without NUL (remove it).",
        )
    return array


def _as_float(value) -> float:
    """A number as a float; integers too large for a float become inf (they are too large)."""
    try:
        return float(value)
    except OverflowError:
        return np.inf if value > 0 else -np.inf


def _numbers(
    values: pd.Series, what: str, origin: str | None, rows: pd.Index, typed: bool
) -> np.ndarray:
    """The values as floats (NaN where missing or not a number); refuse values of the wrong type.

    `typed` (Parquet, JSONL): values carry their type, so only numbers are numbers; text read
    from CSV/TSV is parsed. A bool is never a number of calls.
    """
    if pd.api.types.is_bool_dtype(values.dtype):
        _refuse(
            origin,
            rows[0],
            what,
            f"{_show(values.iloc[0])} is a bool; {what} must be a "
            f"whole number (the column has type bool).",
        )
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.to_numpy(dtype=float, na_value=np.nan)
    if (
        pd.api.types.is_datetime64_any_dtype(values.dtype)
        or isinstance(values.dtype, pd.PeriodDtype | pd.IntervalDtype)
        or pd.api.types.is_timedelta64_dtype(values.dtype)
    ):
        _refuse(
            origin,
            rows[0],
            what,
            f"{_show(values.iloc[0])} has type {values.dtype}; {what} must be a whole number.",
        )
    array = values.to_numpy(dtype=object)
    kinds = set(map(type, array))
    if kinds <= {int, float}:  # JSON numbers: one conversion (huge ints overflow: slow path)
        try:
            return np.array(array, dtype=float)
        except OverflowError:
            pass
    if kinds <= {str, float} and not typed:  # text (NaN where missing): parse it all at once
        array = array.copy()
        kinds = set()
    out = np.full(len(array), np.nan)
    text_positions = [] if kinds else list(range(len(array)))
    for position, value in enumerate(array if kinds else ()):
        if isinstance(value, str):
            if typed:
                _refuse(
                    origin,
                    rows[position],
                    what,
                    f"{_show(value)} is a str; {what} must be "
                    f"a number, not text (write it without quotes).",
                )
            text_positions.append(position)
        elif _is_missing(value):
            continue
        elif isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            _refuse(
                origin,
                rows[position],
                what,
                f"{_show(value)} is a {_kind(value)}; {what} must be a whole number.",
            )
        else:
            out[position] = _as_float(value)
    if text_positions:
        text = pd.Series(array[text_positions], dtype=object).str.strip()
        parsed = np.array(pd.to_numeric(text, errors="coerce"), dtype=float)
        # near the limit a float rounds (2**53 + 1 reads as 2**53): decide on the exact integer
        with np.errstate(invalid="ignore"):
            near = np.flatnonzero(np.abs(parsed) >= MAX_COUNT / 2)
        for position in near:
            try:
                exact = int(text.iloc[position])
            except ValueError:
                continue
            if abs(exact) > MAX_COUNT:
                parsed[position] = np.inf if exact > 0 else -np.inf
        out[text_positions] = parsed
    return out


def _clean_counts(
    values: pd.Series, what: str, origin: str | None, rows: pd.Index, typed: bool = False
) -> np.ndarray:
    """Non-negative whole counts up to `MAX_COUNT`; refuse anything else, naming the first row."""
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        exact = values.to_numpy()
        if len(exact) and (exact.min() >= 0 and exact.max() <= MAX_COUNT):
            return exact.astype(np.int64)
    array = _numbers(values, what, origin, rows, typed)
    with np.errstate(invalid="ignore"):
        checks = (
            (np.isnan(array), "is missing or not a number"),
            (array < 0, "is negative; counts are numbers of LLM calls and must be >= 0"),
            (
                array > MAX_COUNT,
                f"is too large; counts are numbers of LLM calls, at most 2**53 = {MAX_COUNT}",
            ),
            (array != np.round(array), "is not a whole number"),
        )
    for mask, problem in checks:
        if mask.any():
            first = np.flatnonzero(mask)[0]
            _refuse(
                origin,
                rows[first],
                what,
                f"{_show(values.iloc[first])} {problem} (fix the value or delete the row).",
            )
    return array.astype(np.int64)


def _row_labels(frame: pd.DataFrame, row_offset: int) -> pd.Index:
    """Row numbers for messages: "data row 1" is the first row after the header (any format)."""
    return pd.RangeIndex(row_offset, row_offset + len(frame))


def _check_columns(frame: pd.DataFrame, origin: str | None) -> None:
    duplicated = frame.columns[frame.columns.duplicated()]
    if len(duplicated):
        raise DataError(
            f"{_where(origin)}column {duplicated[0]!r} appears more than once (rename or drop one)."
        )


def normalise_counts(
    frame: pd.DataFrame,
    *,
    origin: str | None = None,
    row_offset: int = 1,
    llm: str | None = None,
    typed: bool = False,
) -> pd.DataFrame:
    """Validate a raw ``source, target, count[, llm]`` frame and sum duplicate rows.

    Messages name the row as "data row N", N = `row_offset` for the frame's first row.
    `typed`: the values carry their own types (Parquet, JSONL), so a count written as text is
    refused; otherwise (CSV/TSV text, frames built in Python) numeric text is parsed.
    """
    _check_columns(frame, origin)
    allowed = {"source", "target", "count", "llm"}
    unknown = [c for c in frame.columns if c not in allowed]
    if unknown:
        raise DataError(
            f"{_where(origin)}unknown column {unknown[0]!r}; transition data has columns "
            f"source,target,count and optionally llm (rename or drop the column)."
        )
    missing = [c for c in ("source", "target", "count") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{_where(origin)}missing column {missing[0]!r}; transition data needs columns "
            f"source,target,count (and optionally llm)."
        )
    rows = _row_labels(frame, row_offset)
    if "llm" in frame.columns:
        llms = _clean_names(frame["llm"], "llm", origin, rows)
    else:
        llms = np.full(len(frame), llm or DEFAULT_LLM, dtype=object)
    tidy = pd.DataFrame(
        {
            "llm": llms,
            "source": _clean_names(frame["source"], "source", origin, rows),
            "target": _clean_names(frame["target"], "target", origin, rows),
            "count": _clean_counts(frame["count"], "count", origin, rows, typed),
        }
    )
    keys = ["llm", "source", "target"]
    # duplicate rows are summed: the sum must stay a count too (and must not wrap around int64,
    # so above 2**62 in total the sums are taken in floats, where 2**53 is still far below)
    if tidy["count"].to_numpy().sum(dtype=float) >= 2.0**62:
        totals = tidy.assign(count=tidy["count"].astype(float)).groupby(keys, sort=True)["count"]
        _refuse_large_sums(totals.sum(), origin)
    summed = tidy.groupby(keys, sort=True, as_index=False)["count"].sum()
    if len(summed) and summed["count"].max() > MAX_COUNT:
        _refuse_large_sums(summed.set_index(keys)["count"], origin)
    return summed.astype({"llm": object, "source": object, "target": object, "count": np.int64})


def _refuse_large_sums(totals: pd.Series, origin: str | None) -> None:
    over = totals[totals > MAX_COUNT]
    if len(over):
        (name, source, target), total = over.index[0], over.iloc[0]
        raise DataError(
            f"{_where(origin)}the counts of {source!r} → {target!r} (llm {name!r}) add up to "
            f"{total:.17g}, which is too large; counts are numbers of LLM calls, at most "
            f"2**53 = {MAX_COUNT} (fix the rows of this transition)."
        )


def normalise_visits(
    frame: pd.DataFrame,
    *,
    origin: str | None = None,
    row_offset: int = 1,
    llm: str | None = None,
    typed: bool = False,
    whole: bool = False,
) -> pd.DataFrame:
    """Validate a raw ``source, visits[, llm]`` table (``state`` is accepted for ``source``).

    `typed` as for `normalise_counts`; `whole`: visits must be whole numbers (a visits file
    counts calls; only the "uniform" convention computes fractions, and it never reads a file).
    """
    if "state" in frame.columns and "source" not in frame.columns:
        frame = frame.rename(columns={"state": "source"})
    _check_columns(frame, origin)
    allowed = {"source", "visits", "llm"}
    unknown = [c for c in frame.columns if c not in allowed]
    if unknown or "source" not in frame.columns or "visits" not in frame.columns:
        raise DataError(
            f"{_where(origin)}a visits table has columns source,visits and optionally llm "
            f"(found {', '.join(map(str, frame.columns))})."
        )
    rows = _row_labels(frame, row_offset)
    visits = _numbers(frame["visits"], "visits", origin, rows, typed)
    with np.errstate(invalid="ignore"):
        checks = [
            (~np.isfinite(visits) | (visits < 0), "must be a number >= 0"),
            (visits > MAX_COUNT, f"is too large (at most 2**53 = {MAX_COUNT})"),
        ]
        if whole:
            checks.append((visits != np.round(visits), "is not a whole number"))
    for bad, problem in checks:
        if bad.any():
            first = np.flatnonzero(bad)[0]
            _refuse(
                origin,
                rows[first],
                "visits",
                f"{_show(frame['visits'].iloc[first])} {problem} (visits are how many calls "
                f"used this state as the prompt).",
            )
    if "llm" in frame.columns:
        llms = _clean_names(frame["llm"], "llm", origin, rows)
    else:
        llms = np.full(len(frame), llm or DEFAULT_LLM, dtype=object)
    tidy = pd.DataFrame(
        {
            "llm": llms,
            "source": _clean_names(frame["source"], "source", origin, rows),
            "visits": visits,
        }
    )
    return tidy.groupby(["llm", "source"], sort=True, as_index=False)["visits"].sum()


def _uniform_visits(
    counts: pd.DataFrame, calls: float | Mapping[str, float] | None, origin: str | None = None
) -> pd.DataFrame:
    """N₀ = total calls / number of prompt states, per LLM (the paper's word-task convention).

    Every counted transition is one call, so `calls` below an LLM's total count is refused,
    naming the state with the most transitions out of it. (N₀ below one state's count is the
    paper's convention: T = min(1, n/N₀) caps that state's rate.)
    """
    parts = []
    for name, group in counts.groupby("llm", sort=True):
        sources = np.unique(group["source"].to_numpy(dtype=object))
        if isinstance(calls, Mapping):
            total = calls.get(name)
        else:
            total = calls
        counted = float(group["count"].sum())
        if total is not None and not float(total) >= counted:
            out = group.groupby("source")["count"].sum()
            state, most = out.idxmax(), int(out.max())
            raise DataError(
                f"{_where(origin)}--visits uniform with calls {float(total):g} (llm {name!r}): "
                f"state {state!r} alone has {most} transitions out of it and the data counts "
                f"{int(counted)} transitions; every counted transition is one call, so calls "
                f"must be at least {int(counted)} (raise --calls, or omit it to use the total "
                f"count)."
            )
        total = counted if total is None else float(total)
        parts.append(pd.DataFrame({"llm": name, "source": sources, "visits": total / len(sources)}))
    if not parts:
        return pd.DataFrame({"llm": [], "source": [], "visits": []})
    return pd.concat(parts, ignore_index=True)


def _outgoing_visits(counts: pd.DataFrame, min_visits: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """N₀(f) = Σ_{g≠f} n(f→g); states with N₀ ≤ `min_visits` are dropped (paper, GPT-5 Nano)."""
    moves = counts[counts["source"] != counts["target"]]
    out = moves.groupby(["llm", "source"], sort=True, as_index=False)["count"].sum()
    out = out.rename(columns={"count": "visits"}).astype({"visits": float})
    kept = out[out["visits"] > min_visits]
    keep_keys = pd.MultiIndex.from_frame(kept[["llm", "source"]])
    src_ok = pd.MultiIndex.from_frame(counts[["llm", "source"]]).isin(keep_keys)
    dst_ok = pd.MultiIndex.from_arrays([counts["llm"], counts["target"]]).isin(keep_keys)
    return counts[src_ok & dst_ok].reset_index(drop=True), kept.reset_index(drop=True)


@dataclass
class Transitions:
    """Counted transitions of one or several LLMs, with per-source visits.

    Build with `Transitions.from_counts` (or a reader); the constructor expects already
    normalised frames.
    """

    counts: pd.DataFrame
    visits: pd.DataFrame
    scores: pd.Series | None = None
    origin: str | None = None
    convention: str = "explicit"
    dropped_states: int = 0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_counts(
        cls,
        counts: pd.DataFrame,
        visits: VisitsSpec = None,
        *,
        calls: float | Mapping[str, float] | None = None,
        min_visits: float = 1,
        scores: pd.Series | Mapping[str, float] | None = None,
        origin: str | None = None,
        llm: str | None = None,
    ) -> Transitions:
        """Validate counts and resolve visits.

        visits: a table (``source, visits[, llm]``), ``"uniform"`` (N₀ = calls / number of prompt
        states, per LLM; `calls` defaults to the total count), or ``"outgoing"`` / None
        (N₀(f) = Σ_{g≠f} n(f→g), dropping states with N₀ ≤ `min_visits`).
        """
        tidy = normalise_counts(counts, origin=origin, llm=llm)
        dropped = 0
        if isinstance(visits, pd.DataFrame):
            table = normalise_visits(visits, origin=origin, llm=llm)
            convention = "explicit"
            cls._check_visits(tidy, table, origin)
        elif visits == "uniform":
            table, convention = _uniform_visits(tidy, calls, origin), "uniform"
        elif visits in (None, "outgoing"):
            before = _n_states(tidy)
            tidy, table = _outgoing_visits(tidy, min_visits)
            convention, dropped = "outgoing", before - _n_states(tidy)
        else:
            raise DataError(
                f"unknown visits convention {visits!r}; use 'uniform', 'outgoing' or a table "
                f"with columns source,visits[,llm]."
            )
        score_series = None if scores is None else pd.Series(scores, dtype=float, name="score")
        return cls(tidy, table, score_series, origin, convention, dropped)

    @staticmethod
    def _check_visits(counts: pd.DataFrame, visits: pd.DataFrame, origin: str | None) -> None:
        out = counts.groupby(["llm", "source"], sort=True)["count"].sum()
        out = out[out > 0]
        have = visits.set_index(["llm", "source"])["visits"]
        joined = out.to_frame("moves").join(have, how="left")
        missing = joined["visits"].isna()
        if missing.any():
            llm, state = joined.index[missing.to_numpy()][0]
            raise DataError(
                f"{_where(origin)}state {state!r} (llm {llm!r}) has transitions out of it but no "
                f"visits row; add `{state},<calls>` to the visits table or use --visits outgoing."
            )
        short = joined["visits"] < joined["moves"]
        if short.any():
            (llm, state), row = joined.index[short.to_numpy()][0], joined[short].iloc[0]
            raise DataError(
                f"{_where(origin)}state {state!r} (llm {llm!r}) has {row['visits']:g} visits but "
                f"{int(row['moves'])} transitions out of it; visits count every call that used "
                f"the state as the prompt, so they cannot be fewer (check the visits table, or "
                f"use --visits uniform / outgoing)."
            )

    # -- basic properties --------------------------------------------------------------------
    @property
    def llms(self) -> list[str]:
        # unique() first: iterating a 500k-row Arrow string column element-wise takes seconds.
        if "llms" not in self._cache:
            names = set(self.counts["llm"].unique()) | set(self.visits["llm"].unique())
            self._cache["llms"] = sorted(str(name) for name in names)
        return list(self._cache["llms"])

    @property
    def states(self) -> pd.Index:
        """All state names (sources, targets and visited states of every LLM), sorted."""
        if "states" not in self._cache:
            # object arrays throughout: `.astype(str)` would copy every row's name at the
            # width of the longest name (one 100 kB name: 400 kB per row)
            names = np.unique(
                as_names(
                    pd.unique(
                        np.concatenate(
                            [
                                self.counts["source"].to_numpy(dtype=object),
                                self.counts["target"].to_numpy(dtype=object),
                                self.visits["source"].to_numpy(dtype=object),
                            ]
                        )
                    )
                )
            )
            self._cache["states"] = pd.Index(names, name="state", dtype=object)
        return self._cache["states"]

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def total_calls(self) -> float:
        return float(self.visits["visits"].sum())

    def _llm(self, llm: str | None) -> str:
        names = self.llms
        if not names:
            raise DataError(
                f"{_where(self.origin)}there are no transitions between different states in the "
                f"data; nothing to analyse."
            )
        if llm is None:
            if len(names) == 1:
                return names[0]
            raise DataError(f"the data has several LLMs ({', '.join(names)}); pass llm=NAME.")
        if llm not in names:
            raise DataError(f"unknown llm {llm!r}; the data has {', '.join(names)}.")
        return llm

    def select(self, llm: str) -> Transitions:
        """The transitions of one LLM, with its own state index."""
        name = self._llm(llm)
        counts = self.counts[self.counts["llm"] == name].reset_index(drop=True)
        visits = self.visits[self.visits["llm"] == name].reset_index(drop=True)
        return Transitions(counts, visits, self.scores, self.origin, self.convention)

    def index_of(self, names) -> np.ndarray:
        """Positions of state names in `states`; unknown names raise a DataError naming one."""
        names = np.asarray(names, dtype=object)
        pos = self.states.get_indexer(names)
        if (pos < 0).any():
            bad = names[np.flatnonzero(pos < 0)[0]]
            raise DataError(f"unknown state {bad!r}: it does not occur in the transition data.")
        return pos

    def visits_array(self, llm: str | None = None) -> np.ndarray:
        """N₀ per state (0 for states never used as a prompt), aligned with `states`."""
        name = self._llm(llm)
        key = ("visits", name)
        if key not in self._cache:
            table = self.visits[self.visits["llm"] == name]
            out = np.zeros(self.n_states)
            out[self.index_of(table["source"].to_numpy())] = table["visits"].to_numpy(float)
            self._cache[key] = out
        return self._cache[key]

    # -- views ---------------------------------------------------------------------------------
    def moves(self, llm: str | None = None) -> pd.DataFrame:
        """Observed moves f→g (f ≠ g, count > 0): ``source, target, count, i, j, visits, rate``.

        ``rate`` is the paper's kernel estimate T(f→g) = min(1, n / N₀(f)).
        """
        name = self._llm(llm)
        key = ("moves", name)
        if key not in self._cache:
            c = self.counts
            c = c[(c["llm"] == name) & (c["source"] != c["target"]) & (c["count"] > 0)]
            i = self.index_of(c["source"].to_numpy())
            j = self.index_of(c["target"].to_numpy())
            n0 = self.visits_array(name)[i]
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.minimum(1.0, c["count"].to_numpy() / n0)
            self._cache[key] = pd.DataFrame(
                {
                    "source": c["source"].to_numpy(dtype=object),
                    "target": c["target"].to_numpy(dtype=object),
                    "count": c["count"].to_numpy(np.int64),
                    "i": i,
                    "j": j,
                    "visits": n0,
                    "rate": rate,
                }
            )
        return self._cache[key]

    def count_matrix(self, llm: str | None = None) -> sp.csr_matrix:
        """Sparse n(f→g) over `states` (f ≠ g)."""
        m = self.moves(llm)
        n = self.n_states
        return sp.csr_matrix((m["count"].to_numpy(), (m["i"], m["j"])), shape=(n, n))

    def edge_counts(self, i: np.ndarray, j: np.ndarray, llm: str | None = None) -> np.ndarray:
        """n(i→j) for arrays of state positions (0 where never seen); vectorised lookup."""
        key = ("edge_codes", self._llm(llm))
        if key not in self._cache:
            m = self.moves(llm)
            codes = m["i"].to_numpy(np.int64) * self.n_states + m["j"].to_numpy(np.int64)
            order = np.argsort(codes)
            self._cache[key] = (codes[order], m["count"].to_numpy(np.int64)[order])
        codes, counts = self._cache[key]
        probe = np.asarray(i, dtype=np.int64) * self.n_states + np.asarray(j, dtype=np.int64)
        pos = np.clip(np.searchsorted(codes, probe), 0, max(len(codes) - 1, 0))
        if len(codes) == 0:
            return np.zeros(probe.shape, dtype=np.int64)
        return np.where(codes[pos] == probe, counts[pos], 0)

    def pairs(self, llm: str | None = None) -> pd.DataFrame:
        """Unordered pairs seen in either direction: ``f, g, i, j, n_fg, n_gf, N_f, N_g``.

        f is the state earlier in `states` (i < j). N is NaN for a state never used as a prompt.
        """
        name = self._llm(llm)
        key = ("pairs", name)
        if key not in self._cache:
            c = self.count_matrix(name).tocoo()
            lo, hi = np.minimum(c.row, c.col), np.maximum(c.row, c.col)
            n = self.n_states
            code = lo.astype(np.int64) * n + hi
            uniq, inv = np.unique(code, return_inverse=True)
            forward = c.row < c.col
            n_fg = np.bincount(inv, weights=np.where(forward, c.data, 0), minlength=len(uniq))
            n_gf = np.bincount(inv, weights=np.where(forward, 0, c.data), minlength=len(uniq))
            i, j = uniq // n, uniq % n
            visits = self.visits_array(name)
            n0 = np.where(visits > 0, visits, np.nan)
            self._cache[key] = pd.DataFrame(
                {
                    "f": self.states.to_numpy()[i],
                    "g": self.states.to_numpy()[j],
                    "i": i,
                    "j": j,
                    "n_fg": n_fg.astype(np.int64),
                    "n_gf": n_gf.astype(np.int64),
                    "N_f": n0[i],
                    "N_g": n0[j],
                }
            )
        return self._cache[key]

    def strong_components(self, llm: str | None = None) -> np.ndarray:
        """Label of the strongly connected component of each state (aligned with `states`)."""
        return connected_components(self.count_matrix(llm), directed=True, connection="strong")[1]

    def weak_components(self, llm: str | None = None) -> np.ndarray:
        """Label of the weakly connected component (the pair graph's components) of each state."""
        return connected_components(self.count_matrix(llm), directed=True, connection="weak")[1]

    def cycles(self, llm: str | None = None, min_count: int = 1) -> pd.DataFrame:
        """All 3-cycles whose six directed edges were each seen ≥ `min_count` times.

        One row per triangle {a, b, c} with i < j < k; "forward" is a→b→c→a. Enumerated with
        degree-ordered wedges (vectorised; O(E^1.5) at worst).
        """
        c = self.count_matrix(llm)
        both = c.minimum(c.T)
        both.data[both.data < min_count] = 0
        both.eliminate_zeros()
        upper = sp.triu(both, k=1).tocoo()
        a, b = upper.row.astype(np.int64), upper.col.astype(np.int64)
        tri = _triangles(a, b, self.n_states)
        names = self.states.to_numpy()
        return pd.DataFrame(
            {
                "a": names[tri[:, 0]],
                "b": names[tri[:, 1]],
                "c": names[tri[:, 2]],
                "i": tri[:, 0],
                "j": tri[:, 1],
                "k": tri[:, 2],
            }
        )

    def state_table(self, llm: str | None = None) -> pd.DataFrame:
        """Per state: visits, moves in and out, self steps, and score when known."""
        name = self._llm(llm)
        c = self.counts[self.counts["llm"] == name]
        n = self.n_states
        i = self.index_of(c["source"].to_numpy())
        j = self.index_of(c["target"].to_numpy())
        cnt = c["count"].to_numpy(float)
        is_self = i == j
        table = pd.DataFrame(
            {
                "visits": self.visits_array(name),
                "moves_out": np.bincount(i[~is_self], cnt[~is_self], minlength=n),
                "moves_in": np.bincount(j[~is_self], cnt[~is_self], minlength=n),
                "self_steps": np.bincount(i[is_self], cnt[is_self], minlength=n),
            },
            index=self.states,
        )
        if self.scores is not None:
            table["score"] = self.scores.reindex(self.states).to_numpy()
        return table

    # -- provenance and output ---------------------------------------------------------------
    def data_hash(self) -> str:
        """SHA-256 of the canonical counts and visits (order-independent)."""
        digest = hashlib.sha256()
        digest.update(pd.util.hash_pandas_object(self.counts, index=False).to_numpy().tobytes())
        digest.update(pd.util.hash_pandas_object(self.visits, index=False).to_numpy().tobytes())
        return digest.hexdigest()

    def to_csv(self, path: str | Path, visits_path: str | Path | None = None) -> None:
        """Write ``llm,source,target,count`` and, if given, ``llm,source,visits``."""
        self.counts.to_csv(path, index=False)
        if visits_path is not None:
            self.visits.to_csv(visits_path, index=False)

    def to_parquet(self, path: str | Path, visits_path: str | Path | None = None) -> None:
        self.counts.to_parquet(path, index=False)
        if visits_path is not None:
            self.visits.to_parquet(visits_path, index=False)

    def __repr__(self) -> str:
        return (
            f"Transitions({len(self.llms)} llm(s), {self.n_states} states, "
            f"{int(self.counts['count'].sum())} counted transitions, visits={self.convention})"
        )


def _n_states(counts: pd.DataFrame) -> int:
    return len(set(counts["source"]) | set(counts["target"]))


def _triangles(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Triangles of an undirected graph given by edges (a, b); rows sorted i < j < k."""
    if len(a) == 0:
        return np.empty((0, 3), dtype=np.int64)
    degree = np.bincount(np.concatenate([a, b]), minlength=n)
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), degree))] = np.arange(n)
    # Orient each edge from lower to higher rank: every node has few higher-ranked neighbours.
    lo = np.where(rank[a] < rank[b], a, b)
    hi = np.where(rank[a] < rank[b], b, a)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    start = np.searchsorted(lo, np.arange(n + 1))
    # Wedge lo→hi, lo→w with rank[hi] < rank[w]: a triangle when hi→w is an edge too.
    out_deg = np.diff(start)
    rep = out_deg[lo]
    e = np.repeat(np.arange(len(lo)), rep)
    offset = np.arange(len(e)) - np.repeat(np.cumsum(rep) - rep, rep)
    w = hi[start[lo[e]] + offset]
    keep = rank[w] > rank[hi[e]]
    u, v, w = lo[e][keep], hi[e][keep], w[keep]
    edge_codes = np.sort(lo.astype(np.int64) * n + hi)
    probe = v.astype(np.int64) * n + w
    pos = np.searchsorted(edge_codes, probe)
    found = pos < len(edge_codes)
    found[found] = edge_codes[pos[found]] == probe[found]
    tri = np.sort(np.stack([u[found], v[found], w[found]], axis=1), axis=1)
    return tri[np.lexsort((tri[:, 2], tri[:, 1], tri[:, 0]))]
