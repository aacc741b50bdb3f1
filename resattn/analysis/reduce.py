"""Reduce a multi-channel tensor (a soft mask M, a trunk T, ...) to one spatial map.

Every function takes either a batch N x C x h x w (and returns N x h x w) or a single
C x h x w tensor (and returns h x w). Nothing is normalised: a map keeps the units of the
tensor it came from, so a colour bar drawn from it shows real mask values.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ResattnError

REDUCE_MODES = ("mean", "max", "channel", "topk", "pca")
# How each mode is named to people (pickers, captions, figure titles).
REDUCE_LABELS = {"mean": "mean over channels", "max": "max over channels", "channel": "one channel",
                 "topk": "top-k channels by mask energy", "pca": "first PCA component"}


def _as_batch(tensor: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (3, 4):
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ResattnError(f"Expected a tensor C x h x w or N x C x h x w, got {shape}.")
    return (tensor if tensor.ndim == 4 else tensor.unsqueeze(0)), tensor.ndim == 3


def channel_energy(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of squares over the spatial positions of each channel: N x C (or C)."""
    batch, single = _as_batch(tensor)
    energy = batch.float().pow(2).mean(dim=(2, 3))
    return energy[0] if single else energy


def reduce_channels(tensor: torch.Tensor, mode: str = "mean", *, channel: int = 0, k: int = 8) -> torch.Tensor:
    """One map per image from a C-channel tensor.

    mode:
      "mean"     mean over channels.
      "max"      maximum over channels.
      "channel"  the single channel `channel`.
      "topk"     mean of the `k` channels with the highest energy (mean of squares over
                 space, per image); k is clipped to C.
      "pca"      projection onto the first principal component over channels: every
                 spatial position is a sample with C features, centred over positions.
                 The sign of a principal component is arbitrary, so it is chosen to make
                 the map correlate positively with the "mean" map (if that correlation is
                 exactly zero, e.g. for a constant mean map, the component's loadings are
                 made to sum to a non-negative number).
    """
    batch, single = _as_batch(tensor)
    batch = batch.float()
    n, c, h, w = batch.shape
    if mode == "mean":
        out = batch.mean(dim=1)
    elif mode == "max":
        out = batch.amax(dim=1)
    elif mode == "channel":
        if not -c <= int(channel) < c:
            raise ResattnError(f"Channel {channel} does not exist: this tensor has channels 0 to {c - 1}.")
        out = batch[:, int(channel)]
    elif mode == "topk":
        if int(k) < 1:
            raise ResattnError(f"k must be at least 1, got {k}.")
        kk = min(int(k), c)
        top = channel_energy(batch).topk(kk, dim=1).indices  # N x k
        out = torch.gather(batch, 1, top[:, :, None, None].expand(n, kk, h, w)).mean(dim=1)
    elif mode == "pca":
        out = torch.stack([_first_component(image) for image in batch])
    else:
        raise ResattnError(f"Unknown reduction {mode!r}: choose one of {', '.join(REDUCE_MODES)}.")
    return out[0] if single else out


def _first_component(image: torch.Tensor) -> torch.Tensor:
    """Projection of a C x h x w tensor's positions onto their first principal component."""
    c, h, w = image.shape
    samples = image.reshape(c, h * w).T.double()  # positions x channels
    centred = samples - samples.mean(dim=0, keepdim=True)
    if c == 1 or h * w == 1:
        loadings = torch.ones(c, dtype=centred.dtype, device=centred.device)
    else:
        # Right singular vectors of the centred data are the principal directions.
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        loadings = vh[0]
    projection = centred @ loadings
    mean_map = samples.mean(dim=1)
    correlation = ((projection - projection.mean()) * (mean_map - mean_map.mean())).sum()
    if correlation < 0 or (correlation == 0 and loadings.sum() < 0):
        projection = -projection
    return projection.reshape(h, w).to(image.dtype)


