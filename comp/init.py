"""``comp init``: read an unzipped competition folder and write the config that describes it.

Every value is detected from the files (the CSVs, the image folders, a sample of the images) and
written with a comment saying where it came from; what cannot be decided (the order of string
grades, the competition's metric) gets a ``TODO`` line. The config is validated by loading the
competition with it before it is written.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from comp.classes import MISSING_LABELS, default_order, is_numeric
from comp.competition import read_csv
from comp.config import IMAGE_EXTENSIONS
from comp.errors import DataError

ID_NAMES = ("id", "id_code", "image_id", "image", "image_name", "img", "filename", "file", "name")
LABEL_NAMES = ("label", "diagnosis", "target", "class", "category", "level", "grade", "species", "labels")
GROUP_NAMES = ("patient_id", "patient", "subject_id", "subject", "group", "case_id", "study_id")
GRADE_NAMES = ("diagnosis", "level", "grade", "severity", "stage")
PROBE = 200  # ids tried per candidate image folder
SIZE_SAMPLE = 24  # images whose size decides data.image_size


@dataclass
class Detected:
    """What ``comp init`` found: config values plus a comment for each, and the TODO lines."""

    values: dict[str, dict] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    todos: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    declare_classes: bool = False  # write data.classes as a setting, not as a commented-out hint

    def set(self, key: str, value: Any, note: str = "") -> None:
        """Set config ``key`` (``section.name``) to ``value``, with an optional comment ``note``."""
        section, _, name = key.partition(".")
        self.values.setdefault(section, {})[name] = value
        if note:
            self.notes[key] = note


def _find_csv(root: Path, exact: str, pattern: str, what: str) -> str:
    if (root / exact).is_file():
        return exact
    found = sorted(p.name for p in root.glob("*.csv") if re.search(pattern, p.name, re.IGNORECASE))
    if not found:
        raise DataError(f"{root}: no {exact} (nor a CSV whose name matches {pattern!r}); {what}")
    return found[0]


def _pick(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def _image_dirs(root: Path) -> dict[str, set[str]]:
    """Folder (relative, posix) -> file names below it (relative to it), for folders holding images."""
    out: dict[str, set[str]] = {}
    for dirpath, _dirs, files in os.walk(root):
        images = [f for f in files if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS]
        if not images:
            continue
        rel = Path(dirpath).relative_to(root)
        for depth in range(len(rel.parts) + 1):  # credit the folder and each parent (class sub-folders)
            top = Path(*rel.parts[:depth]) if depth else Path(".")
            inner = Path(*rel.parts[depth:])
            out.setdefault(top.as_posix(), set()).update((inner / f).as_posix() for f in images)
    return out


def _best_dir(ids: list[str], dirs: dict[str, set[str]]) -> tuple[str | None, str | None]:
    """(folder whose files match the most ids, the extension they use)."""
    best, best_hits, best_ext = None, 0, None
    probe = ids[:PROBE]
    for folder, files in dirs.items():
        stems: dict[str, str] = {}
        for f in files:
            stem, _, ext = f.rpartition(".")
            stems.setdefault(stem, ext)
            stems.setdefault(f, "")
        hits = [stems[i] for i in probe if i in stems]
        if len(hits) > best_hits or (len(hits) == best_hits and best is not None and len(folder) < len(best)):
            exts = Counter(e for e in hits if e)
            best, best_hits, best_ext = folder, len(hits), exts.most_common(1)[0][0] if exts else None
    return (best, best_ext) if best_hits else (None, None)


def _detect_columns(train: pd.DataFrame, sample: pd.DataFrame, found: Detected) -> tuple[str, str]:
    columns = list(train.columns)
    id_col = sample.columns[0] if sample.columns[0] in columns else _pick(columns, ID_NAMES) or columns[0]
    targets = [c for c in sample.columns if c != sample.columns[0]]
    if len(targets) == 1 and targets[0] in columns and targets[0] != id_col:
        label_col, why = targets[0], "the sample's target column"
    else:
        label_col = _pick([c for c in columns if c != id_col], LABEL_NAMES)
        why = "by its name"
        if label_col is None:
            others = [c for c in columns if c != id_col]
            if not others:
                raise DataError(f"train CSV has only the column {id_col!r}; it needs a label column")
            label_col = min(others, key=lambda c: train[c].nunique())
            why = "the column with the fewest distinct values"
    found.set("data.id_col", id_col, "the sample's first column" if id_col == sample.columns[0] else "by its name")
    found.set("data.label_col", label_col, why)
    group = _pick([c for c in columns if c not in (id_col, label_col)], GROUP_NAMES)
    found.set("data.group_col", group, "rows sharing it stay in one fold" if group else "none found (patient_id, ...)")
    return id_col, label_col


def _detect_images(root: Path, train: pd.DataFrame, id_col: str, sample: pd.DataFrame, found: Detected) -> None:
    dirs = _image_dirs(root)
    path_col = next((c for c in train.columns if c != id_col and train[c].astype(str).str.contains(
        r"\.(?:" + "|".join(IMAGE_EXTENSIONS) + r")$", case=False, regex=True).all()
        and (root / str(train[c].iloc[0])).is_file()), None)
    if path_col:
        found.set("data.path_col", path_col, "holds image paths relative to the folder")
    else:
        train_dir, ext = _best_dir(train[id_col].astype(str).tolist(), dirs)
        if train_dir is None:
            raise DataError(f"{root}: no folder holds images named by the train ids (e.g. "
                            f"{train[id_col].iloc[0]!r}); put them under {root}/train/")
        found.set("data.train_dir", train_dir, f"matches the train ids ({len(dirs[train_dir])} images)")
        if ext:
            found.set("data.ext", ext, "the train images' extension")
    test_dir, _ = _best_dir(sample[sample.columns[0]].astype(str).tolist(), dirs)
    if test_dir is None:
        found.todos.append("no folder holds images named by the sample's ids: set data.test_dir")
        test_dir = "test"
    found.set("data.test_dir", test_dir, "matches the sample's ids")


def _image_paths(root: Path, found: Detected, train: pd.DataFrame) -> list[Path]:
    data = found.values["data"]
    if data.get("path_col"):
        return [root / p for p in train[data["path_col"]].astype(str)[:SIZE_SAMPLE]]
    folder = root / data["train_dir"]
    return sorted(p for p in folder.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)[:SIZE_SAMPLE]


def _detect_size(paths: list[Path], found: Detected) -> None:
    from PIL import Image

    sides, grey = [], True
    for path in paths:
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
                grey &= im.mode in ("L", "I", "I;16", "1")
        except Exception:  # noqa: BLE001 - an unreadable image is comp data check's to report, not init's
            found.todos.append(f"{path}: not readable as an image; replace or remove it")
    side = sorted(sides)[len(sides) // 2] if sides else 224
    size = side if side <= 64 else min(384, max(64, side // 32 * 32), 224 if side >= 224 else 384)
    found.set("data.image_size", int(size), f"median short side of {len(sides)} images: {side} px")
    found.set("data.channels", 1 if grey and sides else 3, "grayscale images" if grey and sides else "colour images")


def _detect_classes(train: pd.DataFrame, label_col: str, found: Detected) -> list[str]:
    labels = train[label_col].fillna("").astype(str).str.strip()
    classes = default_order(labels[labels != ""])
    found.counts = {c: int((labels == c).sum()) for c in classes}
    spelled_missing = [c for c in classes if c.lower() in MISSING_LABELS]
    if spelled_missing:  # declared, so the folder loads; the user decides whether they are classes
        found.set("data.classes", classes, "declared because of the labels below")
        found.declare_classes = True
        found.todos.append(f"labels {', '.join(spelled_missing)} read as missing unless declared; they are declared "
                           f"as classes here: drop those rows and remove them from data.classes if they are not")
    elif is_numeric(classes):
        found.set("data.classes", classes, "numbers: numeric order is the default")
    elif len(classes) == 2:
        found.set("data.classes", classes, "sorted; a binary probability column holds P(second class) "
                                           "unless submit.positive names another")
    else:
        found.set("data.classes", classes, "text sorted alphabetically: uncomment in grade order if they are grades")
        shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        found.todos.append(f"if the classes are ordered grades, declare their order: data.classes: [{shown}] "
                           f"(QWK and --ordinal need it)")
    return classes


def _detect_target(sample_path: Path, classes: list[str], id_col: str, found: Detected) -> str:
    from comp.submit.format import sample_format

    fmt = sample_format(sample_path, classes, id_col)
    found.set("submit.target", "auto", f"detected: {fmt.kind} ({fmt.reason})")
    if fmt.kind == "label" and len(classes) == 2:
        found.todos.append("the sample's one column holds class labels: if the competition scores probabilities "
                           "(AUC, logloss), set submit.target: proba")
    return fmt.kind


def _guess_metric(kind: str, classes: list[str], label_col: str, found: Detected) -> None:
    if kind == "binary":
        metric, why = "auc", "a binary probability column is usually scored by ROC AUC"
    elif kind == "proba":
        metric, why = "logloss", "one probability column per class is usually scored by logloss"
    elif is_numeric(classes) and len(classes) >= 3 and label_col.lower() in GRADE_NAMES:
        metric, why = "qwk", "numbered grades are usually scored by quadratic weighted kappa"
    elif len(classes) == 2:
        metric, why = "f1", "binary labels are often scored by F1"
    else:
        metric, why = "accuracy", "a label column"
    found.set("train.monitor", metric, f"a guess ({why}): set the competition's metric")


def detect(root: Path, name: str) -> Detected:
    """Everything ``comp init`` can tell about the folder ``root``.

    Raises:
        DataError: No train CSV, no sample submission, or no folder with the train images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give the unzipped competition folder")
    found = Detected()
    found.set("name", name)
    found.set("data.root", str(root))
    train_name = _find_csv(root, "train.csv", r"train", "the labels of the training images are needed")
    sample_name = _find_csv(root, "sample_submission.csv", r"sample|submission", "the test ids are needed")
    found.set("data.train_csv", train_name)
    found.set("data.sample_submission", sample_name, "decides the test ids, their order and the target kind")
    train, sample = read_csv(root / train_name, "train CSV"), read_csv(root / sample_name, "sample submission")
    id_col, label_col = _detect_columns(train, sample, found)
    _detect_images(root, train, id_col, sample, found)
    _detect_size(_image_paths(root, found, train), found)
    classes = _detect_classes(train, label_col, found)
    kind = _detect_target(root / sample_name, classes, id_col, found)
    _guess_metric(kind, classes, label_col, found)
    smallest = min(found.counts.values())
    k = max(2, min(5, smallest))
    found.set("folds.name", name)
    found.set("folds.k", k, "5, or fewer when a class is smaller" if k < 5 else "")
    found.set("model.name", "resnet18", "a fast start; resnet50 or timm:<name> later")
    return found


