"""Prove our architectures equal to the reference ones, weight for weight, and measure their cost.

For each name the reference is timm's ``resnet*`` or torchvision's ``vgg*_bn``, randomly initialised
(nothing is downloaded). Its state dict is copied into ours with ``strict=True``; then parameter counts,
state-dict keys and shapes, eval-mode logits on a fixed seeded batch, and the time of a training
step (forward + backward) are compared.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from comp.config import ModelConfig
from comp.errors import ModelError
from comp.models.factory import TIMM_PREFIX, check_name, create_model, list_models

TOLERANCE = 1e-5  # max |logit difference| allowed in fp32


@dataclass
class CheckResult:
    """Outcome of :func:`check_model` for one architecture.

    Attributes:
        name: Our architecture name.
        params_ours: Parameters in ours.
        params_ref: Parameters in the reference.
        keys_match: Both state dicts have the same keys.
        shapes_match: Every key has the same shape in both.
        max_abs_diff: Max |logit difference| in eval mode after the copy (``nan`` if it could not load).
        time_ours: Median seconds of one forward + backward of ours.
        time_ref: Median seconds of the same for the reference.
    """

    name: str
    params_ours: int
    params_ref: int
    keys_match: bool
    shapes_match: bool
    max_abs_diff: float
    time_ours: float
    time_ref: float

    @property
    def time_ratio(self) -> float:
        """Ours / reference step time (below 1 is faster)."""
        return self.time_ours / self.time_ref if self.time_ref else math.nan

    @property
    def passed(self) -> bool:
        """Same parameter count, keys and shapes, and logits within :data:`TOLERANCE`."""
        return (self.params_ours == self.params_ref and self.keys_match and self.shapes_match
                and self.max_abs_diff < TOLERANCE)

    def to_dict(self) -> dict[str, object]:
        """Plain dict with the derived ``time_ratio`` and ``passed`` added."""
        return {**asdict(self), "time_ratio": self.time_ratio, "passed": self.passed}


@dataclass
class Complexity:
    """Size and cost of one forward pass of one image.

    Attributes:
        params: Parameter count.
        gmacs: Multiply-accumulates of convolutions and linear layers, in billions.
        gflops: Floating point operations (2 per MAC), in billions.
    """

    params: int
    gmacs: float
    gflops: float


def _refuse(name: str) -> None:
    """Raise a ModelError unless ``name`` is one of ours."""
    if name.startswith(TIMM_PREFIX):
        raise ModelError(f"{name}: the check compares our own architectures with timm; "
                         f"use one of {', '.join(list_models())}")
    check_name(name)


def create_reference(name: str, num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """Build the reference implementation of one of our architectures, randomly initialised.

    Args:
        name: One of :func:`list_models`.
        num_classes: Classifier outputs.
        in_chans: Input channels (torchvision's VGG takes 3 only).

    Returns:
        timm's ``resnet*`` or torchvision's ``vgg*_bn``.

    Raises:
        ModelError: ``name`` is not one of ours (a ``timm:`` model is its own reference).
    """
    _refuse(name)
    if name.startswith("vgg"):
        import torchvision

        if in_chans != 3:
            raise ModelError(f"{name}: torchvision's VGG reference takes 3 input channels, not {in_chans}")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm random affine parameters and running statistics (in place).

    A fresh ResNet zeroes the last BN of each block, which would hide the residual branches from a
    comparison of outputs; random statistics also make eval mode differ from the identity.

    Args:
        model: The model to perturb.
        seed: Seed of the random values.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def time_steps(models: dict[str, nn.Module], x: torch.Tensor, reps: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median time of a training step (forward, backward) per model, interleaved to cancel drift.

    Args:
        models: Label -> model; each is put in train mode.
        x: The input batch (same for all).
        reps: Timed steps per model.
        warmup: Untimed steps per model first.

    Returns:
        Label -> median seconds per step.
    """
    times: dict[str, list[float]] = {label: [] for label in models}
    for m in models.values():
        m.train()
    order = list(models.items())
    for i in range(warmup + reps):
        for label, m in order if i % 2 == 0 else order[::-1]:
            m.zero_grad(set_to_none=True)
            start = time.perf_counter()
            m(x).sum().backward()
            if i >= warmup:
                times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) for label, t in times.items()}


