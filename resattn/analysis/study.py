"""The dataset study behind `python -m resattn.report`: per image, what the masks, the
attributions, deletion / insertion, the mask interventions and the randomised networks
give; over images, the tables with intervals, nulls and corrected tests.

Per image (`analyse_image`, all for the predicted class, the "target"):

- every masked module's mask reduced three ways (`reduce.ANALYSIS_REDUCTIONS`) at its own
  resolution, the share of spatial variance each keeps and whether its peak lies on the
  border ring;
- the attributions (`attribution.report_attributions`) put on the comparison grid (`grid`
  x `grid`, default 32: the finest mask resolution at 128 px; attributions area-averaged
  onto it, masks resized bilinearly) and ranked with ties broken at random (seeded);
- deletion and insertion AUCs of every order (each mask reduction, each attribution, a
  pixel-noise order and one smooth random order per module, see `faithfulness`) with each
  fill in `fills`;
- the sanity check: the masks of the cascade of networks whose mask branches are
  randomised from the top stage down (`interventions.cascade_steps`), compared with the
  trained masks (Spearman and SSIM on the grid) and with the trained network's
  attributions.

After every image is done, two steps need the whole set: the causal test (`causal_effects`:
the target logit when one module's mask is replaced by its mean over the set, by 1, or by
another image's mask) and the nulls of the agreement (`agreement_values`: the shuffle null
pairs a mask with other images' attributions).

Every random draw is seeded by the study's seed and the image's index in the set, so a run
sharded over processes computes exactly what one process computes. The tables
(`resattn.analysis.study_tables`, `*_rows`) are plain lists of dicts, written as CSV by the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..trace import attention_modules, trace
from .agreement import DEFAULT_TOP_FRACTION, METRICS, rank_metrics, rng_for, tie_broken_ranks, to_grid
from .attribution import REPORT_METHOD_LABELS, REPORT_METHODS, mask_gradients, report_attributions
from .faithfulness import RANDOM, faithfulness, smooth_random_map
from .interventions import cascade_steps, mask_replacement, randomise_mask_branches, replaced_mask
from .nulls import (
    DEFAULT_DRAWS,
    DEFAULT_GRID,
    NULLS,
    attribution_ranks,
    cell_values,
    mask_ranks,
    method_key,
    shuffle_offsets,
)
from .reduce import (
    ANALYSIS_REDUCTION_LABELS,
    ANALYSIS_REDUCTIONS,
    TOP_CHANNELS,
    best_variance_kept,
    border_fraction,
    channel_weights,
    peak_on_border,
    variance_kept,
    weighted_map,
)
from .significance import BOOTSTRAP, bootstrap_weights

FILLS = ("blur", "impute")
REPLACEMENTS = ("dataset_mean", "one", "other_image")
FIXED_POINT = 2.0 ** 40  # masks summed as integers: exact, so the set's mean is the same however it is sharded


@dataclass(frozen=True)
class StudySettings:
    steps: int = 16  # deletion / insertion steps
    ig_steps: int = 32
    batch_size: int = 64  # perturbed images per forward pass
    grid: int = DEFAULT_GRID
    draws: int = DEFAULT_DRAWS  # null draws per image and null
    fraction: float = DEFAULT_TOP_FRACTION
    top_k: int = TOP_CHANNELS
    fills: tuple[str, ...] = FILLS
    bootstrap: int = BOOTSTRAP
    seed: int = 0


def masked_modules(model: nn.Module) -> list[str]:
    """Names of the attention modules that have a soft mask, in forward order."""
    return [name for name, module in attention_modules(model) if module.soft_mask_branch is not None]


def agreement_cells(modules: list[str]) -> list[tuple[str, str, str]]:
    """Every (module, reduction, method) compared: the family of one checkpoint's tests."""
    return [(m, r, a) for m in modules for r in ANALYSIS_REDUCTIONS for a in REPORT_METHODS]


def attribution_keys(modules: list[str]) -> list[str]:
    return ["abs_ig", "ig", "grad_cam", *[f"grad_cam_module:{m}" for m in modules], "occlusion"]


def order_names(modules: list[str], all_modules: list[str]) -> list[str]:
    """The deletion / insertion orders: every mask reduction, every attribution, the pixel
    noise order and one smooth random order per attention module."""
    names = [f"mask:{m}:{r}" for m in modules for r in ANALYSIS_REDUCTIONS]
    names += attribution_keys(modules)
    names += ["random_pixel"] + [f"random_smooth:{m}" for m in all_modules]
    return names


def order_label(order: str) -> str:
    """An order's name in words, for pages and sentences ("mask:stage3.1:mean" ->
    "the mask of stage3.1 (mean over channels)"); an unknown name is returned as it is."""
    kind, _, rest = order.partition(":")
    if kind == "mask" and ":" in rest:
        module, reduction = rest.split(":", 1)
        return f"the mask of {module} ({ANALYSIS_REDUCTION_LABELS.get(reduction, reduction)})"
    if kind == "random_smooth" and rest:
        return f"random smooth order (like {rest}'s mask)"
    if kind == "grad_cam_module" and rest:
        return f"Grad-CAM at {rest}"
    return {"random_pixel": "random order (pixel noise)"}.get(order, REPORT_METHOD_LABELS.get(order, order))


