"""The shape of ``sample_submission.csv``, and submissions built and validated against it.

Three kinds are understood: one label column (the class exactly as train.csv spells it), one column
per class (probabilities; columns matched to class names, optionally after a common prefix such as
``prob_``), and, for two classes, one column holding P(positive class) (AUC or logloss competitions).
The kind is read from the sample (``submit.target: auto``) or set (``label``, ``proba``). Every check
names the first problem: the line, the column and the value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp.errors import SubmitError
from comp.runfolder.layout import prob_column

SUM_TOLERANCE = 1e-3  # |sum of a row's probabilities - 1|
FLOAT_FORMAT = "%.8g"
MISSING = {"", "nan", "na", "n/a", "null", "none", "inf", "-inf"}


KINDS = ("label", "proba", "binary")


@dataclass
class SampleFormat:
    """What a submission must look like.

    Attributes:
        path: The sample submission file.
        columns: All its columns, in order.
        ids: Its ids, in order.
        id_col: The id column.
        kind: ``label`` (one column holding the class as train.csv spells it), ``proba`` (one
            probability column per class) or ``binary`` (one column holding P(positive class)).
        label_col: The label column (``label``).
        class_cols: The probability column of each class, in class order (``proba``).
        proba_col: The P(positive) column (``binary``).
        positive: The index of the positive class (``binary``).
        classes: The competition's classes (``classes_`` order, spelled as in train.csv).
        reason: How the kind was chosen (printed by ``comp submit``).
    """

    path: Path
    columns: list[str]
    ids: list[str]
    id_col: str
    kind: str
    classes: list[str]
    label_col: str | None = None
    class_cols: list[str] | None = None
    proba_col: str | None = None
    positive: int | None = None
    reason: str = ""

    @property
    def target_cols(self) -> list[str]:
        """The columns that carry the prediction: every class's for probabilities, else the one target column."""
        return self.class_cols if self.kind == "proba" else [self.label_col or self.proba_col]


