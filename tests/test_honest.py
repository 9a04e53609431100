"""Issue 13: an honest CV and sound training (each test failed on the code before the fix)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from comp.train.optim import create_criterion


def _batch(seed: int = 0, n: int = 12, c: int = 3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=gen), torch.randint(0, c, (n,), generator=gen)


@pytest.mark.parametrize("weights,eps", [(None, 0.0), (None, 0.1), ([0.5, 2.0, 1.0], 0.0)])
def test_loss_equals_pytorch_when_weights_or_smoothing_alone(weights, eps):
    logits, target = _batch()
    w = None if weights is None else torch.tensor(weights)
    ours = create_criterion(w, eps, torch.device("cpu"))(logits, target)
    torch.testing.assert_close(ours, nn.CrossEntropyLoss(weight=w, label_smoothing=eps)(logits, target))


def test_loss_smooths_the_target_then_weights_each_sample():
    logits, target = _batch(1)
    w, eps = torch.tensor([0.2, 3.0, 1.5]), 0.1
    ours = create_criterion(w, eps, torch.device("cpu"))(logits, target)
    q = torch.full_like(logits, eps / 3) + (1 - eps) * nn.functional.one_hot(target, 3)
    per_sample = -(q * torch.log_softmax(logits, 1)).sum(1)
    torch.testing.assert_close(ours, (w[target] * per_sample).sum() / w[target].sum())


def test_weighted_smoothed_loss_keeps_each_samples_optimum():
    """A majority-class image (weight 0.2, rare classes 3.0) must still be pulled to P(true) = 1 - e + e/C."""
    w, eps = torch.tensor([0.2, 3.0, 3.0]), 0.1
    criterion = create_criterion(w, eps, torch.device("cpu"))
    logits = torch.zeros(1, 3, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=2.0)
    for _ in range(500):
        opt.zero_grad()
        criterion(logits, torch.tensor([0])).backward()
        opt.step()
    p_true = torch.softmax(logits.detach(), 1)[0, 0].item()
    assert p_true == pytest.approx(1 - eps + eps / 3, abs=1e-3)  # the old loss pulled it far lower
