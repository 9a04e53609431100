"""``comp train``: the fold loop, out-of-fold predictions, the CV summary and the full fit."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp.competition import Competition, load_competition
from comp.config import Config, write_resolved
from comp.data.loader import resolve_num_workers
from comp.data.prebuild import CacheBuild, Progress
from comp.device import Runtime, barrier, setup_runtime, teardown
from comp.errors import ArtifactError, TrainError
from comp.folds import Folds, folds_hash, read_folds
from comp.lock import experiment_lock
from comp.metrics import HIGHER_IS_BETTER, METRICS, compute_metrics
from comp.models.factory import check_name
from comp.runfolder.layout import FULL, MemberDir, RunFolder
from comp.runfolder.records import CVSummary, FoldMetrics, oof_probs, read_json, read_oof, write_oof
from comp.train.fold import EpochCallback, FoldResult, FoldSpec, FoldTrainer
from comp.train.loaders import prebuild_train_cache

# Settings that change where or how fast a run goes, not what it learns: a resume may change them.
RUNTIME_ONLY = {"data": ("num_workers", "cache_dir"), "train": ("device", "threads", "compile")}
# Settings added after runs were trained, with the value under which those runs trained: left out of the
# hash at that value, so an upgrade does not turn every earlier run into "another config" (a refused
# --resume, folds left out of the CV and of --full). A new setting is added here with its neutral value.
NEUTRAL = {"augment": {"on_device": False}}


def training_hash(cfg: Config) -> str:
    """Hash of the settings that decide what a fold learns (not name, tune, submit or runtime-only keys)."""
    raw = cfg.to_dict()
    for section in ("name", "tune", "submit"):
        raw.pop(section, None)
    for section, keys in RUNTIME_ONLY.items():
        for key in keys:
            raw[section].pop(key, None)
    for section, values in NEUTRAL.items():
        for key, neutral in values.items():
            if raw[section].get(key, neutral) == neutral:
                raw[section].pop(key, None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainSummary:
    """What ``comp train`` did: the run folder, each member's result, the CV and the cache build."""
    run_dir: Path
    results: list[FoldResult]
    cv: CVSummary | None
    cache: CacheBuild | None = None  # the image cache built before the first epoch


def check_folds(folds: list[int] | None, k: int) -> list[int]:
    """The folds to train: every fold for None, else ``folds`` sorted.

    Raises:
        TrainError: a fold outside 0..k-1.
    """
    if folds is None:
        return list(range(k))
    bad = [f for f in folds if not 0 <= f < k]
    if bad:
        raise TrainError(f"fold {bad[0]} does not exist; the folds file has k={k} (0..{k - 1}); "
                         f"train folds in that range or remake the folds with comp folds make")
    return sorted(set(folds))


def fold_spec(folds: Folds, fold: int, run_dir: Path, epochs: int, fhash: str, chash: str) -> FoldSpec:
    """The rows fold ``fold`` trains and validates on, written to ``<run_dir>/fold<k>/``."""
    fold_col = folds.frame["fold"].to_numpy()
    return FoldSpec(fold, np.flatnonzero(fold_col != fold), np.flatnonzero(fold_col == fold), epochs,
                    RunFolder(run_dir).member(fold).path, fhash, chash)


def staging_dir(out_dir: Path) -> Path:
    """The staging folder of the member folder ``out_dir``."""
    return MemberDir(out_dir).staging.path


def _prepare_staging(final: Path, resume: bool, runtime: Runtime, staging: Path) -> bool:
    """Set up the fold's staging folder; returns whether to resume from its ``last.pt``.

    ``--resume`` continues a staged run (one that was killed), else a fold whose ``last.pt`` sits in
    its final folder (finished, or written by an older comp), copied into staging first. A fresh run
    starts from an empty staging folder: the final folder is not touched until the new one is complete.
    """
    resuming = resume and (MemberDir(staging).last.is_file() or MemberDir(final).last.is_file())
    if runtime.is_main:
        if resuming and staging != final and not MemberDir(staging).last.is_file():
            copy = staging.with_name(staging.name + ".copy")  # a kill mid-copy leaves no half staging
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(final, copy)
            shutil.rmtree(staging, ignore_errors=True)
            copy.rename(staging)
        elif not resuming:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
    barrier(runtime)
    return resuming


def _recover(final: Path) -> None:
    """Finish a publish that a crash interrupted between its two renames (``final`` is then missing)."""
    staging = staging_dir(final)
    old = staging.with_name(final.name + ".old")
    if final.exists() or not old.exists():
        return
    if MemberDir(staging).metrics.is_file():  # written last: the new results were complete
        staging.rename(final)
        shutil.rmtree(old)
    else:
        old.rename(final)


