"""The embedded default competition, built from the UCI handwritten digits shipped with scikit-learn.

1,797 grey 8x8 digits, upscaled to PNGs, split 80/20 into train and test, with a
``sample_submission.csv`` and a held-back ``solution.csv`` so ``comp score`` can report a test score.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from comp.errors import DataError

TEST_FRACTION = 0.2
MARKER = ".comp-demo"  # --force replaces only a folder that holds it (or one written before it existed)
DEMO_FILES = {"train", "test", "train.csv", "solution.csv", "sample_submission.csv"}


def _check_replaceable(out: Path, force: bool) -> None:
    """Refuse to replace ``out`` unless ``force`` and it is a demo folder that comp wrote.

    Raises:
        DataError: ``out`` exists and ``force`` is off, or it is a file or a folder comp did not write.
    """
    if not force:
        raise DataError(f"{out}: already exists; pass --force to rebuild it or choose another --out")
    if not out.is_dir():
        raise DataError(f"{out}: is a file, not a demo folder; choose another --out")
    names = {p.name for p in out.iterdir()}
    if MARKER not in names and names != DEMO_FILES:
        raise DataError(f"{out}: not a demo folder written by comp (it holds {len(names)} other entries); "
                        f"--force replaces only those: choose another --out, e.g. data/demo")


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 grey image
        raise DataError(f"{path}: could not encode PNG")
    path.write_bytes(buf.tobytes())


def build_demo(out: Path, size: int = 32, seed: int = 0, force: bool = False) -> dict[str, int]:
    """Write the digits competition folder to ``out`` (atomically: built aside, then renamed).

    Returns:
        Counts: ``train``, ``test`` and ``classes``.

    Raises:
        DataError: ``out`` exists and ``force`` is off.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    out = Path(out)
    if out.exists():
        _check_replaceable(out, force)
    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # (N, 8, 8)
    ids = np.array([f"digit_{i:04d}" for i in range(len(images))])
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=TEST_FRACTION, stratify=digits.target, random_state=seed
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for split, index in (("train", np.sort(idx_train)), ("test", np.sort(idx_test))):
            (staging / split).mkdir()
            for i in index:
                big = cv2.resize(images[i], (size, size), interpolation=cv2.INTER_LINEAR)
                _write_png(staging / split / f"{ids[i]}.png", big)
        train = pd.DataFrame({"id": ids[np.sort(idx_train)], "label": digits.target[np.sort(idx_train)]})
        test_ids = ids[np.sort(idx_test)]
        solution = pd.DataFrame({"id": test_ids, "label": digits.target[np.sort(idx_test)]})
        sample = pd.DataFrame({"id": test_ids, "label": 0})
        for name, frame in (("train.csv", train), ("solution.csv", solution), ("sample_submission.csv", sample)):
            frame.to_csv(staging / name, index=False, lineterminator="\n")
        (staging / MARKER).write_text("written by `comp data demo`; --force replaces this folder\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"train": len(idx_train), "test": len(idx_test), "classes": len(digits.target_names)}
