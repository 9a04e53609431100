"""The bundle's manifest: its format, the comp and package versions it was made with, every file's sha256.

``manifest.json`` is written last (a folder without one is not a bundle) and checked first: a file
that is missing or differs from its checksum stops ``comp predict`` before anything is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path

from comp import __version__
from comp.errors import BundleError

FORMAT = 1  # bumped when a bundle can no longer be read by an older comp (or an older one by a newer)
MANIFEST = "manifest.json"
PLAN = "plan.json"  # the frozen choices and members (comp.bundle.export)
PACKAGES = ("torch", "torchvision", "timm", "albumentations", "opencv-python-headless", "numpy", "pandas",
            "scikit-learn", "pydantic", "safetensors", "pyyaml", "click")


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Python's and each runtime package's installed version (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def manifest_text(root: Path, files: list[str], trained_with: dict[str, str | None]) -> str:
    """``manifest.json`` for the files (relative paths under ``root``) already written there."""
    manifest = {
        "format": FORMAT,
        "comp_version": __version__,
        "trained_with": trained_with,
        "exported_with": package_versions(),
        "files": {name: {"sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size}
                  for name in sorted(files)},
    }
    return json.dumps(manifest, indent=2) + "\n"


def read_manifest(root: Path) -> dict:
    """The manifest of the bundle at ``root``, its format checked (not yet its files).

    Raises:
        BundleError: No manifest, an unreadable one, or a format this comp does not read.
    """
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise BundleError(f"{root}: no such folder; give the folder comp export wrote (a Kaggle dataset's path)")
    if not path.is_file():
        raise BundleError(f"{root}: not a comp bundle (no {MANIFEST}); make one with comp export --out {root}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        fmt, made_by = manifest["format"], manifest.get("comp_version", "?")
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"{path}: not a readable bundle manifest; export the bundle again") from None
    if fmt != FORMAT:
        raise BundleError(f"{root}: bundle format {fmt} (made by comp {made_by}), but this comp {__version__} reads "
                          f"format {FORMAT}; install the bundle's own comp first: "
                          f"pip install --no-index --no-deps {root}/comp-*.whl")
    return manifest


def verify_files(root: Path, manifest: dict) -> int:
    """Check every listed file's size and sha256; the number of files checked.

    Raises:
        BundleError: A listed file is missing or differs (names the first one).
    """
    for name, entry in manifest["files"].items():
        path = Path(root) / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST} but missing; copy (or upload) the whole bundle folder")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise BundleError(f"{path}: checksum mismatch (the file was changed or damaged in transfer); "
                              f"upload the bundle again or export it again")
    return len(manifest["files"])
