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

import numpy as np

from comp.config import Config
from comp.errors import SubmitError
from comp.io import atomic_write_texts
from comp.lock import experiment_lock
from comp.predict.blend import BlendFit, crossfit_blend
from comp.predict.ensemble import MERGE_MODES, merge_probs, normalize_weights
from comp.predict.ordinal import CutPoints, apply_cutpoints, crossfit_cutpoints, expected_grade
from comp.predict.select import PolicyScore, auto_policies, blend_oof, member_probs, score_policies, union_views
from comp.predict.tta import IDENTITY, parse_tta
from comp.submit.format import SampleFormat, build_submission, probs_frame, sample_format, to_csv_text
from comp.submit.score import SCORE_METRICS, score_predictions
from comp.submit.validate import validate_text

SUBMISSIONS_DIR = Path("submissions")


@dataclass
class SubmitRequest:
    """What to submit (CLI options over the ``submit:`` config section).

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
class _Context:
    cfg: Config
    comp: object
    experiments: list
    fmt: SampleFormat
    weights: list[float]
    settings: object


@dataclass
class SubmitPlan:
    """Every choice ``comp submit`` makes before it reads a test image (made on the OOF predictions).

    ``comp submit`` predicts the test set under it; ``comp export`` freezes it into a bundle.

    Attributes:
        ctx: The loaded experiments, sample format, blend weights and inference settings.
        policy: The TTA policy (``--tta auto`` resolved).
        merge: The merge mode of views, members and experiments.
        views: The policy's views.
        auto_table: The ``--tta auto`` table, or None.
        cut: The ``--ordinal`` cut-points (cross-fitted on the OOF), or None.
        oof: The OOF predictions scored as the submission file will be.
        blend: The ``--weights auto`` fit (its weights are ``ctx.weights``), or None.
    """

    ctx: _Context
    policy: str
    merge: str
    views: list
    auto_table: list[PolicyScore] | None
    cut: CutPoints | None
    oof: dict[str, float]
    blend: BlendFit | None = None


def _load(cfg: Config, request: SubmitRequest, settings, runs_dir: Path) -> _Context:
    from comp.competition import load_competition
    from comp.predict.runs import check_classes, load_experiment

    if not request.experiments:
        raise SubmitError("no experiment to submit; name one, e.g. comp submit exp1")
    if request.weights == "auto" and len(request.experiments) < 2:
        raise SubmitError(f"--weights auto: {request.experiments[0]} alone has nothing to blend; name two or more "
                          f"experiments (comp submit exp1 exp2 --weights auto) or drop --weights")
    given = request.weights if isinstance(request.weights, list) else None  # "auto": equal until fitted
    weights = normalize_weights(given or [1.0] * len(request.experiments), len(request.experiments))
    comp = load_competition(cfg.data)
    if request.ordinal:
        comp.require_order("--ordinal")
    fmt = sample_format(Path(cfg.data.root) / cfg.data.sample_submission, comp.classes_, cfg.data.id_col,
                        cfg.submit.target, cfg.submit.positive)
    if request.ordinal and fmt.kind != "label":
        raise SubmitError(f"{fmt.path}: --ordinal sets labels, but this sample wants probabilities ({fmt.reason}); "
                          f"drop --ordinal")
    experiments = [load_experiment(n, comp, use_full=request.use_full, runs_dir=runs_dir) for n in request.experiments]
    check_classes(experiments, comp)
    _check_grade_merge(experiments, request)
    return _Context(cfg, comp, experiments, fmt, weights, settings)


def is_regression(experiments) -> bool:
    """Whether any experiment has a regression head (its predictions are grades, averaged as two-hot rows)."""
    return any(e.config.model.head == "regress" for e in experiments)


def _check_grade_merge(experiments, request: SubmitRequest) -> None:
    """A regression head's grades average only under ``mean`` (its two-hot rows are linear in the grade)."""
    if is_regression(experiments) and request.merge != "mean" and request.tta != "auto":
        names = ", ".join(e.name for e in experiments if e.config.model.head == "regress")
        raise SubmitError(f"--merge {request.merge}: {names} predicts grades (model.head=regress), which are "
                          f"averaged; use --merge mean")


def _oof_view_logits(ctx: _Context, views: list) -> list[np.ndarray]:
    from comp.predict.experiment import predict_oof_views

    return [predict_oof_views(e, ctx.comp, views, ctx.settings, ctx.cfg.data.cache_dir) for e in ctx.experiments]


