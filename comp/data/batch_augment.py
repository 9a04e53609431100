"""Training augmentation as tensor ops on the batch already on the device (``augment.on_device``).

Where the CPU cannot augment as fast as the GPU trains, the loader only cuts the training view (the
crop, cheap) and the preset's flips, rotations and colour changes run here on the ``(B, C, H, W)``
uint8 batch, right before :func:`comp.data.augment.normalize_batch`. Each albumentations transform
of the preset (and of ``augment.transforms``) becomes one op with the same ranges and probability:

=========================  ==================================================================
albumentations             on the device
=========================  ==================================================================
HorizontalFlip, VertFlip   ``torch.flip`` of the chosen samples (exact)
RandomRotate90             ``torch.rot90`` by 0-3 quarter turns (exact; square images)
Affine, Rotate             ``affine_grid`` + bilinear ``grid_sample`` about the centre; reflect
                           borders become ``reflection``, a black fill ``zeros``
RandomBrightnessContrast   ``x * (1 + c) + b * 255`` (or ``b * mean``), clipped to 0-255
=========================  ==================================================================

The same ranges, not the same pixels: the CPU pipeline and this one draw from different generators.
Every parameter is drawn on the CPU from a generator seeded by ``(seed, epoch, rank, step)`` and then
moved to the device, so a batch is augmented the same way on a CPU and on a GPU (up to float
rounding), whatever the number of loader workers, and a resumed run repeats its epochs exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import torch
import torch.nn.functional as F

from comp.config import AugmentConfig
from comp.data.augment import A, augment_transforms
from comp.data.loader import derive_seed
from comp.errors import ConfigError

SUPPORTED = ("HorizontalFlip", "VerticalFlip", "RandomRotate90", "Affine", "Rotate", "RandomBrightnessContrast")
PADDING = {cv2.BORDER_REFLECT_101: "reflection", cv2.BORDER_REFLECT: "reflection",
           cv2.BORDER_REPLICATE: "border", cv2.BORDER_CONSTANT: "zeros"}


def _uniform(gen: torch.Generator, n: int, bounds: Sequence[float]) -> torch.Tensor:
    lo, hi = float(bounds[0]), float(bounds[1])
    return torch.rand(n, generator=gen, dtype=torch.float64).mul_(hi - lo).add_(lo).float()


def _chosen(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    """(n,) bool: which samples an op with probability ``p`` applies to (drawn even when p is 0 or 1)."""
    return torch.rand(n, generator=gen) < p


def _per_sample(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return mask.to(x.device, non_blocking=True).view(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class Flip:
    """Flip the chosen samples along ``dim`` (-1: left-right, -2: up-down) with probability ``p``."""

    dim: int
    p: float

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Flip the chosen samples of ``x`` (B, C, H, W) along ``dim``."""
        chosen = _chosen(gen, len(x), self.p)
        return torch.where(_per_sample(chosen, x), x.flip(self.dim), x)


@dataclass(frozen=True)
class Rot90:
    """Turn the chosen samples by k quarter turns, k uniform in 0-3 (albumentations' RandomRotate90)."""

    p: float

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Turn each chosen sample of ``x`` (B, C, H, W) by its drawn number of quarter turns.

        Raises:
            ValueError: The images are not square.
        """
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"RandomRotate90 on the device needs square images, got {tuple(x.shape[-2:])}")
        turns = torch.randint(0, 4, (len(x),), generator=gen)
        turns = torch.where(_chosen(gen, len(x), self.p), turns, torch.zeros_like(turns))
        out = x
        for k in (1, 2, 3):  # every turn of the whole batch, then a choice per sample: no host sync
            out = torch.where(_per_sample(turns == k, x), torch.rot90(x, k, (-2, -1)), out)
        return out


@dataclass(frozen=True)
class Warp:
    """Rotate (degrees), scale (per axis) and translate (fraction of the side, per axis) about the centre."""

    p: float
    rotate: tuple[float, float] = (0.0, 0.0)
    scale: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 1.0), (1.0, 1.0))  # x, y
    translate: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))  # x, y
    padding: str = "reflection"

    def theta(self, gen: torch.Generator, n: int, height: int, width: int) -> torch.Tensor:
        """(n, 2, 3) float32 ``affine_grid`` matrices: output -> input in normalised coordinates."""
        angle = torch.deg2rad(_uniform(gen, n, self.rotate))
        sx, sy = _uniform(gen, n, self.scale[0]), _uniform(gen, n, self.scale[1])
        tx, ty = _uniform(gen, n, self.translate[0]), _uniform(gen, n, self.translate[1])
        cos, sin = torch.cos(angle), torch.sin(angle)
        # input = S^-1 R(angle) (output - t) in pixels about the centre (y down: albumentations' turn), then
        # in [-1, 1] units per axis
        a = torch.stack([torch.stack([cos / sx, -sin / sx], -1), torch.stack([sin / sy, cos / sy], -1)], -2)
        a[:, 0, 1] *= height / width
        a[:, 1, 0] *= width / height
        shift = -(a @ torch.stack([2 * tx, 2 * ty], -1).unsqueeze(-1))  # (n, 2, 1)
        return torch.cat([a, shift], -1)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Warp the chosen samples of ``x`` (B, C, H, W) by their drawn affine transforms."""
        chosen = _chosen(gen, len(x), self.p)
        theta = self.theta(gen, len(x), x.shape[-2], x.shape[-1]).to(x.device, non_blocking=True)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        return torch.where(_per_sample(chosen, x), warped, x)


