"""Optimisers, learning-rate schedules, the loss and an EMA of the weights, built from the config."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from comp.config import TrainConfig

PER_STEP = ("cosine", "onecycle")  # schedules stepped after every batch; plateau steps per epoch


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: biases and norm parameters (1-d) are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device,
                     lr: float | None = None) -> torch.optim.Optimizer:
    """AdamW, Adam, NAdam or SGD (momentum, nesterov), with fused kernels on CUDA and CPU.

    The fused CPU kernel (torch >= 2.4) ran resnet18's AdamW update 2.8x faster than ``foreach`` here;
    other devices (MPS), and NAdam (no fused kernel), use ``foreach``. With ``train.layer_decay`` each
    depth gets its own learning rate (:func:`comp.train.finetune.layer_decay_groups`).
    """
    lr = cfg.lr if lr is None else lr
    if cfg.layer_decay is not None and cfg.layer_decay < 1:
        from comp.train.finetune import layer_decay_groups

        groups = layer_decay_groups(model, lr, cfg.weight_decay, cfg.layer_decay)
    else:
        groups = param_groups(model, cfg.weight_decay)
    fast = {"fused": True} if device.type in ("cuda", "cpu") and cfg.optimizer != "nadam" else {"foreach": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               **fast)
    if cfg.optimizer == "nadam":  # the flowers report's optimiser; L2 weight decay as Keras' and torch's default
        return torch.optim.NAdam(groups, lr=lr, **fast)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr, **fast)


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int,
                     epochs: int | None = None) -> LRScheduler | ReduceLROnPlateau | None:
    """The configured schedule, or None. Cosine and one-cycle step per batch, plateau per epoch.

    One-cycle cycles Adam's beta1 as usual, but not SGD's momentum: that is ``train.momentum``, kept as set.
    """
    epochs = epochs or cfg.epochs
    total = max(1, steps_per_epoch * epochs)
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
            pct_start=max(0.05, min(0.5, cfg.warmup_epochs / epochs)) if cfg.warmup_epochs else 0.25,
            cycle_momentum=cfg.optimizer != "sgd",
        )
    if cfg.scheduler == "cosine":
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total))
    if cfg.scheduler == "plateau":
        mode = "min" if cfg.monitor in ("loss", "logloss") else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=2)
    return None


class WarmupCosine:
    """Linear warm-up then cosine decay to 1% of the base rate (picklable for the scheduler state)."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        """The learning-rate factor at ``step``."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def create_criterion(weights: torch.Tensor | None, label_smoothing: float, device: torch.device) -> nn.Module:
    """Cross-entropy with optional class weights and label smoothing.

    With both set, :class:`SmoothedWeightedCE` is used: PyTorch's ``CrossEntropyLoss(weight=w,
    label_smoothing=e)`` weights the smoothing mass per *output* class (pytorch/pytorch#104776), which pushes
    a majority-class image towards the rare classes. With either alone the two losses are the same.
    """
    if weights is not None:
        weights = weights.to(device=device, dtype=torch.float32)
    if weights is not None and label_smoothing > 0:
        return SmoothedWeightedCE(weights, label_smoothing)
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)


class SmoothedWeightedCE(nn.Module):
    """Smooth the one-hot target first, then weight each sample by ``w[y]`` (a weighted mean, as PyTorch's).

    ``loss = sum_i w[y_i] * CE(q_i, p_i) / sum_i w[y_i]`` with ``q_i = (1 - e) * onehot(y_i) + e / C``, so
    every sample's own optimum stays ``P(true) = 1 - e + e / C`` whatever the class weights.
    """

    def __init__(self, weight: torch.Tensor, label_smoothing: float):
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted, smoothed cross-entropy of ``logits`` (B, C) against class indices ``target`` (B,)."""
        log_probs = torch.log_softmax(logits.float(), dim=1)  # (B, C)
        eps = self.label_smoothing
        nll = -log_probs.gather(1, target[:, None]).squeeze(1)  # (B,)
        per_sample = (1.0 - eps) * nll - eps * log_probs.mean(dim=1)
        w = self.weight[target]
        return (w * per_sample).sum() / w.sum()


class ModelEma:
    """Exponential moving average of a model's parameters and buffers (evaluated instead of the raw weights).

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates (TensorFlow's
    ``ExponentialMovingAverage(num_updates=t)``): without it the first steps' random weights dominate the
    average for ~1 / (1 - decay) steps, and a short run (the 108-step demo at 0.999) validates and saves a
    model at chance. timm's ``ModelEmaV3(use_warmup=True)`` warms up too, as ``1 - (1 + t) ** -2/3``; its
    ``ModelEmaV2`` does not. ``updates`` is saved in ``last.pt`` so a resumed run continues the same curve.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights (buffers that are not floats are copied)."""
        decay = self.current_decay()
        for key, value in _unwrap(model).state_dict().items():
            ema = self.state[key]
            if value.dtype.is_floating_point:
                ema.lerp_(value.detach(), 1.0 - decay)
            else:
                ema.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (the live tensors, not a copy)."""
        return self.state

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int = 0) -> None:
        """Copy ``state`` into the averaged weights and set the update count."""
        for key, value in state.items():
            self.state[key].copy_(value)
        self.updates = updates


def ema_horizon_warning(decay: float | None, total_steps: int) -> str | None:
    """A one-line warning when the EMA averages over more than a third of the run's optimiser steps."""
    if not decay:
        return None
    horizon = 1.0 / (1.0 - decay)
    if horizon <= total_steps / 3:
        return None
    fix = f"set train.ema<={1 - 3 / total_steps:.3g} or null" if total_steps > 3 else "set train.ema=null"
    return (f"warning: train.ema={decay} averages over ~{horizon:.0f} steps, more than a third of this run's "
            f"{total_steps}: the EMA model lags the trained one; {fix}")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
