"""The search space: a small YAML grammar in ``tune.space``, turned into Optuna suggestions.

Each key is a dotted config key; each value says how to sample it::

    tune:
      space:
        train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}       # float, log-uniform
        train.batch_size: {low: 32, high: 128, step: 32}        # int (the config field is an int)
        train.optimizer: {choices: [adamw, sgd]}                # categorical (scalars only)
        train.class_weights: {power: {low: 0.0, high: 1.0}}     # one exponent over 1/class frequency
        # train.class_weights: {per_class: {low: 0.5, high: 3.0}}  # one weight per class

Whether a range draws ints or floats follows the config field's type, not how the numbers are written.
Sections may also be nested (``train: {lr: {low: ..., high: ...}}``). With an empty space, a default
one is used: see :func:`default_space`.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from comp.config import Config, apply_overrides, build_config, field_at, with_values
from comp.errors import ConfigError

if TYPE_CHECKING:
    import optuna

RANGE_KEYS = {"low", "high", "log", "step"}
SPEC_KEYS = RANGE_KEYS | {"choices", "per_class", "power"}
CLASS_WEIGHTS = "train.class_weights"
# Keys that define the study itself (what is scored and how long), not a setting to search over.
FIXED_KEYS = {"name": "the experiment name", "folds": "the folds decide what is scored",
              "tune": "tune settings are not searched", "train.monitor": "the objective is the monitored metric",
              "train.epochs": "set tune.epochs instead"}
GRAMMAR = ("a range {low, high[, log, step]}, a choice {choices: [...]}, or for train.class_weights "
           "{per_class: {low, high}} or {power: {low, high}}")


@dataclass(frozen=True)
class Dimension:
    """One searched config key.

    Attributes:
        key: Dotted config key (``train.lr``).
        kind: ``float``, ``int``, ``choice``, ``per_class`` (one weight per class) or ``power``.
        low: Lower bound of a range.
        high: Upper bound of a range.
        log: Sample the range log-uniformly.
        step: Discretisation step of a range (None: continuous floats, 1 for ints).
        choices: The values of a ``choice``.
    """

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def param_names(self, classes: list[str]) -> list[str]:
        """The Optuna parameter names this dimension suggests (one per class for ``per_class``)."""
        if self.kind == "per_class":
            return [f"{self.key}[{c}]" for c in classes]
        return [self.key]


def default_space(cfg: Config) -> dict[str, dict[str, Any]]:
    """The space searched when ``tune.space`` is empty.

    ``train.lr`` log-uniform from a tenth to ten times the configured value; ``train.weight_decay``
    log-uniform the same way (1e-5..1e-1 when it is 0); ``train.class_weights`` as a power 0..1 of
    the inverse class frequency (0: unweighted, 1: balanced), one parameter for any number of classes.
    """
    lr, wd = cfg.train.lr, cfg.train.weight_decay
    return {
        "train.lr": {"low": lr / 10, "high": lr * 10, "log": True},
        "train.weight_decay": {"low": wd / 10, "high": wd * 10, "log": True} if wd > 0
        else {"low": 1e-5, "high": 1e-1, "log": True},
        CLASS_WEIGHTS: {"power": {"low": 0.0, "high": 1.0}},
    }


def parse_space(cfg: Config, classes: list[str]) -> list[Dimension]:
    """Read ``cfg.tune.space`` (or the default space) into dimensions, checking every key and bound.

    Each bound and choice is applied to the config and validated, so an unknown key or a value the
    config refuses is reported before any trial runs.

    Raises:
        ConfigError: An unknown or fixed key (with the closest valid key), a malformed spec, or a
            bound the config refuses.
    """
    raw = _flatten_space(cfg.tune.space) or default_space(cfg)
    dims = [_parse_entry(cfg, key, spec) for key, spec in raw.items()]
    for dim in dims:
        for value in _extremes(dim, len(classes)):
            apply_values(cfg, {dim.key: value}, source="tune.space")
    return dims


def suggest(trial: optuna.Trial, dims: list[Dimension], classes: list[str]) -> dict[str, Any]:
    """Ask ``trial`` for every dimension; return ``{dotted key: value as the config takes it}``."""
    values: dict[str, Any] = {}
    for dim in dims:
        if dim.kind == "choice":
            values[dim.key] = trial.suggest_categorical(dim.key, list(dim.choices))
        elif dim.kind == "per_class":
            values[dim.key] = [_suggest_number(trial, name, dim, float) for name in dim.param_names(classes)]
        else:
            values[dim.key] = _suggest_number(trial, dim.key, dim, int if dim.kind == "int" else float)
    return values


def apply_values(cfg: Config, values: dict[str, Any], source: str = "tune.space") -> Config:
    """A copy of ``cfg`` with the dotted ``values`` set, validated (:func:`comp.config.with_values`)."""
    return with_values(cfg, values, source)


def _suggest_number(trial: optuna.Trial, name: str, dim: Dimension, kind: type) -> float | int:
    if kind is int:
        return trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
    return trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)


def _flatten_space(space: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Dotted keys for nested sections: an entry with no grammar word whose values are all mappings."""
    flat: dict[str, dict[str, Any]] = {}
    for key, spec in space.items():
        dotted = f"{prefix}{key}"
        nested = isinstance(spec, dict) and spec and not set(spec) & SPEC_KEYS
        if nested and all(isinstance(v, dict) for v in spec.values()):
            flat.update(_flatten_space(spec, dotted + "."))
        else:
            flat[dotted] = spec
    return flat


