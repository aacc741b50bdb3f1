"""Are the differences between attention types real? Mask consistency across seeds.

Two networks of one configuration (same architecture, attention, residual mode and recipe)
trained with different seeds are not the same network: their masks differ too. A difference
between, say, mixed and spatial attention on the Compare page means something only if it is
larger than the difference between two seeds of one type. This module measures both on the
same images:

- every network is traced on the same images, preprocessed as its card says; per stage the
  mask of the stage's *last* attention module is reduced to one map with each of the report's
  reductions (`resattn.analysis.reduce`: mean, class-weighted, top channels). The
  class-weighted reduction weights channels by the gradient of the image's *true* class
  (its label; the network's own top class where the label is unknown), so that every network
  is asked about the same class;
- for every pair of networks, per stage and reduction, Spearman's ρ of the two maps per
  image (on the coarser of the two maps' grids), averaged over the images, with a percentile
  bootstrap 95 % interval over images (resampled within classes, as in the dataset report:
  `resattn.analysis.significance`). Ties are broken in one seeded random order shared by
  both maps, so a network compared with itself gives exactly 1;
- `same_config` marks pairs of one type (seed-to-seed); the others are type-to-type.

Only networks of one recipe are paired (`resattn.results.Run.recipe_key`: everything but the
seed and the attention configuration), and only in recipes where some type has two or more
networks (seeds): elsewhere nothing could be compared with the seed-to-seed spread.
`--any-recipe` pairs across recipes (and calls two networks of one architecture, attention
and residual mode "same config" whatever their recipe); it is meant for development only.

A type-to-type difference *exceeds the seed-to-seed spread* when its interval lies wholly
below the seed-to-seed interval (`compare_types`). With several pairs on a side, its value is
the mean over the pairs and its interval runs from the lowest low to the highest high of the
pairs' intervals: a conservative reading (intervals that do not overlap), never a stronger one.

`python -m resattn.consistency --images pack --limit 200 --out docs/consistency` writes
`consistency.csv` (one row per pair, stage, reduction) and `consistency_run.json` (the
command, the images, seconds per network); `--results docs/results.md` then rewrites the
section between `<!-- consistency:begin -->` and `<!-- consistency:end -->` there.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ResattnError

COLUMNS = ("stage", "config_a", "config_b", "same_config", "reduction", "metric", "value", "low", "high", "n_images")
METRIC = "spearman"
DEFAULT_FOLDERS = ("checkpoints", "checkpoints/seeds")
SEEDS_FOLDER = "seeds"  # inside the checkpoint folder: the seeds the app's checkpoint list does not show
DEFAULT_CSV = Path("docs") / "consistency" / "consistency.csv"
CSV_ENV = "RESATTN_CONSISTENCY"
BEGIN, END = "<!-- consistency:begin -->", "<!-- consistency:end -->"
RANK_KEY = "consistency"  # the tie-breaking stream (resattn.analysis.agreement.rng_for)
CHUNK = 256  # images normalised at once


# --------------------------------------------------------------------------- networks

def config_label(card: dict) -> str:
    """arch/attention/residual/seed, e.g. "attention56/mixed/arl/1" ("?" for an unknown seed)."""
    seed = (card.get("recipe") or {}).get("seed")
    seed = str(int(seed)) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else "?"
    return f"{card['arch']}/{card['attention']}/{card['residual']}/{seed}"


def type_of(config: str) -> str:
    """The type part of a config label: arch/attention/residual (the seed and any @name dropped)."""
    return "/".join(config.split("@", 1)[0].split("/")[:3])


def type_label(kind: str) -> str:
    """A type in words, e.g. "A56 mixed ARL", "A92 mixed NAL", "A56 no attention"."""
    arch, attention, residual = kind.split("/")
    depth = "".join(ch for ch in arch if ch.isdigit()) or arch
    what = "no attention" if attention == "none" else f"{attention} {residual.upper()}"
    return f"A{depth} {what}"


def recipe_key(card: dict) -> tuple:
    """What a run was trained with besides its seed and attention configuration (the same key
    as the zoo's tables, resattn.results)."""
    from .results import Run

    return Run("", {**card, "metrics": card.get("metrics") or {}}, False).recipe_key()


@dataclass(eq=False)
class Network:
    """One checkpoint to compare: where it is, its card and its config label (unique in a set)."""
    path: str  # the checkpoint's stem
    card: dict
    label: str = ""

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def kind(self) -> str:
        return type_of(config_label(self.card))

    @property
    def seed(self) -> int | None:
        seed = (self.card.get("recipe") or {}).get("seed")
        return int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None

    @property
    def has_masks(self) -> bool:
        return self.card.get("attention") != "none"

    @property
    def recipe(self) -> tuple:
        return recipe_key(self.card)


def labelled(networks: list[Network]) -> list[Network]:
    """Give each network its config label; networks that would share one (the same seed of a
    configuration trained twice, e.g. in fp32 and bf16) get "@<checkpoint name>" appended."""
    plain = [config_label(n.card) for n in networks]
    for network, label in zip(networks, plain):
        network.label = label if plain.count(label) == 1 else f"{label}@{network.name}"
    return networks


def find_networks(folders=DEFAULT_FOLDERS, paths=()) -> list[Network]:
    """Every readable checkpoint in `folders` (missing folders are skipped) and every path in
    `paths`, each once, labelled."""
    from .checkpoints import _stem, list_checkpoints, read_card

    found, seen = [], set()
    for folder in folders:
        for stem, card in list_checkpoints(folder):
            if stem.resolve() not in seen:
                seen.add(stem.resolve())
                found.append(Network(str(stem), card))
    for path in paths:
        stem = _stem(path)
        if stem.resolve() not in seen:
            seen.add(stem.resolve())
            found.append(Network(str(stem), read_card(path)))
    return labelled(found)


def comparison_groups(networks: list[Network], *, any_recipe: bool = False) -> list[list[Network]]:
    """The networks with masks, grouped by recipe (one group with `any_recipe`), keeping the
    groups where some type has two or more networks: only there can a type-to-type
    similarity be set beside a seed-to-seed one."""
    groups: dict[tuple, list[Network]] = {}
    for network in networks:
        if network.has_masks:
            groups.setdefault(() if any_recipe else network.recipe, []).append(network)
    seeded = []
    for members in groups.values():
        kinds = [n.kind for n in members]
        if any(kinds.count(k) >= 2 for k in kinds):
            seeded.append(members)
    return seeded


def pairs_of(groups: list[list[Network]]) -> list[tuple[Network, Network]]:
    return [pair for members in groups for pair in combinations(members, 2)]


def seed_sets(networks: list[Network]) -> dict[str, list[Network]]:
    """type -> its seeds: the networks of that type trained with one recipe, for every type
    with two or more (the recipe with the most networks when several qualify), by seed."""
    out: dict[str, list[Network]] = {}
    for members in comparison_groups(networks):
        for kind in dict.fromkeys(n.kind for n in members):
            runs = sorted((n for n in members if n.kind == kind), key=lambda n: (n.seed is None, n.seed or 0, n.name))
            if len(runs) >= 2 and len(runs) > len(out.get(kind, [])):
                out[kind] = runs
    return out


def partners(networks: list[Network], seeds: list[Network], kinds) -> dict[str, list[Network]]:
    """For each type in `kinds`, its networks trained with the recipe of `seeds` (the types a
    seed-to-seed spread can be set against)."""
    recipe = seeds[0].recipe
    return {kind: [n for n in networks if n.kind == kind and n.has_masks and n.recipe == recipe]
            for kind in kinds}


# --------------------------------------------------------------------------- masks

def last_module_per_stage(model: nn.Module) -> dict[int, str]:
    """{stage: name of the stage's last attention module with a mask}: Attention-56 has one
    module per stage, Attention-92 1, 2 and 3; comparing the last of each lines them up."""
    from .trace import attention_modules, module_order

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
    from .analysis.reduce import ANALYSIS_REDUCTIONS, TOP_CHANNELS, channel_weights, weighted_map
    from .trace import model_lock, trace

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
    from .analysis.agreement import rng_for, tie_broken_ranks, to_grid

    grid = maps if maps.shape[-1] == side and maps.shape[-2] == side else to_grid(torch.from_numpy(maps), side).numpy()
    flat = grid.reshape(len(grid), -1)
    return tie_broken_ranks(flat, rng_for(seed, RANK_KEY, stage, reduction))


def pair_spearman(maps_a: dict, maps_b: dict, *, seed: int = 0) -> dict[tuple[int, str], np.ndarray]:
    """{(stage, reduction): ρ per image} for the keys both networks have; maps of different
    sizes are compared on the smaller one's grid."""
    from .analysis.agreement import rank_metrics

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
    from .analysis.significance import bootstrap_interval

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

    from .analysis.dataset import normalise_batch
    from .analysis.significance import BOOTSTRAP, bootstrap_weights
    from .checkpoints import IMAGENET_MEAN, IMAGENET_STD, load_checkpoint
    from .model import DEFAULT_INPUT_SIZE

    skipped = [f"{n.label}: no attention masks" for n in networks if not n.has_masks]
    groups = comparison_groups(networks, any_recipe=any_recipe)
    used = [n for members in groups for n in members]
    for n in networks:
        if n.has_masks and n not in used:
            skipped.append(f"{n.label}: no other network of its recipe has seeds to compare with")
    if not used:
        raise ResattnError("No two networks of one type and recipe (seeds) among these checkpoints, so there is "
                           "no seed-to-seed spread to compare with: add the seeds (e.g. checkpoints/seeds/).")
    classes = used[0].card["classes"]
    if any(list(n.card["classes"]) != list(classes) for n in used):
        raise ResattnError("These networks were trained on different classes; compare networks of one data set.")
    labels = images.labels.numpy()
    maps, seconds = {}, {}
    bar = tqdm(total=len(used) * len(images), desc="consistency: images", unit="image", disable=not progress)
    for network in used:
        start = time.perf_counter()
        model, card = load_checkpoint(network.path, device=device)
        size = int(card.get("input_size") or DEFAULT_INPUT_SIZE.get(card["arch"], 224))
        mean, std = card.get("mean") or IMAGENET_MEAN, card.get("std") or IMAGENET_STD
        parts = []
        for first in range(0, len(images), CHUNK):  # normalised a chunk at a time: all 3,925 val images fit too
            x = normalise_batch(images.images[first:first + CHUNK], size, mean, std)
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


# --------------------------------------------------------------------------- the CSV

def write_rows(rows: list[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **{k: f"{row[k]:.4f}" for k in ("value", "low", "high")}})
    return path


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a consistency.csv, typed. A clear ResattnError when it is missing or is not one."""
    path = Path(path)
    if not path.is_file():
        raise ResattnError(f"No consistency table at {path}: make it with `python -m resattn.consistency "
                           f"--images pack --limit 200 --out {path.parent}`.")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ResattnError(f"{path} is not a consistency table (its columns are {reader.fieldnames}); "
                                   "make it again with python -m resattn.consistency.")
            return [{"stage": int(r["stage"]), "config_a": r["config_a"], "config_b": r["config_b"],
                     "same_config": r["same_config"].strip().lower() in ("true", "1"), "reduction": r["reduction"],
                     "metric": r["metric"], "value": float(r["value"]), "low": float(r["low"]),
                     "high": float(r["high"]), "n_images": int(r["n_images"])} for r in reader]
    except (OSError, ValueError, KeyError) as exc:
        raise ResattnError(f"{path} could not be read as a consistency table ({exc}); make it again with "
                           "python -m resattn.consistency.") from None


def default_csv() -> Path:
    """$RESATTN_CONSISTENCY, else docs/consistency/consistency.csv of the project."""
    env = os.environ.get(CSV_ENV)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / DEFAULT_CSV


# --------------------------------------------------------------------------- reading the rows

@dataclass(frozen=True)
class Similarity:
    """Several pairs' ρ summarised: the mean of their values, and an interval from the lowest
    low to the highest high (for one image, where low = high = value: the range over pairs)."""
    value: float
    low: float
    high: float
    pairs: int
    n_images: int

    def text(self) -> str:
        if self.low == self.high == self.value:
            return f"{self.value:.2f}"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def summarise(rows: list[dict]) -> Similarity | None:
    if not rows:
        return None
    return Similarity(float(np.mean([r["value"] for r in rows])), min(r["low"] for r in rows),
                      max(r["high"] for r in rows), len(rows), min(r["n_images"] for r in rows))


def seed_rows(rows: list[dict], kind: str, stage: int, reduction: str) -> list[dict]:
    """Seed-to-seed pairs of type `kind` at one stage and reduction."""
    return [r for r in rows if r["same_config"] and r["stage"] == stage and r["reduction"] == reduction
            and type_of(r["config_a"]) == kind and type_of(r["config_b"]) == kind]


def between_rows(rows: list[dict], kind_a: str, kind_b: str, stage: int, reduction: str) -> list[dict]:
    """Type-to-type pairs of `kind_a` and `kind_b` (either order) at one stage and reduction."""
    return [r for r in rows if not r["same_config"] and r["stage"] == stage and r["reduction"] == reduction
            and {type_of(r["config_a"]), type_of(r["config_b"])} == {kind_a, kind_b}]


@dataclass
class TypeComparison:
    stage: int
    reduction: str
    kind_a: str
    kind_b: str
    between: Similarity | None
    seeds: dict[str, Similarity]  # type -> its seed-to-seed similarity (types without seeds absent)
    exceeds: bool | None  # None: nothing to compare (no seeds, or no pair of these types)
    sentence: str


def compare_types(rows: list[dict], kind_a: str, kind_b: str, stage: int, reduction: str, *,
                  seed_kinds=None) -> TypeComparison:
    """Does type a differ from type b at `stage` more than two seeds of one type do? Yes when
    the type-to-type interval lies wholly below every available seed-to-seed interval (of
    `seed_kinds`, default both types). The sentence is computed from the numbers."""
    between = summarise(between_rows(rows, kind_a, kind_b, stage, reduction))
    seeds = {k: s for k in (seed_kinds if seed_kinds is not None else (kind_a, kind_b))
             if (s := summarise(seed_rows(rows, k, stage, reduction))) is not None}
    a, b = type_label(kind_a), type_label(kind_b)
    if between is None:
        return TypeComparison(stage, reduction, kind_a, kind_b, None, seeds, None,
                              f"At stage {stage}, no pair of {a} and {b} was compared.")
    if not seeds:
        return TypeComparison(stage, reduction, kind_a, kind_b, between, seeds, None,
                              f"At stage {stage}, {a} and {b} agree with ρ {between.text()}, but neither has seeds "
                              "to compare with.")
    exceeds = all(between.high < s.low for s in seeds.values())
    spread = " and ".join(f"{s.text()} ({type_label(k)})" if len(seeds) > 1 else s.text() for k, s in seeds.items())
    whose = (f"two seeds of {type_label(next(iter(seeds)))}" if len(seeds) == 1 else "two seeds of either")
    if exceeds:
        verdict = f"{a} and {b} differ more than {whose} do"
    else:
        verdict = f"{a} and {b} do not differ more than {whose} do (the intervals overlap or lie the other way)"
    return TypeComparison(stage, reduction, kind_a, kind_b, between, seeds, exceeds,
                          f"At stage {stage}, {verdict}: ρ {between.text()} vs {spread}.")


def kinds_in(rows: list[dict]) -> list[str]:
    """Every type in the rows, in a stable order (by depth, then attention, then residual)."""
    from .results import ATTENTION_ORDER

    kinds = {type_of(r[c]) for r in rows for c in ("config_a", "config_b")}

    def order(kind: str):
        arch, attention, residual = kind.split("/")
        depth = int("".join(ch for ch in arch if ch.isdigit()) or 0)
        rank = ATTENTION_ORDER.index(attention) if attention in ATTENTION_ORDER else len(ATTENTION_ORDER)
        return (depth, rank, residual)

    return sorted(kinds, key=order)


def stage_table(rows: list[dict], reference: str, others, reduction: str, *,
                seed_kinds=None) -> tuple[list[dict], list[TypeComparison]]:
    """Per stage, the seed-to-seed similarity of `reference` beside its similarity to each of
    `others` (the Compare page's panel): ([{"stage", "seeds", other: Similarity | None, ...}],
    [TypeComparison per stage and other type]). The seed spread is the reference's own
    (`seed_kinds`, default [reference])."""
    stages = sorted({r["stage"] for r in rows if r["reduction"] == reduction})
    table, comparisons = [], []
    for stage in stages:
        line = {"stage": stage, "seeds": summarise(seed_rows(rows, reference, stage, reduction))}
        for other in others:
            result = compare_types(rows, reference, other, stage, reduction,
                                   seed_kinds=[reference] if seed_kinds is None else seed_kinds)
            line[other] = result.between
            comparisons.append(result)
        table.append(line)
    return table, comparisons


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def stage_sentence(comparisons: list[TypeComparison]) -> str | None:
    """One sentence for one stage of `stage_table`: how alike two seeds of the reference type
    are, which other types differ from it more than that (their interval wholly below the
    seeds') and which do not. None when there is nothing to compare."""
    decided = [c for c in comparisons if c.exceeds is not None]
    if not decided:
        return None
    first = decided[0]
    reference = type_label(first.kind_a)
    spread = first.seeds[first.kind_a] if first.kind_a in first.seeds else next(iter(first.seeds.values()))
    parts = [f"At stage {first.stage}, two seeds of {reference} agree with ρ {spread.text()}"]
    for exceeds, verb_one, verb_many in ((True, "differs from it more than that", "differ from it more than that"),
                                         (False, "does not", "do not")):
        group = [c for c in decided if c.exceeds is exceeds]
        if group:
            names = _and([f"{type_label(c.kind_b)} (ρ {c.between.text()})" for c in group])
            parts.append(f"{names} {verb_one if len(group) == 1 else verb_many}")
    return "; ".join(parts) + "."


# --------------------------------------------------------------------------- docs

def markdown(rows: list[dict], *, command: str = "", run: dict | None = None) -> str:
    """The section of docs/results.md: per stage, every type's seed-to-seed similarity and
    every pair of types' similarity, one column per reduction, each with its interval; a
    pair that exceeds the seed-to-seed spread (`compare_types`) is marked; then the verdicts
    in words for the mean reduction."""
    from .analysis.reduce import ANALYSIS_REDUCTION_LABELS, ANALYSIS_REDUCTIONS

    reductions = [r for r in ANALYSIS_REDUCTIONS if any(row["reduction"] == r for row in rows)]
    kinds = kinds_in(rows)
    stages = sorted({r["stage"] for r in rows})
    n_images = min((r["n_images"] for r in rows), default=0)
    lines = [f"<!-- generated by `{command or 'python -m resattn.consistency'}`; edit the generator, not this block -->",
             ""]
    if run:
        source = "the pack's val split" if run.get("images") in ("pack", None) else f"`{run['images']}`"
        lines += [f"{run.get('networks', '?')} networks traced on {n_images} images of {source} (drawn stratified by "
                  f"class, seed {run.get('seed', 0)}); {len(rows)} rows in `{run.get('csv', 'consistency.csv')}`.", ""]
    header = "| stage | comparison | pairs | " + " | ".join(f"ρ, {ANALYSIS_REDUCTION_LABELS[r]}" for r in reductions) + " |"
    lines += [header, "|" + "---|" * (3 + len(reductions))]
    verdicts = []
    for stage in stages:
        for kind in kinds:
            cells = [summarise(seed_rows(rows, kind, stage, r)) for r in reductions]
            if any(cells):
                pairs = max(c.pairs for c in cells if c)
                lines.append(f"| {stage} | seeds of {type_label(kind)} | {pairs} | "
                             + " | ".join(c.text() if c else "—" for c in cells) + " |")
        for kind_a, kind_b in combinations(kinds, 2):
            comparisons = [compare_types(rows, kind_a, kind_b, stage, r) for r in reductions]
            if not any(c.between for c in comparisons):
                continue
            pairs = max(c.between.pairs for c in comparisons if c.between)
            cells = [("—" if c.between is None else c.between.text() + (" **↓**" if c.exceeds else ""))
                     for c in comparisons]
            lines.append(f"| {stage} | {type_label(kind_a)} vs {type_label(kind_b)} | {pairs} | "
                         + " | ".join(cells) + " |")
            if "mean" in reductions:
                verdicts.append(comparisons[reductions.index("mean")])
    lines += ["", "ρ: Spearman correlation of the two networks' reduced masks per image, averaged over the images; "
              "brackets: bootstrap 95 % interval over images (with several pairs: the mean of the pairs, "
              "and the lowest low to the highest high of their intervals). **↓**: the type-to-type interval lies "
              "wholly below the seed-to-seed interval of each type that has seeds (the types differ more than "
              "two seeds of one type do)."]
    decided = [c for c in verdicts if c.exceeds is not None]
    if decided:
        lines += ["", "Mean over channels, in words (computed from the intervals above):", ""]
        lines += [f"- {c.sentence}" for c in decided]
    return "\n".join(lines)


def write_section(path: str | os.PathLike, body: str) -> None:
    """Replace the text between BEGIN and END in `path` (which must hold both markers)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise ResattnError(f"{path} has no {BEGIN} … {END} block to fill; add the two markers where the "
                           "table belongs.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}", encoding="utf-8")


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.consistency", description=__doc__.split("\n\n")[0],
                                     epilog="Example: python -m resattn.consistency --images pack --limit 200 "
                                            "--out docs/consistency --results docs/results.md")
    parser.add_argument("--images", help="'pack' (the val split), a .npz pack or an image folder / ImageFolder tree")
    parser.add_argument("--limit", type=int, default=200, help="images, drawn stratified by class (default 200)")
    parser.add_argument("--out", help="folder for consistency.csv and consistency_run.json")
    parser.add_argument("--folders", nargs="*", default=list(DEFAULT_FOLDERS),
                        help="checkpoint folders to read (default: checkpoints checkpoints/seeds; "
                             "none: only --checkpoints)")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="more checkpoints (stems or files)")
    parser.add_argument("--reductions", default=",".join(("mean", "class_weighted", "top_channels")),
                        help="comma-separated, from mean, class_weighted, top_channels")
    parser.add_argument("--any-recipe", action="store_true",
                        help="pair networks of different recipes too (development only: see the module doc)")
    parser.add_argument("--seed", type=int, default=0, help="for the image sample, ties and the bootstrap")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", metavar="RESULTS.md",
                        help="rewrite the consistency block of this file from the table (docs/results.md)")
    parser.add_argument("--table", metavar="CSV", help="do not trace: read this consistency.csv (with --results, "
                                                       "or to print the table)")
    args = parser.parse_args(argv)
    try:
        if args.table:
            rows, csv_path, run = read_rows(args.table), Path(args.table), None
            run_file = csv_path.with_name("consistency_run.json")
            if run_file.is_file():
                run = json.loads(run_file.read_text())
        else:
            if not args.images or not args.out:
                raise ResattnError("Give --images (e.g. pack) and --out (a folder), or --table with an existing CSV.")
            rows, csv_path, run = _compute(args, sys.argv[1:] if argv is None else argv)
        command = run.get("command") if run else ""
        body = markdown(rows, command=command, run=run)
        if args.results:
            write_section(args.results, body)
            print(f"wrote the consistency block of {args.results}")
        elif args.table:
            print(body)
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _compute(args, argv: list[str]) -> tuple[list[dict], Path, dict]:
    from .analysis.dataset import load_images
    from .device import pick_device

    reductions = [r.strip() for r in args.reductions.split(",") if r.strip()]
    networks = find_networks(args.folders, args.checkpoints)
    if not networks:
        raise ResattnError(f"No checkpoints in {', '.join(args.folders)}: give --folders or --checkpoints.")
    masked = [n for n in networks if n.has_masks]
    classes = (masked or networks)[0].card["classes"]
    device = pick_device(args.device)
    images = load_images(args.images, classes=classes, limit=args.limit, sample="stratified", seed=args.seed)
    start = time.perf_counter()
    result = consistency(networks, images, reductions=reductions, any_recipe=args.any_recipe, seed=args.seed,
                         batch_size=args.batch_size, device=device, progress=True)
    out = Path(args.out)
    csv_path = write_rows(result.rows, out / "consistency.csv")
    command = "python -m resattn.consistency " + " ".join(argv)
    run = {"command": command.strip(), "csv": str(csv_path), "images": args.images, "n_images": len(images),
           "image_names": images.names, "seed": args.seed, "reductions": reductions, "any_recipe": args.any_recipe,
           "networks": len(result.seconds), "checkpoints": {n.label: n.path for n in networks},
           "seconds_per_network": {k: round(v, 1) for k, v in result.seconds.items()},
           "seconds_total": round(time.perf_counter() - start, 1), "device": str(device),
           "threads": torch.get_num_threads(), "skipped": result.skipped}
    (out / "consistency_run.json").write_text(json.dumps(run, indent=2) + "\n")
    for line in result.skipped:
        print(f"skipped {line}")
    per = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"wrote {csv_path}: {len(result.rows)} rows from {len(result.seconds)} networks on {len(images)} images "
          f"({per})")
    return result.rows, csv_path, run


if __name__ == "__main__":
    sys.exit(main())
