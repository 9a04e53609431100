"""The benchmark's competitions: synthetic, deterministic, built once and cached under ``.cache/bench/``.

Three shapes of data that stress different parts of the pipeline:

- ``small``: a few hundred 224 px PNGs (the pre-shrunk uploads common on Kaggle); decoding is cheap.
- ``large``: a few hundred JPEGs of 1500-2500 px a side (fundus photos); decoding one image costs more
  than a training step on it, so the pre-resized cache decides the speed.
- ``fundus``: a few hundred 2-3 MP photos, half JPEG and half PNG (APTOS ships PNGs of ~2 MP, EyePACS
  JPEGs), meant to be trained at 224 px: the first pass (decoding into the cache) decides the wall time.

Each image is a lit disc on black (a smooth gradient across it) with ``label`` bright spots and pixel
noise: the label is learnable, and the noise keeps JPEG and PNG files near realistic sizes. Five
classes, imbalanced like the retinopathy grades (at least ``k`` images each so every fold has every class).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

FORMAT_VERSION = 1  # bump when the image synthesis changes: old caches are rebuilt
CLASS_FRACTIONS = (0.55, 0.15, 0.15, 0.1, 0.05)  # 5 grades, most images in grade 0
MIN_PER_CLASS = 5  # folds.k: every validation fold holds every class


@dataclass(frozen=True)
class WorkloadSpec:
    """What one synthetic competition holds.

    Attributes:
        name: ``small`` or ``large`` (also the folder and experiment name).
        n_train: Labelled images.
        n_test: Test images (the inference figures).
        ext: ``png``, ``jpg`` or ``mixed`` (even images JPEG, odd ones PNG).
        min_side: Smallest image side in pixels (each side is drawn in [min_side, max_side]).
        max_side: Largest image side in pixels.
        seed: Seed of every random choice (same spec, same bytes).
        jpeg_quality: JPEG quality (ignored for PNG).
        train_size: The side it is trained at, where it differs from ``--image-size`` (not in the key:
            the files do not depend on it).
    """

    name: str
    n_train: int
    n_test: int
    ext: str
    min_side: int
    max_side: int
    seed: int = 0
    jpeg_quality: int = 90
    train_size: int | None = None

    def key(self) -> str:
        """Short hash of the files' spec: the cache folder's suffix."""
        files = {k: v for k, v in asdict(self).items() if k != "train_size"}
        blob = json.dumps({**files, "version": FORMAT_VERSION}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


SPECS = {
    "small": WorkloadSpec("small", n_train=300, n_test=32, ext="png", min_side=224, max_side=224),
    "large": WorkloadSpec("large", n_train=200, n_test=32, ext="jpg", min_side=1500, max_side=2500),
    "fundus": WorkloadSpec("fundus", n_train=240, n_test=32, ext="mixed", min_side=1400, max_side=1800,
                           train_size=224),
}
QUICK_COUNTS = {"small": (60, 16), "large": (40, 12), "fundus": (40, 12)}  # (n_train, n_test) under --quick


def get_spec(name: str, quick: bool = False) -> WorkloadSpec:
    """The spec of workload ``name`` (fewer images under ``quick``; the image sizes stay real).

    Raises:
        ValueError: ``name`` is not a known workload.
    """
    if name not in SPECS:
        raise ValueError(f"unknown workload {name!r}; use one or more of {', '.join(SPECS)}")
    spec = SPECS[name]
    if quick:
        n_train, n_test = QUICK_COUNTS[name]
        spec = replace(spec, n_train=n_train, n_test=n_test)
    return spec


def class_counts(n: int) -> list[int]:
    """Images per class for ``n`` images: :data:`CLASS_FRACTIONS`, at least :data:`MIN_PER_CLASS` each."""
    counts = [max(MIN_PER_CLASS, round(f * n)) for f in CLASS_FRACTIONS[1:]]
    first = n - sum(counts)
    if first < MIN_PER_CLASS:
        raise ValueError(f"{n} images are too few for 5 classes of at least {MIN_PER_CLASS}")
    return [first, *counts]


def synth_image(label: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 BGR image: a lit disc on black with ``label`` bright spots, plus noise."""
    yy = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]  # (H, 1)
    xx = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]  # (1, W)
    cy, cx = rng.uniform(-0.1, 0.1, 2)
    radius = rng.uniform(0.8, 0.95)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2  # (H, W)
    angle = rng.uniform(0, 2 * np.pi)
    shade = (0.65 + 0.35 * (np.cos(angle) * xx + np.sin(angle) * yy)) * disc  # smooth gradient, (H, W)
    base = np.array([40, 80, 190], np.float32) * rng.uniform(0.8, 1.2, 3).astype(np.float32)  # orange-red (BGR)
    img = shade[:, :, None] * base  # (H, W, 3) float32
    img += rng.integers(0, 21, img.shape, dtype=np.uint8)  # sensor noise: uniform, sd 6, mean 10 ...
    img -= np.float32(10.0)  # ... centred (on the black background it is clipped to dim specks)
    for _ in range(label):  # the grade: bright spots, drawn last (in their bounding box only)
        r = rng.uniform(0.05, 0.12)
        sy, sx = rng.uniform(-0.5, 0.5, 2) * radius + (cy, cx)
        rows = slice(*np.searchsorted(yy[:, 0], [sy - r, sy + r]))
        cols = slice(*np.searchsorted(xx[0], [sx - r, sx + r]))
        spot = ((yy[rows] - sy) ** 2 + (xx[:, cols] - sx) ** 2) < r**2  # (h, w)
        img[rows, cols] += (0.4 * spot)[:, :, None] * base
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def file_ext(spec: WorkloadSpec, index: int) -> str:
    """The extension of image ``index`` (``mixed``: JPEG for even indices, PNG for odd ones)."""
    if spec.ext != "mixed":
        return spec.ext
    return "jpg" if index % 2 == 0 else "png"


