"""Mask interventions: run the model with one attention module's soft mask M replaced, and
see what changes (top-5 probabilities, the masks of later modules).

Modes (`INTERVENTIONS`):
  "zero"          M = 0. For ARL, H = (1 + 0)·T = T exactly: the module becomes its trunk.
                  For NAL, H = 0·T = 0: the module's attention path is switched off.
  "one"           M = 1 (ARL: H = 2T; NAL: H = T).
  "constant"      M = `value` everywhere.
  "spatial_mean"  every channel of M replaced by its mean over positions (keeps "what",
                  removes "where").
  "from_image"    M taken from another image's trace (`mask`: C x h x w or N x C x h x w),
                  bilinearly resized when the spatial size differs.
  "randomise"     the convolution weights of the module's soft mask branch replaced by
                  seeded Gaussian noise, each filter rescaled to the norm of the trained
                  filter it replaces; every BatchNorm (affine parameters and running
                  statistics) is kept. The model randomisation sanity check of Adebayo et al.
                  (2018), applied to one branch (`randomise_mask_branches`). Keeping the
                  BatchNorm statistics and the filter norms keeps the branch's activations
                  at their trained scale: re-initialising BatchNorm as well (mean 0,
                  variance 1) lets them grow until the sigmoid saturates, so the effect
                  measured would be that of a saturated mask, not of a random one.
                  This runs on a deep copy; the caller's model is never modified.

The replacement is a forward hook on the module's `soft_mask_branch` that returns the new
mask, so `attention_residual` (and `trace`'s record of M and H) sees the replaced mask. It
goes through `resattn.hooks.forward_hooks`: it holds the model's lock, acts only on the
calling thread's forward passes, and is removed when the block ends, also when it raises.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResattnError
from ..hooks import Hook, forward_hooks, model_lock
from ..model import attention_modules
from ..trace import Trace, trace

INTERVENTIONS = ("zero", "one", "constant", "spatial_mean", "from_image", "randomise")
INTERVENTION_LABELS = {
    "zero": "M = 0", "one": "M = 1", "constant": "M = constant", "spatial_mean": "M = its spatial mean",
    "from_image": "M from another image", "randomise": "mask branch randomised",
}


def _attention_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(attention_modules(model))
    if name not in modules:
        raise ResattnError(f"No attention module {name!r}; this model has {', '.join(modules) or 'none'}.")
    module = modules[name]
    if module.soft_mask_branch is None:
        raise ResattnError(f"Module {name!r} has no soft mask branch (attention 'none'): there is no mask to "
                           "intervene on; choose a checkpoint with attention.")
    return module


def mask_replacement(mode: str, *, value: float = 0.5, mask: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function M -> replacement for the hook-based modes (all but "randomise")."""
    if mode == "zero":
        return torch.zeros_like
    if mode == "one":
        return torch.ones_like
    if mode == "constant":
        value = float(value)
        return lambda m: torch.full_like(m, value)
    if mode == "spatial_mean":
        return lambda m: m.mean(dim=(2, 3), keepdim=True).expand_as(m).contiguous()
    if mode == "from_image":
        if not isinstance(mask, torch.Tensor) or mask.ndim not in (3, 4):
            raise ResattnError("'from_image' needs the other image's mask, a tensor C x h x w or N x C x h x w "
                               "(e.g. other_trace['stage2.1'].mask).")
        source = mask if mask.ndim == 4 else mask.unsqueeze(0)

        def from_image(m: torch.Tensor) -> torch.Tensor:
            if source.shape[1] != m.shape[1]:
                raise ResattnError(f"The other mask has {source.shape[1]} channels, this module's has {m.shape[1]}: "
                                   "take it from the same module of the same kind of model.")
            if source.shape[0] not in (1, m.shape[0]):
                raise ResattnError(f"The other mask holds {source.shape[0]} images; give 1 or {m.shape[0]}.")
            other = source.to(device=m.device, dtype=m.dtype)
            if other.shape[-2:] != m.shape[-2:]:
                other = F.interpolate(other, size=tuple(m.shape[-2:]), mode="bilinear", align_corners=False)
            return other.expand_as(m).contiguous()

        return from_image
    if mode == "randomise":
        raise ResattnError("'randomise' changes weights, not the mask: use intervene(..., mode='randomise').")
    raise ResattnError(f"Unknown intervention {mode!r}: choose one of {', '.join(INTERVENTIONS)}.")


