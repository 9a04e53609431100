"""Every prediction choice, made on the out-of-fold predictions before a test image is read.

The ``--tta auto`` policy and merge, the ``--weights auto`` blend and the ``--ordinal`` cut-points are
chosen here, on the OOF, each scored as the written file will be (the caller's ``score``). ``comp submit``
predicts the test set under the plan and writes it; ``comp export`` freezes the plan into a bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from comp.config import Config
from comp.errors import SubmitError
from comp.predict.blend import BlendFit, crossfit_blend
from comp.predict.ensemble import MERGE_MODES, merge_probs, normalize_weights
from comp.predict.ordinal import CutPoints, crossfit_cutpoints
from comp.predict.select import (
    PolicyScore,
    auto_policies,
    blend_oof,
    member_probs,
    monitored_metric,
    score_policies,
    union_views,
)
from comp.predict.tta import IDENTITY, View, parse_tta
from comp.runfolder.layout import RUNS_DIR

# Scores OOF probabilities (N, C) as the written file would be scored: with its labels when it has a label
# column (the second argument: cut-point labels, or None for the argmax), else with its probabilities.
OofScorer = Callable[[np.ndarray, "np.ndarray | None"], dict[str, float]]


@dataclass
class PredictRequest:
    """What to predict (CLI options over the ``submit:`` config section).

    Attributes:
        experiments: Experiment names (runs/<name>); several are blended.
        tta: A TTA policy (:func:`comp.predict.tta.parse_tta`) or ``auto`` (chosen on OOF).
        merge: ``mean``, ``geometric`` or ``logits`` for views, folds and experiments (``auto`` chooses it).
        weights: One blend weight per experiment (normalised); None: equal; ``"auto"``: fitted on the OOF
            (:mod:`comp.predict.blend`).
        use_full: Add each experiment's ``full/`` model to its fold models.
        ordinal: Labels from QWK cut-points on the OOF expected grade, cross-fitted over the folds (kept
            only if they beat the start points out of fold).
    """

    experiments: list[str]
    tta: str = "none"
    merge: str = "mean"
    weights: list[float] | str | None = None
    use_full: bool = False
    ordinal: bool = False


@dataclass
class PredictionPlan:
    """The loaded experiments and every choice made on their OOF predictions.

    Attributes:
        cfg: The config (competition folder, cache, ``submit.full_weight``).
        comp: The competition.
        experiments: The checked experiments (:class:`comp.predict.runs.Experiment`).
        weights: One weight per experiment (fitted with ``--weights auto``).
        settings: The inference settings (:class:`comp.predict.inference.InferenceSettings`).
        policy: The TTA policy (``--tta auto`` resolved).
        merge: The merge mode of views, members and experiments.
        views: The policy's views.
        auto_table: The ``--tta auto`` table, or None.
        cut: The ``--ordinal`` cut-points (cross-fitted on the OOF), or None.
        oof: The OOF metrics of these choices, scored as the file will be.
        blend: The ``--weights auto`` fit (its weights are ``weights``), or None.
    """

    cfg: Config
    comp: Any
    experiments: list
    weights: list[float]
    settings: Any
    policy: str = "none"
    merge: str = "mean"
    views: list[View] | None = None
    auto_table: list[PolicyScore] | None = None
    cut: CutPoints | None = None
    oof: dict[str, float] | None = None
    blend: BlendFit | None = None


def is_regression(experiments: list) -> bool:
    """Whether any experiment has a regression head (its predictions are grades, averaged as two-hot rows)."""
    return any(e.config.model.head == "regress" for e in experiments)


def load_plan(cfg: Config, comp: Any, request: PredictRequest, settings: Any,
              runs_dir: Path = RUNS_DIR) -> PredictionPlan:
    """Load and check the requested experiments (no choice made yet).

    Raises:
        CompError: Missing or inconsistent runs, classes that differ, or a merge a regression head refuses.
    """
    from comp.predict.runs import check_classes, load_experiment

    weights = check_request(request)
    experiments = [load_experiment(n, comp, use_full=request.use_full, runs_dir=runs_dir) for n in request.experiments]
    check_classes(experiments, comp)
    _check_grade_merge(experiments, request)
    return PredictionPlan(cfg, comp, experiments, weights, settings)


def check_request(request: PredictRequest) -> list[float]:
    """The request's blend weights, normalised (equal until ``--weights auto`` fits them).

    Raises:
        SubmitError: No experiment, or ``--weights auto`` with a single one.
    """
    if not request.experiments:
        raise SubmitError("no experiment to submit; name one, e.g. comp submit exp1")
    if request.weights == "auto" and len(request.experiments) < 2:
        raise SubmitError(f"--weights auto: {request.experiments[0]} alone has nothing to blend; name two or more "
                          f"experiments (comp submit exp1 exp2 --weights auto) or drop --weights")
    given = request.weights if isinstance(request.weights, list) else None  # "auto": equal until fitted
    return normalize_weights(given or [1.0] * len(request.experiments), len(request.experiments))


def _check_grade_merge(experiments: list, request: PredictRequest) -> None:
    """A regression head's grades average only under ``mean`` (its two-hot rows are linear in the grade)."""
    if is_regression(experiments) and request.merge != "mean" and request.tta != "auto":
        names = ", ".join(e.name for e in experiments if e.config.model.head == "regress")
        raise SubmitError(f"--merge {request.merge}: {names} predicts grades (model.head=regress), which are "
                          f"averaged; use --merge mean")


