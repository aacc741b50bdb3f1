"""The sample gallery: photos shipped inside scikit-image and, when the Imagenette pack is
present, two validation photos per class read from it at run time.

The default photo is chosen by a rule (`default_image`): with the pack, the first gallery
photo (in gallery order: class by class, the pack's val order within a class) that the
session's checkpoint classifies correctly with probability >= 0.8, so a first visit opens on
a photo the network knows and gets right; without the pack (or when no photo qualifies, or
the weights are untrained), scikit-image's cat, with a plain note that it is none of the
network's classes. The gallery's labels mark which photos are in-distribution.

Image ids (what `img=` holds in the URL): "sample:<name>" for scikit-image photos,
"imagenette:<n>" for the n-th gallery photo of the pack, "upload" and "camera" for the
user's own images (those cannot travel in a link).
"""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
import torch
from PIL import Image

from resattn import data, teaching
from resattn.errors import ResattnError

from . import cache
from .cards import untrained

# name -> (label, loader in skimage.data). All ship inside the scikit-image wheel (no download).
SKIMAGE_SAMPLES = {
    "chelsea": ("Chelsea the cat", "chelsea"),
    "astronaut": ("Astronaut (Eileen Collins)", "astronaut"),
    "coffee": ("Cup of coffee", "coffee"),
    "rocket": ("Rocket on the launch pad", "rocket"),
    "motorcycle": ("Motorcycle", "stereo_motorcycle"),
    "camera": ("Cameraman (greyscale)", "camera"),
}
DEFAULT_IMAGE = "sample:chelsea"  # without the pack, or when no pack photo qualifies
PACK_PER_CLASS = 2
OUTSIDE = "outside the training classes"
INSIDE = "in-distribution"


@st.cache_data(max_entries=len(SKIMAGE_SAMPLES) + 2, show_spinner=False)
def _skimage_array(loader: str) -> np.ndarray:
    import skimage.data

    array = getattr(skimage.data, loader)()
    if isinstance(array, tuple):  # stereo pairs: the left view
        array = array[0]
    return np.asarray(array)


@st.cache_data(max_entries=1, ttl=3600, show_spinner="Reading the Imagenette gallery…")
def _pack_gallery() -> tuple[np.ndarray, list[str]] | None:
    """PACK_PER_CLASS validation photos per class (the first ones of each class), decoded
    from the pack on demand and kept only in memory."""
    if not data.pack_available():
        return None
    images = data.load_pack(split="val", limit=PACK_PER_CLASS)
    labels = [images.classes[int(i)] for i in images.labels]
    return images.images.numpy(), labels


def _plain_labels() -> dict[str, str]:
    out = {f"sample:{name}": label for name, (label, _) in SKIMAGE_SAMPLES.items()}
    gallery = _pack_gallery()
    if gallery is not None:
        counts: dict[str, int] = {}
        for i, label in enumerate(gallery[1]):
            counts[label] = counts.get(label, 0) + 1
            out[f"imagenette:{i}"] = f"Imagenette val: {label} ({counts[label]})"
    return out


def photo_class(image_id: str) -> str | None:
    """The true class of a gallery photo (pack photos), None for scikit-image's photos."""
    kind, _, name = image_id.partition(":")
    gallery = _pack_gallery() if kind == "imagenette" and name.isdigit() else None
    if gallery is None or int(name) >= len(gallery[1]):
        return None
    return gallery[1][int(name)]


def in_distribution(image_id: str, classes: list[str] | None = None) -> bool:
    """Whether a gallery photo shows one of `classes` (default: the pack's classes, which
    the shipped networks were trained on). scikit-image's photos never do."""
    truth = photo_class(image_id)
    return truth is not None and (classes is None or truth in classes)


def label(image_id: str) -> str:
    """A gallery photo's name, e.g. "Chelsea the cat" or "Imagenette val: tench (1)"."""
    return _plain_labels().get(image_id, image_id)


def choices(classes: list[str] | None = None) -> dict[str, str]:
    """image id -> label, in gallery order, each marked in-distribution or not (for
    `classes`, default the pack's classes; see `in_distribution`)."""
    return {image_id: f"{text} · {INSIDE if in_distribution(image_id, classes) else OUTSIDE}"
            for image_id, text in _plain_labels().items()}


def outside_note(image_id: str, classes: list[str]) -> str | None:
    """For a gallery photo outside `classes`: a plain sentence saying so and naming the
    classes the network knows; None for an in-distribution photo or the user's own."""
    if not image_id.startswith(("sample:", "imagenette:")) or in_distribution(image_id, classes):
        return None
    return (f"**{label(image_id)}** is none of the {len(classes)} classes this network knows "
            f"({', '.join(classes)}), so its prediction can only be the closest of them."
            + ("" if data.pack_available() else " With the Imagenette pack present (`RESATTN_DATA`), the gallery "
               "also offers photos of these classes."))


@st.cache_data(max_entries=8, ttl=3600, show_spinner="Choosing a photo the network knows…")
def _first_confident(path: str, stamp: tuple, device: str) -> str | None:
    gallery = _pack_gallery()
    if gallery is None:
        return None
    try:
        card = cache.load_model(path, stamp, device)[1]
        model = cache.inference_model(path, stamp, device)  # the model whose prediction the pages show
    except ResattnError:
        return None
    if untrained(card):
        return None  # a "correct" answer of random weights is luck, not a lesson
    classes = list(card.classes)
    x = torch.cat([card.preprocess(Image.fromarray(array)) for array in gallery[0]]).to(device)
    labels = [classes.index(truth) if truth in classes else -1 for truth in gallery[1]]
    # Small batches: the first photo usually qualifies, so a first visit pays for a few images, not all.
    index = teaching.first_confident(model, x, labels, threshold=teaching.DEFAULT_THRESHOLD, batch_size=4)
    return None if index is None else f"imagenette:{index}"


def default_image(entry: cache.Entry | None, device: str) -> str:
    """The session's opening photo: the first gallery photo of the pack that `entry` (the
    checkpoint the session opens on, normally the default one) classifies correctly with
    probability >= teaching.DEFAULT_THRESHOLD; DEFAULT_IMAGE without the pack, without a
    usable trained checkpoint, or when no photo qualifies."""
    if entry is None or not entry.ok or not data.pack_available():
        return DEFAULT_IMAGE
    return _first_confident(entry.path, entry.stamp, device) or DEFAULT_IMAGE


def load(image_id: str) -> tuple[Image.Image, str]:
    """(RGB PIL image, sha256) of a gallery id; KeyError for an unknown id."""
    kind, _, name = image_id.partition(":")
    if kind == "sample" and name in SKIMAGE_SAMPLES:
        array = _skimage_array(SKIMAGE_SAMPLES[name][1])
    elif kind == "imagenette" and name.isdigit():
        gallery = _pack_gallery()
        if gallery is None or int(name) >= len(gallery[0]):
            raise KeyError(image_id)
        array = gallery[0][int(name)]
    else:
        raise KeyError(image_id)
    image = Image.fromarray(array).convert("RGB")
    digest = hashlib.sha256(image_id.encode() + np.ascontiguousarray(array).tobytes()).hexdigest()
    return image, digest


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def thumbnail(image_id: str, side: int = 160) -> np.ndarray:
    """A small copy of a gallery image (for the overview's gallery)."""
    image, _ = load(image_id)
    image = image.copy()
    image.thumbnail((side, side))
    return np.asarray(image)