@contextmanager
def replaced_mask(model: nn.Module, module: str, replace: Callable[[torch.Tensor], torch.Tensor]):
    """Within the block, the soft mask of attention module `module` is `replace(M)` for
    forward passes made by this thread. Nests with `trace` (same re-entrant lock)."""
    branch = _attention_module(model, module).soft_mask_branch
    with forward_hooks(model, [Hook(branch, lambda mod, args, out: replace(out))]):
        yield


def randomise_mask_branches(model: nn.Module, modules: list[str], seed: int = 0) -> nn.Module:
    """A deep copy of `model` in which the soft mask branch of every attention module named
    in `modules` has random convolution weights: seeded Gaussian noise, each output filter
    rescaled to the L2 norm of the trained filter (an all-zero filter stays zero). BatchNorm
    layers, their running statistics and any bias are kept. The caller's model is untouched.
    Each module draws from its own generator (seed and name), so randomising a module gives
    the same weights whatever else is randomised with it."""
    from .agreement import rng_for

    if getattr(model, "fused_for_inference", False):
        raise ResattnError("Randomising a mask branch needs the model as trained: this one has its BatchNorm layers "
                           "folded (optimise_for_inference), so the check would rescale folded filters and keep no "
                           "BatchNorm. Pass the model from load_checkpoint.")
    for name in modules:
        _attention_module(model, name)
    with model_lock(model):  # no other thread's hooks are attached while copying
        clone = copy.deepcopy(model)
    with torch.no_grad():
        for name in modules:
            branch = _attention_module(clone, name).soft_mask_branch
            generator = torch.Generator(device="cpu").manual_seed(int(rng_for(seed, "randomise", name).integers(2**62)))
            for layer in branch.modules():
                if isinstance(layer, nn.Conv2d):
                    trained = layer.weight.detach().float().cpu()
                    noise = torch.randn(trained.shape, generator=generator)
                    norms = trained.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp(min=1e-12)
                    layer.weight.copy_((noise * norms.view(-1, *([1] * (noise.ndim - 1)))).to(layer.weight))
    return clone


