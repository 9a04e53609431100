"""``python -m benchmarks.augment_speed [THREADS] [DEVICE]``: on-device augmentation vs albumentations, per preset.

The preset as tensor ops (:mod:`comp.data.batch_augment`) on a uint8 channels_last batch of 128 at
224 px, in ms per batch, against the albumentations pipeline on one 258 px cached image (1.15 x 224)
in ms per image, with all its transforms and with the crop alone (what the loader keeps doing when
``augment.on_device`` is on). Random pixels: the cost does not depend on them.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from comp.config import AugmentConfig
from comp.data.augment import build_transforms
from comp.data.batch_augment import create_batch_augment


def median_ms(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in ms after one warm-up call (the device synchronised around each)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def measure_preset(preset: str, batch: torch.Tensor, cached: np.ndarray) -> tuple[float, float, float]:
    """(ms per batch on the device, ms per image with albumentations, ms per image of the crop alone)."""
    aug = AugmentConfig(preset=preset, on_device=True)
    on_device = create_batch_augment(aug, batch.device, seed=0)
    steps = iter(range(10**9))
    device_ms = median_ms(lambda: on_device(batch, 0, next(steps)), 5, batch.device)
    full, crop = build_transforms(aug, True, 224), build_transforms(aug, True, 224, crop_only=True)
    full_ms = median_ms(lambda: [full(image=cached) for _ in range(128)], 3, torch.device("cpu")) / 128
    crop_ms = median_ms(lambda: [crop(image=cached) for _ in range(128)], 3, torch.device("cpu")) / 128
    return device_ms, full_ms, crop_ms


def main(argv: list[str]) -> None:
    """Print the timings; ``argv``: ``[THREADS] [DEVICE]`` (default: torch's threads, the CPU)."""
    threads = int(argv[0]) if argv else torch.get_num_threads()
    device = torch.device(argv[1] if len(argv) > 1 else "cpu")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    cached = rng.integers(0, 256, (258, 258, 3), dtype=np.uint8)  # (H, W, C)
    batch = torch.from_numpy(rng.integers(0, 256, (128, 3, 224, 224), dtype=np.uint8)).to(device)
    batch = batch.contiguous(memory_format=torch.channels_last)  # (B, C, H, W)
    for preset in ("light", "medium", "fundus", "cells"):
        device_ms, full_ms, crop_ms = measure_preset(preset, batch, cached)
        print(f"{preset:7s} on {device} ({threads} threads): {device_ms:7.1f} ms per batch of 128 | "
              f"albumentations, one core: {full_ms:.3f} ms per image, crop only {crop_ms:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
