"""Training augmentation (albumentations, on cached uint8 images) and on-device normalisation.

The CPU pipeline stays uint8 end to end: no ``Normalize``, no float conversion. Batches are copied
to the device as uint8 (4x fewer bytes than float32) and normalised there by :func:`normalize_batch`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import torch

from comp.config import AugmentConfig
from comp.errors import ConfigError

# albumentations checks PyPI for a newer version on import; our machines may have no network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402


def _light() -> list[A.BasicTransform]:
    return [A.HorizontalFlip(p=0.5)]


def _medium() -> list[A.BasicTransform]:
    # Natural photos (butterflies, flowers): left-right symmetric, not up-down, so no vertical flip.
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(
            translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
            border_mode=cv2.BORDER_REFLECT_101, p=0.5,
        ),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
    ]


def _fundus() -> list[A.BasicTransform]:
    # The retina is a disc on black: any rotation is valid, and black fill matches the background.
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Rotate(limit=(-180, 180), border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ]


def _cells() -> list[A.BasicTransform]:
    # Microscopy has no up or left: the 8 flips/quarter turns are all the same cell.
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.05, p=0.3),
    ]


RRC_PRESETS = ("medium", "fundus")  # presets whose training view is a RandomResizedCrop by default
CROP_SCALES = {"fundus": (0.5, 1.0)}  # rrc area range per preset (else DEFAULT_CROP_SCALE)
DEFAULT_CROP_SCALE = (0.25, 1.0)  # timm's 0.08 is meant for hundreds of ImageNet epochs


def crop_transform(aug: AugmentConfig, size: int) -> A.BasicTransform:
    """The training view of a cached square at ``size`` (``augment.crop``, resolved with the preset)."""
    crop = aug.crop or ("rrc" if aug.preset in RRC_PRESETS else "random")
    if crop == "rrc":
        scale = aug.crop_scale or CROP_SCALES.get(aug.preset, DEFAULT_CROP_SCALE)
        return A.RandomResizedCrop(size=(size, size), scale=tuple(scale), ratio=(3 / 4, 4 / 3),
                                   interpolation=cv2.INTER_LINEAR, area_for_downscale="image")
    if crop == "centre":
        return A.CenterCrop(height=size, width=size)
    return A.RandomCrop(height=size, width=size)


PRESETS: dict[str, Callable[[], list[A.BasicTransform]]] = {
    "none": list,
    "light": _light,
    "medium": _medium,
    "fundus": _fundus,
    "cells": _cells,
}


def augment_transforms(aug: AugmentConfig) -> list[tuple[str, A.BasicTransform | A.BaseCompose]]:
    """The transforms after the crop, each with where it comes from: the preset's, then ``aug.transforms``.

    Raises:
        ConfigError: An unknown transform name or invalid arguments, naming the list item.
    """
    preset = [(f"augment.preset={aug.preset}", t) for t in PRESETS[aug.preset]()]
    custom = _parse_list(aug.transforms, "augment.transforms")
    return preset + [(f"augment.transforms[{i}]", t) for i, t in enumerate(custom)]


def build_transforms(aug: AugmentConfig, train: bool, size: int | None = None,
                     crop_only: bool = False) -> A.Compose | None:
    """The albumentations pipeline for cached ``(side, side, C)`` uint8 images.

    The training view at ``size`` (:func:`crop_transform`) comes first, then the preset, then
    ``aug.transforms`` (each ``{"name": "X", **args}`` or ``{"X": {args}}``; composition blocks such as
    ``OneOf`` take a nested ``transforms`` list). Transforms after the crop must keep the image size:
    batches are stacked as they come.

    Args:
        aug: The ``augment`` config section.
        train: False for evaluation, which has no transforms (its view is cut on the device,
            :func:`comp.data.views.centre_view`).
        size: The model's side (``data.image_size``); None: no crop (the cache is at that side already).
        crop_only: Only the training view: the rest runs on the device
            (:func:`comp.data.batch_augment.create_batch_augment`, ``augment.on_device``).

    Returns:
        A Compose, or None when there is nothing to apply. Its random state is set per sample by
        :class:`comp.data.dataset.ImageDataset` when the loader provides sample seeds.

    Raises:
        ConfigError: An unknown transform name or invalid arguments, naming the list item.
    """
    if not train:
        return None
    transforms = [] if size is None else [crop_transform(aug, size)]
    if not crop_only:
        transforms += [t for _, t in augment_transforms(aug)]
    if not transforms:
        return None
    return A.Compose(transforms)


def _parse_list(items: Sequence[Any], where: str) -> list[A.BasicTransform | A.BaseCompose]:
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of transforms, got {type(items).__name__}")
    return [_parse_item(item, f"{where}[{i}]") for i, item in enumerate(items)]


def _parse_item(item: Any, where: str) -> A.BasicTransform | A.BaseCompose:
    """``{"name": "X", "p": 0.5}`` or ``{"X": {"p": 0.5}}`` -> ``A.X(p=0.5)``."""
    if isinstance(item, dict) and "name" in item:
        name, kwargs = item["name"], {k: v for k, v in item.items() if k != "name"}
    elif isinstance(item, dict) and len(item) == 1:
        name, kwargs = next(iter(item.items()))
        kwargs = {} if kwargs is None else kwargs
    else:
        example = '{"name": "HorizontalFlip", "p": 0.5} or {"HorizontalFlip": {"p": 0.5}}'
        raise ConfigError(f"{where}: expected a transform such as {example}, got {item!r}")
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where}: arguments of {name} must be a mapping, got {kwargs!r}")
    cls = _transform_class(name, where)
    kwargs = dict(kwargs)
    if issubclass(cls, A.BaseCompose):
        kwargs["transforms"] = _parse_list(kwargs.get("transforms", []), f"{where}.transforms")
    _check_arguments(cls, kwargs, where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{where}: invalid arguments for {name}: {detail}") from None


def _transform_names() -> list[str]:
    return sorted(
        n for n, obj in vars(A).items()
        if inspect.isclass(obj) and issubclass(obj, (A.BasicTransform, A.BaseCompose)) and not n.startswith("_")
    )


def _transform_class(name: Any, where: str) -> type:
    obj = getattr(A, name, None) if isinstance(name, str) else None
    if inspect.isclass(obj) and issubclass(obj, (A.BasicTransform, A.BaseCompose)):
        return obj
    close = difflib.get_close_matches(str(name), _transform_names(), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "see https://albumentations.ai/docs for the list"
    raise ConfigError(f"{where}: unknown albumentations transform {name!r}; {hint}")


def _check_arguments(cls: type, kwargs: dict[str, Any], where: str) -> None:
    """Refuse argument names the transform does not take (albumentations would only warn)."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in kwargs:
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"valid: {', '.join(params)}"
            raise ConfigError(f"{where}: {cls.__name__} has no argument {key!r}; {hint}")


