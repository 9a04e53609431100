"""One writer per experiment: an advisory lock on ``runs/<exp>/.lock`` that dies with its process.

``comp train`` holds it exclusively; ``comp submit`` holds it shared (readers do not block each other,
but never read a run that is being written). A refused command names the PID and command written
into the lock file by its latest holder (with several readers, the last one to start).
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from comp.errors import LockError

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


def _open_lock_file(path: Path, shared: bool) -> int | None:
    """The lock file's descriptor; None for a reader that cannot open it (a read-only run)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if not shared:
            raise
        return None


def _take(fd: int, path: Path, run_dir: Path, shared: bool) -> None:
    """Lock ``fd`` without waiting and write this process into the file.

    Raises:
        LockError: Another process holds the lock (naming it, from the file).
    """
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        what = "being written by" if shared else "in use by"
        raise LockError(f"{run_dir}: {what} {_holder(path)}; wait for it to finish (or stop it), "
                        f"then run the command again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"PID {os.getpid()} ({' '.join(['comp', *sys.argv[1:]])[:200]})\n".encode(), 0)


@contextmanager
def experiment_lock(run_dir: Path, shared: bool = False) -> Iterator[None]:
    """Hold the experiment's lock for the ``with`` block.

    A reader (``shared``) of a run that does not exist, or of a read-only one (runs uploaded as a
    Kaggle dataset), holds nothing. A writer that had to create ``run_dir`` removes it again when the
    block fails and left nothing but the lock.

    Raises:
        LockError: Another process holds it (exclusively, or at all when ``shared`` is off).
    """
    run_dir = Path(run_dir)
    if shared and not run_dir.is_dir():
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = _open_lock_file(path, shared)
    if fd is None:
        yield  # a read-only run cannot be written to, so there is nothing to exclude
        return
    ok = False
    try:
        _take(fd, path, run_dir, shared)
        yield
        ok = True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
        if created and not ok and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
            path.unlink(missing_ok=True)
            run_dir.rmdir()
