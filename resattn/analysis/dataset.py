"""Dataset-level mask statistics: for every image and attention module, the mean mask map,
how concentrated the mask is, the prediction and whether it is right; aggregated into the
mean mask per class and module.

Computed once per (checkpoint, image set, settings) and cached on disk as a plain .npz
(no pickle) in $RESATTN_CACHE or ~/.cache/resattn, keyed by a SHA-256 of the checkpoint's
bytes, the images and the settings. Progress goes to tqdm and to an optional
`progress(fraction)` callback (the app passes a Streamlit progress bar's update).

Under torchrun (`torch.distributed` initialised with more than one process) every rank
traces a strided shard of the images (`shard_indices`) and the results are gathered over a
gloo group, so every rank returns the full statistics and rank 0 writes the cache:

    torchrun --nproc_per_node 4 -m resattn.analysis.dataset --checkpoint C --images pack

Definitions:
  map            the mask averaged over channels (`reduce_channels(M, "mean")`), resized
                 bilinearly to map_size x map_size (default 16).
  concentration  1 - H(p) / log(n), where p is the map of mean |M| over channels at the
                 module's own resolution, divided by its sum, H the Shannon entropy and n
                 the number of positions: 0 for a perfectly flat mask, 1 when all of its
                 mass sits at one position. |M| rather than M because channel attention
                 (L2-normalised across channels) takes negative values; for mixed and
                 spatial attention M > 0, so |M| = M.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..card import as_card
from ..checkpoints import _stem, atomic_write, sibling_path
from ..data import (
    ImageSet,
)
from ..errors import ResattnError
from ..trace import trace
from .image_sets import load_images
from .reduce import to_image_size

CACHE_VERSION = 1  # bump when the definitions above change, so old caches are not reused
SELECTIONS = ("all", "correct", "wrong")


# --------------------------------------------------------------------------- statistics

def concentration(mask: torch.Tensor) -> torch.Tensor:
    """1 - normalised entropy of mean |M| over channels, per image: N x C x h x w -> N."""
    weights = mask.float().abs().mean(dim=1).flatten(1)  # N x positions
    n = weights.shape[1]
    if n == 1:
        return torch.zeros(weights.shape[0])
    total = weights.sum(dim=1, keepdim=True)
    p = torch.where(total > 0, weights / total.clamp(min=torch.finfo(weights.dtype).tiny), 1.0 / n)
    entropy = -(p * torch.log(p.clamp(min=1e-30))).sum(dim=1)
    return (1.0 - entropy / math.log(n)).clamp(0.0, 1.0).cpu()


@dataclass
class MaskStatistics:
    modules: list[str]  # attention module names, e.g. ["stage1.1", "stage2.1", "stage3.1"]
    classes: list[str]
    names: list[str]  # one per image
    labels: np.ndarray  # N, int64; -1 where the true class is unknown
    predictions: np.ndarray  # N, int64
    probabilities: np.ndarray  # N, float32: softmax probability of the predicted class
    maps: np.ndarray  # N x modules x S x S, float32: mean mask map (see module doc)
    concentration: np.ndarray  # N x modules, float32
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def correct(self) -> np.ndarray:
        """True where the prediction equals a known true label."""
        return (self.labels >= 0) & (self.labels == self.predictions)

    @property
    def wrong(self) -> np.ndarray:
        """True where a known true label differs from the prediction."""
        return (self.labels >= 0) & (self.labels != self.predictions)

    def module_index(self, module: str | int) -> int:
        if isinstance(module, int):
            return module
        if module not in self.modules:
            raise ResattnError(f"No module {module!r} in these statistics; they cover {', '.join(self.modules)}.")
        return self.modules.index(module)

    def select(self, which: str = "all") -> np.ndarray:
        """Indices of the images in a selection: "all", "correct" or "wrong"."""
        if which == "all":
            return np.arange(len(self))
        if which == "correct":
            return np.flatnonzero(self.correct)
        if which == "wrong":
            return np.flatnonzero(self.wrong)
        raise ResattnError(f"Unknown selection {which!r}: choose one of {', '.join(SELECTIONS)}.")

    def mean_maps(self, which: str = "all", by: str = "label") -> tuple[np.ndarray, np.ndarray]:
        """(mean maps classes x modules x S x S, image counts per class) over a selection,
        grouping by the true label ("label") or by the prediction ("prediction"). Classes
        without images get NaN maps."""
        if by not in ("label", "prediction"):
            raise ResattnError(f"Group by 'label' or 'prediction', not {by!r}.")
        index = self.select(which)
        groups = (self.labels if by == "label" else self.predictions)[index]
        shape = (len(self.classes),) + self.maps.shape[1:]
        means = np.full(shape, np.nan, dtype=np.float32)
        counts = np.zeros(len(self.classes), dtype=np.int64)
        for c in range(len(self.classes)):
            members = index[groups == c]
            counts[c] = len(members)
            if len(members):
                means[c] = self.maps[members].mean(axis=0)
        return means, counts

    def ranked(self, module: str | int, n: int = 8, *, most: bool = True, which: str = "all") -> np.ndarray:
        """Indices of the `n` images whose mask at `module` is most (or least) concentrated,
        within a selection."""
        index = self.select(which)
        values = self.concentration[index, self.module_index(module)]
        order = np.argsort(-values if most else values, kind="stable")
        return index[order[:n]]

    def accuracy(self) -> float:
        known = self.labels >= 0
        return float(self.correct[known].mean()) if known.any() else float("nan")

    # ---- storage: a plain .npz (strings as unicode arrays), read with allow_pickle=False
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        arrays = {
            "modules": np.array(self.modules, dtype=np.str_), "classes": np.array(self.classes, dtype=np.str_),
            "names": np.array(self.names, dtype=np.str_), "labels": self.labels, "predictions": self.predictions,
            "probabilities": self.probabilities, "maps": self.maps, "concentration": self.concentration,
            "settings_keys": np.array(list(self.settings), dtype=np.str_),
            "settings_values": np.array([str(v) for v in self.settings.values()], dtype=np.str_),
        }

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MaskStatistics":
        with np.load(path, allow_pickle=False) as d:
            return cls([str(m) for m in d["modules"]], [str(c) for c in d["classes"]], [str(n) for n in d["names"]],
                       d["labels"], d["predictions"], d["probabilities"], d["maps"], d["concentration"],
                       dict(zip((str(k) for k in d["settings_keys"]), (str(v) for v in d["settings_values"]))))


# --------------------------------------------------------------------------- caching keys

def cache_dir(folder: str | os.PathLike | None = None) -> Path:
    """The cache folder: the argument, else $RESATTN_CACHE, else ~/.cache/resattn."""
    if folder:
        return Path(folder)
    if os.environ.get("RESATTN_CACHE"):
        return Path(os.environ["RESATTN_CACHE"])
    return Path.home() / ".cache" / "resattn"


def checkpoint_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint's weight file (.safetensors for a stem, .json or
    .safetensors path; a .pt/.pth file as it is)."""
    path = Path(path)
    weights = path if path.suffix in (".pt", ".pth") else sibling_path(_stem(path), ".safetensors")
    if not weights.is_file():
        raise ResattnError(f"No checkpoint weights at {weights}.")
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_hash(model: nn.Module) -> str:
    """SHA-256 over the model's state dict (names and tensor bytes): a key for a model that
    did not come from a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def images_hash(images: ImageSet) -> str:
    digest = hashlib.sha256()
    digest.update(images.images.contiguous().numpy().tobytes())
    digest.update(images.labels.to(torch.int64).numpy().tobytes())
    digest.update("\n".join(images.names).encode())
    digest.update("\n".join(images.classes).encode())
    return digest.hexdigest()


def statistics_key(model_key: str, data_key: str, settings: dict) -> str:
    text = "\n".join([f"v{CACHE_VERSION}", model_key, data_key] + [f"{k}={settings[k]}" for k in sorted(settings)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- distribution

def shard_indices(total: int, rank: int, world: int) -> np.ndarray:
    """The image indices rank `rank` of `world` processes handles: a strided shard
    (rank, rank + world, ...), so shards differ in size by at most one and every class of a
    class-sorted set is spread over all ranks."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world} processes")
    return np.arange(rank, total, world, dtype=np.int64)


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_rows(local: np.ndarray, total: int, rank: int, world: int, group) -> np.ndarray:
    """Reassemble per-rank rows (rank r holds rows r, r + world, ...) on every rank."""
    import torch.distributed as dist

    per_rank = math.ceil(total / world)
    padded = torch.zeros((per_rank,) + local.shape[1:], dtype=torch.from_numpy(local).dtype)
    padded[:len(local)] = torch.from_numpy(local)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    out = np.empty((total,) + local.shape[1:], dtype=local.dtype)
    for r, part in enumerate(parts):
        rows = shard_indices(total, r, world)
        out[rows] = part[:len(rows)].numpy()
    return out


