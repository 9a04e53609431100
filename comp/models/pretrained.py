"""Pretrained weights from the Hugging Face hub (as timm gets them), a local file, or timm's local cache.

``model.pretrained`` is ``imagenet`` or a timm tag (``resnet50.a1_in1k``: downloaded once into the
Hugging Face cache, read from it offline; :mod:`comp.models.hub`), a path
(``.pth``/``.pt``/``.bin``/``.safetensors``; timm or torchvision
naming; a bare state dict or one nested under ``state_dict`` / ``model``; a DDP ``module.`` prefix is
stripped) or ``timm-cache``, the weights timm would use if they are already in the Hugging Face or
torch hub cache on this machine. A classifier with another class count is left at its fresh init and
a 3-channel stem is summed over its input channels for a 1-channel model.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from comp.errors import ModelError

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

TIMM_CACHE = "timm-cache"
SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
SHOW = 3  # mismatches named in an error message, per kind


@dataclass
class LoadedWeights:
    """What :func:`load_pretrained` did.

    Attributes:
        path: The weights file read.
        classifier_reset: The file's classifier had another class count; ours keeps its fresh init.
        stem_adapted: A multi-channel stem was summed over its input channels for a 1-channel model.
    """

    path: Path
    classifier_reset: bool = False
    stem_adapted: bool = False


def load_pretrained(model: nn.Module, source: str, name: str) -> LoadedWeights:
    """Load ``model.pretrained`` weights into ``model`` in place.

    Args:
        model: One of ours, or a timm model (both carry ``pretrained_cfg`` with ``first_conv`` and
            ``classifier`` module names).
        source: ``imagenet``, a timm tag (``resnet50.a1_in1k``), a weights file path, or ``"timm-cache"``.
        name: ``model.name`` (``resnet50``, ``timm:convnext_tiny``): used to find cached weights and in messages.

    Returns:
        A :class:`LoadedWeights` report.

    Raises:
        ModelError: The file is missing or unreadable, no cached weights exist, or the weights do not fit
            (missing / unexpected keys, other shapes: the first few of each are named).
    """
    path = locate_weights(source, name)
    state = read_state_dict(path)
    if "pre_logits.fc1.weight" in state and "classifier.0.weight" in model.state_dict():
        state = timm_vgg_to_torchvision(state)
    target = model.state_dict()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    report = LoadedWeights(path)
    report.stem_adapted = _adapt_stem(state, target, cfg.get("first_conv"))
    reset = _drop_classifier(state, target, cfg.get("classifier"))
    report.classifier_reset = bool(reset)
    _check_fit(state, target, reset, path, name)
    model.load_state_dict(state, strict=False)  # only the reset classifier (and old BN counters) may be absent
    return report


def locate_weights(source: str, name: str) -> Path:
    """The weights file ``model.pretrained`` names.

    From the hub cache (downloaded first when online), timm's caches, or a local path (not read here;
    :func:`read_state_dict` checks it).

    Raises:
        ModelError: Hub weights that are neither cached nor reachable, or no cached ``timm-cache`` weights.
    """
    from comp.models.hub import download_weights, is_hub_source

    if source == TIMM_CACHE:
        return find_cached_weights(name)
    if is_hub_source(source):
        return download_weights(source, name)
    return Path(source).expanduser()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file, unwrapped and de-prefixed.

    Args:
        path: The weights file.

    Returns:
        Parameter name -> tensor, on the CPU, with any ``module.`` / ``_orig_mod.`` prefix removed.

    Raises:
        ModelError: The file is missing, has an unknown suffix, cannot be read, or holds no state dict.
    """
    if not path.is_file():
        raise ModelError(f"model.pretrained={path}: file not found; give the path of a {'/'.join(SUFFIXES)} file")
    if path.suffix not in SUFFIXES:
        raise ModelError(f"model.pretrained={path}: unknown weights format {path.suffix!r}; use {', '.join(SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            f"model.pretrained={path}: cannot read weights: the file pickles objects other than tensors "
            "(e.g. a whole module); re-save it with torch.save(model.state_dict(), path)"
        ) from None
    except Exception as exc:  # any reader failure is the file's fault
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"model.pretrained={path}: cannot read weights ({first}); is the file complete?") from None
    for key in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ModelError(
            f"model.pretrained={path}: holds no state dict (expected name -> tensor, bare or under "
            "'state_dict' or 'model')"
        )
    return {_strip_prefixes(k): v for k, v in obj.items()}


