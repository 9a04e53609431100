"""Shared fixtures: tiny competition folders written on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: the tiny models here gain nothing from more, and a second OpenMP thread on a
    busy 2-core machine can make a step tens of times slower (spinning threads fight for the cores); so
    ``train.threads: auto`` means 1 here too."""
    import torch

    import comp.device as device

    previous, resolve = torch.get_num_threads(), device.resolve_threads
    torch.set_num_threads(1)
    device.resolve_threads = lambda setting, workers=0: 1 if setting == "auto" else resolve(setting, workers)
    yield
    device.resolve_threads = resolve
    torch.set_num_threads(previous)


def write_image(path: Path, value: int, size: int = 16, channels: int = 3, seed: int = 0) -> None:
    """A small image whose mean encodes ``value`` (so classes are learnable), plus seeded noise."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 40, size=(size, size, channels))
    img = np.clip(value + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img if channels == 3 else img[..., 0])
    assert ok
    path.write_bytes(buf.tobytes())


@pytest.fixture
def decodes(monkeypatch):
    """Count calls of the decoder the cache uses."""
    import comp.data.cache as cache_mod
    from comp.data.images import read_image

    calls: list[Path] = []

    def counting(path, channels):
        calls.append(Path(path))
        return read_image(path, channels)

    monkeypatch.setattr(cache_mod, "read_image", counting)
    return calls


@pytest.fixture
def make_competition(tmp_path):
    """Factory: ``make_competition(counts={"a": 6, "b": 4}, ext="png", groups=None, n_test=5)`` -> root.

    Writes train/ and test/ images, train.csv (id,label[,patient]) and sample_submission.csv.
    """

    def build(counts=None, ext="png", groups=None, n_test=5, root=None, size=16, label_values=None):
        counts = counts or {"cat": 6, "dog": 6, "eel": 6}
        root = Path(root or tmp_path / "competition")
        rows = []
        for c_idx, (label, n) in enumerate(counts.items()):
            for i in range(n):
                image_id = f"{label}_{i:03d}"
                value = (label_values or {}).get(label, 30 + 60 * c_idx)
                write_image(root / "train" / f"{image_id}.{ext}", value, size=size, seed=len(rows))
                rows.append({"id": image_id, "label": label})
        train = pd.DataFrame(rows)
        if groups is not None:
            train["patient"] = groups(train)
        train.to_csv(root / "train.csv", index=False)
        test_ids = [f"t{i:03d}" for i in range(n_test)]
        for i, tid in enumerate(test_ids):
            write_image(root / "test" / f"{tid}.{ext}", 30 + 60 * (i % len(counts)), size=size, seed=1000 + i)
        first = next(iter(counts))
        pd.DataFrame({"id": test_ids, "label": first}).to_csv(root / "sample_submission.csv", index=False)
        return root

    return build


@pytest.fixture
def write_config(tmp_path):
    """Factory: ``write_config(root, **sections)`` -> path of a config YAML pointing at ``root``."""

    def build(root, name="exp", **sections):
        raw = {"name": name, "data": {"root": str(root), "image_size": 16}, "folds": {"name": name, "k": 3}}
        for key, value in sections.items():
            raw.setdefault(key, {}).update(value)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return build


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty project folder (folds/, runs/, submissions/ are created there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


TINY_MODEL = "timm:test_resnet"  # 0.37M parameters: for tests of the loop, not of the model


@pytest.fixture
def tiny_project(make_competition, write_config, in_tmp):
    """Factory: a 3-class competition (9 images each), a config using :data:`TINY_MODEL`, and its folds.

    ``tiny_project(**base)`` merges ``base`` sections into the defaults; the returned ``config(**sections)``
    writes variants of that config.
    """
    from click.testing import CliRunner

    from comp.cli import main

    def build(**base_sections):
        root = make_competition(counts={"a": 9, "b": 9, "c": 9})

        def config(**sections):
            base = {"model": {"name": TINY_MODEL}, "train": {"epochs": 2, "batch_size": 8, "lr": 0.01},
                    "data": {"cache_dir": str(in_tmp / "cache")}}
            for extra in (base_sections, sections):
                for key, value in extra.items():
                    base.setdefault(key, {}).update(value)
            return write_config(root, **base)

        path = config()
        result = CliRunner().invoke(main, ["folds", "make", "--config", str(path)])
        assert result.exit_code == 0, result.output
        return {"root": root, "config": config, "path": path, "dir": in_tmp}

    return build
