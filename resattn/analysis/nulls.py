"""Empirical nulls for the agreement of masks with attributions: what the same metric gives
when the mask and the attribution have nothing to do with each other.

Two nulls, because "unrelated" can fail in two ways:

- shuffle null: the mask of image i against the attribution of another image j. It keeps
  everything both kinds of map do on *every* image (a centre bias, a border effect, the
  smoothness of each) and breaks only the pairing. Draw k pairs image i with image
  (i + offset_k) mod N, so each draw is a derangement of the whole set and the mean over
  images under draw k is one sample of the mean under the null (`shuffle_offsets`).
- smooth null: the attribution of image i against random maps with the spatial
  autocorrelation of image i's mask: phase-randomised surrogates (Theiler et al., 1992) of
  the reduced mask at its module's own resolution (same power spectrum, hence the same
  periodic autocorrelation, random phases), resized to the comparison grid exactly like
  the mask. It keeps the mask's smoothness and breaks everything else.

Both nulls go through the same tie-breaking and metric code as the value (`agreement`).
The seeds are derived from the image's index in the whole set (never from a process's
shard), so a sharded run draws exactly what a single process draws.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ResattnError
from .agreement import DEFAULT_TOP_FRACTION, METRICS, rank_metrics, rng_for, tie_broken_ranks, to_grid

DEFAULT_DRAWS = 100
DEFAULT_GRID = 32
NULLS = ("shuffle", "smooth")
NULL_LABELS = {"shuffle": "attributions of other images", "smooth": "smooth random maps like the mask"}


def phase_surrogates(map_: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random maps (count x h x w) with the power spectrum and mean of `map_` (h x w):
    the Fourier amplitudes are kept, the phases are those of white noise (so the result is
    real). A constant map gives constant surrogates."""
    array = np.asarray(map_, dtype=np.float64)
    if array.ndim != 2:
        raise ResattnError(f"A surrogate needs one map h x w, got shape {array.shape}.")
    h, w = array.shape
    mean = array.mean()
    amplitude = np.abs(np.fft.rfft2(array - mean))
    phases = np.angle(np.fft.rfft2(rng.standard_normal((int(count), h, w))))
    return np.fft.irfft2(amplitude * np.exp(1j * phases), s=(h, w)) + mean


def shuffle_offsets(n_images: int, draws: int = DEFAULT_DRAWS, seed: int = 0) -> np.ndarray:
    """Distinct offsets in 1 .. N - 1 (at most `draws` of them): draw k pairs image i with
    image (i + offset_k) mod N. Empty for a set of one image (no shuffle null exists)."""
    if n_images < 2:
        return np.zeros(0, dtype=np.int64)
    rng = rng_for(seed, "shuffle offsets", n_images)
    count = min(int(draws), n_images - 1)
    return np.sort(rng.choice(np.arange(1, n_images), size=count, replace=False)).astype(np.int64)


def method_key(method: str, module: str) -> str:
    """The attribution map a cell compares with: Grad-CAM at the module's own output is a
    different map for every module; the other methods are one map per image."""
    return f"grad_cam_module:{module}" if method == "grad_cam_module" else method


@dataclass
class MaskRanks:
    """The tie-broken ranks of one image's reduced masks and of their smooth surrogates."""
    ranks: dict[tuple[str, str], np.ndarray]  # (module, reduction) -> n
    surrogates: dict[tuple[str, str], np.ndarray]  # (module, reduction) -> draws x n


def mask_ranks(native_maps: dict[tuple[str, str], np.ndarray], *, image: int, grid: int = DEFAULT_GRID,
               draws: int = DEFAULT_DRAWS, seed: int = 0) -> MaskRanks:
    """Ranks on the grid x grid comparison grid of each reduced mask (given at its module's
    resolution) and of `draws` phase-randomised surrogates of it."""
    ranks, surrogates = {}, {}
    for (module, reduction), native in native_maps.items():
        native = np.asarray(native, dtype=np.float64)
        ranks[(module, reduction)] = tie_broken_ranks(
            to_grid(torch.from_numpy(native), grid).numpy().ravel(), rng_for(seed, image, "mask", module, reduction))
        if draws > 0:
            rng = rng_for(seed, image, "smooth", module, reduction)
            fake = torch.from_numpy(phase_surrogates(native, draws, rng))
            surrogates[(module, reduction)] = tie_broken_ranks(to_grid(fake, grid).reshape(draws, -1).numpy(), rng)
    return MaskRanks(ranks, surrogates)


