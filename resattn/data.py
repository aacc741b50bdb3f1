"""Data: the Imagenette-128 pack and users' ImageFolder trees, decoded once per process.

Both sources end up as a uint8 tensor N x H x W x 3 in memory plus integer labels, so an
epoch only crops and flips (cheap) and never decodes a JPEG again.

`python -m resattn.data prepare SRC --size 128 --out PACK.npz` (resattn.pack.prepare_pack)
builds a pack in the same format from the official Imagenette download (the folder or the .tgz, with train/ and val/
of WordNet-id folders); `train`, `evaluate`, `report` and the app then read it through
`--data PACK.npz` or `RESATTN_DATA`.
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

from .card import IMAGENET_MEAN, IMAGENET_STD
from .errors import ResattnError

PACK_NAME = "imagenette-128.npz"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SPLITS = ("train", "val")
# Imagenette's ten WordNet ids and the readable names the shipped checkpoints use (the
# parachute's id is n03888257, as in ImageNet). Other class folders keep their own name.
IMAGENETTE_NAMES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}
PACK_JPEG_QUALITY = 90  # what the shipped pack used


def class_name(folder: str) -> str:
    """The readable name of a class folder: Imagenette's WordNet ids become their names."""
    return IMAGENETTE_NAMES.get(folder, folder)


def pack_candidates(path: str | os.PathLike | None = None) -> list[Path]:
    """Where the pack is looked for: the argument if there is one, else $RESATTN_DATA if set,
    else ../shared/data beside the project (the layout of this repository's workspace). A
    named place is the only place: a typo must not silently fall back to another pack."""
    project = Path(__file__).resolve().parents[1]
    if path:
        places = [Path(path)]
    elif os.environ.get("RESATTN_DATA"):
        places = [Path(os.environ["RESATTN_DATA"])]
    else:
        places = [project.parent / "shared" / "data" / PACK_NAME, Path.cwd().parent / "shared" / "data" / PACK_NAME]
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


def load_folder(root: str | os.PathLike, size: int = 128, limit: int | None = None) -> ImageSet:
    """An ImageFolder tree (`root/<class>/*.jpg`), every image decoded once through
    `resattn.load_image` and squashed to size x size like the pack. Unreadable files are
    skipped with a warning rather than stopping a long run."""
    import warnings

    from .errors import ImageError
    from .images import load_image

    root = Path(root)
    if not root.is_dir():
        raise ResattnError(f"No image folder at {root}: expected {root}/<class>/<image files>.")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ResattnError(f"{root} has no class sub-folders: expected {root}/<class>/<image files>.")
    images, labels, names = [], [], []
    for label, cls in enumerate(folders):
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
    return ImageSet(torch.from_numpy(np.stack(images)), torch.tensor(labels), [class_name(f) for f in folders], names)


def load_split(data: str | os.PathLike | None, split: str, *, size: int = 128, limit: int | None = None) -> ImageSet:
    """A split from either source: an ImageFolder tree (`data/train`, `data/val`) when `data`
    is a folder with those sub-folders, otherwise the pack."""
    if data is not None and Path(data).is_dir() and (Path(data) / split).is_dir():
        return load_folder(Path(data) / split, size=size, limit=limit)
    return load_pack(str(data) if data else None, split, limit)


def normalise(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def train_transform(size: int, min_scale: float = 0.35) -> v2.Transform:
    """Random-resized crop and horizontal flip (train only)."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True),
                       v2.RandomHorizontalFlip(), normalise()])


def resize_transform(size: int) -> v2.Transform:
    """uint8 (..., 3, H, W) -> (..., 3, size, size): the whole image squashed to a square
    (bilinear, anti-aliased, no crop; the pack's photos are already square)."""
    return v2.Resize((size, size), antialias=True)


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Transform:
    """The whole image resized to size x size and normalised with `mean`/`std`: how every
    image becomes a network input. A checkpoint's card applies it with its own size, mean
    and std (resattn.card.ModelCard.preprocess / .transform); use those."""
    return v2.Compose([resize_transform(size), normalise(mean, std)])


def image_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image (any mode) as a uint8 3 x H x W RGB tensor."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"Expected a PIL image (resattn.load_image reads one from a file), got "
                        f"{type(image).__name__}.")
    return v2.functional.pil_to_tensor(image.convert("RGB"))


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


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from .pack import prepare_pack

    parser = argparse.ArgumentParser(prog="python -m resattn.data", description="Data tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="build a pack (.npz) from the official Imagenette folder or .tgz",
                               description=prepare_pack.__doc__)
    prep.add_argument("source", help="the Imagenette folder (with train/ and val/) or its .tgz")
    prep.add_argument("--size", type=int, default=128, help="side of the square images in the pack (default 128)")
    prep.add_argument("--out", required=True, help="the pack to write, e.g. imagenette-128.npz")
    args = parser.parse_args(argv)
    try:
        path, sha, counts = prepare_pack(args.source, args.out, size=args.size)
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {counts['train']} train + {counts['val']} val images at {args.size} px, "
          f"{path.stat().st_size:,} bytes")
    print(f"sha256 {sha}  {path.name}")
    print(f"Use it with: RESATTN_DATA={path} (or --data {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
