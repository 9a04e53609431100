"""Typed experiment config: one YAML file per experiment, dotted ``--set`` overrides.

Each section owns its defaults. Unknown keys are refused with the closest valid key suggested,
and wrong types name the key, the value and the expected type.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from comp.config_sections import (  # noqa: F401  (re-exported: comp.config is where sections are imported from)
    CACHE_MARGIN,
    IMAGE_EXTENSIONS,
    AugmentConfig,
    DataConfig,
    FoldsConfig,
    ModelConfig,
    Section,
    SubmitConfig,
    TrainConfig,
    TuneConfig,
    _plain_name,
)
from comp.errors import ConfigError
from comp.runfolder.layout import CONFIG, RUNS_DIR, RunFolder

DEFAULT_CONFIG = Path("configs/demo.yaml")


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
        """Settings a regression head would ignore."""
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

    @property
    def trims_border(self) -> bool:
        """Whether the dark border is trimmed: ``data.crop_border``, or, left unset, on with the fundus preset.

        Resolved here and not stored, so a copy with another preset (a tuning trial) resolves it again.
        """
        return self.data.crop_border if self.data.crop_border is not None else self.augment.preset == "fundus"

    @property
    def run_dir(self) -> Path:
        """``runs/<name>``: the experiment's folder (its layout: :class:`comp.runfolder.layout.RunFolder`)."""
        return RUNS_DIR / self.name

    @property
    def run(self) -> RunFolder:
        """The experiment's folder and every path in it."""
        return RunFolder(self.run_dir)


def schema_fields(model: type[BaseModel] | None = None, prefix: str = "") -> dict[str, Any]:
    """Every setting of the schema as ``{dotted key: pydantic field}``, sections before their keys.

    The one walker over the config schema: valid keys, a key's type and its suggestions all come from here.
    """
    model = Config if model is None else model
    found: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        found[dotted] = info
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found.update(schema_fields(ann, dotted + "."))
    return found


@functools.cache
def _schema() -> dict[str, Any]:
    return schema_fields()


def field_at(key: str) -> Any:
    """The pydantic field at dotted ``key`` (None when the schema has no such setting)."""
    return _schema().get(key)


def _valid_keys() -> list[str]:
    return list(_schema())


def _field_annotation(loc: tuple) -> Any:
    """The annotation of the field at ``loc`` (None when it is not a plain field path; list indices skipped)."""
    info = field_at(".".join(str(p) for p in loc if not isinstance(p, int)))
    return None if info is None else info.annotation


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
        keys = _valid_keys()
        close = difflib.get_close_matches(loc, keys, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; valid keys here: {_siblings(loc)}"
        return f"{where}: {loc}: unknown key{hint}"
    annotation = _field_annotation(tuple(p for p in parts if not isinstance(p, int)))
    expected = f"expected {_type_name(annotation)}" if annotation is not None else "invalid"
    return f"{where}: {loc}: {err.get('input')!r} is not valid ({expected}; {err['msg'].lower()})"


def _siblings(loc: str) -> str:
    parent = loc.rpartition(".")[0]
    prefix = parent + "." if parent else ""
    names = [k for k in _valid_keys() if k.startswith(prefix) and "." not in k[len(prefix):]]
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


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set dotted ``key`` in the raw config mapping ``raw`` (sections are created as needed); returns ``raw``.

    The one setter: ``--set``, ``--params``, CLI shortcuts and tuning trials all set keys through it.
    """
    *sections, leaf = key.split(".")
    node = raw
    for part in sections:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return ``raw`` with each ``key=value`` override set."""
    for item in overrides:
        path, value = parse_override(item)
        set_dotted(raw, ".".join(path), value)
    return raw


def with_values(cfg: Config, values: dict[str, Any], source: str) -> Config:
    """A validated copy of ``cfg`` with the dotted ``values`` set: how options reach a loaded config.

    Args:
        cfg: The config to start from (not changed).
        values: Typed values by dotted key (``{"train.epochs": 3}``).
        source: What to name when a value is refused (``--epochs``, a params file, ``tune.space``).

    Raises:
        ConfigError: An unknown key (with the closest valid one) or a value the config refuses.
    """
    raw = cfg.to_dict()
    for key, value in values.items():
        set_dotted(raw, key, value)
    return build_config(raw, "config", set(values), override_source=source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (else the last one silently wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
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
    return atomic_write_text(directory / CONFIG, text)


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to something other than empty, 0, false or no."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def apply_params(cfg: Config, path: Path) -> Config:
    """Apply a tuned-parameters YAML (``{"train.lr": 0.002, ...}``, dotted or nested) over ``cfg``.

    Raises:
        ConfigError: the file is malformed or names an unknown key.
    """
    return with_values(cfg, flatten_keys(read_yaml(Path(path))), str(path))


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
