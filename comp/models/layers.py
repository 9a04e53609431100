"""Small building blocks shared by our architectures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from comp.errors import ModelError

if TYPE_CHECKING:
    import torch

ACTIVATIONS = ("relu", "leaky_relu", "silu", "gelu")


def create_act(name: str, inplace: bool = True) -> nn.Module:
    """Build an activation module by name, in-place where the op supports it.

    In-place is safe where our blocks use it: after a BatchNorm (whose backward needs its input, not
    its output) and after the residual sum. GELU has no in-place kernel and ignores ``inplace``.

    Args:
        name: One of :data:`ACTIVATIONS` (``relu``, ``leaky_relu``, ``silu``, ``gelu``).
        inplace: Overwrite the input tensor instead of allocating a new one.

    Returns:
        The activation module.

    Raises:
        ModelError: ``name`` is not a known activation.
    """
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=inplace)  # timm's and PyTorch's default slope
    if name == "silu":
        return nn.SiLU(inplace=inplace)
    if name == "gelu":
        return nn.GELU()
    raise ModelError(f"activation {name!r} is unknown; use one of {', '.join(ACTIVATIONS)}")


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): zero a residual branch per sample with probability ``p``.

    The kept branches are scaled by ``1 / (1 - p)`` so the expected output is unchanged; identity in eval.
    No parameters, so a model with and without it share one state dict (timm's ``DropPath`` does the same).
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero whole samples of ``x`` with probability ``p`` and rescale the rest (training only)."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1, 1)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        """The drop probability, for the module's repr."""
        return f"p={self.p}"