def _publish(final: Path, runtime: Runtime) -> None:
    """Swap the completed staging folder in for the fold's final folder (two renames)."""
    if runtime.is_main:
        staging, old = staging_dir(final), staging_dir(final).with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    barrier(runtime)


def run_fold(cfg: Config, comp: Competition, spec: FoldSpec, runtime: Runtime, resume: bool = False,
             callback: EpochCallback | None = None, log: Callable[[str], None] = print,
             on_done: Callable[[], None] | None = None, staged: bool = True) -> FoldResult:
    """Train one fold (or the full fit), resuming from ``last.pt`` when asked and present.

    Everything the fold needs (loaders, model, pretrained weights, optimiser, loss) is built before
    any file is touched; the fold trains in a staging folder that replaces ``spec.out_dir`` only once
    it is complete, so a refused or failed run leaves the previous results byte for byte (only the
    experiment's lock file is created). A run without ``resume`` discards the staged progress of a
    killed run.
    ``on_done`` runs once the new results are in place (``comp train`` writes ``config.yaml`` then).
    ``staged=False`` trains in ``spec.out_dir`` itself (a tuning trial's folder is new and thrown away).
    """
    final = spec.out_dir
    if staged and runtime.is_main:
        _recover(final)
    spec.out_dir = staging_dir(final) if staged else final
    trainer = FoldTrainer(cfg, comp, spec, runtime)
    resuming = _prepare_staging(final, resume, runtime, spec.out_dir)
    if resuming:
        trainer.resume(MemberDir(spec.out_dir).last)
        done = "already finished" if trainer.finished else f"resuming after epoch {trainer.start_epoch}"
        log(f"fold {spec.fold}: {done}")
    result = trainer.run(callback, log)
    if staged:
        spec.out_dir = final
        _publish(final, runtime)
    if on_done is not None:
        on_done()
    return result


def run_training(cfg: Config, folds: list[int] | None = None, resume: bool = False, full: bool = False,
                 full_epochs: int | None = None, log: Callable[[str], None] = print,
                 progress: Progress | None = None) -> TrainSummary:
    """Train the requested folds, then (if every fold is done) write ``oof.csv`` and ``cv.json``; then the full fit.

    Args:
        cfg: The experiment.
        folds: The folds to train (None: all of them; ``[]``: none, e.g. only the full fit).
        resume: Continue killed folds from their ``last.pt``.
        full: Then train the final fit on all labelled data.
        full_epochs: Its epochs (default ``train.full_epochs``, else the folds' mean best epoch).
        log: Where progress lines go.
        progress: Called with (done, total) while the image cache is built.

    The image cache is built first with every core (``progress`` gets (done, total) as it goes).

    Raises:
        CompError: bad competition folder, folds file, checkpoint, or a failed fold.
    """
    check_name(cfg.model.name)  # a typo in the model fails now, not after the data is checked
    if cfg.model.pretrained:  # so do weights that are neither cached nor downloadable: before the cache build
        from comp.models.pretrained import locate_weights

        locate_weights(cfg.model.pretrained, cfg.model.name)
    runtime = setup_runtime(cfg.train, resolve_num_workers(cfg.data.num_workers))
    try:
        with experiment_lock(cfg.run_dir) if runtime.is_main else contextlib.nullcontext():
            return _train(cfg, runtime, folds, resume, full, full_epochs, log, progress)
    finally:
        teardown(runtime)


def _train(cfg: Config, runtime: Runtime, fold_ids: list[int] | None, resume: bool, full: bool, full_epochs: int | None,
           log: Callable[[str], None], progress: Progress | None = None) -> TrainSummary:
    comp = load_competition(cfg.data)
    if cfg.train.monitor == "qwk":
        comp.require_order("train.monitor: qwk")
    if cfg.model.head == "regress":
        comp.require_order("model.head: regress")
    folds = read_folds(cfg.folds.name, comp, k=cfg.folds.k)
    cache = prebuild_train_cache(cfg, comp, runtime, progress)
    if cache.decoded and runtime.is_main:
        log(cache.summary("train images"))
    run, fhash, chash = RunFolder(cfg.run_dir), folds_hash(cfg.folds.name), training_hash(cfg)
    run_dir = run.root
    written = []

    def published() -> None:  # config.yaml describes the results in place, not a refused or failed run
        if runtime.is_main and not written:
            written.append(write_resolved(cfg, run_dir))

    results = []
    for f in check_folds(fold_ids, folds.k):
        spec = fold_spec(folds, f, run.root, cfg.train.epochs, fhash, chash)
        results.append(run_fold(cfg, comp, spec, runtime, resume, log=log, on_done=published))
    cv = write_cv(cfg, comp, folds, run, fhash, chash) if runtime.is_main else None
    if full:
        epochs = full_epochs or cfg.train.full_epochs or mean_best_epoch(run, folds.k, fhash, chash)
        spec = FoldSpec(FULL, np.arange(len(comp.train)), None, epochs, run.member(FULL).path, fhash, chash)
        log(f"full fit on all {len(comp.train)} labelled images for {epochs} epochs")
        results.append(run_fold(cfg, comp, spec, runtime, resume, log=log, on_done=published))
    return TrainSummary(run_dir, results, cv, cache)


