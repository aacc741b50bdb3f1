"""Summaries of masks, feature magnitudes and network structure, for the app's charts.

Everything here takes tensors (or numpy arrays) and returns plain numbers, dicts and lists:
no figures, no Streamlit. The definitions are written out in each docstring because the
charts show the numbers to people who will ask what they mean.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ResattnError

# A mask value counts as "near 0" when |m| < NEAR and as "near 1" when m > 1 - NEAR.
NEAR = 0.1
MASK_STATS = ("mean", "std", "near0", "near1", "entropy", "spatial_entropy")
MASK_STAT_LABELS = {
    "mean": "mean of M",
    "std": "spread of M (std)",
    "near0": f"fraction near 0 (|M| < {NEAR:g})",
    "near1": f"fraction near 1 (M > {1 - NEAR:g})",
    "entropy": "decision entropy (bits)",
    "spatial_entropy": "spatial entropy (0-1)",
}


def _as_tensor(values) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu()
    return torch.as_tensor(np.asarray(values), dtype=torch.float32)


def binary_entropy_bits(values: torch.Tensor) -> torch.Tensor:
    """-p log2 p - (1-p) log2 (1-p) elementwise for p in [0, 1], with 0 log 0 = 0."""
    p = values.clamp(0.0, 1.0).double()
    q = 1.0 - p
    plogp = torch.where(p > 0, p * torch.log2(p.clamp_min(1e-300)), torch.zeros_like(p))
    qlogq = torch.where(q > 0, q * torch.log2(q.clamp_min(1e-300)), torch.zeros_like(q))
    return -(plogp + qlogq)


def spatial_entropy(mask) -> float:
    """How evenly a mask spreads over the image, from 0 (all on one position) to 1 (uniform).

    The mask (C x h x w or N x C x h x w) is reduced to one map of mean |M| over channels
    (and images); that map, divided by its sum, is a distribution over the h*w positions,
    and its Shannon entropy is divided by log(h*w). A map that is zero everywhere, or a
    single position, gives 1 (nothing is singled out)."""
    m = _as_tensor(mask)
    if m.ndim == 3:
        m = m.unsqueeze(0)
    if m.ndim != 4:
        raise ResattnError(f"Expected a mask C x h x w or N x C x h x w, got shape {tuple(m.shape)}.")
    weights = m.abs().double().mean(dim=(0, 1)).flatten()
    n = weights.numel()
    total = weights.sum()
    if n <= 1 or total <= 0:
        return 1.0
    p = weights / total
    entropy = -(torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))).sum()
    return float(entropy / math.log(n))


def mask_statistics(mask, *, near: float = NEAR) -> dict[str, float]:
    """Statistics of the values of one soft mask M (any shape; all values count equally).

    mean, std   mean and population standard deviation of M;
    near0       fraction of values with |M| < near (the mask shuts the feature off);
    near1       fraction of values with M > 1 - near (the mask passes / doubles it);
    entropy     mean binary entropy of min(|M|, 1) in bits: 1 when every value is 0.5
                (undecided), 0 when every value is exactly 0 or 1. Channel attention's values
                lie in [-1, 1]; their magnitude is used, so the sign does not count;
    spatial_entropy  see `spatial_entropy` (needs a C x h x w or N x C x h x w mask).
    """
    m = _as_tensor(mask)
    if m.numel() == 0:
        raise ResattnError("The mask is empty: there are no values to summarise.")
    flat = m.flatten().double()
    stats = {
        "mean": float(flat.mean()),
        "std": float(flat.std(correction=0)),
        "near0": float((flat.abs() < near).double().mean()),
        "near1": float((flat > 1.0 - near).double().mean()),
        "entropy": float(binary_entropy_bits(flat.abs()).mean()),
    }
    stats["spatial_entropy"] = spatial_entropy(m) if m.ndim in (3, 4) else float("nan")
    return stats


def stage_mask_statistics(masks: Iterable[tuple[int, object]], *, near: float = NEAR) -> dict[int, dict[str, float]]:
    """Statistics per stage from (stage, mask) pairs: the values of every module of a stage
    are pooled (Attention-92 has several modules per stage). Masks of one stage must share
    their spatial size for the spatial entropy, which is the mean over the stage's modules."""
    by_stage: dict[int, list[torch.Tensor]] = {}
    for stage, mask in masks:
        if mask is None:
            continue
        by_stage.setdefault(int(stage), []).append(_as_tensor(mask))
    result = {}
    for stage, tensors in sorted(by_stage.items()):
        pooled = torch.cat([t.flatten() for t in tensors])
        stats = mask_statistics(pooled, near=near)
        stats["spatial_entropy"] = float(np.mean([spatial_entropy(t) for t in tensors if t.ndim in (3, 4)]))
        result[stage] = stats
    return result


def mean_magnitude(tensor) -> float:
    """Mean absolute value, the "size" of a feature tensor."""
    return float(_as_tensor(tensor).abs().double().mean())