def _oof_probs(ctx: _Context, views: list, mode: str) -> np.ndarray:
    """OOF probabilities under the chosen views (the run's oof.csv when there is no TTA)."""
    from comp.predict.runs import read_oof_probs

    if views == [IDENTITY]:
        stored = [read_oof_probs(e, ctx.comp) for e in ctx.experiments]
        if all(p is not None for p in stored):
            return stored[0] if len(stored) == 1 else merge_probs(np.stack(stored), mode, ctx.weights).double().numpy()
    return blend_oof(_oof_view_logits(ctx, views), list(range(len(views))), mode, ctx.weights)


def _test_probs(ctx: _Context, views: list, mode: str) -> tuple[list[str], np.ndarray]:
    from comp.predict.experiment import predict_blend

    table = ctx.comp.test_table()
    probs = predict_blend(ctx.experiments, table["path"].tolist(), views, mode, ctx.weights, ctx.settings,
                          ctx.cfg.data.cache_dir, ctx.cfg.submit.full_weight)
    return [str(i) for i in table["id"]], probs


def _choose_policy(ctx: _Context, request: SubmitRequest, y: np.ndarray):
    """(policy, merge mode, ``--tta auto`` table or None, OOF probabilities of the choice or None, and the
    OOF logits with the chosen views' columns, for ``--weights auto`` to reuse, or None)."""
    if request.tta != "auto":
        return request.tta, request.merge, None, None, None
    policies = auto_policies(ctx.experiments)  # AUTO_POLICIES less resizing for fixed-size models
    candidates = union_views(policies)
    logits = _oof_view_logits(ctx, candidates)  # one OOF pass under every candidate view
    modes = ("mean",) if is_regression(ctx.experiments) else MERGE_MODES
    table = score_policies(logits, candidates, y, ctx.cfg.train.monitor, policies, modes, weights=ctx.weights)
    best = table[0]
    columns = [candidates.index(v) for v in parse_tta(best.policy)]
    return best.policy, best.merge, table, blend_oof(logits, columns, best.merge, ctx.weights), (logits, columns)


def _settings(cfg: Config, settings):
    if settings is not None:
        return settings
    from comp.predict.inference import resolve_settings

    return resolve_settings(cfg.train.device, cfg.train.amp, cfg.submit.batch_size, cfg.data.num_workers,
                            cfg.train.channels_last)


def plan_submission(cfg: Config, request: SubmitRequest, settings=None, runs_dir: Path = Path("runs")) -> SubmitPlan:
    """Load the experiments and make every choice on their OOF predictions (TTA, merge, cut-points).

    The caller holds the experiments' shared locks (:func:`comp.lock.experiment_lock`).

    Raises:
        CompError: Missing or inconsistent runs, or a sample submission the classes do not fit.
    """
    ctx = _load(cfg, request, _settings(cfg, settings), runs_dir)
    y = ctx.comp.train["target"].to_numpy()
    policy, mode, table, oof, chosen = _choose_policy(ctx, request, y)
    views = parse_tta(policy)
    blend = None
    if request.weights == "auto":
        blend = _fit_blend(ctx, views, mode, y, chosen)
        ctx.weights, oof = blend.weights, blend.oof  # the test uses the weights; the OOF is cross-fitted
    oof, cut = _oof_and_cutpoints(ctx, request, views, mode, oof, y)
    oof_labels = None if cut is None else cut.oof_pred  # each held-out fold cut by points fitted on the others
    return SubmitPlan(ctx, policy, mode, views, table, cut, _oof_metrics(ctx.fmt, oof, y, oof_labels), blend)


def _member_oofs(ctx: _Context, views: list, mode: str, chosen=None) -> np.ndarray:
    """(M, N, C): each experiment's OOF probabilities under the chosen views: from the logits ``--tta auto``
    already computed (``chosen``), else its oof.csv without TTA, else one OOF pass."""
    from comp.predict.runs import read_oof_probs

    if chosen is None and views == [IDENTITY]:
        stored = [read_oof_probs(e, ctx.comp) for e in ctx.experiments]
        if all(p is not None for p in stored):
            return np.stack(stored).astype(np.float64)
    logits, columns = chosen or (_oof_view_logits(ctx, views), list(range(len(views))))
    return np.stack([p.double().numpy() for p in member_probs(logits, columns, mode)])


def _fit_blend(ctx: _Context, views: list, mode: str, y: np.ndarray, chosen=None) -> BlendFit:
    """``--weights auto``: weights fitted on the OOF, cross-fitted over the folds for an honest score."""
    from comp.predict.select import monitored_metric

    metric = monitored_metric(ctx.cfg.train.monitor)

    def score(probs: np.ndarray) -> tuple[str, float]:
        return metric, _oof_metrics(ctx.fmt, probs, y, None)[metric]

    folds = ctx.experiments[0].folds.frame["fold"].to_numpy()
    names = [e.name for e in ctx.experiments]
    return crossfit_blend(_member_oofs(ctx, views, mode, chosen), y, folds, mode, names, score)


