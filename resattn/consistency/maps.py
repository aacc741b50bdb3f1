"""Masks to numbers: every network traced on the same images, each stage's last mask reduced
to one map per reduction, and Spearman's rho of every pair per image with its bootstrap interval
(the rows of consistency.csv)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch
from torch import nn

from ..errors import ResattnError
from .networks import Network, comparison_groups, pairs_of

METRIC = "spearman"
RANK_KEY = "consistency"  # the tie-breaking stream (resattn.analysis.agreement.rng_for)
CHUNK = 256  # images normalised at once


def last_module_per_stage(model: nn.Module) -> dict[int, str]:
    """{stage: name of the stage's last attention module with a mask}: Attention-56 has one
    module per stage, Attention-92 1, 2 and 3; comparing the last of each lines them up."""
    from ..trace import attention_modules, module_order

    last: dict[int, str] = {}
    for name, module in sorted(attention_modules(model), key=lambda item: module_order(item[0])):
        if module.soft_mask_branch is not None:
            last[int(module.stage)] = name
    return dict(sorted(last.items()))


def stage_maps(model: nn.Module, images: torch.Tensor, *, reductions=None, targets=None,
               batch_size: int = 16, progress=None) -> dict[tuple[int, str], np.ndarray]:
    """{(stage, reduction): N x h x w float32} for normalised `images` (N x 3 x H x W): the
    mask of each stage's last module reduced with `resattn.analysis.reduce.channel_weights`
    and `weighted_map`. "class_weighted" needs `targets` (N class indices; -1: the network's
    own top class) and runs one backward pass per batch: the gradient of the sum of the
    images' target logits, which for a network in eval mode (no batch statistics) gives each
    image the gradient of its own logit. `progress(n)` is called after each batch."""
    from ..analysis.reduce import ANALYSIS_REDUCTIONS, TOP_CHANNELS, channel_weights, weighted_map
    from ..trace import model_lock, trace

    reductions = tuple(reductions or ANALYSIS_REDUCTIONS)
    unknown = [r for r in reductions if r not in ANALYSIS_REDUCTIONS]
    if unknown:
        raise ResattnError(f"Unknown reduction {unknown[0]!r}: choose from {', '.join(ANALYSIS_REDUCTIONS)}.")
    stages = last_module_per_stage(model)
    if not stages:
        raise ResattnError("This network has no attention masks to compare (attention 'none').")
    device = next(model.parameters()).device
    need_gradient = "class_weighted" in reductions
    out: dict[tuple[int, str], list[np.ndarray]] = {(s, r): [] for s in stages for r in reductions}
    for start in range(0, len(images), int(batch_size)):
        x = images[start:start + int(batch_size)].to(device)
        gradients = {}
        if need_gradient:
            with model_lock(model), torch.inference_mode(False), torch.enable_grad():
                tr = trace(model, x.clone(), grad=True)
                wanted = torch.as_tensor(targets[start:start + len(x)] if targets is not None else [-1] * len(x),
                                         device=tr.logits.device).long()
                wanted = torch.where(wanted >= 0, wanted, tr.logits.detach().argmax(dim=1))
                records = [tr[name] for name in stages.values()]
                grads = torch.autograd.grad(tr.logits.gather(1, wanted[:, None]).sum(), [r.output for r in records])
            gradients = {r.name: g.detach().float().cpu() for r, g in zip(records, grads)}
        else:
            tr = trace(model, x)
        for stage, name in stages.items():
            mask = tr[name].mask.detach().float().cpu()
            for reduction in reductions:
                weights = channel_weights(mask, reduction, gradient=gradients.get(name), k=TOP_CHANNELS)
                out[(stage, reduction)].append(weighted_map(mask, weights).numpy().astype(np.float32))
        if progress is not None:
            progress(len(x))
    return {key: np.concatenate(parts) for key, parts in out.items()}


def _ranks(maps: np.ndarray, side: int, seed: int, stage: int, reduction: str) -> np.ndarray:
    """N x (side*side) tie-broken ranks of maps on a side x side grid; the random order that
    breaks ties depends only on (seed, stage, reduction, shape), so two equal maps rank alike."""
    from ..analysis.agreement import rng_for, tie_broken_ranks, to_grid

    grid = maps if maps.shape[-1] == side and maps.shape[-2] == side else to_grid(torch.from_numpy(maps), side).numpy()
    flat = grid.reshape(len(grid), -1)
    return tie_broken_ranks(flat, rng_for(seed, RANK_KEY, stage, reduction))


def pair_spearman(maps_a: dict, maps_b: dict, *, seed: int = 0) -> dict[tuple[int, str], np.ndarray]:
    """{(stage, reduction): ρ per image} for the keys both networks have; maps of different
    sizes are compared on the smaller one's grid."""
    from ..analysis.agreement import rank_metrics

    out = {}
    for key in maps_a:
        if key not in maps_b:
            continue
        a, b = maps_a[key], maps_b[key]
        if len(a) != len(b):
            raise ResattnError("The two networks were traced on different numbers of images.")
        side = min(a.shape[-2], a.shape[-1], b.shape[-2], b.shape[-1])
        stage, reduction = key
        out[key] = rank_metrics(_ranks(a, side, seed, stage, reduction), _ranks(b, side, seed, stage, reduction))[METRIC]
    return out


def pair_rows(a: Network, b: Network, values: dict[tuple[int, str], np.ndarray], weights: np.ndarray | None,
              *, any_recipe: bool = False) -> list[dict]:
    """CSV rows for one pair: the mean of ρ over images and its bootstrap interval (`weights`:
    resattn.analysis.significance.bootstrap_weights over the images; None: one image, or no
    interval wanted, so low = high = value)."""
    from ..analysis.significance import bootstrap_interval

    same = a.kind == b.kind and (any_recipe or a.recipe == b.recipe)
    rows = []
    for (stage, reduction), rho in sorted(values.items()):
        value = float(np.mean(rho))
        low, high = (value, value) if weights is None else bootstrap_interval(rho, weights)
        rows.append({"stage": int(stage), "config_a": a.label, "config_b": b.label, "same_config": same,
                     "reduction": reduction, "metric": METRIC, "value": value, "low": float(low), "high": float(high),
                     "n_images": int(len(rho))})
    return rows


@dataclass
class ConsistencyRun:
    rows: list[dict]
    seconds: dict[str, float] = field(default_factory=dict)  # network label -> tracing seconds
    skipped: list[str] = field(default_factory=list)  # why networks were left out


def consistency(networks: list[Network], images, *, reductions=None, any_recipe: bool = False, seed: int = 0,
                batch_size: int = 16, device: str | torch.device = "cpu", resamples: int | None = None,
                progress: bool = False) -> ConsistencyRun:
    """Trace every network that takes part in a comparison (`comparison_groups`) on `images`
    (a resattn.data.ImageSet of uint8 images with labels in the networks' classes) and return
    the rows of consistency.csv."""
    from tqdm import tqdm

    from ..analysis.significance import BOOTSTRAP, bootstrap_weights
    from ..checkpoints import load_checkpoint

    skipped = [f"{n.label}: no attention masks" for n in networks if not n.has_masks]
    groups = comparison_groups(networks, any_recipe=any_recipe)
    used = [n for members in groups for n in members]
    for n in networks:
        if n.has_masks and n not in used:
            skipped.append(f"{n.label}: no other network of its recipe has seeds to compare with")
    if not used:
        raise ResattnError("No two networks of one type and recipe (seeds) among these checkpoints, so there is "
                           "no seed-to-seed spread to compare with: add the seeds (e.g. checkpoints/seeds/).")
    classes = used[0].card.classes
    if any(n.card.classes != classes for n in used):
        raise ResattnError("These networks were trained on different classes; compare networks of one data set.")
    labels = images.labels.numpy()
    maps, seconds = {}, {}
    bar = tqdm(total=len(used) * len(images), desc="consistency: images", unit="image", disable=not progress)
    for network in used:
        start = time.perf_counter()
        model, card = load_checkpoint(network.path, device=device)
        parts = []
        for first in range(0, len(images), CHUNK):  # normalised a chunk at a time: all 3,925 val images fit too
            x = card.preprocess_batch(images.images[first:first + CHUNK])
            parts.append(stage_maps(model, x, reductions=reductions, targets=labels[first:first + CHUNK],
                                    batch_size=batch_size, progress=bar.update))
        maps[network] = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        seconds[network.label] = time.perf_counter() - start
        bar.set_postfix_str(f"{network.label}: {seconds[network.label]:.0f} s")
        del model
    bar.close()
    weights = bootstrap_weights(labels, resamples or BOOTSTRAP, seed) if len(images) > 1 else None
    rows = []
    for a, b in pairs_of(groups):
        rows += pair_rows(a, b, pair_spearman(maps[a], maps[b], seed=seed), weights, any_recipe=any_recipe)
    return ConsistencyRun(rows, seconds, skipped)


def image_rows(maps: dict[Network, dict], *, seed: int = 0) -> list[dict]:
    """Rows like the CSV's for one image (or a few), every pair of the networks in `maps`
    ({network: stage_maps(...)}): low = high = value, since one image has no interval of
    its own (summaries of several pairs then span the range over the pairs)."""
    rows = []
    for a, b in combinations(list(maps), 2):
        rows += pair_rows(a, b, pair_spearman(maps[a], maps[b], seed=seed), None)
    return rows
