"""``--tta auto``: score each TTA policy and merge mode on the OOF predictions and pick the best.

Each fold model predicts its own validation fold under every candidate view once; a policy's OOF
score then costs only a merge of the views it uses, so all policies and modes are compared on the
same predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from comp.metrics import HIGHER_IS_BETTER, compute_metrics
from comp.predict.ensemble import MERGE_MODES, merge_logits, merge_probs
from comp.predict.tta import AUTO_POLICIES, View, parse_tta

if TYPE_CHECKING:
    from comp.predict.runs import Experiment


@dataclass
class PolicyScore:
    """OOF result of one (policy, merge) pair."""

    policy: str
    merge: str
    views: int
    score: float  # the monitored metric
    logloss: float


def monitored_metric(monitor: str) -> str:
    """The metric to rank by: the training monitor, with ``loss`` read as ``logloss``."""
    return "logloss" if monitor == "loss" else monitor


def auto_policies(experiments: Sequence[Experiment], policies: Sequence[str] = AUTO_POLICIES) -> tuple[str, ...]:
    """The ``--tta auto`` candidates these experiments can run.

    No resizing views for a model with a fixed input size (a timm ViT refuses any other size), so
    ``scale:`` policies are left out for them.
    """
    fixed = any(getattr(module, "strict_img_size", False)
                for exp in experiments for module in exp.members[0].build_model().modules())
    if not fixed:
        return tuple(policies)
    return tuple(p for p in policies if all(v.scale == 1.0 for v in parse_tta(p)))


def union_views(policies: Sequence[str]) -> list[View]:
    """Every distinct view of the candidate policies, in first-seen order."""
    return list(dict.fromkeys(v for p in policies for v in parse_tta(p)))


def member_probs(view_logits: Sequence[np.ndarray], columns: list[int], mode: str) -> list[torch.Tensor]:
    """Per experiment, (N, K) OOF probabilities of the views ``columns`` (of its (N, V, K) logits) merged."""
    return [merge_logits(torch.from_numpy(np.ascontiguousarray(v[:, columns].transpose(1, 0, 2))), mode)
            for v in view_logits]


def blend_oof(view_logits: Sequence[np.ndarray], columns: list[int], mode: str,
              weights: Sequence[float] | None = None) -> np.ndarray:
    """OOF probabilities (N, K) of a blend: per experiment merge the views, then blend experiments.

    Args:
        view_logits: Per experiment, (N, V, K) OOF logits under every candidate view.
        columns: Which of the V views the policy uses.
        mode: Merge mode for views and for experiments.
        weights: Experiment weights (None: equal).
    """
    per_exp = member_probs(view_logits, columns, mode)
    if len(per_exp) == 1:
        return per_exp[0].double().numpy()
    return merge_probs(torch.stack(per_exp), mode, weights).double().numpy()


def score_policies(view_logits: Sequence[np.ndarray], views: list[View], y_true: np.ndarray,
                   monitor: str, policies: Sequence[str], modes: Sequence[str] = MERGE_MODES,
                   weights: Sequence[float] | None = None) -> list[PolicyScore]:
    """Score every (policy, mode) pair on the OOF predictions.

    Args:
        view_logits: Per experiment, (N, V, K) OOF logits under ``views``.
        views: The views the logits were computed under (a superset of every policy's views).
        y_true: (N,) true class indices.
        monitor: The metric to report (``loss`` is read as ``logloss``).
        policies: Candidate TTA policies.
        modes: Candidate merge modes.
        weights: Experiment weights for a blend.

    Returns:
        One row per pair, best first (see :func:`rank_key`).
    """
    metric = monitored_metric(monitor)
    position = {v: i for i, v in enumerate(views)}
    rows = []
    for policy in policies:
        columns = [position[v] for v in parse_tta(policy)]
        for mode in modes:
            metrics = compute_metrics(y_true, blend_oof(view_logits, columns, mode, weights))
            rows.append(PolicyScore(policy, mode, len(columns), metrics[metric], metrics["logloss"]))
    return sorted(rows, key=lambda r: rank_key(r, metric))


def rank_key(row: PolicyScore, metric: str) -> tuple:
    """Best first: the monitored metric, then logloss, then fewer views (cheaper), then listing order."""
    score = row.score if not np.isnan(row.score) else (-np.inf if HIGHER_IS_BETTER[metric] else np.inf)
    primary = -score if HIGHER_IS_BETTER[metric] else score
    # Differences below 1e-6 are float noise (e.g. the same views merged in another order).
    return (round(primary, 6), round(row.logloss, 6), row.views)
