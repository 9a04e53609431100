"""Merging predictions of several views, folds or experiments into one probability per class.

The same three modes serve TTA views, fold models and experiment blends:

- ``mean``: the (weighted) mean of the softmax probabilities.
- ``geometric``: ``exp(mean(log p))`` renormalised to sum to 1; computed in log space.
- ``logits``: the softmax of the (weighted) mean of the raw logits.

``geometric`` works on probabilities, never on raw logits (a geometric mean of raw logits, as some
TTA libraries compute, is undefined for negative logits). For softmax outputs it equals ``logits``
exactly: ``log p = z - logsumexp(z)``, and the per-sample constant cancels on renormalising. Both
are kept because they differ for inputs that are probabilities only (experiment blends use ``log p``
as the logits, which makes ``logits`` the geometric mean there).

Merging views and folds hierarchically (views per fold, then folds) or all at once gives the same
result for every mode when each group has the same size, so predictions are merged all at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from comp.errors import SubmitError

MERGE_MODES = ("mean", "geometric", "logits")
EPS = 1e-12  # floor of a probability before its log


def _weights(weights: Sequence[float] | torch.Tensor | None, count: int, like: torch.Tensor) -> torch.Tensor:
    """Weights as a (count, 1, 1) tensor on ``like``'s device, summing to 1."""
    if weights is None:
        w = torch.full((count,), 1.0 / count, dtype=like.dtype, device=like.device)
    else:
        w = torch.as_tensor(normalize_weights(weights, count), dtype=like.dtype, device=like.device)
    return w.view(count, 1, 1)


def normalize_weights(weights: Sequence[float] | torch.Tensor, count: int) -> list[float]:
    """Check ``count`` non-negative weights with a positive sum and scale them to sum to 1.

    Raises:
        SubmitError: A wrong count, a negative or non-finite weight, or an all-zero sum.
    """
    values = [float(w) for w in weights]
    if len(values) != count:
        raise SubmitError(f"--weights: {len(values)} weights for {count} experiments; give one per experiment")
    if any(not np.isfinite(w) or w < 0 for w in values):
        raise SubmitError(f"--weights: {values} must be finite and >= 0")
    total = sum(values)
    if total <= 0:
        raise SubmitError(f"--weights: {values} sum to 0; give at least one positive weight")
    return [w / total for w in values]


def parse_weights(text: str, count: int) -> list[float]:
    """``"0.6,0.4"`` -> normalised weights for ``count`` experiments.

    Raises:
        SubmitError: Not a comma-separated list of numbers, or as :func:`normalize_weights`.
    """
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SubmitError(f"--weights {text!r}: expected numbers separated by commas, e.g. 0.6,0.4, "
                          f"or auto (fitted on the OOF)") from None
    return normalize_weights(values, count)


def _check_mode(mode: str) -> None:
    if mode not in MERGE_MODES:
        raise SubmitError(f"merge mode {mode!r} is unknown; use one of {', '.join(MERGE_MODES)}")


def merge_logits(logits: torch.Tensor, mode: str = "mean",
                 weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Merge the logits of M predictors into class probabilities.

    Args:
        logits: (M, N, C) raw model outputs (views x folds flattened into M).
        mode: ``mean``, ``geometric`` or ``logits`` (module docstring).
        weights: One weight per predictor (normalised here); None: equal weights.

    Returns:
        (N, C) probabilities in float32 (rows sum to 1), on ``logits``' device.

    Raises:
        SubmitError: An unknown mode or invalid weights.
    """
    _check_mode(mode)
    z = logits.float()
    w = _weights(weights, z.shape[0], z)
    if mode == "mean":
        return (torch.softmax(z, dim=-1) * w).sum(0)
    if mode == "geometric":
        return torch.softmax((torch.log_softmax(z, dim=-1) * w).sum(0), dim=-1)
    return torch.softmax((z * w).sum(0), dim=-1)


def merge_probs(probs: torch.Tensor | np.ndarray, mode: str = "mean",
                weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Merge the probabilities of M predictors (e.g. experiments read back from ``-probs.csv`` files).

    ``geometric`` and ``logits`` both take ``log p`` (floored at 1e-12) as the logits here, so both
    give the renormalised weighted geometric mean.

    Args:
        probs: (M, N, C) probabilities.
        mode: ``mean``, ``geometric`` or ``logits``.
        weights: One weight per predictor (normalised here); None: equal weights.

    Returns:
        (N, C) float32 probabilities.

    Raises:
        SubmitError: An unknown mode or invalid weights.
    """
    _check_mode(mode)
    p = torch.as_tensor(probs).float()
    w = _weights(weights, p.shape[0], p)
    if mode == "mean":
        merged = (p * w).sum(0)
        return merged / merged.sum(-1, keepdim=True)
    return torch.softmax((p.clamp_min(EPS).log() * w).sum(0), dim=-1)
