"""Decoding every supported format and pixel mode into (H, W, C) uint8, and resizing."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from comp.data.images import read_image, resize_image
from comp.errors import DataError

RED_BGR = (0, 0, 255)


def _write(path: Path, img: np.ndarray) -> Path:
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    buf.tofile(path)
    return path


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the Orientation tag right after SOI."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff"])
def test_formats_decode_to_rgb_with_red_first(tmp_path, ext):
    img = np.zeros((6, 10, 3), np.uint8)
    img[:] = RED_BGR
    out = read_image(_write(tmp_path / f"red{ext}", img), channels=3)
    assert out.shape == (6, 10, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out[3, 5], (255, 0, 0), atol=3)  # JPEG is lossy


def test_gray_file_to_one_and_three_channels(tmp_path):
    path = _write(tmp_path / "g.png", np.full((5, 7), 77, np.uint8))
    gray = read_image(path, channels=1)
    rgb = read_image(path, channels=3)
    assert gray.shape == (5, 7, 1) and (gray == 77).all()
    assert rgb.shape == (5, 7, 3) and (rgb == 77).all()


def test_colour_file_to_gray_uses_luma(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    img[:] = RED_BGR
    out = read_image(_write(tmp_path / "r.png", img), channels=1)
    assert out.shape == (4, 4, 1)
    assert abs(int(out[0, 0, 0]) - round(0.299 * 255)) <= 1


def test_rgba_is_composited_on_black(tmp_path):
    img = np.zeros((2, 3, 4), np.uint8)
    img[:, :, 2] = 255  # red
    img[0, :, 3] = 255  # opaque row
    img[1, :, 3] = 128  # half transparent row
    out = read_image(_write(tmp_path / "a.png", img), channels=3)
    assert out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[1, 0].tolist() == [128, 0, 0]


def test_rgba_tiff_with_declared_alpha_matches_png(tmp_path):
    image_mod = pytest.importorskip("PIL.Image")
    image_mod.new("RGBA", (3, 2), (255, 0, 0, 128)).save(tmp_path / "a.tiff")
    image_mod.new("RGBA", (3, 2), (255, 0, 0, 128)).save(tmp_path / "a.png")
    tiff = read_image(tmp_path / "a.tiff", channels=3)
    png = read_image(tmp_path / "a.png", channels=3)
    np.testing.assert_allclose(tiff.astype(int), png.astype(int), atol=1)
    assert png[0, 0].tolist() == [128, 0, 0]


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16_bit_is_scaled_not_truncated(tmp_path, ext):
    gray = np.array([[65535, 32768, 257, 0]], np.uint16)
    assert read_image(_write(tmp_path / f"g16{ext}", gray), channels=1)[0, :, 0].tolist() == [255, 128, 1, 0]
    colour = np.zeros((2, 2, 3), np.uint16)
    colour[..., 2] = 65535  # red in BGR
    out = read_image(_write(tmp_path / f"c16{ext}", colour), channels=3)
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [255, 0, 0]


def test_palette_png(tmp_path):
    image_mod = pytest.importorskip("PIL.Image")
    im = image_mod.new("P", (4, 3))
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putpixel((0, 0), 1)
    im.putpixel((3, 2), 2)
    im.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png", channels=3)
    assert out.shape == (3, 4, 3)
    assert out[0, 0].tolist() == [255, 0, 0] and out[2, 3].tolist() == [0, 0, 255] and out[1, 1].tolist() == [0, 0, 0]


def test_jpeg_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = 255  # left half white
    ok, buf = cv2.imencode(".jpg", stored)
    path = tmp_path / "rot.jpg"
    path.write_bytes(_with_exif_orientation(buf.tobytes(), 6))  # 6: rotate 90 degrees clockwise to view
    out = read_image(path, channels=3)
    assert out.shape == (32, 16, 3)
    assert out[:14].mean() > 240 and out[18:].mean() < 15  # the left column became the top row
    assert read_image(path, channels=1).shape == (32, 16, 1)


def test_odd_file_names(tmp_path):
    path = _write(tmp_path / "ünï cödé #1.png", np.full((3, 3, 3), 9, np.uint8))
    assert read_image(path, channels=3).shape == (3, 3, 3)


@pytest.mark.parametrize("content", [b"not an image at all" * 8, b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_file_raises_data_error_naming_it(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match="bad.png"):
        read_image(path, channels=3)


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="nope.jpg"):
        read_image(tmp_path / "nope.jpg", channels=3)


def test_resize_shrink_averages_and_keeps_channel_axis():
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[:, :, None]  # (64, 64, 1)
    out = resize_image(checker, 16)
    assert out.shape == (16, 16, 1)
    assert np.abs(out.astype(int) - 127).max() <= 1  # INTER_AREA averages; linear would sample 0/255


def test_resize_enlarge_and_identity():
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert resize_image(img, 12).shape == (12, 12, 3)
    same = np.zeros((8, 8, 3), np.uint8)
    assert resize_image(same, 8) is same
