"""`python -m resattn.report --checkpoint C --images DIR_OR_PACK --out OUT [--limit N]`

For every image: the mask of every attention module, Integrated Gradients, Grad-CAM and
Occlusion for the predicted class, the agreement of each mask with each attribution and
deletion / insertion curves of every map (masks, attributions, a random order). Writes
OUT/<image>.png (one figure per image) and OUT/metrics.csv, one row per image:

  file, true_label (empty when unknown), predicted_label, probability (of the prediction),
  <module>_<method>_spearman / _iou / _pointing   for every module x attribution method
                                                  (iou of the top 20 % regions; pointing 1/0)
  deletion_auc_mask_<module>, insertion_auc_mask_<module>   for every module
  deletion_auc_<method>, insertion_auc_<method>             for ig, gradcam, occlusion
  deletion_auc_random, insertion_auc_random

Methods are named ig, gradcam, occlusion. Everything explains the predicted class. A model
without masks (attention "none") gets only the attribution and random columns. See
resattn.analysis for the definitions (baselines, regions, layers).
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .analysis.agreement import DEFAULT_TOP_FRACTION, Agreement, agreement
from .analysis.attribution import METHOD_LABELS, METHODS, Attribution, attribute_all
from .analysis.dataset import load_images, normalise_batch
from .analysis.faithfulness import RANDOM, FaithfulnessCurve, faithfulness
from .analysis.reduce import mask_map
from .checkpoints import IMAGENET_MEAN, IMAGENET_STD
from .errors import ResattnError
from .trace import Trace, trace

LAYOUT = "tight"  # 3-5x faster to save than "constrained", same look here


@dataclass
class ImageAnalysis:
    """Everything the report computes for one image."""
    trace: Trace  # on the CPU
    target: int  # the predicted class, which every map explains
    probability: float  # its softmax probability
    mask_maps: dict[str, torch.Tensor]  # module -> H x W mean mask, resized to the image
    attributions: dict[str, Attribution]  # method -> attribution
    agreements: dict[tuple[str, str], Agreement]  # (module, method) -> agreement
    curves: dict[str, FaithfulnessCurve] = field(default_factory=dict)  # "mask:<module>", method, "random"


def masked_modules(model: nn.Module) -> list[str]:
    """Names of the attention modules that have a soft mask."""
    return [name for name, module in model.attention_modules() if module.soft_mask_branch is not None]


def analyse_image(model: nn.Module, image: torch.Tensor, *, steps: int = 32, batch_size: int = 64,
                  ig_steps: int = 32, fraction: float = DEFAULT_TOP_FRACTION, seed: int = 0) -> ImageAnalysis:
    """Masks, attributions, agreements and faithfulness curves for one normalised image
    1 x 3 x H x W, all for the predicted class."""
    device = next(model.parameters()).device
    image = image.to(device)
    tr = trace(model, image).to("cpu")
    probabilities = tr.logits.float().softmax(dim=1)[0]
    target = int(probabilities.argmax())
    size = tuple(image.shape[-2:])
    modules = masked_modules(model)
    mask_maps = {name: mask_map(tr[name].mask[0], size) for name in modules}
    attributions = attribute_all(model, image, target, options={"ig": {"n_steps": ig_steps}})
    agreements = {(name, method): agreement(mask_maps[name], attributions[method].map, fraction)
                  for name in modules for method in attributions}
    maps = {f"mask:{name}": m for name, m in mask_maps.items()}
    maps.update({method: a.map for method, a in attributions.items()})
    curves = faithfulness(model, image, maps, target, steps=steps, batch_size=batch_size, seed=seed)
    return ImageAnalysis(tr, target, float(probabilities[target]), mask_maps, attributions, agreements, curves)


def csv_columns(modules: list[str], methods=METHODS) -> list[str]:
    columns = ["file", "true_label", "predicted_label", "probability"]
    columns += [f"{m}_{a}_{k}" for m in modules for a in methods for k in ("spearman", "iou", "pointing")]
    for name in [f"mask_{m}" for m in modules] + list(methods) + [RANDOM]:
        columns += [f"deletion_auc_{name}", f"insertion_auc_{name}"]
    return columns


def csv_row(result: ImageAnalysis, file: str, true_label: str, classes: list[str]) -> dict:
    row = {"file": file, "true_label": true_label, "predicted_label": classes[result.target],
           "probability": f"{result.probability:.6g}"}
    for (module, method), agree in result.agreements.items():
        row[f"{module}_{method}_spearman"] = f"{agree.spearman:.6g}"
        row[f"{module}_{method}_iou"] = f"{agree.iou:.6g}"
        row[f"{module}_{method}_pointing"] = int(agree.pointing)
    for name, curve in result.curves.items():
        key = name.replace("mask:", "mask_")
        row[f"deletion_auc_{key}"] = f"{curve.deletion_auc:.6g}"
        row[f"insertion_auc_{key}"] = f"{curve.insertion_auc:.6g}"
    return row


def summary(rows: list[dict], modules: list[str], methods=METHODS) -> list[str]:
    """A short text table of the means over images (NaN entries, e.g. Spearman of a
    constant map, are left out of a mean): agreement per module and method, then the
    deletion / insertion AUC of every map."""
    def mean(column: str) -> float:
        values = np.array([float(r[column]) for r in rows if r.get(column) not in (None, "")], dtype=np.float64)
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else float("nan")

    lines = []
    if modules:
        lines.append(f"{'agreement (mean)':<22}" + "".join(f"{m:>30}" for m in methods))
        lines.append(f"{'':<22}" + "".join(f"{'spearman  iou  pointing':>30}" for _ in methods))
        for module in modules:
            cells = [f"{mean(f'{module}_{m}_spearman'):>14.3f}{mean(f'{module}_{m}_iou'):>6.3f}"
                     f"{mean(f'{module}_{m}_pointing'):>10.3f}" for m in methods]
            lines.append(f"{'mask ' + module:<22}" + "".join(cells))
    lines.append(f"{'AUC (mean)':<22}{'deletion':>10}{'insertion':>11}")
    for name in [f"mask_{m}" for m in modules] + list(methods) + [RANDOM]:
        lines.append(f"{name:<22}{mean(f'deletion_auc_{name}'):>10.3f}{mean(f'insertion_auc_{name}'):>11.3f}")
    return lines


# --------------------------------------------------------------------------- figures

def _colourbar(fig, artist, ax) -> None:
    fig.colorbar(artist, ax=ax, fraction=0.046, pad=0.03)


def image_figure(result: ImageAnalysis, picture: np.ndarray, classes: list[str], title: str = ""):
    """A matplotlib figure: the image, each module's mean mask over it, the three
    attributions and the deletion / insertion curves. Colour bars show the maps' own
    values: masks and Grad-CAM on their data range, IG and Occlusion (signed) on a
    diverging scale symmetric about 0. Nothing is rescaled to 0..1."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    modules = list(result.mask_maps)
    columns = max(1 + len(modules), len(result.attributions), 2)
    fig = Figure(figsize=(3.2 * columns, 9.6), layout=LAYOUT)
    grid = fig.add_gridspec(3, columns)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(picture)
    ax.set_title(f"predicted {classes[result.target]} ({result.probability:.2f})", fontsize=9)
    ax.axis("off")
    for i, name in enumerate(modules, start=1):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(picture)
        artist = ax.imshow(result.mask_maps[name].numpy(), cmap="magma", alpha=0.7)
        _colourbar(fig, artist, ax)
        ax.set_title(f"mask {name} (channel mean)", fontsize=9)
        ax.axis("off")
    for i, (method, attr) in enumerate(result.attributions.items()):
        ax = fig.add_subplot(grid[1, i])
        values = attr.map.numpy()
        if method == "gradcam":
            artist = ax.imshow(values, cmap="viridis")
        else:
            limit = float(np.abs(values).max()) or 1.0
            artist = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        _colourbar(fig, artist, ax)
        detail = f" @ {attr.params['layer']}" if "layer" in attr.params else ""
        ax.set_title(f"{METHOD_LABELS[method]}{detail}", fontsize=9)
        ax.axis("off")
    half = columns // 2
    for kind, cols in (("deletion", slice(0, half)), ("insertion", slice(half, columns))):
        ax = fig.add_subplot(grid[2, cols])
        for name, curve in result.curves.items():
            values = curve.deletion if kind == "deletion" else curve.insertion
            auc = curve.deletion_auc if kind == "deletion" else curve.insertion_auc
            style = "--" if name == RANDOM else "-"
            ax.plot(curve.fractions, values, style, label=f"{name} (AUC {auc:.3f})")
        ax.set_xlabel(f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel(f"p({classes[result.target]})")
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} AUC = more faithful)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7)
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


