"""The regression head (``model.head: regress``): one output, the grade, and its two-hot form for prediction.

The network ends in one output, trained with SmoothL1 on the class index (:class:`comp.train.mixing.GradeLoss`).
In eval mode :class:`GradeHead` returns, instead of the grade ``g``, the logarithm of its *two-hot* row: weight
``1 - (g - floor g)`` on ``floor g`` and ``g - floor g`` on the next class (``g`` clipped to ``[0, K - 1]``).
That row is a distribution whose expected grade is ``g`` and whose argmax is the nearest grade, and it is
linear in ``g``: the mean of the rows of several views or folds is the row of their mean grade. So the
whole prediction chain (validation metrics, OOF files, TTA and fold averaging with ``merge: mean``, QWK
cut-points tuned out of fold on the expected grade, ``comp export``) carries the continuous grade unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

LOG_FLOOR = -30.0  # log of an empty class: exp(-30) ~ 1e-13, far below what a float32 softmax row can tell apart


def two_hot(grade: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B,)`` grades -> ``(B, K)`` rows with expected grade ``clip(grade, 0, K - 1)``."""
    g = grade.float().clamp(0, num_classes - 1)
    low = g.floor().clamp(max=num_classes - 2) if num_classes > 1 else g.floor()
    frac = g - low
    rows = torch.zeros(len(g), num_classes, device=g.device)
    rows.scatter_(1, low.long()[:, None], (1 - frac)[:, None])
    if num_classes > 1:
        rows.scatter_add_(1, (low.long() + 1)[:, None], frac[:, None])
    return rows


class GradeHead(nn.Module):
    """A one-output network seen as a K-class model: the grade when training, log two-hot rows in eval mode.

    Args:
        net: The network, ending in one output.
        num_classes: K, the number of ordered classes.
    """

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net = net
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The grade (B, 1) in training; in eval, log two-hot probabilities (B, K) around it."""
        grade = self.net(x)  # (B, 1)
        if self.training:
            return grade
        return two_hot(grade.float().reshape(-1), self.num_classes).log().clamp(min=LOG_FLOOR)  # (B, K)
