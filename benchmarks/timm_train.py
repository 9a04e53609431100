"""timm's ``train.py`` on the workload's images, in the same run as ``comp train``: the reference trainer.

timm's pip package does not ship ``train.py``; pass a checkout's (``--timm-train PATH`` or
``COMP_TIMM_TRAIN``). It is run as ``python PATH/train.py``, so Python puts the checkout first on the
path and the script uses the checkout's own ``timm`` package beside it (the versions match).

Fold 0's training and validation images become an ImageFolder tree of symbolic links to the same
files comp reads (``train/<class>/``, ``validation/<class>/``); timm decodes them every epoch, as it
always does. The settings are comp's: the same model, image size, batch size, epochs, AdamW, lr, weight
decay, cosine schedule without warm-up, no label smoothing, no pretrained weights, comp's loader worker
count (at least one: timm's loader keeps its workers alive and refuses 0), channels_last, and on CUDA
the same autocast (``--amp --amp-dtype bfloat16``). The augmentation is a flip, as the bench's
``light`` preset (timm's default RandomResizedCrop is kept, colour jitter is off).

Images/s per epoch are timm's own: the running average of its last ``Train:`` line of each epoch
(samples per update over the mean update time, data loading included, validation not).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.measure import summarize
from comp.competition import load_competition
from comp.config import Config
from comp.folds import read_folds

if TYPE_CHECKING:
    import torch

    from comp.device import Runtime

ENV = "COMP_TIMM_TRAIN"
# "Train: 3 [  12/13 (100%)]  Loss: ...  Time: 0.101s, 1267.33/s  (0.105s, 1219.05/s)  LR: ..."
TRAIN_LINE = re.compile(r"Train:\s*(\d+)\s*\[\s*(\d+)/(\d+)\s*\(\s*\d+%\)\].*?"
                        r"Time:\s*[\d.]+s,\s*[\d.]+/s\s*\(\s*[\d.]+s,\s*([\d.]+)/s\)")


def resolve_script(path: Path | str | None) -> Path | None:
    """The ``train.py`` to run: ``path``, else ``$COMP_TIMM_TRAIN``, else None (not measured).

    Raises:
        SystemExit: The file given does not exist (a one-line message, before any work).
    """
    path = path or os.environ.get(ENV) or None
    if path is None:
        return None
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise SystemExit(f"--timm-train {path}: no such file; pass the train.py of a pytorch-image-models checkout")
    return path


def write_image_folder(cfg: Config, work: Path, fold: int, out: Path) -> dict[str, int]:
    """Fold ``fold``'s split of the workload as ``out/{train,validation}/<class>/<file>`` symbolic links.

    Class folders are ``c00, c01, ...`` in comp's class order, so timm's sorted folders give the same
    class indices. Returns the image count of each split.
    """
    from benchmarks.pipelines import working_dir

    with working_dir(work):
        comp = load_competition(cfg.data)
        assignment = read_folds(cfg.folds.name).frame["fold"].to_numpy()
    counts = {"train": 0, "validation": 0}
    for path, target, held in zip(comp.train["path"], comp.train["target"], assignment == fold):
        split = "validation" if held else "train"
        link = out / split / f"c{int(target):02d}" / Path(path).name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(path).resolve())
        counts[split] += 1
    return counts


def timm_command(script: Path, data_dir: Path, out_dir: Path, cfg: Config, device: torch.device,
                 amp_dtype: torch.dtype | None, num_classes: int, workers: int) -> list[str]:
    """The ``train.py`` command line that trains as ``cfg`` does (see the module docstring)."""
    model = cfg.model.name.removeprefix("timm:")
    cmd = [sys.executable, str(script), "--data-dir", str(data_dir), "--train-split", "train",
           "--val-split", "validation", "--model", model, "--num-classes", str(num_classes),
           "--img-size", str(cfg.data.image_size), "-b", str(cfg.train.batch_size),
           "--epochs", str(cfg.train.epochs), "--opt", "adamw", "--lr", str(cfg.train.lr),
           "--weight-decay", str(cfg.train.weight_decay), "--sched", "cosine", "--warmup-epochs", "0",
           "--smoothing", "0", "--hflip", "0.5", "--color-jitter", "0", "--workers", str(max(1, workers)),
           "--seed", str(cfg.train.seed), "--device", str(device), "--output", str(out_dir),
           "--experiment", "timm-train", "--checkpoint-hist", "1"]
    if cfg.train.channels_last:
        cmd.append("--channels-last")
    if amp_dtype is not None:
        cmd += ["--amp", "--amp-dtype", str(amp_dtype).removeprefix("torch.")]
    if device.type == "cuda":
        cmd.append("--pin-mem")
    return cmd


def parse_epoch_rates(log: str) -> list[float]:
    """Images/s of each completed epoch from timm's log: the running average on its last ``Train:`` line."""
    last: dict[int, tuple[int, int, float]] = {}
    for match in TRAIN_LINE.finditer(log):
        epoch, index, updates, rate = int(match[1]), int(match[2]), int(match[3]), float(match[4])
        last[epoch] = (index, updates, rate)
    return [rate for epoch, (index, updates, rate) in sorted(last.items()) if index + 1 == updates]


def run_timm_train(script: Path, cfg: Config, work: Path, fold: int, runtime: Runtime, workers: int,
                   threads: int) -> dict:
    """Run timm's ``train.py`` on the workload's fold ``fold``; its images/s per epoch.

    Returns:
        ``{"epochs": [img/s...], "first_epoch", "later_epochs": stat, "seconds", "images", "command", "log"}``,
        or ``{"error": ..., "log": ...}`` when it failed or logged no complete epoch (the rest of the
        benchmark goes on).
    """
    import shutil

    base = Path(work).resolve() / "timm-train"
    shutil.rmtree(base, ignore_errors=True)
    counts = write_image_folder(cfg, work, fold, base / "data")
    num_classes = len({p.name for p in (base / "data").glob("*/*")})
    cmd = timm_command(script, base / "data", base / "output", cfg, runtime.device, runtime.amp_dtype, num_classes,
                       workers)
    log_path = base / "train.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NO_ALBUMENTATIONS_UPDATE": "1"}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base).returncode
    seconds = time.perf_counter() - start
    rates = parse_epoch_rates(log_path.read_text(errors="replace"))
    if code != 0 or len(rates) < cfg.train.epochs:
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])[-400:]
        return {"error": f"exit code {code}, {len(rates)} of {cfg.train.epochs} epochs logged: {tail}",
                "log": str(log_path), "command": cmd}
    return {"epochs": rates, "first_epoch": rates[0], "later_epochs": summarize(rates[1:] or rates[:1]),
            "seconds": seconds, "images": counts, "command": cmd, "log": str(log_path)}
