"""The attention module: trunk T, soft mask M and their combination (paper, section 3)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ResattnError
from .mask import ATTENTION_TYPES, SoftMaskBranch
from .units import residual_units

RESIDUAL_MODES = ("arl", "nal")


class AttentionResidual(nn.Module):
    """Combines trunk and mask: "arl" H = (1 + M) * T, "nal" H = M * T.

    A module of its own so that `trace` can read H and interventions can see T and M.
    """

    def __init__(self, mode: str = "arl") -> None:
        super().__init__()
        if mode not in RESIDUAL_MODES:
            raise ResattnError(f"Unknown residual mode {mode!r}: choose one of {', '.join(RESIDUAL_MODES)}.")
        self.mode = mode

    def forward(self, trunk: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Written T*M + T like the official release's Eltwise layers.
        return trunk * mask + trunk if self.mode == "arl" else trunk * mask

    def extra_repr(self) -> str:
        return self.mode


class AttentionModule(nn.Module):
    """p pre-processing units, then trunk (t units) and soft mask branch side by side,
    their combination, then p post-processing units. `attention="none"` drops the mask
    branch, leaving a plain residual block of the same trunk (the baseline)."""

    def __init__(
        self,
        channels: int,
        pools: int,
        *,
        stage: int,
        attention: str = "mixed",
        residual: str = "arl",
        p: int = 1,
        t: int = 2,
        r: int = 1,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_TYPES + ("none",):
            raise ResattnError(f"Unknown attention {attention!r}: choose one of "
                               f"{', '.join(ATTENTION_TYPES + ('none',))}.")
        self.stage = stage
        self.attention = attention
        self.pre = residual_units(channels, channels, p)
        self.trunk = residual_units(channels, channels, t)
        if attention == "none":
            self.soft_mask_branch = None
            self.attention_residual = None
        else:
            self.soft_mask_branch = SoftMaskBranch(channels, pools, r, attention)
            self.attention_residual = AttentionResidual(residual)
        self.post = residual_units(channels, channels, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        out = self.trunk(x)
        if self.soft_mask_branch is not None:
            out = self.attention_residual(out, self.soft_mask_branch(x))
        return self.post(out)


def attention_modules(model: nn.Module) -> list[tuple[str, AttentionModule]]:
    """(qualified name, module) for every attention module, in forward order, as
    `named_modules()` would list them. Attention modules do not nest, so the walk skips their
    insides: every trace does this walk, and the full one costs ~0.5 ms on Attention-56."""
    if isinstance(model, AttentionModule):
        return [("", model)]
    found: list[tuple[str, AttentionModule]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            qualified = f"{prefix}.{name}" if prefix else name
            if isinstance(child, AttentionModule):
                found.append((qualified, child))
            else:
                walk(child, qualified)

    walk(model, "")
    return found
