"""Building the image cache ahead of training and prediction, with every usable core.

Decoding a 2-5 MP photo costs 50-100 ms; 35k of them, one at a time inside the first epoch, are an
hour. OpenCV releases the GIL while it decodes and resizes, so threads scale with the cores and the
model step is not waiting on them. Entries are written atomically (:class:`ImageCache`), so an
interrupted build keeps what it finished and the next one starts where it stopped.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from comp.data.cache import ImageCache

Progress = Callable[[int, int], None]  # (done, total) after each decoded image


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, as containers and ``taskset`` set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class CacheBuild:
    """What one build did.

    Attributes:
        images: Source images asked for.
        decoded: Entries decoded now (the rest were cached already).
        seconds: Wall time of the build (the check for missing entries included).
        threads: Decoding threads used.
    """

    images: int
    decoded: int
    seconds: float
    threads: int

    @property
    def rate(self) -> float:
        """Decoded images per second (0 when nothing was decoded)."""
        return self.decoded / self.seconds if self.decoded and self.seconds > 0 else 0.0

    def summary(self, what: str = "images") -> str:
        """One line for logs: what was decoded, how fast, with how many threads."""
        if not self.decoded:
            return f"image cache: all {self.images} {what} cached"
        return (f"image cache: decoded {self.decoded} of {self.images} {what} in {self.seconds:.1f} s "
                f"({self.rate:.1f} img/s, {self.rate / self.threads:.1f} per thread, {self.threads} threads)")


def missing(cache: ImageCache, paths: Sequence[Path]) -> list[Path]:
    """The sources (each once, in order) with no entry in ``cache``: a ``stat`` each, nothing is read.

    Raises:
        DataError: A source does not exist.
    """
    unique = dict.fromkeys(Path(p) for p in paths)
    return [p for p in unique if not cache.entry_path(p).is_file()]


def build_cache(cache: ImageCache, paths: Sequence[Path], threads: int | None = None,
                progress: Progress | None = None) -> CacheBuild:
    """Decode every source of ``paths`` that has no cache entry yet, in ``threads`` threads.

    Args:
        cache: The cache to fill (its size, channels and folder).
        paths: Source images (duplicates are decoded once).
        threads: Decoding threads; None: every usable core.
        progress: Called with (done, total) after each decoded image, from the calling thread.

    Returns:
        What was done.

    Raises:
        DataError: A source is missing or cannot be decoded, or the cache cannot be written (the
            first such error; the images still queued are not decoded).
        KeyboardInterrupt: Interrupted; the finished entries stay, the queued ones are dropped.
    """
    start = time.perf_counter()
    todo = missing(cache, paths)
    threads = max(1, min(threads or usable_cores(), len(todo) or 1))
    if todo:
        _decode(cache, todo, threads, progress)
    return CacheBuild(len(dict.fromkeys(paths)), len(todo), time.perf_counter() - start, threads)


def _decode(cache: ImageCache, todo: list[Path], threads: int, progress: Progress | None) -> None:
    """Decode ``todo`` with a pool of ``threads``; at most a few images per thread are queued at a time."""
    done, lock = [0], threading.Lock()

    def one(path: Path) -> None:
        cache.get(path)
        with lock:
            done[0] += 1

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="comp-cache")
    pending: set = set()
    reported = 0
    try:
        queue = iter(todo)
        for path in queue:
            pending.add(pool.submit(one, path))
            if len(pending) >= 4 * threads:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                reported = _settle(finished, done[0], len(todo), reported, progress)
        finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
        _settle(finished, done[0], len(todo), reported, progress)
        for future in pending:  # an error stopped the wait early: wait for (and raise from) the rest
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _settle(finished: set, done: int, total: int, reported: int, progress: Progress | None) -> int:
    """Raise the first error among ``finished``; report progress; the count reported."""
    for future in finished:
        future.result()
    if progress is not None and done != reported:
        progress(done, total)
    return done
