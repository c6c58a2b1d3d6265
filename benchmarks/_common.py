"""Small helpers shared by the benchmark scripts: timing, peak memory, machine line, tables."""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import date
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def timed(func: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Median CPU time of `repeat` calls (seconds) and the last result.

    CPU time of this process, not wall time: the benchmark machines are shared, and other
    people's jobs inflate wall time of both sides unevenly. Our code runs single-threaded
    (BLAS is limited to one thread inside the fit), so on an idle machine the two agree;
    `timed_wall` gives wall time where a wall-clock budget is the point.
    """
    return _timed(func, repeat, time.process_time)


def timed_wall(func: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Median wall-clock time of `repeat` calls (seconds) and the last result."""
    return _timed(func, repeat, time.perf_counter)


def _timed(func: Callable[[], Any], repeat: int, clock: Callable[[], float]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        start = clock()
        result = func()
        times.append(clock() - start)
    return statistics.median(times), result


def peak_traced_mb(func: Callable[[], Any]) -> tuple[float, Any]:
    """Peak memory allocated through Python/numpy during `func` (tracemalloc), in MB."""
    gc.collect()
    tracemalloc.start()
    try:
        result = func()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20, result


def max_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    """One line saying where and when the numbers were measured."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{date.today().isoformat()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores, load average {load:.1f}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table from a list of dicts with the same keys."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)
