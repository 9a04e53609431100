"""Whole pipelines on a workload: ``comp train`` end to end, the plain PyTorch loop, inference with TTA.

Every pipeline uses the same model, batch size, image size, threads, device, autocast and memory
format, so the differences between them are the data pipeline's.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.measure import PeakMemory, release, summarize, sync
from comp.competition import load_competition
from comp.config import AugmentConfig, Config, DataConfig, FoldsConfig, ModelConfig, SubmitConfig, TrainConfig
from comp.device import Runtime
from comp.folds import make_folds, read_folds, write_folds
from comp.models.factory import create_model, resolve_normalization
from comp.predict.experiment import predict_test
from comp.predict.inference import resolve_settings
from comp.predict.runs import Experiment, Member
from comp.predict.tta import parse_tta
from comp.runfolder.checkpoint import load_checkpoint
from comp.train.optim import create_optimizer
from comp.train.runner import run_training

FOLD = 0  # the one fold trained (k=5: 80% of the images train, 20% validate)


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Run in ``path``: comp writes ``folds/`` and ``runs/`` relative to the working directory."""
    previous = os.getcwd()
    Path(path).mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def bench_config(name: str, root: Path, work: Path, model: str, image_size: int, batch_size: int, epochs: int,
                 threads: int, device: str, compile: bool = False, preset: str = "light",
                 on_device: bool = False) -> Config:
    """The experiment config of workload ``name``.

    ``preset`` augmentation (light: a flip; on the device with ``on_device``), AdamW, cosine, fp32/bf16 auto.
    """
    return Config(
        name=f"bench-{name}",
        data=DataConfig(root=Path(root).resolve(), image_size=image_size, cache_dir=Path(work).resolve() / "cache"),
        folds=FoldsConfig(name=f"bench-{name}", k=5),
        model=ModelConfig(name=model),
        augment=AugmentConfig(preset=preset, on_device=on_device),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, threads=threads, device=device, compile=compile),
        submit=SubmitConfig(batch_size=max(64, batch_size)),
    )


def _quiet(_line: str) -> None:
    pass


def run_comp_train(cfg: Config, work: Path) -> dict:
    """``comp train`` of one fold from an empty image cache; images/s per epoch from ``history.csv``.

    Run it through :func:`run_comp_train_isolated`, so that its peak memory is its own.

    Returns:
        ``{"epochs": [img/s...], "first_epoch": img/s, "later_epochs": stat, "seconds": [...],
        "cache_seconds": s, "train_images": n, "memory": PeakMemory dict}``. ``first_epoch`` is the
        first pass from an empty cache: the training images over epoch 1 plus their share of the cache
        build that comp runs before it (older comps decoded inside epoch 1: ``cache_seconds`` 0).
    """
    from comp.device import resolve_device

    shutil.rmtree(cfg.data.cache_dir, ignore_errors=True)
    with working_dir(work):
        comp = load_competition(cfg.data)
        write_folds(make_folds(comp, cfg.folds.k, cfg.folds.seed, cfg.folds.name), force=True)
        with PeakMemory(resolve_device(cfg.train.device)) as memory:
            summary = run_training(cfg, folds=[FOLD], log=_quiet)
        history = pd.read_csv(cfg.run_dir / f"fold{FOLD}" / "history.csv")
        labels = read_folds(cfg.folds.name).frame["fold"]
        train_images = int((labels != FOLD).sum())
    rates = history["images_per_s"].tolist()
    built = getattr(summary, "cache", None)
    cache_seconds = built.seconds * train_images / len(labels) if built is not None else 0.0
    return {"epochs": rates, "first_epoch": train_images / (cache_seconds + train_images / rates[0]),
            "later_epochs": summarize(rates[1:] or rates[:1]), "seconds": history["seconds"].tolist(),
            "cache_seconds": cache_seconds, "train_images": train_images, "memory": memory.to_dict()}


def run_comp_train_isolated(cfg: Config, work: Path) -> dict:
    """:func:`run_comp_train` in a fresh (spawned) process.

    The benchmark's own process keeps the memory of everything measured before (the allocator does
    not give it back), which would hide the training's peak; a fresh process also starts as
    ``comp train`` does.
    """
    context = multiprocessing.get_context("spawn")  # fork is unsafe after torch (OpenMP, CUDA) started
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_comp_train, cfg, Path(work)).result()


