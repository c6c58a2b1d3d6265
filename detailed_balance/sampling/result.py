"""`BayesFit`: a posterior DataTree with its data and model; netCDF save/load with provenance.

The saved file is self-contained: besides the posterior it holds the full counts and visits
tables (group ``data``) and the model's pair arrays (group ``constant_data``), so `load_fit`
gives back `Transitions` identical to those fitted (same `data_hash`) and `check`/`report` work
from the file alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from detailed_balance.data import DataError, Transitions
from detailed_balance.data.files import atomic_path
from detailed_balance.data.names import as_names
from detailed_balance.models import PairData, PairModel, model_from_name, pair_data


class FitFileError(DataError):
    """A fit file that cannot be used as asked (wrong model, not a fit, damaged); the message
    names the file (a `DataError`, so the command line prints it without a traceback)."""


def in_gauge(constant_data: xr.Dataset, values: pd.Series) -> pd.Series:
    """`BayesFit.in_gauge` for a fit's ``constant_data`` group (a fit read as a DataTree)."""
    names = as_names(constant_data["state"].to_numpy())
    v = values.reindex(names).to_numpy(float)
    comp = constant_data["component"].to_numpy()
    weights = constant_data["centring_weight"].to_numpy()
    means = np.bincount(comp, np.nan_to_num(v) * weights, comp.max() + 1)
    missing = np.bincount(comp, np.isnan(v) & (weights > 0), comp.max() + 1) > 0
    means[missing] = np.nan
    return pd.Series(v - means[comp], index=pd.Index(names, name="state"))


@dataclass
class BayesFit:
    """A fitted pair model: ``posterior`` (xarray.DataTree), the ``data``, the ``model``
    (configuration only) and ``prepared``, what the model derived from these data (pair
    arrays, density, MAP, whitening; None for a fit read from a file)."""

    posterior: xr.DataTree
    data: Transitions
    model: PairModel
    llm: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    prepared: Any = None

    @property
    def pairs(self) -> PairData:
        """The pair arrays of the fitted data (rebuilt from the data for a loaded fit)."""
        if self.prepared is not None:
            return self.prepared.pairs
        return pair_data(self.data, self.llm)

    @property
    def method(self) -> str:
        return str(self.posterior.attrs.get("method"))

    @property
    def potentials(self) -> xr.DataArray:
        """Draws of gauge-fixed V (chain, draw, state)."""
        return self.posterior["posterior"]["V"]

    def in_gauge(self, values: pd.Series) -> pd.Series:
        """Potentials given by state name (a known truth, another estimate) moved into this
        fit's gauge: per component, the fit's centring weights (``constant_data
        ["centring_weight"]``) applied to `values`, so they compare with the posterior's V
        state by state. Indexed by the fit's modelled states; NaN where `values` lacks one."""
        return in_gauge(self.posterior["constant_data"], values)

    def summary(self, ci: float = 0.9) -> pd.DataFrame:
        """Per state: ``state, mean, sd, lower, upper, bounded`` (equal-tailed `ci` interval).

        Every state of the data is listed; unidentified ones (no modelled pair) have empty
        numbers and ``bounded`` False. ``bounded`` marks states of the largest strongly
        connected piece of their component, whose V the data pin down from both sides.
        """
        if not 0 < ci < 1:
            raise ValueError(f"ci must be in (0, 1), got {ci}.")
        v = self.potentials.stack(sample=("chain", "draw")).transpose("state", "sample")
        values = v.to_numpy()
        lo, hi = np.quantile(values, [(1 - ci) / 2, (1 + ci) / 2], axis=1)
        bounded = self.posterior["constant_data"]["bounded"].to_numpy().astype(bool)
        fitted = pd.DataFrame(
            {
                "mean": values.mean(axis=1),
                "sd": values.std(axis=1, ddof=1) if values.shape[1] > 1 else 0.0,
                "lower": lo,
                "upper": hi,
                "bounded": bounded,
            },
            index=pd.Index(as_names(v["state"]), name="state"),
        )
        table = fitted.reindex(self.data.states.astype(str))
        table["bounded"] = table["bounded"].astype("boolean").fillna(False).astype(bool)
        return table.rename_axis("state").reset_index()

    def save(self, path: str | Path) -> Path:
        """Write the DataTree (posterior, data, provenance) to netCDF (h5netcdf), atomically.

        The file is written beside `path` and renamed over it when complete, so a killed save
        leaves the previous fit (or nothing), never a truncated file.
        """
        path = Path(path)
        with atomic_path(path, "fit") as tmp:
            self.posterior.to_netcdf(tmp, engine="h5netcdf")
        return path


def data_group(data: Transitions) -> xr.Dataset:
    """The full counts and visits tables as one dataset (for a self-contained fit file)."""
    counts, visits = data.counts, data.visits
    return xr.Dataset(
        {
            "count_llm": ("count_row", as_names(counts["llm"])),
            "count_source": ("count_row", as_names(counts["source"])),
            "count_target": ("count_row", as_names(counts["target"])),
            "count": ("count_row", counts["count"].to_numpy(np.int64)),
            "visit_llm": ("visit_row", as_names(visits["llm"])),
            "visit_source": ("visit_row", as_names(visits["source"])),
            "visits": ("visit_row", visits["visits"].to_numpy(float)),
        },
        attrs={
            "convention": data.convention,
            "origin": data.origin or "",
            "dropped_states": int(data.dropped_states),
        },
    )