def _yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def render(found: Detected) -> str:
    """The config as YAML text, one comment per detected value and the TODO lines on top."""
    lines = [f"# Written by `comp init {found.values['data']['root']}`: every value was detected; check each comment."]
    lines += [f"# TODO: {todo}" for todo in found.todos]
    counts = ", ".join(f"{c}: {n}" for c, n in list(found.counts.items())[:20])
    lines.append(f"# classes ({len(found.counts)}): {counts}{', ...' if len(found.counts) > 20 else ''}")
    for section, values in found.values.items():
        if not isinstance(values, dict) or "" in values:
            lines.append(f"{section}: {_yaml_value(values[''])}")
            continue
        lines.append(f"{section}:")
        for key, value in values.items():
            note = found.notes.get(f"{section}.{key}", "")
            text = f"  {key}: {_yaml_value(value)}"
            if key == "classes" and not found.declare_classes:  # the order is the user's decision
                text = f"  # classes: {_yaml_value(value)}" if value and len(value) <= 40 else "  # classes: [...]"
            lines.append(text + (f"  # {note}" if note else ""))
    return "\n".join(lines) + "\n"


def init_config(root: Path, name: str, out: Path, force: bool = False) -> tuple[Path, Detected]:
    """Detect ``root``, check that the competition loads with what was found, and write ``out``.

    Raises:
        DataError: The folder cannot be read (see :func:`detect`), or it does not load with the
            detected settings.
        ConfigError: ``out`` exists and ``force`` is not set.
    """
    from comp.competition import load_competition, load_test_table
    from comp.config import build_config
    from comp.errors import ConfigError
    from comp.io import atomic_write_text

    if Path(out).exists() and not force:
        raise ConfigError(f"{out}: already exists; pass --force to replace it, or --name another experiment")
    found = detect(root, name)
    text = render(found)
    import yaml

    cfg = build_config(yaml.safe_load(text), str(out))
    comp = load_competition(cfg.data)
    load_test_table(comp.root, cfg.data)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(Path(out), text), found