def cascade_steps(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The cascading randomisation of Adebayo et al. (2018), from the top of the network
    down, over the stages that have soft masks: [("stage3", modules of stage 3),
    ("stage2", modules of stages 3 and 2), ...]. The label names the lowest stage
    randomised ("randomised through stage 2"); the list holds every masked module of that
    stage and above."""
    masked = [(name, module.stage) for name, module in attention_modules(model) if module.soft_mask_branch is not None]
    steps = []
    for stage in sorted({s for _, s in masked}, reverse=True):
        steps.append((f"stage{stage}", [name for name, s in masked if s >= stage]))
    return steps


def randomised_copy(model: nn.Module, module: str, seed: int = 0) -> nn.Module:
    """A deep copy of `model` whose attention module `module` has a randomised soft mask
    branch (see `randomise_mask_branches`); the original model is untouched."""
    return randomise_mask_branches(model, [module], seed)


@dataclass
class InterventionResult:
    module: str
    mode: str
    before: Trace  # the unmodified run
    after: Trace  # the run with the intervention; its later modules show the knock-on effect

    @property
    def probabilities_before(self) -> torch.Tensor:
        return self.before.logits.float().softmax(dim=1)

    @property
    def probabilities_after(self) -> torch.Tensor:
        return self.after.logits.float().softmax(dim=1)

    def top5(self, which: str = "before") -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, class indices), each N x min(5, classes), of the run `which`."""
        probs = self.probabilities_before if which == "before" else self.probabilities_after
        values, indices = probs.topk(min(5, probs.shape[1]), dim=1)
        return values, indices

    def top5_table(self, image: int = 0) -> list[dict]:
        """Rows {class, before, after, change} for the union of both runs' top-5 classes of
        one image, ordered by the probability before."""
        before, after = self.probabilities_before[image], self.probabilities_after[image]
        classes = set(self.top5("before")[1][image].tolist()) | set(self.top5("after")[1][image].tolist())
        rows = [{"class": c, "before": float(before[c]), "after": float(after[c]),
                 "change": float(after[c] - before[c])} for c in classes]
        return sorted(rows, key=lambda r: -r["before"])

    def mask_change(self) -> dict[str, float]:
        """Mean |M_after - M_before| per module (0 for modules before the intervened one,
        up to numerical noise; the intervened module shows the replacement itself)."""
        changes = {}
        for b, a in zip(self.before.modules, self.after.modules):
            if b.mask is not None and a.mask is not None:
                changes[b.name] = float((a.mask.float() - b.mask.float()).abs().mean())
        return changes

    def summary(self, image: int = 0, *, classes: Sequence[str] | None = None, reduce: str = "mean",
                channel: int = 0, k: int = 8) -> "InterventionSummary":
        """What a page shows of image `image`, on the CPU and small enough to cache many (an
        InterventionResult holds two full traces): the probabilities, the top-5 table (with
        "name" from `classes` when given), the mask change, every mask reduced over channels
        (`reduce`, `channel`, `k` as resattn.analysis.reduce_channels) before and after, and
        the identity measured at the intervened module: with M = 0 under ARL, H = T exactly;
        with M = 1, H = 2T."""
        from .reduce import reduce_channels

        def maps(tr: Trace) -> dict[str, torch.Tensor]:
            return {r.name: reduce_channels(r.mask[image].float().cpu(), reduce, channel=min(int(channel),
                                            r.mask.shape[1] - 1), k=k) for r in tr.modules if r.mask is not None}

        rows = self.top5_table(image)
        if classes is not None:
            rows = [{"name": classes[r["class"]], **r} for r in rows]
        record = self.after[self.module]
        trunk, output = record.trunk[image].float(), record.output[image].float()
        identity = {"max_abs_H_minus_T": float((output - trunk).abs().max()), "max_abs_H": float(output.abs().max()),
                    "max_abs_T": float(trunk.abs().max()),
                    "max_abs_H_minus_2T": float((output - 2 * trunk).abs().max())}
        return InterventionSummary(self.module, self.mode, self.probabilities_before[image].cpu(),
                                   self.probabilities_after[image].cpu(), rows, self.mask_change(),
                                   maps(self.before), maps(self.after), identity)


@dataclass(frozen=True)
class InterventionSummary:
    """One image's intervention as `InterventionResult.summary` reduces it (CPU tensors)."""
    module: str
    mode: str
    probabilities_before: torch.Tensor  # classes
    probabilities_after: torch.Tensor
    top5: list[dict]  # InterventionResult.top5_table rows, with "name" when classes were given
    mask_change: dict[str, float]  # module -> mean |M after - M before| (all images of the run)
    maps_before: dict[str, torch.Tensor]  # module -> its mask reduced over channels, h x w
    maps_after: dict[str, torch.Tensor]
    identity: dict[str, float]  # at the intervened module: max |H - T|, max |H|, max |T|, max |H - 2T|


def intervene(model: nn.Module, images: torch.Tensor, module: str, mode: str, *, value: float = 0.5,
              mask: torch.Tensor | None = None, seed: int = 0, before: Trace | None = None) -> InterventionResult:
    """Trace `images` with and without the intervention `mode` on attention module `module`.

    `before` may pass an existing trace of the same images to save one forward pass.
    """
    if mode not in INTERVENTIONS:
        raise ResattnError(f"Unknown intervention {mode!r}: choose one of {', '.join(INTERVENTIONS)}.")
    _attention_module(model, module)
    if before is None:
        before = trace(model, images)
    if mode == "randomise":
        after = trace(randomised_copy(model, module, seed), images)
    else:
        with replaced_mask(model, module, mask_replacement(mode, value=value, mask=mask)):
            after = trace(model, images)
    return InterventionResult(module, mode, before, after)
