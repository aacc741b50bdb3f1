"""Reduce a multi-channel tensor (a soft mask M, a trunk T, ...) to one spatial map.

Every function takes either a batch N x C x h x w (and returns N x h x w) or a single
C x h x w tensor (and returns h x w). Nothing is normalised: a map keeps the units of the
tensor it came from, so a colour bar drawn from it shows real mask values.
"""
from __future__ import annotations

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


def to_image_size(map_: torch.Tensor, size: tuple[int, int] | int) -> torch.Tensor:
    """Bilinear resize of a map h x w, N x h x w or N x 1 x h x w to `size` (H, W), keeping
    the input's layout. Down-sizing is anti-aliased; values are not rescaled."""
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
