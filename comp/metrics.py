"""Classification metrics computed from labels and class probabilities.

Every metric has a direction: :data:`HIGHER_IS_BETTER` says which way is better for monitoring.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, log_loss, roc_auc_score

METRICS = ("loss", "accuracy", "f1", "qwk", "auc", "logloss")
HIGHER_IS_BETTER = {"loss": False, "accuracy": True, "f1": True, "qwk": True, "auc": True, "logloss": False}


def macro_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC over the classes present in ``y_true`` (NaN when fewer than two)."""
    n_classes = probs.shape[1]
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    scores = [roc_auc_score(y_true == c, probs[:, c]) for c in present]
    return float(np.mean(scores))


def _f1(y_true: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """F1 score of integer predictions.

    Binary: F1 of the positive (second) class, as Kaggle and scikit-learn's default score it.
    More classes: macro F1 over every class, including one absent from ``y_true``.
    """
    if num_classes == 2:
        return float(f1_score(y_true, pred, average="binary", pos_label=1, zero_division=0))
    return float(f1_score(y_true, pred, average="macro", labels=np.arange(num_classes), zero_division=0))


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, loss: float | None = None) -> dict[str, float]:
    """All metrics for integer labels ``y_true`` (N,) and probabilities ``probs`` (N, C).

    Returns:
        ``accuracy``, ``f1`` (two classes: the positive class's; more: macro over every class), ``qwk``
        (quadratic weighted kappa on the argmax, classes in ``classes_`` order), ``auc`` (macro
        one-vs-rest), ``logloss``, and ``loss`` when given (the validation log loss from the
        logits: no class weights, no smoothing).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only within ~1e-7
    pred = probs.argmax(axis=1)
    labels = np.arange(probs.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qwk = cohen_kappa_score(y_true, pred, weights="quadratic", labels=labels)
    out = {
        "accuracy": float(accuracy_score(y_true, pred)),
        "f1": _f1(y_true, pred, len(labels)),
        "qwk": float(0.0 if np.isnan(qwk) else qwk),
        "auc": macro_auc(y_true, probs),
        "logloss": float(log_loss(y_true, np.clip(probs, 1e-15, 1.0), labels=labels)),
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def is_better(score: float, best: float | None, monitor: str, tie: float | None = None,
              best_tie: float | None = None) -> bool:
    """Whether ``score`` improves on ``best`` for the monitored metric.

    Args:
        score: The new value of the monitored metric.
        best: The best value so far (None or NaN: no best yet, so any non-NaN ``score`` is better).
        monitor: The metric's name, which says whether higher is better.
        tie: A lower-is-better tie-breaker (the log loss): an equal ``score`` with a lower ``tie`` than
            ``best_tie`` is better, so an accuracy plateau keeps its most confident epoch, not its first.
        best_tie: The tie-breaker of ``best``.
    """
    if best is None or np.isnan(best):
        return not np.isnan(score)
    if score == best and tie is not None and best_tie is not None:
        return tie < best_tie
    return score > best if HIGHER_IS_BETTER[monitor] else score < best
