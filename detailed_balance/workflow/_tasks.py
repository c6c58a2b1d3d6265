"""Independent tasks on dask.distributed: the engine of `calibrate` and `fit_many`.

`run_tasks(function, shared, specs, ...)` submits ``function(shared, spec)`` once per spec to a
dask cluster and hands each outcome to a callback as it finishes (`as_completed`), so the caller
can write it at once (a killed run keeps everything finished before the kill).

- Cluster: by default a `LocalCluster` of `workers` processes with one thread each, its BLAS,
  OpenMP and numba pinned to one thread (environment of the worker processes, and
  `threadpoolctl` around every task); ``scheduler="tcp://host:8786"`` connects to an existing
  cluster instead (its workers need the package installed), ``client=`` uses a caller's client.
- `shared` (the design, the data) is scattered to the workers once (``broadcast``), not sent
  with every task.
- A task that raises is retried once (``retries``); a task that still fails, or whose worker
  died too often (dask's ``KilledWorker``), is handed to `on_failure` with its error text — it is
  never dropped. A worker killed mid-task is replaced by its nanny and its task rescheduled.
- Ctrl-C (KeyboardInterrupt) cancels every pending task and closes the cluster before it
  propagates; what was handed to `on_result` stays written.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import IO, Any

# Environment of local worker processes: one thread for every numerical library, no network
# price map for litellm (imported with the package).
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}


def call_pinned(function: Callable[[Any, dict], Any], shared: Any, spec: dict) -> Any:
    """Run one task with BLAS/OpenMP limited to one thread (what runs on a worker)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return function(shared, spec)


class Progress:
    """``label: done/total (failed)`` on one rewritten line of `stream` (None: silent)."""

    def __init__(self, label: str, total: int, stream: IO[str] | None) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.done = self.failed = 0
        self.start = time.perf_counter()

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if self.stream is None:
            return
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        failed = f", {self.failed} failed" if self.failed else ""
        elapsed = time.perf_counter() - self.start
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
            f"{failed} ({elapsed:.0f} s)"
        )
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def local_cluster(workers: int) -> Any:
    """A `LocalCluster` of `workers` single-threaded processes, numerics pinned to one thread."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=int(workers),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=50,  # logging.CRITICAL: a killed worker is reported by us, not by dask
        env=WORKER_ENV,
    )


def run_tasks(
    function: Callable[[Any, dict], Any],
    shared: Any,
    specs: Iterable[dict],
    *,
    on_result: Callable[[dict, Any], None],
    on_failure: Callable[[dict, str], None],
    workers: int = 2,
    scheduler: str | None = None,
    client: Any = None,
    retries: int = 1,
    label: str = "tasks",
    progress: IO[str] | None = sys.stderr,
    name: Callable[[dict], str] = lambda spec: str(spec["id"]),
    per_task: bool = False,
) -> None:
    """Run ``function(shared, spec)`` for every spec on dask (see the module docstring).

    `on_result(spec, value)` / `on_failure(spec, error_text)` are called in this process, in
    the order tasks finish. With `per_task`, `shared` is a dict by spec ``id`` and each task
    gets only its own entry (each scattered once to one worker, not broadcast). `function` must be importable by the workers (a module-level
    function of an installed package).
    """
    from distributed import Client, as_completed

    specs = list(specs)
    if not specs:
        return
    if int(workers) < 1 and client is None and scheduler is None:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    cluster = None
    own_client = client is None
    if client is None:
        if scheduler is not None:
            client = Client(scheduler, set_as_default=False)
        else:
            cluster = local_cluster(workers)
            client = Client(cluster, set_as_default=False)
    bar = Progress(label, len(specs), progress)
    futures: list[Any] = []
    try:
        if per_task:
            handles = client.scatter({str(s["id"]): shared[s["id"]] for s in specs}, hash=False)
        else:
            handle = client.scatter(shared, broadcast=True, hash=False)
        token = uuid.uuid4().hex[:8]
        by_key = {}
        for spec in specs:
            key = f"{label}-{name(spec)}-{token}"
            given = handles[str(spec["id"])] if per_task else handle
            future = client.submit(
                call_pinned, function, given, spec, key=key, retries=retries, pure=False
            )
            futures.append(future)
            by_key[future.key] = spec
        for future in as_completed(futures, loop=client.loop):
            spec = by_key[future.key]
            if future.status == "finished":
                try:
                    value = future.result()
                except Exception as exc:  # noqa: BLE001 - lost between finish and fetch
                    on_failure(spec, _error_text(exc))
                    bar.update(False)
                    continue
                on_result(spec, value)
                bar.update(True)
            else:
                on_failure(spec, _error_text(future.exception()))
                bar.update(False)
            future.release()
    except KeyboardInterrupt:
        client.cancel(futures, force=True)
        if progress is not None:
            progress.write("\ncancelled: pending tasks stopped; finished ones are kept\n")
        raise
    finally:
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()


def _error_text(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error (the task was cancelled or lost)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def worker_pids(client: Any) -> dict[str, int]:
    """Worker address → process id (for tests that kill a worker)."""
    return client.run(os.getpid)
