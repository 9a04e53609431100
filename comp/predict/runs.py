"""Loading a trained experiment: every fold's ``best.pt`` (and ``full/``).

The checkpoints are checked against each other and against the competition and its folds file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError
from torch import nn

from comp.competition import Competition
from comp.config import Config, ModelConfig
from comp.errors import CheckpointError, SubmitError
from comp.folds import Folds, folds_hash, read_folds
from comp.runfolder.checkpoint import check_checkpoint, load_checkpoint
from comp.runfolder.layout import FULL, RUNS_DIR, MemberDir, RunFolder, parse_member, prob_columns
from comp.runfolder.records import TEXT_COLUMNS, CVSummary, oof_probs


@dataclass
class Member:
    """One trained model of an experiment: ``fold<k>`` or ``full``."""

    name: str
    path: Path
    state: dict[str, Any] = field(repr=False)

    @property
    def fold(self) -> int | None:
        """The fold index (None for ``full``)."""
        fold = parse_member(self.name)
        return fold if isinstance(fold, int) else None

    def build_model(self) -> nn.Module:
        """The model with this checkpoint's weights, in eval mode, on the CPU."""
        from comp.models.factory import create_model

        state = self.state
        bad = next((k for k, v in state["model"].items() if v.is_floating_point() and not v.isfinite().all()), None)
        if bad is not None:
            raise CheckpointError(f"{self.path}: weight {bad} holds NaN or inf (the run diverged); retrain this "
                                  f"fold with a lower train.lr or with train.grad_clip")
        # The checkpoint holds the trained weights: never load (or need) the pretrained file again.
        settings = ModelConfig.model_validate({**state["config"]["model"], "pretrained": None})
        model = create_model(settings, state["num_classes"], state["in_chans"])
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{self.path}: weights do not fit model {state['config']['model']['name']} "
                                  f"({first[:200]})") from None
        return model.eval()


@dataclass
class Experiment:
    """The checked members of one experiment and the settings they were trained with."""

    name: str
    run_dir: Path
    members: list[Member]
    config: Config
    classes: list
    config_hash: str | None
    folds: Folds

    @property
    def fold_members(self) -> list[Member]:
        """The fold members (not ``full``)."""
        return [m for m in self.members if m.fold is not None]

    @property
    def image_size(self) -> int:
        """The input size the experiment was trained at (``data.image_size``)."""
        return self.config.data.image_size

    @property
    def channels(self) -> int:
        """The input channels of the checkpoints (else the config's ``data.channels``)."""
        return int(self.members[0].state.get("in_chans", self.config.data.channels))

    @property
    def run(self) -> RunFolder:
        """The experiment's run folder."""
        return RunFolder(self.run_dir)


def _parse_config(state: dict[str, Any], path: Path) -> Config:
    try:
        return Config.model_validate(with_legacy_cache(state["config"]))
    except (KeyError, ValidationError) as exc:
        detail = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: its stored config is not valid for this comp version ({detail})") from None


