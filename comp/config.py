"""Typed experiment config: one YAML file per experiment, dotted ``--set`` overrides.

Each section owns its defaults. Unknown keys are refused with the closest valid key suggested,
and wrong types name the key, the value and the expected type.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from comp.errors import ConfigError

DEFAULT_CONFIG = Path("configs/demo.yaml")
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
    def _cache_not_smaller(cls, v: int | None, info) -> int | None:
        size = info.data.get("image_size")
        if v is not None and size is not None and v < size:
            raise ValueError(f"must be at least data.image_size ({size}): views are cropped from the cached image")
        return v

    @property
    def cache_side(self) -> int:
        """Side of the cached square: ``cache_size``, or a 15% margin over ``image_size``."""
        return self.cache_size if self.cache_size is not None else round(CACHE_MARGIN * self.image_size)

    @property
    def trims_border(self) -> bool:
        """Whether the dark border is trimmed (``crop_border``; None resolves with the preset, see Config)."""
        return bool(self.crop_border)


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
    pretrained: str | None = None  # a local weights file, or "timm-cache"
    activation: Literal["relu", "leaky_relu", "silu", "gelu"] = "relu"
    # None: the architecture's own default (VGG 0.5 as torchvision, ResNets 0, a timm model timm's)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    zero_init_last: bool = True
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


class TrainConfig(Section):
    """The training loop of one fold."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
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
    threads: int | None = Field(None, ge=1)
    full_epochs: int | None = Field(None, ge=1)
    mixup: float = Field(0.0, ge=0)  # Beta(alpha, alpha) of mixup, as timm's --mixup; 0: off
    cutmix: float = Field(0.0, ge=0)  # likewise CutMix (both on: each batch picks one, half and half)
    mix_prob: float = Field(1.0, ge=0, le=1)  # share of batches mixed
    mix_off_epoch: int | None = Field(None, ge=0)  # epochs from this one on are not mixed (timm's mixup_off_epoch)

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup_has_a_schedule(cls, v: float, info) -> float:
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
    def _positive_label(cls, v):
        if isinstance(v, bool):
            raise ValueError("must be a class as train.csv spells it (quote it in YAML)")
        return v
    batch_size: int = Field(256, ge=1)


class Config(Section):
    """One experiment."""

    name: str = "demo"
    data: DataConfig = Field(default_factory=DataConfig)
    folds: FoldsConfig = Field(default_factory=FoldsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    submit: SubmitConfig = Field(default_factory=SubmitConfig)

    _plain = field_validator("name")(classmethod(lambda cls, v: _plain_name(v)))

    @model_validator(mode="after")
    def _resolve_across_sections(self) -> Config:
        """Defaults one section takes from another, and settings a regression head would ignore."""
        if self.data.crop_border is None:
            self.data.crop_border = self.augment.preset == "fundus"
        if self.model.head == "regress":
            if self.train.label_smoothing:
                raise ValueError("train.label_smoothing: a regression head has no class probabilities to smooth; "
                                 "set it to 0 or use model.head=classify")
            if self.train.monitor in ("auc", "logloss"):
                raise ValueError(f"train.monitor: {self.train.monitor} needs class probabilities; a regression "
                                 f"head is monitored with qwk, accuracy, f1 or loss")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (paths as strings, tuples as lists)."""
        return json.loads(self.model_dump_json())

    def hash(self) -> str:
        """Short content hash of the resolved config (stable across key order)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def run_dir(self) -> Path:
        return Path("runs") / self.name

    @property
    def folds_path(self) -> Path:
        return Path("folds") / f"{self.folds.name}.csv"


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, dotted + "."))
    return keys


def _field_annotation(loc: tuple) -> Any:
    """The annotation of the field at ``loc`` (None when it is not a plain field path)."""
    model: Any = Config
    annotation = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return annotation if isinstance(part, int) else None
        annotation = fields[part].annotation
        model = annotation
    return annotation


