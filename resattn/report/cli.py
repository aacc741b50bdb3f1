"""`python -m resattn.report`: the arguments, the settings they make, and the run (sharded
over torchrun's processes; rank 0 writes the files). The package's docstring says what is written."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from ..analysis import study
from ..analysis.dataset import shard_indices
from ..analysis.faithfulness import BASELINES
from ..analysis.image_sets import SAMPLINGS, load_images
from ..checkpoints import _stem
from ..errors import ResattnError
from . import __doc__ as PACKAGE_DOC  # what the report writes, in words
from .collective import Collective
from .figure import figure_name, image_figure
from .partial import FOLDER, PartialResults, checkpoint_hash, manifest
from .tables import summary_lines, write_tables


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, exit 2
        self.exit(2, f"error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="python -m resattn.report", description=PACKAGE_DOC.split("\n\n")[1],
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
    parser.add_argument("--fresh", action="store_true",
                        help=f"discard the images saved in OUT/{FOLDER}/ and start over. Without it the report "
                             "resumes: each image's results are saved there as soon as it is done, so rerunning the "
                             "same command after an interruption analyses only the missing images (any number of "
                             "torchrun processes); the tables are then computed over all images, the same as an "
                             "uninterrupted run (byte for byte with the same --device and --threads). A rerun with "
                             "another checkpoint, image set or setting (--bootstrap excepted) is refused. The folder goes "
                             "once the files are written")
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


def run(args: argparse.Namespace) -> dict:
    """The whole report; returns a summary dict (rank 0) with the paths and the time."""
    from tqdm import tqdm

    from ..checkpoints import load_checkpoint
    from ..device import pick_device

    settings = _settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    comm = Collective()
    try:
        device = pick_device(args.device)
        if comm.world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        model, card = load_checkpoint(args.checkpoint, device=device)
        # channels_last: faster convolutions on CPU (oneDNN) and on recent GPUs; same numbers.
        model = model.to(memory_format=torch.channels_last)
        classes = list(card.classes)
        images = load_images(args.images, classes=classes, size=card.input_size, limit=args.limit, sample=args.sample,
                             seed=args.seed)
        out = Path(args.out)
        checkpoint = _stem(args.checkpoint).name
        partial = PartialResults(out, manifest(checkpoint_hash(model, card), images, settings,
                                               figures=not args.no_figures))
        if comm.rank == 0:
            try:
                out.mkdir(parents=True, exist_ok=True)
                (out / ".write-test").write_text("")
                (out / ".write-test").unlink()
                partial.prepare(fresh=args.fresh)
            except OSError as exc:
                raise ResattnError(f"Cannot write to {out} ({exc.strerror or exc}); choose another --out folder.") from None
        comm.barrier()
        partial.check()  # on every rank, so that all of them stop on a mismatch
        n = len(images)
        resumed = len(partial.done(range(n)))
        if resumed and comm.rank == 0:
            print(f"resuming: {resumed} of {n} images already done in {partial.folder}", file=sys.stderr)
        modules = study.masked_modules(model)
        all_modules = [name for name, _ in model.attention_modules()]
        orders = study.order_names(modules, all_modules)
        shard = shard_indices(n, comm.rank, comm.world)
        figure_names: dict[int, str] = {}
        taken: set[str] = set()
        for i in range(n):  # every rank names every figure the same way
            figure_names[i] = figure_name(images.names[i], taken)

        def batch(i: int) -> torch.Tensor:
            return card.preprocess_batch(images.images[i:i + 1]).contiguous(memory_format=torch.channels_last)

        # 1. Per image (sharded). An image saved by an interrupted run is read back, not
        # analysed again; its masks are summed again (one forward pass) for the set's mean.
        from ..model.fuse import optimise_for_inference

        cascade = study.cascade_models(model, settings.seed)
        curves_model = optimise_for_inference(model)
        records, sums = [], {}
        saved = set(partial.done(shard))
        for i in tqdm(shard, desc="report: images", unit="image", disable=comm.rank != 0):
            x = batch(int(i))
            if int(i) in saved:
                record = partial.load(int(i))
            else:
                record = study.analyse_image(model, x, int(i), int(images.labels[i]), settings, cascade=cascade,
                                             keep_extras=not args.no_figures, curves_model=curves_model)
                if not args.no_figures:  # drawn before the record is saved: a saved image has its figure
                    fig = image_figure(record, images.images[i].numpy(), classes,
                                       title=f"{images.names[i]} — {checkpoint}")
                    fig.savefig(out / figure_names[int(i)], dpi=90)
                    record.extras = {}
                partial.save(record)
            for name, total in study.mask_sums(model, x).items():
                sums[name] = sums[name] + total if name in sums else total
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
            summary = write_tables(out, checkpoint, settings, modules, orders, cascade, everyone,
                                    sorted((x for part in gathered for x in part), key=lambda t: t[0]),
                                    images, classes)
            seconds = time.perf_counter() - start
            info = {"checkpoint": str(args.checkpoint), "images": str(args.images), "n_images": n,
                    "sample": args.sample, "limit": args.limit, "settings": {**settings.__dict__,
                                                                            "fills": list(settings.fills)},
                    "images_resumed": resumed, "processes": comm.world, "threads": torch.get_num_threads(), "device": str(device),
                    "seconds": round(seconds, 1),  # this run's: a resumed run's saved images took their time before
                    "seconds_per_image": round(seconds / max(1, n - resumed), 2),
                    "torch": torch.__version__}
            (out / "report.json").write_text(json.dumps(info, indent=2) + "\n")
            partial.remove()  # every file is written: the saved images are no longer needed
            summary.update(seconds=seconds, n_images=n, resumed=resumed, out=out)
        comm.barrier()
        return summary
    finally:
        comm.close()


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
        seconds, count, resumed = result["seconds"], result["n_images"], result.get("resumed", 0)
        analysed = f", {count - resumed} analysed now, {resumed} resumed" if resumed else ""
        print(f"wrote {result['out']} ({count} images{analysed}) in {seconds:.1f} s "
              f"({seconds / max(1, count - resumed):.2f} s per image analysed)")
    return 0
