"""What happens to a decoded image before it is cached: border trim, fit to a square, colour normalisation.

All three are deterministic and run once per image, so they belong to the cache (its key names them):

- :func:`trim_border` cuts the dark frame around photos on black (fundus, dermoscopy) by a threshold.
- :func:`fit_square` makes the square the cache holds: ``squash`` (resize, aspect lost, today's default),
  ``pad`` (letterbox: long side fits, black bars) or ``crop`` (short side fits, centre crop).
- :func:`ben_graham` subtracts a local average colour (Ben Graham, Kaggle diabetic retinopathy 2015):
  ``4 * img - 4 * blur(img) + 128``, with the blur's sigma a fixed share of the side.
"""

from __future__ import annotations

import cv2
import numpy as np

from comp.data.images import resize_image

RESIZE_MODES = ("squash", "pad", "crop")
MIN_BORDER_FRACTION = 0.01  # a row or column is content when more than 1% of its pixels are above the threshold


def border_box(img: np.ndarray, threshold: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (bottom/right exclusive) of the content inside a dark border.

    A pixel is content when its brightest channel is above ``threshold``; a row (column) is content
    when more than 1% of its pixels are. An image with no content keeps its whole box.
    """
    bright = img.max(axis=2) > threshold  # (H, W)
    h, w = bright.shape
    rows = np.flatnonzero(bright.sum(axis=1) > MIN_BORDER_FRACTION * w)
    cols = np.flatnonzero(bright.sum(axis=0) > MIN_BORDER_FRACTION * h)
    if len(rows) == 0 or len(cols) == 0:
        return 0, h, 0, w
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def trim_border(img: np.ndarray, threshold: int) -> np.ndarray:
    """``img`` cut to :func:`border_box` (a view; the image itself when there is no border)."""
    top, bottom, left, right = border_box(img, threshold)
    return img[top:bottom, left:right]


def fit_square(img: np.ndarray, size: int, mode: str) -> np.ndarray:
    """An ``(H, W, C)`` image as ``(size, size, C)``: ``squash``, ``pad`` (letterbox) or ``crop`` (centre).

    ``pad`` and ``crop`` keep the aspect ratio: one side is resized to ``size``, the other to
    ``round(size * ratio)``, then padded with black or cropped at the centre.
    """
    if mode == "squash":
        return resize_image(img, size)
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    h, w = img.shape[:2]
    scale = size / (max(h, w) if mode == "pad" else min(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interpolation = cv2.INTER_AREA if scale <= 1 else cv2.INTER_LINEAR
    resized = cv2.resize(img, (nw, nh), interpolation=interpolation) if (nh, nw) != (h, w) else img
    if resized.ndim == 2:
        resized = resized[:, :, None]
    if mode == "crop":
        top, left = (nh - size) // 2, (nw - size) // 2
        return np.ascontiguousarray(resized[top:top + size, left:left + size])
    out = np.zeros((size, size, img.shape[2]), dtype=img.dtype)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


def ben_graham(img: np.ndarray) -> np.ndarray:
    """``4 * img - 4 * GaussianBlur(img, sigma = side / 30) + 128``, clipped to uint8 (shape kept)."""
    sigma = max(img.shape[:2]) / 30.0
    blur = cv2.GaussianBlur(img, (0, 0), sigma)
    if blur.ndim == 2:
        blur = blur[:, :, None]
    out = cv2.addWeighted(img, 4.0, blur, -4.0, 128.0)
    return out[:, :, None] if out.ndim == 2 else out


def prepare_image(img: np.ndarray, size: int, mode: str = "squash", border: int | None = None,
                  graham: bool = False) -> np.ndarray:
    """The cached form of a decoded image: trim (``border`` = threshold, None: no trim), fit, normalise."""
    if border is not None:
        img = trim_border(img, border)
    img = fit_square(img, size, mode)
    return ben_graham(img) if graham else img
