"""What the guided tour, the default photo and the paper's Figure 1 compute: plain
functions of a model and an image, no Streamlit.

- `first_confident`: the rule that picks the app's default photo (the first image, in the
  given order, that the model classifies correctly with probability >= a threshold).
- `stem_steps`, `mask_branch_steps`: the real tensors (and so the real sizes) at each step
  of the stem and of one module's soft mask branch, recorded with hooks in one forward pass.
- `top_mask_channels`: the channels of a module's mask with the most energy (Figure 1).
- `combinations`: a module's T, (1 + M)·T and M·T side by side.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .analysis.reduce import channel_energy
from .errors import ResattnError
from .hooks import Hook, forward_hooks, model_lock
from .model import attention_modules

DEFAULT_THRESHOLD = 0.8


def first_confident(model: nn.Module, images: torch.Tensor, labels, *, threshold: float = DEFAULT_THRESHOLD,
                    batch_size: int = 32) -> int | None:
    """The index of the first image (N x 3 x H x W, preprocessed) whose predicted class is
    its label with softmax probability >= `threshold`, or None. `labels` are class indices of
    the model; a negative label (a class the model does not know) never matches. Images are
    scored a batch at a time, so a match near the start costs one small batch."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(labels) != len(images):
        raise ResattnError(f"first_confident needs one label per image, got {len(labels)} for {len(images)}.")
    device = next(model.parameters()).device
    with model_lock(model), torch.inference_mode():
        for start in range(0, len(images), batch_size):
            probs = torch.softmax(model(images[start:start + batch_size].to(device)).float(), dim=1).cpu()
            best, predicted = probs.max(dim=1)
            wanted = labels[start:start + batch_size]
            hits = torch.nonzero((predicted == wanted) & (wanted >= 0) & (best >= threshold)).flatten()
            if len(hits):
                return start + int(hits[0])
    return None


@dataclass
class Step:
    """One tensor on the way through the network (first image of the batch): what made it
    and its values, C x h x w."""
    label: str
    tensor: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.tensor.shape)

    @property
    def size_text(self) -> str:
        c, h, w = self.shape
        return f"{c} × {h} × {w}"


def _record(model: nn.Module, x: torch.Tensor, spots: list[tuple[nn.Module, str, bool]]) -> list[Step]:
    """One forward pass of `x` recording, in the order they happen, the output (or, with
    pre=True, the input) of every module in `spots` (module, label, pre). Hooks are removed
    afterwards, ignore other threads' passes and hold the model's lock (resattn.hooks)."""
    steps: list[Step] = []

    def keeper(label: str):
        def keep(tensor):
            steps.append(Step(label, tensor[0].detach().float().cpu().clone()))
        return keep

    hooks = [Hook(module, (lambda m, args, keep=keeper(label): keep(args[0])), pre=True) if pre
             else Hook(module, lambda m, args, out, keep=keeper(label): keep(out))
             for module, label, pre in spots]
    with forward_hooks(model, hooks), torch.inference_mode():
        model(x)
    return steps


def stem_steps(model: nn.Module, x: torch.Tensor) -> list[Step]:
    """The image and what the stem makes of it: after each layer of the stem that changes
    the tensor's size (the ImageNet stem: 7 x 7 convolution with stride 2, then 3 x 3
    max-pooling with stride 2; the CIFAR stem: one 3 x 3 convolution)."""
    stem = getattr(model, "stem", None)
    if stem is None:
        raise ResattnError("This model has no stem to show (expected a network from resattn.create_model).")
    spots = []
    for layer in stem:
        if isinstance(layer, nn.Conv2d):
            k, s = layer.kernel_size[0], layer.stride[0]
            spots.append((layer, f"{k}×{k} convolution, stride {s}", False))
        elif isinstance(layer, nn.MaxPool2d):
            k, s = layer.kernel_size, layer.stride
            spots.append((layer, f"{k}×{k} max-pooling, stride {s}", False))
    return [Step("the image (3 colour channels)", x[0].detach().float().cpu().clone())] + _record(model, x, spots)


def _module(model: nn.Module, name: str):
    for qualified, module in attention_modules(model):
        if qualified == name:
            return module
    raise ResattnError(f"No attention module {name!r} in this model: choose one of "
                       f"{', '.join(n for n, _ in attention_modules(model))}.")


def mask_branch_steps(model: nn.Module, x: torch.Tensor, module: str) -> list[Step]:
    """The soft mask branch of one attention module on `x`, step by step: its input, each
    max-pool + residual unit(s) going down, each bilinear up-sampling + skip + unit going
    up, the two 1 x 1 convolutions back at the input's resolution (the mask logits) and
    the mask M after the activation. The sizes are those of this input, measured."""
    branch = _module(model, module).soft_mask_branch
    if branch is None:
        raise ResattnError(f"{module} has no soft mask branch (attention 'none'): choose an attention checkpoint.")
    spots = [(branch, "input of the mask branch", True)]
    for level, units in enumerate(branch.down):
        what = "lowest resolution: " if level == branch.pools - 1 else ""
        spots.append((units, f"down {level + 1}: {what}max-pool + {len(units)} unit{'s' if len(units) > 1 else ''}",
                      False))
    for step, level in enumerate(reversed(range(branch.pools - 1))):
        spots.append((branch.up[level], f"up {step + 1}: bilinear up-sampling + skip + unit", False))
    spots.append((branch.head, "up to the input size, two 1×1 convolutions: the mask logits", False))
    spots.append((branch.activation, f"M = f(logits), f = {branch.activation.kind}", False))
    return _record(model, x, spots)


def top_mask_channels(mask: torch.Tensor, k: int = 4) -> list[int]:
    """The k channels of a mask (C x h x w) with the most energy (mean of M² over the
    positions), most first: the channels that do most of the attending on this image."""
    mask = torch.as_tensor(mask)
    if mask.ndim != 3:
        raise ResattnError(f"top_mask_channels takes one mask, C x h x w, got shape {tuple(mask.shape)}.")
    return channel_energy(mask).argsort(descending=True)[:max(1, int(k))].tolist()


def combinations(trunk: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """T, (1 + M)·T (attention residual learning) and M·T (naive attention) of one module,
    computed as resattn.model.AttentionResidual computes them."""
    trunk, mask = torch.as_tensor(trunk), torch.as_tensor(mask)
    if trunk.shape != mask.shape:
        raise ResattnError(f"T and M must have one shape, got {tuple(trunk.shape)} and {tuple(mask.shape)}.")
    return {"T": trunk, "(1+M)·T": trunk * mask + trunk, "M·T": trunk * mask}
