"""Class imbalance: loss weights per class and a class-rebalancing sampler."""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from comp.errors import ConfigError, DataError


def _class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise DataError(f"label {bad} is outside 0..{num_classes - 1}; check the label column and the class list")
    return np.bincount(labels, minlength=num_classes)


def class_weights(labels: np.ndarray, num_classes: int, spec: Any) -> torch.Tensor | None:
    """Per-class loss weights from ``train.class_weights``.

    Args:
        labels: Training labels (class indices).
        num_classes: Number of classes.
        spec: None (no weights); a list of ``num_classes`` weights used as given; ``"balanced"``
            (scikit-learn's ``n / (num_classes * count)``); or a float ``p``: ``(1 / count) ** p``,
            scaled so the weight averages 1 over the training samples (``p=0``: all ones,
            ``p=1``: the same as ``"balanced"`` when every class is present).
            Classes absent from ``labels`` get weight 1 under ``"balanced"`` and ``p`` (they
            contribute no loss term anyway).

    Returns:
        A float32 tensor of shape ``(num_classes,)``, or None.

    Raises:
        ConfigError: A list of the wrong length or with negative weights, a negative power, or an
            unknown string.
        DataError: A label outside ``0..num_classes-1``.
    """
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)):
        if len(spec) != num_classes:
            raise ConfigError(
                f"train.class_weights: {len(spec)} weights given for {num_classes} classes; give one per class"
            )
        weights = np.asarray(spec, dtype=np.float64)
        if (weights < 0).any() or not np.isfinite(weights).all():
            raise ConfigError("train.class_weights: weights must be finite and >= 0")
        return torch.tensor(weights, dtype=torch.float32)
    counts = _class_counts(labels, num_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(num_classes)
    if spec == "balanced":
        weights[present] = counts.sum() / (num_classes * counts[present])
    elif isinstance(spec, Real) and not isinstance(spec, bool):
        if spec < 0:
            raise ConfigError(f"train.class_weights: power {spec} must be >= 0 (0: no weighting, 1: balanced)")
        weights[present] = counts[present] ** -float(spec)
        weights[present] *= counts.sum() / (counts[present] * weights[present]).sum()
    else:
        raise ConfigError(f"train.class_weights: {spec!r} is not a list, 'balanced', a number or null")
    return torch.tensor(weights, dtype=torch.float32)


def make_sampler(labels: np.ndarray, strength: float, num_samples: int | None = None,
                 generator: torch.Generator | None = None) -> WeightedRandomSampler | None:
    """A with-replacement sampler that flattens the class mix by ``strength``.

    Each sample is drawn with weight ``count[label] ** -strength``, so class ``c`` makes up a share
    of each epoch proportional to ``count[c] ** (1 - strength)``.

    Args:
        labels: Training labels (class indices).
        strength: 0 keeps the natural mix (returns None: use plain shuffling); 1 makes every class
            equally likely; in between interpolates (0.5: shares proportional to sqrt(count)).
        num_samples: Draws per epoch; default ``len(labels)``.
        generator: Random generator of the sampler (``create_loader`` replaces it each epoch).

    Returns:
        A WeightedRandomSampler, or None when ``strength`` is 0.

    Raises:
        ConfigError: ``strength`` is negative.
        DataError: No labels, or a negative label.
    """
    if strength < 0:
        raise ConfigError(f"train.sampler_strength: {strength} must be >= 0 (0 natural, 1 uniform over classes)")
    if strength == 0:
        return None
    labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
    if not labels.size:
        raise DataError("no training labels to sample from; check the folds file")
    counts = _class_counts(labels, int(labels.max()) + 1).astype(np.float64)
    weights = counts[labels] ** -float(strength)
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), num_samples or len(labels), replacement=True, generator=generator,
    )
