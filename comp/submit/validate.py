"""Checks a submission against the sample submission: columns, ids and their order, values.

The same checks run before ``comp submit`` writes a file and on any file with ``comp submit --check``.
Each failure is one :class:`SubmitError` naming the first problem: line (the header is line 1),
column and value.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from comp.errors import SubmitError
from comp.submit.format import MISSING, SUM_TOLERANCE, SampleFormat, read_text_csv


def _line(row: int) -> int:
    return row + 2


def _check_columns(columns: list[str], fmt: SampleFormat, source: str) -> None:
    if columns == fmt.columns:
        return
    missing = [c for c in fmt.columns if c not in columns]
    extra = [c for c in columns if c not in fmt.columns]
    if missing:
        raise SubmitError(f"{source}: column {missing[0]!r} is missing (the sample has {', '.join(fmt.columns)})")
    if extra:
        raise SubmitError(f"{source}: column {extra[0]!r} is not in the sample (it has {', '.join(fmt.columns)})")
    pos = next(i for i, (a, b) in enumerate(zip(columns, fmt.columns)) if a != b)
    raise SubmitError(f"{source}: column {pos + 1} is {columns[pos]!r} where the sample has {fmt.columns[pos]!r}; "
                      f"use the sample's column order: {', '.join(fmt.columns)}")


def _check_ids(ids: list[str], fmt: SampleFormat, source: str) -> None:
    if ids == fmt.ids:
        return
    expected = set(fmt.ids)
    seen: set[str] = set()
    for row, value in enumerate(ids):
        col = fmt.id_col
        if value in seen:
            raise SubmitError(f"{source}: line {_line(row)}, column {col!r}: duplicate id {value!r}")
        seen.add(value)
        if value not in expected:
            raise SubmitError(f"{source}: line {_line(row)}, column {col!r}: id {value!r} is not in {fmt.path.name}")
        if row < len(fmt.ids) and value != fmt.ids[row]:
            raise SubmitError(f"{source}: line {_line(row)}, column {col!r}: id {value!r} where {fmt.path.name} has "
                              f"{fmt.ids[row]!r}; rows must follow the sample's id order")
    missing = next(i for i in fmt.ids if i not in seen)
    raise SubmitError(f"{source}: {len(ids)} rows but {fmt.path.name} has {len(fmt.ids)}; id {missing!r} is missing")


def _check_missing(frame: pd.DataFrame, fmt: SampleFormat, source: str) -> None:
    """Empty, NaN or inf cells; an id is never missing (the id check matched it), nor a declared class ("NA")."""
    blank = frame.apply(lambda col: col.str.strip().str.lower().isin(MISSING) & ~col.str.strip().isin(fmt.classes))
    blank[fmt.id_col] = False
    if blank.to_numpy().any():
        row, col = np.argwhere(blank.to_numpy())[0]
        value = frame.iat[row, col]
        raise SubmitError(f"{source}: line {_line(int(row))}, column {frame.columns[col]!r}: missing value {value!r}")


def _check_labels(values: pd.Series, fmt: SampleFormat, source: str) -> None:
    bad = ~values.isin(fmt.classes)  # spelled exactly as train.csv does: "007" is not "7"
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        shown = ", ".join(fmt.classes[:20]) + (", ..." if len(fmt.classes) > 20 else "")
        raise SubmitError(f"{source}: line {_line(row)}, column {fmt.label_col!r}: {values.iat[row]!r} is not a class "
                          f"(classes: {shown})")


def _check_probs(frame: pd.DataFrame, fmt: SampleFormat, source: str) -> None:
    columns = [c for c in frame.columns if c in fmt.target_cols]  # file order: report the first bad cell
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    bad = ~finite | (values < 0) | (values > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        what = "is not a number" if not finite[row, col] else "is outside [0, 1]"
        raise SubmitError(f"{source}: line {_line(int(row))}, column {columns[col]!r}: "
                          f"{frame[columns[col]].iat[row]!r} {what}")
    if fmt.kind == "binary":
        return  # one column: P(positive), nothing to sum
    sums = values.sum(1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise SubmitError(f"{source}: line {_line(row)}: probabilities sum to {sums[row]:.6g}, not 1 "
                          f"(columns {columns[0]}..{columns[-1]}, tolerance {SUM_TOLERANCE:g})")


def validate_frame(frame: pd.DataFrame, fmt: SampleFormat, source: str) -> None:
    """Check a submission read as text (every cell a str) against the sample.

    Order: columns, ids (count, membership, duplicates, order), missing values, then the targets: labels
    spelled as in train.csv, or probabilities in [0, 1] (one per class summing to 1, or binary P(positive)).

    Raises:
        SubmitError: The first problem, with its line, column and value.
    """
    frame = frame.fillna("").astype(str)  # short rows leave NaN even when reading text
    _check_columns([str(c) for c in frame.columns], fmt, source)
    _check_ids(frame[fmt.id_col].tolist(), fmt, source)
    _check_missing(frame, fmt, source)
    if fmt.kind == "label":
        _check_labels(frame[fmt.label_col].str.strip(), fmt, source)
    else:
        _check_probs(frame, fmt, source)


def validate_text(text: str, fmt: SampleFormat, source: str) -> None:
    """Check CSV text exactly as it would be written (see :func:`validate_frame`)."""
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    validate_frame(frame, fmt, source)


def check_file(path: Path, fmt: SampleFormat) -> int:
    """Check a submission file; returns its number of rows.

    Raises:
        SubmitError: The file is unreadable or fails a check (see :func:`validate_frame`).
    """
    frame = read_text_csv(Path(path), "submission")
    validate_frame(frame, fmt, str(path))
    return len(frame)
