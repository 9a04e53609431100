"""The map-style dataset: cached uint8 image -> augmentation -> ``(C, H, W)`` uint8 tensor."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from comp.data.cache import ImageCache


class ImageDataset(Dataset):
    """Images read through an :class:`ImageCache`, augmented, returned as uint8 tensors.

    An item is looked up either by a plain index or by ``(index, sample_seed)``: the samplers of
    :func:`comp.data.loader.create_loader` yield the latter, and the transform's random state is
    then set from ``sample_seed``, so a sample's augmentation depends only on (seed, epoch,
    position in the epoch), not on worker count or history. With a plain index the transform
    draws from its own random state.

    Args:
        paths: One image file per item.
        labels: Class index per item, or None (test images: the label is -1).
        cache: Where images are decoded and resized once.
        transform: An albumentations Compose from :func:`comp.data.augment.build_transforms`,
            or None.
    """

    accepts_sample_seeds = True  # create_loader passes (index, seed) keys to datasets that say so

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None, cache: ImageCache, transform: Any):
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = list(paths)
        self.labels = None if labels is None else [int(v) for v in labels]
        self.cache = cache
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """Return ``(image, label)``: a contiguous ``(C, H, W)`` uint8 tensor and an int (-1: no label)."""
        index, sample_seed = key if isinstance(key, tuple) else (key, None)
        img = self.cache.get(self.paths[index])  # (H, W, C)
        if self.transform is not None:
            if sample_seed is not None:
                self.transform.set_random_state(np.random.default_rng(sample_seed), random.Random(sample_seed))
            img = self.transform(image=img)["image"]
            if img.ndim == 2:  # a transform dropped the channel axis of a gray image
                img = img[:, :, None]
        chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # (C, H, W)
        label = -1 if self.labels is None else self.labels[index]
        return chw, label