def image_seed(settings: StudySettings, index: int, *keys) -> int:
    return int(rng_for(settings.seed, index, *keys).integers(2**31 - 1))


@dataclass
class ImageRecord:
    """One image's results (numpy, small: everything the set-level steps need)."""
    index: int
    label: int
    target: int
    probability: float
    native: dict  # (module, reduction) -> h x w float32, the reduced mask at its module's resolution
    kept: dict  # (module, reduction) -> share of spatial variance kept; (module, "best") -> the first PC's share
    border: dict  # (module, reduction) -> peak on the border ring (bool)
    border_chance: dict  # module -> share of positions on the border ring
    attribution_ranks: dict  # key -> n int16, tie-broken ranks on the grid
    auc: dict  # (fill, order) -> (deletion AUC, insertion AUC)
    sanity: dict  # (through, module, reduction) -> (spearman, ssim) of randomised vs trained mask
    sanity_agreement: dict  # (through, module, reduction, method) -> metrics (3,)
    extras: dict = field(default_factory=dict)  # full-size maps and curves for a figure (not gathered)


def reduced_masks(gradients: dict, modules: list[str], top_k: int) -> tuple[dict, dict, dict]:
    """(native maps, variance kept, peak on border), keyed (module, reduction); the
    variance also keyed (module, "best"): the most a single channel direction keeps."""
    native, kept, border = {}, {}, {}
    for m in modules:
        mask, grad = gradients[m]
        kept[(m, "best")] = float(best_variance_kept(mask))
        for r in ANALYSIS_REDUCTIONS:
            weights = channel_weights(mask, r, gradient=grad, k=top_k)
            reduced = weighted_map(mask, weights)
            native[(m, r)] = reduced.numpy().astype(np.float32)
            kept[(m, r)] = float(variance_kept(mask, weights))
            border[(m, r)] = bool(peak_on_border(reduced))
    return native, kept, border


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps, each rescaled to 0 .. 1 by its own minimum and maximum (a constant
    map becomes 0), as Adebayo et al. compare explanations."""
    from skimage.metrics import structural_similarity

    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        span = x.max() - x.min()
        return (x - x.min()) / span if span > 0 else np.zeros_like(x)

    return float(structural_similarity(unit(a), unit(b), data_range=1.0))


def cascade_models(model: nn.Module, seed: int) -> list[tuple[str, nn.Module]]:
    """The randomised networks of the sanity check, built once per study."""
    return [(label, randomise_mask_branches(model, modules, seed)) for label, modules in cascade_steps(model)]


def analyse_image(model: nn.Module, image: torch.Tensor, index: int, label: int, settings: StudySettings, *,
                  cascade: list[tuple[str, nn.Module]] = (), keep_extras: bool = False,
                  curves_model: nn.Module | None = None) -> ImageRecord:
    """Everything per image (see the module doc) for one normalised image 1 x 3 x H x W.
    `curves_model` (default `model`) runs the deletion / insertion passes: the report
    passes `model.fuse.optimise_for_inference(model)`, the same function with BatchNorm
    folded away (equal up to float rounding), ~15 % faster on the thousand-odd passes."""
    device = next(model.parameters()).device
    image = image.to(device)
    size = tuple(image.shape[-2:])
    modules = masked_modules(model)
    tr = trace(model, image).to("cpu")
    probabilities = tr.logits.float().softmax(dim=1)[0]
    target = int(probabilities.argmax())

    gradients = mask_gradients(model, image, target)
    native, kept, border = reduced_masks(gradients, modules, settings.top_k)
    border_chance = {m: border_fraction(gradients[m][0].shape[-2:]) for m in modules}

    maps = report_attributions(model, image, target, modules, ig_steps=settings.ig_steps)
    grid_maps = {k: to_grid(v, settings.grid).numpy() for k, v in maps.items()}
    ranks = {k: v.astype(np.int16) for k, v in attribution_ranks(grid_maps, image=index, seed=settings.seed).items()}

    # Orders for deletion / insertion: maps of any size (faithfulness resizes them).
    orders = {f"mask:{m}:{r}": torch.from_numpy(native[(m, r)]) for m in modules for r in ANALYSIS_REDUCTIONS}
    orders.update({k: maps[k] for k in attribution_keys(modules)})
    pixel_noise = torch.Generator().manual_seed(image_seed(settings, index, "pixel"))
    orders["random_pixel"] = torch.rand(size, generator=pixel_noise)
    for record in tr.modules:
        smooth_seed = image_seed(settings, index, "smooth order", record.name)
        if record.mask is not None:
            like = torch.from_numpy(native[(record.name, "mean")])
            orders[f"random_smooth:{record.name}"] = smooth_random_map(like, smooth_seed)
        else:  # no mask to imitate: white noise at the module's resolution, resized like a mask
            generator = torch.Generator().manual_seed(smooth_seed)
            orders[f"random_smooth:{record.name}"] = torch.rand(tuple(record.trunk.shape[-2:]), generator=generator)
    auc, curves_for_figure = {}, {}
    for fill in settings.fills:
        curves = faithfulness(curves_model or model, image, orders, target, steps=settings.steps,
                              batch_size=settings.batch_size,
                              baseline=fill, include_random=False, seed=image_seed(settings, index, "faithfulness"))
        for name, curve in curves.items():
            auc[(fill, name)] = (curve.deletion_auc, curve.insertion_auc)
        if fill == settings.fills[0]:
            curves_for_figure = curves

    # Sanity: the same reductions on the randomised networks, for the same target. Ties are
    # broken with the agreement's own keys, so a mask the randomisation did not change (a
    # module below the randomised stages) ranks exactly as before.
    sanity, sanity_agreement = {}, {}

    def grid_ranks(key, values):
        return tie_broken_ranks(values.ravel(), rng_for(settings.seed, index, "mask", *key))

    trained_ranks = {key: grid_ranks(key, to_grid(torch.from_numpy(m), settings.grid).numpy())
                     for key, m in native.items()}
    for through, randomised in cascade:
        r_native, _, _ = reduced_masks(mask_gradients(randomised, image, target), modules, settings.top_k)
        for key, m in r_native.items():
            grid_map = to_grid(torch.from_numpy(m), settings.grid).numpy()
            mine = grid_ranks(key, grid_map)
            trained_grid = to_grid(torch.from_numpy(native[key]), settings.grid).numpy()
            rho = float(rank_metrics(mine, trained_ranks[key])["spearman"])
            sanity[(through, *key)] = (rho, _ssim(grid_map, trained_grid))
            for method in REPORT_METHODS:
                values = rank_metrics(mine, ranks[method_key(method, key[0])], settings.fraction)
                sanity_agreement[(through, *key, method)] = np.array([values[k] for k in METRICS], dtype=np.float64)

    extras = {}
    if keep_extras:
        extras = {"maps": {k: v.numpy() for k, v in maps.items()}, "curves": curves_for_figure,
                  "mean_masks": {m: native[(m, "mean")] for m in modules}}
    return ImageRecord(int(index), int(label), target, float(probabilities[target]), native, kept, border,
                       border_chance, ranks, auc, sanity, sanity_agreement, extras)


# --------------------------------------------------------------------------- set-level steps

def mask_sums(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per masked module, the sum of the masks of `images` (normalised, N x 3 x H x W, one
    at a time) as int64 fixed point (`FIXED_POINT`): exact, so sums from several processes
    add up to the same total in any order."""
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    for i in range(len(images)):
        tr = trace(model, images[i:i + 1].to(device))
        for record in tr.modules:
            if record.mask is not None:
                fixed = torch.round(record.mask[0].double().cpu() * FIXED_POINT).to(torch.int64)
                sums[record.name] = sums[record.name] + fixed if record.name in sums else fixed
    return sums


