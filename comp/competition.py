"""Reading and validating a Kaggle-style competition folder.

A folder holds ``train.csv`` (id, label[, group][, path]), images under ``train/`` and ``test/``,
and ``sample_submission.csv`` (or a ``test.csv``) listing the test ids. Everything is checked at
load time so that a typo costs a one-line error, not a night of training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from comp.classes import MISSING_LABELS, has_order, resolve_classes
from comp.config import IMAGE_EXTENSIONS, DataConfig
from comp.errors import DataError
from comp.io import file_sha256

SHOW = 5  # how many offending ids an error message lists


@dataclass
class Competition:
    """A validated competition.

    Attributes:
        root: the competition folder.
        train: one row per training image: ``id`` (str), ``label`` (str, as the CSV spells it),
            ``target`` (index into ``classes_``), ``path`` (image file), and ``group`` when set.
        classes_: the labels as train.csv spells them, in ``data.classes`` order when declared, else
            numerically when all are numbers, else sorted as text; model outputs follow this order.
        train_csv: path of the train CSV, and ``train_csv_sha256`` its content hash.
    """

    root: Path
    train: pd.DataFrame
    classes_: list
    train_csv: Path
    train_csv_sha256: str
    data: DataConfig = field(repr=False)

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes_)

    @property
    def ordered_(self) -> bool:
        """Whether the class order means something (declared in ``data.classes``, or numbers)."""
        return has_order(self.classes_, self.data.classes is not None)

    def require_order(self, what: str) -> None:
        """Refuse ``what`` (QWK, ``--ordinal``) when the classes are strings in no declared order.

        Raises:
            DataError: naming the classes and the fix.
        """
        if not self.ordered_:
            shown = ", ".join(self.classes_[:8]) + (", ..." if self.num_classes > 8 else "")
            raise DataError(
                f"{what} needs ordered classes, but {self.train_csv.name}'s labels ({shown}) are text sorted "
                f"alphabetically; declare their order, e.g. data.classes: [{', '.join(self.classes_[:3])}, ...]"
            )

    def class_counts(self) -> dict[str, int]:
        """Training rows per class name, in class order (zero for a class with none)."""
        counts = self.train["target"].value_counts().reindex(range(self.num_classes), fill_value=0)
        return {c: int(n) for c, n in zip(self.classes_, counts)}

    def check_min_class_count(self, k: int) -> None:
        """Refuse a class with fewer members than folds (it cannot be in every validation fold)."""
        for name, n in self.class_counts().items():
            if n < k:
                raise DataError(
                    f"{self.train_csv}: class {name!r} has {n} rows, fewer than folds.k={k}; "
                    f"lower folds.k or merge/drop that class"
                )

    def test_table(self) -> pd.DataFrame:
        """The test ids in submission order with their image paths (``id``, ``path``)."""
        return load_test_table(self.root, self.data)


def read_csv(path: Path, what: str) -> pd.DataFrame:
    """Read a CSV with every column as text, with one-line errors for missing or empty files."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; check data.root and the file name in the config")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty; it needs a header row and one row per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as CSV ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise DataError(f"{path}: has a header but no rows; it needs one row per image")
    return frame


def require_columns(frame: pd.DataFrame, path: Path, columns: dict[str, str]) -> None:
    """``columns`` maps a needed column to the config key that names it."""
    for column, key in columns.items():
        if column not in frame.columns:
            have = ", ".join(map(str, frame.columns))
            raise DataError(f"{path}: no column {column!r} (columns: {have}); set {key} to the right name")


def _line(index: int) -> int:
    """CSV line of a 0-based data row (the header is line 1)."""
    return index + 2


def check_ids(frame: pd.DataFrame, column: str, path: Path) -> None:
    """Refuse empty or duplicated ids in ``frame[column]``.

    Raises:
        DataError: An empty or repeated id, naming the line of ``path``.
    """
    ids = frame[column]
    missing = ids.isna()
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(f"{path}: line {_line(row)}: empty {column!r}; every row needs an id")
    dup = ids.duplicated(keep="first")
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((ids == ids.iloc[row]).to_numpy())[0])
        raise DataError(
            f"{path}: line {_line(row)}: duplicate id {ids.iloc[row]!r} (first at line {_line(first)}); "
            f"ids must be unique"
        )


def parse_labels(values: pd.Series, path: Path, column: str, declared: list[str] | None = None
                 ) -> tuple[pd.Series, list[str]]:
    """Labels as written (stripped text) and the class list (see :func:`comp.classes.resolve_classes`).

    Empty cells and the texts NaN, NA, null, None are missing labels, unless ``declared`` lists them.
    """
    stripped = values.fillna("").astype(str).str.strip()
    spelled_missing = stripped.str.lower().isin(MISSING_LABELS) & ~stripped.isin(declared or [])
    missing = (stripped == "") | spelled_missing
    if missing.any():
        rows = np.flatnonzero(missing.to_numpy())
        shown = ", ".join(str(_line(int(r))) for r in rows[:SHOW]) + (", ..." if len(rows) > SHOW else "")
        text = stripped.iat[int(rows[0])]
        spelled = f", {text!r} reads as missing; declare it in data.classes if it is a class" if text else ""
        raise DataError(
            f"{path}: line {_line(int(rows[0]))}: missing {column!r} ({len(rows)} rows without a label, lines "
            f"{shown}{spelled}); fill them in or drop those rows"
        )
    return stripped, resolve_classes(stripped.tolist(), declared, str(path))