def normalize_batch(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images -> float32 ``(x / 255 - mean) / std``, on ``x``'s device.

    Args:
        x: ``(B, C, H, W)`` uint8 batch, C = 1 or 3; channels_last is kept.
        mean: Per-channel mean of the 3 RGB channels in [0, 1]; averaged for 1-channel input.
        std: Per-channel std, likewise.

    Returns:
        A float32 tensor with the shape and memory format of ``x``.
    """
    scale, shift = _affine(tuple(map(float, mean)), tuple(map(float, std)), x.shape[1], x.device)
    # x.float() keeps the memory format; the in-place ops keep it too.
    return x.float().mul_(scale).sub_(shift)


@functools.lru_cache(maxsize=16)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], channels: int,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 / (255 std), mean / std)`` as ``(1, C, 1, 1)`` tensors on ``device``, made once per setting."""
    mean_t = torch.tensor(mean, dtype=torch.float64)
    std_t = torch.tensor(std, dtype=torch.float64)
    if channels == 1:
        mean_t, std_t = mean_t.mean(0, keepdim=True), std_t.mean(0, keepdim=True)
    elif channels != len(mean_t) or channels != len(std_t):
        raise ValueError(f"batch has {channels} channels but mean/std have {len(mean_t)}/{len(std_t)} values")
    scale = (1.0 / (255.0 * std_t)).view(1, channels, 1, 1).float().to(device)
    shift = (mean_t / std_t).view(1, channels, 1, 1).float().to(device)
    return scale, shift