# --------------------------------------------------------------------------- the computation

def mask_statistics(model: nn.Module, card: dict, images: ImageSet, *, checkpoint: str | os.PathLike | None = None,
                    size: int | None = None, map_size: int = 16, batch_size: int = 32,
                    cache: bool = True, cache_folder: str | os.PathLike | None = None,
                    progress: Callable[[float], None] | None = None, show_progress: bool = True) -> MaskStatistics:
    """Mask statistics of `model` over `images` (see the module docstring), cached.

    `checkpoint`: the file the model was loaded from; its bytes key the cache (otherwise
    the model's state dict is hashed). `card`: a ModelCard (or its dict); its preprocessing
    makes the inputs. `size`: another input size than the card's. `progress(fraction)` is
    called after every batch with a value in [0, 1].
    """
    if not isinstance(images, ImageSet):
        raise ResattnError("mask_statistics takes an ImageSet (from load_images, resattn.data.load_pack or "
                           f"load_folder), got {type(images).__name__}.")
    card = as_card(card)
    if size and int(size) != card.input_size:
        card = card.replace(input_size=int(size))
    size = card.input_size
    names = [name for name, module in model.attention_modules() if module.soft_mask_branch is not None]
    if not names:
        raise ResattnError("This model has no soft masks (attention 'none'); choose a checkpoint with attention.")
    settings = {"size": size, "map_size": int(map_size), "mean": card.mean, "std": card.std}
    rank, world = _distributed()
    group = None
    if world > 1:
        import torch.distributed as dist

        group = dist.new_group(backend="gloo")  # CPU tensors, whatever the default backend is
    path = None
    if cache:
        model_key = checkpoint_hash(checkpoint) if checkpoint is not None else model_hash(model)
        path = cache_dir(cache_folder) / f"mask-stats-{statistics_key(model_key, images_hash(images), settings)}.npz"
        if _all_ranks(path.is_file(), group):
            if progress:
                progress(1.0)
            return MaskStatistics.load(path)

    device = next(model.parameters()).device
    shard = shard_indices(len(images), rank, world)
    preds, probs, maps, conc = [], [], [], []
    batches = range(0, len(shard), batch_size)
    bar = tqdm(batches, desc="mask statistics", unit="batch", disable=not show_progress or rank != 0, leave=False)
    for done, start in enumerate(bar, start=1):
        rows = shard[start:start + batch_size]
        x = card.preprocess_batch(images.images[torch.from_numpy(rows)]).to(device)
        tr = trace(model, x)
        p = tr.logits.float().softmax(dim=1)
        top = p.max(dim=1)
        preds.append(top.indices.cpu().numpy())
        probs.append(top.values.cpu().numpy())
        module_maps, module_conc = [], []
        for name in names:
            m = tr[name].mask
            module_maps.append(to_image_size(m.float().mean(dim=1), (map_size, map_size)).cpu())
            module_conc.append(concentration(m))
        maps.append(torch.stack(module_maps, dim=1).numpy())
        conc.append(torch.stack(module_conc, dim=1).numpy())
        if progress:
            progress(done / max(1, len(batches)))
    bar.close()
    empty = len(shard) == 0
    preds = np.concatenate(preds) if not empty else np.zeros(0, np.int64)
    probs = np.concatenate(probs) if not empty else np.zeros(0, np.float32)
    maps = np.concatenate(maps) if not empty else np.zeros((0, len(names), map_size, map_size), np.float32)
    conc = np.concatenate(conc) if not empty else np.zeros((0, len(names)), np.float32)
    if world > 1:
        preds, probs, maps, conc = (_gather_rows(a, len(images), rank, world, group) for a in (preds, probs, maps, conc))
    stats = MaskStatistics(names, list(images.classes), list(images.names), images.labels.numpy().astype(np.int64),
                           preds.astype(np.int64), probs.astype(np.float32), maps.astype(np.float32),
                           conc.astype(np.float32), {k: str(v) for k, v in settings.items()})
    if path is not None and rank == 0:
        stats.save(path)
    if world > 1:
        import torch.distributed as dist

        dist.barrier(group=group)  # the cache file exists before any rank returns
    return stats