@dataclass(frozen=True)
class BrightnessContrast:
    """``x * (1 + c) + b * 255`` (``by_max``; else ``b * mean(x)``), c and b uniform in their ranges."""

    p: float
    brightness: tuple[float, float]
    contrast: tuple[float, float]
    by_max: bool = True

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Change brightness and contrast of the chosen samples of ``x`` (B, C, H, W), clamped to 0-255."""
        chosen = _chosen(gen, len(x), self.p)
        alpha = 1.0 + _uniform(gen, len(x), self.contrast)
        beta = _uniform(gen, len(x), self.brightness)
        alpha = torch.where(chosen, alpha, torch.ones_like(alpha)).to(x.device, non_blocking=True)
        beta = torch.where(chosen, beta, torch.zeros_like(beta)).to(x.device, non_blocking=True)
        base = 255.0 if self.by_max else x.mean(dim=(1, 2, 3))
        return (x * alpha.view(-1, 1, 1, 1) + (beta * base).view(-1, 1, 1, 1)).clamp_(0.0, 255.0)


FLOAT_OPS = (Warp, BrightnessContrast)  # ops that need a float batch (the flips and turns stay uint8)


class BatchAugment:
    """The preset's augmentation as tensor ops on a batch, determined by ``(seed, epoch, rank, step)``.

    Args:
        ops: The ops in order (:func:`device_ops`).
        seed: The run's data seed.
        rank: The DDP rank (each rank's batches are augmented differently).
    """

    def __init__(self, ops: Sequence[Any], seed: int, rank: int = 0):
        self.ops, self.seed, self.rank = list(ops), seed, rank

    def __call__(self, images: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """Augment ``(B, C, H, W)`` images (uint8 or float in 0-255) on their device.

        Returns:
            The augmented batch, with the dtype and memory format of ``images`` (uint8 rounded).
        """
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, self.rank, step, "device-augment"))
        channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
        x = images
        for op in self.ops:
            if isinstance(op, FLOAT_OPS) and not x.is_floating_point():
                x = x.float()
            x = op(x, gen)
        if images.dtype == torch.uint8 and x.is_floating_point():
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _pair(value: Any) -> tuple[float, float]:
    return (float(value), float(value)) if isinstance(value, (int, float)) else (float(value[0]), float(value[1]))


def _axes(value: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    if isinstance(value, dict):
        return _pair(value["x"]), _pair(value["y"])
    return _pair(value), _pair(value)


def _padding(t: Any, where: str) -> str:
    if t.border_mode not in PADDING or (t.border_mode == cv2.BORDER_CONSTANT and _pair(t.fill) != (0.0, 0.0)):
        raise _unsupported(where, f"{type(t).__name__}(border_mode={t.border_mode}, fill={t.fill})")
    return PADDING[t.border_mode]


def _affine_op(t: Any, where: str) -> Warp:
    if t.translate_px is not None or t.fit_output or t.keep_ratio or _axes(t.shear) != ((0, 0), (0, 0)):
        raise _unsupported(where, "Affine with translate_px, fit_output, keep_ratio or shear")
    translate = _axes(t.translate_percent) if t.translate_percent is not None else ((0, 0), (0, 0))
    return Warp(t.p, _pair(t.rotate), _axes(t.scale), translate, _padding(t, where))


def _to_op(t: Any, where: str) -> Any:
    """The op of one albumentations transform (its own class, not a subclass)."""
    kind = type(t)
    if kind in (A.HorizontalFlip, A.VerticalFlip):
        return Flip(-1 if kind is A.HorizontalFlip else -2, t.p)
    if kind is A.RandomRotate90:
        return Rot90(t.p)
    if kind is A.Affine:
        return _affine_op(t, where)
    if kind is A.Rotate:
        if getattr(t, "crop_border", False):
            raise _unsupported(where, "Rotate(crop_border=True)")
        return Warp(t.p, _pair(t.limit), padding=_padding(t, where))
    if kind is A.RandomBrightnessContrast:
        if getattr(t, "ensure_safe_range", False):
            raise _unsupported(where, "RandomBrightnessContrast(ensure_safe_range=True)")
        return BrightnessContrast(t.p, _pair(t.brightness_limit), _pair(t.contrast_limit), t.brightness_by_max)
    raise _unsupported(where, kind.__name__)


def _unsupported(where: str, what: str) -> ConfigError:
    return ConfigError(f"{where}: {what} has no on-device version (augment.on_device supports "
                       f"{', '.join(SUPPORTED)}); set augment.on_device=false (or auto) to run it on the CPU")


def device_ops(aug: AugmentConfig) -> list[Any]:
    """The ops of the preset and of ``augment.transforms``, in the order the CPU pipeline applies them.

    Raises:
        ConfigError: A transform with no on-device version, naming it and the fix.
    """
    return [_to_op(t, where) for where, t in augment_transforms(aug)]


def create_batch_augment(aug: AugmentConfig, device: torch.device, seed: int, rank: int = 0) -> BatchAugment | None:
    """The on-device augmentation ``augment.on_device`` asks for, or None (the CPU pipeline does it all).

    ``auto`` is on when training on CUDA and every transform has an on-device version; ``true`` is on
    anywhere and refuses a transform without one.

    Args:
        aug: The ``augment`` section.
        device: The training device.
        seed: The run's data seed.
        rank: The DDP rank.

    Raises:
        ConfigError: ``augment.on_device=true`` with a transform that has no on-device version.
    """
    if aug.on_device is False or (aug.on_device == "auto" and torch.device(device).type != "cuda"):
        return None
    try:
        ops = device_ops(aug)
    except ConfigError:
        if aug.on_device == "auto":
            return None
        raise
    return BatchAugment(ops, seed, rank) if ops else None

