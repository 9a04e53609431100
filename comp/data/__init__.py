"""Data pipeline: OpenCV decoding, a pre-resized uint8 cache, albumentations, seeded loaders.

Images stay uint8 from the file to the device; :func:`normalize_batch` makes them float there.
See :mod:`comp.data.loader` for the per-epoch seeding protocol the training engine follows.

Names are imported on first use, so ``comp.data.images`` (OpenCV and numpy only) does not pull
in torch and albumentations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from comp.lazy import lazy_getattr

_EXPORTS = {
    "read_image": "images",
    "resize_image": "images",
    "ImageCache": "cache",
    "create_cache": "cache",
    "centre_view": "views",
    "build_transforms": "augment",
    "normalize_batch": "augment",
    "ImageDataset": "dataset",
    "EpochSampler": "loader",
    "create_loader": "loader",
    "derive_seed": "loader",
    "resolve_num_workers": "loader",
    "set_epoch": "loader",
    "start_epoch": "loader",
    "to_device": "loader",
    "class_weights": "balance",
    "make_sampler": "balance",
}

__all__ = [
    "EpochSampler",
    "ImageCache",
    "ImageDataset",
    "build_transforms",
    "class_weights",
    "centre_view",
    "create_cache",
    "create_loader",
    "derive_seed",
    "make_sampler",
    "normalize_batch",
    "read_image",
    "resize_image",
    "resolve_num_workers",
    "set_epoch",
    "start_epoch",
    "to_device",
]

if TYPE_CHECKING:
    from comp.data.augment import build_transforms, normalize_batch
    from comp.data.balance import class_weights, make_sampler
    from comp.data.cache import ImageCache, create_cache
    from comp.data.dataset import ImageDataset
    from comp.data.images import read_image, resize_image
    from comp.data.loader import (
        EpochSampler,
        create_loader,
        derive_seed,
        resolve_num_workers,
        set_epoch,
        start_epoch,
        to_device,
    )
    from comp.data.views import centre_view


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
