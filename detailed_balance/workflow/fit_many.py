"""`fit_many`: one model fitted to many data sets in parallel on dask, one fit file each.

`fit_many({name: Transitions}, out=DIR, model="equilibrium", method="map", ...)` (``detailed-
balance fit-many``) runs each fit as one task on dask.distributed (`_tasks.run_tasks`: a local
cluster of single-threaded processes, or ``scheduler=ADDRESS``); each data set is scattered
once to the worker that fits it, the worker returns the posterior tree and this process writes
``DIR/<name>.nc`` (`BayesFit.save`, atomic) as each fit finishes, so a killed run resumes: with
`resume`, a name whose fit file already holds a fit of the same data and model is skipped.
``DIR/fits.csv`` lists every data set: ``name, status (fitted|skipped|failed), path, states,
pairs, likelihood, seconds, error``; a failed fit (retried once) is listed, never dropped.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd

from detailed_balance.data import DataError, Transitions
from detailed_balance.data.files import prepare_dir, write_frame_atomic
from detailed_balance.models import model_from_name
from detailed_balance.sampling import BayesFit, fit, load_fit

from ._tasks import run_tasks

FITS_TABLE = "fits.csv"


def fit_name(text: str) -> str:
    """A file-name-safe name (letters, digits, ``._-``; the rest becomes ``_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "data"
    return cleaned[:120]


def fit_one(data: Transitions, spec: dict) -> dict[str, Any]:
    """One fit (what runs on a worker): the posterior tree and its numbers."""
    start = time.perf_counter()
    model = model_from_name(spec["model"], spec["model_config"])
    result = fit(model, data, method=spec["method"], progressbar=False, **spec["options"])
    pairs = result.pairs
    return {
        "tree": result.posterior,
        "llm": result.llm,
        "states": int(pairs.n_states),
        "pairs": int(pairs.n_pairs),
        "likelihood": str(result.posterior.attrs.get("likelihood", "")),
        "seconds": time.perf_counter() - start,
    }


def _already_fitted(path: Path, data: Transitions, model_name: str, config: dict) -> bool:
    if not path.is_file():
        return False
    try:
        saved = load_fit(path)
    except (ValueError, OSError):
        return False
    same_model = saved.model == model_from_name(model_name, config)
    return same_model and saved.data.data_hash() == data.data_hash()


def fit_many(
    datasets: Mapping[str, Transitions],
    *,
    out: str | Path,
    model: str = "equilibrium",
    model_config: dict[str, Any] | None = None,
    method: str = "map",
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int = 1,
    workers: int = 2,
    scheduler: str | None = None,
    client: Any = None,
    resume: bool = True,
    progress: IO[str] | None = sys.stderr,
) -> pd.DataFrame:
    """Fit `model` to every data set (module docstring); returns the ``fits.csv`` table."""
    if not datasets:
        raise DataError("fit_many needs at least one data set.")
    out_dir = prepare_dir(out, "fit-many folder")
    config = dict(model_config or {})
    model_from_name(model, config)  # an unknown model or option fails here, before any work
    names = {fit_name(n): n for n in datasets}
    if len(names) != len(datasets):
        raise DataError("two data sets have the same name once made file-safe; rename one.")
    options: dict[str, Any] = {"seed": int(seed)}
    if method == "nuts":
        options["cores"] = 1
    for key, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if value is not None:
            options[key] = int(value)
    if method == "map":
        options.setdefault("chains", 1)
    rows: dict[str, dict[str, Any]] = {}
    specs, shared = [], {}
    for safe, original in names.items():
        path = out_dir / f"{safe}.nc"
        data = datasets[original]
        if resume and _already_fitted(path, data, model, config):
            rows[safe] = {"name": safe, "status": "skipped", "path": str(path), "error": ""}
            continue
        specs.append(
            {
                "id": safe,
                "model": model,
                "model_config": config,
                "method": method,
                "options": options,
            }
        )
        shared[safe] = data

    def table() -> pd.DataFrame:
        columns = ["name", "status", "path", "states", "pairs", "likelihood", "seconds", "error"]
        frame = pd.DataFrame([rows[n] for n in names if n in rows])
        return frame.reindex(columns=columns)

    def on_result(spec: dict, value: dict) -> None:
        path = out_dir / f"{spec['id']}.nc"
        data = shared[spec["id"]]
        fitted = BayesFit(value["tree"], data, model_from_name(model, config), value["llm"])
        fitted.save(path)
        rows[spec["id"]] = {
            "name": spec["id"],
            "status": "fitted",
            "path": str(path),
            **{k: value[k] for k in ("states", "pairs", "likelihood", "seconds")},
            "error": "",
        }
        write_frame_atomic(table(), out_dir / FITS_TABLE, "fits table", index=False)

    def on_failure(spec: dict, error: str) -> None:
        rows[spec["id"]] = {"name": spec["id"], "status": "failed", "path": "", "error": error}
        write_frame_atomic(table(), out_dir / FITS_TABLE, "fits table", index=False)

    run_tasks(
        fit_one,
        shared,
        specs,
        on_result=on_result,
        on_failure=on_failure,
        workers=workers,
        scheduler=scheduler,
        client=client,
        label="fit-many",
        progress=progress,
        per_task=True,
    )
    frame = table()
    write_frame_atomic(frame, out_dir / FITS_TABLE, "fits table", index=False)
    return frame
