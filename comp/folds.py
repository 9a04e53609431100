"""Fold assignment: stratified (and grouped) k-fold, duplicate-aware, written and checked by hash.

A folds file is ``folds/<name>.csv`` (id, label, fold[, group]) plus ``folds/<name>.json`` with what
it was made from. Every later stage reads it through :func:`read_folds`, which refuses a file made
from another train.csv, another class list or another k.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from comp.classes import same_classes
from comp.competition import Competition
from comp.errors import FoldsError
from comp.io import atomic_write_text, file_sha256

FOLDS_DIR = Path("folds")


@dataclass
class Folds:
    """A fold assignment: ``frame`` has id, label, fold[, group]; ``meta`` is the JSON side-car."""

    frame: pd.DataFrame
    meta: dict

    @property
    def k(self) -> int:
        """The number of folds."""
        return int(self.meta["k"])

    def csv_text(self) -> str:
        """The fold assignments as CSV text (Unix line ends, no index)."""
        return self.frame.to_csv(index=False, lineterminator="\n")

    def json_text(self) -> str:
        """The metadata as indented JSON text."""
        return json.dumps(self.meta, indent=2) + "\n"


def content_groups(paths: list[Path]) -> np.ndarray:
    """Group label per image: images with byte-identical files share a label (first index of that content)."""
    first_seen: dict[str, int] = {}
    labels = np.empty(len(paths), dtype=np.int64)
    for i, path in enumerate(paths):
        digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()
        labels[i] = first_seen.setdefault(digest, i)
    return labels


def merge_groups(*labelings: np.ndarray) -> np.ndarray:
    """Union of several groupings: rows linked by any labelling end in one group (union-find)."""
    n = len(labelings[0])
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for labels in labelings:
        first: dict = {}
        for i, lab in enumerate(labels):
            j = first.setdefault(lab, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


def _group_labels(comp: Competition, group_duplicates: bool) -> tuple[np.ndarray | None, int]:
    """Group index per row (or None when ungrouped) and the number of duplicate images merged."""
    labelings = []
    if "group" in comp.train:
        labelings.append(pd.factorize(comp.train["group"])[0])
    n_dupes = 0
    if group_duplicates:
        dup = content_groups(list(comp.train["path"]))
        n_dupes = int(len(dup) - len(np.unique(dup)))
        labelings.append(dup)
    if not labelings:
        return None, 0
    return merge_groups(*labelings), n_dupes


def make_folds(comp: Competition, k: int, seed: int, name: str, group_duplicates: bool = False) -> Folds:
    """Assign each training row to one of ``k`` validation folds.

    Stratified on the label; grouped (``StratifiedGroupKFold``) when the competition has a group
    column or ``group_duplicates`` merges byte-identical images, so no group sits on both sides.

    Raises:
        DataError: a class has fewer members than ``k``.
        FoldsError: fewer groups than ``k``.
    """
    comp.check_min_class_count(k)
    y = comp.train["target"].to_numpy()
    groups, n_dupes = _group_labels(comp, group_duplicates)
    if groups is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y)
        method = "StratifiedKFold"
    else:
        n_groups = len(np.unique(groups))
        if n_groups < k:
            raise FoldsError(f"{comp.train_csv}: only {n_groups} groups for folds.k={k}; lower folds.k")
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y, groups)
        method = "StratifiedGroupKFold"
    fold = np.full(len(y), -1, dtype=np.int64)
    for f, (_, valid) in enumerate(splits):
        fold[valid] = f
    assert (fold >= 0).all(), "every row is in exactly one validation fold"
    frame = pd.DataFrame({"id": comp.train["id"], "label": comp.train["label"], "fold": fold})
    if groups is not None:
        frame["group"] = comp.train["group"].to_numpy() if "group" in comp.train and not group_duplicates else groups
    meta = {
        "name": name,
        "k": k,
        "seed": seed,
        "method": method,
        "group_col": comp.data.group_col,
        "group_duplicates": group_duplicates,
        "duplicates_merged": n_dupes,
        "train_csv": str(comp.train_csv),
        "train_csv_sha256": comp.train_csv_sha256,
        "classes": list(comp.classes_),
        "rows": int(len(frame)),
        "class_counts": fold_class_counts(frame, comp.classes_),
    }
    return Folds(frame, meta)


def fold_class_counts(frame: pd.DataFrame, classes: list) -> dict[str, dict[str, int]]:
    """``{fold: {class: count}}`` for the validation side of each fold."""
    table = pd.crosstab(frame["fold"], frame["label"]).reindex(columns=classes, fill_value=0)
    return {str(f): {c: int(table.loc[f, c]) for c in classes} for f in table.index}


def folds_paths(name: str, folds_dir: Path = FOLDS_DIR) -> tuple[Path, Path]:
    """The CSV and JSON paths of folds file ``name``."""
    return folds_dir / f"{name}.csv", folds_dir / f"{name}.json"


def write_folds(folds: Folds, folds_dir: Path = FOLDS_DIR, force: bool = False) -> str:
    """Write the CSV and JSON atomically; returns "written" or "unchanged".

    Raises:
        FoldsError: a different folds file of that name exists and ``force`` is off.
    """
    csv_path, json_path = folds_paths(folds.meta["name"], folds_dir)
    csv_text, json_text = folds.csv_text(), folds.json_text()
    if _same_text(csv_path, csv_text) and _same_text(json_path, json_text):
        return "unchanged"
    if (csv_path.exists() or json_path.exists()) and not force:
        raise FoldsError(
            f"{csv_path}: a different folds file exists; pass --force to overwrite it "
            f"(runs trained on it will be refused) or choose another --name"
        )
    atomic_write_text(csv_path, csv_text)
    atomic_write_text(json_path, json_text)
    return "written"


def _same_text(path: Path, text: str) -> bool:
    return path.is_file() and path.read_text() == text


def read_folds(name: str, comp: Competition | None = None, k: int | None = None,
               folds_dir: Path = FOLDS_DIR) -> Folds:
    """Read a folds file and, given a competition, check it was made from that competition.

    Raises:
        FoldsError: missing file, or made from another train.csv, class list, row set or k.
    """
    csv_path, json_path = folds_paths(name, folds_dir)
    if not csv_path.is_file() or not json_path.is_file():
        raise FoldsError(f"{csv_path}: folds file not found; run `comp folds make` first")
    try:
        meta = json.loads(json_path.read_text())
        frame = pd.read_csv(csv_path, dtype={"id": str, "label": str}, keep_default_na=False)
    except (json.JSONDecodeError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise FoldsError(
            f"{csv_path}: unreadable folds file ({str(exc).splitlines()[0]}); remake it with `comp folds make --force`"
        ) from None
    _check_shape(frame, meta, csv_path, json_path)
    folds = Folds(frame, meta)
    if comp is not None:
        check_folds(folds, comp, csv_path)
    if k is not None and folds.k != k:
        raise FoldsError(f"{csv_path}: made with k={folds.k} but folds.k={k}; remake it or set folds.k={folds.k}")
    return folds


def _check_shape(frame: pd.DataFrame, meta: Any, csv_path: Path, json_path: Path) -> None:
    """Refuse a hand-edited folds file before anything trains on it."""
    remake = "remake it with `comp folds make --force`"
    if not isinstance(meta, dict) or not isinstance(meta.get("k"), int) or meta["k"] < 2:
        raise FoldsError(f"{json_path}: not a folds record (a mapping with an integer k >= 2); {remake}")
    for column in ("id", "fold"):
        if column not in frame.columns:
            raise FoldsError(f"{csv_path}: no {column!r} column; {remake}")
    fold = pd.to_numeric(frame["fold"], errors="coerce")
    bad = fold.isna() | (fold != fold.round()) | (fold < 0) | (fold >= meta["k"])
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        value, k = str(frame["fold"].iat[row]), meta["k"]
        raise FoldsError(f"{csv_path}: line {row + 2}: fold {value!r} is not one of 0..{k - 1} (k={k}); {remake}")
    frame["fold"] = fold.astype("int64")


def check_folds(folds: Folds, comp: Competition, csv_path: Path) -> None:
    """Refuse a folds file that does not belong to ``comp``."""
    meta = folds.meta
    if meta.get("train_csv_sha256") != comp.train_csv_sha256:
        raise FoldsError(
            f"{csv_path}: made from another {comp.train_csv.name} (content hash differs); "
            f"remake it with `comp folds make --force`"
        )
    if not same_classes(meta.get("classes", []), comp.classes_):
        raise FoldsError(f"{csv_path}: class list {meta.get('classes')} differs from the competition's {comp.classes_}")
    if list(folds.frame["id"].astype(str)) != list(comp.train["id"].astype(str)):
        raise FoldsError(f"{csv_path}: ids differ from {comp.train_csv}; remake it with `comp folds make --force`")


def folds_hash(name: str, folds_dir: Path = FOLDS_DIR) -> str:
    """Content hash of a folds CSV, recorded by every artifact made from it."""
    return file_sha256(folds_paths(name, folds_dir)[0])[:16]