def magnitude_profile(records: Sequence) -> list[dict]:
    """For each module record (anything with .name, .stage, .input, .trunk, .output, or a
    dict with those keys): mean |input|, mean |T|, mean |H| and the combination's gain
    mean|H| / mean|T|. Under ARL, H = (1+M)T with a sigmoid mask (M in (0, 1): mixed,
    spatial) can only keep or grow T (gain in [1, 2]); channel attention's M in [-1, 1]
    puts 1 + M in [0, 2], so it can also shrink T (gain in [0, 2]). Under NAL, H = M T
    with |M| <= 1 can only shrink it (gain <= 1; a negative M also flips the sign)."""
    rows = []
    for rec in records:
        get = rec.get if isinstance(rec, dict) else (lambda key, rec=rec: getattr(rec, key))
        trunk = mean_magnitude(get("trunk"))
        output = mean_magnitude(get("output"))
        rows.append({
            "name": get("name"), "stage": int(get("stage")),
            "input": mean_magnitude(get("input")), "trunk": trunk, "output": output,
            "gain": output / trunk if trunk > 0 else float("nan"),
        })
    return rows


def cumulative_gain(gains: Sequence[float]) -> list[float]:
    """Running product of per-module gains: how much the combinations alone would scale a
    feature passed through every module so far (the trunks and the residual units between
    modules are left out, which is what makes it an illustration, not a measurement of H)."""
    out, running = [], 1.0
    for g in gains:
        running *= float(g)
        out.append(running)
    return out


def value_histogram(values, bins: int = 50, value_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of all values, as fractions of the total (sum to 1)."""
    flat = _as_tensor(values).flatten().numpy()
    flat = flat[np.isfinite(flat)]
    if value_range is None:
        lo, hi = (float(flat.min()), float(flat.max())) if flat.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        value_range = (lo, hi)
    counts, edges = np.histogram(flat, bins=bins, range=value_range)
    total = counts.sum()
    return (counts / total if total else counts.astype(float)), edges


# --------------------------------------------------------------------------- structure

def network_outline(model: nn.Module) -> dict:
    """The structure the overview's diagram draws: per stage, the residual units before the
    attention modules and the modules' names, then the final residual units.

    Works for any `ResidualAttentionNetwork` (it reads the `stageN` containers)."""
    from .model import AttentionModule, ResidualUnit

    stages = []
    index = 1
    while hasattr(model, f"stage{index}"):
        container = getattr(model, f"stage{index}")
        units, modules = 0, []
        for name, child in container.named_children():
            if isinstance(child, AttentionModule):
                modules.append({
                    "name": f"stage{index}.{name}", "attention": child.attention,
                    "units": {"pre": len(child.pre), "trunk": len(child.trunk), "post": len(child.post)},
                    "pools": child.soft_mask_branch.pools if child.soft_mask_branch is not None else 0,
                })
            else:
                units += sum(1 for m in child.modules() if isinstance(m, ResidualUnit))
        stages.append({"index": index, "units": units, "modules": modules})
        index += 1
    final = getattr(model, "final_units", None)
    final_units = sum(1 for m in final.modules() if isinstance(m, ResidualUnit)) if final is not None else 0
    return {"arch": getattr(model, "arch", None), "attention": getattr(model, "attention", None),
            "residual": getattr(model, "residual", None), "stages": stages, "final_units": final_units}


# --------------------------------------------------------------------------- mask logits

def mask_logits(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The soft mask branches' logits x (the input of the activation f, before sigmoid or
    normalisation), per attention module name, from one forward pass under inference mode.

    Used to show what each activation (mixed / channel / spatial) makes of the same logits.
    Hooks are removed afterwards; passes on one model are serialised with `trace`'s lock and
    the hook ignores forward passes of other threads. A model without attention gives {}."""
    from .hooks import Hook, forward_hooks
    from .model import attention_modules

    found: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in attention_modules(model):
        if module.soft_mask_branch is not None:
            def on_activation(mod, args, name=name):
                found[name] = args[0].detach()

            hooks.append(Hook(module.soft_mask_branch.activation, on_activation, pre=True))
    with forward_hooks(model, hooks), torch.inference_mode():
        model(images)
    return found


def apply_activations(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three activations of the paper applied to the same logits (N x C x h x w)."""
    from .model.mask import channel_attention, mixed_attention, spatial_attention

    x = _as_tensor(logits)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    return {"mixed": mixed_attention(x), "channel": channel_attention(x), "spatial": spatial_attention(x)}


def activation_summary(logits, bins: int = 60) -> dict[str, dict]:
    """What each activation makes of the same mask logits (C x h x w or N x C x h x w):
    per kind ("mixed", "channel", "spatial") the histogram of M (fractions, edges), the
    channel-mean map (h x w, first image) and measured facts that show what the activation
    removes:

    position_norm   min and max over positions of ||M_i|| (the channel vector's L2 norm):
                    channel attention makes it 1 everywhere (no spatial information left);
    channel_mean    min and max over channels of the spatial mean of M: spatial attention
                    centres every channel (sigmoid of a zero-mean input), leaving little
                    channel information;
    above_half      fraction of values above 0.5 (sigmoid of a positive logit).
    """
    out = {}
    for kind, mask in apply_activations(logits).items():
        m = mask.double()
        norms = m.pow(2).sum(dim=1).sqrt()
        channel_means = m.mean(dim=(2, 3))
        value_range = (-1.0, 1.0) if kind == "channel" else (0.0, 1.0)
        counts, edges = value_histogram(m, bins, value_range)
        out[kind] = {
            "counts": counts, "edges": edges,
            "map": m[0].mean(dim=0).float().numpy(),
            "position_norm": (float(norms.min()), float(norms.max())),
            "channel_mean": (float(channel_means.min()), float(channel_means.max())),
            "above_half": float((m > 0.5).double().mean()),
        }
    return out
