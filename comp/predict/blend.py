"""Blend weights learned on the OOF predictions (``comp submit a b --weights auto``), cross-fitted over folds.

The weights are the non-negative, sum-to-one ``w`` that minimise the log loss of the blend
``merge_probs(P, mode, w)`` on the out-of-fold predictions (log loss, not accuracy: a smooth objective
that a handful of images cannot flip, and convex in ``w`` for every merge mode). Fitted on every OOF row
they weight the test predictions; the score printed for the blend is honest, as for the QWK cut-points:
each fold's OOF rows are blended with weights fitted on the other folds only. And as for the cut-points,
the fitted weights are kept only if that out-of-fold blend scores at least as well as equal weights on
the submission's metric (log loss is not the metric: a better log loss can be a worse F1); else the
blend uses equal weights and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from comp.errors import SubmitError
from comp.metrics import HIGHER_IS_BETTER
from comp.predict.ensemble import merge_probs

EPS = 1e-12


@dataclass
class BlendFit:
    """What ``--weights auto`` learned.

    Attributes:
        names: The experiments, in blend order.
        weights: Fitted on every OOF row; they weight the test predictions.
        fold_weights: Per fold, the weights fitted without it (they blend that fold's OOF rows).
        oof: (N, C) the cross-fitted blend of the OOF predictions.
        metric: The metric scored (``train.monitor``; ``loss`` as ``logloss``).
        member_scores: Each experiment's own OOF score.
        blend_score: The cross-fitted blend's OOF score.
        equal_score: The equal-weight blend's OOF score, for comparison.
        kept: Whether the fitted weights are used (False: they did not beat equal weights out of fold, and
            ``weights`` are equal).
        fitted: The weights fitted on every OOF row, used or not.
    """

    names: list[str]
    weights: list[float]
    fold_weights: dict[int, list[float]]
    oof: np.ndarray
    metric: str
    member_scores: dict[str, float]
    blend_score: float
    equal_score: float
    kept: bool = True
    fitted: list[float] | None = None

    def to_json(self) -> dict:
        """The record kept in the submission's ``.json`` (and printed)."""
        return {
            "fitted_on": "OOF log loss, non-negative weights summing to 1",
            "weights": dict(zip(self.names, self.weights)),
            "fold_weights": {str(f): dict(zip(self.names, w)) for f, w in self.fold_weights.items()},
            "metric": self.metric,
            "member_oof": self.member_scores,
            "blend_oof_crossfit": self.blend_score,
            "equal_weights_oof": self.equal_score,
            "kept": self.kept,
            "fitted": dict(zip(self.names, self.fitted or self.weights)),
        }


def _logloss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1.0)).mean())


def _blend64(member_probs: np.ndarray, mode: str, w: np.ndarray) -> np.ndarray:
    """``merge_probs`` in float64 (its float32 hides the finite-difference steps the optimiser takes)."""
    if mode == "mean":
        merged = np.tensordot(w, member_probs, axes=1)
        return merged / merged.sum(-1, keepdims=True)
    z = np.tensordot(w, np.log(np.clip(member_probs, EPS, None)), axes=1)
    z -= z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def fit_weights(member_probs: np.ndarray, y: np.ndarray, mode: str) -> list[float]:
    """Non-negative weights summing to 1 that minimise the blend's log loss.

    Args:
        member_probs: (M, N, C) each experiment's probabilities.
        y: (N,) class indices.
        mode: The merge mode (``mean``, ``geometric``, ``logits``) the blend will use.

    Returns:
        M weights (zeros allowed: an experiment that only hurts is dropped).
    """
    from scipy.optimize import minimize

    member_probs = np.asarray(member_probs, dtype=np.float64)
    count = member_probs.shape[0]
    start = np.full(count, 1.0 / count)

    def loss(w: np.ndarray) -> float:
        w = np.clip(w, 0.0, None)
        w = w / w.sum() if w.sum() > 0 else start
        return _logloss(_blend64(member_probs, mode, w), y)

    result = minimize(loss, start, method="SLSQP", bounds=[(0.0, 1.0)] * count,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}], options={"ftol": 1e-9})
    w = np.clip(result.x if result.success and loss(result.x) <= loss(start) else start, 0.0, None)
    w[w < 1e-4] = 0.0  # a weight that small changes no prediction; say it is out
    return [float(v) for v in w / w.sum()]


def crossfit_blend(member_probs: np.ndarray, y: np.ndarray, folds: np.ndarray, mode: str, names: list[str],
                   score: Callable[[np.ndarray], tuple[str, float]]) -> BlendFit:
    """Fit the weights on all OOF rows, and per fold on the other folds (the honest blend OOF).

    Args:
        member_probs: (M, N, C) each experiment's OOF probabilities, in train order.
        y: (N,) class indices.
        folds: (N,) each row's fold.
        mode: The merge mode.
        names: The M experiment names.
        score: ``score(probs) -> (metric name, value)`` as the submission will be scored.

    Returns:
        A :class:`BlendFit`.

    Raises:
        SubmitError: Fewer than two experiments, or a single fold.
    """
    if member_probs.shape[0] < 2:
        raise SubmitError("--weights auto: one experiment has nothing to blend; name two or more "
                          "(comp submit exp1 exp2 --weights auto) or drop --weights")
    fold_ids = sorted(int(f) for f in np.unique(folds))
    if len(fold_ids) < 2:
        raise SubmitError("--weights auto: the OOF has one fold; cross-fitting needs two or more")
    blended = np.zeros(member_probs.shape[1:], dtype=np.float64)
    fold_weights = {}
    for fold in fold_ids:
        held = folds == fold
        w = fit_weights(member_probs[:, ~held], y[~held], mode)
        fold_weights[fold] = w
        blended[held] = merge_probs(member_probs[:, held], mode, w).double().numpy()
    metric, blend_score = score(blended)
    members = {name: score(member_probs[i])[1] for i, name in enumerate(names)}
    equal_oof = merge_probs(member_probs, mode, None).double().numpy()
    equal = score(equal_oof)[1]
    fitted = fit_weights(member_probs, y, mode)
    if blend_score >= equal if HIGHER_IS_BETTER.get(metric, True) else blend_score <= equal:
        return BlendFit(names, fitted, fold_weights, blended, metric, members, blend_score, equal, fitted=fitted)
    count = member_probs.shape[0]
    return BlendFit(names, [1.0 / count] * count, fold_weights, equal_oof, metric, members, blend_score, equal,
                    kept=False, fitted=fitted)
