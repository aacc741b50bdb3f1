"""Deletion and insertion curves (Petsiuk et al., RISE, 2018): does a map order the pixels
by how much the model needs them?

Pixels are ranked by a map (resized bilinearly to the image; highest first; ties broken at
random with a fixed seed, never by position: a Grad-CAM map that is zero over half the
image would otherwise delete that half top to bottom). At fractions 0, 1/steps, ..., 1 of
the pixels:

- deletion:  the top pixels are replaced by the baseline image; a faithful map makes the
             target probability fall fast (low area under the curve is good);
- insertion: the top pixels of the image are pasted into the baseline; a faithful map
             makes the probability rise fast (high area is good).

Baseline (`baseline="blur"`, the default): the image blurred with a Gaussian of sigma = 1/16
of the image side. Blurring removes the object's detail without introducing the sharp
edges of a constant patch, which themselves change predictions; RISE uses a blurred image
for insertion. The same baseline is used for both curves, so deletion at fraction 1 and
insertion at fraction 0 are both exactly the baseline's prediction. `baseline="zeros"` uses
0 in the normalised input space (the dataset's mean colour); a tensor gives any other.

`baseline="impute"` is not fooled by out-of-distribution fill, the idea of ROAD (Rong et al.,
2022): every perturbed image is filled *from the pixels it keeps* (`impute_fill`), so the
fill has no sharp edge or foreign texture that would tell the model where pixels were
removed, and the removed pixels' content cannot leak into it. ROAD solves a sparse linear
system per perturbed image (each missing pixel the weighted mean of its 8 neighbours);
with a sparse solver that costs 0.1-0.25 s per 128 px image here, times ~600 perturbed
images per photo. This is the same kind of fill at a fraction of the cost: a pull-push
pyramid (normalised convolution: each missing pixel takes the mean of the kept pixels
around it at the finest scale that has any), two Jacobi sweeps of ROAD's neighbour
equations (1/6 side, 1/12 diagonal neighbours) to soften the seams, and ROAD's Gaussian
noise (sigma 0.01 in the normalised input space, seeded) on the filled pixels. Every
filled value is a convex combination of kept values plus the noise; it is not ROAD's
exact solution. With nothing kept (deletion at fraction 1, insertion at 0) the fill is 0,
the mean colour, plus the noise.

The y axis is the softmax probability of the target class; the area under a curve is the
trapezoid rule over the fraction axis (0 .. 1). The "random" order ranks pixels by
uniform noise from a seeded generator (pixel noise); `smooth_random_map` gives a random
order as smooth as a mask (a phase-randomised surrogate of the mask, see
`resattn.analysis.nulls`). A mask must beat the smooth one: deletion in blobs differs from
deletion in salt-and-pepper noise whatever the blobs mean.

All curves of one image are evaluated together in batches of `batch_size` perturbed
images: a map with 32 steps needs 2 * 31 distinct perturbed images plus the image and the
baseline (shared by every map), i.e. 4 forward passes at batch size 16, not 64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from ..errors import ResattnError
from ..trace import model_lock
from .reduce import to_image_size

RANDOM = "random"
BASELINES = ("blur", "zeros", "impute")
IMPUTE_NOISE = 0.01  # ROAD's noise
IMPUTE_SWEEPS = 2


@dataclass
class FaithfulnessCurve:
    name: str  # the map's name, e.g. "mask:stage2.1", "gradcam", "random"
    fractions: np.ndarray  # steps + 1 values from 0 to 1
    deletion: np.ndarray  # target probability after deleting that fraction
    insertion: np.ndarray  # target probability after inserting that fraction
    target: int

    @property
    def deletion_auc(self) -> float:
        return float(np.trapezoid(self.deletion, self.fractions))

    @property
    def insertion_auc(self) -> float:
        return float(np.trapezoid(self.insertion, self.fractions))


def blurred(image: torch.Tensor) -> torch.Tensor:
    """The default baseline: a Gaussian blur with sigma = 1/16 of the image side."""
    side = min(image.shape[-2:])
    sigma = max(1.0, side / 16)
    kernel = min(2 * int(np.ceil(3 * sigma)) + 1, 2 * ((side - 1) // 2) + 1)
    return TF.gaussian_blur(image, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def make_baseline(image: torch.Tensor, baseline: str | torch.Tensor = "blur") -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        if baseline.shape[-3:] != image.shape[-3:]:
            raise ResattnError(f"The baseline must have the image's shape {tuple(image.shape[-3:])}.")
        return baseline.to(image).reshape(image.shape)
    if baseline == "blur":
        return blurred(image)
    if baseline == "zeros":
        return torch.zeros_like(image)
    raise ResattnError(f"Unknown baseline {baseline!r}: use 'blur', 'zeros', 'impute' or a tensor.")


def impute_fill(image: torch.Tensor, known: torch.Tensor, noise: torch.Tensor | None = None, *,
                sweeps: int = IMPUTE_SWEEPS) -> torch.Tensor:
    """The "impute" fill (see the module doc) of a batch: image 1 x 3 x H x W
    (or B x 3 x H x W), known B x 1 x H x W bool (True = keep the pixel). Returns
    B x 3 x H x W: kept pixels unchanged, the others imputed from them, plus `noise`
    (broadcastable to the batch) on the imputed pixels only."""
    known_f = known.to(image.dtype)
    values = image * known_f
    levels = [(values, known_f)]
    while min(levels[-1][0].shape[-2:]) > 1:
        v, w = levels[-1]
        levels.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)))
    v, w = levels[-1]
    fill = torch.where(w > 0, v / w.clamp(min=1e-12), torch.zeros_like(v))
    # Push: each level keeps what its known pixels say and takes the rest from the coarser fill.
    for v, w in reversed(levels[:-1]):
        up = F.interpolate(fill, size=tuple(v.shape[-2:]), mode="bilinear", align_corners=False)
        fill = v + (1 - w) * up
    norm = _neighbour_sum(torch.ones_like(known_f[:1]))
    unknown = ~known
    for _ in range(int(sweeps)):
        fill = torch.where(unknown, _neighbour_sum(fill) / norm, fill)
    if noise is not None:
        fill = torch.where(unknown, fill + noise, fill)
    return fill


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """sum over the 8 neighbours with ROAD's weights (1/6 sides, 1/12 corners), zero outside
    the image: (1/12) * ([1 2 1]^T [1 2 1] - 4 delta), done as shifted adds, which are several
    times faster on a CPU than a depthwise 3 x 3 convolution."""
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., :-2, :] + 2 * padded[..., 1:-1, :] + padded[..., 2:, :]
    both = rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]
    return (both - 4 * x) / 12


def _impute_noise(image: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(seed) + 7919)
    return (torch.randn(tuple(image.shape[-3:]), generator=generator) * IMPUTE_NOISE).to(image)[None]


def random_map(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Uniform noise H x W from a seeded generator: the random pixel order."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.rand(tuple(size), generator=generator)


def smooth_random_map(like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random map with the spatial autocorrelation of `like` (h x w, e.g. a reduced mask
    at its module's resolution): one phase-randomised surrogate. Resized to the image like
    any map, it orders pixels in random blobs of the mask's size."""
    from .agreement import rng_for
    from .nulls import phase_surrogates

    array = like.detach().double().cpu().numpy()
    return torch.from_numpy(phase_surrogates(array, 1, rng_for(seed, "smooth order"))[0]).float()