# --------------------------------------------------------------------------- CLI

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, exit 2
        self.exit(2, f"error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="python -m resattn.report", description=__doc__.split("\n\n")[1],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint (.safetensors, its .json card or the stem)")
    parser.add_argument("--images", required=True,
                        help="a folder of images, an ImageFolder tree, a single image, or 'pack' / a .npz pack "
                             "(the Imagenette val split)")
    parser.add_argument("--out", required=True, help="output folder for the figures and metrics.csv")
    parser.add_argument("--limit", type=int, help="use this many images, spread evenly over the set")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default)")
    parser.add_argument("--steps", type=int, default=32, help="steps of the deletion/insertion curves (default 32)")
    parser.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    parser.add_argument("--batch-size", type=int, default=64, help="perturbed images per forward pass (default 64)")
    parser.add_argument("--no-figures", action="store_true", help="write only metrics.csv")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> tuple[Path, list[dict], list[str], float]:
    from tqdm import tqdm

    from .checkpoints import load_checkpoint
    from .device import pick_device

    if args.steps < 1 or args.ig_steps < 1 or args.batch_size < 1 or (args.threads is not None and args.threads < 1):
        raise ResattnError("--steps, --ig-steps, --batch-size and --threads must be at least 1.")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    device = pick_device(args.device)
    model, card = load_checkpoint(args.checkpoint, device=device)
    # channels_last: faster convolutions on CPU (oneDNN) and on recent GPUs; same numbers.
    model = model.to(memory_format=torch.channels_last)
    classes = list(card["classes"])
    size = int(card.get("input_size", 224))
    mean, std = card.get("mean", IMAGENET_MEAN), card.get("std", IMAGENET_STD)
    images = load_images(args.images, classes=classes, size=size, limit=args.limit)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        csv_file = open(out / "metrics.csv", "w", newline="")
    except OSError as exc:
        raise ResattnError(f"Cannot write to {out} ({exc.strerror or exc}); choose another --out folder.") from None
    taken: set[str] = set()
    rows = []
    modules = masked_modules(model)
    with csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=csv_columns(modules))
        writer.writeheader()
        for i in tqdm(range(len(images)), desc="report", unit="image"):
            x = normalise_batch(images.images[i:i + 1], size, mean, std)
            result = analyse_image(model, x, steps=args.steps, batch_size=args.batch_size, ig_steps=args.ig_steps)
            label = int(images.labels[i])
            file = images.names[i]
            rows.append(csv_row(result, file, classes[label] if label >= 0 else "", classes))
            writer.writerow(rows[-1])
            csv_file.flush()  # rows of an interrupted run are kept
            if not args.no_figures:
                fig = image_figure(result, images.images[i].numpy(), classes,
                                   title=f"{file} — {Path(str(args.checkpoint)).name}")
                fig.savefig(out / figure_name(file, taken), dpi=90)
    return out / "metrics.csv", rows, modules, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        path, rows, modules, seconds = run(args)
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}; check --out and --images.", file=sys.stderr)
        return 2
    print("\n".join(summary(rows, modules)))
    count = len(rows)
    print(f"wrote {path} ({count} images) in {seconds:.1f} s ({seconds / max(1, count):.2f} s per image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
