"""The first pass: how fast each way of decoding a workload's images to the training size goes.

Four ways over the same training images, each from an empty cache and after one untimed read of the
files (so every way finds them in the OS page cache):

- ``comp_all``: :func:`comp.data.prebuild.build_cache` with every thread the bench was given;
- ``comp_one``: the same with one thread (what epoch 1 did when ``num_workers`` was 0);
- ``opencv_threads``: a plain thread pool of ``cv2.imread`` + ``cv2.resize`` (INTER_AREA), no cache
  writes: the ceiling of decoding alone;
- ``pil``: ``Image.open().convert("RGB").resize()`` one image after the other, as course code does.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from comp.data.cache import ImageCache
from comp.data.prebuild import build_cache


def _opencv(path: Path, size: int) -> np.ndarray:
    return cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (size, size), interpolation=cv2.INTER_AREA)


def _pil(path: Path, size: int) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB").resize((size, size), Image.BILINEAR)


def measure_cache_build(paths: Sequence[Path], size: int, threads: int, scratch: Path) -> dict:
    """Images/s of each way (see the module docstring) on ``paths``, at ``size`` px.

    Returns:
        ``{"images", "threads", "comp_all", "comp_one", "opencv_threads", "pil", "comp_all_per_thread",
        "scaling"}``: rates in images/s; ``scaling`` = comp_all / comp_one.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        path.read_bytes()  # into the page cache: every way reads warm files

    def comp_build(n: int) -> float:
        folder = Path(scratch) / f"decode-{n}"
        shutil.rmtree(folder, ignore_errors=True)
        built = build_cache(ImageCache(folder, size, 3), paths, threads=n)
        shutil.rmtree(folder, ignore_errors=True)
        return built.decoded / built.seconds

    def timed(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return len(paths) / (time.perf_counter() - start)

    out = {"images": len(paths), "threads": threads, "comp_all": comp_build(threads), "comp_one": comp_build(1)}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        out["opencv_threads"] = timed(lambda: list(pool.map(lambda p: _opencv(p, size), paths)))
    out["pil"] = timed(lambda: [_pil(p, size) for p in paths])
    out["comp_all_per_thread"] = out["comp_all"] / threads
    out["scaling"] = out["comp_all"] / out["comp_one"]
    return out
