"""Where training runs: device choice, mixed precision, threads, and the distributed (torchrun) set-up."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from comp.config import TrainConfig
from comp.errors import TrainError


@dataclass
class Runtime:
    """The device and precision a run uses, and its place in a distributed job."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: full fp32
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (the one that writes files and logs)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains (DDP)."""
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """An autocast context for the run's mixed precision, or a null context without it."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler that is active only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA, then MPS, then CPU; or an explicit ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""
    if setting == "auto":
        if torch.cuda.is_available():
            return _cuda_for_rank(local_rank, setting)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise TrainError(f"train.device: {setting!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("train.device: cuda requested but no CUDA device is available; use train.device=auto")
    if device.type == "cuda":
        device = _cuda_for_rank(local_rank, setting) if device.index is None else _cuda_index(device.index, setting)
    return device


def _cuda_for_rank(local_rank: int, setting: str) -> torch.device:
    """GPU ``local_rank``: torchrun starts one process per GPU, so a rank past the last GPU is a launch error."""
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise TrainError(
            f"train.device={setting}: process with LOCAL_RANK {local_rank} has no GPU of its own (this machine has "
            f"{count}); start torchrun with --nproc-per-node {count}, or set train.device=cpu to train on CPU processes"
        )
    return torch.device("cuda", local_rank)


def _cuda_index(index: int, setting: str) -> torch.device:
    """An explicit ``cuda:N``, refused by name when the machine has no GPU N (CUDA would fail later, deep inside)."""
    count = torch.cuda.device_count()
    if index >= count:
        raise TrainError(f"train.device={setting}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}; "
                         f"use one of those or train.device=auto")
    return torch.device("cuda", index)


def resolve_amp(setting: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision only where it is fast: on CUDA bf16 if supported else fp16; fp32 elsewhere by default.

    On a CPU without native bf16 a bf16 matmul is far slower than fp32, so ``auto`` keeps fp32 there.
    """
    if setting == "off":
        return None
    if setting == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if setting == "bf16" else torch.float16


def resolve_threads(setting: int | str | None, workers: int = 0) -> int | None:
    """Intra-op threads for ``train.threads``: a count as is; None leaves torch's default.

    ``"auto"``: the usable cores less one per DataLoader worker process (at least 1), so the
    workers and the model step do not fight over the same cores; but None (torch's default, which
    reads it) where ``OMP_NUM_THREADS`` is set: the user or the launcher (torchrun) chose already.
    """
    if setting is None or isinstance(setting, int):
        return setting
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    from comp.data.prebuild import usable_cores

    return max(1, usable_cores() - max(0, workers))


def setup_runtime(cfg: TrainConfig, workers: int = 0) -> Runtime:
    """Pick the device, precision and intra-op threads; join the process group under torchrun.

    ``workers`` is the run's number of DataLoader processes; the threads leave them a core each.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    threads = resolve_threads(cfg.threads, workers)
    if threads:
        torch.set_num_threads(threads)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, resolve_amp(cfg.amp, device), rank, world, local_rank)


def barrier(runtime: Runtime) -> None:
    """Wait for every rank; nothing outside DDP."""
    if runtime.distributed:
        dist.barrier()


def broadcast_from_main(tensors: Iterable[torch.Tensor], runtime: Runtime) -> None:
    """Overwrite ``tensors`` (in place) on every rank with rank 0's values; nothing outside DDP.

    Before validation: DDP keeps the weights equal, but each rank's BatchNorm statistics (and an EMA of
    them) followed its own batches, so ranks would validate different models, none of them ``best.pt``.
    """
    if runtime.distributed:
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


def teardown(runtime: Runtime) -> None:
    """Destroy the process group, if this run started one."""
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