def choose(plan: PredictionPlan, request: PredictRequest, score: OofScorer) -> PredictionPlan:
    """Make every choice of ``request`` on the OOF predictions: TTA policy and merge, blend weights, cut-points.

    Args:
        plan: The loaded experiments (:func:`load_plan`); filled in and returned.
        request: What was asked.
        score: Scores OOF probabilities as the written file will be (see :data:`OofScorer`).

    Raises:
        SubmitError: OOF predictions that are NaN or inf.
    """
    y = plan.comp.train["target"].to_numpy()
    policy, mode, table, oof, chosen = _choose_policy(plan, request, y)
    views = parse_tta(policy)
    blend = None
    if request.weights == "auto":
        blend = _fit_blend(plan, views, mode, y, chosen, score)
        plan.weights, oof = blend.weights, blend.oof  # the test uses the weights; the OOF is cross-fitted
    oof = _oof_probs(plan, views, mode) if oof is None else oof
    check_finite(oof, plan.comp.train["id"].tolist(), "OOF")
    cut = crossfit_cutpoints(oof, y, _fold_of_row(plan)) if request.ordinal else None
    plan.policy, plan.merge, plan.views, plan.auto_table, plan.cut, plan.blend = policy, mode, views, table, cut, blend
    plan.oof = score(oof, None if cut is None else cut.oof_pred)  # each held-out fold cut by the others' points
    return plan


def _fold_of_row(plan: PredictionPlan) -> np.ndarray:
    return plan.experiments[0].folds.frame["fold"].to_numpy()


def _oof_view_logits(plan: PredictionPlan, views: list) -> list[np.ndarray]:
    from comp.predict.experiment import predict_oof_views

    return [predict_oof_views(e, plan.comp, views, plan.settings, plan.cfg.data.cache_dir) for e in plan.experiments]


def _oof_probs(plan: PredictionPlan, views: list, mode: str) -> np.ndarray:
    """OOF probabilities under the chosen views (the run's oof.csv when there is no TTA)."""
    from comp.predict.runs import read_oof_probs

    if views == [IDENTITY]:
        stored = [read_oof_probs(e, plan.comp) for e in plan.experiments]
        if all(p is not None for p in stored):
            if len(stored) == 1:
                return stored[0]
            return merge_probs(np.stack(stored), mode, plan.weights).double().numpy()
    return blend_oof(_oof_view_logits(plan, views), list(range(len(views))), mode, plan.weights)


def _choose_policy(plan: PredictionPlan, request: PredictRequest, y: np.ndarray) -> tuple:
    """Choose the TTA policy and merge mode of the request.

    Returns:
        (policy, merge mode, ``--tta auto`` table or None, OOF probabilities of the choice or None, and the
        OOF logits with the chosen views' columns, for ``--weights auto`` to reuse, or None).
    """
    if request.tta != "auto":
        return request.tta, request.merge, None, None, None
    policies = auto_policies(plan.experiments)  # AUTO_POLICIES less resizing for fixed-size models
    candidates = union_views(policies)
    logits = _oof_view_logits(plan, candidates)  # one OOF pass under every candidate view
    modes = ("mean",) if is_regression(plan.experiments) else MERGE_MODES
    table = score_policies(logits, candidates, y, plan.cfg.train.monitor, policies, modes, weights=plan.weights)
    best = table[0]
    columns = [candidates.index(v) for v in parse_tta(best.policy)]
    return best.policy, best.merge, table, blend_oof(logits, columns, best.merge, plan.weights), (logits, columns)


def _member_oofs(plan: PredictionPlan, views: list, mode: str, chosen: tuple | None = None) -> np.ndarray:
    """(M, N, C): each experiment's OOF probabilities under the chosen views.

    From the logits ``--tta auto`` already computed (``chosen``), else its oof.csv without TTA, else one
    OOF pass.
    """
    from comp.predict.runs import read_oof_probs

    if chosen is None and views == [IDENTITY]:
        stored = [read_oof_probs(e, plan.comp) for e in plan.experiments]
        if all(p is not None for p in stored):
            return np.stack(stored).astype(np.float64)
    logits, columns = chosen or (_oof_view_logits(plan, views), list(range(len(views))))
    return np.stack([p.double().numpy() for p in member_probs(logits, columns, mode)])


def _fit_blend(plan: PredictionPlan, views: list, mode: str, y: np.ndarray, chosen: tuple | None,
               score: OofScorer) -> BlendFit:
    """``--weights auto``: weights fitted on the OOF, cross-fitted over the folds for an honest score."""
    metric = monitored_metric(plan.cfg.train.monitor)

    def scored(probs: np.ndarray) -> tuple[str, float]:
        return metric, score(probs, None)[metric]

    names = [e.name for e in plan.experiments]
    return crossfit_blend(_member_oofs(plan, views, mode, chosen), y, _fold_of_row(plan), mode, names, scored)


def check_finite(probs: np.ndarray, ids: list[str], what: str) -> None:
    """Refuse NaN or inf probabilities (their argmax would be a confident class 0).

    Raises:
        SubmitError: naming how many rows and the first id.
    """
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        first = ids[int(np.flatnonzero(bad)[0])]
        raise SubmitError(f"{what} predictions of {int(bad.sum())} images are NaN or inf (first: id {first!r}); "
                          f"nothing was written: check the checkpoints (retrain with a lower train.lr), or try "
                          f"train.amp=off")
