"""Ordinal targets (e.g. retinopathy grades 0-4): class cut-points on the expected grade, tuned for QWK.

The argmax of the class probabilities ignores that grade 3 is closer to 4 than to 0. The expected
grade ``e = sum_k k * p_k`` keeps that order, and cut-points ``t_1 < ... < t_{C-1}`` turn it back
into a grade: ``grade = #{t_j <= e}``. The cut-points start at 0.5, 1.5, ... and are tuned on the
OOF predictions for quadratic weighted kappa by Nelder-Mead, then a coordinate-wise grid search.

Points tuned on rows score too well on those rows. :func:`crossfit_cutpoints` therefore fits them on
k-1 folds' OOF rows and applies them to the held-out fold, and reports that out-of-fold QWK; the points
tuned on all rows are kept only when the out-of-fold figure beats the start points, else the start
points are used. (They are still fitted on single-model OOF rows and applied to the k-model average of
the test predictions, which is smoother: a mismatch cross-fitting does not remove.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from comp.errors import SubmitError

GRID_STEPS = 41  # candidates per cut-point in one coordinate sweep
SWEEPS = 3


@dataclass
class CutPoints:
    """Cut-points and OOF QWKs: of the argmax, of the start points, and of the cut-points used.

    Attributes:
        thresholds: The cut-points used.
        qwk_argmax: QWK of the argmax.
        qwk_start: QWK of the start points 0.5, 1.5, ... (nothing fitted: out of sample).
        qwk_tuned: QWK of ``thresholds``: out of fold when cross-fitted (:func:`crossfit_cutpoints`),
            else on the rows they were tuned on.
        qwk_in_sample: QWK of the tuned points on the rows they were tuned on (optimistic).
        kept: Whether the tuned points are used (False: they did not beat the start points out of fold).
        note: One line saying which points are used and why.
        oof_pred: (N,) the OOF grade of each row as judged out of fold: each held-out fold cut by
            points fitted on the other folds when the tuned points are kept, else by the start points.
    """

    thresholds: np.ndarray
    qwk_argmax: float
    qwk_start: float
    qwk_tuned: float
    qwk_in_sample: float | None = None
    kept: bool = True
    note: str = ""
    oof_pred: np.ndarray | None = None


def expected_grade(probs: np.ndarray) -> np.ndarray:
    """``sum_k k * p_k`` for (N, C) probabilities -> (N,)."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs @ np.arange(probs.shape[1], dtype=np.float64)


