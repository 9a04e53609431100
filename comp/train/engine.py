"""One epoch of training and one pass of evaluation: the two functions the fold loop repeats."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from comp.data import centre_view, normalize_batch, set_epoch, start_epoch, to_device
from comp.device import Runtime
from comp.errors import TrainError
from comp.metrics import compute_metrics
from comp.train.optim import PER_STEP, ModelEma

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


@dataclass
class StepContext:
    """What a training epoch needs besides the model and the data."""

    runtime: Runtime
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    scheduler_name: str
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool
    grad_clip: float | None
    ema: ModelEma | None
    label: str  # e.g. "fold 0": named in progress bars and errors
    image_size: int | None = None  # validation batches arrive at the cached side: their centre view is taken
    mixer: object | None = None  # comp.train.mixing.BatchMixer: mixup/cutmix with soft targets
    soft_criterion: nn.Module | None = None  # the loss of mixed (soft) targets
    batch_augment: object | None = None  # comp.data.batch_augment.BatchAugment: augment.on_device


def _check_finite(losses: list[torch.Tensor], first_step: int, epoch: int, ctx: StepContext) -> None:
    """Raise on the first non-finite loss among the steps since the last check (one sync per check)."""
    values = torch.stack(losses).float().cpu()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        step = first_step + int(bad[0])
        raise TrainError(
            f"{ctx.label}: loss is {values[int(bad[0])].item()} at epoch {epoch + 1}, step {step + 1}; "
            f"training stopped and the last good checkpoint is kept; lower train.lr or set train.grad_clip"
        )


def _optimizer_step(model: nn.Module, loss: torch.Tensor, ctx: StepContext) -> None:
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(loss).backward()
    if ctx.grad_clip:
        ctx.scaler.unscale_(ctx.optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), ctx.grad_clip)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    if ctx.scheduler is not None and ctx.scheduler_name in PER_STEP:
        ctx.scheduler.step()
    if ctx.ema is not None:
        ctx.ema.update(model)


def _batch_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epoch: int, step: int,
                ctx: StepContext) -> torch.Tensor:
    """The training loss of one device batch: augmented on the device, normalised, mixed, forward."""
    if ctx.batch_augment is not None:
        images = ctx.batch_augment(images, epoch, step)  # (B, C, H, W) uint8, flipped, turned, recoloured
    images = normalize_batch(images, ctx.mean, ctx.std)  # (B, C, H, W) float
    targets, criterion = labels, ctx.criterion
    if ctx.mixer is not None and ctx.mixer.active(epoch):
        images, targets = ctx.mixer(images, labels, epoch, step)  # targets (B, K), rows sum to 1
        criterion = ctx.soft_criterion
    with ctx.runtime.autocast():
        return criterion(model(images), targets)


def train_one_epoch(model: nn.Module, loader: DataLoader, epoch: int, ctx: StepContext,
                    batches: Iterator | None = None) -> dict[str, float]:
    """Train for one epoch; returns ``train_loss``, ``seconds`` and ``images_per_s``.

    Args:
        model: The network, trained in place.
        loader: The training DataLoader.
        epoch: The 0-based epoch (it seeds the epoch's order and augmentation).
        ctx: The optimizer, scaler, scheduler, EMA and runtime of the step.
        batches: This epoch's iterator if it was started ahead (:func:`comp.data.start_epoch`);
            None starts it here.

    Raises:
        TrainError: a non-finite loss (naming the epoch and step).
    """
    model.train()
    if batches is None:
        batches = start_epoch(loader, epoch)
    device = ctx.runtime.device
    check_every = 1 if device.type == "cpu" else 20  # a check syncs the device: rare on GPUs
    total = torch.zeros((), device=device)
    seen, window, window_start = 0, [], 0
    start = time.perf_counter()
    bar = tqdm(batches, total=len(loader), desc=f"{ctx.label} epoch {epoch + 1}", leave=False, disable=None,
               unit="batch")
    for step, batch in enumerate(bar):
        images, labels = to_device(batch, device, ctx.channels_last)
        loss = _batch_loss(model, images, labels, epoch, step, ctx)
        _optimizer_step(model, loss, ctx)
        total += loss.detach() * len(labels)
        seen += len(labels)
        window.append(loss.detach())
        if len(window) >= check_every:
            _check_finite(window, window_start, epoch, ctx)
            bar.set_postfix(loss=f"{window[-1].item():.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
            window, window_start = [], step + 1
    if window:
        _check_finite(window, window_start, epoch, ctx)
    seconds = time.perf_counter() - start
    train_loss = _all_reduce_mean(total, seen, ctx.runtime)
    return {"train_loss": train_loss, "seconds": seconds, "images_per_s": seen * ctx.runtime.world_size / seconds}


def _all_reduce_mean(total: torch.Tensor, count: int, runtime: Runtime) -> float:
    if runtime.distributed:
        pair = torch.stack([total.float(), torch.tensor(float(count), device=total.device)])
        dist.all_reduce(pair)
        return float(pair[0] / pair[1])
    return float(total) / max(1, count)


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) in float32 and labels (N,) for the whole loader, on the CPU."""
    model.eval()
    set_epoch(loader, 0)
    outputs, targets = [], []
    for batch in loader:
        images, labels = to_device(batch, ctx.runtime.device, ctx.channels_last)
        if ctx.image_size is not None:
            images = centre_view(images, ctx.image_size)  # (B, C, size, size), as comp submit's identity view
        with ctx.runtime.autocast():
            logits = model(normalize_batch(images, ctx.mean, ctx.std))
        outputs.append(logits.float())
        targets.append(labels)
    return torch.cat(outputs).cpu(), torch.cat(targets).cpu()


def evaluate(model: nn.Module, loader: DataLoader, index: np.ndarray, n_rows: int,
             ctx: StepContext) -> tuple[dict, np.ndarray]:
    """Metrics on the validation fold and its class probabilities (n_rows, C) in fold order.

    Under DDP each rank predicts its shard; shards are gathered so every rank sees all rows.
    The ``loss`` is the plain log loss (no class weights, no label smoothing), whatever the training
    criterion: epochs, folds and tuning trials with other weights or smoothing stay comparable.
    """
    logits, labels = predict_logits(model, loader, ctx)
    if ctx.runtime.distributed:
        gathered = [None] * ctx.runtime.world_size
        dist.all_gather_object(gathered, (index, logits.numpy(), labels.numpy()))
        full_logits = np.zeros((n_rows, logits.shape[1]), dtype=np.float32)
        full_labels = np.zeros(n_rows, dtype=np.int64)
        for idx, lg, lb in gathered:  # padded duplicates write the same values twice
            full_logits[idx], full_labels[idx] = lg, lb
        logits, labels = torch.from_numpy(full_logits), torch.from_numpy(full_labels)
    bad = ~torch.isfinite(logits).all(dim=1)
    if bad.any():
        raise TrainError(f"{ctx.label}: validation predictions are NaN or inf for {int(bad.sum())} of {len(bad)} "
                         f"images; training stopped and the previous results are kept; lower train.lr or set "
                         f"train.grad_clip")
    loss = nn.functional.cross_entropy(logits, labels).item()
    probs = torch.softmax(logits, dim=1).numpy()
    return compute_metrics(labels.numpy(), probs, loss), probs
