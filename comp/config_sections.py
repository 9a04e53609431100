"""The sections of an experiment config: each key's type, bounds and default (one class per YAML section).

:mod:`comp.config` assembles them into :class:`comp.config.Config`, with the rules across sections, and
loads, overrides and explains them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

CACHE_MARGIN = 1.15  # default data.cache_size / data.image_size
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff")


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _plain_name(value: str) -> str:
    """A name that becomes a file or folder name (``runs/<name>``): no path separators, no ``..``."""
    if not PLAIN_NAME.fullmatch(value) or ".." in value:
        raise ValueError("must be a plain name (letters, digits, _ . + -; no / or ..), e.g. retina-r50")
    return value


class Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Where the competition lives and how its CSVs are read."""

    root: Path = Path("data/demo")
    train_csv: str = "train.csv"
    id_col: str = "id"
    label_col: str = "label"
    group_col: str | None = None
    path_col: str | None = None
    train_dir: str = "train"
    test_dir: str = "test"
    sample_submission: str = "sample_submission.csv"
    test_csv: str | None = None
    ext: str | None = None  # None: detect among IMAGE_EXTENSIONS
    classes: list[str | int | float] | None = None  # the class order (grades); None: numeric, else sorted
    image_size: int = Field(32, ge=8, le=4096)
    channels: Literal[1, 3] = 3
    # How the cached square is made: squash (resize, aspect lost), pad (letterbox), crop (centre of the short side)
    resize: Literal["squash", "pad", "crop"] = "squash"
    # Side of the cached square (a margin the training crops and TTA scales draw from); None: 1.15 x image_size
    cache_size: int | None = Field(None, ge=8, le=4096)
    crop_border: bool | None = None  # trim a dark border before resizing; None: on with augment.preset=fundus
    border_threshold: int = Field(10, ge=0, le=254)  # a pixel is content above this (brightest channel, 0-255)
    ben_graham: bool = False  # 4 * img - 4 * blur(img) + 128 after resizing (retina photos)
    cache_dir: Path = Path(".cache/images")
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"

    @field_validator("ext")
    @classmethod
    def _known_ext(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower().lstrip(".")
        if v not in IMAGE_EXTENSIONS:
            raise ValueError(f"must be one of {', '.join(IMAGE_EXTENSIONS)}")
        return v

    @field_validator("classes", mode="before")
    @classmethod
    def _class_names(cls, v: list | None) -> list[str] | None:
        from comp.classes import normalize_declared

        return None if v is None else normalize_declared(v)

    @field_validator("cache_size")
    @classmethod
    def _cache_not_smaller(cls, v: int | None, info: ValidationInfo) -> int | None:
        size = info.data.get("image_size")
        if v is not None and size is not None and v < size:
            raise ValueError(f"must be at least data.image_size ({size}): views are cropped from the cached image")
        return v

    @property
    def cache_side(self) -> int:
        """Side of the cached square: ``cache_size``, or a 15% margin over ``image_size``."""
        return self.cache_size if self.cache_size is not None else round(CACHE_MARGIN * self.image_size)


class FoldsConfig(Section):
    """How train rows are split into k folds."""

    name: str = "demo"
    k: int = Field(5, ge=2, le=100)
    seed: int = 42
    group_duplicates: bool = False

    _plain = field_validator("name")(classmethod(lambda cls, v: _plain_name(v)))


class ModelConfig(Section):
    """Architecture: one of ours (``resnet50``, ``vgg19_bn``) or ``timm:<name>``."""

    name: str = "resnet18"
    pretrained: str | None = None  # imagenet, a timm tag (resnet50.a1_in1k), a local weights file, or timm-cache
    activation: Literal["relu", "leaky_relu", "silu", "gelu"] = "relu"
    # None: the architecture's own default (VGG 0.5 as torchvision, ResNets 0, a timm model timm's)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    zero_init_last: bool = True
    # stochastic depth of the last residual block (earlier ones linearly less); ResNets and timm models
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)
    # regress: one output, the grade (class index in data.classes order), SmoothL1; labels from tuned cut-points
    head: Literal["classify", "regress"] = "classify"