def apply_cutpoints(grade: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Class index per expected grade: how many (sorted) thresholds lie at or below it."""
    return np.searchsorted(np.sort(np.asarray(thresholds, dtype=np.float64)), grade, side="right")


def qwk(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Quadratic weighted kappa over ``num_classes`` grades (0.0 where it is undefined).

    Equal to ``sklearn.metrics.cohen_kappa_score(..., weights="quadratic")`` but computed from one
    ``bincount``: the cut-point search calls it thousands of times.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    observed = np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    expected = np.outer(observed.sum(1), observed.sum(0)) / max(1, len(y_true))
    grades = np.arange(num_classes)
    weights = (grades[:, None] - grades[None, :]) ** 2
    denominator = float((weights * expected).sum())
    if denominator == 0.0:
        return 0.0
    return 1.0 - float((weights * observed).sum()) / denominator


def _nelder_mead(grade: np.ndarray, y: np.ndarray, start: np.ndarray, num_classes: int) -> np.ndarray:
    from scipy.optimize import minimize

    def loss(t: np.ndarray) -> float:
        return -qwk(y, apply_cutpoints(grade, t), num_classes)

    simplex = np.vstack([start] + [start + 0.25 * np.eye(len(start))[i] for i in range(len(start))])
    result = minimize(loss, start, method="Nelder-Mead",
                      options={"initial_simplex": simplex, "xatol": 1e-3, "fatol": 1e-6, "maxiter": 400})
    return np.sort(result.x)


def _coordinate_sweep(grade: np.ndarray, y: np.ndarray, thresholds: np.ndarray, num_classes: int) -> np.ndarray:
    """Move each cut-point in turn to its best place between its neighbours (a few sweeps)."""
    t = thresholds.copy()
    best = qwk(y, apply_cutpoints(grade, t), num_classes)
    for _ in range(SWEEPS):
        improved = False
        for j in range(len(t)):
            low = t[j - 1] if j > 0 else min(grade.min(), t[j]) - 0.5
            high = t[j + 1] if j + 1 < len(t) else max(grade.max(), t[j]) + 0.5
            for cand in np.linspace(low, high, GRID_STEPS)[1:-1]:
                trial = t.copy()
                trial[j] = cand
                score = qwk(y, apply_cutpoints(grade, trial), num_classes)
                if score > best + 1e-12:
                    best, t, improved = score, trial, True
        if not improved:
            break
    return t


def optimize_cutpoints(probs: np.ndarray, y_true: np.ndarray) -> CutPoints:
    """Tune cut-points on the OOF expected grade for QWK (never worse than the start points).

    Args:
        probs: (N, C) OOF class probabilities, classes in grade order.
        y_true: (N,) true class indices.

    Returns:
        The cut-points with the QWK of the argmax, of the start points and of the tuned points.

    Raises:
        SubmitError: Fewer than 3 classes (nothing to order) or a size mismatch.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    num_classes = probs.shape[1]
    if num_classes < 3:
        raise SubmitError(f"--ordinal needs at least 3 ordered classes, got {num_classes}")
    if len(y) != len(probs):
        raise SubmitError(f"--ordinal: {len(probs)} OOF predictions but {len(y)} labels")
    grade = expected_grade(probs)
    start = np.arange(num_classes - 1, dtype=np.float64) + 0.5
    qwk_start = qwk(y, apply_cutpoints(grade, start), num_classes)
    best_t, best = start, qwk_start
    candidate = _nelder_mead(grade, y, start, num_classes)
    candidate = _coordinate_sweep(grade, y, candidate, num_classes)
    score = qwk(y, apply_cutpoints(grade, candidate), num_classes)
    if score > best:
        best_t, best = candidate, score
    return CutPoints(best_t, qwk(y, probs.argmax(1), num_classes), qwk_start, best)


def crossfit_cutpoints(probs: np.ndarray, y_true: np.ndarray, folds: np.ndarray) -> CutPoints:
    """Cut-points judged out of fold: fit on k-1 folds' OOF rows, apply to the held-out fold.

    Args:
        probs: (N, C) OOF class probabilities, classes in grade order.
        y_true: (N,) true class indices.
        folds: (N,) the fold of each row.

    Returns:
        The points tuned on all rows if their out-of-fold QWK beats the start points', else the start
        points; ``qwk_tuned`` is the out-of-fold QWK of the points used.

    Raises:
        SubmitError: Fewer than 3 classes, a size mismatch, or fewer than 2 folds.
    """
    full = optimize_cutpoints(probs, y_true)
    folds = np.asarray(folds)
    if len(folds) != len(probs) or len(np.unique(folds)) < 2:
        raise SubmitError(f"--ordinal: cross-fitting needs a fold for each of the {len(probs)} OOF rows "
                          f"and at least 2 folds")
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y_true, dtype=np.int64)
    grade, num_classes = expected_grade(probs), probs.shape[1]
    pred = np.empty(len(y), dtype=np.int64)
    for fold in np.unique(folds):
        held = folds == fold
        pred[held] = apply_cutpoints(grade[held], optimize_cutpoints(probs[~held], y[~held]).thresholds)
    out_of_fold = qwk(y, pred, num_classes)
    start = np.arange(num_classes - 1, dtype=np.float64) + 0.5
    kept = out_of_fold > full.qwk_start and full.qwk_tuned > full.qwk_start  # else the full fit is the start
    note = (f"tuned cut-points kept: out-of-fold QWK {out_of_fold:.4f} > {full.qwk_start:.4f} with the start points"
            if kept else
            f"tuned cut-points dropped: out of fold they scored QWK {out_of_fold:.4f}, not above the start points' "
            f"{full.qwk_start:.4f} (in sample {full.qwk_tuned:.4f}); the start points are used")
    if not kept:
        pred = apply_cutpoints(grade, start)
    return CutPoints(full.thresholds if kept else start, full.qwk_argmax, full.qwk_start,
                     out_of_fold if kept else full.qwk_start, full.qwk_tuned, bool(kept), note, pred)
