"""Inference-only rewrites of a Residual Attention Network that keep its results (to float
rounding) and its module layout, so `resattn.trace` still sees every attention module's
trunk, soft mask branch and attention residual.

What the profiles showed (Attention-56 and ResNet-50 at 224 px, batch 1, eval mode under
`torch.inference_mode`, channels_last, on a 2-core CPU shared with a training job):

* torch.profiler (wall clock, 2 threads), Attention-56 as built: convolutions 50-55 % of
  the time, batch norm 15-19 %, ReLU 11-13 %, residual additions 5-7 %, aten's im2col
  convolution path (small maps at batch 1) 6-8 %, max-pool ~1 %, bilinear up-sampling
  < 0.1 % (2.5 % in NCHW, where it copies; hence channels_last). Preemption by the other
  job inflates the many short element-wise kernels here, so also:
* thread CPU time per operator (1 thread, timed through a TorchDispatchMode, which the
  other job cannot inflate): as built, convolutions 87 %, batch norm 5.6 %, additions
  2.7 %, ReLU 1.7 %, max-pool 0.8 %, sigmoid 0.7 %, up-sampling 0.5 %. After
  `fuse_for_inference` (`python scripts/op_time.py`, 2026-12-03, two runs): convolutions
  86.5-86.9 %, clamps 3.3-3.5 %, in-place additions 2.7-2.8 %, max-pool 1.7-1.8 %, ReLU
  1.6-1.9 %, (1 + M)·T 1.4-1.5 %. ResNet-50 folded: convolutions 91.6-91.9 %. The
  convolutions run at the same rate per MAC in both networks (16-17 ps), so the forward time
  follows the MAC ratio (1.53) plus what the pre-activation design adds around them; the
  convolutions alone give 1.33-1.40x folded ResNet-50 (docs/benchmarks.md).
* at batch 16 the allocator dominates what is left: glibc maps and zeroes every block above
  32 MiB afresh, and Attention-56 takes ~420k minor page faults (1.6 GB) per forward as
  built, ~300k fused, ResNet-50 ~160k / ~120k (about 1 s of system time against 0.3-0.6 s).
  That is not the model's to fix; `python -m resattn.bench --retain-freed-memory` shows the
  run without it (see `resattn.bench.retain_freed_memory`).

The network is pre-activation (BN-ReLU-conv): BN and ReLU are two full passes over every
unit's *input* (4 x the bottleneck width), where in a post-activation ResNet the BN folds
into the convolution before it and disappears.

`fuse_for_inference` removes them without changing what any module computes:

* conv -> BN (bn2 after conv1 and bn3 after conv2 in every unit, the second BN of the mask
  head, the ImageNet stem): the BN is folded into the conv's weights and a bias.
* BN -> ReLU -> 1x1 conv (bn1 before conv1 and the projection shortcut, the first BN of the
  mask head, the final BN before pooling and the FC): with s = gamma / sqrt(var + eps),
  b = beta - mean * s and the threshold t = -b / s,

      relu(s x + b) = s * max(x, t) + b   (s > 0),    s * min(x, t) + b   (s < 0),
      relu(b)                              (s = 0),

  so the pair becomes one clamp of x against per-channel bounds; s goes into the 1x1
  conv's input channels and the constant into its bias (exact for a 1x1 conv without
  padding, whatever its stride; likewise through average pooling into the FC).
* the residual addition writes into the fresh conv output instead of a new tensor.

Each pre-activation unit thus goes from BN, ReLU, conv, BN, ReLU, conv, BN, ReLU, conv, add
(10 kernels, 3 passes over the wide input) to clamp, conv, ReLU, conv, ReLU, conv, add_
(7 kernels, 1 pass). The values that `trace` records (module input, T, M, H, logits) are
the same tensors as in the original model up to float rounding (tests/test_bench.py
compares them for every attention type and residual mode).

channels_last is a separate, orthogonal choice: `model.to(memory_format=torch.channels_last)`
(and the input likewise). It speeds up convolutions, pooling and up-sampling on CPU and GPU;
the traced tensors are then channels_last too (same values, different strides: use
`.reshape`, not `.view`, on them).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import ResattnError
from .mask import SoftMaskBranch
from .networks import ResidualAttentionNetwork
from .units import ResidualUnit

__all__ = ["FusedResidualUnit", "PreActivationClamp", "fuse_for_inference", "optimise_for_inference"]


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as y = s * x + b, per channel (float64 for the folding arithmetic)."""
    if not bn.track_running_stats or bn.running_var is None:
        raise ResattnError("fuse_for_inference needs BatchNorm layers with running statistics.")
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    s = gamma / torch.sqrt(var + bn.eps)
    return s, beta - mean * s


