"""How well a module's mask agrees with an attribution map.

Both maps must have the same size (resize the mask with `reduce.to_image_size` first).
Three numbers, each answering a different question:

- `spearman`: do the two maps rank the pixels alike? (rank correlation, -1 .. 1; ties get
  average ranks; NaN when either map is constant, because a rank order does not exist).
- `topk_iou`: do their top-k % regions overlap? (intersection over union, 0 .. 1).
- `pointing_game`: does the mask's single peak fall inside the attribution's top-k %
  region? (the pointing game of Zhang et al., 2016, with the attribution's top region
  standing in for the ground-truth box).

Top-k % region (used by both): every pixel whose value is at least the value of the
ceil(k * n)-th largest pixel. Ties at that threshold are all included, so the region is
exactly k % of the pixels when values are distinct and larger where the map is flat at the
threshold (e.g. a Grad-CAM map that is zero over most of the image). This keeps the
region a deterministic function of the map, never of the order of pixels in memory.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from ..errors import ResattnError

DEFAULT_TOP_FRACTION = 0.2


def _flat(map_, name: str) -> np.ndarray:
    array = map_.detach().float().cpu().numpy() if isinstance(map_, torch.Tensor) else np.asarray(map_, dtype=np.float64)
    if array.ndim != 2:
        raise ResattnError(f"The {name} must be one map h x w, got shape {array.shape}.")
    return array


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _flat(a, "first map"), _flat(b, "second map")
    if a.shape != b.shape:
        raise ResattnError(f"The maps differ in size ({a.shape} vs {b.shape}); resize the mask to the "
                           "attribution's size with to_image_size first.")
    return a, b


def top_region(map_, fraction: float = DEFAULT_TOP_FRACTION) -> np.ndarray:
    """Boolean h x w: the map's top-`fraction` region (see the module docstring for ties)."""
    array = _flat(map_, "map")
    if not 0 < fraction <= 1:
        raise ResattnError(f"The top fraction must be in (0, 1], got {fraction}.")
    values = array.ravel()
    count = max(1, math.ceil(fraction * values.size))
    threshold = np.partition(values, values.size - count)[values.size - count]
    return array >= threshold


def spearman(a, b) -> float:
    """Spearman rank correlation between two maps of the same size (NaN if one is constant)."""
    from scipy.stats import spearmanr  # scipy.stats is slow to import; only needed here

    a, b = _check_pair(a, b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def topk_iou(a, b, fraction: float = DEFAULT_TOP_FRACTION) -> float:
    """Intersection over union of the two maps' top-`fraction` regions."""
    a, b = _check_pair(a, b)
    ra, rb = top_region(a, fraction), top_region(b, fraction)
    return float((ra & rb).sum() / (ra | rb).sum())


def pointing_game(mask_map, attribution_map, fraction: float = DEFAULT_TOP_FRACTION) -> bool:
    """True when the mask's peak (its first maximum in row-major order) lies in the
    attribution's top-`fraction` region."""
    m, a = _check_pair(mask_map, attribution_map)
    peak = np.unravel_index(int(np.argmax(m)), m.shape)
    return bool(top_region(a, fraction)[peak])


@dataclass(frozen=True)
class Agreement:
    spearman: float
    iou: float
    pointing: bool
    fraction: float = DEFAULT_TOP_FRACTION  # the k of top-k %, for labels ("IoU @ 20 %")

    def as_dict(self) -> dict:
        return asdict(self)


def agreement(mask_map, attribution_map, fraction: float = DEFAULT_TOP_FRACTION) -> Agreement:
    """All three numbers for one (mask map, attribution map) pair of the same size."""
    return Agreement(spearman(mask_map, attribution_map), topk_iou(mask_map, attribution_map, fraction),
                     pointing_game(mask_map, attribution_map, fraction), fraction)
