"""How well a module's mask agrees with an attribution map.

Both maps must have the same size (resize the mask with `reduce.to_image_size` first; the
report compares both on a small common grid, see `to_grid`). Three numbers, each answering
a different question:

- `spearman`: do the two maps rank the pixels alike? (rank correlation, -1 .. 1).
- `topk_iou`: do their top-k % regions overlap? (intersection over union, 0 .. 1).
- `pointing_game`: does the mask's single peak fall inside the attribution's top-k %
  region? (the pointing game of Zhang et al., 2016, with the attribution's top region
  standing in for the ground-truth box).

Ties are broken at random with a fixed seed, the same way for a value and for its nulls
(`resattn.analysis.nulls`): every map becomes a strict ranking of its pixels, its top-k %
region holds exactly ceil(k * n) pixels and its peak is one pixel. Without this, a
Grad-CAM map that ReLU set to zero over most of the image has a top region far larger
than k %, which random regions meet far more often than k % of the time, and a constant
map has no ranking at all. With it, no image is ever dropped: a constant map ranks its
pixels at random, which is what "no information" means for every metric.

Everything works on rank arrays (`tie_broken_ranks`: 0 = lowest, n - 1 = highest), so the
nulls can evaluate thousands of pairs at once (`rank_metrics` broadcasts).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ResattnError

DEFAULT_TOP_FRACTION = 0.2
DEFAULT_SEED = 0
METRICS = ("spearman", "iou", "pointing")
METRIC_LABELS = {"spearman": "Spearman ρ", "iou": "top-20 % IoU", "pointing": "pointing game"}


def rng_for(seed: int, *keys) -> np.random.Generator:
    """A generator seeded by `seed` and any keys (ints or strings), the same in every
    process: strings enter through CRC-32, never through Python's per-process hash."""
    entropy = [int(seed) & 0xFFFFFFFF]
    for key in keys:
        entropy.append(zlib.crc32(key.encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFF)
    return np.random.default_rng(entropy)


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


def tie_broken_ranks(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ranks 0 .. n - 1 along the last axis (0 = lowest value); equal values are ordered by
    a random key from `rng`. int32, same shape as `values`. NaN ranks highest (none of
    our maps holds NaN; this only keeps the ranks a permutation)."""
    values = np.asarray(values, dtype=np.float64)
    key = rng.random(values.shape)
    # Sort by the random key first, then stably by value: ties keep the random order.
    by_key = np.argsort(key, axis=-1)
    by_value = np.argsort(np.take_along_axis(values, by_key, axis=-1), axis=-1, kind="stable")
    order = np.take_along_axis(by_key, by_value, axis=-1)
    ranks = np.empty(order.shape, dtype=np.int32)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(values.shape[-1], dtype=np.int32), values.shape),
                      axis=-1)
    return ranks


def top_count(n: int, fraction: float = DEFAULT_TOP_FRACTION) -> int:
    if not 0 < fraction <= 1:
        raise ResattnError(f"The top fraction must be in (0, 1], got {fraction}.")
    return max(1, math.ceil(fraction * n))


def rank_metrics(mask_ranks: np.ndarray, attribution_ranks: np.ndarray,
                 fraction: float = DEFAULT_TOP_FRACTION) -> dict[str, np.ndarray]:
    """Spearman, top-k IoU and pointing (1.0 hit / 0.0 miss) of rank arrays (..., n) that
    broadcast against each other. Ranks are permutations of 0 .. n - 1, so Spearman's rho
    is 1 - 6 sum d^2 / (n (n^2 - 1)) exactly."""
    a = np.asarray(mask_ranks)
    b = np.asarray(attribution_ranks)
    n = a.shape[-1]
    if b.shape[-1] != n:
        raise ResattnError(f"The maps differ in size ({n} vs {b.shape[-1]} pixels).")
    if n < 2:
        raise ResattnError("Agreement needs maps of at least 2 pixels.")
    d = a.astype(np.float64) - b.astype(np.float64)
    rho = 1.0 - 6.0 * np.sum(d * d, axis=-1) / (n * (n * n - 1.0))
    count = top_count(n, fraction)
    top_a, top_b = a >= n - count, b >= n - count
    inter = np.sum(top_a & top_b, axis=-1)
    iou = inter / (2.0 * count - inter)
    # The mask's peak is the pixel of rank n - 1; it is a hit when the attribution ranks it
    # among its top `count` pixels.
    peak = np.argmax(a, axis=-1)
    b_full = np.broadcast_to(b, np.broadcast_shapes(a.shape, b.shape))
    peak_full = np.broadcast_to(peak, b_full.shape[:-1])
    hit = np.take_along_axis(b_full, peak_full[..., None], axis=-1)[..., 0] >= n - count
    return {"spearman": rho, "iou": iou, "pointing": hit.astype(np.float64)}


def top_region(map_, fraction: float = DEFAULT_TOP_FRACTION, *, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Boolean h x w: the map's top-`fraction` region, exactly ceil(fraction * n) pixels
    (ties broken at random with `seed`)."""
    array = _flat(map_, "map")
    count = top_count(array.size, fraction)
    ranks = tie_broken_ranks(array.ravel(), rng_for(seed, "map"))
    return (ranks >= array.size - count).reshape(array.shape)


def _pair_ranks(a, b, seed: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _check_pair(a, b)
    return (tie_broken_ranks(a.ravel(), rng_for(seed, "mask")),
            tie_broken_ranks(b.ravel(), rng_for(seed, "attribution")))


def spearman(a, b, *, seed: int = DEFAULT_SEED) -> float:
    """Spearman rank correlation between two maps of the same size (ties at random)."""
    ra, rb = _pair_ranks(a, b, seed)
    return float(rank_metrics(ra, rb)["spearman"])


def topk_iou(a, b, fraction: float = DEFAULT_TOP_FRACTION, *, seed: int = DEFAULT_SEED) -> float:
    """Intersection over union of the two maps' top-`fraction` regions."""
    ra, rb = _pair_ranks(a, b, seed)
    return float(rank_metrics(ra, rb, fraction)["iou"])


def pointing_game(mask_map, attribution_map, fraction: float = DEFAULT_TOP_FRACTION, *,
                  seed: int = DEFAULT_SEED) -> bool:
    """True when the mask's peak lies in the attribution's top-`fraction` region."""
    ra, rb = _pair_ranks(mask_map, attribution_map, seed)
    return bool(rank_metrics(ra, rb, fraction)["pointing"])


@dataclass(frozen=True)
class Agreement:
    spearman: float
    iou: float
    pointing: bool
    fraction: float = DEFAULT_TOP_FRACTION  # the k of top-k %, for labels ("IoU @ 20 %")

    def as_dict(self) -> dict:
        return asdict(self)


def agreement(mask_map, attribution_map, fraction: float = DEFAULT_TOP_FRACTION, *,
              seed: int = DEFAULT_SEED) -> Agreement:
    """All three numbers for one (mask map, attribution map) pair of the same size."""
    ra, rb = _pair_ranks(mask_map, attribution_map, seed)
    values = rank_metrics(ra, rb, fraction)
    return Agreement(float(values["spearman"]), float(values["iou"]), bool(values["pointing"]), fraction)


def to_grid(map_, grid: int) -> torch.Tensor:
    """A map h x w (or N x h x w) on the grid x grid on which the report compares maps:
    area-averaged when larger (an attribution at image size), bilinear when smaller (a
    mask at its module's resolution)."""
    tensor = map_ if isinstance(map_, torch.Tensor) else torch.as_tensor(np.asarray(map_))
    batch = tensor.float()
    single = batch.ndim == 2
    batch = batch[None, None] if single else batch[:, None]
    h, w = batch.shape[-2:]
    if (h, w) != (grid, grid):
        if h >= grid and w >= grid:
            batch = F.interpolate(batch, size=(grid, grid), mode="area")
        else:
            batch = F.interpolate(batch, size=(grid, grid), mode="bilinear", align_corners=False)
    return batch[0, 0] if single else batch[:, 0]
