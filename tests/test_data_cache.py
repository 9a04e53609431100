"""The pre-resized image cache: hits, invalidation, atomic files, workers."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from comp.data.cache import ImageCache
from comp.data.dataset import ImageDataset
from comp.data.images import read_image, resize_image
from comp.errors import DataError


def _write_png(path: Path, seed: int, shape=(20, 24, 3)) -> Path:
    img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    buf.tofile(path)
    return path


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("*.npy") if not p.name.startswith("."))


def test_hit_does_not_decode_again_and_survives_a_new_instance(tmp_path, decodes):
    src = _write_png(tmp_path / "a.png", 0)
    cache = ImageCache(tmp_path / "cache", 16, 3)
    first = cache.get(src)
    assert first.shape == (16, 16, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, resize_image(read_image(src, 3), 16))
    np.testing.assert_array_equal(cache.get(src), first)
    np.testing.assert_array_equal(ImageCache(tmp_path / "cache", 16, 3).get(src), first)
    assert len(decodes) == 1 and (cache.hits, cache.misses) == (1, 1)
    [entry] = _entries(tmp_path / "cache")
    np.testing.assert_array_equal(np.load(entry), first)  # a plain .npy anyone can read


def test_relative_and_absolute_paths_share_an_entry(tmp_path, decodes, monkeypatch):
    src = _write_png(tmp_path / "a.png", 0)
    cache = ImageCache(tmp_path / "cache", 16, 3)
    cache.get(src)
    monkeypatch.chdir(tmp_path)
    cache.get(Path("a.png"))
    assert len(decodes) == 1


def test_touch_rebuilds_and_removes_the_stale_entry(tmp_path, decodes):
    src = _write_png(tmp_path / "a.png", 0)
    cache = ImageCache(tmp_path / "cache", 16, 3)
    cache.get(src)
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    cache.get(src)
    assert len(decodes) == 2
    assert len(_entries(tmp_path / "cache")) == 1


def test_content_rewrite_rebuilds_even_with_the_same_mtime(tmp_path, decodes):
    src = _write_png(tmp_path / "a.png", 0, shape=(20, 24, 3))
    cache = ImageCache(tmp_path / "cache", 16, 3)
    old = cache.get(src)
    st = src.stat()
    _write_png(src, 1, shape=(30, 30, 3))  # other pixels, other byte size
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the size tells
    new = cache.get(src)
    assert len(decodes) == 2
    np.testing.assert_array_equal(new, resize_image(read_image(src, 3), 16))
    assert not np.array_equal(new, old)


def test_same_size_rewrite_rebuilds_by_mtime(tmp_path, decodes):
    src = _write_png(tmp_path / "a.png", 0)
    cache = ImageCache(tmp_path / "cache", 16, 3)
    cache.get(src)
    st = src.stat()
    img = read_image(src, 3)[:, :, ::-1].copy()
    img[0, 0] ^= 1
    cv2.imencode(".png", img)[1].tofile(src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    np.testing.assert_array_equal(cache.get(src), resize_image(read_image(src, 3), 16))
    assert len(decodes) == 2


def test_sizes_and_channels_are_keyed_separately(tmp_path, decodes):
    src = _write_png(tmp_path / "a.png", 0)
    assert ImageCache(tmp_path / "cache", 16, 3).get(src).shape == (16, 16, 3)
    assert ImageCache(tmp_path / "cache", 8, 3).get(src).shape == (8, 8, 3)
    assert ImageCache(tmp_path / "cache", 8, 1).get(src).shape == (8, 8, 1)
    assert len(decodes) == 3
    assert len(_entries(tmp_path / "cache")) == 3
    ImageCache(tmp_path / "cache", 16, 3).get(src)
    assert len(decodes) == 3


def test_damaged_entry_is_rebuilt(tmp_path, decodes):
    src = _write_png(tmp_path / "a.png", 0)
    cache = ImageCache(tmp_path / "cache", 16, 3)
    good = cache.get(src)
    entry = cache.entry_path(src)
    entry.write_bytes(entry.read_bytes()[:100])
    np.testing.assert_array_equal(cache.get(src), good)
    assert len(decodes) == 2


def test_missing_source_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="gone.png"):
        ImageCache(tmp_path / "cache", 16, 3).get(tmp_path / "gone.png")


def test_unwritable_cache_raises_data_error(tmp_path):
    src = _write_png(tmp_path / "a.png", 0)
    (tmp_path / "cache").write_text("a file where the folder should be")
    with pytest.raises(DataError, match=r"cache: cannot write the image cache \(.*\); set data.cache_dir"):
        ImageCache(tmp_path / "cache", 16, 3).get(src)


def test_memory_mode_skips_the_file_and_returns_copies(tmp_path, decodes, monkeypatch):
    src = _write_png(tmp_path / "a.png", 0)
    cache = ImageCache(tmp_path / "cache", 16, 3, memory=True)
    first = cache.get(src)
    first[:] = 0  # callers may write into what they get
    monkeypatch.setattr(ImageCache, "_load", lambda self, entry: pytest.fail("read the file"))
    again = cache.get(src)
    assert again.any() and len(decodes) == 1
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._store == {} and clone.size == 16  # workers refill their own


def test_warm_builds_in_parallel_once(tmp_path, decodes):
    srcs = [_write_png(tmp_path / f"{i}.png", i) for i in range(12)]
    cache = ImageCache(tmp_path / "cache", 16, 3)
    assert cache.warm(srcs, num_workers=2) == 12
    assert cache.warm(srcs, num_workers=2) == 0
    assert cache.warm(srcs) == 0
    assert len(decodes) == 12 and len(_entries(tmp_path / "cache")) == 12


def test_works_in_a_dataloader_with_two_workers(tmp_path):
    srcs = [_write_png(tmp_path / f"{i}.png", i) for i in range(10)]
    cache = ImageCache(tmp_path / "cache", 16, 3)
    dataset = ImageDataset(srcs, list(range(10)), cache, transform=None)
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    images = torch.cat([x for x, _ in loader])  # (10, 3, 16, 16), built by the workers
    assert len(_entries(tmp_path / "cache")) == 10
    expected = np.stack([resize_image(read_image(p, 3), 16) for p in srcs]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(images.numpy(), expected)
    again = torch.cat([x for x, _ in loader])  # now served from the entries
    assert torch.equal(again, images)
    assert not list((tmp_path / "cache").rglob(".*.tmp"))
