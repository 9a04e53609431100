"""Building the image cache ahead: every core, only what is missing, interruptible, with progress."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from comp.cli import main
from comp.cli.common import progress_bar
from comp.data.cache import ImageCache, create_cache
from comp.data.prebuild import build_cache, missing, usable_cores
from comp.device import resolve_threads
from comp.errors import DataError
from tests.conftest import write_image


@pytest.fixture
def images(tmp_path) -> list[Path]:
    paths = [tmp_path / "img" / f"{i:02d}.png" for i in range(12)]
    for i, path in enumerate(paths):
        write_image(path, 20 * i, size=24, seed=i)
    return paths


def test_builds_only_the_missing_entries_once_each(tmp_path, images, decodes):
    cache = ImageCache(tmp_path / "c", 16, 3)
    cache.get(images[0])
    decodes.clear()
    built = build_cache(cache, [*images, images[3]], threads=2)  # a duplicate is decoded once
    assert (built.images, built.decoded, built.threads) == (12, 11, 2)
    assert sorted(decodes) == sorted(images[1:])
    assert missing(cache, images) == []
    again = build_cache(cache, images, threads=2)
    assert again.decoded == 0 and again.rate == 0.0
    assert again.summary("train images") == "image cache: all 12 train images cached"


def test_threads_write_the_same_entries_as_one_thread(tmp_path, images):
    one, many = ImageCache(tmp_path / "a", 16, 3), ImageCache(tmp_path / "b", 16, 3)
    build_cache(one, images, threads=1)
    build_cache(many, images, threads=4)
    for path in images:
        assert one.entry_path(path).read_bytes() == many.entry_path(path).read_bytes()


def test_progress_counts_up_to_the_total(tmp_path, images):
    seen: list[tuple[int, int]] = []
    build_cache(ImageCache(tmp_path / "c", 16, 3), images, threads=2, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (12, 12)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_an_interrupted_build_keeps_its_entries_and_the_next_one_goes_on(tmp_path, images, decodes):
    cache = ImageCache(tmp_path / "c", 16, 3)

    def interrupt(done, total):
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(cache, images, threads=1, progress=interrupt)
    kept = len(images) - len(missing(cache, images))
    assert 3 <= kept < len(images)
    assert not list((tmp_path / "c").rglob("*.tmp"))  # no torn entries
    decodes.clear()
    assert build_cache(cache, images, threads=2).decoded == len(images) - kept
    assert len(decodes) == len(images) - kept


def test_a_corrupt_image_is_named_and_the_rest_stops(tmp_path, images):
    images[5].write_bytes(b"not an image")
    with pytest.raises(DataError, match="05.png"):
        build_cache(ImageCache(tmp_path / "c", 16, 3), images, threads=2)


def test_auto_threads_leave_a_core_per_loader_worker(monkeypatch):
    import comp.data.prebuild as prebuild

    monkeypatch.setattr(prebuild, "usable_cores", lambda: 16)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads("auto", 0) is None  # torch's default reads OMP_NUM_THREADS: the user's choice stands
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads("auto", 0) == 16
    assert resolve_threads("auto", 6) == 10
    assert resolve_threads("auto", 40) == 1
    assert resolve_threads(3, 6) == 3 and resolve_threads(None, 6) is None
    assert usable_cores() >= 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_rate_and_eta_on_a_terminal_only():
    assert progress_bar("x", stream=io.StringIO()) is None
    screen = _Terminal()
    show = progress_bar("train images", stream=screen, min_interval=0.0)
    show(5, 10)
    show(10, 10)
    text = screen.getvalue()
    assert "\rtrain images [###############" in text and "5/10" in text and "ETA 0:00" in text
    assert text.endswith("\n") and "10/10" in text


def test_comp_data_cache_builds_train_and_test_then_train_decodes_nothing(tiny_project):
    from comp.config import load_config
    from comp.train.runner import run_training

    path = tiny_project()["path"]
    result = CliRunner().invoke(main, ["data", "cache", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "decoded 27 of 27 train images" in result.output and "decoded 5 of 5 test images" in result.output
    again = CliRunner().invoke(main, ["data", "cache", "--config", str(path)])
    assert "all 27 train images cached" in again.output
    lines: list[str] = []
    summary = run_training(load_config(path), folds=[0], log=lines.append)
    assert summary.cache.decoded == 0 and summary.cache.images == 27
    assert not any(line.startswith("image cache") for line in lines)


def test_train_builds_the_cache_before_the_first_epoch_and_says_so(tiny_project):
    from comp.config import load_config
    from comp.train.runner import run_training

    cfg = load_config(tiny_project()["path"])
    lines: list[str] = []
    summary = run_training(cfg, folds=[0], log=lines.append)
    assert summary.cache.decoded == 27
    first = next(i for i, line in enumerate(lines) if line.startswith("image cache: decoded 27 of 27 train images"))
    assert first < next(i for i, line in enumerate(lines) if "epoch" in line)
    cache = create_cache(cfg)  # at the cached size (the margin), with the run's resize settings
    assert missing(cache, sorted((Path(cfg.data.root) / "train").glob("*.png"))) == []
