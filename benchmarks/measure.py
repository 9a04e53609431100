"""Measuring on any device: timing with device syncs, the device's matmul peak, the model step, memory.

Every timed figure is a list of repetitions summarised by :func:`summarize` (median and spread).
On CUDA each timing is bracketed by ``torch.cuda.synchronize`` (kernels run asynchronously); on the
CPU the work is done when the call returns.
"""

from __future__ import annotations

import math
import re
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from comp.config import ModelConfig, TrainConfig
from comp.device import Runtime
from comp.models.factory import create_model
from comp.train.optim import create_optimizer

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def summarize(values: list[float]) -> dict:
    """Median, min, max, quartiles and the samples of a list of repetitions."""
    ordered = sorted(values)
    q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive") if len(ordered) > 1 else ordered * 3
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "q1": q1, "q3": q3,
            "n": len(ordered), "samples": [round(v, 4) for v in values]}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeat: int = 1) -> float:
    """Seconds per call of ``fn``, over ``repeat`` calls between two device syncs."""
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def calls_per_rep(seconds_per_call: float, min_rep_s: float) -> int:
    """How many calls make one repetition last at least ``min_rep_s`` (fast GPU steps are timed in groups)."""
    return max(1, math.ceil(min_rep_s / max(seconds_per_call, 1e-9)))


# -- the device's peak -------------------------------------------------------------------------
def peak_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (what training runs in there), fp32 elsewhere (a CPU without native bf16 is slow in it)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def measure_peak(device: torch.device, sizes: int | tuple[int, ...], reps: int, min_rep_s: float = 0.2) -> dict:
    """The device's best matmul throughput over several sizes, in GFLOP/s.

    One size alone is not the ceiling (a 2048 product measured 190 GFLOP/s on a CPU whose ResNet18
    step then read 101% "MFU"): each ``n x n`` product is measured and the best median is the peak.

    Args:
        device: Where to multiply.
        sizes: Matrix sides (e.g. 1024, 2048, 3072 on a CPU; 4x on a GPU).
        reps: Timed repetitions per size (after two untimed products).
        min_rep_s: Shortest repetition; fast products are grouped to reach it.

    Returns:
        :func:`summarize` of the GFLOP/s of the best size, plus ``dtype``, ``n`` (that size) and
        ``by_size`` (each size's median).
    """
    by_size = {n: _matmul_rate(device, n, reps, min_rep_s) for n in ((sizes,) if isinstance(sizes, int) else sizes)}
    best = max(by_size, key=lambda n: by_size[n]["median"])
    return {**by_size[best], "n": best, "by_size": {str(n): stat["median"] for n, stat in by_size.items()}}


def _matmul_rate(device: torch.device, n: int, reps: int, min_rep_s: float) -> dict:
    """:func:`summarize` of the GFLOP/s of an ``n x n`` product, plus ``dtype``."""
    dtype = peak_dtype(device)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device, dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    step = lambda: torch.mm(a, b, out=out)  # noqa: E731
    first = min(timed(step, device) for _ in range(2))
    k = calls_per_rep(first, min_rep_s)
    rates = [2 * n**3 / timed(step, device, k) / 1e9 for _ in range(reps)]
    release(device)
    return {**summarize(rates), "dtype": str(dtype).replace("torch.", "")}


_FP32_LANES = (("avx512f", 16), ("avx2", 8), ("avx", 8), ("sse2", 4), ("asimd", 4))  # fp32 per vector register


def theoretical_peak(cores: int, cpuinfo: str | None = None, max_khz: int | None = None) -> dict | None:
    """The CPU's fp32 peak from its vector width and clock: cores x GHz x lanes x 2 (FMA) x 2 FMA units.

    Two FMA units per core is the common case for AVX2/AVX-512 server cores (some parts have one);
    the clock is the maximum boost from cpufreq, else the ``cpu MHz`` of /proc/cpuinfo. None where
    neither flags nor clock can be read.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                      if line.startswith(("flags", "Features"))), []))
    lanes = next((n for flag, n in _FP32_LANES if flag in flags), None)
    if max_khz is None:
        try:
            max_khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        except (OSError, ValueError):
            mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.MULTILINE)
            max_khz = int(float(mhz.group(1)) * 1000) if mhz else None
    if lanes is None or not max_khz:
        return None
    ghz = max_khz / 1e6
    return {"gflops": cores * ghz * lanes * 2 * 2, "cores": cores, "ghz": round(ghz, 3), "fp32_lanes": lanes,
            "fma_units": 2, "basis": "cores x GHz x fp32 lanes x 2 (FMA) x 2 FMA units"}


def train_step_gflop(name: str, image_size: int, num_classes: int) -> float:
    """GFLOP per image of one training step as it computes (forward and backward).

    Counted by ``torch.utils.flop_counter`` on the meta device, with no gradient for the input (the first
    convolution computes only its weight gradient). Replaces the usual "3 x forward".
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = create_model(ModelConfig(name=name), num_classes=num_classes, in_chans=3).train()
        x = torch.empty(2, 3, image_size, image_size)  # 2: batch norm refuses one value per channel in training
        with FlopCounterMode(display=False) as counter:
            model(x).sum().backward()
    return counter.get_total_flops() / 2e9


