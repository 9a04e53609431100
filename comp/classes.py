"""The competition's class list: labels as strings, spelled exactly as in train.csv, in one order.

That one list decides the model's output order, the order QWK and ``--ordinal`` use, the folds
file, every checkpoint, and how a submission spells its labels. The order is the one ``data.classes``
declares; without a declaration, numbers sort numerically (``"2"`` before ``"10"``, ``"000"`` before
``"001"``) and other strings sort as text, which has no meaning as grades.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from comp.errors import DataError

# Texts that mean "no label" in a CSV. They are missing labels unless data.classes declares them.
MISSING_LABELS = frozenset({"nan", "na", "n/a", "null", "none", "<na>"})


def as_number(label: str) -> float | None:
    """The label's value when it reads as a finite number (``"007"`` -> 7.0, ``"1.5"`` -> 1.5), else None."""
    try:
        value = float(label)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def is_numeric(classes: Iterable[str]) -> bool:
    """Whether every class reads as a number (then the default order is numeric and means something)."""
    return all(as_number(c) is not None for c in classes)


def default_order(labels: Iterable[str]) -> list[str]:
    """The distinct labels, numerically when all are numbers, else sorted as text."""
    distinct = set(labels)
    if is_numeric(distinct):
        return sorted(distinct, key=lambda c: (as_number(c), c))
    return sorted(distinct)


def normalize_declared(values: Sequence) -> list[str]:
    """``data.classes`` as strings (YAML may type ``[0, 1, 2]`` as numbers)."""
    if not isinstance(values, (list, tuple)):
        raise ValueError("must be a list of the labels, e.g. [No_DR, Mild, Moderate]")
    out = []
    for value in values:
        if isinstance(value, bool) or value is None:
            raise ValueError(f"class {value!r} must be a label as train.csv spells it (quote it in YAML)")
        out.append(str(value))
    duplicates = sorted({c for c in out if out.count(c) > 1})
    if duplicates:
        raise ValueError(f"class {duplicates[0]!r} is listed twice")
    return out


def resolve_classes(labels: Sequence[str], declared: Sequence[str] | None, source: str) -> list[str]:
    """The class list of ``labels`` (train.csv's, as written): the declared order, else :func:`default_order`.

    Args:
        labels: Every row's label, stripped.
        declared: ``data.classes`` (or None).
        source: The CSV, named in errors.

    Raises:
        DataError: A label is not declared, or a declared class has no row.
    """
    if declared is None:
        return default_order(labels)
    known = set(declared)
    for row, label in enumerate(labels):
        if label not in known:
            raise DataError(f"{source}: line {row + 2}: label {label!r} is not in data.classes "
                            f"({', '.join(declared)}); add it there, spelled as in the CSV")
    present = set(labels)
    empty = [c for c in declared if c not in present]
    if empty:
        raise DataError(f"{source}: data.classes lists {empty[0]!r}, but no row has that label; remove it from "
                        f"data.classes or check its spelling (YAML reads 007 as 7: quote it, '007')")
    return list(declared)


def has_order(classes: Sequence[str], declared: bool) -> bool:
    """Whether the class order means something (grades): declared, or every class a number."""
    return declared or is_numeric(classes)


def same_classes(recorded: Sequence, classes: Sequence[str]) -> bool:
    """Whether an artifact's recorded class list is ``classes`` (artifacts of older versions stored ints)."""
    return [str(c) for c in recorded] == list(classes)
