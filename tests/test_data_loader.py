"""Loaders: batches and augmentations as a function of (seed, epoch), workers, device transfer."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import comp.data.loader as loader_mod
from comp.config import AugmentConfig
from comp.data.augment import build_transforms
from comp.data.balance import make_sampler
from comp.data.cache import ImageCache
from comp.data.dataset import ImageDataset
from comp.data.loader import create_loader, resolve_num_workers, set_epoch, to_device

CPU = torch.device("cpu")
N = 24


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        path = root / f"{i}.png"
        cv2.imencode(".png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))[1].tofile(path)
        paths.append(path)
    return paths


def _dataset(files, tmp_path, preset="medium", labels=True) -> ImageDataset:
    transform = build_transforms(AugmentConfig(preset=preset), train=True)
    cache = ImageCache(tmp_path / "cache", 12, 3)
    return ImageDataset(files, [i % 3 for i in range(N)] if labels else None, cache, transform)


def _epoch(loader, epoch=None) -> tuple[torch.Tensor, torch.Tensor]:
    if epoch is not None:
        set_epoch(loader, epoch)
    batches = list(loader)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def _loader(dataset, **kw):
    kw.setdefault("device", CPU)
    return create_loader(dataset, 5, **kw)


def test_items_are_contiguous_uint8_chw(files, tmp_path):
    image, label = _dataset(files, tmp_path)[(3, 12345)]
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 12) and image.is_contiguous()
    assert label == 0
    assert _dataset(files, tmp_path, labels=False)[3][1] == -1


def test_same_seed_same_batches_and_augmentations(files, tmp_path):
    ds = _dataset(files, tmp_path)
    a = _epoch(_loader(ds, shuffle=True, seed=7), 0)
    b = _epoch(_loader(ds, shuffle=True, seed=7), 0)
    c = _epoch(_loader(ds, shuffle=True, seed=8), 0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_epochs_differ_in_order_and_augmentation(files, tmp_path):
    loader = _loader(_dataset(files, tmp_path), shuffle=False, seed=0)
    x0, y0 = _epoch(loader, 0)
    x1, y1 = _epoch(loader, 1)
    assert torch.equal(y0, y1)  # same order (no shuffle) ...
    assert not torch.equal(x0, x1)  # ... other augmentations
    shuffled = _loader(_dataset(files, tmp_path, preset="none"), shuffle=True, seed=0)
    assert not torch.equal(_epoch(shuffled, 0)[0], _epoch(shuffled, 1)[0])


def test_epoch_n_is_reproducible_in_isolation(files, tmp_path):
    ds = _dataset(files, tmp_path)
    full = _loader(ds, shuffle=True, seed=3)
    history = [_epoch(full) for _ in range(3)]  # epochs count up without set_epoch
    resumed = _loader(ds, shuffle=True, seed=3)
    x2, y2 = _epoch(resumed, 2)
    assert torch.equal(x2, history[2][0]) and torch.equal(y2, history[2][1])
    assert not torch.equal(x2, history[1][0])


def test_workers_do_not_change_the_batches(files, tmp_path):
    ds = _dataset(files, tmp_path)
    single = _epoch(_loader(ds, shuffle=True, seed=5), 4)
    loader = _loader(ds, shuffle=True, seed=5, num_workers=2)
    assert loader.persistent_workers and not loader.pin_memory
    multi = [_epoch(loader, e) for e in (3, 4)]  # the same persistent workers serve both epochs
    assert torch.equal(multi[1][0], single[0]) and torch.equal(multi[1][1], single[1])
    assert not torch.equal(multi[0][0], single[0])


class _ParentMark(torch.utils.data.Dataset):
    """Items report a global that the parent sets after it starts: a forked worker sees it, a spawned one not."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return getattr(loader_mod, "_parent_mark", 0)


def _marks_seen_by_workers() -> list[int]:
    loader_mod._parent_mark = 42
    return [int(v) for batch in create_loader(_ParentMark(), 2, num_workers=2, device=CPU) for v in batch]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_workers_are_forked_even_under_a_spawned_parent():
    """A spawned process (comp tune --n-workers, the benchmark's isolated run) passes spawn on to its
    DataLoader workers, which then import torch again before the first batch: 15 s for 8 workers on 2 cores.
    comp forks them whatever the parent's default."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_marks_seen_by_workers).result() == [42, 42, 42, 42]
    loader = create_loader(_ParentMark(), 2, num_workers=1, device=CPU)
    assert loader.multiprocessing_context.get_start_method() == "fork"


def test_weighted_sampler_is_reseeded_per_epoch(files, tmp_path):
    ds = _dataset(files, tmp_path, preset="none")
    labels = np.array([0] * 20 + [1] * 4)

    def drawn(epoch):
        sampler = make_sampler(labels, 1.0, num_samples=60, generator=torch.Generator().manual_seed(999))
        loader = _loader(ds, sampler=sampler, seed=1)
        assert len(loader) == 12
        return _epoch(loader, epoch)[0]

    assert torch.equal(drawn(2), drawn(2))
    assert not torch.equal(drawn(2), drawn(3))


def test_shuffle_and_sampler_are_exclusive(files, tmp_path):
    sampler = make_sampler(np.array([0, 1] * 12), 1.0)
    with pytest.raises(ValueError, match="exclusive"):
        _loader(_dataset(files, tmp_path), shuffle=True, sampler=sampler)


def test_set_epoch_refuses_foreign_loaders():
    with pytest.raises(TypeError):
        set_epoch(torch.utils.data.DataLoader(list(range(3))), 1)


def test_resolve_num_workers(monkeypatch):
    assert resolve_num_workers(3) == 3
    assert resolve_num_workers(0) == 0
    for cores, expected in [(1, 0), (2, 0), (4, 3), (8, 7), (32, 8)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert resolve_num_workers("auto") == expected
    for bad in (-1, "four", True):
        with pytest.raises(ValueError):
            resolve_num_workers(bad)


def test_to_device_channels_last():
    batch = (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([1, 2]))
    x, y = to_device(batch, CPU, channels_last=True)
    assert x.dtype == torch.uint8 and x.is_contiguous(memory_format=torch.channels_last)
    assert y.tolist() == [1, 2]