def to_image_size(map_: torch.Tensor | np.ndarray, size: tuple[int, int] | int) -> torch.Tensor | np.ndarray:
    """Bilinear resize of a map h x w, N x h x w or N x 1 x h x w to `size` (H, W), keeping
    the input's layout and type (a numpy array in, a float32 numpy array out: what pages draw).
    Down-sizing is anti-aliased; values are not rescaled."""
    if isinstance(map_, np.ndarray):
        return to_image_size(torch.from_numpy(np.ascontiguousarray(map_)), size).numpy()
    if isinstance(size, int):
        size = (size, size)
    size = (int(size[0]), int(size[1]))
    if not isinstance(map_, torch.Tensor) or map_.ndim not in (2, 3, 4):
        raise ResattnError("Expected a map h x w, N x h x w or N x 1 x h x w.")
    original_ndim = map_.ndim
    batch = map_.float()
    if original_ndim == 2:
        batch = batch[None, None]
    elif original_ndim == 3:
        batch = batch[:, None]
    if tuple(batch.shape[-2:]) != size:
        shrinking = batch.shape[-2] > size[0] or batch.shape[-1] > size[1]
        batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    if original_ndim == 2:
        return batch[0, 0]
    if original_ndim == 3:
        return batch[:, 0]
    return batch


def mask_map(mask: torch.Tensor, size: tuple[int, int] | int | None = None, mode: str = "mean", **options) -> torch.Tensor:
    """A module's mask (C x h x w or N x C x h x w) reduced to one map and, if `size` is
    given, resized to it: the map compared with attributions and used to order pixels."""
    reduced = reduce_channels(mask, mode, **options)
    return reduced if size is None else to_image_size(reduced, size)


# --------------------------------------------------------------------------- report reductions
# The three reductions the dataset report (resattn.report) compares with attributions. Each is
# a weighted sum over channels, sum_c a_c M_c, with its own channel weights a (N x C), so the
# share of the mask's spatial variance it keeps is defined the same way for all three.

ANALYSIS_REDUCTIONS = ("mean", "class_weighted", "top_channels")
ANALYSIS_REDUCTION_LABELS = {
    "mean": "mean over channels",
    "class_weighted": "class-weighted channel sum",
    "top_channels": "top channels by mask energy",
}
TOP_CHANNELS = 8  # the k of "top_channels" (clipped to the number of channels)


def channel_weights(mask: torch.Tensor, reduction: str, *, gradient: torch.Tensor | None = None,
                    k: int = TOP_CHANNELS) -> torch.Tensor:
    """N x C channel weights a of one of `ANALYSIS_REDUCTIONS` for a mask N x C x h x w:

      "mean"            a_c = 1 / C.
      "class_weighted"  a_c = the mean over positions of d logit / d H_c, the gradient of the
                        explained class's logit at the module's output H = (1 + M)·T (or M·T)
                        (`gradient`, N x C x h x w): Grad-CAM's channel weights, applied to M
                        instead of to the activations. Signed: no ReLU, so no tied zeros.
      "top_channels"    a_c = 1 / k for the k channels with the largest energy (mean of M^2
                        over positions), 0 elsewhere.
    """
    batch, single = _as_batch(mask)
    batch = batch.float()
    n, c = batch.shape[:2]
    if reduction == "mean":
        weights = torch.full((n, c), 1.0 / c, device=batch.device)
    elif reduction == "class_weighted":
        if gradient is None:
            raise ResattnError("The class-weighted reduction needs the gradient of the class at the module's output.")
        grad, _ = _as_batch(gradient)
        if tuple(grad.shape) != tuple(batch.shape):
            raise ResattnError(f"The gradient's shape {tuple(grad.shape)} differs from the mask's {tuple(batch.shape)}.")
        weights = grad.float().mean(dim=(2, 3))
    elif reduction == "top_channels":
        if int(k) < 1:
            raise ResattnError(f"k must be at least 1, got {k}.")
        kk = min(int(k), c)
        top = channel_energy(batch).topk(kk, dim=1).indices
        weights = torch.zeros((n, c), device=batch.device).scatter_(1, top, 1.0 / kk)
    else:
        raise ResattnError(f"Unknown reduction {reduction!r}: choose one of {', '.join(ANALYSIS_REDUCTIONS)}.")
    return weights[0] if single else weights


