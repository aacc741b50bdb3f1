"""One forward pass that records, for every attention module, its input, trunk output T,
soft mask M (after the activation) and combination H = (1+M)·T or M·T.

Hooks go through `resattn.hooks.forward_hooks`: registered for the duration of one call and
always removed (also when the forward pass raises); calls on the same model are serialised
by a per-model lock, and the hooks ignore forward passes made by other threads, so several
threads (Streamlit sessions) may trace and run models at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import ResattnError
from .hooks import Hook, forward_hooks, model_lock
from .model import attention_modules

__all__ = ["ModuleRecord", "Trace", "attention_modules", "model_lock", "module_order", "trace"]


@dataclass
class ModuleRecord:
    name: str  # qualified module name, e.g. "stage2.1"
    stage: int
    input: torch.Tensor | None = None  # N x C x h x w, what the module received
    trunk: torch.Tensor | None = None  # T
    mask: torch.Tensor | None = None  # M after the activation; None when attention="none"
    output: torch.Tensor | None = None  # H, before the trailing p units

    @property
    def index(self) -> int:
        return int(self.name.rsplit(".", 1)[-1])


@dataclass
class Trace:
    logits: torch.Tensor
    modules: list[ModuleRecord] = field(default_factory=list)

    def __getitem__(self, name: str) -> ModuleRecord:
        for record in self.modules:
            if record.name == name:
                return record
        raise KeyError(f"no attention module {name!r}; modules are {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.modules]

    def to(self, device: str | torch.device) -> "Trace":
        """A copy with every tensor on `device` (e.g. "cpu" before caching)."""
        def move(t):
            return None if t is None else t.to(device)
        return Trace(move(self.logits), [ModuleRecord(r.name, r.stage, move(r.input), move(r.trunk), move(r.mask),
                                                       move(r.output)) for r in self.modules])


def module_order(name: str) -> tuple[int, int]:
    """Sort key of a module name "stage<s>.<i>": by stage, then position in the stage, so that
    networks of different depth (Attention-56: 1, 1, 1 modules; -92: 1, 2, 3) line up."""
    stage, _, index = name.removeprefix("stage").partition(".")
    return (int(stage), int(index)) if stage.isdigit() and index.isdigit() else (10**6, 0)


def trace(model: nn.Module, images: torch.Tensor, *, grad: bool = False) -> Trace:
    """Run `images` (N x 3 x H x W float) through `model` once and record every attention
    module. Under `torch.inference_mode` unless `grad=True` (then the records stay in the
    autograd graph, for attribution methods)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ResattnError(f"trace needs images as a float tensor N x 3 x H x W, got {shape}; "
                           "preprocess the image first (card.preprocess(image), card from resattn.load_checkpoint).")
    records: list[ModuleRecord] = []
    hooks: list[Hook] = []
    for name, module in attention_modules(model):
        record = ModuleRecord(name, module.stage)
        records.append(record)

        def on_input(mod, args, record=record):
            record.input = args[0]

        def on_trunk(mod, args, out, record=record, has_mask=module.soft_mask_branch is not None):
            record.trunk = out
            if not has_mask:
                record.output = out  # no mask branch: H = T

        def on_mask(mod, args, out, record=record):
            record.mask = out

        def on_output(mod, args, out, record=record):
            record.output = out

        hooks += [Hook(module, on_input, pre=True), Hook(module.trunk, on_trunk)]
        if module.soft_mask_branch is not None:
            hooks += [Hook(module.soft_mask_branch, on_mask), Hook(module.attention_residual, on_output)]
    with forward_hooks(model, hooks), (torch.enable_grad() if grad else torch.inference_mode()):
        logits = model(images)
    return Trace(logits, records)
