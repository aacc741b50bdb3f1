"""`python -m resattn.report --checkpoint C --images DIR_OR_PACK --out OUT [--limit N]`

Do the soft masks agree with attributions, and does that survive chance? For every image
(drawn stratified by class with a seed: `--limit 500` takes 50 per class of the 10) the
masks of every attention module reduced three ways, |IG|, signed IG, Grad-CAM (at the last
attention stage and at each module's output) and Occlusion for the predicted class, with
empirical nulls; deletion / insertion of every order under two fills; mask interventions;
cascading randomisation of the mask branches. See resattn.analysis.study for the
definitions. Writes, in OUT:

  agreement.csv     checkpoint,module,reduction,method,metric,n_images,value,null_mean,
                    null_low,null_high,p_holm: the mean over images and the less
                    significant of the two nulls (shuffle: other images' attributions;
                    smooth: random maps with the mask's autocorrelation), its mean and 95 %
                    band, and the paired t-test's p, Holm-corrected over every row
  agreement_nulls.csv   both nulls per cell, the value's bootstrap interval, raw p
  faithfulness.csv  checkpoint,order,n_images,deletion_auc,deletion_low,deletion_high,
                    insertion_auc,insertion_low,insertion_high (blurred-image fill)
  faithfulness_impute.csv   the same with the imputed fill (ROAD's idea)
  faithfulness_tests.csv    each order minus its references (pixel noise; the module's
                    smooth random order), paired, bootstrap interval, Holm-corrected p
  sanity.csv        checkpoint,randomised_through,module,reduction,spearman_to_original,
                    ssim_to_original
  sanity_agreement.csv      the agreement of the randomised masks with the attributions
  reductions.csv    the share of spatial variance each reduction keeps (and the most any one
                    map can keep: the first principal component's share), peaks on the border
  causal.csv        the target logit when a module's mask is replaced (set mean, 1, another
                    image's mask), with intervals and Holm-corrected p
  metrics.csv       one row per image (every value above, per image)
  report.json       the settings, image count, processes and time taken
  <image>.png       one figure per image (unless --no-figures)

Intervals are percentile bootstraps over images, resampled within classes (seeded).

Under torchrun the images are sharded over the processes (gloo on CPU, nccl on GPUs); the
results are gathered and rank 0 writes one set of files, the same as one process writes:

    torchrun --nproc_per_node 2 -m resattn.report --checkpoint C --images pack --limit 500 --out OUT
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .analysis import study
from .analysis.agreement import METRICS
from .analysis.attribution import REPORT_METHODS
from .analysis.dataset import SAMPLINGS, load_images, normalise_batch, shard_indices
from .analysis.faithfulness import BASELINES
from .analysis.reduce import ANALYSIS_REDUCTIONS
from .analysis.significance import agreement_verdict, bootstrap_weights, side
from .checkpoints import IMAGENET_MEAN, IMAGENET_STD, _stem
from .errors import ResattnError

LAYOUT = "tight"  # 3-5x faster to save than "constrained", same look here
masked_modules = study.masked_modules  # kept importable from here

AGREEMENT_COLUMNS = ["checkpoint", "module", "reduction", "method", "metric", "n_images", "value", "null_mean",
                     "null_low", "null_high", "p_holm"]
FAITHFULNESS_COLUMNS = ["checkpoint", "order", "n_images", "deletion_auc", "deletion_low", "deletion_high",
                        "insertion_auc", "insertion_low", "insertion_high"]
SANITY_COLUMNS = ["checkpoint", "randomised_through", "module", "reduction", "spearman_to_original",
                  "ssim_to_original"]


# --------------------------------------------------------------------------- distribution

class _Collective:
    """The process group of a torchrun launch (or nothing in a single process): rank, world
    and the object collectives the report needs, always over gloo (CPU objects)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.started = False
        self.group = None
        self.rank, self.world = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
                self.started = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            self.group = dist.new_group(backend="gloo")

    def all_gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def gather(self, obj) -> list | None:
        """Every rank's object on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.rank == 0 else None
        self.dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier(group=self.group)

    def close(self) -> None:
        if self.started:
            self.dist.destroy_process_group()


# --------------------------------------------------------------------------- figures

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
        from .analysis.reduce import to_image_size

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
    parser.add_argument("--out", required=True, help="output folder for the CSV files and figures")
    parser.add_argument("--limit", type=int, help="use this many images (default: all)")
    parser.add_argument("--sample", choices=SAMPLINGS, default="stratified",
                        help="how --limit picks images: equal numbers per class at random (stratified, default) "
                             "or spread evenly over the set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample, nulls, ties and bootstrap (default 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default)")
    parser.add_argument("--steps", type=int, default=16, help="steps of the deletion/insertion curves (default 16)")
    parser.add_argument("--fills", default=",".join(study.FILLS),
                        help=f"fills of deletion/insertion, comma-separated from {', '.join(BASELINES)} "
                             "(default blur,impute; the first goes to faithfulness.csv)")
    parser.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    parser.add_argument("--grid", type=int, default=study.DEFAULT_GRID,
                        help="side of the grid on which maps are compared (default 32)")
    parser.add_argument("--draws", type=int, default=study.DEFAULT_DRAWS, help="null draws per image (default 100)")
    parser.add_argument("--bootstrap", type=int, default=study.BOOTSTRAP, help="bootstrap resamples (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64, help="perturbed images per forward pass (default 64)")
    parser.add_argument("--no-figures", action="store_true", help="write only the CSV files")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch per process (default: torch's choice; 1 is often faster on a "
                             "busy machine)")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> study.StudySettings:
    fills = tuple(f for f in str(args.fills).split(",") if f)
    if not fills or any(f not in BASELINES for f in fills):
        raise ResattnError(f"--fills takes names from {', '.join(BASELINES)}, comma-separated; got {args.fills!r}.")
    for name in ("steps", "ig_steps", "batch_size", "grid", "bootstrap"):
        if getattr(args, name) < 1:
            raise ResattnError(f"--{name.replace('_', '-')} must be at least 1.")
    if args.threads is not None and args.threads < 1:
        raise ResattnError("--threads must be at least 1.")
    if args.draws < 2:
        raise ResattnError("--draws must be at least 2 (a null band needs draws).")
    return study.StudySettings(steps=args.steps, ig_steps=args.ig_steps, batch_size=args.batch_size, grid=args.grid,
                               draws=args.draws, fills=fills, bootstrap=args.bootstrap, seed=args.seed)


def _write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def metrics_rows(records: list[study.ImageRecord], observed: np.ndarray | None, modules: list[str], orders: list[str],
                 fills: tuple[str, ...], names: list[str], classes: list[str]) -> tuple[list[str], list[dict]]:
    """metrics.csv: one row per image, every per-image value of the tables."""
    cells = study.agreement_cells(modules)
    columns = ["file", "true_label", "predicted_label", "probability"]
    columns += [f"{m}_{r}_{a}_{k}" for m, r, a in cells for k in METRICS]
    columns += [f"{c}_auc_{f}_{o}" for f in fills for o in orders for c in ("deletion", "insertion")]
    rows = []
    for i, rec in enumerate(records):
        row = {"file": names[rec.index], "true_label": classes[rec.label] if rec.label >= 0 else "",
               "predicted_label": classes[rec.target], "probability": study._g(rec.probability)}
        if observed is not None:
            for c, (m, r, a) in enumerate(cells):
                for j, k in enumerate(METRICS):
                    row[f"{m}_{r}_{a}_{k}"] = study._g(observed[i, c, j])
        for f in fills:
            for o in orders:
                deletion, insertion = rec.auc[(f, o)]
                row[f"deletion_auc_{f}_{o}"], row[f"insertion_auc_{f}_{o}"] = study._g(deletion), study._g(insertion)
        rows.append(row)
    return columns, rows


def run(args: argparse.Namespace) -> dict:
    """The whole report; returns a summary dict (rank 0) with the paths and the time."""
    from tqdm import tqdm

    from .checkpoints import load_checkpoint
    from .device import pick_device

    settings = _settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    comm = _Collective()
    try:
        device = pick_device(args.device)
        if comm.world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        model, card = load_checkpoint(args.checkpoint, device=device)
        # channels_last: faster convolutions on CPU (oneDNN) and on recent GPUs; same numbers.
        model = model.to(memory_format=torch.channels_last)
        classes = list(card["classes"])
        size = int(card.get("input_size", 224))
        mean, std = card.get("mean", IMAGENET_MEAN), card.get("std", IMAGENET_STD)
        images = load_images(args.images, classes=classes, size=size, limit=args.limit, sample=args.sample,
                             seed=args.seed)
        out = Path(args.out)
        if comm.rank == 0:
            try:
                out.mkdir(parents=True, exist_ok=True)
                (out / ".write-test").write_text("")
                (out / ".write-test").unlink()
            except OSError as exc:
                raise ResattnError(f"Cannot write to {out} ({exc.strerror or exc}); choose another --out folder.") from None
        comm.barrier()
        checkpoint = _stem(args.checkpoint).name
        n = len(images)
        modules = study.masked_modules(model)
        all_modules = [name for name, _ in model.attention_modules()]
        orders = study.order_names(modules, all_modules)
        shard = shard_indices(n, comm.rank, comm.world)
        figure_names: dict[int, str] = {}
        taken: set[str] = set()
        for i in range(n):  # every rank names every figure the same way
            figure_names[i] = figure_name(images.names[i], taken)

        def batch(i: int) -> torch.Tensor:
            return normalise_batch(images.images[i:i + 1], size, mean, std).contiguous(memory_format=torch.channels_last)

        # 1. Per image (sharded).
        from .model.fuse import optimise_for_inference

        cascade = study.cascade_models(model, settings.seed)
        curves_model = optimise_for_inference(model)
        records, sums = [], {}
        for i in tqdm(shard, desc="report: images", unit="image", disable=comm.rank != 0):
            x = batch(int(i))
            record = study.analyse_image(model, x, int(i), int(images.labels[i]), settings, cascade=cascade,
                                         keep_extras=not args.no_figures, curves_model=curves_model)
            for name, total in study.mask_sums(model, x).items():
                sums[name] = sums[name] + total if name in sums else total
            if not args.no_figures:
                fig = image_figure(record, images.images[i].numpy(), classes,
                                   title=f"{images.names[i]} — {checkpoint}")
                fig.savefig(out / figure_names[int(i)], dpi=90)
                record.extras = {}
            records.append(record)
        everyone = {r.index: r for part in comm.all_gather(records) for r in part}
        totals: dict[str, torch.Tensor] = {}
        for part in comm.all_gather(sums):
            for name, total in part.items():
                totals[name] = totals[name] + total if name in totals else total
        means = study.mean_masks(totals, n)

        # 2. The causal test and 3. the agreement with its nulls (sharded; need the whole set).
        offsets = study.shuffle_offsets(n, settings.draws, settings.seed)
        local = []
        for i in tqdm(shard, desc="report: interventions and nulls", unit="image", disable=comm.rank != 0):
            rec = everyone[int(i)]
            effects = {}
            if modules:
                partner = (int(i) + n // 2) % n if n > 1 else int(i)
                effects = study.causal_effects(model, batch(int(i)), batch(partner), rec.target, means)
            values = study.agreement_values(rec, everyone, offsets, n, settings, modules) if modules else None
            local.append((int(i), effects, values))
        gathered = comm.gather(local)
        summary = {}
        if comm.rank == 0:
            summary = _write_tables(out, checkpoint, settings, modules, orders, cascade, everyone,
                                    sorted((x for part in gathered for x in part), key=lambda t: t[0]),
                                    images, classes)
            seconds = time.perf_counter() - start
            info = {"checkpoint": str(args.checkpoint), "images": str(args.images), "n_images": n,
                    "sample": args.sample, "limit": args.limit, "settings": {**settings.__dict__,
                                                                            "fills": list(settings.fills)},
                    "processes": comm.world, "threads": torch.get_num_threads(), "device": str(device),
                    "seconds": round(seconds, 1), "seconds_per_image": round(seconds / max(1, n), 2),
                    "torch": torch.__version__}
            (out / "report.json").write_text(json.dumps(info, indent=2) + "\n")
            summary.update(seconds=seconds, n_images=n, out=out)
        comm.barrier()
        return summary
    finally:
        comm.close()


def _write_tables(out: Path, checkpoint: str, settings: study.StudySettings, modules: list[str], orders: list[str],
                  cascade, records: dict, local: list, images, classes: list[str]) -> dict:
    n = len(records)
    ordered = [records[i] for i in range(n)]
    labels = np.array([r.label for r in ordered])
    weights = bootstrap_weights(labels, settings.bootstrap, settings.seed)
    fills = list(settings.fills)
    auc = np.array([[[rec.auc[(f, o)] for o in orders] for f in fills] for rec in ordered])  # N x fills x orders x 2
    for f, fill in enumerate(fills):
        name = "faithfulness.csv" if f == 0 else f"faithfulness_{fill}.csv"
        _write_csv(out / name, study.faithfulness_rows(checkpoint, orders, auc[:, f], weights), FAITHFULNESS_COLUMNS)
    _write_csv(out / "faithfulness_tests.csv", study.faithfulness_test_rows(checkpoint, fills, orders, auc, weights))
    observed = None
    result = {"files": ["faithfulness.csv"]}
    steps = [label for label, _ in cascade]
    if modules:
        observed = np.stack([v.observed for _, _, v in local])
        nulls = {"shuffle": np.stack([v.shuffle for _, _, v in local]) if n > 1 else None,
                 "smooth": np.stack([v.smooth for _, _, v in local])}
        main, detail = study.agreement_rows(checkpoint, modules, observed, nulls, weights)
        _write_csv(out / "agreement.csv", main, AGREEMENT_COLUMNS)
        _write_csv(out / "agreement_nulls.csv", detail)
        sanity = np.array([[[[rec.sanity[(s, m, r)] for r in ANALYSIS_REDUCTIONS] for m in modules] for s in steps]
                           for rec in ordered])
        _write_csv(out / "sanity.csv", study.sanity_rows(checkpoint, steps, modules, sanity), SANITY_COLUMNS)
        moved = np.array([[[[[rec.sanity_agreement[(s, m, r, a)] for a in REPORT_METHODS]
                             for r in ANALYSIS_REDUCTIONS] for m in modules] for s in steps] for rec in ordered])
        _write_csv(out / "sanity_agreement.csv", study.sanity_agreement_rows(checkpoint, steps, modules, moved, observed))
        kept = np.array([[[rec.kept[(m, r)] for r in ANALYSIS_REDUCTIONS] for m in modules] for rec in ordered])
        border = np.array([[[rec.border[(m, r)] for r in ANALYSIS_REDUCTIONS] for m in modules] for rec in ordered],
                          dtype=np.float64)
        best = np.array([[rec.kept[(m, "best")] for m in modules] for rec in ordered])
        _write_csv(out / "reductions.csv",
                   study.reduction_rows(checkpoint, modules, kept, border, ordered[0].border_chance, weights, best))
        effects = np.array([[[e[(m, r)] for r in study.REPLACEMENTS] for m in modules] for _, e, _ in local])
        _write_csv(out / "causal.csv", study.causal_rows(checkpoint, modules, effects, weights))
        result["agreement"] = main
    else:  # no masks: nothing to compare, randomise or replace; the files exist with their header
        for name, columns in (("agreement.csv", AGREEMENT_COLUMNS), ("sanity.csv", SANITY_COLUMNS)):
            _write_csv(out / name, [], columns)
        result["agreement"] = []
    columns, rows = metrics_rows(ordered, observed, modules, orders, tuple(fills), images.names, classes)
    _write_csv(out / "metrics.csv", rows, columns)
    result["faithfulness"] = study.faithfulness_rows(checkpoint, orders, auc[:, 0], weights)
    return result


def summary_lines(result: dict) -> list[str]:
    """What the terminal shows: how many agreement cells differ from chance, and the
    deletion / insertion AUC of the main orders."""
    lines = []
    rows = result.get("agreement", [])
    if rows:
        sides = [side(float(r["value"]), float(r["null_low"]), float(r["null_high"]), float(r["p_holm"]))
                 for r in rows]
        lines.append(f"agreement: {len(rows)} cells (module x reduction x method x metric); "
                     f"{sides.count(1)} above chance, {sides.count(-1)} below, {sides.count(0)} not distinguishable "
                     "(Holm-corrected p < 0.05 and outside the null band)")
        strongest = max(rows, key=lambda r: float(r["value"]) - float(r["null_high"]))
        lines.append("largest margin above its null: " + agreement_verdict(strongest, tests=len(rows)))
    lines.append(f"{'order':<34}{'deletion AUC':>24}{'insertion AUC':>24}")
    for r in result.get("faithfulness", []):
        lines.append(f"{r['order']:<34}{float(r['deletion_auc']):>10.3f} ({float(r['deletion_low']):.3f}-"
                     f"{float(r['deletion_high']):.3f}){float(r['insertion_auc']):>10.3f} "
                     f"({float(r['insertion_low']):.3f}-{float(r['insertion_high']):.3f})")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}; check --out and --images.", file=sys.stderr)
        return 2
    if result:
        print("\n".join(summary_lines(result)))
        seconds, count = result["seconds"], result["n_images"]
        print(f"wrote {result['out']} ({count} images) in {seconds:.1f} s ({seconds / max(1, count):.2f} s per image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