def weighted_map(mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_c a_c M_c: N x C x h x w with N x C weights -> N x h x w (or C x h x w with C -> h x w)."""
    batch, single = _as_batch(mask)
    w = weights if weights.ndim == 2 else weights.unsqueeze(0)
    out = torch.einsum("nchw,nc->nhw", batch.float(), w.float().to(batch.device))
    return out[0] if single else out


def variance_kept(mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per image, the share of the mask's spatial variance that the map sum_c a_c M_c keeps.

    With every channel centred over the positions (M'_c = M_c - mean_p M_c) and u = a / |a|
    the unit channel direction of the weights, it is |sum_c u_c M'_c|^2 / sum_c |M'_c|^2:
    the fraction of the total spatial variance (summed over channels) that lies along u,
    as in PCA. 1 when every channel is the same spatial pattern up to scale along u (the
    first principal direction keeps the most of any map); NaN for a mask constant over
    space or zero weights. N (or a 0-d tensor for one mask).
    """
    batch, single = _as_batch(mask)
    w = weights if weights.ndim == 2 else weights.unsqueeze(0)
    centred = batch.double().flatten(2)
    centred = centred - centred.mean(dim=2, keepdim=True)
    norm = w.double().norm(dim=1, keepdim=True)
    unit = torch.where(norm > 0, w.double() / norm.clamp(min=1e-300), torch.zeros_like(w, dtype=torch.double))
    projected = torch.einsum("ncp,nc->np", centred, unit.to(centred.device))
    total = centred.pow(2).sum(dim=(1, 2))
    kept = projected.pow(2).sum(dim=1) / total
    kept = torch.where((total > 0) & (norm[:, 0].to(total.device) > 0), kept, torch.full_like(kept, float("nan")))
    kept = kept.float()
    return kept[0] if single else kept


def best_variance_kept(mask: torch.Tensor) -> torch.Tensor:
    """Per image, the most any one channel direction keeps: the first principal component's
    share of the mask's spatial variance (the upper bound of `variance_kept`; NaN for a mask
    constant over space). N (or 0-d for one mask)."""
    batch, single = _as_batch(mask)
    centred = batch.double().flatten(2)
    centred = centred - centred.mean(dim=2, keepdim=True)
    values = torch.linalg.svdvals(centred).pow(2)  # N x min(C, P)
    total = values.sum(dim=1)
    best = torch.where(total > 0, values[:, 0] / total.clamp(min=1e-300), torch.full_like(total, float("nan"))).float()
    return best[0] if single else best


def border_fraction(shape: tuple[int, int]) -> float:
    """The share of an h x w map's positions on its outermost ring: where a peak placed
    uniformly at random would land on the border."""
    h, w = int(shape[0]), int(shape[1])
    inner = max(0, h - 2) * max(0, w - 2)
    return 1.0 - inner / (h * w)


def peak_on_border(map_: torch.Tensor) -> torch.Tensor:
    """Whether each map's maximum (h x w or N x h x w, at its own resolution) lies on the
    outermost ring of positions. Ties: any tied maximum on the border counts as on the
    border only if all tied maxima are (a constant map gives False unless it is 1 x 1)."""
    batch = map_ if map_.ndim == 3 else map_.unsqueeze(0)
    n, h, w = batch.shape
    ring = torch.ones(h, w, dtype=torch.bool, device=batch.device)
    if h > 2 and w > 2:
        ring[1:-1, 1:-1] = False
    peaks = batch == batch.flatten(1).amax(dim=1)[:, None, None]
    inside = (peaks & ~ring).flatten(1).any(dim=1)
    out = ~inside
    return out[0] if map_.ndim == 2 else out
