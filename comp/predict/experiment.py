"""Predictions of a whole experiment: the test set through all its models, and its OOF under TTA views."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from comp.competition import Competition
from comp.errors import SubmitError
from comp.predict.ensemble import merge_probs
from comp.predict.inference import InferenceSettings, predict_merged, predict_view_logits
from comp.predict.runs import Experiment
from comp.predict.tta import View
from comp.runfolder.layout import FULL

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


def _loader(exp: Experiment, paths: Sequence[Path], labels: Sequence[int] | None, settings: InferenceSettings,
            cache_dir: Path) -> DataLoader:
    from comp.data import ImageDataset, create_cache, create_loader
    from comp.data.prebuild import build_cache

    cache = create_cache(exp.config, cache_dir)
    build_cache(cache, paths)  # every core decodes what is missing, before the model waits on it
    dataset = ImageDataset(list(paths), labels, cache, None)
    return create_loader(dataset, settings.batch_size, num_workers=settings.num_workers, device=settings.device)


def _norm(exp: Experiment) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from comp.models.factory import resolve_normalization

    return resolve_normalization(exp.config.model, exp.config.augment.mean, exp.config.augment.std)


def predict_test(exp: Experiment, test_paths: Sequence[Path], views: Sequence[View], mode: str,
                 settings: InferenceSettings, cache_dir: Path, full_weight: float | None = None) -> np.ndarray:
    """Test probabilities (N, K) of all members x views of ``exp``, merged with ``mode``.

    The images go through the loader once; every member runs on every view of each batch.

    Args:
        exp: The loaded experiment.
        test_paths: Test image files, in submission order.
        views: TTA views.
        mode: Merge mode for views and members alike.
        settings: Device, batch size, workers, precision.
        cache_dir: Root of the image cache (``data.cache_dir``).
        full_weight: Share of the ``full`` member (``submit.full_weight``); the folds share the rest
            equally. None: every member alike (the full fit gets 1/(k+1)).

    Raises:
        SubmitError: ``full_weight`` set but the experiment has no full member (it would be ignored).
    """
    models = [m.build_model() for m in exp.members]
    loader = _loader(exp, test_paths, None, settings, cache_dir)
    mean, std = _norm(exp)
    weights = member_weights(exp, full_weight)
    return predict_merged(models, loader, views, mode, settings, mean, std, weights, exp.image_size)


def predict_blend(experiments: Sequence[Experiment], test_paths: Sequence[Path], views: Sequence[View], mode: str,
                  weights: Sequence[float], settings: InferenceSettings, cache_dir: Path,
                  full_weight: float | None = None) -> np.ndarray:
    """Test probabilities (N, K) of a blend of experiments.

    Each experiment goes through :func:`predict_test`, then they are merged with ``mode`` and ``weights``
    (one experiment: its probabilities as they are).

    ``comp submit`` and ``comp predict`` (an exported bundle) both call this, so both write the same numbers.
    """
    per_exp = [predict_test(e, test_paths, views, mode, settings, cache_dir, full_weight) for e in experiments]
    if len(per_exp) == 1:
        return per_exp[0]
    return merge_probs(np.stack(per_exp), mode, list(weights)).double().numpy()


def member_weights(exp: Experiment, full_weight: float | None) -> list[float] | None:
    """One weight per member: ``full_weight`` for ``full``, the rest shared by the folds (None: equal)."""
    if full_weight is None:
        return None
    names = [m.name for m in exp.members]
    if FULL not in names:
        raise SubmitError(f"submit.full_weight={full_weight} is set but {exp.name} is submitted without its full "
                          f"fit; add --use-full or set submit.full_weight=null")
    folds = len(names) - 1
    return [full_weight if n == FULL else (1.0 - full_weight) / folds for n in names]


def predict_oof_views(exp: Experiment, comp: Competition, views: Sequence[View], settings: InferenceSettings,
                      cache_dir: Path) -> np.ndarray:
    """OOF logits (N, V, K) in train order: each fold model on its own validation fold, under every view.

    Args:
        exp: The loaded experiment (its folds file says which rows each fold validated on).
        comp: The competition (image paths in train order).
        views: The views to predict under.
        settings: Device, batch size, workers, precision.
        cache_dir: Root of the image cache.
    """
    fold_of_row = exp.folds.frame["fold"].to_numpy()
    paths = comp.train["path"].to_numpy()
    mean, std = _norm(exp)
    out = np.zeros((len(paths), len(views), len(exp.classes)), dtype=np.float32)
    for member in exp.fold_members:
        rows = np.flatnonzero(fold_of_row == member.fold)
        loader = _loader(exp, paths[rows], None, settings, cache_dir)
        out[rows] = predict_view_logits(member.build_model(), loader, views, settings, mean, std, exp.image_size)
    return out