def mean_masks(sums: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    return {name: (total.double() / FIXED_POINT / max(1, count)).float() for name, total in sums.items()}


def causal_effects(model: nn.Module, image: torch.Tensor, partner: torch.Tensor, target: int,
                   means: dict[str, torch.Tensor]) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(module, replacement) -> (change of the target logit, change of its probability,
    1.0 if the predicted class changed) when the module's mask is replaced by its mean over
    the set ("dataset_mean"), by 1 ("one"), or by the mask of another image `partner`
    ("other_image"), one module at a time."""
    device = next(model.parameters()).device
    image, partner = image.to(device), partner.to(device)
    with torch.inference_mode():
        before = model(image).float()[0]
    other = trace(model, partner)
    effects = {}
    for name in means:
        masks = {"dataset_mean": mask_replacement("from_image", mask=means[name].to(device)),
                 "one": mask_replacement("one"),
                 "other_image": mask_replacement("from_image", mask=other[name].mask)}
        for replacement in REPLACEMENTS:
            with replaced_mask(model, name, masks[replacement]), torch.inference_mode():
                after = model(image).float()[0]
            effects[(name, replacement)] = (
                float(after[target] - before[target]),
                float(after.softmax(0)[target] - before.softmax(0)[target]),
                float(int(after.argmax()) != int(before.argmax())))
    return effects


def agreement_values(record: ImageRecord, records_by_index: dict[int, ImageRecord], offsets: np.ndarray,
                     n_images: int, settings: StudySettings, modules: list[str]):
    """The agreement cells of one image with both nulls (`nulls.cell_values`)."""
    masks = mask_ranks(record.native, image=record.index, grid=settings.grid, draws=settings.draws,
                       seed=settings.seed)
    partners = [records_by_index[(record.index + int(o)) % n_images].attribution_ranks for o in offsets]
    return cell_values(masks, record.attribution_ranks, agreement_cells(modules), partners=partners,
                       fraction=settings.fraction)


__all__ = ["FILLS", "ImageRecord", "REPLACEMENTS", "StudySettings", "agreement_cells", "agreement_values",
           "analyse_image", "attribution_keys", "bootstrap_weights", "cascade_models", "causal_effects", "mask_sums",
           "masked_modules", "mean_masks", "order_names", "shuffle_offsets", "NULLS", "RANDOM"]
