"""The loaders of one fold: cached images, augmentation, imbalance sampling, DDP sharding."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from comp.competition import Competition
from comp.config import Config
from comp.data import (
    ImageCache,
    ImageDataset,
    build_transforms,
    class_weights,
    create_cache,
    create_loader,
    derive_seed,
    make_sampler,
    resolve_num_workers,
)
from comp.data.batch_augment import BatchAugment, create_batch_augment
from comp.data.prebuild import CacheBuild, Progress, build_cache, usable_cores
from comp.device import Runtime, barrier


@dataclass
class FoldLoaders:
    """The loaders of one fold, the validation rows they cover, and the loss's class weights."""
    train: DataLoader
    valid: DataLoader | None
    valid_index: np.ndarray | None  # rows of the validation loader, in its order, on this rank
    loss_weights: torch.Tensor | None
    batch_augment: BatchAugment | None = None  # augment.on_device: the preset on the device batch, not in train


class ShardedSampler(Sampler):
    """Every ``world``-th index of an inner sampler, padded so all ranks get the same count.

    Every rank builds the inner sampler with the same generator seed, so the shards are disjoint
    pieces of one epoch (used for the weighted sampler under DDP).
    """

    def __init__(self, inner: Sampler, rank: int, world: int):
        self.inner, self.rank, self.world = inner, rank, world

    @property
    def generator(self) -> torch.Generator | None:
        """The inner sampler's generator."""
        return self.inner.generator

    @generator.setter
    def generator(self, value: torch.Generator | None) -> None:
        self.inner.generator = value

    def __len__(self) -> int:
        return math.ceil(len(self.inner) / self.world)

    def __iter__(self) -> Iterator[int]:
        order = list(self.inner)
        order += order[: len(self) * self.world - len(order)]
        return iter(order[self.rank :: self.world])


def _train_sampler(labels: np.ndarray, cfg: Config, runtime: Runtime) -> tuple[Sampler | None, bool]:
    """(sampler or None, shuffle) for the training loader."""
    weighted = make_sampler(labels, cfg.train.sampler_strength)
    if not runtime.distributed:
        return weighted, weighted is None
    if weighted is not None:
        return ShardedSampler(weighted, runtime.rank, runtime.world_size), False
    dist_sampler = DistributedSampler(range(len(labels)), runtime.world_size, runtime.rank, shuffle=True,
                                      seed=cfg.train.seed, drop_last=True)
    return dist_sampler, False


def train_cache(cfg: Config, comp: Competition) -> ImageCache:
    """The cache of the labelled images at the cached size (kept in memory too when all of it fits in 1 GiB)."""
    return create_cache(cfg, memory=len(comp.train) * cfg.data.cache_side**2 * cfg.data.channels < 2**30)


def prebuild_train_cache(cfg: Config, comp: Competition, runtime: Runtime | None = None,
                         progress: Progress | None = None) -> CacheBuild:
    """Decode every labelled image missing from the cache, with all cores, before the first epoch.

    Under DDP each rank decodes its share (with its share of the cores) and waits for the others.
    """
    paths = list(comp.train["path"])
    rank, world = (runtime.rank, runtime.world_size) if runtime is not None else (0, 1)
    build = build_cache(train_cache(cfg, comp), paths[rank::world], threads=max(1, usable_cores() // world),
                        progress=progress if rank == 0 else None)
    if runtime is not None:
        barrier(runtime)
    return build


def build_fold_loaders(cfg: Config, comp: Competition, train_idx: np.ndarray, valid_idx: np.ndarray | None,
                       runtime: Runtime, seed: int) -> FoldLoaders:
    """Training and validation loaders of one fold (validation None for a full fit)."""
    cache = train_cache(cfg, comp)
    paths = comp.train["path"].to_numpy()
    targets = comp.train["target"].to_numpy()
    workers = resolve_num_workers(cfg.data.num_workers)
    on_device = create_batch_augment(cfg.augment, runtime.device, derive_seed(seed, "device-augment"), runtime.rank)
    transform = build_transforms(cfg.augment, train=True, size=cfg.data.image_size, crop_only=on_device is not None)
    train_ds = ImageDataset(paths[train_idx], targets[train_idx], cache, transform)
    sampler, shuffle = _train_sampler(targets[train_idx], cfg, runtime)
    per_rank_batch = max(1, cfg.train.batch_size // runtime.world_size)
    train = create_loader(train_ds, per_rank_batch, shuffle=shuffle, sampler=sampler,
                          drop_last=len(train_idx) > per_rank_batch, num_workers=workers,
                          device=runtime.device, seed=seed)
    weights = class_weights(targets[train_idx], comp.num_classes, cfg.train.class_weights)
    if valid_idx is None:
        return FoldLoaders(train, None, None, weights, on_device)
    valid_ds = ImageDataset(paths[valid_idx], targets[valid_idx], cache, None)
    index = np.arange(len(valid_idx))
    valid_sampler = None
    if runtime.distributed:
        valid_sampler = DistributedSampler(index, runtime.world_size, runtime.rank, shuffle=False)
        index = np.array(list(valid_sampler))
    valid = create_loader(valid_ds, cfg.submit.batch_size, sampler=valid_sampler, num_workers=workers,
                          device=runtime.device, seed=seed)
    return FoldLoaders(train, valid, index, weights, on_device)