def attribution_ranks(grid_maps: dict[str, np.ndarray], *, image: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Tie-broken ranks of one image's attribution maps (already on the comparison grid)."""
    return {key: tie_broken_ranks(np.asarray(m, dtype=np.float64).ravel(), rng_for(seed, image, "attr", key))
            for key, m in grid_maps.items()}


@dataclass
class CellValues:
    """One image's metrics for every (module, reduction, method) cell: the value, and the
    metric under each null draw (NaN-free; `shuffle` is None without other images)."""
    cells: list[tuple[str, str, str]]
    observed: np.ndarray  # cells x metrics
    smooth: np.ndarray  # cells x metrics x draws
    shuffle: np.ndarray | None  # cells x metrics x draws


def cell_values(masks: MaskRanks, attributions: dict[str, np.ndarray], cells: list[tuple[str, str, str]], *,
                partners: list[dict[str, np.ndarray]] | None = None,
                fraction: float = DEFAULT_TOP_FRACTION) -> CellValues:
    """The three metrics of each cell for one image, under its smooth null and, given the
    attribution ranks of its shuffle partners (one dict per draw), under the shuffle null."""
    n_metrics = len(METRICS)
    draws = next(iter(masks.surrogates.values())).shape[0] if masks.surrogates else 0
    observed = np.zeros((len(cells), n_metrics))
    smooth = np.zeros((len(cells), n_metrics, draws))
    shuffle = np.zeros((len(cells), n_metrics, len(partners))) if partners is not None else None
    for c, (module, reduction, method) in enumerate(cells):
        key = method_key(method, module)
        mine = masks.ranks[(module, reduction)]
        target = attributions[key]
        values = rank_metrics(mine, target, fraction)
        observed[c] = [values[m] for m in METRICS]
        if draws:
            values = rank_metrics(masks.surrogates[(module, reduction)], target[None], fraction)
            smooth[c] = np.stack([values[m] for m in METRICS])
        if partners:
            others = np.stack([p[key] for p in partners])
            values = rank_metrics(mine[None], others, fraction)
            shuffle[c] = np.stack([values[m] for m in METRICS])
    return CellValues(list(cells), observed, smooth, shuffle)


IMAGE_DRAWS = 200  # smooth surrogates for one image on the pages


def image_agreement(mask_native: np.ndarray, attributions: dict[str, np.ndarray], *, grid: int = DEFAULT_GRID,
                    draws: int = IMAGE_DRAWS, fraction: float = DEFAULT_TOP_FRACTION, seed: int = 0,
                    image: int = 0) -> list[dict]:
    """One image's agreement with its smooth null, as the pages show it: for each
    attribution (name -> map of any size) and metric, the value, the mean and 95 % band of
    the metric over `draws` smooth random maps like the mask (phase-randomised surrogates of
    `mask_native`, the reduced mask at its module's resolution), and the two-sided empirical
    p = (1 + #{draws at least as far from the null mean as the value}) / (draws + 1),
    uncorrected. The shuffle null needs other images: see the dataset report."""
    masks = mask_ranks({("mask", "map"): mask_native}, image=image, grid=grid, draws=draws, seed=seed)
    grids = {name: to_grid(torch.as_tensor(np.asarray(m, dtype=np.float32)), grid).numpy()
             for name, m in attributions.items()}
    ranks = attribution_ranks(grids, image=image, seed=seed)
    cells = [("mask", "map", name) for name in attributions]
    values = cell_values(masks, ranks, cells, fraction=fraction)
    rows = []
    for c, name in enumerate(attributions):
        for j, metric in enumerate(METRICS):
            value, null = float(values.observed[c, j]), values.smooth[c, j]
            centre = float(null.mean())
            extreme = np.sum(np.abs(null - centre) >= abs(value - centre) - 1e-12)
            low, high = np.percentile(null, [2.5, 97.5])
            rows.append({"method": name, "metric": metric, "value": value, "null_mean": centre,
                         "null_low": float(low), "null_high": float(high),
                         "p": float((1 + extreme) / (len(null) + 1)), "draws": int(len(null))})
    return rows