# -- the model step ----------------------------------------------------------------------------
class TrainStep:
    """One optimiser step of a model on a fixed batch already on the device, as the engine does it.

    Forward under the run's autocast, cross-entropy, backward, and the optimiser comp builds
    (AdamW: fused on CUDA, foreach on the CPU); no data loading, copying or normalising.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, runtime: Runtime):
        self.model = model.to(runtime.device, memory_format=torch.channels_last).train()
        self.optimizer = create_optimizer(self.model, TrainConfig(), runtime.device)
        self.criterion = nn.CrossEntropyLoss()
        self.images, self.labels, self.runtime = images, labels, runtime

    def __call__(self) -> None:
        """Run one step: zero the gradients, forward, loss, backward, optimiser step."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.runtime.autocast():
            loss = self.criterion(self.model(self.images), self.labels)
        loss.backward()
        self.optimizer.step()


def random_batch(batch_size: int, image_size: int, num_classes: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded ``(B, 3, S, S)`` float batch (channels_last) and ``(B,)`` labels on ``device``."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=gen)
    labels = torch.randint(0, num_classes, (batch_size,), generator=gen)
    return images.to(device).contiguous(memory_format=torch.channels_last), labels.to(device)


def build_pair(name: str, num_classes: int) -> dict[str, nn.Module]:
    """Ours and timm's ``name``, with the same weights (timm's copied into ours: same work, same numbers)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ref = create_model(ModelConfig(name=f"timm:{name}"), num_classes, 3)
        ours = create_model(ModelConfig(name=name), num_classes, 3)
    ours.load_state_dict(ref.state_dict())
    return {"ours": ours, "timm": ref}


def time_steps(steps: dict[str, Callable[[], None]], device: torch.device, reps: int, warmup: int,
               min_rep_s: float) -> dict[str, list[float]]:
    """Seconds per step of each labelled step function, repetitions alternated to cancel drift.

    Args:
        steps: Label -> step function.
        device: Where the steps run (synced around each repetition).
        reps: Timed repetitions per step function.
        warmup: Untimed calls per step function first (allocator, cuDNN autotuning, oneDNN primitives);
            the last of them (at least one) also sizes the groups.
        min_rep_s: Shortest repetition; faster steps are timed in groups of several calls.

    Returns:
        Label -> seconds per step, one value per repetition.
    """
    group = {}
    for label, step in steps.items():
        for _ in range(max(0, warmup - 1)):
            step()
        group[label] = calls_per_rep(timed(step, device), min_rep_s)
    times: dict[str, list[float]] = {label: [] for label in steps}
    order = list(steps)
    for i in range(reps):
        for label in order if i % 2 == 0 else order[::-1]:
            times[label].append(timed(steps[label], device, group[label]))
    return times


def measure_model_step(name: str, batch_size: int, image_size: int, num_classes: int, runtime: Runtime,
                       reps: int, warmup: int, min_rep_s: float, peak_gflops: float) -> dict:
    """Training-step images/s of ours and timm's ``name``, their ratio, FLOPs and MFU.

    Args:
        name: One of our ResNets (``resnet18``, ``resnet50``); timm's is ``timm:<name>``.
        batch_size: Images per step.
        image_size: Side of the (square) images.
        num_classes: Classifier outputs.
        runtime: Device and autocast (from ``comp.device.setup_runtime``).
        reps: Timed repetitions per model, alternated between the two.
        warmup: Untimed steps per model first.
        min_rep_s: Shortest repetition (see :func:`time_steps`).
        peak_gflops: The device's measured peak, for the model FLOPs utilisation.

    Returns:
        ``{"ours": stat, "timm": stat, "ratio": stat, "gflop_per_image", "mfu": {"ours", "timm"}}``;
        stats are of images/s; ``ratio`` is ours/timm per pair of repetitions; FLOPs of a training
        step are counted as it computes them (:func:`train_step_gflop`).
    """
    images, labels = random_batch(batch_size, image_size, num_classes, runtime.device)
    steps = {label: TrainStep(model, images, labels, runtime) for label, model in build_pair(name, num_classes).items()}
    seconds = time_steps(steps, runtime.device, reps, warmup, min_rep_s)
    rates = {label: [batch_size / s for s in values] for label, values in seconds.items()}
    gflop = train_step_gflop(name, image_size, num_classes)
    out = {label: summarize(values) for label, values in rates.items()}
    out["ratio"] = summarize([o / t for o, t in zip(rates["ours"], rates["timm"])])  # per pair of reps
    out["gflop_per_image"] = gflop
    out["mfu"] = {label: out[label]["median"] * gflop / peak_gflops for label in rates}
    del steps
    release(runtime.device)
    return out


# -- memory ------------------------------------------------------------------------------------
def release(device: torch.device) -> None:
    """Hand cached CUDA blocks back (so the next figure's peak is its own)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _status_kb(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory of a block of work: CUDA ``max_memory_allocated``, or the process's peak RSS on the CPU.

    On Linux the RSS high-water mark is reset first (``/proc/self/clear_refs``), so the peak is the
    block's own; where that is not possible it is ``ru_maxrss``, the peak since the process started
    (``kind`` says which). DataLoader worker processes are not counted.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"
        self.baseline_mb = 0.0
        self.peak_mb = math.nan

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.init()  # a fresh process (the isolated comp train) has no allocator to reset yet
            release(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        try:
            _CLEAR_REFS.write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            self.kind = "cpu_peak_rss_since_start"
        self.baseline_mb = (_status_kb("VmRSS") or 0) / 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        hwm = _status_kb("VmHWM") if self.kind == "cpu_peak_rss" else None
        self.peak_mb = hwm / 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def to_dict(self) -> dict:
        """The peak, the baseline (MB) and how the peak was measured, for the results JSON."""
        return {"peak_mb": round(self.peak_mb, 1), "baseline_mb": round(self.baseline_mb, 1), "kind": self.kind}
