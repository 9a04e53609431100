"""``comp predict``: an exported bundle + the test images + the sample submission -> the submission.

Needs no ``runs/``, no training data, no network; imports neither optuna nor matplotlib. The test pass
is :func:`comp.predict.experiment.predict_blend`, the one ``comp submit`` uses, under the frozen views,
merge, weights and cut-points, so both write the same file from the same images on the same device.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from comp.bundle.manifest import PLAN, read_manifest, verify_files
from comp.config import Config
from comp.errors import BundleError, CompError
from comp.io import atomic_write_text

if TYPE_CHECKING:
    from comp.submit.format import SampleFormat


@dataclass
class BundleExperiment:
    """One experiment of a bundle, shaped like :class:`comp.predict.runs.Experiment` for prediction."""

    name: str
    members: list
    config: Config
    classes: list[str]

    @property
    def image_size(self) -> int:
        """The input size the members were trained at (``data.image_size``)."""
        return self.config.data.image_size


@dataclass
class PredictResult:
    """What ``comp predict`` wrote."""

    out: Path
    rows: int
    kind: str
    models: int
    views: int
    seconds: float
    files_checked: int


def load_plan(root: Path) -> tuple[dict, int]:
    """The bundle's plan after its manifest and every file's checksum are verified; (plan, files checked)."""
    manifest = read_manifest(root)
    checked = verify_files(root, manifest)
    try:
        return json.loads((Path(root) / PLAN).read_text(encoding="utf-8")), checked
    except (OSError, ValueError):
        raise BundleError(f"{Path(root) / PLAN}: missing or unreadable; export the bundle again") from None


def _experiments(root: Path, plan: dict) -> list[BundleExperiment]:
    from safetensors.torch import load_file

    from comp.predict.runs import Member, with_legacy_cache

    out = []
    for entry in plan["experiments"]:
        config = Config.model_validate(with_legacy_cache(entry["config"]))  # a bundle from before the margin
        members = [Member(m["name"], Path(root) / m["file"],
                          {"model": load_file(Path(root) / m["file"]), "config": entry["config"],
                           "num_classes": m["num_classes"], "in_chans": m["in_chans"]})
                   for m in entry["members"]]
        out.append(BundleExperiment(entry["name"], members, config, list(plan["classes"])))
    return out


def _sample(plan: dict, sample: Path) -> SampleFormat:
    """The sample's format, refused unless its columns and target kind are those the bundle was made for."""
    from comp.submit.format import sample_format

    want = plan["sample"]
    fmt = sample_format(Path(sample), plan["classes"], want["id_col"], want["target"], want["positive"])
    if list(fmt.columns) != want["columns"]:
        raise BundleError(f"{sample}: columns {', '.join(fmt.columns)} but the bundle was exported for "
                          f"{', '.join(want['columns'])}; give this competition's sample_submission.csv or export "
                          f"again with it")
    if fmt.kind != want["kind"]:
        raise BundleError(f"{sample}: reads as a {fmt.kind} submission ({fmt.reason}) but the bundle writes "
                          f"{want['kind']} ({want['reason']}); export again with this sample")
    return fmt


def _test_paths(fmt: SampleFormat, test_dir: Path, ext: str | None, sample: Path) -> list[Path]:
    from comp.competition import resolve_images

    try:
        return resolve_images(pd.Series(fmt.ids, dtype=str), Path(test_dir), ext, Path(sample), "--test-dir")
    except CompError as exc:
        raise BundleError(str(exc)) from None


def predict_bundle(root: Path, test_dir: Path, sample: Path, out: Path, device: str = "auto", amp: str = "auto",
                   batch_size: int | None = None, num_workers: int | str = "auto", cache_dir: Path | None = None,
                   log: Callable[[str], None] = print) -> PredictResult:
    """Predict the test images of ``sample`` with the bundle at ``root`` and write the submission to ``out``.

    Args:
        root: The folder ``comp export`` wrote.
        test_dir: The test images (named by the sample's ids, with or without an extension).
        sample: The competition's sample submission (its ids, in order, and its columns).
        out: The submission file to write (atomically; validated first).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: Mixed precision on CUDA (``auto``, ``bf16``, ``fp16``, ``off``).
        batch_size: Images per batch; None: the exported ``submit.batch_size``.
        num_workers: DataLoader workers (``auto`` or a count).
        cache_dir: Where decoded test images are cached (default: a temp folder removed afterwards).
        log: Progress lines.

    Raises:
        BundleError: An altered, incomplete or other-format bundle, a sample with other columns, or test
            images missing for the sample's ids.
    """
    from comp.predict.experiment import predict_blend
    from comp.predict.inference import resolve_settings
    from comp.predict.ordinal import apply_cutpoints, expected_grade
    from comp.predict.plan import check_finite
    from comp.predict.tta import View
    from comp.submit.format import build_submission, to_csv_text
    from comp.submit.validate import validate_text

    start = time.perf_counter()
    plan, checked = load_plan(root)
    fmt = _sample(plan, sample)
    paths = _test_paths(fmt, test_dir, plan["ext"], sample)
    experiments = _experiments(root, plan)
    settings = resolve_settings(device, amp, batch_size or plan["batch_size"], num_workers)
    views = [View(v["rot"], v["flip"], v["scale"]) for v in plan["views"]]
    models = sum(len(e.members) for e in experiments)
    log(f"{root}: {checked} files verified; {models} models x {len(views)} views ({plan['tta']}), merge "
        f"{plan['merge']}, on {len(paths)} images ({settings.device})")
    with contextlib.ExitStack() as stack:
        cache = cache_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="comp-predict-"))
        probs = predict_blend(experiments, paths, views, plan["merge"], plan["weights"], settings, Path(cache),
                              plan["full_weight"])
    ids = [str(i) for i in fmt.ids]
    check_finite(probs, ids, "test")
    cut = plan["ordinal"]
    labels = None if cut is None else apply_cutpoints(expected_grade(probs), cut["thresholds"])
    text = to_csv_text(build_submission(fmt, ids, probs, labels))
    validate_text(text, fmt, f"{out} (not written)")
    atomic_write_text(Path(out), text)
    seconds = time.perf_counter() - start
    return PredictResult(Path(out), len(ids), fmt.kind, models, len(views), seconds, checked)
