"""Pretrained weights from the Hugging Face hub, the way timm fetches them, into the standard cache.

``model.pretrained: imagenet`` picks timm's default weights for ``model.name`` (``resnet50`` ->
``resnet50.a1_in1k``); ``model.pretrained: resnet50.a1_in1k`` names a timm tag. The weights come through
timm's own ``hf_hub_download`` (``library_name="timm"``) from ``timm/<name>`` into the Hugging Face cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``): a machine with a network
downloads them once; a machine without one (or with ``HF_HUB_OFFLINE=1``) reads the same cache and never
touches the network. Our ResNets and VGG-BNs share timm's parameter names, so the file loads unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from comp.errors import ModelError

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

IMAGENET = "imagenet"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # timm prefers the safetensors file
TRUE = {"1", "on", "yes", "true"}


def is_hub_source(source: str) -> bool:
    """True for ``imagenet`` or a timm tag (``resnet50.a1_in1k``), false for a file path or ``timm-cache``."""
    if source == IMAGENET:
        return True
    return "." in source and "/" not in source and os.sep not in source and not source.endswith(
        (".pth", ".pt", ".bin", ".safetensors", ".ckpt")) and not Path(source).expanduser().exists()


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment names it now (``HF_HUB_CACHE``, ``HF_HOME``, default)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now, or as huggingface_hub read it at import."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").lower()
    return env in TRUE or bool(constants.HF_HUB_OFFLINE)


def resolve_tag(source: str, name: str) -> PretrainedCfg:
    """The timm pretrained config that ``model.pretrained=source`` means for ``model.name=name``.

    Args:
        source: ``imagenet`` or ``<arch>.<tag>``.
        name: ``model.name`` (``resnet50``, ``vgg19_bn``, ``timm:convnext_tiny``).

    Returns:
        timm's ``PretrainedCfg`` (``architecture``, ``tag``, ``hf_hub_id``, ``mean``, ``std``).

    Raises:
        ModelError: timm knows no such weights, or the tag is for another architecture.
    """
    import timm

    arch = name.removeprefix("timm:")
    wanted = arch if source == IMAGENET else source
    try:
        cfg = timm.models.get_pretrained_cfg(wanted)
    except RuntimeError:  # an architecture timm knows with a tag it does not
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        tags = [t for t in timm.list_pretrained(f"{arch.split('.')[0]}.*")][:5]
        hint = f"; timm's tags for it: {', '.join(tags)}" if tags else "; give a local weights file path instead"
        raise ModelError(f"model.pretrained={source}: timm has no hub weights {wanted!r}{hint}")
    if source != IMAGENET and cfg.architecture != arch.split(".")[0]:
        raise ModelError(
            f"model.pretrained={source} holds {cfg.architecture} weights but model.name={name}; "
            f"set model.name={cfg.architecture} or pick a {arch.split('.')[0]}.<tag>"
        )
    return cfg


def download_weights(source: str, name: str) -> Path:
    """The weights file for ``source`` from the hub cache, downloading it first when online and absent.

    Args:
        source: ``imagenet`` or ``<arch>.<tag>``.
        name: ``model.name``.

    Returns:
        The cached file (``.../models--timm--<arch>.<tag>/snapshots/<rev>/model.safetensors``).

    Raises:
        ModelError: No network (or offline mode) and no cached file: one line naming the file looked for,
            the cache folder and the two ways out.
    """
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
    from timm.models._hub import hf_hub_download

    cfg = resolve_tag(source, name)
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    cache, offline = hub_cache_dir(), hub_offline()
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else list(HUB_FILES)
    absent_online = []  # names the hub answered for: the repo has no such file
    for filename in files:
        try:
            return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision or None,
                                        cache_dir=cache, local_files_only=offline))
        except LocalEntryNotFoundError:
            continue  # not cached (and no network or offline): try the next name, then say so
        except EntryNotFoundError:
            absent_online.append(filename)  # the repo has no such file online: try timm's next name
        except HfHubHTTPError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"model.pretrained={source}: the hub refused {repo_id}/{filename} ({first})") from None
    if absent_online == files:
        raise ModelError(f"model.pretrained={source}: {repo_id} on the Hugging Face hub has no "
                         f"{' or '.join(files)}; pick another tag (timm.list_pretrained('{cfg.architecture}.*')) "
                         f"or set model.pretrained=<path to a local .safetensors/.pth file>")
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    why = "offline mode (HF_HUB_OFFLINE) is on" if offline else "the hub cannot be reached"
    raise ModelError(
        f"model.pretrained={source}: {why} and {folder}/snapshots/*/{files[0]} is not in the Hugging Face cache "
        f"{cache}; run once on a machine with a network (HF_HUB_OFFLINE unset) to fill that cache, or set "
        f"model.pretrained=<path to a local .safetensors/.pth file>"
    )