def make_submission(cfg: Config, request: SubmitRequest, settings=None, out_dir: Path = SUBMISSIONS_DIR,
                    runs_dir: Path = Path("runs")) -> SubmitResult:
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
    ctx = plan.ctx
    ids, probs = _test_probs(ctx, plan.views, plan.merge)
    check_finite(probs, ids, "test")
    labels = None if plan.cut is None else apply_cutpoints(expected_grade(probs), plan.cut.thresholds)
    result, texts = _render(ctx, request, ids, probs, labels, plan.views, out_dir)
    result.policy, result.merge, result.auto_table = plan.policy, plan.merge, plan.auto_table
    result.cutpoints = plan.cut
    result.blend = plan.blend
    result.target = f"{ctx.fmt.kind} ({ctx.fmt.reason})"
    result.oof = plan.oof
    texts[result.meta] = _meta_text(result, ctx, request)
    atomic_write_texts(texts)  # the file, its -probs.csv and its .json change together or not at all
    return result


def _oof_and_cutpoints(ctx: _Context, request: SubmitRequest, views: list, mode: str, oof: np.ndarray | None,
                       y: np.ndarray) -> tuple[np.ndarray, CutPoints | None]:
    """The OOF twin of what is written (predicted unless ``--tta auto`` already did) and, with
    ``--ordinal``, the cut-points cross-fitted on it."""
    oof = _oof_probs(ctx, views, mode) if oof is None else oof
    check_finite(oof, ctx.comp.train["id"].tolist(), "OOF")
    if not request.ordinal:
        return oof, None
    return oof, crossfit_cutpoints(oof, y, ctx.experiments[0].folds.frame["fold"].to_numpy())


def check_finite(probs: np.ndarray, ids: list[str], what: str) -> None:
    """Refuse NaN or inf probabilities (their argmax would be a confident class 0)."""
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        first = ids[int(np.flatnonzero(bad)[0])]
        raise SubmitError(f"{what} predictions of {int(bad.sum())} images are NaN or inf (first: id {first!r}); "
                          f"nothing was written: check the checkpoints (retrain with a lower train.lr), or try "
                          f"train.amp=off")


def _oof_metrics(fmt: SampleFormat, oof: np.ndarray, y: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """The OOF predictions scored as the submission file is (:func:`comp.submit.score.score_predictions`).

    A label file is scored on its labels (the cut-points' when ``--ordinal``) and their one-hot rows,
    a probability file on its probabilities, so the ledger compares like with like.
    """
    labels = oof.argmax(1) if labels is None else labels
    probs = np.eye(oof.shape[1])[labels] if fmt.kind == "label" else oof
    return score_predictions(y, labels, probs, list(SCORE_METRICS))


def _render(ctx: _Context, request: SubmitRequest, ids: list[str], probs: np.ndarray, labels, views,
            out_dir: Path) -> tuple[SubmitResult, dict[Path, str]]:
    """The submission (validated) and its -probs.csv as texts, keyed by the paths they go to."""
    stem = "+".join(request.experiments) + ("" if views == [IDENTITY] else "-tta")
    out_dir = Path(out_dir)
    path, probs_file = out_dir / f"{stem}.csv", out_dir / f"{stem}-probs.csv"
    text = to_csv_text(build_submission(ctx.fmt, ids, probs, labels))
    validate_text(text, ctx.fmt, f"{path} (not written)")
    frame = probs_frame(ids, probs, ctx.comp.classes_)
    if is_regression(ctx.experiments):  # the averaged grade, next to its two-hot rows
        frame.insert(1, "grade", expected_grade(probs))
    texts = {path: text, probs_file: to_csv_text(frame)}
    return SubmitResult(path, probs_file, out_dir / f"{stem}.json", len(ctx.fmt.ids), "", "",
                        [v.name for v in views]), texts


def _meta_text(result: SubmitResult, ctx: _Context, request: SubmitRequest) -> str:
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
        "sample_submission": str(ctx.fmt.path),
        "classes": ctx.fmt.classes,
        "target": {"kind": ctx.fmt.kind, "reason": ctx.fmt.reason, "columns": ctx.fmt.target_cols,
                   "positive": None if ctx.fmt.positive is None else ctx.fmt.classes[ctx.fmt.positive]},
        "ordinal": None if cut is None else {
            "thresholds": [float(t) for t in cut.thresholds], "qwk_argmax": cut.qwk_argmax,
            "qwk_start": cut.qwk_start, "qwk_tuned": cut.qwk_tuned, "qwk_in_sample": cut.qwk_in_sample,
            "kept": cut.kept,
        },
        "oof": result.oof,
        "weights_auto": None if result.blend is None else result.blend.to_json(),
    }
    return json.dumps(meta, indent=2) + "\n"
