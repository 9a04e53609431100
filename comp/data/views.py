"""Deterministic views of a cached batch at the model's size, on the device.

The cache holds each image at ``data.cache_side`` (a margin above ``data.image_size``). Validation and
test batches arrive at that side; :func:`centre_view` takes the centre ``image_size`` square (timm's
eval crop: resize to ``size / crop_pct``, centre crop ``size``), and :func:`scaled_view` a TTA scale
``s``: the centre ``round(s * image_size)`` square, taken from the margin's real pixels while it lasts
and only interpolated beyond it (without a margin: the centre view resized by ``s``, as before).
Validation during training, ``comp submit`` and ``comp predict`` all go through these two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _centre_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top:top + side, left:left + side]


def centre_view(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` square of a ``(B, C, H, W)`` batch (``x`` itself when it is that size).

    A batch smaller than ``size`` (a cache made without margin by an older run) is resized up.
    """
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h < size or w < size:
        return F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False).to(x.dtype)
    return _centre_crop(x, size)


def scaled_view(x: torch.Tensor, size: int, scale: float) -> torch.Tensor:
    """A TTA scale view of a float ``(B, C, H, W)`` batch, ``round(scale * size)`` pixels a side.

    With a margin (the batch is larger than ``size``) the view is the centre square of that side at the
    cache's own resolution: more (``scale`` > 1) or less context, no interpolation while the margin lasts,
    the whole cached square resized beyond it. Without a margin the centre view is resized by ``scale``.
    """
    if scale == 1.0:
        return centre_view(x, size)
    want = max(1, round(size * scale))
    side = min(x.shape[-2:])
    if side > size and want <= side:
        return _centre_crop(x, want)
    base = x if side > size else centre_view(x, size)
    return F.interpolate(base, size=(want, want), mode="bilinear", align_corners=False,
                         antialias=want < base.shape[-1])