class AugmentConfig(Section):
    """Training augmentation (albumentations) and normalisation."""

    preset: Literal["none", "light", "medium", "fundus", "cells"] = "light"
    transforms: list[dict[str, Any]] = Field(default_factory=list)
    # None: the pretrained timm model's own (its pretrained_cfg), else ImageNet's (comp.models.factory)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # The training view of the cached image: random (an image_size square anywhere in it), rrc
    # (RandomResizedCrop), centre (the validation view); None: rrc with the medium and fundus presets, else random
    crop: Literal["random", "rrc", "centre"] | None = None
    crop_scale: tuple[float, float] | None = None  # rrc's area range; None: the preset's (0.25-1, fundus 0.5-1)
    # Flips, rotations and colour changes on the batch already on the device (comp.data.batch_augment), the
    # loader only cropping: true, false, or auto (on when training on CUDA and every transform has a device version)
    on_device: bool | Literal["auto"] = False


class TrainConfig(Section):
    """The training loop of one fold."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw", "adam", "nadam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    scheduler: Literal["cosine", "onecycle", "plateau", "none"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: list[float] | Literal["balanced"] | float | None = None
    sampler_strength: float = Field(0.0, ge=0, le=1)  # 0 natural, 1 uniform over classes
    ema: float | None = Field(None, gt=0, lt=1)
    early_stopping: int | None = Field(None, ge=1)
    monitor: Literal["accuracy", "f1", "qwk", "auc", "loss", "logloss"] = "accuracy"
    device: str = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    compile: bool = False
    channels_last: bool = True
    seed: int = 0
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = "auto"
    full_epochs: int | None = Field(None, ge=1)
    freeze_epochs: int = Field(0, ge=0)  # train only the classifier for the first N epochs (fine-tuning)
    layer_decay: float | None = Field(None, gt=0, le=1)  # lr x decay^k for the k-th group below the head
    mixup: float = Field(0.0, ge=0)  # Beta(alpha, alpha) of mixup, as timm's --mixup; 0: off
    cutmix: float = Field(0.0, ge=0)  # likewise CutMix (both on: each batch picks one, half and half)
    mix_prob: float = Field(1.0, ge=0, le=1)  # share of batches mixed
    mix_off_epoch: int | None = Field(None, ge=0)  # epochs from this one on are not mixed (timm's mixup_off_epoch)

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup_has_a_schedule(cls, v: float, info: ValidationInfo) -> float:
        scheduler = info.data.get("scheduler")
        if v and scheduler in ("plateau", "none"):
            raise ValueError(f"train.scheduler={scheduler} has no warm-up and would ignore it; use cosine or "
                             f"onecycle, or set train.warmup_epochs=0")
        return v
    sync_bn: bool | None = None  # SyncBatchNorm under DDP; None: on with CUDA (it needs CUDA)


class TuneConfig(Section):
    """Optuna search around the fold training."""

    trials: int = Field(20, ge=1)
    epochs: int | None = Field(None, ge=1)
    folds: list[int] = Field(default_factory=lambda: [0])
    pruner: Literal["median", "hyperband", "wilcoxon", "none"] = "median"
    seed: int = 0
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)


class SubmitConfig(Section):
    """Test-time augmentation and ensembling."""

    tta: str = "none"
    merge: Literal["mean", "geometric", "logits"] = "mean"
    use_full: bool = False
    full_weight: float | None = Field(None, ge=0, le=1)  # the full fit's share with use_full; None: 1/(k+1)
    ordinal: bool = False  # labels from QWK cut-points tuned on the OOF expected grade
    target: Literal["auto", "label", "proba"] = "auto"  # what the sample's target column(s) hold
    positive: str | int | None = None  # binary P(positive) column: that class (default: the second)

    @field_validator("positive", mode="before")
    @classmethod
    def _positive_label(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a class as train.csv spells it (quote it in YAML)")
        return v
    batch_size: int = Field(256, ge=1)
