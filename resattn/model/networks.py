"""Residual Attention Networks for ImageNet-style (224 px) and CIFAR-style (32 px) input,
and a timm-like registry of named variants.

Layout (paper, Table 2): stem, then per stage a transition residual unit followed by the
stage's attention modules, then the last residual units, BN-ReLU, global average pool, FC.
Depth = 36 m + 20 counts the trunk path only: each attention module adds p + t + p = 4
units (12 layers) and the stem conv, 6 plain units and the FC give the 20.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import ResattnError
from .attention import AttentionModule, attention_modules
from .units import residual_units


@dataclass(frozen=True)
class StageSpec:
    width: int  # bottleneck width; units output 4 x width channels
    modules: int  # attention modules in the stage
    pools: int  # how often the soft mask branch pools down (down to 7x7 at 224 px)


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class ResidualAttentionNetwork(nn.Module):
    def __init__(
        self,
        stages: tuple[StageSpec, ...],
        final_width: int,
        final_units: int = 3,
        *,
        stem: str = "imagenet",
        stem_channels: int = 64,
        final_stride: int = 2,
        num_classes: int = 1000,
        attention: str = "mixed",
        residual: str = "arl",
        width: float = 1.0,
        p: int = 1,
        t: int = 2,
        r: int = 1,
    ) -> None:
        super().__init__()
        if not (isinstance(width, (int, float)) and not isinstance(width, bool) and math.isfinite(width)
                and width > 0):
            raise ResattnError(f"Invalid width {width!r}: it must be a positive number such as 1.0 or 0.25.")
        self.attention = attention
        self.residual = residual
        self.width = width
        self.arch = None  # set by create_model to the registered name
        stem_out = _scaled(stem_channels, width)
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem_out, kernel_size=7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        elif stem == "cifar":
            # Pre-activation: the first unit's BN-ReLU follows this conv directly.
            self.stem = nn.Sequential(nn.Conv2d(3, stem_out, kernel_size=3, padding=1, bias=False))
        else:
            raise ResattnError(f"Unknown stem {stem!r}: choose 'imagenet' or 'cifar'.")

        channels = stem_out
        for index, spec in enumerate(stages, start=1):
            out_channels = 4 * _scaled(spec.width, width)
            stride = 1 if index == 1 else 2
            modules = [residual_units(channels, out_channels, 1, stride)]
            modules += [
                AttentionModule(out_channels, spec.pools, stage=index, attention=attention,
                                residual=residual, p=p, t=t, r=r)
                for _ in range(spec.modules)
            ]
            self.add_module(f"stage{index}", nn.Sequential(*modules))
            channels = out_channels
        out_channels = 4 * _scaled(final_width, width)
        self.final_units = residual_units(channels, out_channels, final_units, final_stride)
        self.head_bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out_channels, num_classes)
        self.num_stages = len(stages)
        self._init_weights()

    def _init_weights(self) -> None:
        if any(p.is_meta for p in self.parameters()):
            # A shape-only build (checkpoint checks, MAC counting): nothing to initialise, and
            # nn.init on meta tensors is slow (seconds on first use).
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{index}")(x)
        x = self.relu(self.head_bn(self.final_units(x)))
        return self.fc(torch.flatten(self.pool(x), 1))

    def attention_modules(self) -> list[tuple[str, AttentionModule]]:
        """(qualified name, module) for every attention module, in forward order."""
        return attention_modules(self)


# ---------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., ResidualAttentionNetwork]] = {}
DEFAULT_INPUT_SIZE: dict[str, int] = {}


def register_model(input_size: int):
    """Register a network builder under its function name, with its default input size.
    A name is registered once: a second builder of the same name is refused, not swapped in."""
    def decorator(fn: Callable[..., ResidualAttentionNetwork]):
        if fn.__name__ in _REGISTRY:
            raise ResattnError(f"A model named {fn.__name__!r} is already registered; give the new builder "
                               "another name.")
        _REGISTRY[fn.__name__] = fn
        DEFAULT_INPUT_SIZE[fn.__name__] = input_size
        return fn

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> ResidualAttentionNetwork:
    """Build a registered network, e.g. create_model("attention56", attention="spatial")."""
    if name not in _REGISTRY:
        raise ResattnError(f"Unknown model {name!r}: choose one of {', '.join(list_models())}.")
    model = _REGISTRY[name](**kwargs)
    model.arch = name
    return model


def _imagenet(modules: tuple[int, int, int], **kwargs) -> ResidualAttentionNetwork:
    # Mask pools per stage at 224 px: 56 -> 7 (3 pools), 28 -> 7 (2), 14 -> 7 (1).
    stages = tuple(StageSpec(w, m, pools) for w, m, pools in zip((64, 128, 256), modules, (3, 2, 1)))
    return ResidualAttentionNetwork(stages, final_width=512, stem="imagenet", **kwargs)


def _cifar(modules: tuple[int, int, int], **kwargs) -> ResidualAttentionNetwork:
    # Mask pools per stage at 32 px: 32 -> 8 (2 pools), 16 -> 8 (1), 8 -> 4 (1).
    stages = tuple(StageSpec(w, m, pools) for w, m, pools in zip((16, 32, 64), modules, (2, 1, 1)))
    kwargs.setdefault("num_classes", 10)
    return ResidualAttentionNetwork(stages, final_width=64, stem="cifar", stem_channels=16,
                                    final_stride=1, **kwargs)


@register_model(224)
def attention56(**kwargs) -> ResidualAttentionNetwork:
    """Attention-56: one attention module per stage (paper, Table 2)."""
    return _imagenet((1, 1, 1), **kwargs)


@register_model(224)
def attention92(**kwargs) -> ResidualAttentionNetwork:
    """Attention-92: modules spread 1, 2, 3 over the stages (paper, Table 2)."""
    return _imagenet((1, 2, 3), **kwargs)


@register_model(224)
def attention128(**kwargs) -> ResidualAttentionNetwork:
    """Attention-128: 9 modules spread 2, 3, 4, extending Attention-92's m-1, m, m+1 pattern
    (the paper gives no ImageNet layout for this depth)."""
    return _imagenet((2, 3, 4), **kwargs)


@register_model(224)
def attention164(**kwargs) -> ResidualAttentionNetwork:
    """Attention-164: 12 modules spread 3, 4, 5 (same pattern as attention128)."""
    return _imagenet((3, 4, 5), **kwargs)


@register_model(32)
def attention56_cifar(**kwargs) -> ResidualAttentionNetwork:
    """CIFAR Attention-56: narrow (widths 16, 32, 64), 3x3 stem, one module per stage."""
    return _cifar((1, 1, 1), **kwargs)


@register_model(32)
def attention92_cifar(**kwargs) -> ResidualAttentionNetwork:
    """CIFAR Attention-92: narrow, m = 2 modules in every stage (depth 36 m + 20 = 92).

    The paper gives no CIFAR layout; 2, 2, 2 gives 1.83 M parameters against the paper's
    1.9 M, while the ImageNet spread 1, 2, 3 would give 2.33 M."""
    return _cifar((2, 2, 2), **kwargs)