def pixel_ranks(map_: torch.Tensor, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """H x W long tensor: each pixel's position in the order (0 = removed/inserted first).
    Equal values are ordered at random (seeded), not by position."""
    values = to_image_size(map_.detach().float().cpu(), size).flatten()
    if not torch.isfinite(values).all():
        raise ResattnError("The map contains NaN or infinite values; it cannot order pixels.")
    generator = torch.Generator().manual_seed(int(seed))
    shuffled = torch.randperm(values.numel(), generator=generator)
    order = shuffled[torch.argsort(values[shuffled], descending=True, stable=True)]
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks.reshape(size)


def faithfulness(model: nn.Module, image: torch.Tensor, maps: Mapping[str, torch.Tensor], target: int, *,
                 steps: int = 32, batch_size: int = 32, baseline: str | torch.Tensor = "blur",
                 include_random: bool = True, seed: int = 0) -> dict[str, FaithfulnessCurve]:
    """Deletion and insertion curves of the target class for every map in `maps` (any size;
    resized to the image) and, with `include_random`, for a seeded random order ("random").

    `image` is one normalised image 1 x 3 x H x W. `baseline`: "blur", "zeros", a tensor,
    or "impute" (each perturbed image filled from its kept pixels). `seed` seeds the random
    order, the tie-breaking and the imputation's noise. Returns {name: FaithfulnessCurve}.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ResattnError("Faithfulness curves take one image 1 x 3 x H x W.")
    if int(steps) < 1 or int(batch_size) < 1:
        raise ResattnError("steps and batch_size must be at least 1.")
    steps, batch_size = int(steps), int(batch_size)
    device = next(model.parameters()).device
    image = image.detach().to(device)
    height, width = image.shape[-2:]
    impute = isinstance(baseline, str) and baseline == "impute"
    base = None if impute else make_baseline(image, baseline)
    noise = _impute_noise(image, seed) if impute else None
    named = dict(maps)
    if include_random:
        named[RANDOM] = random_map((height, width), seed)
    ranks = {name: pixel_ranks(m, (height, width), seed).to(device) for name, m in named.items()}
    pixels = height * width
    counts = [round(i * pixels / steps) for i in range(steps + 1)]

    # Jobs: (map, curve, step). The two end points are the image itself (deletion at step
    # 0) and the baseline (deletion at the last step): shared by every curve, evaluated once,
    # in the same batches as the interior steps.
    first = next(iter(named), None)
    if first is None:
        raise ResattnError("Give at least one map (or include the random order).")
    jobs = [(first, "deletion", 0), (first, "deletion", steps)]
    jobs += [(name, curve, step) for name in named for curve in ("deletion", "insertion") for step in range(1, steps)]
    probabilities: list[torch.Tensor] = []
    # The model's lock: captum's hooks (Grad-CAM in another thread) do not check which
    # thread runs a forward pass, so plain passes must not interleave with them.
    with model_lock(model), torch.inference_mode():
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            rank = torch.stack([ranks[name] for name, _, _ in chunk])[:, None]  # B x 1 x H x W
            count = torch.tensor([counts[step] for _, _, step in chunk], device=device)[:, None, None, None]
            chosen = rank < count  # the first `count` pixels of the order
            inserting = torch.tensor([curve == "insertion" for _, curve, _ in chunk], device=device)[:, None, None, None]
            # deletion: chosen pixels come from the baseline; insertion: from the image.
            from_image = torch.where(inserting, chosen, ~chosen)
            if impute:
                batch = impute_fill(image, from_image, noise)
            else:
                batch = torch.where(from_image, image, base)
            probabilities.append(_target_probability(model, batch, target))
    values = torch.cat(probabilities).tolist()
    original, at_baseline, values, jobs = values[0], values[1], values[2:], jobs[2:]

    fractions = np.array(counts, dtype=np.float64) / pixels
    curves = {}
    for name in named:
        deletion, insertion = [original], [at_baseline]
        for (job_name, curve, _), value in zip(jobs, values):
            if job_name == name:
                (deletion if curve == "deletion" else insertion).append(value)
        deletion.append(at_baseline)
        insertion.append(original)
        curves[name] = FaithfulnessCurve(name, fractions, np.array(deletion), np.array(insertion), int(target))
    return curves


def _target_probability(model: nn.Module, batch: torch.Tensor, target: int) -> torch.Tensor:
    return model(batch).float().softmax(dim=1)[:, int(target)].cpu()
