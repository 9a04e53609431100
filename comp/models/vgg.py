"""VGG-11/13/16/19 with batch norm (Simonyan & Zisserman 2014), weight-compatible with torchvision's ``vgg*_bn``.

Parameter names follow torchvision (``features.N``, ``classifier.0/3/6``) so its weights load with
``strict=True``. The adaptive 7x7 pool in front of the classifier lets any input size through.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from comp.models.layers import create_act

# Output channels of each 3x3 conv; "M" is a 2x2 max pool.
STAGES: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_features(stages: list[int | str], in_chans: int, act: str) -> nn.Sequential:
    """The convolutional trunk: conv3x3 -> BN -> activation per entry, a max pool per ``"M"``.

    Args:
        stages: One of :data:`STAGES`.
        in_chans: Input image channels.
        act: Activation name.

    Returns:
        ``nn.Sequential`` whose indices match torchvision's ``features``.
    """
    layers: list[nn.Module] = []
    chans = in_chans
    for v in stages:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(chans, int(v), kernel_size=3, padding=1), nn.BatchNorm2d(int(v)), create_act(act)]
            chans = int(v)
    return nn.Sequential(*layers)


def linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer left uninitialised, on the default device.

    :meth:`VGG.init_weights` draws its weights; skipping PyTorch's default init of the 120M classifier
    weights first saves about a third of the build time.
    """
    return nn.Linear(in_features, out_features, device="meta").to_empty(device=torch.get_default_device())


class VGG(nn.Module):
    """VGG-BN: convolutional trunk, adaptive 7x7 average pool, three-layer MLP classifier.

    Args:
        stages: Conv widths and pools, one of :data:`STAGES`.
        num_classes: Classifier outputs.
        in_chans: Input image channels (1 or 3).
        act: Activation name (``relu``, ``leaky_relu``, ``silu``, ``gelu``).
        drop_rate: Dropout probability after each hidden classifier layer (torchvision uses 0.5).
    """

    def __init__(self, stages: list[int | str], num_classes: int = 1000, in_chans: int = 3, act: str = "relu",
                 drop_rate: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.num_features = 512
        self.pretrained_cfg = {"first_conv": "features.0", "classifier": "classifier.6"}  # torchvision names
        self.features = make_features(stages, in_chans, act)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            linear(512 * 7 * 7, 4096), create_act(act), nn.Dropout(drop_rate),
            linear(4096, 4096), create_act(act), nn.Dropout(drop_rate),
            linear(4096, num_classes),
        )
        self.init_weights()

    def init_weights(self) -> None:
        """Initialize as torchvision does: He-normal convs (fan-out), unit BNs, N(0, 0.01) linears, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups from the stem to the head, as timm's VGG (for ``train.layer_decay``)."""
        return dict(stem=r"^features\.0", blocks=r"^features\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutional trunk: (B, in_chans, H, W) -> (B, 512, H/32, W/32)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Adaptive pool and classifier MLP.

        Args:
            x: Features from :meth:`forward_features`, (B, 512, h, w).
            pre_logits: Return the last hidden layer (B, 4096) instead of the logits.

        Returns:
            Logits (B, num_classes), or hidden features (B, 4096) when ``pre_logits``.
        """
        x = torch.flatten(self.avgpool(x), 1)  # (B, 512 * 7 * 7)
        if not pre_logits:
            return self.classifier(x)  # (B, num_classes)
        for layer in list(self.classifier)[:-1]:
            x = layer(x)
        return x  # (B, 4096)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of a batch (B, C, H, W)."""
        return self.forward_head(self.forward_features(x))


def build_vgg(variant: str, **kwargs: Any) -> VGG:
    """Build a :class:`VGG` from a :data:`STAGES` key; ``kwargs`` are its ``num_classes, in_chans, act, drop_rate``."""
    return VGG(STAGES[variant], **kwargs)


def vgg11_bn(**kwargs: Any) -> VGG:
    """VGG-11 with batch norm (8 convs)."""
    return build_vgg("vgg11", **kwargs)


def vgg13_bn(**kwargs: Any) -> VGG:
    """VGG-13 with batch norm (10 convs)."""
    return build_vgg("vgg13", **kwargs)


def vgg16_bn(**kwargs: Any) -> VGG:
    """VGG-16 with batch norm (13 convs)."""
    return build_vgg("vgg16", **kwargs)


def vgg19_bn(**kwargs: Any) -> VGG:
    """VGG-19 with batch norm (16 convs)."""
    return build_vgg("vgg19", **kwargs)
