"""The CUDA paths: AMP (bf16, fp16 with its scaler), pinned memory and non-blocking copies, fused
optimisers, checkpoints that move between devices, TTA on the GPU, and the CUDA benchmark.

Skipped without a CUDA device; run with ``pytest -m gpu`` on a machine that has one.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from comp.cli import main
from comp.config import load_config
from comp.data import create_loader, normalize_batch, to_device
from comp.device import resolve_amp
from comp.runfolder.checkpoint import load_checkpoint
from comp.train.optim import create_optimizer
from comp.train.runner import run_training

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")


def quiet(_line: str) -> None:
    pass


def tensors_of(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for value in state.values() for t in tensors_of(value)]
    if isinstance(state, list | tuple):
        return [t for value in state for t in tensors_of(value)]
    return []


@pytest.mark.parametrize("amp", ["auto", "bf16", "fp16", "off"])
def test_training_on_cuda_with_each_precision(tiny_project, amp):
    project = tiny_project(augment={"preset": "light"})
    cfg = load_config(project["config"](train={"device": "cuda", "amp": amp, "epochs": 2, "grad_clip": 1.0}))
    run_training(cfg, folds=[0], log=quiet)
    run = project["dir"] / "runs/exp/fold0"
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2 and np.isfinite(history["train_loss"]).all() and np.isfinite(history["valid_loss"]).all()
    last = load_checkpoint(run / "last.pt")  # written from the GPU, read on the CPU
    assert all(t.device.type == "cpu" for t in tensors_of(last))
    if amp == "fp16":  # the scaler is live and saved for --resume
        assert last["scaler"]["scale"] > 0 and last["scaler"]["_growth_tracker"] >= 0
    else:
        assert not last["scaler"]  # bf16 and fp32 need no scaler
    oof = pd.read_csv(run / "oof.csv")
    assert np.allclose(oof.filter(like="prob_").sum(axis=1), 1.0, atol=1e-4)


def test_auto_precision_is_bf16_where_supported():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert resolve_amp("auto", CUDA) is expected
    assert resolve_amp("auto", torch.device("cpu")) is None


def test_cuda_resume_after_an_interrupted_epoch(tiny_project, monkeypatch):
    """Stop a CUDA run during epoch 3 of 3, resume it: epochs 1-2 come from last.pt, epoch 3 is trained again."""
    import comp.train.fold as fold_module

    project = tiny_project()
    cfg = load_config(project["config"](train={"device": "cuda", "epochs": 3, "amp": "fp16"}))
    real = fold_module.train_one_epoch

    def dies_in_epoch_3(model, loader, epoch, ctx, batches=None):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(model, loader, epoch, ctx, batches)

    monkeypatch.setattr(fold_module, "train_one_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, folds=[0], log=quiet)
    run = project["dir"] / "runs/exp/fold0"
    interrupted = load_checkpoint(run / "last.pt")
    assert interrupted["epoch"] == 2 and not (run / "history.csv").exists()

    monkeypatch.setattr(fold_module, "train_one_epoch", real)
    lines: list[str] = []
    run_training(cfg, folds=[0], resume=True, log=lines.append)
    assert any("resuming after epoch 2" in line for line in lines)
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3] and np.isfinite(history["train_loss"]).all()
    assert history["train_loss"].iloc[:2].tolist() == pytest.approx([r["train_loss"] for r in interrupted["history"]])
    assert load_checkpoint(run / "last.pt")["scaler"]["scale"] > 0


def test_loader_pins_memory_and_copies_without_blocking(make_competition):
    from comp.data import ImageCache, ImageDataset

    root = make_competition(counts={"a": 4, "b": 4})
    paths = sorted((root / "train").glob("*.png"))
    dataset = ImageDataset(paths, np.arange(len(paths)) % 2, ImageCache(root / "cache", 16, 3), None)
    loader = create_loader(dataset, 4, device=CUDA)
    images, labels = next(iter(loader))
    assert images.is_pinned() and labels.is_pinned()
    on_gpu, labels_gpu = to_device((images, labels), CUDA, channels_last=True)
    assert on_gpu.device.type == "cuda" and on_gpu.is_contiguous(memory_format=torch.channels_last)
    torch.cuda.synchronize()
    assert torch.equal(on_gpu.cpu(), images) and torch.equal(labels_gpu.cpu(), labels)


def test_normalize_on_cuda_matches_cpu():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cpu = normalize_batch(x, mean, std)
    gpu = normalize_batch(x.to(CUDA), mean, std)
    assert gpu.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)


def test_optimizers_are_fused_on_cuda():
    from comp.config import TrainConfig

    model = torch.nn.Linear(4, 2).to(CUDA)
    for name in ("adamw", "adam", "sgd"):
        optimizer = create_optimizer(model, TrainConfig(optimizer=name), CUDA)
        assert optimizer.defaults.get("fused") is True, name


def test_submit_on_cuda_matches_cpu(tiny_project):
    """A model trained on the GPU predicts the same on the GPU (bf16 autocast, d4 TTA) as on the CPU (fp32)."""
    project = tiny_project()
    path = project["config"](train={"device": "cuda", "epochs": 1}, folds={"k": 3})
    assert CliRunner().invoke(main, ["train", "--config", str(path), "--fold", "all", "--no-report"]).exit_code == 0
    probs = {}
    for device in ("cuda", "cpu"):
        result = CliRunner().invoke(main, ["submit", "--config", str(path), "--tta", "d4", "--set",
                                           f"train.device={device}"])
        assert result.exit_code == 0, result.output
        frames = sorted((project["dir"] / "submissions").glob("*-probs.csv"))
        assert len(frames) == 1
        probs[device] = pd.read_csv(frames[0]).filter(like="prob").to_numpy()
        frames[0].rename(frames[0].with_name(f"{device}.probs"))
        for written in (project["dir"] / "submissions").glob("exp*"):
            written.unlink()
    assert probs["cuda"].shape == probs["cpu"].shape
    assert np.abs(probs["cuda"] - probs["cpu"]).max() < 0.02  # bf16 autocast against fp32


@pytest.mark.slow
def test_benchmark_quick_on_cuda(tmp_path, monkeypatch):
    import benchmarks.__main__ as bench

    out = tmp_path / "bench.json"
    args = bench.parse_args(["--quick", "--models", "resnet18", "--batch-size", "8", "--image-size", "32",
                             "--device", "cuda", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    bench.run(args, log=quiet)
    saved = json.loads(out.read_text())
    assert saved["meta"]["device"].startswith("cuda") and saved["peak"]["dtype"] == "bfloat16"
    assert saved["model_step"]["resnet18"]["mfu"]["ours"] > 0
    for figures in saved["workloads"].values():
        assert figures["train"]["memory"]["peak_mb"] > 0 and figures["inference"]["tta_ratio"] > 0
