"""Augmentation presets, explicit transform lists, and on-device normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comp.config import AugmentConfig
from comp.data.augment import PRESETS, build_transforms, normalize_batch
from comp.errors import ConfigError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _names(compose) -> list[str]:
    return [type(t).__name__ for t in compose.transforms]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_keep_shape_and_dtype(preset, channels):
    transform = build_transforms(AugmentConfig(preset=preset), train=True)
    if preset == "none":
        assert transform is None
        return
    rng = np.random.default_rng(0)
    for _ in range(20):
        img = rng.integers(0, 256, (24, 24, channels), dtype=np.uint8)
        out = transform(image=img)["image"]
        assert out.dtype == np.uint8
        assert out.reshape(24, 24, -1).shape == (24, 24, channels)


def test_eval_has_no_transforms():
    assert build_transforms(AugmentConfig(preset="medium", transforms=[{"name": "VerticalFlip"}]), train=False) is None


def test_presets_hold_what_they_promise():
    assert _names(build_transforms(AugmentConfig(preset="light"), True)) == ["HorizontalFlip"]
    assert _names(build_transforms(AugmentConfig(preset="medium"), True)) == [
        "HorizontalFlip", "Affine", "RandomBrightnessContrast"]
    assert "Rotate" in _names(build_transforms(AugmentConfig(preset="fundus"), True))
    assert "RandomRotate90" in _names(build_transforms(AugmentConfig(preset="cells"), True))


def test_explicit_list_both_syntaxes_appended_after_the_preset():
    aug = AugmentConfig(preset="light", transforms=[
        {"name": "VerticalFlip", "p": 0.25},
        {"RandomBrightnessContrast": {"brightness_limit": 0.1, "p": 1.0}},
        {"Transpose": None},
    ])
    transform = build_transforms(aug, train=True)
    assert _names(transform) == ["HorizontalFlip", "VerticalFlip", "RandomBrightnessContrast", "Transpose"]
    assert transform.transforms[1].p == 0.25
    assert transform.transforms[2].brightness_limit == (-0.1, 0.1)


def test_explicit_list_replaces_preset_none_and_nests():
    aug = AugmentConfig(preset="none", transforms=[
        {"OneOf": {"transforms": [{"name": "HorizontalFlip", "p": 1}, {"VerticalFlip": {"p": 1}}], "p": 1}},
    ])
    transform = build_transforms(aug, train=True)
    assert _names(transform) == ["OneOf"]
    assert _names(transform.transforms[0]) == ["HorizontalFlip", "VerticalFlip"]
    img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    out = transform(image=img)["image"].reshape(4, 4)
    assert np.array_equal(out, img[:, ::-1, 0]) or np.array_equal(out, img[::-1, :, 0])


def test_unknown_name_suggests_the_closest():
    items = [{"name": "VerticalFlip"}, {"name": "Blur"}, {"name": "HorizontalFlp"}]
    aug = AugmentConfig(preset="none", transforms=items)
    with pytest.raises(ConfigError) as err:
        build_transforms(aug, train=True)
    assert str(err.value) == (
        "augment.transforms[2]: unknown albumentations transform 'HorizontalFlp'; did you mean HorizontalFlip?"
    )


@pytest.mark.parametrize("item, match", [
    ({"name": "HorizontalFlip", "p": 3}, r"augment.transforms\[0\]: invalid arguments for HorizontalFlip"),
    ({"Affine": {"rotat": 10}}, r"augment.transforms\[0\]: Affine has no argument 'rotat'; did you mean rotate\?"),
    ({"HorizontalFlip": 0.5}, r"augment.transforms\[0\]: arguments of HorizontalFlip must be a mapping"),
    ({"p": 0.5, "q": 1}, r"augment.transforms\[0\]: expected a transform"),
    ({"OneOf": {"transforms": [{"name": "Blurr"}]}},
     r"augment.transforms\[0\].transforms\[0\]: unknown albumentations transform 'Blurr'; did you mean Blur\?"),
])
def test_bad_items_name_the_item(item, match):
    with pytest.raises(ConfigError, match=match):
        build_transforms(AugmentConfig(preset="none", transforms=[item]), train=True)


def test_normalize_batch_three_channels_matches_the_formula():
    x = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    expected = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    out = normalize_batch(x, MEAN, STD)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, expected)


def test_normalize_batch_one_channel_uses_averaged_stats_and_keeps_channels_last():
    x = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    m, s = sum(MEAN) / 3, sum(STD) / 3
    torch.testing.assert_close(normalize_batch(x, MEAN, STD), (x.float() / 255 - m) / s)
    cl = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    assert normalize_batch(cl, MEAN, STD).is_contiguous(memory_format=torch.channels_last)
