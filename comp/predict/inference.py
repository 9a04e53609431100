"""Batched inference: one pass through the loader, every TTA view and every fold model per batch.

A batch is copied to the device once (uint8, channels_last), normalised there, and each view is made
from it with tensor ops; all models of the experiment run on each view before the next batch is
loaded. Under ``torch.inference_mode``; autocast only on CUDA (fp32 elsewhere: bf16 on a CPU without
native support is far slower).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from comp.predict.ensemble import merge_logits
from comp.predict.tta import View

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


@dataclass
class InferenceSettings:
    """Where and how to run the models.

    Attributes:
        device: Where models and batches go.
        batch_size: Images per loader batch.
        num_workers: DataLoader worker processes.
        channels_last: Models and batches in channels_last memory format.
        amp_dtype: Autocast dtype on CUDA (None: fp32); ignored off CUDA.
    """

    device: torch.device
    batch_size: int = 256
    num_workers: int = 0
    channels_last: bool = True
    amp_dtype: torch.dtype | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """An autocast context for CUDA with an AMP dtype, else a null context."""
        if self.device.type != "cuda" or self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)


def resolve_settings(device: str = "auto", amp: str = "auto", batch_size: int = 256, num_workers: int | str = 0,
                     channels_last: bool = True) -> InferenceSettings:
    """Settings from config values (``train.device``, ``train.amp``, ``submit.batch_size``, ``data.num_workers``)."""
    from comp.data import resolve_num_workers
    from comp.device import resolve_amp, resolve_device

    dev = resolve_device(device)
    amp_dtype = resolve_amp(amp, dev) if dev.type == "cuda" else None
    return InferenceSettings(dev, batch_size, resolve_num_workers(num_workers), channels_last, amp_dtype)


def prepare_models(models: Sequence[nn.Module], settings: InferenceSettings) -> list[nn.Module]:
    """Models in eval mode on the device (channels_last when set)."""
    out = []
    for model in models:
        model = model.eval().to(settings.device)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        out.append(model)
    return out


def forward_views(models: Sequence[nn.Module], images: torch.Tensor, views: Sequence[View],
                  settings: InferenceSettings, size: int | None = None) -> torch.Tensor:
    """Logits of every model on every view of one normalised batch.

    Args:
        models: Prepared models (:func:`prepare_models`).
        images: (B, C, H, W) float batch on the device, at the cached side.
        views: TTA views.
        settings: Device and precision.
        size: The model's side (``data.image_size``): each view is cut from the cached batch
            (:meth:`View.take`); None: the batch is already at it (:meth:`View.augment`).

    Returns:
        (M, V, B, K) float32 logits on the device (M models, V views, K classes).
    """
    per_view = []
    for view in views:
        x = view.augment(images) if size is None else view.take(images, size)
        if settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with settings.autocast():
            per_view.append(torch.stack([model(x).float() for model in models]))  # (M, B, K)
    return torch.stack(per_view, dim=1)


def _batches(loader: DataLoader, settings: InferenceSettings, mean: Sequence[float],
             std: Sequence[float]) -> Iterator[torch.Tensor]:
    """Normalised image batches on the device, in loader order."""
    from comp.data import normalize_batch, set_epoch, to_device

    set_epoch(loader, 0)
    for batch in loader:
        images, _ = to_device(batch, settings.device, settings.channels_last)
        yield normalize_batch(images, mean, std)  # (B, C, H, W) float


@torch.inference_mode()
def predict_merged(models: Sequence[nn.Module], loader: DataLoader, views: Sequence[View], mode: str,
                   settings: InferenceSettings, mean: Sequence[float], std: Sequence[float],
                   model_weights: Sequence[float] | None = None, size: int | None = None) -> np.ndarray:
    """Class probabilities (N, K) of the ensemble of ``models`` x ``views``, merged with ``mode``.

    One pass through ``loader`` (a :func:`comp.data.create_loader` over the images, in order).
    ``model_weights`` (one per model, normalised; None: equal) are shared equally by each model's views.
    """
    models = prepare_models(models, settings)
    weights = None if model_weights is None else [w / len(views) for w in model_weights for _ in views]
    out = []
    for images in _batches(loader, settings, mean, std):
        logits = forward_views(models, images, views, settings, size)  # (M, V, B, K)
        out.append(merge_logits(logits.flatten(0, 1), mode, weights))  # (B, K)
    return torch.cat(out).cpu().numpy().astype(np.float64)  # one device-to-host copy


@torch.inference_mode()
def predict_view_logits(model: nn.Module, loader: DataLoader, views: Sequence[View], settings: InferenceSettings,
                        mean: Sequence[float], std: Sequence[float], size: int | None = None) -> np.ndarray:
    """Logits (N, V, K) of one model on every view of the loader's images (for OOF scoring)."""
    (model,) = prepare_models([model], settings)
    out = [forward_views([model], images, views, settings, size)[0].transpose(0, 1)  # (B, V, K)
           for images in _batches(loader, settings, mean, std)]
    return torch.cat(out).cpu().numpy()
