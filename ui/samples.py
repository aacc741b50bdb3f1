"""The sample gallery: photos shipped inside scikit-image (the embedded default) and, when
the Imagenette pack is present, two validation photos per class read from it at run time.

Image ids (what `img=` holds in the URL): "sample:<name>" for scikit-image photos,
"imagenette:<n>" for the n-th gallery photo of the pack, "upload" and "camera" for the
user's own images (those cannot travel in a link).
"""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
from PIL import Image

from resattn import data

# name -> (label, loader in skimage.data). All ship inside the scikit-image wheel (no download).
SKIMAGE_SAMPLES = {
    "chelsea": ("Chelsea the cat", "chelsea"),
    "astronaut": ("Astronaut (Eileen Collins)", "astronaut"),
    "coffee": ("Cup of coffee", "coffee"),
    "rocket": ("Rocket on the launch pad", "rocket"),
    "motorcycle": ("Motorcycle", "stereo_motorcycle"),
    "camera": ("Cameraman (greyscale)", "camera"),
}
DEFAULT_IMAGE = "sample:chelsea"
PACK_PER_CLASS = 2


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


def choices() -> dict[str, str]:
    """image id -> label, in gallery order."""
    out = {f"sample:{name}": label for name, (label, _) in SKIMAGE_SAMPLES.items()}
    gallery = _pack_gallery()
    if gallery is not None:
        counts: dict[str, int] = {}
        for i, label in enumerate(gallery[1]):
            counts[label] = counts.get(label, 0) + 1
            out[f"imagenette:{i}"] = f"Imagenette val: {label} ({counts[label]})"
    return out


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
