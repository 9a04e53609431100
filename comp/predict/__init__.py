"""Prediction: TTA views, merging views/folds/experiments, experiment loading, OOF policy choice, ordinal cut-points.

Modules: :mod:`~comp.predict.tta` (views and policies), :mod:`~comp.predict.ensemble` (merge modes,
weights), :mod:`~comp.predict.runs` (loading and checking an experiment's checkpoints),
:mod:`~comp.predict.inference` (one loader pass, every view and model per batch),
:mod:`~comp.predict.experiment` (test and OOF predictions of an experiment),
:mod:`~comp.predict.select` (``--tta auto``), :mod:`~comp.predict.ordinal` (QWK cut-points).
The CLI imports this package inside its command bodies only (it pulls in torch).
"""

from comp.predict.ensemble import MERGE_MODES, merge_logits, merge_probs, normalize_weights, parse_weights
from comp.predict.ordinal import CutPoints, apply_cutpoints, expected_grade, optimize_cutpoints, qwk
from comp.predict.tta import AUTO_POLICIES, View, parse_tta

__all__ = [
    "AUTO_POLICIES",
    "MERGE_MODES",
    "CutPoints",
    "View",
    "apply_cutpoints",
    "expected_grade",
    "merge_logits",
    "merge_probs",
    "normalize_weights",
    "optimize_cutpoints",
    "parse_tta",
    "parse_weights",
    "qwk",
]
