"""Training one fold (or the full fit): set-up, the epoch loop, checkpoints, resume and early stopping."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from comp.competition import Competition
from comp.config import Config
from comp.data import derive_seed, start_epoch
from comp.device import Runtime, broadcast_from_main
from comp.errors import CheckpointError, TrainError
from comp.metrics import HIGHER_IS_BETTER, is_better
from comp.models.factory import create_model, resolve_normalization
from comp.runfolder.checkpoint import capture_rng, check_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from comp.runfolder.layout import MemberDir
from comp.runfolder.records import FoldMetrics, oof_table, write_history, write_oof
from comp.train.checks import setting_warnings, use_sync_bn
from comp.train.engine import StepContext, evaluate, train_one_epoch
from comp.train.finetune import set_backbone_frozen
from comp.train.loaders import build_fold_loaders
from comp.train.mixing import GradeLoss, SoftTargetCE, create_mixer
from comp.train.optim import ModelEma, create_criterion, create_optimizer, create_scheduler

EpochCallback = Callable[[int, dict], None]  # (epoch, history row); may raise to stop (e.g. optuna pruning)


@dataclass
class FoldSpec:
    """What one training run covers: ``fold`` is an int, or ``"full"`` for the final fit.

    ``stream`` names the seed stream: ``"cv"`` for ``comp train``, ``"tune"`` for a tuning trial, so the
    CV's fold is not a bit-for-bit rerun of the best trial (the maximum over trials, scored on that fold).
    """

    fold: int | str
    train_idx: np.ndarray
    valid_idx: np.ndarray | None
    epochs: int
    out_dir: Path
    folds_hash: str
    config_hash: str
    stream: str = "cv"


@dataclass
class FoldResult:
    """What training one member returned: its history, best epoch and score, and validation probabilities."""
    fold: int | str
    history: list[dict]
    best_epoch: int
    best_score: float | None
    stopped_early: bool
    valid_probs: np.ndarray | None = field(repr=False, default=None)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_model(cfg: Config, num_classes: int, runtime: Runtime) -> nn.Module:
    """The configured model on the run's device (channels-last when ``train.channels_last``)."""
    model = create_model(cfg.model, num_classes, cfg.data.channels).to(runtime.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _on(weights: torch.Tensor | None, runtime: Runtime) -> torch.Tensor | None:
    return None if weights is None else weights.to(device=runtime.device, dtype=torch.float32)


def _wrap(model: nn.Module, cfg: Config, runtime: Runtime) -> nn.Module:
    """DDP (with SyncBatchNorm per ``train.sync_bn``) and torch.compile wrappers around the bare model.

    The bare model owns the state dict.
    """
    if runtime.distributed:
        if use_sync_bn(cfg.train.sync_bn, runtime):
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the root; names unchanged
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.train.compile:
        model = torch.compile(model)
    return model


class FoldTrainer:
    """Owns the model, optimiser, schedule and loaders of one fold and runs its epochs."""

    def __init__(self, cfg: Config, comp: Competition, spec: FoldSpec, runtime: Runtime):
        self.cfg, self.comp, self.spec, self.runtime = cfg, comp, spec, runtime
        key = (cfg.train.seed, spec.fold if isinstance(spec.fold, int) else -1)
        key += () if spec.stream == "cv" else (spec.stream,)  # the CV keeps the seeds it always had
        seed_everything(derive_seed(*key, "init"))
        self.loaders = build_fold_loaders(cfg, comp, spec.train_idx, spec.valid_idx, runtime,
                                          seed=derive_seed(*key, "data"))
        self.model = prepare_model(cfg, comp.num_classes, runtime)
        if cfg.train.freeze_epochs and runtime.distributed:
            raise TrainError("train.freeze_epochs: DDP needs every parameter's gradient on every step; "
                             "set train.freeze_epochs=0 or train on one device")
        self.wrapped = _wrap(self.model, cfg, runtime)
        optimizer = create_optimizer(self.model, cfg.train, runtime.device)
        scheduler = create_scheduler(optimizer, cfg.train, len(self.loaders.train), spec.epochs)
        self.ctx = StepContext(
            runtime=runtime, optimizer=optimizer, scheduler=scheduler, scheduler_name=cfg.train.scheduler,
            scaler=runtime.grad_scaler(),
            criterion=self._criterion(),
            **dict(zip(("mean", "std"), resolve_normalization(cfg.model, cfg.augment.mean, cfg.augment.std))),
            channels_last=cfg.train.channels_last,
            grad_clip=cfg.train.grad_clip, ema=ModelEma(self.model, cfg.train.ema) if cfg.train.ema else None,
            label=f"fold {spec.fold}", image_size=cfg.data.image_size,
            mixer=create_mixer(cfg.train, comp.num_classes, derive_seed(*key, "mix")),
            soft_criterion=self._criterion(soft=True), batch_augment=self.loaders.batch_augment,
        )
        self.history: list[dict] = []
        self.best_score: float | None = None
        self.best_epoch = 0
        self.best_logloss: float | None = None  # breaks ties in the monitored score
        self.bad_epochs = 0
        self.best_probs: np.ndarray | None = None
        self.start_epoch = 0
        self.finished = False

    def _criterion(self, soft: bool = False) -> nn.Module:
        """The loss of hard targets, or (``soft``) of mixed ones; a regression head's takes both."""
        weights = _on(self.loaders.loss_weights, self.runtime)
        if self.cfg.model.head == "regress":
            return GradeLoss(weights, self.comp.num_classes).to(self.runtime.device)
        if soft:
            return SoftTargetCE(weights, self.cfg.train.label_smoothing)
        return create_criterion(self.loaders.loss_weights, self.cfg.train.label_smoothing, self.runtime.device)

    # -- checkpoints ---------------------------------------------------------------------------
    def eval_weights(self) -> dict[str, torch.Tensor]:
        """The weights validated and saved: the EMA's when there is one, else the model's."""
        return self.ctx.ema.state_dict() if self.ctx.ema is not None else self.model.state_dict()

    def state(self, epoch: int, resumable: bool = True) -> dict:
        """Everything needed to continue after ``epoch`` epochs exactly as an uninterrupted run would.

        With ``resumable`` off (``best.pt``) the optimiser, schedule and RNG are left out: a third of the size.
        """
        ctx = self.ctx
        state = {
            "model": {k: v.detach().clone() for k, v in self.eval_weights().items()},
            "epoch": epoch, "epochs": self.spec.epochs, "finished": self.finished,
            "best_score": self.best_score, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "best_logloss": self.best_logloss,
            "best_probs": None if self.best_probs is None else torch.from_numpy(self.best_probs),
            "history": self.history,
            "classes": list(self.comp.classes_), "config": self.cfg.to_dict(),
            "config_hash": self.spec.config_hash, "folds_hash": self.spec.folds_hash, "fold": self.spec.fold,
            "num_classes": self.comp.num_classes, "in_chans": self.cfg.data.channels,
            "model_name": self.cfg.model.name,
        }
        if resumable:
            state.update({
                "raw_model": self.model.state_dict() if ctx.ema is not None else None,
                "ema_updates": ctx.ema.updates if ctx.ema is not None else 0,
                "optimizer": ctx.optimizer.state_dict(),
                "scheduler": ctx.scheduler.state_dict() if ctx.scheduler is not None else None,
                "scaler": ctx.scaler.state_dict(),
                "rng": capture_rng(),
            })
        return state

    def resume(self, path: Path) -> None:
        """Continue from ``last.pt``: weights, optimiser, schedule, EMA, RNG, history, early-stopping state."""
        state = load_checkpoint(path)
        if "optimizer" not in state:
            raise CheckpointError(f"{path}: holds weights only and cannot be resumed from; train without --resume")
        check_checkpoint(state, path, classes=self.comp.classes_, config_hash=self.spec.config_hash,
                         folds_hash=self.spec.folds_hash)
        if state.get("epochs") != self.spec.epochs:
            raise CheckpointError(f"{path}: planned for {state.get('epochs')} epochs, this run {self.spec.epochs}")
        self.model.load_state_dict(state["raw_model"] if state.get("raw_model") is not None else state["model"])
        if self.ctx.ema is not None:
            self.ctx.ema.load_state_dict(state["model"], updates=int(state.get("ema_updates", 0)))
        self.ctx.optimizer.load_state_dict(state["optimizer"])
        if self.ctx.scheduler is not None and state["scheduler"] is not None:
            self.ctx.scheduler.load_state_dict(state["scheduler"])
        self.ctx.scaler.load_state_dict(state["scaler"])
        self.history, self.start_epoch, self.finished = list(state["history"]), state["epoch"], state["finished"]
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.bad_epochs, self.best_logloss = state["bad_epochs"], state.get("best_logloss")
        self.best_probs = None if state["best_probs"] is None else state["best_probs"].numpy()
        restore_rng(state["rng"])

    # -- the loop ------------------------------------------------------------------------------
    def run(self, callback: EpochCallback | None = None, log: Callable[[str], None] = print) -> FoldResult:
        """Train the remaining epochs, validating and checkpointing each; returns the member's result.

        Args:
            callback: Called with ``(epoch, row)`` after each epoch.
            log: Where the epoch lines and warnings go.
        """
        out = MemberDir(self.spec.out_dir)
        monitor = self.cfg.train.monitor
        ahead = None  # the next epoch's batches, started before this epoch's validation
        if self.runtime.is_main and self.start_epoch == 0:
            self._log_setting_warnings(log)
        for epoch in range(self.start_epoch, self.spec.epochs):
            if self.finished:
                break
            if self.cfg.train.freeze_epochs:  # set from the epoch alone, so a resumed run freezes the same way
                set_backbone_frozen(self.model, epoch < self.cfg.train.freeze_epochs)
            row = {"epoch": epoch + 1, "lr": self.ctx.optimizer.param_groups[0]["lr"]}
            row.update(train_one_epoch(self.wrapped, self.loaders.train, epoch, self.ctx, ahead))
            ahead = self._start_ahead(epoch + 1)
            improved = self._validate(row, epoch)
            self.history.append(row)
            stop = self._early_stop(improved)
            self.finished = stop or epoch + 1 == self.spec.epochs
            if self.runtime.is_main:
                if improved:
                    save_checkpoint(self.state(epoch + 1, resumable=False), out.best)
                save_checkpoint(self.state(epoch + 1), out.last)
                log(format_epoch(self.spec.fold, row, self.spec.epochs, monitor, improved))
            if callback is not None:
                callback(epoch, row)
            if stop:
                log(f"fold {self.spec.fold}: early stop after {epoch + 1} epochs (best epoch {self.best_epoch})")
        if self.runtime.is_main:
            self.write_outputs()
        return FoldResult(self.spec.fold, self.history, self.best_epoch, self.best_score, self.stopped_early,
                          self.best_probs)

    def _log_setting_warnings(self, log: Callable[[str], None]) -> None:
        steps = len(self.loaders.train) * self.spec.epochs
        for line in setting_warnings(self.cfg, steps, self.runtime.distributed):
            log(f"fold {self.spec.fold}: {line}")

    def _start_ahead(self, epoch: int) -> Iterator | None:
        """Start loading epoch ``epoch`` now, so its workers work while this epoch validates.

        None: nothing to gain without workers, or no such epoch.
        """
        loader = self.loaders.train
        if epoch >= self.spec.epochs or loader.num_workers == 0:
            return None
        return start_epoch(loader, epoch)

    def _validate(self, row: dict, epoch: int) -> bool:
        """Add validation metrics to ``row``; step a plateau schedule; return whether this epoch is the best."""
        if self.loaders.valid is None:  # full fit: the last epoch is the one kept
            self.best_epoch = epoch + 1
            return True
        ema = self.ctx.ema
        broadcast_from_main([*self.model.buffers(), *(ema.state.values() if ema is not None else ())], self.runtime)
        weights = self.eval_weights()
        model = self.model
        if self.ctx.ema is not None:
            model = self._ema_model(weights)
        metrics, probs = evaluate(model, self.loaders.valid, self.loaders.valid_index, len(self.spec.valid_idx),
                                  self.ctx)
        if self.cfg.model.head == "regress":  # the training loss, on the grade its two-hot rows hold
            grade = torch.from_numpy(probs @ np.arange(probs.shape[1]))
            target = torch.from_numpy(self.comp.train["target"].to_numpy()[self.spec.valid_idx]).to(grade.dtype)
            metrics["loss"] = float(nn.functional.smooth_l1_loss(grade, target))
        row.update({"valid_loss": metrics.pop("loss"), **metrics})
        score = row[self.cfg.train.monitor if self.cfg.train.monitor != "loss" else "valid_loss"]
        if self.ctx.scheduler is not None and self.cfg.train.scheduler == "plateau":
            self.ctx.scheduler.step(score)
        if is_better(score, self.best_score, self.cfg.train.monitor, row["logloss"], self.best_logloss):
            self.best_score, self.best_epoch, self.best_probs = float(score), epoch + 1, probs
            self.best_logloss = row["logloss"]
            return True
        return False

    def _ema_model(self, weights: dict) -> nn.Module:
        if not hasattr(self, "_ema_copy"):
            self._ema_copy = copy.deepcopy(self.model)
        self._ema_copy.load_state_dict(weights)
        return self._ema_copy

    def _early_stop(self, improved: bool) -> bool:
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        patience = self.cfg.train.early_stopping
        return bool(patience and self.loaders.valid is not None and self.bad_epochs >= patience)

    @property
    def stopped_early(self) -> bool:
        """Whether early stopping ended training before the planned epochs."""
        return self.finished and len(self.history) < self.spec.epochs

    # -- outputs -------------------------------------------------------------------------------
    def write_outputs(self) -> None:
        """``history.csv``, the OOF table of the best epoch, and ``metrics.json`` (last: it marks completion)."""
        out = MemberDir(self.spec.out_dir)
        write_history(out.history, self.history)
        monitor = self.cfg.train.monitor
        best_row = self.history[self.best_epoch - 1] if self.best_epoch else {}
        metrics = FoldMetrics(
            fold=self.spec.fold, monitor=monitor, mode="max" if HIGHER_IS_BETTER[monitor] else "min",
            best_epoch=self.best_epoch, best_score=self.best_score, epochs_run=len(self.history),
            epochs_planned=self.spec.epochs, finished=self.finished, stopped_early=self.stopped_early,
            metrics={k: v for k, v in best_row.items() if k not in ("epoch", "lr", "seconds", "images_per_s")},
            config_hash=self.spec.config_hash, folds_hash=self.spec.folds_hash,
        )
        if self.best_probs is not None:
            grade = self.cfg.model.head == "regress"
            write_oof(out.oof, oof_frame(self.comp, self.spec, self.best_probs, grade))
        metrics.write(out.metrics)  # last: its presence means the member's other files are complete


def oof_frame(comp: Competition, spec: FoldSpec, probs: np.ndarray, grade: bool = False) -> pd.DataFrame:
    """``id,label,fold[,grade],prob_<class>...`` for the validation rows of a fold.

    ``grade``: a regression head's continuous grade, whose two-hot rows the ``prob_`` columns hold
    (:mod:`comp.models.grade`).
    """
    rows = comp.train.iloc[spec.valid_idx]
    return oof_table(rows["id"].to_numpy(), rows["label"].to_numpy(), spec.fold, list(comp.classes_), probs,
                     probs @ np.arange(probs.shape[1]) if grade else None)


def format_epoch(fold: int | str, row: dict, epochs: int, monitor: str, improved: bool) -> str:
    """One summary line per epoch."""
    parts = [f"fold {fold} epoch {row['epoch']:>3}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    if "valid_loss" in row:
        parts.append(f"valid_loss {row['valid_loss']:.4f}")
        parts += [f"{m} {row[m]:.4f}" for m in ("accuracy", "f1", "qwk", "auc") if m in row]
    parts.append(f"{row['images_per_s']:.0f} img/s {row['seconds']:.1f}s")
    return "  ".join(parts) + ("  *" if improved and "valid_loss" in row else "")
