"""``comp submit``: experiments -> test predictions (TTA, folds, blend) -> a validated submission.

Writes ``submissions/<stem>.csv`` (the sample's shape), ``<stem>-probs.csv`` (id + every class
probability, for blending later) and ``<stem>.json`` (what it was made from), where ``<stem>`` is the
experiment name, or ``a+b`` for a blend, plus ``-tta`` when a TTA policy other than ``none`` was used.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from comp.config import Config
from comp.errors import SubmitError
from comp.io import atomic_write_texts
from comp.lock import experiment_lock
from comp.predict.blend import BlendFit
from comp.predict.ordinal import CutPoints, apply_cutpoints, expected_grade
from comp.predict.plan import (
    PredictionPlan,
    PredictRequest,
    check_finite,
    check_request,
    choose,
    is_regression,
    load_plan,
)
from comp.predict.select import PolicyScore
from comp.predict.tta import IDENTITY
from comp.runfolder.layout import RUNS_DIR
from comp.submit.format import SampleFormat, build_submission, probs_frame, sample_format, to_csv_text
from comp.submit.score import SCORE_METRICS, score_predictions
from comp.submit.validate import validate_text

if TYPE_CHECKING:
    from comp.predict.inference import InferenceSettings

SUBMISSIONS_DIR = Path("submissions")

SubmitRequest = PredictRequest  # what to submit: the prediction's request (comp.predict.plan)


@dataclass
class SubmitResult:
    """What ``comp submit`` wrote and how it chose."""

    submission: Path
    probs: Path
    meta: Path
    rows: int
    policy: str
    merge: str
    views: list[str]
    auto_table: list[PolicyScore] | None = None
    cutpoints: CutPoints | None = None
    target: str = ""
    oof: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    blend: BlendFit | None = None


@dataclass
class SubmitPlan:
    """The prediction plan (every choice, made on the OOF) and the sample submission it is written for.

    ``comp submit`` predicts the test set under it; ``comp export`` freezes it into a bundle.

    Attributes:
        prediction: The loaded experiments and the choices (:class:`comp.predict.plan.PredictionPlan`).
        fmt: The sample submission's format.
    """

    prediction: PredictionPlan
    fmt: SampleFormat


def _settings(cfg: Config, settings: InferenceSettings | None) -> InferenceSettings:
    if settings is not None:
        return settings
    from comp.predict.inference import resolve_settings

    return resolve_settings(cfg.train.device, cfg.train.amp, cfg.submit.batch_size, cfg.data.num_workers,
                            cfg.train.channels_last)


def plan_submission(cfg: Config, request: SubmitRequest, settings: InferenceSettings | None = None,
                    runs_dir: Path = RUNS_DIR) -> SubmitPlan:
    """Read the sample submission, load the experiments and make every choice on their OOF predictions.

    The caller holds the experiments' shared locks (:func:`comp.lock.experiment_lock`).

    Raises:
        CompError: Missing or inconsistent runs, or a sample submission the classes do not fit.
    """
    from comp.competition import load_competition

    check_request(request)
    comp = load_competition(cfg.data)
    if request.ordinal:
        comp.require_order("--ordinal")
    fmt = sample_format(Path(cfg.data.root) / cfg.data.sample_submission, comp.classes_, cfg.data.id_col,
                        cfg.submit.target, cfg.submit.positive)
    if request.ordinal and fmt.kind != "label":
        raise SubmitError(f"{fmt.path}: --ordinal sets labels, but this sample wants probabilities ({fmt.reason}); "
                          f"drop --ordinal")
    plan = load_plan(cfg, comp, request, _settings(cfg, settings), runs_dir)
    y = comp.train["target"].to_numpy()
    choose(plan, request, lambda probs, labels: oof_metrics(fmt, probs, y, labels))
    return SubmitPlan(plan, fmt)


def make_submission(cfg: Config, request: SubmitRequest, settings: InferenceSettings | None = None,
                    out_dir: Path = SUBMISSIONS_DIR, runs_dir: Path = RUNS_DIR) -> SubmitResult:
    """Predict the test set with the requested experiments, TTA and merge, validate, and write.

    Args:
        cfg: The config (competition folder, ``train.monitor`` for ``--tta auto``, device settings).
        request: Experiments, TTA, merge, weights, ``use_full``, ``ordinal``.
        settings: :class:`comp.predict.inference.InferenceSettings` (default: from ``cfg``).
        out_dir: Where submissions go (relative to the working directory).
        runs_dir: Where the experiments' runs are.

    Returns:
        The written paths, the choices made, the ``--tta auto`` table and the cut-points if any.

    Raises:
        CompError: Missing or inconsistent runs, a sample submission the classes do not fit, or a
            submission that fails validation (nothing is written then).
    """
    start = time.perf_counter()
    with contextlib.ExitStack() as held:  # read no run while comp train writes it
        for name in dict.fromkeys(request.experiments):
            held.enter_context(experiment_lock(Path(runs_dir) / name, shared=True))
        plan = plan_submission(cfg, request, settings, runs_dir)
        result = _write(plan, request, out_dir)
    result.seconds = time.perf_counter() - start
    return result


def _write(plan: SubmitPlan, request: SubmitRequest, out_dir: Path) -> SubmitResult:
    chosen = plan.prediction
    ids, probs = _test_probs(chosen)
    check_finite(probs, ids, "test")
    labels = None if chosen.cut is None else apply_cutpoints(expected_grade(probs), chosen.cut.thresholds)
    result, texts = _render(plan, request, ids, probs, labels, out_dir)
    result.policy, result.merge, result.auto_table = chosen.policy, chosen.merge, chosen.auto_table
    result.cutpoints = chosen.cut
    result.blend = chosen.blend
    result.target = f"{plan.fmt.kind} ({plan.fmt.reason})"
    result.oof = chosen.oof
    texts[result.meta] = _meta_text(result, plan, request)
    atomic_write_texts(texts)  # the file, its -probs.csv and its .json change together or not at all
    return result


def _test_probs(plan: PredictionPlan) -> tuple[list[str], np.ndarray]:
    from comp.predict.experiment import predict_blend

    table = plan.comp.test_table()
    probs = predict_blend(plan.experiments, table["path"].tolist(), plan.views, plan.merge, plan.weights,
                          plan.settings, plan.cfg.data.cache_dir, plan.cfg.submit.full_weight)
    return [str(i) for i in table["id"]], probs


def oof_metrics(fmt: SampleFormat, oof: np.ndarray, y: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """The OOF predictions scored as the submission file is (:func:`comp.submit.score.score_predictions`).

    A label file is scored on its labels (the cut-points' when ``--ordinal``) and their one-hot rows,
    a probability file on its probabilities, so the ledger compares like with like.
    """
    labels = oof.argmax(1) if labels is None else labels
    probs = np.eye(oof.shape[1])[labels] if fmt.kind == "label" else oof
    return score_predictions(y, labels, probs, list(SCORE_METRICS))


def _render(plan: SubmitPlan, request: SubmitRequest, ids: list[str], probs: np.ndarray, labels: np.ndarray | None,
            out_dir: Path) -> tuple[SubmitResult, dict[Path, str]]:
    """The submission (validated) and its -probs.csv as texts, keyed by the paths they go to."""
    chosen = plan.prediction
    views = chosen.views
    stem = "+".join(request.experiments) + ("" if views == [IDENTITY] else "-tta")
    out_dir = Path(out_dir)
    path, probs_file = out_dir / f"{stem}.csv", out_dir / f"{stem}-probs.csv"
    text = to_csv_text(build_submission(plan.fmt, ids, probs, labels))
    validate_text(text, plan.fmt, f"{path} (not written)")
    frame = probs_frame(ids, probs, chosen.comp.classes_)
    if is_regression(chosen.experiments):  # the averaged grade, next to its two-hot rows
        frame.insert(1, "grade", expected_grade(probs))
    texts = {path: text, probs_file: to_csv_text(frame)}
    return SubmitResult(path, probs_file, out_dir / f"{stem}.json", len(plan.fmt.ids), "", "",
                        [v.name for v in views]), texts


def _meta_text(result: SubmitResult, plan: SubmitPlan, request: SubmitRequest) -> str:
    ctx = plan.prediction
    cut = result.cutpoints
    meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "experiments": request.experiments,
        "weights": ctx.weights,
        "config_hashes": [str(e.config_hash) for e in ctx.experiments],
        "members": {e.name: [m.name for m in e.members] for e in ctx.experiments},
        "tta": result.policy,
        "views": result.views,
        "merge": result.merge,
        "sample_submission": str(plan.fmt.path),
        "classes": plan.fmt.classes,
        "target": {"kind": plan.fmt.kind, "reason": plan.fmt.reason, "columns": plan.fmt.target_cols,
                   "positive": None if plan.fmt.positive is None else plan.fmt.classes[plan.fmt.positive]},
        "ordinal": None if cut is None else {
            "thresholds": [float(t) for t in cut.thresholds], "qwk_argmax": cut.qwk_argmax,
            "qwk_start": cut.qwk_start, "qwk_tuned": cut.qwk_tuned, "qwk_in_sample": cut.qwk_in_sample,
            "kept": cut.kept,
        },
        "oof": result.oof,
        "weights_auto": None if result.blend is None else result.blend.to_json(),
    }
    return json.dumps(meta, indent=2) + "\n"