def with_legacy_cache(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored config from before ``data.cache_size`` and ``data.crop_border`` existed, made explicit.

    Its models saw the whole squashed image at ``image_size`` (no margin, no border trim), so they are
    predicted the same way, not from a 1.15 margin's centre or a trimmed fundus.
    """
    data = raw.get("data") if isinstance(raw, dict) else None
    if isinstance(data, dict) and "cache_size" not in data:
        return {**raw, "data": {**data, "cache_size": data.get("image_size"), "crop_border": False}}
    return raw


def _fold_paths(run: RunFolder, k: int) -> list[Path]:
    """``fold<i>/best.pt`` for i < k; refuses missing folds and folds beyond k."""
    run_dir = run.root
    paths = [run.member(i).best for i in range(k)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        listed = ", ".join(map(str, missing))
        raise SubmitError(
            f"{run_dir}: fold(s) {listed} of {k} have no best.pt; train them first "
            f"(comp train --fold {missing[0]}) or submit another experiment"
        )
    extra = sorted(d.name for f, d in run.fold_dirs().items() if f >= k and MemberDir(d).best.is_file())
    if extra:
        raise SubmitError(
            f"{run_dir}: has {', '.join(extra)} but the folds file has k={k}; "
            f"those runs were made with other folds: remove them or retrain"
        )
    return paths


def load_experiment(name: str, comp: Competition, *, use_full: bool = False,
                    runs_dir: Path = RUNS_DIR, folds_dir: Path | None = None) -> Experiment:
    """Load and check every fold model of ``runs/<name>`` (and ``full/`` with ``use_full``).

    Args:
        name: The experiment (its folder under ``runs_dir``).
        comp: The competition the models must have been trained on.
        use_full: Also load ``full/best.pt`` (the final fit on all labelled data); it must exist.
        runs_dir: Folder of the runs.
        folds_dir: Folder of the folds files (default ``folds/``).

    Returns:
        The experiment, members in fold order with ``full`` last.

    Raises:
        SubmitError: The run folder or a fold's checkpoint is missing, or folds beyond k exist.
        CheckpointError: Members that disagree on classes, folds file or config (check the
            classes against the competition with :func:`check_classes`).
        FoldsError: The experiment's folds file is missing or not from this competition.
    """
    run = RunFolder.of(name, runs_dir)
    run_dir = run.root
    if not run_dir.is_dir():
        raise SubmitError(f"{run_dir}: no such experiment; train it with `comp train` or check the name")
    first_path = next(iter(sorted(MemberDir(d).best for d in run.fold_dirs().values()
                                  if MemberDir(d).best.is_file())), None)
    if first_path is None:
        raise SubmitError(f"{run_dir}: no fold<k>/best.pt found; train the folds first (comp train --fold all)")
    loaded = {first_path: load_checkpoint(first_path)}
    first = _parse_config(loaded[first_path], first_path)
    kwargs = {} if folds_dir is None else {"folds_dir": folds_dir}
    folds = read_folds(first.folds.name, comp, **kwargs)
    fhash = folds_hash(first.folds.name, **kwargs)
    paths = _fold_paths(run, folds.k)
    if use_full:
        full = run.member(FULL).best
        if not full.is_file():
            raise SubmitError(f"{full}: not found; train the final fit (comp train --full) or drop --use-full")
        paths.append(full)
    members = []
    for path in paths:
        state = loaded.pop(path, None) or load_checkpoint(path)
        classes = members[0].state["classes"] if members else state["classes"]
        check_checkpoint(state, path, classes=classes, folds_hash=fhash if path.parent.name != FULL else None)
        members.append(Member(path.parent.name, path, state))
    _check_same_config(members)
    config = _parse_config(members[0].state, members[0].path)
    classes = [str(c) for c in members[0].state["classes"]]  # older checkpoints stored int labels
    return Experiment(name, run_dir, members, config, classes, members[0].state.get("config_hash"), folds)


def check_classes(experiments: list[Experiment], comp: Competition) -> None:
    """Refuse experiments whose class lists differ from each other or from the competition's.

    Raises:
        SubmitError: Two experiments of a blend disagree.
        CheckpointError: The experiments were trained on another class list than the competition's.
    """
    ref = experiments[0]
    for exp in experiments[1:]:
        if exp.classes != ref.classes:
            raise SubmitError(f"cannot blend {ref.name} (classes {ref.classes}) with {exp.name} "
                              f"(classes {exp.classes}): the class lists differ")
    for exp in experiments:
        member = exp.members[0]
        check_checkpoint(member.state, member.path, classes=comp.classes_)


def _check_same_config(members: list[Member]) -> None:
    """Refuse members trained with different configs (a stale fold after a config change)."""
    ref = members[0]
    for member in members[1:]:
        if member.state.get("config_hash") != ref.state.get("config_hash"):
            raise CheckpointError(
                f"{member.path}: trained with config {member.state.get('config_hash')} but {ref.path} with "
                f"{ref.state.get('config_hash')}; retrain the stale fold(s) so all use one config"
            )
        for key in ("num_classes", "in_chans"):
            if member.state.get(key) != ref.state.get(key):
                raise CheckpointError(f"{member.path}: {key}={member.state.get(key)} but {ref.path} has "
                                      f"{ref.state.get(key)}; retrain the stale fold(s)")


def read_oof_probs(exp: Experiment, comp: Competition) -> np.ndarray | None:
    """The run's ``oof.csv`` probabilities (N, C) in train order, or None.

    None when the file is absent, incomplete, or made with another config than the experiment's
    checkpoints (then the OOF is predicted again).
    """
    path = exp.run.oof
    cv = CVSummary.read_if_present(exp.run.cv)
    if not path.is_file() or cv is None:
        return None
    if cv.config_hash != exp.config_hash:  # oof.csv of an older config (a retrain stopped before write_cv)
        return None
    frame = pd.read_csv(path, **TEXT_COLUMNS)
    columns = prob_columns(comp.classes_)
    if any(c not in frame.columns for c in columns) or len(frame) != len(comp.train):
        return None
    frame = frame.set_index("id").reindex(comp.train["id"].astype(str))
    probs = oof_probs(frame, list(comp.classes_))
    return None if np.isnan(probs).any() else probs