def _parse_entry(cfg: Config, key: str, spec: Any) -> Dimension:
    where = f"tune.space.{key}"
    fixed = next((k for k in FIXED_KEYS if key == k or key.startswith(k + ".")), None)
    if fixed is not None:
        raise ConfigError(f"{where}: {key} cannot be searched ({FIXED_KEYS[fixed]})")
    _check_known_key(key)
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: expected {GRAMMAR}; got {spec!r}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(SPEC_KEYS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; {hint}use {GRAMMAR}")
    if "choices" in spec:
        return _parse_choices(where, key, spec)
    if "per_class" in spec or "power" in spec:
        return _parse_class_weights(cfg, where, key, spec)
    return _parse_range(where, key, spec, "int" if _is_int_field(key) else "float")


def _parse_choices(where: str, key: str, spec: dict) -> Dimension:
    choices = spec["choices"]
    if len(spec) > 1:
        raise ConfigError(f"{where}: choices cannot be combined with {sorted(set(spec) - {'choices'})}")
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}: choices must be a non-empty list, e.g. {{choices: [adamw, sgd]}}")
    bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
    if bad:
        raise ConfigError(f"{where}: choice {bad[0]!r} is not a number, string, bool or null; "
                          f"give a list-valued setting as separate configs instead")
    return Dimension(key, "choice", choices=tuple(choices))


def _parse_class_weights(cfg: Config, where: str, key: str, spec: dict) -> Dimension:
    if key != CLASS_WEIGHTS:
        raise ConfigError(f"{where}: per_class and power apply only to {CLASS_WEIGHTS}")
    if len(spec) != 1:
        raise ConfigError(f"{where}: give one of per_class or power, e.g. {{power: {{low: 0, high: 1}}}}")
    kind, inner = next(iter(spec.items()))
    if not isinstance(inner, dict):
        raise ConfigError(f"{where}.{kind}: expected a range {{low, high[, log, step]}}; got {inner!r}")
    dim = _parse_range(f"{where}.{kind}", key, inner, "float")
    if dim.low < 0:
        raise ConfigError(f"{where}.{kind}: low={dim.low} must be >= 0 (weights and powers are non-negative)")
    return Dimension(key, kind, dim.low, dim.high, dim.log, dim.step)


def _parse_range(where: str, key: str, spec: dict, kind: str) -> Dimension:
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]!r} does not belong in a range {{low, high[, log, step]}}")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs both low and high, e.g. {{low: 1.0e-4, high: 1.0e-2, log: true}}")
    try:
        low, high = float(spec["low"]), float(spec["high"])
        step = None if spec.get("step") is None else float(spec["step"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: low, high and step must be numbers; got {spec!r}") from None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false; got {log!r}")
    if not low < high:
        raise ConfigError(f"{where}: low={low:g} must be below high={high:g}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0; got low={low:g}")
    if log and step is not None:
        raise ConfigError(f"{where}: step and log cannot be combined (Optuna samples one or the other)")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step={step:g} must be > 0")
    if kind == "int" and not (low.is_integer() and high.is_integer() and (step or 1).is_integer()):
        raise ConfigError(f"{where}: {key} is an integer setting; low, high and step must be whole numbers")
    return Dimension(key, kind, low, high, log, step)


def _extremes(dim: Dimension, num_classes: int) -> list[Any]:
    """The values that bound a dimension: each is validated against the config before trials start."""
    if dim.kind == "choice":
        return list(dim.choices)
    ends = [int(dim.low), int(dim.high)] if dim.kind == "int" else [dim.low, dim.high]
    if dim.kind == "per_class":
        return [[v] * num_classes for v in ends]
    return ends


def _check_known_key(key: str) -> None:
    if field_at(key) is not None:
        return
    # The config's own message: the closest valid key, or the valid keys of that section.
    raw = apply_overrides(Config().to_dict(), [f"{key}=0"])
    build_config(raw, "tune.space", {key}, override_source="tune.space")
    raise ConfigError(f"tune.space: {key}: not a setting that takes a single value")


def _is_int_field(key: str) -> bool:
    annotation = field_at(key).annotation
    origin = get_origin(annotation)
    members = get_args(annotation) if origin in (Union, types.UnionType) else (annotation,)
    return int in members and float not in members