def read_text_csv(path: Path, what: str) -> pd.DataFrame:
    """Every cell as written (str, nothing turned into NaN), with one-line errors."""
    if not Path(path).is_file():
        raise SubmitError(f"{path}: {what} not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty file"
        raise SubmitError(f"{path}: cannot read {what} as CSV ({detail})") from None


def _match_class_columns(targets: list[str], classes: list, path: Path) -> list[str]:
    """The column of each class: by exact name, else after a common prefix (``prob_``), else ignoring case."""
    names = list(classes)
    prefix = os.path.commonprefix(targets) if len(targets) > 1 else ""
    for fold in (str, str.lower):
        for cut in range(len(prefix) + 1):  # shortest prefix first: "prob_1" for prob_10.. must stop at "prob_"
            lookup = {fold(t[cut:]): t for t in targets}
            if all(fold(n) in lookup for n in names):
                return [lookup[fold(n)] for n in names]
    unmatched = next(n for n in names if n.lower() not in {t.lower() for t in targets})
    raise SubmitError(
        f"{path}: {len(targets)} target columns but no column for class {unmatched!r} "
        f"(columns: {', '.join(targets)}; classes: {', '.join(names)}); the sample needs one label column "
        f"or one column per class"
    )


def _positive_index(classes: list[str], positive: str | int | None, path: Path) -> int:
    if positive is None:
        return 1
    name = str(positive)
    if name not in classes:
        raise SubmitError(f"submit.positive: {name!r} is not a class (classes: {', '.join(classes)}); "
                          f"name the class whose probability {path.name} holds")
    return classes.index(name)


def _looks_like_probabilities(values: pd.Series, classes: list[str]) -> str | None:
    """Why a binary sample's single column holds P(positive), or None when it holds labels."""
    values = values.str.strip()
    if values.isin(classes).all():
        return None
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all() and numbers.between(0, 1).all():
        odd = values[~values.isin(classes)].iat[0]
        return f"its values (e.g. {odd!r}) are numbers in [0, 1] that are not class labels"
    return None


def _single_column_kind(frame: pd.DataFrame, column: str, classes: list[str], target: str,
                        path: Path) -> tuple[str, str]:
    """(kind, reason) for a sample with one target column."""
    if target == "proba":
        if len(classes) != 2:
            raise SubmitError(f"{path}: submit.target=proba, but one column {column!r} can hold a probability only "
                              f"for 2 classes ({len(classes)} here); use one column per class or submit.target=label")
        return "binary", "submit.target=proba"
    if target == "label":
        return "label", "submit.target=label"
    why = _looks_like_probabilities(frame[column], classes) if len(classes) == 2 else None
    if why:
        return "binary", f"auto: {why} (set submit.target=label if it wants labels)"
    if len(classes) == 2:
        return "label", ("auto: its values are class labels (set submit.target=proba if the competition scores "
                         "probabilities, e.g. AUC or logloss)")
    return "label", "auto: one target column"


def sample_format(path: Path, classes: Sequence[str], id_col: str, target: str = "auto",
                  positive: str | int | None = None) -> SampleFormat:
    """Read ``sample_submission.csv`` and work out its id column and what its target column(s) hold.

    Args:
        path: The sample submission.
        classes: The competition's classes (strings as spelled in train.csv).
        id_col: The configured id column (``data.id_col``); the first column when the sample lacks it.
        target: ``auto`` (from the sample's columns and values), ``label`` or ``proba`` (``submit.target``).
        positive: The class whose probability a binary single column holds (default: the second class).

    Raises:
        SubmitError: The file is missing or unreadable, has no target column, its target columns
            match no kind, or the requested kind does not fit them.
    """
    classes = [str(c) for c in classes]
    frame = read_text_csv(path, "sample submission")
    columns = [str(c) for c in frame.columns]
    id_col = id_col if id_col in columns else columns[0]
    targets = [c for c in columns if c != id_col]
    if not targets:
        raise SubmitError(f"{path}: only an id column; a sample submission needs target column(s)")
    fmt = SampleFormat(Path(path), columns, frame[id_col].tolist(), id_col, "label", classes)
    if len(targets) == 1 and len(classes) != 1:
        fmt.kind, fmt.reason = _single_column_kind(frame, targets[0], classes, target, Path(path))
        if fmt.kind == "binary":
            fmt.proba_col, fmt.positive = targets[0], _positive_index(classes, positive, Path(path))
        else:
            fmt.label_col = targets[0]
    elif len(targets) == len(classes):
        if target == "label":
            raise SubmitError(f"{path}: submit.target=label, but the sample has one column per class "
                              f"({', '.join(targets)}); use submit.target=auto or proba")
        fmt.kind, fmt.reason = "proba", "one probability column per class"
        fmt.class_cols = _match_class_columns(targets, classes, Path(path))
    else:
        raise SubmitError(
            f"{path}: {len(targets)} target columns ({', '.join(targets)}) for {len(classes)} classes; "
            f"expected one label column or one column per class"
        )
    return fmt


def build_submission(fmt: SampleFormat, ids: Sequence[str], probs: np.ndarray,
                     labels: np.ndarray | None = None) -> pd.DataFrame:
    """The submission in the sample's shape: its columns, its ids in its order.

    Args:
        fmt: The sample's format.
        ids: The id of each prediction row (any order; every sample id must be among them).
        probs: (N, K) class probabilities, classes in ``fmt.classes`` order.
        labels: (N,) class index per row for a label column (default: the argmax of ``probs``);
            ignored when the sample wants probabilities.

    Raises:
        SubmitError: A sample id has no prediction.
    """
    position = {str(i): n for n, i in enumerate(ids)}
    missing = [i for i in fmt.ids if i not in position]
    if missing:
        raise SubmitError(f"{fmt.path}: {len(missing)} ids have no prediction (first: {missing[0]!r}); "
                          f"the test images must cover every id of the sample submission")
    order = np.array([position[i] for i in fmt.ids], dtype=np.int64)
    out = pd.DataFrame({fmt.id_col: fmt.ids})
    if fmt.kind == "label":
        index = probs.argmax(1) if labels is None else np.asarray(labels)
        out[fmt.label_col] = np.array(fmt.classes, dtype=object)[index[order]]
    elif fmt.kind == "binary":
        out[fmt.proba_col] = probs[order, fmt.positive]
    else:
        for k, column in enumerate(fmt.class_cols):
            out[column] = probs[order, k]
    return out[fmt.columns]


def probs_frame(ids: Sequence[str], probs: np.ndarray, classes: Sequence) -> pd.DataFrame:
    """``id`` + ``prob_<class>`` columns (for blending later), rows as given."""
    frame = pd.DataFrame({"id": [str(i) for i in ids]})
    for k, c in enumerate(classes):
        frame[prob_column(c)] = probs[:, k]
    return frame


def to_csv_text(frame: pd.DataFrame) -> str:
    """The frame as CSV text, without the index, with Unix line ends and :data:`FLOAT_FORMAT`."""
    return frame.to_csv(index=False, lineterminator="\n", float_format=FLOAT_FORMAT)
