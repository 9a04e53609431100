"""ResNet-18/34/50/101/152 (He et al. 2015), weight-compatible with timm's and torchvision's ``resnet*``.

Parameter and buffer names follow timm (``conv1, bn1, layer1..4, downsample.0/1, fc``), so a timm or
torchvision state dict loads with ``strict=True`` and :mod:`comp.models.check` can prove the two equal.
The file reads top to bottom: blocks, the network, a builder, one short function per variant.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from comp.models.layers import DropPath, create_act


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and an identity (or projected) shortcut: ResNet-18 and -34.

    Args:
        inplanes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution.
        downsample: Projection of the shortcut when the shape changes (``conv1x1`` + BN), else ``None``.
        act: Activation name.
        drop_path: Stochastic depth: probability of dropping the residual branch for a sample.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 act: str = "relu", drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = create_act(act)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = create_act(act)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def zero_init_last(self) -> None:
        """Zero the last BN scale so the block starts as the identity."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: two 3x3 convolutions plus the shortcut."""
        shortcut = x if self.downsample is None else self.downsample(x)  # (B, C', H/s, W/s)
        x = self.act1(self.bn1(self.conv1(x)))  # (B, C', H/s, W/s)
        x = self.bn2(self.conv2(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        x += shortcut  # in place: bn2's output is not needed by its backward
        return self.act2(x)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4: ResNet-50, -101 and -152.

    Args:
        inplanes: Input channels.
        planes: Width of the 3x3 convolution; the block outputs ``4 * planes`` channels.
        stride: Stride of the 3x3 convolution.
        downsample: Projection of the shortcut when the shape changes (``conv1x1`` + BN), else ``None``.
        act: Activation name.
        drop_path: Stochastic depth: probability of dropping the residual branch for a sample.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 act: str = "relu", drop_path: float = 0.0) -> None:
        super().__init__()
        outplanes = planes * self.expansion
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = create_act(act)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = create_act(act)
        self.conv3 = conv1x1(planes, outplanes)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.act3 = create_act(act)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def zero_init_last(self) -> None:
        """Zero the last BN scale so the block starts as the identity."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: 1x1, 3x3 and 1x1 convolutions plus the shortcut."""
        shortcut = x if self.downsample is None else self.downsample(x)  # (B, 4P, H/s, W/s)
        x = self.act1(self.bn1(self.conv1(x)))  # (B, P, H, W)
        x = self.act2(self.bn2(self.conv2(x)))  # (B, P, H/s, W/s)
        x = self.bn3(self.conv3(x))  # (B, 4P, H/s, W/s)
        if self.drop_path is not None:
            x = self.drop_path(x)
        x += shortcut
        return self.act3(x)


Block = type[BasicBlock] | type[Bottleneck]


def make_stage(block: Block, inplanes: int, planes: int, depth: int, stride: int, act: str,
               drop_paths: list[float] | None = None) -> nn.Sequential:
    """One stage (``layerN``): ``depth`` blocks, the first one carrying the stride and the projection.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        inplanes: Channels entering the stage.
        planes: Base width of the stage (output channels are ``planes * block.expansion``).
        depth: Number of blocks.
        stride: Stride of the first block (1 for ``layer1``, 2 for the others).
        act: Activation name.
        drop_paths: Stochastic-depth probability of each block (default: none).

    Returns:
        The stage as an ``nn.Sequential`` of blocks.
    """
    drop_paths = drop_paths or [0.0] * depth
    outplanes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != outplanes:
        downsample = nn.Sequential(conv1x1(inplanes, outplanes, stride), nn.BatchNorm2d(outplanes))
    blocks = [block(inplanes, planes, stride, downsample, act, drop_paths[0])]
    blocks += [block(outplanes, planes, 1, None, act, drop_paths[i]) for i in range(1, depth)]
    return nn.Sequential(*blocks)


class ResNet(nn.Module):
    """ResNet with a 7x7 stem, four stages, global average pooling and a linear classifier.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: Blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        num_classes: Classifier outputs; 0 leaves ``fc`` as the identity (a feature extractor).
        in_chans: Input image channels (1 or 3).
        act: Activation name (``relu``, ``leaky_relu``, ``silu``, ``gelu``).
        drop_rate: Dropout probability before the classifier.
        zero_init_last: Zero the last BN scale of every block (each block starts as the identity).
        drop_path_rate: Stochastic depth of the last block; earlier blocks get linearly less, the first none
            (timm's rule, ``rate * i / (blocks - 1)``).
    """

    def __init__(self, block: Block, layers: tuple[int, int, int, int], num_classes: int = 1000,
                 in_chans: int = 3, act: str = "relu", drop_rate: float = 0.0, zero_init_last: bool = True,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.pretrained_cfg = {"first_conv": "conv1", "classifier": "fc"}  # as timm names them

        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = create_act(act)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        inplanes, total, first = 64, sum(layers), 0
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers)):
            rates = [drop_path_rate * (first + j) / max(1, total - 1) for j in range(depth)]
            self.add_module(f"layer{i + 1}", make_stage(block, inplanes, planes, depth, 1 if i == 0 else 2, act,
                                                        rates))
            inplanes, first = planes * block.expansion, first + depth
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(zero_init_last)

    def init_weights(self, zero_init_last: bool = True) -> None:
        """He-normal convolutions (fan-out), as timm and torchvision do; optionally zero the last BNs."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups from the stem to the head, as timm's ResNet (for ``train.layer_decay``)."""
        return dict(stem=r"^conv1|bn1|maxpool", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the four stages: (B, in_chans, H, W) -> (B, num_features, H/32, W/32)."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer1(x)  # (B, 64e, H/4, W/4), e = block.expansion
        x = self.layer2(x)  # (B, 128e, H/8, W/8)
        x = self.layer3(x)  # (B, 256e, H/16, W/16)
        return self.layer4(x)  # (B, 512e, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout and classifier.

        Args:
            x: Features from :meth:`forward_features`, (B, C, h, w).
            pre_logits: Return the pooled features (B, C) instead of the logits.

        Returns:
            Logits (B, num_classes), or pooled features (B, C) when ``pre_logits``.
        """
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, C)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of a batch (B, C, H, W)."""
        return self.forward_head(self.forward_features(x))


def build_resnet(block: Block, layers: tuple[int, int, int, int], **kwargs: Any) -> ResNet:
    """Build a ResNet; ``kwargs``: ``num_classes, in_chans, act, drop_rate, zero_init_last, drop_path_rate``."""
    return ResNet(block, layers, **kwargs)


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18: BasicBlock, (2, 2, 2, 2)."""
    return build_resnet(BasicBlock, (2, 2, 2, 2), **kwargs)


def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34: BasicBlock, (3, 4, 6, 3)."""
    return build_resnet(BasicBlock, (3, 4, 6, 3), **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50: Bottleneck, (3, 4, 6, 3)."""
    return build_resnet(Bottleneck, (3, 4, 6, 3), **kwargs)


def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101: Bottleneck, (3, 4, 23, 3)."""
    return build_resnet(Bottleneck, (3, 4, 23, 3), **kwargs)


def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152: Bottleneck, (3, 8, 36, 3)."""
    return build_resnet(Bottleneck, (3, 8, 36, 3), **kwargs)