def data_from_group(group: xr.Dataset) -> Transitions:
    """Rebuild `Transitions` from a fit file's ``data`` group (same counts, visits and hash)."""
    counts = pd.DataFrame(
        {
            "llm": as_names(group["count_llm"]),
            "source": as_names(group["count_source"]),
            "target": as_names(group["count_target"]),
            "count": group["count"].to_numpy().astype(np.int64),
        }
    )
    visits = pd.DataFrame(
        {
            "llm": as_names(group["visit_llm"]),
            "source": as_names(group["visit_source"]),
            "visits": group["visits"].to_numpy().astype(float),
        }
    )
    attrs = group.attrs
    return Transitions(
        counts,
        visits,
        None,
        attrs.get("origin") or None,
        str(attrs.get("convention", "explicit")),
        int(attrs.get("dropped_states", 0)),
    )


def _read_tree(path: Path) -> xr.DataTree:
    """The whole fit file in memory, its names (string variables) as object arrays of `str`.

    xarray decodes variable-length strings with ``astype(str)``: a fixed-width copy at the width
    of the longest name, so one 100 kB state name made every pair, cycle and count row 400 kB
    (issue 11). The string variables are read with h5netcdf instead and put back as objects.
    """
    import h5netcdf
    import h5py

    strings: dict[str, dict[str, tuple[tuple[str, ...], np.ndarray]]] = {}
    others: set[str] = set()

    def walk(group: Any, where: str) -> None:
        for name, var in group.variables.items():
            if h5py.check_dtype(vlen=var.dtype) is str:
                strings.setdefault(where, {})[name] = (var.dimensions, as_names(var[...]))
            else:
                others.add(name)
        for name, child in group.groups.items():
            walk(child, f"{where.rstrip('/')}/{name}")

    with h5netcdf.File(path, "r") as handle:
        walk(handle, "/")
    drop = sorted({name for found in strings.values() for name in found} - others)
    with xr.open_datatree(path, engine="h5netcdf", drop_variables=drop) as opened:
        tree = opened.load().copy(deep=True)
    for where, found in strings.items():
        node = tree[where] if where != "/" else tree
        coords = {k: (dims, v) for k, (dims, v) in found.items() if k in dims}
        values = {k: (dims, v) for k, (dims, v) in found.items() if k not in dims}
        node.dataset = node.to_dataset(inherit=False).assign_coords(coords).assign(values)
    return tree


def _unreadable(exc: Exception) -> str:
    """Why a fit file could not be opened, in a user's words (h5py's message is inside)."""
    import re

    text = str(exc)
    truncated = re.search(r"eof = (\d+).*stored_eof = (\d+)", text)
    if truncated:
        found, stored = (int(g) for g in truncated.groups())
        return (
            f"it is truncated: {found:,} of its {stored:,} bytes are there, as a killed copy "
            f"or download leaves it"
        )
    if "signature not found" in text:
        return "it is not a netCDF/HDF5 file"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_fit(path: str | Path, model: PairModel | None = None) -> BayesFit:
    """Read a fit written by `BayesFit.save`; refuse it if `model` (given) differs from the
    model that produced it (type or model_config)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fit file (write one with `fit ... --out`).")
    try:
        tree = _read_tree(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a fit file"
        raise FitFileError(
            f"{path}: not a readable fit file ({_unreadable(exc)}); write one with "
            f"`detailed-balance fit DATA --method map --out fit.nc`."
        ) from None
    attrs = tree.attrs
    if "model" not in attrs or "data" not in tree.children:
        raise FitFileError(
            f"{path}: not a detailed-balance fit (no model provenance or data group); "
            f"write one with `detailed-balance fit DATA --method nuts --out fit.nc`."
        )
    if "posterior" not in tree.children or "V" not in tree["posterior"].data_vars:
        raise FitFileError(
            f"{path}: the fit holds no posterior draws of V; it is damaged or was not written "
            f"by `detailed-balance fit` — refit it."
        )
    saved = model_from_name(str(attrs["model"]), json.loads(str(attrs["model_config"])))
    if model is not None and model != saved:
        raise FitFileError(
            f"{path}: the fit was made with {saved!r}, not {model!r}; refit with this model "
            f"or load without a model."
        )
    data = data_from_group(tree["data"].to_dataset())
    if data.data_hash() != attrs.get("data_hash"):
        raise FitFileError(f"{path}: the stored data do not match their hash; the file is damaged.")
    llm = str(attrs.get("llm")) or None
    return BayesFit(tree, data, saved, llm)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("detailed-balance")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def provenance(
    model: PairModel,
    pairs: PairData,
    data: Transitions,
    method: str,
    sampler: str,
    sampler_config: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Root attrs recorded with every fit."""
    from datetime import UTC, datetime

    llm = pairs.llm
    return {
        "package_version": package_version(),
        "data_hash": data.data_hash(),
        "model": model.name,
        "model_config": model.config_json,
        "sampler_config": json.dumps(sampler_config, sort_keys=True, default=str),
        "sampler": sampler,
        "method": method,
        "seed": int(seed),
        "llm": llm,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "unidentified_states": json.dumps([str(s) for s in pairs.unidentified]),
        "excluded_pairs": int(len(pairs.excluded_pairs)),
    }
