"""DataLoaders whose batches and augmentations are a function of (seed, epoch) alone.

Seeding protocol: :func:`create_loader` wraps the order (sequential, shuffled, or any sampler
given, e.g. a WeightedRandomSampler) in an :class:`EpochSampler`. Each epoch it seeds a fresh
generator from ``(seed, epoch)``, draws the order and one seed per position, and yields
``(index, sample_seed)`` keys; :class:`~comp.data.dataset.ImageDataset` seeds the albumentations
pipeline from ``sample_seed``. So epoch N has the same batches and the same augmentations whatever
ran before it and however many workers load it: a run resumed at epoch N reproduces it exactly.
(albumentations 2 draws from its own generators, never from numpy's or Python's global state, so
seeding those, as the usual worker_init_fn does, would not be enough.)

The engine calls ``set_epoch(loader, epoch)`` before iterating each epoch::

    loader = create_loader(ds, 64, shuffle=True, num_workers=resolve_num_workers("auto"), device=dev, seed=cfg.seed)
    for epoch in range(start_epoch, epochs):
        set_epoch(loader, epoch)
        for batch in loader:
            x, y = to_device(batch, dev, channels_last=True)
            x = normalize_batch(x, mean, std)

Without ``set_epoch`` the epochs count 0, 1, 2, ... from the loader's creation.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import sys
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def derive_seed(*parts: object) -> int:
    """A well-mixed 62-bit seed from any parts (e.g. ``(seed, epoch, "order")``), stable across runs."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)`` (or bare indices), each epoch determined by ``(seed, epoch)``.

    Args:
        num_items: Dataset length (used when ``sampler`` is None).
        shuffle: Random permutation each epoch; else 0..n-1 in order. Ignored with ``sampler``.
        sampler: An inner sampler giving the indices. If it has a ``generator`` attribute
            (RandomSampler, WeightedRandomSampler, ...) that is replaced each epoch by one seeded
            from ``(seed, epoch)``; if it has ``set_epoch`` (DistributedSampler) that is called.
        seed: Base seed of the run.
        sample_seeds: Yield ``(index, sample_seed)`` keys rather than bare indices.
    """

    def __init__(self, num_items: int, *, shuffle: bool = False, sampler: Sampler | None = None,
                 seed: int = 0, sample_seeds: bool = True):
        self.num_items = num_items
        self.shuffle = shuffle
        self.sampler = sampler
        self.seed = seed
        self.sample_seeds = sample_seeds
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sampler) if self.sampler is not None else self.num_items

    def __iter__(self) -> Iterator[Any]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        rank = getattr(self.sampler, "rank", 0)  # distinct augmentations on each DDP rank
        order = self._order(epoch)
        if not self.sample_seeds:
            return iter(order)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, rank, "augment"))
        seeds = torch.randint(0, 2**62, (len(order),), generator=gen).tolist()
        return iter(list(zip(order, seeds)))

    def _order(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, "order"))
        if self.sampler is None:
            if self.shuffle:
                return torch.randperm(self.num_items, generator=gen).tolist()
            return list(range(self.num_items))
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.sampler, "generator"):
            self.sampler.generator = gen
        return [int(i) for i in self.sampler]


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make the next pass over ``loader`` (from :func:`create_loader`) produce epoch ``epoch``."""
    sampler = loader.sampler
    if not isinstance(sampler, EpochSampler):
        raise TypeError("set_epoch needs a loader made by comp.data.create_loader")
    sampler.set_epoch(epoch)
    if loader.generator is not None:  # base seed of non-persistent workers, for worker-side randomness
        loader.generator.manual_seed(derive_seed(sampler.seed, epoch, "workers"))


def start_epoch(loader: DataLoader, epoch: int) -> Iterator:
    """:func:`set_epoch`, then the epoch's batch iterator: with workers, loading starts at once.

    Started ahead of use (the training loop starts epoch N+1 before it validates epoch N), the workers
    fill their prefetch queue while the GPU is busy elsewhere, so the epoch's first batch is waiting
    instead of costing a full batch's load and collate on the critical path. On a GPU that latency is
    what short epochs lose (about 12 ms of an 80 ms epoch, measured on an H100). With no workers
    nothing is loaded ahead, and the batches are the same either way: they depend on (seed, epoch) alone.
    """
    set_epoch(loader, epoch)
    return iter(loader)