def mean_best_epoch(run: RunFolder, k: int, fhash: str, chash: str) -> int:
    """Mean best epoch over the finished folds of this folds file and config (the full fit's length).

    A ``fold<n>/metrics.json`` left by another k, folds file or config is not counted.
    """
    best = [m.best_epoch for m in _finished_folds(run, k, fhash, chash).values()]
    if not best:
        raise TrainError(f"{run.root}: no finished fold of this folds file and config to take the epoch count "
                         f"from; train the folds first or pass --full-epochs N")
    return max(1, int(round(float(np.mean(best)))))


def _finished_folds(run: RunFolder, k: int, fhash: str, chash: str, with_oof: bool = False) -> dict[int, FoldMetrics]:
    """The metrics of folds 0..k-1 that finished on this folds file with this config (and wrote their OOF)."""
    done = {}
    for f in range(k):
        member = run.member(f)
        if not member.metrics.is_file() or (with_oof and not member.oof.is_file()):
            continue
        metrics = FoldMetrics.read(member.metrics)
        if metrics.belongs_to(fhash, chash):  # an old or unfinished fold does not belong in this CV
            done[f] = metrics
    return done


def tuned_split(run: RunFolder, fhash: str, fold_of_row: np.ndarray, table: pd.DataFrame, comp: Competition,
                probs: np.ndarray) -> dict:
    """The ``tuned_folds`` and ``untuned`` entries of the CV summary.

    ``tuned_folds``: the folds ``comp tune`` scored its trials on, from ``tune/summary.json``;
    ``untuned``: mean and pooled OOF metrics of the other folds (the CV no hyperparameter was chosen on).
    """
    try:
        summary = read_json(run.tune_summary) if run.tune_summary.is_file() else {}
    except ArtifactError:  # a torn summary names no tuned folds: the whole CV is reported, unsplit
        summary = {}
    if summary.get("folds_hash", fhash) != fhash:
        summary = {}  # tuned on another folds file: its fold numbers mean other rows
    tuned = sorted(int(f) for f in summary.get("folds") or [])
    untuned = [f for f in range(len(table)) if f not in tuned]
    if not tuned or not untuned:
        return {"tuned_folds": tuned, "untuned": None}
    rows = ~np.isin(fold_of_row, tuned)
    part = table.loc[[str(f) for f in untuned]]
    return {"tuned_folds": tuned, "untuned": {
        "folds": untuned, "mean": {m: float(part[m].mean()) for m in METRICS if m in part},
        "oof": compute_metrics(comp.train["target"].to_numpy()[rows], probs[rows])}}


def write_cv(cfg: Config, comp: Competition, folds: Folds, run: RunFolder, fhash: str,
             chash: str) -> CVSummary | None:
    """Pool the folds' OOF predictions and write ``oof.csv`` and ``cv.json`` (None until every fold is done)."""
    done = _finished_folds(run, folds.k, fhash, chash, with_oof=True)
    if len(done) < folds.k:
        return None
    per_fold = {str(f): {("loss" if k == "valid_loss" else k): v for k, v in m.metrics.items() if k != "train_loss"}
                for f, m in done.items()}
    parts = [read_oof(run.member(f).oof) for f in done]
    oof = pd.concat(parts).set_index("id").loc[comp.train["id"]].reset_index()
    oof["label"] = comp.train["label"].to_numpy()
    probs = oof_probs(oof, list(comp.classes_))
    table = pd.DataFrame(per_fold).T
    cv = CVSummary(
        experiment=cfg.name, config_hash=chash, folds=cfg.folds.name, folds_hash=fhash,
        classes=list(comp.classes_), monitor=cfg.train.monitor,
        mode="max" if HIGHER_IS_BETTER[cfg.train.monitor] else "min", per_fold=per_fold,
        mean={m: float(table[m].mean()) for m in METRICS if m in table},
        std={m: float(table[m].std(ddof=0)) for m in METRICS if m in table},
        oof=compute_metrics(comp.train["target"].to_numpy(), probs),
        best_epochs=[m.best_epoch for m in done.values()], complete=True,
        **tuned_split(run, fhash, folds.frame["fold"].to_numpy(), table, comp, probs),
    )
    write_oof(run.oof, oof)
    cv.write(run.cv)
    return cv
