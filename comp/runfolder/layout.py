"""Every path under ``runs/<exp>/``: the one place that names the run folder's files.

Train writes through these paths; tune, predict, report, submit and export read through them.
``docs/artifacts.md`` describes the same layout and is checked against this module by the tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from comp.lock import LOCK_NAME

RUNS_DIR = Path("runs")  # relative to the project folder (the working directory)
FULL = "full"  # the member trained on all labelled data (``comp train --full``)
STAGING = ".staging"  # runs/<exp>/.staging/<member>: a fold trains here and replaces <member> only when complete
PROB_PREFIX = "prob_"  # one probability column per class: prob_<class as train.csv spells it>
_FOLD = re.compile(r"^fold(\d+)$")

# File names inside a member folder (fold<k>/ or full/) and at the experiment's top.
BEST, LAST, HISTORY, METRICS, OOF = "best.pt", "last.pt", "history.csv", "metrics.json", "oof.csv"
CV, CONFIG, LOCK = "cv.json", "config.yaml", LOCK_NAME
TUNE, REPORT = "tune", "report"
BEST_PARAMS, TUNE_SUMMARY, TRIALS = "best_params.yaml", "summary.json", "trials"


def member_name(fold: int | str) -> str:
    """``fold<k>`` for a fold index, ``full`` for the final fit."""
    return FULL if fold == FULL else f"fold{int(fold)}"


def parse_member(name: str) -> int | str | None:
    """The fold index of ``fold<k>``, ``"full"`` for ``full``, None for any other folder name."""
    if name == FULL:
        return FULL
    match = _FOLD.match(name)
    return int(match.group(1)) if match else None


def prob_column(cls: object) -> str:
    """The OOF/probability column of class ``cls``: ``prob_<cls>``."""
    return f"{PROB_PREFIX}{cls}"


def prob_columns(classes: Iterable[object]) -> list[str]:
    """The probability columns of ``classes``, in that order."""
    return [prob_column(c) for c in classes]


def classes_of(columns: Iterable[str]) -> list[str]:
    """The classes named by the ``prob_<class>`` columns among ``columns``, in column order."""
    return [c.removeprefix(PROB_PREFIX) for c in columns if c.startswith(PROB_PREFIX)]


@dataclass(frozen=True)
class MemberDir:
    """One member's folder (``fold<k>/``, ``full/``, a staging copy or a tuning trial's fold) and its files.

    Attributes:
        path: The folder.
    """

    path: Path

    @property
    def best(self) -> Path:
        """The checkpoint to predict with."""
        return self.path / BEST

    @property
    def last(self) -> Path:
        """The checkpoint to resume from."""
        return self.path / LAST

    @property
    def history(self) -> Path:
        """One row per epoch."""
        return self.path / HISTORY

    @property
    def metrics(self) -> Path:
        """The member's :class:`comp.runfolder.records.FoldMetrics`, written last."""
        return self.path / METRICS

    @property
    def oof(self) -> Path:
        """The fold's best model on its own validation rows."""
        return self.path / OOF

    @property
    def staging(self) -> MemberDir:
        """Where this member trains until it is complete: ``<parent>/.staging/<member>``."""
        return MemberDir(self.path.parent / STAGING / self.path.name)


@dataclass(frozen=True)
class RunFolder:
    """The folder of one experiment, ``runs/<exp>/``, and the path of everything in it.

    Attributes:
        root: The experiment folder.
    """

    root: Path

    @classmethod
    def of(cls, name: str, runs_dir: Path = RUNS_DIR) -> RunFolder:
        """The folder of experiment ``name`` under ``runs_dir``."""
        return cls(Path(runs_dir) / name)

    @property
    def name(self) -> str:
        """The experiment name."""
        return self.root.name

    def member(self, fold: int | str) -> MemberDir:
        """``fold<k>/`` or ``full/``: a finished member's folder."""
        return MemberDir(self.root / member_name(fold))

    @property
    def oof(self) -> Path:
        """The pooled out-of-fold predictions, in train.csv order."""
        return self.root / OOF

    @property
    def cv(self) -> Path:
        """The :class:`comp.runfolder.records.CVSummary`."""
        return self.root / CV

    @property
    def config(self) -> Path:
        """The resolved config of the results in place."""
        return self.root / CONFIG

    @property
    def lock(self) -> Path:
        """The writer's lock file."""
        return self.root / LOCK

    @property
    def tune(self) -> Path:
        """The study's folder."""
        return self.root / TUNE

    @property
    def best_params(self) -> Path:
        """The tuned parameters, for ``comp train --params``."""
        return self.tune / BEST_PARAMS

    @property
    def tune_summary(self) -> Path:
        """Trial states and the folds the trials were scored on."""
        return self.tune / TUNE_SUMMARY

    @property
    def trials(self) -> Path:
        """One folder per tuning trial."""
        return self.tune / TRIALS

    @property
    def report(self) -> Path:
        """The HTML report's folder."""
        return self.root / REPORT

    def fold_dirs(self) -> dict[int, Path]:
        """The ``fold<k>/`` folders present, by fold index."""
        if not self.root.is_dir():
            return {}
        found = {}
        for child in self.root.iterdir():
            fold = parse_member(child.name)
            if isinstance(fold, int) and child.is_dir():
                found[fold] = child
        return found
