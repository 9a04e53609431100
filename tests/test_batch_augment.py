"""On-device augmentation (``augment.on_device``): tensor ops on the batch, seeded per (seed, epoch, step)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from comp.config import AugmentConfig, load_config
from comp.data.augment import build_transforms
from comp.data.batch_augment import (
    BatchAugment,
    BrightnessContrast,
    Flip,
    Rot90,
    Warp,
    create_batch_augment,
    device_ops,
)
from comp.errors import ConfigError
from comp.train.runner import run_training

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402

CPU = torch.device("cpu")


def batch(n: int = 16, side: int = 24, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=gen, dtype=torch.uint8)  # (B, C, H, W)


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("preset", ["light", "medium", "fundus", "cells"])
def test_same_seed_epoch_and_step_same_batch_other_epoch_or_step_differs(preset):
    augment = create_batch_augment(AugmentConfig(preset=preset, on_device=True), CPU, seed=3)
    x = batch().contiguous(memory_format=torch.channels_last)
    first = augment(x, epoch=2, step=5)
    assert first.dtype == torch.uint8 and first.shape == x.shape
    assert first.is_contiguous(memory_format=torch.channels_last)  # the step's memory format is kept
    assert torch.equal(first, augment(x, epoch=2, step=5))
    assert torch.equal(first, BatchAugment(augment.ops, seed=3)(x.contiguous(), 2, 5))  # layout changes nothing
    assert not torch.equal(first, augment(x, epoch=3, step=5))
    assert not torch.equal(first, augment(x, epoch=2, step=6))
    assert not torch.equal(first, BatchAugment(augment.ops, seed=4)(x, 2, 5))


def test_flips_are_exact_and_chosen_per_sample():
    x = batch()
    assert torch.equal(Flip(-1, 1.0)(x, gen()), torch.flip(x, dims=(-1,)))
    assert torch.equal(Flip(-2, 1.0)(x, gen()), torch.flip(x, dims=(-2,)))
    assert torch.equal(Flip(-1, 0.0)(x, gen()), x)
    half = Flip(-1, 0.5)(x, gen())
    flipped = [torch.equal(h, torch.flip(s, dims=(-1,))) for h, s in zip(half, x)]
    kept = [torch.equal(h, s) for h, s in zip(half, x)]
    assert all(f != k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < len(x)


def test_quarter_turns_are_exact():
    x = batch(n=32)
    out = Rot90(1.0)(x, gen())
    turns = [next(k for k in range(4) if torch.equal(o, torch.rot90(s, k, (-2, -1)))) for o, s in zip(out, x)]
    assert set(turns) == {0, 1, 2, 3}
    assert torch.equal(Rot90(0.0)(x, gen()), x)


def test_identity_parameters_give_the_input_back():
    x = batch()
    identity = [Warp(1.0), BrightnessContrast(1.0, (0.0, 0.0), (0.0, 0.0)), Flip(-1, 0.0), Rot90(0.0)]
    assert torch.equal(BatchAugment(identity, seed=0)(x, 0, 0), x)
    as_float = x.float()
    assert torch.allclose(BatchAugment(identity, seed=0)(as_float, 0, 0), as_float, atol=1e-3)


def test_warp_turns_as_albumentations_does():
    x = batch(n=4, side=33)  # odd side: the centre is a pixel, so a quarter turn lands on the grid
    warped = Warp(1.0, rotate=(90.0, 90.0), padding="zeros")(x.float(), gen()).round().to(torch.uint8)
    ours = warped[0].permute(1, 2, 0).numpy()
    theirs = A.Affine(rotate=(90, 90), p=1.0)(image=x[0].permute(1, 2, 0).numpy().copy())["image"]
    assert np.array_equal(ours, theirs)


def test_warp_scale_and_translate_ranges_are_drawn_per_sample():
    warp = Warp(1.0, rotate=(-15.0, 15.0), scale=((0.9, 1.1), (0.9, 1.1)),
                translate=((-0.0625, 0.0625), (-0.0625, 0.0625)))
    theta = warp.theta(gen(), 256, 32, 32)  # (n, 2, 3) output -> input
    angle = torch.rad2deg(torch.atan2(theta[:, 0, 1], theta[:, 0, 0]))
    assert angle.abs().max() <= 15.01 and angle.std() > 5
    shift = -torch.linalg.solve(theta[:, :, :2], theta[:, :, 2:]).squeeze(-1)  # (n, 2) in [-1, 1] units
    assert shift.abs().max() <= 2 * 0.0625 + 1e-5 and shift.std() > 0.03  # up to 6.25 % of the side, each axis
    scale = torch.linalg.det(theta[:, :, :2]).reciprocal()  # sx * sy
    assert scale.min() >= 0.81 - 1e-4 and scale.max() <= 1.21 + 1e-4 and scale.std() > 0.03


def test_brightness_and_contrast_move_the_statistics():
    x = torch.full((8, 3, 16, 16), 100, dtype=torch.uint8)
    x[:, :, :8] = 60  # two levels: mean 80, std 20
    brighter = BatchAugment([BrightnessContrast(1.0, (0.1, 0.1), (0.0, 0.0))], 0)(x, 0, 0).float()
    assert torch.allclose(brighter.mean(dim=(1, 2, 3)), torch.full((8,), 80 + 25.5), atol=0.51)
    assert torch.allclose(brighter.std(dim=(1, 2, 3)), x.float().std(dim=(1, 2, 3)), atol=0.6)
    stronger = BatchAugment([BrightnessContrast(1.0, (0.0, 0.0), (0.5, 0.5))], 0)(x, 0, 0).float()
    assert torch.allclose(stronger.std(dim=(1, 2, 3)), 1.5 * x.float().std(dim=(1, 2, 3)), atol=0.6)
    clipped = BatchAugment([BrightnessContrast(1.0, (0.9, 0.9), (0.0, 0.0))], 0)(x, 0, 0)
    assert int(clipped.max()) == 255  # clipped like albumentations, not wrapped around


def test_presets_become_device_ops_with_their_ranges():
    assert device_ops(AugmentConfig(preset="none")) == []
    assert device_ops(AugmentConfig(preset="light")) == [Flip(-1, 0.5)]
    medium = device_ops(AugmentConfig(preset="medium"))
    assert [type(op) for op in medium] == [Flip, Warp, BrightnessContrast]
    assert medium[1] == Warp(0.5, (-15.0, 15.0), ((0.9, 1.1), (0.9, 1.1)), ((-0.0625, 0.0625), (-0.0625, 0.0625)),
                             "reflection")
    fundus = device_ops(AugmentConfig(preset="fundus"))
    assert fundus[2] == Warp(1.0, (-180.0, 180.0), padding="zeros")  # black fill, as the CPU preset
    assert [type(op) for op in device_ops(AugmentConfig(preset="cells"))] == [Flip, Flip, Rot90, BrightnessContrast]
    custom = device_ops(AugmentConfig(preset="none", transforms=[{"VerticalFlip": {"p": 0.2}}]))
    assert custom == [Flip(-2, 0.2)]


@pytest.mark.parametrize("transforms, named", [
    ([{"name": "GaussianBlur"}], "augment.transforms[0]: GaussianBlur has no on-device version"),
    ([{"name": "HorizontalFlip"}, {"name": "Affine", "shear": 10}], "augment.transforms[1]: Affine with"),
    ([{"name": "OneOf", "transforms": [{"name": "HorizontalFlip"}]}], "augment.transforms[0]: OneOf has no"),
])
def test_transforms_without_a_device_version_are_one_line_errors(transforms, named):
    aug = AugmentConfig(preset="light", transforms=transforms, on_device=True)
    with pytest.raises(ConfigError, match="set augment.on_device=false") as exc:
        create_batch_augment(aug, CPU, seed=0)
    assert str(exc.value).startswith(named) and "\n" not in str(exc.value)
    auto = aug.model_copy(update={"on_device": "auto"})
    assert create_batch_augment(auto, torch.device("cuda"), seed=0) is None  # auto keeps them on the CPU


def test_auto_is_on_only_for_cuda_and_the_loader_then_only_crops():
    assert create_batch_augment(AugmentConfig(on_device="auto"), CPU, seed=0) is None
    assert create_batch_augment(AugmentConfig(on_device=False), torch.device("cuda"), seed=0) is None
    assert create_batch_augment(AugmentConfig(on_device="auto"), torch.device("cuda"), seed=0) is not None
    aug = AugmentConfig(preset="medium", on_device=True)
    full = build_transforms(aug, train=True, size=24)
    cropped = build_transforms(aug, train=True, size=24, crop_only=True)
    assert len(full.transforms) == 4 and [type(t) for t in cropped.transforms] == [A.RandomResizedCrop]
    image = np.zeros((28, 28, 3), dtype=np.uint8)
    assert cropped(image=image)["image"].shape == (24, 24, 3)
    assert build_transforms(AugmentConfig(crop="random"), train=True, size=None, crop_only=True) is None


def test_on_device_config_key_accepts_true_false_auto(tiny_project):
    project = tiny_project()
    assert load_config(project["path"], ["augment.on_device=true"]).augment.on_device is True
    assert load_config(project["path"], ["augment.on_device=auto"]).augment.on_device == "auto"
    with pytest.raises(ConfigError, match="augment.on_device"):
        load_config(project["path"], ["augment.on_device=gpu"])


def test_training_with_on_device_augmentation_learns_and_repeats(tiny_project):
    project = tiny_project(augment={"preset": "cells", "on_device": True}, data={"image_size": 16})
    cfg = load_config(project["path"], ["train.epochs=3"])
    history = project["dir"] / "runs/exp/fold0/history.csv"

    def losses() -> pd.DataFrame:
        run_training(cfg, folds=[0], log=lambda line: None)
        return pd.read_csv(history).drop(columns=["seconds", "images_per_s"])

    first = losses()
    assert np.isfinite(first["train_loss"]).all() and first["train_loss"].iloc[-1] < first["train_loss"].iloc[0]
    pd.testing.assert_frame_equal(first, losses())  # the same seed: the same epochs, bit for bit
    off = load_config(project["path"], ["train.epochs=3", "augment.on_device=false"])
    run_training(off, folds=[0], log=lambda line: None)
    assert not pd.read_csv(history)["train_loss"].equals(first["train_loss"])  # the augmentation did move


def test_cv2_border_names_map_to_grid_sample_padding():
    aug = AugmentConfig(preset="none", transforms=[
        {"name": "Rotate", "limit": 10, "border_mode": cv2.BORDER_REPLICATE, "p": 1.0}])
    assert device_ops(aug) == [Warp(1.0, (-10.0, 10.0), padding="border")]
    bad = AugmentConfig(preset="none", on_device=True, transforms=[
        {"name": "Rotate", "border_mode": cv2.BORDER_CONSTANT, "fill": 128}])
    with pytest.raises(ConfigError, match=r"augment.transforms\[0\]: Rotate\(border_mode=0, fill=128"):
        create_batch_augment(bad, CPU, seed=0)