def _index_folder(folder: Path) -> set[str]:
    """Relative posix paths of every file below ``folder`` (one walk instead of a stat per id)."""
    found = set()
    for dirpath, _dirs, files in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found.update(prefix + name for name in files)
    return found


def _outside(name: str) -> bool:
    norm = os.path.normpath(name)
    return os.path.isabs(name) or norm == ".." or norm.startswith(".." + os.sep)


def resolve_images(ids: pd.Series, folder: Path, ext: str | None, source: Path, key: str) -> list[Path]:
    """Map each id (or relative path) to an image file in ``folder``.

    Tries the configured extension, else the id as given if it already names a file, else each of
    :data:`IMAGE_EXTENSIONS` in lower and upper case.

    Raises:
        DataError: an id escapes the folder, or ids have no image (first few listed with the count).
    """
    if not folder.is_dir():
        where = " (relative to data.root)" if key.startswith("data.") else ""
        raise DataError(f"{folder}: image folder not found; set {key}{where}")
    files = _index_folder(folder)
    exts = [ext, ext.upper()] if ext else [e for x in IMAGE_EXTENSIONS for e in (x, x.upper())]
    paths, missing = [], []
    for row, name in enumerate(ids):
        if _outside(name):
            raise DataError(
                f"{source}: line {_line(row)}: {name!r} resolves outside {folder}; ids must name files inside it"
            )
        rel = os.path.normpath(name).replace(os.sep, "/")
        hit = rel if rel in files else next((f"{rel}.{e}" for e in exts if f"{rel}.{e}" in files), None)
        if hit is None:
            missing.append(name)
        else:
            paths.append(folder / hit)
    if missing:
        tried = f".{ext}" if ext else "any of " + ", ".join("." + e for e in IMAGE_EXTENSIONS)
        shown = ", ".join(missing[:SHOW]) + (", ..." if len(missing) > SHOW else "")
        raise DataError(
            f"{source}: {len(missing)} of {len(ids)} ids have no image in {folder} (tried {tried}): {shown}; "
            f"check {key} and data.ext"
        )
    return paths


def resolve_path_column(frame: pd.DataFrame, column: str, root: Path, source: Path) -> list[Path]:
    """Images named by a path column, relative to the competition root."""
    paths, missing = [], []
    for row, name in enumerate(frame[column]):
        if not isinstance(name, str) or _outside(name):
            raise DataError(f"{source}: line {_line(row)}: path {name!r} must be a relative path inside {root}")
        path = root / name
        (paths if path.is_file() else missing).append(path)
    if missing:
        shown = ", ".join(str(p) for p in missing[:SHOW])
        raise DataError(f"{source}: {len(missing)} paths in column {column!r} do not exist: {shown}")
    return paths


def load_competition(data: DataConfig) -> Competition:
    """Read and validate the training side of a competition folder.

    Raises:
        DataError: naming the file, line or key at fault and the fix.
    """
    root = Path(data.root)
    if not root.is_dir():
        raise DataError(
            f"{root}: competition folder not found; set data.root, or run `comp data demo --out {root}`"
        )
    csv_path = root / data.train_csv
    frame = read_csv(csv_path, "train CSV")
    needed = {data.id_col: "data.id_col", data.label_col: "data.label_col"}
    if data.group_col:
        needed[data.group_col] = "data.group_col"
    if data.path_col:
        needed[data.path_col] = "data.path_col"
    require_columns(frame, csv_path, needed)
    check_ids(frame, data.id_col, csv_path)
    labels, classes = parse_labels(frame[data.label_col], csv_path, data.label_col, data.classes)
    if data.path_col:
        paths = resolve_path_column(frame, data.path_col, root, csv_path)
    else:
        paths = resolve_images(frame[data.id_col], root / data.train_dir, data.ext, csv_path, "data.train_dir")
    train = pd.DataFrame({"id": frame[data.id_col].to_numpy(), "label": labels.to_numpy()})
    train["target"] = train["label"].map({c: i for i, c in enumerate(classes)}).astype("int64")
    train["path"] = paths
    if data.group_col:
        groups = frame[data.group_col]
        if groups.isna().any():
            row = int(np.flatnonzero(groups.isna().to_numpy())[0])
            raise DataError(f"{csv_path}: line {_line(row)}: empty group {data.group_col!r}; fill it in")
        train["group"] = groups.to_numpy()
    return Competition(root, train, classes, csv_path, file_sha256(csv_path), data)


def load_test_table(root: Path, data: DataConfig) -> pd.DataFrame:
    """Test ids (from ``test_csv`` if set, else ``sample_submission``) in file order, with image paths."""
    name = data.test_csv or data.sample_submission
    path = root / name
    frame = read_csv(path, "test CSV" if data.test_csv else "sample submission")
    id_col = data.id_col if data.id_col in frame.columns else frame.columns[0]
    check_ids(frame, id_col, path)
    if data.test_csv and data.path_col and data.path_col in frame.columns:
        paths = resolve_path_column(frame, data.path_col, root, path)
    else:
        paths = resolve_images(frame[id_col], root / data.test_dir, data.ext, path, "data.test_dir")
    return pd.DataFrame({"id": frame[id_col].to_numpy(), "path": paths})
