"""The soft mask branch and its three activations (paper, section 3.3 and Table 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResattnError
from .units import conv1x1, residual_units

ATTENTION_TYPES = ("mixed", "channel", "spatial")

# Epsilons are ours: the paper gives none. They only matter for all-constant inputs.
CHANNEL_EPS = 1e-6
SPATIAL_EPS = 1e-5


def mixed_attention(x: torch.Tensor) -> torch.Tensor:
    """f1: a sigmoid at every channel and position; M in (0, 1)."""
    return torch.sigmoid(x)


def channel_attention(x: torch.Tensor) -> torch.Tensor:
    """f2: x_{i,c} / ||x_i||, L2 normalisation across channels at each position.

    The denominator is max(||x_i||, 1e-6), so M lies in [-1, 1] and each position's
    channel vector has unit norm (zero vectors stay zero).
    """
    return F.normalize(x, p=2.0, dim=1, eps=CHANNEL_EPS)


def spatial_normalise(x: torch.Tensor) -> torch.Tensor:
    """(x_{i,c} - mean_c) / std_c over the spatial positions of each channel and image.

    std is the *population* standard deviation (divide by h*w, like BatchNorm) and 1e-5 is
    added to it, so a channel that is constant over space maps to 0 (sigmoid 0.5).
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True, correction=0)
    return (x - mean) / (std + SPATIAL_EPS)


def spatial_attention(x: torch.Tensor) -> torch.Tensor:
    """f3: sigmoid of the per-channel spatially normalised input; M in (0, 1)."""
    return torch.sigmoid(spatial_normalise(x))


_ACTIVATIONS = {"mixed": mixed_attention, "channel": channel_attention, "spatial": spatial_attention}


class MaskActivation(nn.Module):
    """The activation f that turns the mask logits into M; one of `ATTENTION_TYPES`."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in _ACTIVATIONS:
            raise ResattnError(f"Unknown mask activation {kind!r}: choose one of {', '.join(ATTENTION_TYPES)}.")
        self.kind = kind
        self.fn = _ACTIVATIONS[kind]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.kind


class SoftMaskBranch(nn.Module):
    """Bottom-up / top-down mask branch, parameterised by how often it pools down.

    Down: `pools` times max-pool 3x3/2, each followed by `r` residual units (2r at the
    lowest level, r "down" and r "up" as in the official release). A skip connection (one
    residual unit on the down path's feature) is taken at every level but the lowest.
    Up: bilinear up-sampling one level at a time to the size the down path had there
    (so any input size works), plus the skip, then `r` residual units; the last
    up-sampling returns to the input resolution. Up-sampling uses align_corners=True,
    which is what Caffe's Interp layer in the official release computes. Nothing from the
    trunk enters the mask. Head: BN-ReLU-1x1, BN-ReLU-1x1, then the activation f.
    """

    def __init__(self, channels: int, pools: int, r: int = 1, attention: str = "mixed") -> None:
        super().__init__()
        if pools < 1:
            raise ResattnError(f"The soft mask branch must pool down at least once, got pools={pools}; use pools >= 1.")
        self.pools = pools
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.down = nn.ModuleList(
            residual_units(channels, channels, 2 * r if level == pools - 1 else r)
            for level in range(pools)
        )
        self.skips = nn.ModuleList(residual_units(channels, channels, 1) for _ in range(pools - 1))
        self.up = nn.ModuleList(residual_units(channels, channels, r) for _ in range(pools - 1))
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            conv1x1(channels, channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            conv1x1(channels, channels),
        )
        self.activation = MaskActivation(attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes, skips = [], []
        out = x
        for level in range(self.pools):
            sizes.append(out.shape[-2:])
            out = self.down[level](self.pool(out))
            if level < self.pools - 1:
                skips.append(self.skips[level](out))
        for level in reversed(range(self.pools - 1)):
            out = _upsample(out, sizes[level + 1]) + skips[level]
            out = self.up[level](out)
        out = _upsample(out, sizes[0])
        return self.activation(self.head(out))


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