def _all_ranks(flag: bool, group) -> bool:
    """True when `flag` holds on every rank (just `flag` without a process group)."""
    if group is None:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0])
    dist.all_reduce(value, op=dist.ReduceOp.MIN, group=group)
    return bool(value.item())


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.analysis.dataset",
                                     description="Compute (and cache) the dataset-level mask statistics of a "
                                                 "checkpoint; runs sharded under torchrun.")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", default="pack", help="'pack' (Imagenette val), a .npz pack, or an image folder")
    parser.add_argument("--limit", type=int, help="use this many images, spread evenly over the set")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--map-size", type=int, default=16)
    parser.add_argument("--cache", help="cache folder (default $RESATTN_CACHE or ~/.cache/resattn)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--save", help="also write the statistics to this .npz file")
    args = parser.parse_args(argv)

    import torch.distributed as dist

    from ..checkpoints import load_checkpoint
    from ..device import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = False
    try:
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
            started = True
        device = pick_device(args.device)
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        model, card = load_checkpoint(args.checkpoint, device=device)
        images = load_images(args.images, classes=list(card.classes), size=card.input_size,
                             limit=args.limit)
        stats = mask_statistics(model, card, images, checkpoint=args.checkpoint, batch_size=args.batch_size,
                                map_size=args.map_size, cache_folder=args.cache)
        rank, _ = _distributed()
        if rank == 0:
            if args.save:
                stats.save(args.save)
            print(f"{len(stats)} images, top-1 {100 * stats.accuracy():.2f} %")
            for i, name in enumerate(stats.modules):
                print(f"{name}: mean concentration {stats.concentration[:, i].mean():.4f}")
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if started:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
