"""Reading images from disk with OpenCV into uint8 arrays, and resizing them.

Every image leaves here as ``(H, W, C)`` uint8 with ``C`` = 3 (RGB order) or 1 (gray), whatever
the file held: JPEG, PNG, BMP, TIFF, WebP; gray, RGB, RGBA, palette, 8- or 16-bit.

Decisions:
- Alpha is composited onto black (colour x alpha): the colour under a transparent pixel is
  arbitrary, black is not. TIFFs are the exception: for files that declare their alpha, libtiff
  (inside OpenCV) already returns colour premultiplied by alpha, so their alpha is simply dropped.
- 16-bit samples are scaled (``round(v * 255 / 65535)``), not truncated to the low byte; float
  images are taken as [0, 1] when their maximum is at most 1, else as [0, 255], and clipped.
- JPEGs are decoded with ``IMREAD_ANYCOLOR | IMREAD_ANYDEPTH``, which applies the EXIF orientation
  (``IMREAD_UNCHANGED`` ignores it); other formats with ``IMREAD_UNCHANGED`` to keep alpha and depth.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from comp.errors import DataError

_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def read_image(path: Path, channels: int) -> np.ndarray:
    """Decode an image file into a uint8 array.

    Args:
        path: The image file (any name OpenCV's file APIs would choke on is fine: the bytes are
            read by numpy and decoded in memory).
        channels: 3 for RGB, 1 for gray.

    Returns:
        ``(H, W, channels)`` uint8 array, RGB channel order when ``channels`` is 3.

    Raises:
        DataError: The file is missing, unreadable, not an image, or of an unsupported pixel type.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read image file ({exc.strerror or exc}); check the path") from None
    head = buf[:4].tobytes()
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if head.startswith(_JPEG_MAGIC) else cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(buf, flags) if buf.size else None
    except cv2.error:
        img = None
    if img is None:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format); replace or remove the file")
    img = _to_uint8(img, path)
    if img.ndim == 2:
        img = img[:, :, None]
    img = _flatten_alpha(img, premultiplied=head in _TIFF_MAGICS)
    return _convert_channels(img, channels)


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """Scale any supported sample type to uint8 (16-bit: 65535 -> 255, rounded)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        scale = 255.0 if np.nanmax(img, initial=0.0) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(img) * scale + 0.5, 0, 255).astype(np.uint8)
    raise DataError(f"{path}: unsupported pixel type {img.dtype}; convert the image to 8- or 16-bit")


def _flatten_alpha(img: np.ndarray, premultiplied: bool) -> np.ndarray:
    """Drop a trailing alpha channel ((H, W, 2) gray+alpha or (H, W, 4) BGRA), compositing onto black."""
    if img.shape[2] not in (2, 4):
        return img
    colour, alpha = img[:, :, :-1], img[:, :, -1:]
    if premultiplied:
        return np.ascontiguousarray(colour)
    # Integer rounding of colour * alpha / 255, exact for 8-bit data.
    return ((colour.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


def _convert_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, 1) gray or (H, W, 3) BGR -> (H, W, channels) gray or RGB."""
    if channels == 3:
        if img.shape[2] == 1:
            return np.repeat(img, 3, axis=2)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[2] == 1:
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize (squash, no crop) an ``(H, W, C)`` image to ``(size, size, C)``.

    ``INTER_AREA`` when both sides shrink or stay (it averages, so no aliasing), ``INTER_LINEAR``
    when any side grows (``INTER_AREA`` degrades to near-nearest there).

    Args:
        img: ``(H, W, C)`` uint8 image.
        size: Target side in pixels.

    Returns:
        ``(size, size, C)`` array; ``img`` itself when it already has that shape.
    """
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interpolation = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    out = cv2.resize(img, (size, size), interpolation=interpolation)
    return out[:, :, None] if out.ndim == 2 else out