# -- the plain loop ----------------------------------------------------------------------------
class PlainDataset(Dataset):
    """The Dataset of course and blog code: PIL decodes the file on every access."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Callable[[Image.Image], torch.Tensor]):
        self.paths, self.labels, self.transform = list(paths), [int(v) for v in labels], transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.open(self.paths[index]).convert("RGB")
        return self.transform(image), self.labels[index]


def plain_transform(image_size: int, mean: Sequence[float],
                    std: Sequence[float]) -> Callable[[Image.Image], torch.Tensor]:
    """Resize (squashed to a square, as comp does, so batches stack), flip, ToTensor, Normalize."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((image_size, image_size)), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean, std)])


def run_plain_loop(cfg: Config, work: Path, runtime: Runtime, num_workers: int, epochs: int) -> dict:
    """The plain loop on fold 0's training images: a default DataLoader (shuffle), step, ``loss.item()``.

    The model side matches comp's step (channels_last, comp's optimiser, the run's autocast), so the
    difference is the data pipeline. The model is warmed up on a random batch first; each timed epoch
    includes starting its worker processes, as a default (non-persistent) DataLoader does every epoch.

    Returns:
        :func:`summarize` of images/s per epoch.
    """
    with working_dir(work):
        comp = load_competition(cfg.data)
        fold = read_folds(cfg.folds.name).frame["fold"].to_numpy()
    rows = comp.train[fold != FOLD]
    mean, std = resolve_normalization(cfg.model, cfg.augment.mean, cfg.augment.std)
    dataset = PlainDataset(rows["path"], rows["target"], plain_transform(cfg.data.image_size, mean, std))
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True, num_workers=num_workers)
    device = runtime.device
    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model, comp.num_classes, 3).to(device, memory_format=torch.channels_last).train()
    optimizer = create_optimizer(model, cfg.train, device)
    criterion = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad()
        with runtime.autocast():
            loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    size = cfg.data.image_size
    for _ in range(2):  # warm-up on a random batch
        step(torch.randn(cfg.train.batch_size, 3, size, size, device=device).contiguous(
            memory_format=torch.channels_last), torch.zeros(cfg.train.batch_size, dtype=torch.long, device=device))
    rates = []
    for _ in range(epochs):
        sync(device)
        start, seen, running = time.perf_counter(), 0, 0.0
        for x, y in loader:
            running += step(x.to(device, memory_format=torch.channels_last), y.to(device))
            seen += len(y)
        sync(device)
        rates.append(seen / (time.perf_counter() - start))
    release(device)
    return summarize(rates)


# -- inference ---------------------------------------------------------------------------------
def load_bench_experiment(cfg: Config, work: Path) -> Experiment:
    """The trained fold as an experiment of one member (``load_experiment`` wants every fold trained)."""
    with working_dir(work):
        path = (cfg.run_dir / f"fold{FOLD}" / "best.pt").resolve()
        state = load_checkpoint(path)
        folds = read_folds(cfg.folds.name)
    return Experiment(cfg.name, path.parent.parent, [Member(f"fold{FOLD}", path, state)],
                      Config.model_validate(state["config"]), list(state["classes"]), state.get("config_hash"), folds)


def run_inference(cfg: Config, work: Path, runtime: Runtime, reps: int) -> dict:
    """Test-set images/s through ``comp.predict.experiment.predict_test``, with no TTA and with ``d4``.

    One untimed pass first builds the test images' cache, so the figures are of cached images (as in
    ``comp submit`` after the first policy). Repetitions alternate between the two policies.

    Returns:
        ``{"none": stat, "d4": stat, "tta_ratio": d4 seconds / none seconds (medians), "images": n}``.
    """
    exp = load_bench_experiment(cfg, work)
    with working_dir(work):
        paths = list(load_competition(cfg.data).test_table()["path"])
    settings = resolve_settings(cfg.train.device, cfg.train.amp, cfg.submit.batch_size, cfg.data.num_workers,
                                cfg.train.channels_last)
    policies = {"none": parse_tta("none"), "d4": parse_tta("d4")}

    def predict(policy: str) -> float:
        start = time.perf_counter()
        predict_test(exp, paths, policies[policy], cfg.submit.merge, settings, cfg.data.cache_dir)
        return time.perf_counter() - start  # predict_test returns host arrays: the device is done

    predict("none")
    seconds: dict[str, list[float]] = {"none": [], "d4": []}
    order = list(policies)
    for i in range(reps):
        for policy in order if i % 2 == 0 else order[::-1]:
            seconds[policy].append(predict(policy))
    release(runtime.device)
    out = {policy: summarize([len(paths) / s for s in values]) for policy, values in seconds.items()}
    out["tta_ratio"] = out["none"]["median"] / out["d4"]["median"]
    out["images"] = len(paths)
    return out
