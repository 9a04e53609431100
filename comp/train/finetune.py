"""Fine-tuning controls: layer-wise learning-rate decay and a frozen backbone for the first epochs.

``train.layer_decay`` gives the classifier the full ``train.lr`` and each parameter group below it
``lr * decay**k`` (k groups from the head; BEiT's rule, through timm's ``param_groups_layer_decay`` and the
model's ``group_matcher``: stem, then every residual block / VGG layer). ``train.freeze_epochs`` trains only
the classifier for the first epochs, so a fresh head does not push large gradients into pretrained weights.
"""

from __future__ import annotations

from torch import nn

from comp.errors import ModelError


def _network(model: nn.Module) -> nn.Module:
    """The network whose layers and classifier the fine-tuning controls address.

    For a regression head, its inner one (:class:`comp.models.grade.GradeHead` only turns its single output
    into a grade; it has no parameters).
    """
    from comp.models.grade import GradeHead

    return model.net if isinstance(model, GradeHead) else model


def layer_decay_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """Optimiser parameter groups with per-depth learning rates (and no weight decay on 1-d parameters).

    Args:
        model: One of ours (ResNet, VGG-BN: both have ``group_matcher``) or a timm model.
        lr: The classifier's learning rate.
        weight_decay: Weight decay of the matrices and kernels.
        layer_decay: Multiplier per group below the head, in (0, 1].

    Returns:
        Groups with ``params``, ``lr``, ``weight_decay`` and timm's ``lr_scale``.
    """
    from timm.optim._param_groups import param_groups_layer_decay

    groups = param_groups_layer_decay(_network(model), weight_decay=weight_decay, layer_decay=layer_decay)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]  # torch's schedulers scale each group's own lr
    return groups


def head_names(model: nn.Module) -> list[str]:
    """The classifier module names (``fc``, ``classifier.6``, ``head.fc``) from the model's ``pretrained_cfg``.

    Raises:
        ModelError: The model names no classifier, so nothing would train while frozen.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier")
    heads = [heads] if isinstance(heads, str) else list(heads or [])
    if not heads:
        raise ModelError(f"train.freeze_epochs: {type(model).__name__} names no classifier in its pretrained_cfg; "
                         "set train.freeze_epochs=0")
    return heads


def set_backbone_frozen(model: nn.Module, frozen: bool) -> int:
    """Freeze (or release) every parameter outside the classifier; return how many tensors are frozen.

    Frozen parameters get no gradient, so the optimiser skips them (their Adam moments stay empty). The
    BatchNorm running statistics still follow the new data, as in fastai's ``freeze``.
    """
    model = _network(model)
    heads = head_names(model)
    count = 0
    for name, param in model.named_parameters():
        in_head = any(name == h or name.startswith(h + ".") for h in heads)
        param.requires_grad_(in_head or not frozen)
        count += int(frozen and not in_head)
    return count