def check_model(name: str, image_size: int = 64, batch_size: int = 8, threads: int = 2, reps: int = 10,
                seed: int = 0) -> CheckResult:
    """Cross-check one of our architectures against its reference.

    Args:
        name: One of :func:`list_models`.
        image_size: Height and width of the test batch.
        batch_size: Images in the test batch.
        threads: ``torch.set_num_threads`` during the check (restored afterwards).
        reps: Timed training steps per model (after 2 warm-up steps).
        seed: Seed of the initialisation and of the batch.

    Returns:
        The :class:`CheckResult`.

    Raises:
        ModelError: ``name`` is not one of ours.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # seeded here; the caller's random state is left alone
            torch.manual_seed(seed)
            ref = create_reference(name)
            randomize_norms(ref, seed)
            dropout = 0.5 if name.startswith("vgg") else 0.0  # torchvision's default: the same work in both steps
            ours = create_model(ModelConfig(name=name, dropout=dropout), num_classes=1000, in_chans=3)
            x = torch.randn(batch_size, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
        ref, ours = ref.to(memory_format=torch.channels_last), ours.to(memory_format=torch.channels_last)
        keys_match, shapes_match, diff = _compare(ours, ref, x)
        times = time_steps({"ours": ours, "ref": ref}, x, reps=reps)
        return CheckResult(name, _count(ours), _count(ref), keys_match, shapes_match, diff, times["ours"], times["ref"])
    finally:
        torch.set_num_threads(previous)


def _compare(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> tuple[bool, bool, float]:
    """Keys equal, shapes equal, and max |logit difference| in eval mode after a strict copy ref -> ours."""
    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    keys_match = set(ref_sd) == set(ours_sd)
    shapes_match = keys_match and all(ref_sd[k].shape == ours_sd[k].shape for k in ref_sd)
    if not shapes_match:
        return keys_match, shapes_match, math.nan
    ours.load_state_dict(ref_sd, strict=True)
    with torch.no_grad():
        return keys_match, shapes_match, (ours.eval()(x) - ref.eval()(x)).abs().max().item()


def check_models(names: list[str], progress: Callable[[str], None] | None = None,
                 **kwargs: Any) -> list[CheckResult]:
    """Run :func:`check_model` for each name, after validating them all.

    Args:
        names: Our architecture names.
        progress: Called with each name before its check (e.g. to print progress).
        **kwargs: Passed on to :func:`check_model`.

    Returns:
        One :class:`CheckResult` per name, in order.

    Raises:
        ModelError: A name is not one of ours; nothing is checked then.
    """
    for name in names:
        _refuse(name)
    results = []
    for name in names:
        if progress is not None:
            progress(name)
        results.append(check_model(name, **kwargs))
    return results


def model_complexity(name: str, image_size: int = 224, in_chans: int = 3, num_classes: int = 1000) -> Complexity:
    """Parameters and FLOPs of one forward pass of one image, counted on the meta device (no memory, no compute).

    Args:
        name: Any ``model.name`` (ours or ``timm:<name>``).
        image_size: Height and width of the image.
        in_chans: Input channels.
        num_classes: Classifier outputs.

    Returns:
        The :class:`Complexity`.

    Raises:
        ModelError: Unknown name.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = create_model(ModelConfig(name=name), num_classes=num_classes, in_chans=in_chans).eval()
        x = torch.empty(1, in_chans, image_size, image_size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    flops = counter.get_total_flops()
    return Complexity(params=_count(model), gmacs=flops / 2e9, gflops=flops / 1e9)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
