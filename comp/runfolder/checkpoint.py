"""Checkpoints: written atomically, loaded with ``weights_only=True`` (a checkpoint never runs code).

A checkpoint is a dict of tensors and plain values, with the keys of :data:`CHECKPOINT_KEYS` (``best.pt``
and ``last.pt``) and, in ``last.pt`` only, those of :data:`RESUME_KEYS` (``docs/artifacts.md`` lists the
same keys; a test holds the two together).
"""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comp.classes import same_classes
from comp.errors import CheckpointError
from comp.io import atomic_write_bytes

CHECKPOINT_KEYS = {
    "model": "state dict of the weights to predict with (the EMA weights when EMA is on)",
    "epoch": "epochs completed",
    "epochs": "epochs planned",
    "finished": "whether training ended (all epochs or early stop)",
    "best_score": "the monitored metric at the best epoch",
    "best_epoch": "the epoch of the best weights (1-based)",
    "bad_epochs": "epochs since the best one (early stopping)",
    "best_logloss": "logloss at the best epoch (breaks ties of the monitor)",
    "best_probs": "the best epoch's validation probabilities (N, C), or None",
    "history": "one dict per epoch, as history.csv",
    "classes": "the class list, spelled as in train.csv",
    "config": "the resolved config as a dict",
    "config_hash": "the training hash of the config",
    "folds_hash": "the folds file's hash",
    "fold": "the fold index, or full",
    "num_classes": "the model's outputs",
    "in_chans": "the model's input channels",
    "model_name": "model.name",
}
RESUME_KEYS = {
    "raw_model": "the trained weights when EMA is on, else None",
    "ema_updates": "EMA steps taken (its warm-up)",
    "optimizer": "the optimiser's state dict",
    "scheduler": "the schedule's state dict, or None",
    "scaler": "the AMP grad scaler's state dict",
    "rng": "Python, NumPy and torch RNG states",
}


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Serialise ``state`` to ``path`` atomically (temp file + rename): a kill never leaves a torn file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) onto the CPU.

    Raises:
        CheckpointError: the file is missing or not a comp checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train this fold first (comp train)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in str(exc).lower():
            raise CheckpointError(f"{path}: refused: it holds Python objects, not only weights (loading it could "
                                  f"run code); use a checkpoint written by comp train") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or "model" not in state or "classes" not in state:
        raise CheckpointError(f"{path}: not a comp checkpoint (no model weights or class list)")
    return state


def check_checkpoint(state: dict[str, Any], path: Path, *, classes: list, config_hash: str | None = None,
                     folds_hash: str | None = None) -> None:
    """Refuse a checkpoint made for another class list, config or folds file.

    Raises:
        CheckpointError: naming what differs and what to do.
    """
    if not same_classes(state["classes"], classes):
        raise CheckpointError(f"{path}: trained on classes {state['classes']}, but the competition has {classes}")
    if folds_hash is not None and state.get("folds_hash") != folds_hash:
        raise CheckpointError(
            f"{path}: trained on another folds file (hash {state.get('folds_hash')} != {folds_hash}); "
            f"retrain without --resume or restore the folds file"
        )
    if config_hash is not None and state.get("config_hash") != config_hash:
        raise CheckpointError(
            f"{path}: trained with another config (hash {state.get('config_hash')} != {config_hash}); "
            f"retrain without --resume, or undo the config change"
        )


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
