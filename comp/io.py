"""Small file helpers: atomic writes and content hashes."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path


def _stage(path: Path, data: bytes) -> str:
    """Write ``data`` to a synced temp file beside ``path`` and return its name (nothing left on failure).

    Raises:
        PermissionError: ``path`` is a read-only file (comp does not replace it).
    """
    if path.is_file() and not path.stat().st_mode & 0o222:  # root may write anyway: honour the mode bits
        raise PermissionError(errno.EACCES, "is read-only, so comp does not replace it", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the mode a plain open() would
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename.

    A crash or kill mid-write leaves the old file (or none), never a truncated one. A read-only file is
    not replaced (PermissionError).
    """
    path = Path(path)
    tmp = _stage(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` as UTF-8 atomically (see :func:`atomic_write_bytes`); returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_texts(texts: dict[Path, str]) -> None:
    """Write several files so that a failure while writing (a full disk) changes none of them.

    Every text goes to a synced temp file beside its target first; only when all are written are
    they renamed over their targets, one after the other.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in texts.items():
            staged.append((_stage(Path(path), text.encode("utf-8")), Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
