"""Forward hooks for the length of a `with` block: the one way resattn looks inside a pass.

`resattn.trace`, `resattn.stats.mask_logits`, the tour's steps (`resattn.teaching`) and
mask interventions (`resattn.analysis.interventions.replaced_mask`) all go through
`forward_hooks`, which

- holds the model's lock (`model_lock`, re-entrant, one per model) for the whole block, so
  hooked passes on one model never interleave and a trace may run inside an intervention;
- wraps every hook so that it acts only on forward passes of the thread that registered it
  (other threads, e.g. other Streamlit sessions, may run the same model meanwhile);
- removes every hook when the block ends, also when it raises.
"""
from __future__ import annotations

import threading
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from torch import nn

_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that serialises hooked passes on `model` (also held by attribution methods
    and interventions)."""
    with _locks_guard:
        return _locks.setdefault(model, threading.RLock())


@dataclass(frozen=True)
class Hook:
    """`fn` on `module`: with pre=False a forward hook fn(module, args, output) whose non-None
    result replaces the output; with pre=True a pre-hook fn(module, args)."""
    module: nn.Module
    fn: Callable
    pre: bool = False


def _this_thread_only(fn: Callable, thread: int) -> Callable:
    def hook(*args):
        if threading.get_ident() != thread:
            return None
        return fn(*args)

    return hook


@contextmanager
def forward_hooks(model: nn.Module, hooks: Iterable[Hook]) -> Iterator[None]:
    """Within the block, `hooks` are registered on their modules of `model` for this
    thread's forward passes; the model's lock is held; on exit every hook is removed."""
    thread = threading.get_ident()
    with model_lock(model), ExitStack() as registered:
        for hook in hooks:
            fn = _this_thread_only(hook.fn, thread)
            handle = hook.module.register_forward_pre_hook(fn) if hook.pre else hook.module.register_forward_hook(fn)
            registered.callback(handle.remove)
        yield
