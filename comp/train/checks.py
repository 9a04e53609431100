"""Settings that would silently hurt or be ignored: one warning line each, logged when a fold starts."""

from __future__ import annotations

from comp.config import Config
from comp.device import Runtime
from comp.errors import TrainError
from comp.train.optim import ema_horizon_warning


def setting_warnings(cfg: Config, total_steps: int, distributed: bool = False) -> list[str]:
    """Warnings about ``cfg`` for a run of ``total_steps`` optimiser steps (each one line, no fold prefix)."""
    t = cfg.train
    lines = [ema_horizon_warning(t.ema, total_steps)]
    if t.class_weights is not None and t.sampler_strength > 0:
        lines.append(f"warning: train.class_weights={t.class_weights} and train.sampler_strength="
                     f"{t.sampler_strength} both correct the class imbalance: rare classes are up-weighted twice")
    if t.sync_bn and not distributed:
        lines.append("warning: train.sync_bn=true does nothing outside torchrun (one process); it is ignored")
    if t.freeze_epochs and t.freeze_epochs >= t.epochs:
        lines.append(f"warning: train.freeze_epochs={t.freeze_epochs} >= train.epochs={t.epochs}: only the "
                     f"classifier ever trains (a linear probe); lower train.freeze_epochs to fine-tune the rest")
    if t.freeze_epochs and not cfg.model.pretrained:
        lines.append(f"warning: train.freeze_epochs={t.freeze_epochs} with model.pretrained unset freezes a "
                     f"random backbone; set model.pretrained or train.freeze_epochs=0")
    return [line for line in lines if line]


def use_sync_bn(setting: bool | None, runtime: Runtime) -> bool:
    """Whether to convert BatchNorm to SyncBatchNorm: ``train.sync_bn``, or under DDP on CUDA when None.

    Raises:
        TrainError: ``train.sync_bn=true`` under DDP on a device SyncBatchNorm does not support.
    """
    if not runtime.distributed:
        return False
    on_cuda = runtime.device.type == "cuda"
    if setting and not on_cuda:
        raise TrainError(f"train.sync_bn=true: SyncBatchNorm needs CUDA, this run is on {runtime.device.type}; "
                         f"set train.sync_bn=false (each rank then keeps its own BatchNorm statistics)")
    return on_cuda if setting is None else setting
