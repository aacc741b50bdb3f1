"""The report's per-image figure (matplotlib, no pyplot): the image, each module's mean mask,
the attributions on their own scales and the deletion / insertion curves; and its file name."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..analysis import study

LAYOUT = "tight"  # 3-5x faster to save than "constrained", same look here


def _colourbar(fig, artist, ax) -> None:
    fig.colorbar(artist, ax=ax, fraction=0.046, pad=0.03)


def image_figure(record: study.ImageRecord, picture: np.ndarray, classes: list[str], title: str = ""):
    """A matplotlib figure of one image: the image, each module's mean mask over it, the
    attributions (|IG|, signed IG, Grad-CAM at the last stage, Occlusion) and the deletion
    / insertion curves of the first fill. Colour bars show the maps' own values: masks,
    |IG| and Grad-CAM on their data range, signed IG and Occlusion on a diverging scale
    symmetric about 0. Nothing is rescaled to 0..1."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    size = picture.shape[:2]
    masks = record.extras.get("mean_masks", {})
    maps = record.extras.get("maps", {})
    shown = [k for k in ("abs_ig", "ig", "grad_cam", "occlusion") if k in maps]
    columns = max(1 + len(masks), len(shown), 2)
    fig = Figure(figsize=(3.2 * columns, 9.6), layout=LAYOUT)
    grid = fig.add_gridspec(3, columns)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(picture)
    ax.set_title(f"predicted {classes[record.target]} ({record.probability:.2f})", fontsize=9)
    ax.axis("off")
    for i, (name, native) in enumerate(masks.items(), start=1):
        from ..analysis.reduce import to_image_size

        ax = fig.add_subplot(grid[0, i])
        ax.imshow(picture)
        artist = ax.imshow(to_image_size(torch.from_numpy(native), size).numpy(), cmap="magma", alpha=0.7)
        _colourbar(fig, artist, ax)
        ax.set_title(f"mask {name} (channel mean)", fontsize=9)
        ax.axis("off")
    labels = {"abs_ig": "|IG|", "ig": "IG (signed)", "grad_cam": "Grad-CAM (last stage)", "occlusion": "Occlusion"}
    for i, key in enumerate(shown):
        ax = fig.add_subplot(grid[1, i])
        values = maps[key]
        if key in ("abs_ig", "grad_cam"):
            artist = ax.imshow(values, cmap="viridis")
        else:
            limit = float(np.abs(values).max()) or 1.0
            artist = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        _colourbar(fig, artist, ax)
        ax.set_title(labels[key], fontsize=9)
        ax.axis("off")
    curves = {k: c for k, c in record.extras.get("curves", {}).items()
              if k.endswith(":mean") or k in shown or k.startswith("random")}
    half = columns // 2
    for kind, cols in (("deletion", slice(0, half)), ("insertion", slice(half, columns))):
        ax = fig.add_subplot(grid[2, cols])
        for name, curve in curves.items():
            values = curve.deletion if kind == "deletion" else curve.insertion
            auc = curve.deletion_auc if kind == "deletion" else curve.insertion_auc
            ax.plot(curve.fractions, values, "--" if name.startswith("random") else "-",
                    label=f"{name} (AUC {auc:.3f})")
        ax.set_xlabel(f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel(f"p({classes[record.target]})")
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} AUC = more faithful)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def figure_name(file: str, taken: set[str]) -> str:
    """A file name for an image's figure: its path without suffix, with separators and odd
    characters replaced, made unique within one report."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(Path(file).with_suffix("")).replace("/", "__")).strip("_") or "image"
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    taken.add(name)
    return name + ".png"
