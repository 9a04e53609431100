"""The shape of ``sample_submission.csv``, and submissions built and validated against it.

Two shapes are understood: one label column (the class as the competition spells it), or one column
per class (probabilities; columns matched to class names, optionally after a common prefix such as
``prob_``). Every check names the first problem: the line, the column and the value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp.errors import SubmitError

SUM_TOLERANCE = 1e-3  # |sum of a row's probabilities - 1|
FLOAT_FORMAT = "%.8g"
MISSING = {"", "nan", "na", "n/a", "null", "none", "inf", "-inf"}


@dataclass
class SampleFormat:
    """What a submission must look like.

    Attributes:
        path: The sample submission file.
        columns: All its columns, in order.
        ids: Its ids, in order.
        id_col: The id column.
        label_col: The label column, when the targets are one label column.
        class_cols: The probability column of each class (in class order), when one column per class.
        classes: The competition's classes (``classes_`` order).
    """

    path: Path
    columns: list[str]
    ids: list[str]
    id_col: str
    label_col: str | None
    class_cols: list[str] | None
    classes: list


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
    names = [str(c) for c in classes]
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


def sample_format(path: Path, classes: Sequence, id_col: str) -> SampleFormat:
    """Read ``sample_submission.csv`` and work out its id, label or class columns.

    Args:
        path: The sample submission.
        classes: The competition's classes.
        id_col: The configured id column (``data.id_col``); the first column when the sample lacks it.

    Raises:
        SubmitError: The file is missing or unreadable, has no target column, or its target columns
            match neither one label nor one column per class.
    """
    frame = read_text_csv(path, "sample submission")
    columns = [str(c) for c in frame.columns]
    id_col = id_col if id_col in columns else columns[0]
    targets = [c for c in columns if c != id_col]
    if not targets:
        raise SubmitError(f"{path}: only an id column; a sample submission needs target column(s)")
    label_col, class_cols = None, None
    if len(targets) == 1 and len(classes) != 1:
        label_col = targets[0]
    elif len(targets) == len(classes):
        class_cols = _match_class_columns(targets, list(classes), path)
    else:
        raise SubmitError(
            f"{path}: {len(targets)} target columns ({', '.join(targets)}) for {len(classes)} classes; "
            f"expected one label column or one column per class"
        )
    return SampleFormat(Path(path), columns, frame[id_col].tolist(), id_col, label_col, class_cols, list(classes))


def build_submission(fmt: SampleFormat, ids: Sequence[str], probs: np.ndarray,
                     labels: np.ndarray | None = None) -> pd.DataFrame:
    """The submission in the sample's shape: its columns, its ids in its order.

    Args:
        fmt: The sample's format.
        ids: The id of each prediction row (any order; every sample id must be among them).
        probs: (N, K) class probabilities, classes in ``fmt.classes`` order.
        labels: (N,) class index per row for a label column (default: the argmax of ``probs``).

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
    if fmt.label_col is not None:
        index = probs.argmax(1) if labels is None else np.asarray(labels)
        names = np.array([str(c) for c in fmt.classes], dtype=object)
        out[fmt.label_col] = names[index[order]]
    else:
        for k, column in enumerate(fmt.class_cols):
            out[column] = probs[order, k]
    return out[fmt.columns]


def probs_frame(ids: Sequence[str], probs: np.ndarray, classes: Sequence) -> pd.DataFrame:
    """``id`` + ``prob_<class>`` columns (for blending later), rows as given."""
    frame = pd.DataFrame({"id": [str(i) for i in ids]})
    for k, c in enumerate(classes):
        frame[f"prob_{c}"] = probs[:, k]
    return frame


def to_csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n", float_format=FLOAT_FORMAT)
