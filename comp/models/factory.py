"""Build a model from the ``model:`` config section: one of ours by name, or ``timm:<any timm name>``."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from torch import nn

from comp.config import ModelConfig
from comp.errors import ModelError
from comp.models import resnet, vgg

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

TIMM_PREFIX = "timm:"

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
    "resnet152": resnet.resnet152,
    "vgg11_bn": vgg.vgg11_bn,
    "vgg13_bn": vgg.vgg13_bn,
    "vgg16_bn": vgg.vgg16_bn,
    "vgg19_bn": vgg.vgg19_bn,
}


def list_models() -> list[str]:
    """Names of the architectures written here (valid ``model.name`` values besides ``timm:<name>``)."""
    return list(MODELS)


def check_name(name: str) -> None:
    """Refuse a ``model.name`` that is neither ours nor ``timm:<name>`` (a timm name is checked when built).

    Args:
        name: The ``model.name`` value.

    Raises:
        ModelError: ``name`` is unknown; the message lists the valid names and the closest one.
    """
    if name in MODELS or name.startswith(TIMM_PREFIX):
        return
    close = difflib.get_close_matches(name, list(MODELS), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ModelError(
        f"model.name={name!r} is unknown; {hint}use one of {', '.join(MODELS)}, "
        f"or {TIMM_PREFIX}<name> for any timm model"
    )


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def resolve_normalization(cfg_model: ModelConfig, mean: Sequence[float] | None,
                          std: Sequence[float] | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalization ``(mean, std)``: ``augment.mean`` / ``std`` where set, else the weights' own.

    The pretrained weights' own is timm's ``pretrained_cfg`` of the hub tag, or of a pretrained ``timm:``
    model (0.5 for a ViT, CLIP's for CLIP weights); else ImageNet's.
    """
    default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    pretrained = _pretrained_cfg(cfg_model)
    if pretrained is not None and pretrained.mean and pretrained.std:
        default_mean, default_std = tuple(pretrained.mean), tuple(pretrained.std)
    return tuple(mean or default_mean), tuple(std or default_std)


def _pretrained_cfg(cfg_model: ModelConfig) -> PretrainedCfg | None:
    """The timm pretrained config behind ``model.pretrained`` (``None`` for a local file on one of ours)."""
    from comp.models.hub import is_hub_source

    source = cfg_model.pretrained
    if not source:
        return None
    from timm.models import get_pretrained_cfg

    name = cfg_model.name.removeprefix(TIMM_PREFIX)
    if is_hub_source(source) and source != "imagenet":
        name = source
    elif not (is_hub_source(source) or cfg_model.name.startswith(TIMM_PREFIX)):
        return None
    try:
        return get_pretrained_cfg(name)
    except RuntimeError:  # an unknown tag: create_model names it in a clean error
        return None


def create_model(cfg_model: ModelConfig, num_classes: int, in_chans: int) -> nn.Module:
    """Build the model a config asks for, and load its pretrained weights if any.

    Ours take ``activation`` and ``dropout`` (ResNets also ``zero_init_last`` and ``drop_path``); a ``timm:``
    model takes ``dropout`` (timm's ``drop_rate``), ``drop_path`` (``drop_path_rate``) and, when it is not
    ``relu``, ``activation`` (timm's ``act_layer``),
    and keeps timm's own init.

    Args:
        cfg_model: The ``model:`` config section.
        num_classes: Classifier outputs.
        in_chans: Input image channels (1 or 3).

    Returns:
        The model, in training mode, on the CPU (or on the current default device).

    Raises:
        ModelError: Unknown name, settings the timm model does not accept, or weights that do not fit.
    """
    name = cfg_model.name
    check_name(name)
    if num_classes < 1:
        raise ModelError(f"num_classes={num_classes}: a classifier needs at least 1 class")
    regress = getattr(cfg_model, "head", "classify") == "regress"
    outputs = 1 if regress else num_classes  # a regression head: one output, the grade (comp.models.grade)
    if name.startswith(TIMM_PREFIX):
        model = _create_timm(name[len(TIMM_PREFIX):], cfg_model, outputs, in_chans)
    else:
        kwargs = dict(num_classes=outputs, in_chans=in_chans, act=cfg_model.activation)
        if cfg_model.dropout is not None:  # else the architecture's default (VGG: 0.5, as torchvision)
            kwargs["drop_rate"] = cfg_model.dropout
        if name.startswith("resnet"):
            kwargs["zero_init_last"] = cfg_model.zero_init_last
            kwargs["drop_path_rate"] = cfg_model.drop_path
        elif cfg_model.drop_path:
            raise ModelError(f"model.drop_path={cfg_model.drop_path}: {name} has no residual branches to drop; "
                             "set model.drop_path=0 or use a resnet")
        model = MODELS[name](**kwargs)
    if cfg_model.pretrained:
        from comp.models.pretrained import load_pretrained

        load_pretrained(model, cfg_model.pretrained, name)
    if regress:
        from comp.models.grade import GradeHead

        return GradeHead(model, num_classes)
    return model


def _create_timm(arch: str, cfg_model: ModelConfig, num_classes: int, in_chans: int) -> nn.Module:
    import timm

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.5)
        hint = f"; close timm names: {', '.join(close)}" if close else ""
        raise ModelError(f"model.name={TIMM_PREFIX}{arch}: timm has no model {arch!r}{hint} (see timm.list_models())")
    kwargs: dict[str, object] = dict(pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if cfg_model.dropout is not None:
        kwargs["drop_rate"] = cfg_model.dropout
    if cfg_model.activation != "relu":
        kwargs["act_layer"] = cfg_model.activation
    if cfg_model.drop_path:
        kwargs["drop_path_rate"] = cfg_model.drop_path
    try:
        return timm.create_model(arch, **kwargs)
    except TypeError as exc:
        raise ModelError(
            f"model.name={TIMM_PREFIX}{arch} does not accept model.activation/dropout/drop_path ({exc}); "
            "leave them at relu / null / 0 for this model"
        ) from None
