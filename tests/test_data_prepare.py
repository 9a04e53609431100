"""The cached square (squash, pad, crop), border trim, Ben Graham, and the centre/scale views cut from the margin."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from comp.config import Config, build_config
from comp.data.augment import build_transforms
from comp.data.cache import ImageCache, create_cache
from comp.data.images import resize_image
from comp.data.prepare import ben_graham, border_box, fit_square, prepare_image
from comp.data.views import centre_view, scaled_view
from comp.predict.tta import View


def _two_to_one() -> np.ndarray:
    """A 40 x 80 image: a white disc (round, radius 15) on grey, so aspect shows as the disc's shape."""
    img = np.full((40, 80, 3), 60, np.uint8)
    cv2.circle(img, (40, 20), 15, (255, 255, 255), -1)
    return img


def _disc_extent(img: np.ndarray) -> tuple[int, int]:
    """(height, width) of the bright disc."""
    ys, xs = np.nonzero(img[:, :, 0] > 160)
    return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_pad_and_crop_keep_the_aspect_of_a_two_to_one_image(mode):
    out = fit_square(_two_to_one(), 32, mode)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    h, w = _disc_extent(out)
    assert abs(h - w) <= 1  # still a circle
    if mode == "pad":  # letterbox: the 80 px side fits, bars of black above and below
        assert (out[:7] == 0).all() and (out[-7:] == 0).all() and (out[10:22] != 0).any()
        assert h == pytest.approx(30 * 32 / 80, abs=1.5)
    else:  # the 40 px side fits: the disc fills most of the height
        assert h == pytest.approx(30 * 32 / 40, abs=1.5)


def test_squash_distorts_the_same_image():
    h, w = _disc_extent(fit_square(_two_to_one(), 32, "squash"))
    assert h > 1.5 * w  # the circle became an upright ellipse: what pad and crop avoid


def test_border_box_finds_a_disc_on_black():
    img = np.zeros((120, 160, 3), np.uint8)
    cv2.circle(img, (90, 55), 40, (180, 90, 40), -1)  # the fundus: a disc at x 50-130, y 15-95
    img[3, 3] = 255  # a speck of noise is not content
    top, bottom, left, right = border_box(img, threshold=10)
    assert abs(top - 15) <= 1 and abs(bottom - 96) <= 1 and abs(left - 50) <= 1 and abs(right - 131) <= 1
    trimmed = prepare_image(img, 32, "pad", border=10)
    h, w = _disc_extent(np.where(trimmed > 60, 255, 0).astype(np.uint8))
    assert h >= 30 and w >= 30  # the disc fills the square once its border is gone


def test_border_box_of_a_black_image_is_the_whole_image():
    assert border_box(np.zeros((10, 12, 3), np.uint8), 10) == (0, 10, 0, 12)


def test_ben_graham_flattens_a_smooth_colour_cast():
    ramp = np.tile(np.linspace(40, 200, 64, dtype=np.float32), (64, 1))
    img = np.stack([ramp] * 3, axis=2).astype(np.uint8)
    out = ben_graham(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[16:48, 16:48].std() < 0.2 * img[16:48, 16:48].std()  # the cast is gone, grey 128 remains
    assert abs(float(out[16:48, 16:48].mean()) - 128) < 6


def test_cache_key_names_the_settings(tmp_path):
    plain = ImageCache(tmp_path, 37, 3)
    assert plain.folder_name() == "37px-3c"  # an existing cache keeps its name
    other = ImageCache(tmp_path, 37, 3, resize="pad", border=10, graham=True)
    assert other.folder_name() == "37px-3c-pad-border10-graham"


def test_create_cache_uses_the_margin_and_the_fundus_default(tmp_path):
    cfg = build_config({"data": {"image_size": 64, "cache_dir": str(tmp_path)}, "augment": {"preset": "fundus"}})
    cache = create_cache(cfg)
    assert cache.size == 74 and cache.border == 10  # round(1.15 * 64); border trim on with fundus
    assert not Config().trims_border and create_cache(Config()).border is None


def test_a_trial_that_switches_to_the_fundus_preset_trims_the_border():
    from comp.tune.space import apply_values

    trial = apply_values(Config(), {"augment.preset": "fundus"})  # rebuilt from the base config's dict
    assert trial.trims_border and create_cache(trial).border == 10
    assert not apply_values(trial, {"augment.preset": "light"}).trims_border


def test_cache_size_below_image_size_is_refused():
    from comp.errors import ConfigError

    with pytest.raises(ConfigError, match="data.cache_size.*at least data.image_size"):
        build_config({"data": {"image_size": 64, "cache_size": 32}})


def test_centre_view_equals_a_direct_resize_within_rounding():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    img = cv2.resize(small, (230, 230), interpolation=cv2.INTER_CUBIC)  # smooth content
    cached = resize_image(img, 37)  # what the cache holds at 1.15 x 32
    view = centre_view(torch.from_numpy(cached).permute(2, 0, 1)[None], 32)[0].permute(1, 2, 0).numpy()
    # The same square cut from the original (cache pixels 2..33 of 37), resized directly to 32.
    top, bottom = round(2 * 230 / 37), round(34 * 230 / 37)
    direct = resize_image(img[top:bottom, top:bottom], 32)
    assert view.shape == (32, 32, 3)
    assert np.abs(view.astype(int) - direct.astype(int)).mean() < 3


def test_centre_view_of_a_batch_at_size_is_itself():
    x = torch.rand(2, 3, 16, 16)
    assert centre_view(x, 16) is x


def test_scale_views_use_the_margin_without_interpolating():
    x = torch.rand(2, 3, 37, 37)
    assert torch.equal(scaled_view(x, 32, 1.1), x[..., 1:36, 1:36])  # 35 px of real pixels
    assert torch.equal(scaled_view(x, 32, 0.9), x[..., 4:33, 4:33])  # 29 px: less context
    assert scaled_view(x, 32, 1.25).shape[-1] == 40  # beyond the margin: the whole square resized
    flipped = View(0, True, 1.0).take(x, 32)
    assert torch.equal(flipped, x[..., 2:34, 2:34].flip(-1))


def test_training_crops_come_from_the_cached_square():
    cfg = build_config({"augment": {"preset": "medium"}})
    img = np.random.default_rng(1).integers(0, 256, (37, 37, 3), dtype=np.uint8)
    rrc = build_transforms(cfg.augment, train=True, size=32)
    assert type(rrc.transforms[0]).__name__ == "RandomResizedCrop"
    assert rrc(image=img)["image"].shape == (32, 32, 3)
    light = build_transforms(Config().augment, train=True, size=32)
    assert type(light.transforms[0]).__name__ == "RandomCrop" and light(image=img)["image"].shape == (32, 32, 3)


def test_a_run_from_before_the_margin_is_predicted_without_it():
    from comp.predict.runs import with_legacy_cache

    old = Config().to_dict()
    del old["data"]["cache_size"], old["data"]["crop_border"]
    old["augment"]["preset"] = "fundus"
    cfg = Config.model_validate(with_legacy_cache(old))
    assert cfg.data.cache_side == cfg.data.image_size and cfg.data.crop_border is False
    assert Config.model_validate(with_legacy_cache(Config().to_dict())).data.cache_size is None
