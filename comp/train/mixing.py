"""Mixup / CutMix on the device (timm's ``Mixup``), seeded per (seed, epoch, step), and the soft-target losses.

timm's ``Mixup`` draws from numpy's global generator; :class:`BatchMixer` seeds it from
``(seed, epoch, step)`` for the call and restores it afterwards, so a batch is mixed the same way whatever
ran before it (a resumed run repeats an epoch exactly) and nothing else's randomness moves. Its
``label_smoothing`` is left at 0: smoothing and class weights belong to the loss
(:class:`SoftTargetCE`), which then reduces to the hard-target loss of :func:`comp.train.optim.create_criterion`
when a row is one-hot. timm's mixing needs an even batch: an odd last row is left unmixed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from comp.config import TrainConfig
from comp.data import derive_seed


class BatchMixer:
    """Mixes a normalised batch and returns soft targets (rows summing to 1), until ``train.mix_off_epoch``.

    Args:
        cfg: The ``train`` section (``mixup``, ``cutmix``, ``mix_prob``, ``mix_off_epoch``).
        num_classes: Width of the targets.
        seed: The fold's data seed.
    """

    def __init__(self, cfg: TrainConfig, num_classes: int, seed: int):
        from timm.data import Mixup

        self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob, switch_prob=0.5,
                           mode="batch", label_smoothing=0.0, num_classes=num_classes)
        self.num_classes, self.seed, self.off_epoch = num_classes, seed, cfg.mix_off_epoch

    def active(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (from 0) is mixed: timm's ``epoch < mixup_off_epoch``."""
        return self.off_epoch is None or epoch < self.off_epoch

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: int,
                 step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, soft targets (B, K))``; ``images`` is mixed in place."""
        n = len(images) - len(images) % 2
        soft = nn.functional.one_hot(labels, self.num_classes).float()
        if n == 0:
            return images, soft
        state = np.random.get_state()
        np.random.seed(derive_seed(self.seed, epoch, step, "mix") % 2**32)
        try:
            _, soft[:n] = self.mixup(images[:n], labels[:n])  # timm mixes the view, so ``images``, in place
        finally:
            np.random.set_state(state)
        return images, soft


def create_mixer(cfg: TrainConfig, num_classes: int, seed: int) -> BatchMixer | None:
    """A :class:`BatchMixer`, or None when neither ``train.mixup`` nor ``train.cutmix`` is set."""
    if not (cfg.mixup or cfg.cutmix) or cfg.mix_prob == 0:
        return None
    return BatchMixer(cfg, num_classes, seed)


class SoftTargetCE(nn.Module):
    """Cross-entropy against soft targets, with class weights and label smoothing as for hard ones.

    ``loss = sum_i w_i * CE(q_i, p_i) / sum_i w_i``, ``q_i = (1 - e) * t_i + e / K``, ``w_i = t_i . w``: a
    one-hot row gives exactly :class:`comp.train.optim.SmoothedWeightedCE` (and PyTorch's weighted or smoothed
    ``CrossEntropyLoss`` when only one is set); a mixed row is weighted by its classes' shares.
    """

    def __init__(self, weight: torch.Tensor | None, label_smoothing: float):
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted, smoothed cross-entropy of ``logits`` (B, K) against soft ``target`` (B, K)."""
        log_probs = torch.log_softmax(logits.float(), dim=1)  # (B, K)
        eps = self.label_smoothing
        q = (1.0 - eps) * target + eps / target.shape[1]
        per_sample = -(q * log_probs).sum(dim=1)  # (B,)
        if self.weight is None:
            return per_sample.mean()
        w = target @ self.weight
        return (w * per_sample).sum() / w.sum()


class GradeLoss(nn.Module):
    """SmoothL1 between a one-output head and the grade (class index), hard or soft (expected grade) targets.

    Class weights weight each row by its class (a mixed row by its shares), as a weighted mean.
    """

    def __init__(self, weight: torch.Tensor | None, num_classes: int):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("grades", torch.arange(num_classes, dtype=torch.float32))

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted smooth-L1 loss of the grade ``output`` against the expected grade of ``target``."""
        pred = output.float().reshape(-1)  # (B,)
        soft = target.float() if target.dim() == 2 else nn.functional.one_hot(target, len(self.grades)).float()
        per_sample = nn.functional.smooth_l1_loss(pred, soft @ self.grades, reduction="none")
        if self.weight is None:
            return per_sample.mean()
        w = soft @ self.weight
        return (w * per_sample).sum() / w.sum()