class PreActivationClamp(nn.Module):
    """What is left of BN -> ReLU once the BN's scale s and the constant have moved into the
    1x1 conv that follows: x clamped to [lo, hi] per channel (hi only where some s < 0)."""

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("lo", lo.reshape(1, -1, 1, 1))
        self.register_buffer("hi", None if hi is None else hi.reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(x, self.lo) if self.hi is None else torch.clamp(x, self.lo, self.hi)


def _preactivation(bn: nn.BatchNorm2d) -> tuple[PreActivationClamp, torch.Tensor, torch.Tensor]:
    """relu(bn(x)) = scale * clamp(x) + const, per channel. Returns (clamp, scale, const)."""
    s, b = _bn_affine(bn)
    # A vanishing scale makes the threshold overflow: treat such channels as s = 0, where
    # the output is the constant relu(b) (the error is |s x|, below float resolution).
    threshold = -b / s
    degenerate = ~torch.isfinite(threshold) | (s.abs() < 1e-30)
    s = torch.where(degenerate, torch.zeros_like(s), s)
    threshold = torch.where(degenerate, torch.zeros_like(threshold), threshold)
    const = torch.where(degenerate, b.clamp_min(0), b)
    inf = torch.full_like(threshold, float("inf"))
    lo = torch.where(s < 0, -inf, threshold)
    hi = torch.where(s < 0, threshold, inf) if bool((s < 0).any()) else None
    dtype = bn.running_var.dtype
    clamp = PreActivationClamp(lo.to(dtype), None if hi is None else hi.to(dtype))
    return clamp, s, const


def _conv_with(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A copy of `conv` (same geometry) with new weights and a bias."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(conv.weight)
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
    return fused.requires_grad_(conv.weight.requires_grad)


def fold_bn_after(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv -> BN as one conv with a bias (torch's own eval-mode folding)."""
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


def fold_preactivation_into(conv: nn.Conv2d, scale: torch.Tensor, const: torch.Tensor) -> nn.Conv2d:
    """A 1x1 conv (no padding, no groups) of `scale * x + const` as a conv of x."""
    if conv.kernel_size != (1, 1) or conv.padding != (0, 0) or conv.groups != 1:
        raise ResattnError("only an ungrouped 1x1 convolution without padding can absorb a pre-activation BN.")
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else 0.0
    return _conv_with(conv, weight * scale.reshape(1, -1, 1, 1), bias + weight[:, :, 0, 0] @ const)


class FusedResidualUnit(nn.Module):
    """A `ResidualUnit` after folding: clamp, conv1 (+bn1 scale, +bn2), ReLU, conv2 (+bn3),
    ReLU, conv3, += shortcut. Same stride, shortcut and output as the unit it came from."""

    def __init__(self, unit: ResidualUnit) -> None:
        super().__init__()
        self.clamp, scale, const = _preactivation(unit.bn1)
        self.conv1 = fold_bn_after(fold_preactivation_into(unit.conv1, scale, const), unit.bn2)
        self.conv2 = fold_bn_after(unit.conv2, unit.bn3)
        self.conv3 = copy.deepcopy(unit.conv3)
        self.shortcut = None if unit.shortcut is None else fold_preactivation_into(unit.shortcut, scale, const)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.clamp(x)  # a fresh tensor: x itself stays intact for the trace and the shortcut
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = torch.relu_(self.conv1(pre))
        out = torch.relu_(self.conv2(out))
        # conv3's output is fresh and nothing else holds it: add in place (autograd allows it,
        # a convolution's backward does not need its output).
        return self.conv3(out).add_(shortcut)


def _fuse_mask_head(branch: SoftMaskBranch) -> None:
    bn1, relu1, conv1, bn2, relu2, conv2 = branch.head
    clamp, scale, const = _preactivation(bn1)
    # Same six slots (index-compatible with the unfused head); the folded BN slots are identities.
    branch.head = nn.Sequential(clamp, nn.Identity(), fold_bn_after(fold_preactivation_into(conv1, scale, const), bn2),
                                nn.Identity(), nn.ReLU(inplace=True), copy.deepcopy(conv2))


def _fuse_classifier(model: ResidualAttentionNetwork) -> None:
    """head_bn -> ReLU -> average pool -> FC: the BN's scale and constant go into the FC."""
    clamp, scale, const = _preactivation(model.head_bn)
    fc = model.fc
    weight = fc.weight.detach().double()
    bias = fc.bias.detach().double() if fc.bias is not None else weight.new_zeros(fc.out_features)
    fused = nn.Linear(fc.in_features, fc.out_features, bias=True)
    fused.weight = nn.Parameter((weight * scale.reshape(1, -1)).to(fc.weight), requires_grad=fc.weight.requires_grad)
    fused.bias = nn.Parameter((bias + weight @ const).to(fc.weight), requires_grad=fc.weight.requires_grad)
    model.head_bn, model.relu, model.fc = clamp, nn.Identity(), fused


@torch.no_grad()
def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A new model in eval mode that computes what `model` computes in eval mode with every
    BatchNorm folded away (see the module docstring); `model` is left untouched.

    For inference only: the result has no BatchNorm layers to train. Attention modules,
    their trunk, soft mask branch (with its activation) and attention residual keep their
    names and classes, so `resattn.trace` and interventions work on the result unchanged.
    """
    if not isinstance(model, ResidualAttentionNetwork):
        raise ResattnError(f"fuse_for_inference expects a ResidualAttentionNetwork (from resattn.create_model), "
                           f"got {type(model).__name__}.")
    fused = copy.deepcopy(model).eval()
    if getattr(model, "fused_for_inference", False):
        return fused  # already folded: nothing left to fold
    # Replace units inside their containers (found first, replaced after: no mutation while walking).
    slots = [(parent, name, child) for parent in fused.modules() for name, child in parent.named_children()
             if isinstance(child, ResidualUnit)]
    for parent, name, unit in slots:
        setattr(parent, name, FusedResidualUnit(unit))
    for module in list(fused.modules()):
        if isinstance(module, SoftMaskBranch):
            _fuse_mask_head(module)
    stem = fused.stem
    if len(stem) == 4 and isinstance(stem[1], nn.BatchNorm2d):  # ImageNet stem: conv, BN, ReLU, max-pool
        fused.stem = nn.Sequential(fold_bn_after(stem[0], stem[1]), nn.Identity(), stem[2], stem[3])
    _fuse_classifier(fused)
    fused.fused_for_inference = True
    return fused


def optimise_for_inference(model: nn.Module, *, fuse: bool = True, channels_last: bool = True) -> nn.Module:
    """`fuse_for_inference` and/or channels_last, as the app and `resattn.bench` use them.
    Always returns a new model in eval mode; feed it channels_last inputs for full speed."""
    out = fuse_for_inference(model) if fuse else copy.deepcopy(model).eval()
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    return out
