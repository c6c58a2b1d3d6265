"""Writing output files safely: parents created up front, contents replaced atomically.

Every command that writes goes through these two helpers, so that

- a missing parent directory is created (or refused with a clear message) *before* any long
  work runs — a NUTS fit is never lost to a typo in ``--out``;
- a file is written to a temporary sibling and renamed over the target only once complete
  (``os.replace`` is atomic on POSIX), so a killed ``fit``/``report``/``export`` leaves either
  the old file or the new one, never a truncated mix a later command would misread.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from .transitions import DataError


class OutputError(DataError):
    """An output path cannot be written; the message names it and says why."""


def prepare_output(path: str | Path, what: str = "output") -> Path:
    """Create the parent directories of `path` and check it can be written; return it.

    Call this before the work that produces the file. Raises `OutputError` naming the path
    when the parent cannot be created or written, or when the path is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; give a file name (e.g. {path}/out).")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise OutputError(
            f"cannot create the folder for {what} {path}: {exc.filename} is a file, not a folder."
        ) from None
    except OSError as exc:
        raise OutputError(
            f"cannot create the folder {parent} for {what} {path}: {exc.strerror}."
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {path}: the folder {parent} is not writable.")
    return path


def prepare_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create the directory `path` (and parents) and check it is writable; return it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {what} {path}: {exc.strerror}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {what} {path}: it is not writable.")
    return path


# The atomic writes open in this context (outermost first): one body that writes several
# temporary files at once (a transitions file and its visits file) names them all on failure.
_OPEN: ContextVar[tuple[tuple[str, Path], ...]] = ContextVar("_atomic_writes", default=())


def _cannot_write(targets: tuple[tuple[str, Path], ...], exc: OSError) -> OutputError:
    names = " and ".join(f"{what} {path}" for what, path in targets)
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"cannot write {names}: {reason}.")


@contextlib.contextmanager
def atomic_path(path: str | Path, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`.

    On any exception (or a kill) the target is untouched and the temporary file is removed
    (a kill -9 can leave a hidden ``.<name>.*.tmp`` sibling, never a partial target).

    This is the one place where an `OSError` while writing (read-only folder, disk full, the
    target replaced by a folder) becomes an `OutputError` naming the path and the reason;
    callers do not translate it. An error raised in the body names every atomic write still
    open around it (the body may be writing all of them).
    """
    path = prepare_output(path, what)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _cannot_write(((what, path),), exc) from exc
    tmp_path = Path(tmp)
    token = _OPEN.set((*_OPEN.get(), (what, path)))
    try:
        try:
            yield tmp_path
        except OSError as exc:
            raise _cannot_write(_OPEN.get(), exc) from exc
        finally:
            _OPEN.reset(token)
        with contextlib.suppress(OSError):  # keep the usual permissions of a new file
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        try:
            os.replace(tmp_path, path)
        except OSError as exc:
            raise _cannot_write(((what, path),), exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_text_atomic(path: str | Path, text: str, what: str = "output") -> Path:
    """Write `text` (UTF-8) to `path` atomically; return the path."""
    with atomic_path(path, what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_frame_atomic(frame, path: str | Path, what: str = "output", **kwargs) -> Path:
    """Write a DataFrame as CSV (or Parquet by extension) to `path` atomically."""
    path = Path(path)
    with atomic_path(path, what) as tmp:
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, **kwargs)
        else:
            frame.to_csv(tmp, **kwargs)
    return path
