"""Data: the Imagenette-128 pack and users' ImageFolder trees, decoded once per process.

Both sources end up as a uint8 tensor N x H x W x 3 in memory plus integer labels, so an
epoch only crops and flips (cheap) and never decodes a JPEG again.
"""
from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .checkpoints import IMAGENET_MEAN, IMAGENET_STD
from .errors import ResattnError

PACK_NAME = "imagenette-128.npz"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def pack_candidates(path: str | os.PathLike | None = None) -> list[Path]:
    """Where the pack is looked for, in order: the argument, $RESATTN_DATA, then
    ../shared/data beside the project (the layout of this repository's workspace)."""
    places = []
    if path:
        places.append(Path(path))
    if os.environ.get("RESATTN_DATA"):
        places.append(Path(os.environ["RESATTN_DATA"]))
    project = Path(__file__).resolve().parents[1]
    places += [project.parent / "shared" / "data" / PACK_NAME, Path.cwd().parent / "shared" / "data" / PACK_NAME]
    # A folder means "the pack inside it".
    places = [p / PACK_NAME if p.is_dir() and (p / PACK_NAME).is_file() else p for p in places]
    return list(dict.fromkeys(places))


def find_pack(path: str | os.PathLike | None = None) -> Path:
    places = pack_candidates(path)
    for place in places:
        if place.is_file() and place.suffix == ".npz":
            return place
    raise ResattnError("The Imagenette pack was not found. Looked at: " + ", ".join(map(str, places))
                       + f". Pass --data PATH or set RESATTN_DATA to the folder holding {PACK_NAME}.")


def pack_available(path: str | os.PathLike | None = None) -> bool:
    try:
        find_pack(path)
        return True
    except ResattnError:
        return False


@dataclass
class ImageSet:
    """Decoded images (uint8 N x H x W x 3), labels, class names and a name per image."""
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], self.classes, [self.names[i] for i in index.tolist()])


def _decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


@functools.lru_cache(maxsize=4)
def load_pack(path: str | os.PathLike | None = None, split: str = "train", limit: int | None = None) -> ImageSet:
    """One split of the pack ("train" or "val"), decoded once and cached for this process.
    `limit` keeps the first N images of each class (for quick looks and tests)."""
    if split not in ("train", "val"):
        raise ResattnError(f"split must be 'train' or 'val', got {split!r}")
    pack = find_pack(path)
    with np.load(pack, allow_pickle=False) as d:
        jpeg, offsets, labels = d["jpeg"], d["offsets"], d["labels"]
        keep = np.flatnonzero(d["split"] == (0 if split == "train" else 1))
        if limit is not None:
            keep = np.concatenate([keep[labels[keep] == c][:limit] for c in np.unique(labels[keep])])
        classes = [str(c) for c in d["class_names"]]
        files = d["files"]
        images = np.stack([_decode_jpeg(jpeg[offsets[i]:offsets[i + 1]].tobytes()) for i in keep])
        return ImageSet(torch.from_numpy(images), torch.from_numpy(labels[keep].astype(np.int64)),
                        classes, [str(files[i]) for i in keep])


def pack_image(index: int, path: str | os.PathLike | None = None, split: str = "val") -> tuple[Image.Image, str, str]:
    """One photo of the pack as a PIL image with its class name and file name, decoded on
    demand (for galleries; nothing is copied out of the pack)."""
    with np.load(find_pack(path), allow_pickle=False) as d:
        rows = np.flatnonzero(d["split"] == (0 if split == "train" else 1))
        i = int(rows[index])
        data = d["jpeg"][d["offsets"][i]:d["offsets"][i + 1]].tobytes()
        return Image.open(io.BytesIO(data)).convert("RGB"), str(d["class_names"][d["labels"][i]]), str(d["files"][i])


def load_folder(root: str | os.PathLike, size: int = 128, limit: int | None = None) -> ImageSet:
    """An ImageFolder tree (`root/<class>/*.jpg`), every image decoded once through
    `resattn.load_image` and squashed to size x size like the pack. Unreadable files are
    skipped with a warning rather than stopping a long run."""
    from .images import load_image
    from .errors import ImageError
    import warnings

    root = Path(root)
    if not root.is_dir():
        raise ResattnError(f"No image folder at {root}: expected {root}/<class>/<image files>.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ResattnError(f"{root} has no class sub-folders: expected {root}/<class>/<image files>.")
    images, labels, names = [], [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files[:limit]:
            try:
                img = load_image(f).resize((size, size), Image.Resampling.BILINEAR)
            except ImageError as exc:
                warnings.warn(f"skipped {f}: {exc}")
                continue
            images.append(np.asarray(img))
            labels.append(label)
            names.append(str(f.relative_to(root)))
    if not images:
        raise ResattnError(f"No readable images under {root}.")
    return ImageSet(torch.from_numpy(np.stack(images)), torch.tensor(labels), classes, names)


def load_split(data: str | os.PathLike | None, split: str, *, size: int = 128, limit: int | None = None) -> ImageSet:
    """A split from either source: an ImageFolder tree (`data/train`, `data/val`) when `data`
    is a folder with those sub-folders, otherwise the pack."""
    if data is not None and Path(data).is_dir() and (Path(data) / split).is_dir():
        return load_folder(Path(data) / split, size=size, limit=limit)
    return load_pack(str(data) if data else None, split, limit)


def normalise() -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(size: int, min_scale: float = 0.35) -> v2.Transform:
    """Random-resized crop and horizontal flip (train only)."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True),
                       v2.RandomHorizontalFlip(), normalise()])


def eval_transform(size: int) -> v2.Transform:
    """The whole image resized to size x size (the pack's photos are already square)."""
    return v2.Compose([v2.Resize((size, size), antialias=True), normalise()])


def preprocess(image: Image.Image, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """A PIL image as the 1 x 3 x size x size float tensor the models expect."""
    x = v2.functional.pil_to_tensor(image.convert("RGB"))
    x = v2.functional.resize(x, [size, size], antialias=True)
    x = v2.functional.to_dtype(x, torch.float32, scale=True)
    return v2.functional.normalize(x, list(mean), list(std)).unsqueeze(0)


class TensorImageDataset(Dataset):
    """Serves an ImageSet through a transform; images stay uint8 in memory.

    With a `seed`, the random augmentation of image i in epoch e depends only on (seed, e, i),
    not on what ran before: a resumed training run then sees exactly the crops an
    uninterrupted run would have seen. Set `epoch` before each epoch.
    """

    def __init__(self, images: ImageSet, transform: v2.Transform, seed: int | None = None) -> None:
        self.set = images
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.set)

    def __getitem__(self, i: int):
        image = self.set.images[i].permute(2, 0, 1)
        if self.seed is None:
            return self.transform(image), int(self.set.labels[i])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch * 100_003 + i) % 2**63)
            return self.transform(image), int(self.set.labels[i])


def synthetic_set(n: int = 64, size: int = 32, classes: int = 4, seed: int = 0) -> ImageSet:
    """A tiny learnable image set for tests: each class is a different colour blob."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = (torch.rand(n, size, size, 3, generator=g) * 60).to(torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, :, :, c % 3] += 120 + 40 * (c // 3)
    return ImageSet(images, labels, [f"class{c}" for c in range(classes)], [f"synthetic/{i}" for i in range(n)])
