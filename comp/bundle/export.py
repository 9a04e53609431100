"""``comp export``: the choices ``comp submit`` makes on the OOF, frozen with the members' weights.

The result is a folder that predicts the test set offline (``comp predict``).

Layout of ``DIR``::

    manifest.json                        format, versions, every file's sha256 (written last)
    plan.json                            classes, sample columns and target kind, TTA views and merge,
                                         blend weights, cut-points, each experiment's config and members
    models/<exp>/<member>.safetensors    weights only (fold0..k-1, full)
    comp-<version>-py3-none-any.whl      comp itself, for pip install --no-index --no-deps
    README.md                            the two notebook lines
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from comp import __version__
from comp.bundle.manifest import FORMAT, MANIFEST, PLAN, manifest_text, package_versions
from comp.bundle.wheel import build_wheel
from comp.config import Config
from comp.errors import BundleError
from comp.io import atomic_write_text, current_umask
from comp.lock import experiment_lock
from comp.runfolder.layout import RUNS_DIR
from comp.submit.make import SubmitPlan, SubmitRequest, plan_submission

if TYPE_CHECKING:
    from comp.predict.inference import InferenceSettings
    from comp.predict.runs import Experiment

PREDICT_ARGS = ("--test-dir /kaggle/input/<competition>/test "
                "--sample /kaggle/input/<competition>/sample_submission.csv --out submission.csv")


@dataclass
class ExportResult:
    """What ``comp export`` wrote."""

    out: Path
    files: int
    bytes: int
    plan: SubmitPlan
    wheel: str
    seconds: float = 0.0


def export_bundle(cfg: Config, request: SubmitRequest, out: Path, settings: InferenceSettings | None = None,
                  runs_dir: Path = RUNS_DIR) -> ExportResult:
    """Make every ``comp submit`` choice on the OOF and write the offline bundle to ``out``.

    The bundle is built in a temp folder beside ``out`` and renamed into place: an earlier bundle at
    ``out`` is replaced only by a complete one.

    Raises:
        BundleError: ``out`` holds something that is not a bundle.
        CompError: What ``comp submit`` would refuse (missing runs, a sample the classes do not fit, ...).
    """
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise BundleError(f"{out}: exists and is not a comp bundle; give an empty or new folder to --out")
    with contextlib.ExitStack() as held:
        for name in dict.fromkeys(request.experiments):
            held.enter_context(experiment_lock(Path(runs_dir) / name, shared=True))
        plan = plan_submission(cfg, request, settings, runs_dir)
        tmp = out.parent / f".{out.name}.export-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            files, wheel = _write_tree(tmp, cfg, plan)
            _swap(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    size = sum((out / f).stat().st_size for f in [*files, MANIFEST])
    return ExportResult(out, len(files) + 1, size, plan, wheel, time.perf_counter() - start)


def _write_tree(tmp: Path, cfg: Config, plan: SubmitPlan) -> tuple[list[str], str]:
    from safetensors.torch import save_file

    files, experiments = [], []
    for exp in plan.prediction.experiments:
        members = []
        for member in exp.members:
            member.build_model()  # refuses NaN weights or weights that do not fit, before anything is written
            name = f"models/{exp.name}/{member.name}.safetensors"
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().contiguous().clone() for k, v in member.state["model"].items()}, tmp / name)
            os.chmod(tmp / name, 0o666 & ~current_umask())  # safetensors writes 0600: a shared dataset must be readable
            members.append({"name": member.name, "file": name, "num_classes": int(member.state["num_classes"]),
                            "in_chans": int(member.state["in_chans"])})
            files.append(name)
        experiments.append({"name": exp.name, "config_hash": exp.config_hash, "config": _frozen_config(exp),
                            "members": members})
    (tmp / PLAN).write_text(json.dumps(_plan_dict(cfg, plan, experiments), indent=2) + "\n", encoding="utf-8")
    wheel = build_wheel(tmp).name
    (tmp / "README.md").write_text(_readme(wheel, plan), encoding="utf-8")
    files += [PLAN, wheel, "README.md"]
    trained = plan.prediction.experiments[0].members[0].state.get("versions") or package_versions()
    atomic_write_text(tmp / MANIFEST, manifest_text(tmp, files, trained))
    return files, wheel


def _frozen_config(exp: Experiment) -> dict:
    """The experiment's config with the normalisation it was trained with written out (not resolved again)."""
    from comp.models.factory import resolve_normalization

    config = json.loads(json.dumps(exp.members[0].state["config"], default=str))
    mean, std = resolve_normalization(exp.config.model, exp.config.augment.mean, exp.config.augment.std)
    config.setdefault("augment", {}).update({"mean": list(mean), "std": list(std)})
    config.setdefault("model", {})["pretrained"] = None  # the weights are in the bundle
    return config


def _plan_dict(cfg: Config, plan: SubmitPlan, experiments: list[dict]) -> dict:
    fmt, cut = plan.fmt, plan.prediction.cut
    return {
        "format": FORMAT,
        "comp_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": list(fmt.classes),
        "sample": {"columns": list(fmt.columns), "id_col": fmt.id_col, "kind": fmt.kind, "reason": fmt.reason,
                   "target": cfg.submit.target,
                   "positive": None if fmt.positive is None else fmt.classes[fmt.positive]},
        "ext": cfg.data.ext,
        "tta": plan.prediction.policy,
        "views": [{"rot": v.rot, "flip": v.flip, "scale": v.scale} for v in plan.prediction.views],
        "merge": plan.prediction.merge,
        "weights": list(plan.prediction.weights),
        "full_weight": cfg.submit.full_weight,
        "ordinal": None if cut is None else {"thresholds": [float(t) for t in cut.thresholds], "kept": cut.kept,
                                             "qwk_oof": cut.qwk_tuned},
        "batch_size": cfg.submit.batch_size,
        "oof": plan.prediction.oof,
        "experiments": experiments,
    }


def _readme(wheel: str, plan: SubmitPlan) -> str:
    chosen = plan.prediction
    names = ", ".join(f"{e.name} ({len(e.members)} models)" for e in chosen.experiments)
    return f"""# comp bundle

{names}; TTA {chosen.policy} ({len(chosen.views)} views), merge {chosen.merge}; writes a {plan.fmt.kind} submission.
Out-of-fold score of these choices: {", ".join(f"{k} {v:.4f}" for k, v in chosen.oof.items())}.

Upload this folder as a Kaggle dataset, add it and the competition to an offline notebook, and run:

```
!pip install --no-index --no-deps /kaggle/input/<this-dataset>/{wheel}
!comp predict /kaggle/input/<this-dataset> {PREDICT_ARGS}
```

`comp predict` checks every file against manifest.json first, needs no training data and no network,
and uses the GPU with mixed precision when the notebook has one (`--device`, `--batch-size` to change).
"""


def _swap(tmp: Path, out: Path) -> None:
    """Put the finished bundle at ``out``; an earlier one there is removed only after the rename."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