def _strip_prefixes(key: str) -> str:
    for prefix in PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def timm_vgg_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename timm's VGG head (``pre_logits.fc1/fc2`` convs, ``head.fc``) to torchvision's ``classifier.0/3/6``.

    timm stores the first two classifier layers as 7x7 and 1x1 convolutions; flattening their weights
    gives the linear weights in torchvision's (C, H, W) flatten order.

    Args:
        state: A timm ``vgg*_bn`` state dict.

    Returns:
        The same weights under torchvision's names.
    """
    rename = {"pre_logits.fc1.": "classifier.0.", "pre_logits.fc2.": "classifier.3.", "head.fc.": "classifier.6."}
    out = {}
    for key, value in state.items():
        for old, new in rename.items():
            if key.startswith(old):
                key = new + key[len(old):]
                if key.endswith("weight") and value.ndim == 4:
                    value = value.flatten(1)
        out[key] = value
    return out


def _names(cfg_value: str | tuple[str, ...] | list[str] | None) -> list[str]:
    if not cfg_value:
        return []
    return [cfg_value] if isinstance(cfg_value, str) else list(cfg_value)


def _adapt_stem(state: dict, target: dict, first_conv: str | tuple[str, ...] | None) -> bool:
    adapted = False
    for conv in _names(first_conv):
        key = f"{conv}.weight"
        if key in state and key in target and state[key].ndim == 4 and target[key].shape[1] == 1 < state[key].shape[1]:
            state[key] = state[key].sum(dim=1, keepdim=True)  # (O, 3, k, k) -> (O, 1, k, k): same response to grey
            adapted = True
    return adapted


def _drop_classifier(state: dict, target: dict, classifier: str | tuple[str, ...] | None) -> list[str]:
    """Remove classifier weights made for another class count; return the model keys left at fresh init."""
    reset = []
    for head in _names(classifier):
        weight, bias = state.get(f"{head}.weight"), target.get(f"{head}.weight")
        if weight is None or bias is None or weight.shape == bias.shape or weight.shape[1:] != bias.shape[1:]:
            continue  # same classes, or not a class-count change (then _check_fit reports it)
        for key in (f"{head}.weight", f"{head}.bias"):
            state.pop(key, None)
            if key in target:
                reset.append(key)
    return reset


def _check_fit(state: dict, target: dict, reset: list[str], path: Path, name: str) -> None:
    missing = [k for k in target if k not in state and k not in reset and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k} {tuple(state[k].shape)} in file vs {tuple(target[k].shape)} in model"
        for k in state if k in target and state[k].shape != target[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("other shape", shapes)):
        if items:
            more = f", ... ({len(items) - SHOW} more)" if len(items) > SHOW else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:SHOW])}{more}")
    guess = guess_resnet(state)
    hint = f"; the file looks like {guess} weights" if guess and guess != name.removeprefix("timm:") else ""
    raise ModelError(
        f"model.pretrained={path}: weights do not fit {name}{hint}; {'; '.join(parts)}. "
        "Use weights saved from the same architecture"
    )


def guess_resnet(state: dict[str, torch.Tensor]) -> str | None:
    """Name the ResNet a state dict was saved from, from its block counts (``None`` if not one of ours).

    Args:
        state: A state dict with timm / torchvision ResNet names.

    Returns:
        ``resnet18`` ... ``resnet152``, or ``None``.
    """
    depths = []
    for stage in range(1, 5):
        blocks = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}.") and k.split(".")[1].isdigit()}
        depths.append(max(blocks) + 1 if blocks else 0)
    bottleneck = any(".conv3." in k for k in state)
    known = {
        (False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34", (True, (3, 4, 6, 3)): "resnet50",
        (True, (3, 4, 23, 3)): "resnet101", (True, (3, 8, 36, 3)): "resnet152",
    }
    return known.get((bottleneck, tuple(depths)))


def find_cached_weights(name: str) -> Path:
    """Find the weights timm would load for ``name`` in the local caches, without any network access.

    Looks in the Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME``) for timm's ``model.safetensors``
    or ``pytorch_model.bin``, then in the torch hub cache (``TORCH_HOME``) for timm's or torchvision's
    download file.

    Args:
        name: ``model.name``: ``resnet50``, ``vgg19_bn`` or ``timm:<name>[.<tag>]``.

    Returns:
        The cached file.

    Raises:
        ModelError: No pretrained weights are known for ``name``, or none are cached; the message says
            where the file would be and how to use a local path instead.
    """
    import timm

    arch = name.removeprefix("timm:")
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        raise ModelError(f"model.pretrained={TIMM_CACHE}: timm has no pretrained weights for {arch!r}; "
                         "give a local weights file path instead")
    candidates = _hf_candidates(cfg) + _hub_candidates(cfg, None if name.startswith("timm:") else arch)
    for path in candidates:
        if path.is_file():
            return path
    hub_id = (cfg.hf_hub_id or "").split("@")[0]
    where = f"https://huggingface.co/{hub_id} (model.safetensors)" if hub_id else cfg.url
    raise ModelError(
        f"model.pretrained={TIMM_CACHE}: no cached weights for {arch} (looked for "
        f"{', '.join(str(p) for p in candidates)}); nothing is downloaded at run time. On a machine with a "
        f"network, fetch {where}, copy it to this machine and set model.pretrained=<path to the file>"
    )


def _hf_candidates(cfg: PretrainedCfg) -> list[Path]:
    if not cfg.hf_hub_id:
        return []
    from huggingface_hub import try_to_load_from_cache

    from comp.models.hub import hub_cache_dir

    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    cache = hub_cache_dir()  # as the environment names it now, like the hub download
    found = []
    for filename in filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin")):
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision or None)
        if isinstance(hit, str):
            return [Path(hit)]
        found.append(Path(cache) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "<rev>" / filename)
    return found


def _hub_candidates(cfg: PretrainedCfg, torchvision_arch: str | None) -> list[Path]:
    urls = [cfg.url] if cfg.url else []
    if torchvision_arch:  # ours share torchvision's naming, so its download of the same net fits too
        import torchvision

        urls.append(torchvision.models.get_model_weights(torchvision_arch).DEFAULT.url)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return [checkpoints / os.path.basename(urlparse(url).path) for url in dict.fromkeys(urls)]