def _write_image(path: Path, img: np.ndarray, spec: WorkloadSpec) -> None:
    ext = path.suffix[1:]
    params = [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality] if ext == "jpg" else []
    ok, buf = cv2.imencode(f".{ext}", img, params)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    path.write_bytes(buf.tobytes())


def _write_split(folder: Path, prefix: str, labels: list[int], spec: WorkloadSpec, stream: int) -> list[str]:
    """Write one image per label (in threads: numpy and OpenCV release the GIL on large arrays)."""
    folder.mkdir(parents=True)
    ids = [f"{prefix}{i:05d}" for i in range(len(labels))]

    def write(i: int) -> None:
        rng = np.random.default_rng([spec.seed, stream, i])  # per image: same bytes in any thread order
        height, width = rng.integers(spec.min_side, spec.max_side + 1, 2)
        img = synth_image(labels[i], int(height), int(width), rng)
        _write_image(folder / f"{ids[i]}.{file_ext(spec, i)}", img, spec)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(len(labels))))
    return ids


def build_competition(spec: WorkloadSpec, root: Path) -> None:
    """Write the competition folder ``root`` (train/, test/, train.csv, sample_submission.csv)."""
    train_labels = [c for c, n in enumerate(class_counts(spec.n_train)) for _ in range(n)]
    np.random.default_rng([spec.seed, 0]).shuffle(train_labels)
    test_labels = [i % len(CLASS_FRACTIONS) for i in range(spec.n_test)]
    train_ids = _write_split(root / "train", "tr", train_labels, spec, stream=1)
    test_ids = _write_split(root / "test", "te", test_labels, spec, stream=2)
    pd.DataFrame({"id": train_ids, "label": train_labels}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(root / "sample_submission.csv", index=False)


def ensure_workload(spec: WorkloadSpec, cache_root: Path) -> Path:
    """The competition folder of ``spec`` under ``cache_root``, built on first use.

    The folder is built under a temporary name and renamed into place, so a killed build is never
    taken for a finished one.

    Returns:
        ``<cache_root>/<name>-<key>/``, holding ``spec.json`` besides the competition files.
    """
    root = Path(cache_root) / f"{spec.name}-{spec.key()}"
    if (root / "spec.json").is_file():
        return root
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build_competition(spec, tmp)
    (tmp / "spec.json").write_text(json.dumps({**asdict(spec), "version": FORMAT_VERSION}, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def describe(root: Path, spec: WorkloadSpec) -> dict:
    """Facts about a built workload for the JSON: counts, format, sizes, bytes on disk."""
    files = sorted((root / "train").iterdir())
    sizes = [f.stat().st_size for f in files]
    return {
        "images_train": spec.n_train, "images_test": spec.n_test, "format": spec.ext,
        "side_px": [spec.min_side, spec.max_side], "class_counts": class_counts(spec.n_train),
        "mean_file_kb": round(float(np.mean(sizes)) / 1024, 1), "folder": str(root),
    }