def _seed_worker(worker_id: int) -> None:
    """Seed a worker's global RNGs, and its copy of the dataset's transform, from torch's per-worker seed.

    Items fetched with sample seeds do not depend on this; it keeps workers from sharing one
    random stream for anything else (forked workers start with identical copies of every RNG).
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def worker_context() -> multiprocessing.context.BaseContext | None:
    """How DataLoader workers start: forked on Linux, whatever the calling process's default.

    A worker that is forked starts in milliseconds with everything already imported; a spawned (or
    forkserver) one imports torch, OpenCV and albumentations again, which took 15 s for 8 workers on a
    2-core machine and ~8 s on a 16-core GPU machine, before the first batch. The default start
    method is not always fork: a process started with spawn (``comp tune --n-workers``, the benchmark's
    isolated run) passes spawn on to its children, and Python 3.14 makes forkserver the Linux default.
    Workers only read images and never touch CUDA, so forking them from a CUDA process is safe.
    Elsewhere (macOS, Windows) fork is unsafe or missing and the platform's default is kept (None).
    """
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return None


def resolve_num_workers(setting: int | Literal["auto"]) -> int:
    """DataLoader worker processes for ``data.num_workers``.

    ``"auto"``: the usable cores (``os.sched_getaffinity``) minus one for the main process, capped at
    8; but 0 on machines with 2 cores or fewer, where a worker only takes a core from the model step
    (cached images cost ~0.1 ms each to load and augment, the step several ms per image).

    Args:
        setting: ``"auto"`` or an explicit count (>= 0), returned as is.

    Returns:
        The number of workers.
    """
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
            raise ValueError(f"num_workers must be 'auto' or an int >= 0, got {setting!r}")
        return setting
    from comp.data.prebuild import usable_cores

    cores = usable_cores()
    if cores <= 2:
        return 0
    return min(cores - 1, 8)


def create_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, sampler: Sampler | None = None,
                  drop_last: bool = False, num_workers: int = 0, device: torch.device, seed: int = 0) -> DataLoader:
    """A DataLoader whose epoch N depends only on ``(seed, N)`` (see the module docstring).

    Args:
        dataset: Usually an :class:`~comp.data.dataset.ImageDataset`; datasets without
            ``accepts_sample_seeds`` get bare indices (their randomness is then their own).
        batch_size: Items per batch.
        shuffle: A new permutation each epoch. Exclusive with ``sampler``.
        sampler: Inner sampler (e.g. from :func:`comp.data.balance.make_sampler`); its generator is
            replaced each epoch by one seeded from ``(seed, epoch)``.
        drop_last: Drop the last incomplete batch.
        num_workers: Worker processes (see :func:`resolve_num_workers`); kept alive across epochs.
        device: Where batches go; memory is pinned only for CUDA.
        seed: Base seed of the run.

    Returns:
        The loader; call :func:`set_epoch` on it before each epoch.
    """
    if shuffle and sampler is not None:
        raise ValueError("shuffle and sampler are exclusive: the sampler decides the order")
    epoch_sampler = EpochSampler(
        len(dataset), shuffle=shuffle, sampler=sampler, seed=seed,
        sample_seeds=bool(getattr(dataset, "accepts_sample_seeds", False)),
    )
    generator = torch.Generator().manual_seed(derive_seed(seed, 0, "workers"))
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": _seed_worker,
                 "multiprocessing_context": worker_context()}
    return DataLoader(
        dataset, batch_size=batch_size, sampler=epoch_sampler, drop_last=drop_last, num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda", generator=generator, **extra,
    )


def to_device(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device,
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Move an ``(images, labels)`` batch to ``device`` (non-blocking on CUDA, from pinned memory).

    Args:
        batch: ``(B, C, H, W)`` uint8 images and ``(B,)`` int64 labels, as the loader yields them.
        device: Target device.
        channels_last: Return the images in channels_last memory format (converted while still
            uint8, the cheapest point).

    Returns:
        ``(images, labels)`` on ``device``; images still uint8 (see
        :func:`comp.data.augment.normalize_batch`).
    """
    images, labels = batch
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    images = images.to(device, non_blocking=non_blocking)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=non_blocking)
