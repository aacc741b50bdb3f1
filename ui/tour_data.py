"""What the guided tour draws, computed by resattn.teaching and cached like ui/cache.py
(every key starts with the trace key, so a new checkpoint file or image never reuses a
result). Each entry is a few small arrays: maps reduced over channels, at most a handful
of single channels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from resattn import teaching
from resattn.analysis.reduce import reduce_channels

from . import cache

STEM_CHANNELS = 8


@dataclass
class StepMaps:
    label: str
    shape: tuple[int, int, int]  # C x h x w, as measured
    mean: np.ndarray  # h x w: the mean over channels
    channels: np.ndarray | None = None  # k x h x w: the channels with the most energy (stem only)
    indices: list[int] | None = None


def _maps(step: teaching.Step, top: int = 0) -> StepMaps:
    out = StepMaps(step.label, step.shape, reduce_channels(step.tensor, "mean").numpy().copy())
    if top:
        indices = teaching.top_mask_channels(step.tensor, top)  # here: the stem's most energetic features
        out.channels, out.indices = step.tensor[indices].numpy().copy(), indices
    return out


@st.cache_data(max_entries=cache.DERIVED_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def stem(key: tuple, _image) -> list[StepMaps]:
    """The image and the stem's outputs (sizes measured on this input); the last one with
    its STEM_CHANNELS most energetic channels."""
    model, _, x = cache.model_and_input(key, _image, eager=True)  # the stem as built: conv, BN, ReLU, max-pool
    steps = teaching.stem_steps(model, x)
    return [_maps(s, STEM_CHANNELS if i == len(steps) - 1 else 0) for i, s in enumerate(steps)]


@st.cache_data(max_entries=cache.DERIVED_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def mask_branch(key: tuple, _image, module: str) -> list[StepMaps]:
    """One module's soft mask branch, step by step (resattn.teaching.mask_branch_steps)."""
    model, _, x = cache.model_and_input(key, _image, eager=True)  # the branch as built (its BN-ReLU head)
    return [_maps(s) for s in teaching.mask_branch_steps(model, x, module)]


@st.cache_data(max_entries=cache.DERIVED_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def combinations(key: tuple, _image) -> dict[str, dict[str, dict]]:
    """Per module with a mask: T, (1+M)·T and M·T as channel-mean maps and mean |·|."""
    out = {}
    for module in cache.image_trace(key, _image).modules:
        if module.mask is None:
            continue
        tensors = teaching.combinations(module.trunk, module.mask)
        out[module.name] = {name: {"map": reduce_channels(t, "mean").numpy().copy(), "size": float(t.abs().mean())}
                            for name, t in tensors.items()}
    return out
