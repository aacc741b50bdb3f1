"""The reference models of the latency, trace and profile sections: fixed random weights,
eval mode, channels_last, as built and BN-folded (and torch.compile'd on request)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..model import create_model
from ..model.fuse import fuse_for_inference
from .plan import RESNETS, Plan


def build_reference(name: str, plan: Plan, device: torch.device) -> nn.Module:
    """An eval-mode model with fixed random weights, in channels_last on `device`."""
    torch.manual_seed(0)
    if name in RESNETS:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
    else:
        model = create_model(name, width=plan.width)
    return model.eval().to(device, memory_format=torch.channels_last)


def fused_variant(model: nn.Module) -> nn.Module:
    """BN folded away: resattn's fuse_for_inference, or torch.fx's conv-BN fusion for ResNets."""
    if getattr(model, "arch", None) is not None:
        fused = fuse_for_inference(model)
    else:
        from torch.fx.experimental.optimization import fuse

        fused = fuse(copy.deepcopy(model))
    return fused.to(memory_format=torch.channels_last)


def variants(model: nn.Module, *, compile_model: bool) -> dict[str, nn.Module]:
    out = {"eager": model, "fused": fused_variant(model)}
    if compile_model:
        out["compiled"] = torch.compile(model, dynamic=False)  # one specialised graph per batch size
    return out
