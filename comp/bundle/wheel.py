"""A wheel of the running comp, built from its installed files (no source tree, no network, no build tool).

The wheel holds the ``comp`` package as it is imported now and the distribution's own metadata
(dependencies, the ``comp`` command), so ``pip install --no-index --no-deps comp-<v>-py3-none-any.whl`` in an
offline notebook gives the same code that exported the bundle. Entries carry a fixed timestamp, so the
same code gives the same wheel bytes.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

import comp
from comp.errors import BundleError

_EPOCH = (1980, 1, 1, 0, 0, 0)
_WHEEL = "Wheel-Version: 1.0\nGenerator: comp export\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _package_files() -> list[tuple[str, bytes]]:
    root = Path(comp.__file__).resolve().parent
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix not in (".pyc", ".pyo"))
    return [(f"comp/{p.relative_to(root).as_posix()}", p.read_bytes()) for p in files]


def _metadata(version: str) -> tuple[str, str]:
    """(METADATA, entry_points.txt) of the installed distribution; a minimal pair when comp runs from source."""
    try:
        dist = importlib.metadata.distribution("comp")
        if dist.version == version:
            # a wheel install has METADATA; an egg-info (a source checkout on sys.path) has PKG-INFO
            metadata = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
            return metadata, dist.read_text("entry_points.txt") or ""
    except importlib.metadata.PackageNotFoundError:
        pass
    return (f"Metadata-Version: 2.1\nName: comp\nVersion: {version}\n",
            "[console_scripts]\ncomp = comp.cli:main\n")


def build_wheel(out_dir: Path) -> Path:
    """Write ``comp-<version>-py3-none-any.whl`` into ``out_dir``; its path.

    Raises:
        BundleError: The installed metadata has no Name/Version (a broken install).
    """
    version = comp.__version__
    metadata, entry_points = _metadata(version)
    if "Name:" not in metadata or "Version:" not in metadata:
        raise BundleError("comp's installed metadata has no name or version; reinstall comp (pip install -e .)")
    info = f"comp-{version}.dist-info"
    entries = [*_package_files(), (f"{info}/METADATA", metadata.encode()), (f"{info}/WHEEL", _WHEEL.encode()),
               (f"{info}/entry_points.txt", entry_points.encode()), (f"{info}/top_level.txt", b"comp\n")]
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries) + f"{info}/RECORD,,\n"
    path = Path(out_dir) / f"comp-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in [*entries, (f"{info}/RECORD", record.encode())]:
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
    return path
