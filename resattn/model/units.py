"""The pre-activation bottleneck residual unit (He et al., "Identity Mappings in Deep
Residual Networks", 2016), the building block of every branch of the network."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class ResidualUnit(nn.Module):
    """BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 with output = 4 x bottleneck width.

    The stride sits on the 3x3 convolution (as in torchvision's ResNet v1.5); the shortcut
    is a 1x1 projection of the pre-activated input whenever channels or resolution change,
    and the identity otherwise.
    """

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        width = max(1, out_channels // self.expansion)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv1x1(in_channels, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = conv1x1(in_channels, out_channels, stride) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLUs only ever touch fresh BN outputs, never x: traced tensors stay intact.
        pre = F.relu(self.bn1(x), inplace=True)
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        out = self.conv3(F.relu(self.bn3(out), inplace=True))
        return out + shortcut


def residual_units(in_channels: int, out_channels: int, count: int, stride: int = 1) -> nn.Sequential:
    """`count` units in a row; only the first changes channels or resolution."""
    units = [ResidualUnit(in_channels, out_channels, stride)] if count else []
    units += [ResidualUnit(out_channels, out_channels) for _ in range(count - 1)]
    return nn.Sequential(*units)
