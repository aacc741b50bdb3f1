"""Image sets for the dataset-level analyses (mask statistics, the report, seed consistency):
the Imagenette pack's val split, an ImageFolder tree, a folder of images or one image, as an
ImageSet of uint8 images squashed to the model's input size; a limit keeps a subset spread
evenly over the set or drawn stratified by class (seeded); `normalise_batch` turns such
images into network inputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..card import IMAGENET_MEAN, IMAGENET_STD
from ..data import (
    IMAGE_SUFFIXES,
    ImageSet,
    eval_transform,
    find_pack,
    image_tensor,
    load_pack,
    resize_transform,
)
from ..errors import ImageError, ResattnError


def spread_indices(total: int, limit: int | None) -> np.ndarray:
    """`limit` indices spread evenly over range(total) (all of them when limit is None or
    at least total), so a limited run still covers every class of a class-sorted set."""
    if limit is None or limit >= total:
        return np.arange(total)
    if limit < 1:
        raise ResattnError(f"--limit must be at least 1, got {limit}.")
    return np.unique(np.linspace(0, total - 1, int(limit)).round().astype(np.int64))


SAMPLINGS = ("spread", "stratified")


def stratified_indices(labels, limit: int | None, seed: int = 0) -> np.ndarray:
    """`limit` indices drawn at random (seeded) in equal numbers from every class of
    `labels` (-1, an unknown label, is a class of its own), sorted. A class with fewer
    images than its share gives all of them and the rest is shared among the others; the
    first classes (in label order) take one more when `limit` does not divide evenly."""
    labels = np.asarray(labels)
    total = len(labels)
    if limit is None or limit >= total:
        return np.arange(total)
    if limit < 1:
        raise ResattnError(f"--limit must be at least 1, got {limit}.")
    from .agreement import rng_for

    groups = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    quota = {c: 0 for c in groups}
    left = int(limit)
    while left > 0:
        open_ = [c for c in groups if quota[c] < len(groups[c])]
        share, extra = divmod(left, len(open_))
        for i, c in enumerate(open_):
            quota[c] = min(len(groups[c]), quota[c] + share + (1 if i < extra else 0))
        left = int(limit) - sum(quota.values())
    chosen = [rng_for(seed, "stratified", c, total).choice(groups[c], size=quota[c], replace=False)
              for c in groups if quota[c]]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def load_images(source: str | os.PathLike, *, classes: list[str] | None = None, size: int = 128,
                limit: int | None = None, sample: str = "spread", seed: int = 0) -> ImageSet:
    """Images from `source` as an ImageSet (uint8 N x size x size x 3):

    - "pack" or a .npz file: the val split of the Imagenette pack;
    - a folder with class sub-folders (ImageFolder tree): labels from the folder names;
    - a folder of image files, or a single image file: labels unknown (-1).

    With `classes` (the checkpoint's class names) labels are indices into it, and folder
    names that are not among them get -1. `limit` keeps that many images, only those are
    decoded: spread evenly over the set (`sample="spread"`, see `spread_indices`) or drawn
    at random in equal numbers per class (`sample="stratified"` with `seed`, see
    `stratified_indices`; a folder without classes is one class).
    """
    from ..images import load_image

    if sample not in SAMPLINGS:
        raise ResattnError(f"Unknown sampling {sample!r}: choose one of {', '.join(SAMPLINGS)}.")

    def pick(labels) -> np.ndarray:
        if sample == "stratified":
            return stratified_indices(labels, limit, seed)
        return spread_indices(len(labels), limit)

    spec = str(source)
    if spec == "pack" or spec.endswith(".npz"):
        pack = load_pack(None if spec == "pack" else str(find_pack(spec)), "val")
        chosen = pack.subset(pick(pack.labels.numpy()))
        if tuple(chosen.images.shape[1:3]) != (size, size):  # resized as a card resizes (card.pixels)
            resized = resize_transform(size)(chosen.images.permute(0, 3, 1, 2))
            chosen.images = resized.permute(0, 2, 3, 1).contiguous()
        return _relabel(chosen, classes)
    path = Path(spec)
    if path.is_file():
        files, folder_classes, root = [("", path)], [], path.parent
    elif path.is_dir():
        root = path
        sub = sorted(p for p in path.iterdir() if p.is_dir())
        folder_classes = [p.name for p in sub if any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.rglob("*"))]
        if folder_classes:
            files = [(c, f) for c in folder_classes
                     for f in sorted(p for p in (path / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)]
        else:
            files = [("", f) for f in sorted(path.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise ResattnError(f"No images in {path}: give a folder of image files, an ImageFolder tree "
                               "(<folder>/<class>/<images>) or 'pack' for the Imagenette val split.")
    else:
        raise ResattnError(f"No image folder or file at {path}: give a folder of images, an ImageFolder tree "
                           "or 'pack' for the Imagenette val split.")
    names_of_classes = classes if classes is not None else folder_classes
    images, labels, names = [], [], []
    for index in pick(np.array([folder_classes.index(c) if c in folder_classes else -1 for c, _ in files])):
        cls, file = files[int(index)]
        try:
            image = load_image(file)
        except ImageError as exc:
            raise ResattnError(f"{file}: {exc}") from None
        # Squashed to size x size exactly as the app's card.preprocess does (card.pixels).
        images.append(resize_transform(size)(image_tensor(image)).permute(1, 2, 0))
        labels.append(names_of_classes.index(cls) if cls in names_of_classes else -1)
        names.append(str(file.relative_to(root)) if file != root else file.name)
    return ImageSet(torch.stack(images).contiguous(), torch.tensor(labels, dtype=torch.long),
                    list(names_of_classes), names)


def _relabel(images: ImageSet, classes: list[str] | None) -> ImageSet:
    if classes is None or list(classes) == list(images.classes):
        return images
    mapping = torch.tensor([classes.index(c) if c in classes else -1 for c in images.classes], dtype=torch.long)
    labels = torch.where(images.labels >= 0, mapping[images.labels.clamp(min=0)], images.labels)
    return ImageSet(images.images, labels, list(classes), images.names)


def normalise_batch(images: torch.Tensor, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 N x H x W x 3 -> the float N x 3 x size x size the models expect (the maths of
    every input, resattn.data.eval_transform). With a checkpoint, `card.preprocess_batch`."""
    return eval_transform(size, mean, std)(images.permute(0, 3, 1, 2))