def _type_name(annotation: Any) -> str:
    args = get_args(annotation)
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return ", ".join(map(str, args))
    if origin in (list, tuple):
        return f"a list of {_type_name(args[0])}"
    if origin is dict:
        return "a mapping"
    if args:
        return " or ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _describe_error(err: dict[str, Any], source: str, overridden: set[str], override_source: str) -> str:
    # Unions add a tag per member to the location (``list[float]``): keep field names and indices only.
    parts = tuple(p for p in err["loc"] if isinstance(p, int) or str(p).isidentifier())
    loc = ".".join(str(p) for p in parts)
    where = override_source if any(loc == k or loc.startswith(k + ".") for k in overridden) else source
    if not loc:  # a rule across sections (Config's model validator): its message names the key
        return f"{source}: {err['msg'].removeprefix('Value error, ')}"
    if err["type"] == "extra_forbidden":
        keys = _valid_keys(Config)
        close = difflib.get_close_matches(loc, keys, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; valid keys here: {_siblings(loc)}"
        return f"{where}: {loc}: unknown key{hint}"
    annotation = _field_annotation(tuple(p for p in parts if not isinstance(p, int)))
    expected = f"expected {_type_name(annotation)}" if annotation is not None else "invalid"
    return f"{where}: {loc}: {err.get('input')!r} is not valid ({expected}; {err['msg'].lower()})"


def _siblings(loc: str) -> str:
    parent = loc.rpartition(".")[0]
    prefix = parent + "." if parent else ""
    names = [k for k in _valid_keys(Config) if k.startswith(prefix) and "." not in k[len(prefix):]]
    return ", ".join(names)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``train.lr=1e-3`` -> (["train", "lr"], 0.001); the value is typed as YAML types it."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected key.sub=value, e.g. --set train.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads "1e-3" as a string; numbers written that way are meant as floats.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return ``raw`` with each dotted override set (sections are created as needed)."""
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (else the last one silently wins)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (the first would be ignored)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass --config configs/<exp>.yaml")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: byte {exc.start} is not UTF-8 text; save the config as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; pass --config configs/<exp>.yaml") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError(f"{path}:{where} is not valid YAML ({problem or 'syntax'}); fix it") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, train:, ...)")
    return raw


def build_config(raw: dict[str, Any], source: str = "config", overridden: set[str] | None = None,
                 override_source: str = "--set") -> Config:
    """Validate a raw dict into a :class:`Config`, turning the first error into a ConfigError.

    Args:
        raw: the mapping read from YAML, overrides applied.
        source: what to name in messages (the config file).
        overridden: dotted keys that came from elsewhere (their errors name ``override_source`` instead).
        override_source: where the overridden keys came from (``--set``, or a params file).
    """
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        message = _describe_error(errors[0], source, overridden or set(), override_source)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        raise ConfigError(message) from None


def load_config(path: Path | str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``path`` (default ``configs/demo.yaml``), apply ``--set`` overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    raw = read_yaml(path)
    raw = apply_overrides(raw, list(overrides))
    overridden = {".".join(parse_override(item)[0]) for item in overrides}
    return build_config(raw, str(path), overridden)


def write_resolved(cfg: Config, directory: Path) -> Path:
    """Write the fully resolved config as ``config.yaml`` in ``directory`` (atomically)."""
    from comp.io import atomic_write_text

    directory.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    return atomic_write_text(directory / "config.yaml", text)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def apply_params(cfg: Config, path: Path) -> Config:
    """Apply a tuned-parameters YAML (``{"train.lr": 0.002, ...}``, dotted or nested) over ``cfg``.

    Raises:
        ConfigError: the file is malformed or names an unknown key.
    """
    params = read_yaml(Path(path))
    flat = flatten_keys(params)
    raw = cfg.to_dict()
    for key, value in flat.items():
        apply_overrides(raw, [f"{key}={json.dumps(value)}"])
    return build_config(raw, "config", set(flat), override_source=str(path))


def flatten_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_keys(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
