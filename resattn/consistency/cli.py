"""`python -m resattn.consistency`: trace and write consistency.csv, or read one, and rewrite the
section of docs/results.md (the package's docstring says what is measured)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..errors import ResattnError
from . import __doc__ as PACKAGE_DOC  # the method, in words
from .maps import consistency
from .networks import DEFAULT_FOLDERS, find_networks
from .results_section import markdown, write_section
from .rows import read_rows, write_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.consistency", description=PACKAGE_DOC.split("\n\n")[0],
                                     epilog="Example: python -m resattn.consistency --images pack --limit 200 "
                                            "--out docs/consistency --results docs/results.md")
    parser.add_argument("--images", help="'pack' (the val split), a .npz pack or an image folder / ImageFolder tree")
    parser.add_argument("--limit", type=int, default=200, help="images, drawn stratified by class (default 200)")
    parser.add_argument("--out", help="folder for consistency.csv and consistency_run.json")
    parser.add_argument("--folders", nargs="*", default=list(DEFAULT_FOLDERS),
                        help="checkpoint folders to read (default: checkpoints checkpoints/seeds; "
                             "none: only --checkpoints)")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="more checkpoints (stems or files)")
    parser.add_argument("--reductions", default=",".join(("mean", "class_weighted", "top_channels")),
                        help="comma-separated, from mean, class_weighted, top_channels")
    parser.add_argument("--any-recipe", action="store_true",
                        help="pair networks of different recipes too (development only: see the module doc)")
    parser.add_argument("--seed", type=int, default=0, help="for the image sample, ties and the bootstrap")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", metavar="RESULTS.md",
                        help="rewrite the consistency block of this file from the table (docs/results.md)")
    parser.add_argument("--table", metavar="CSV", help="do not trace: read this consistency.csv (with --results, "
                                                       "or to print the table)")
    args = parser.parse_args(argv)
    try:
        if args.table:
            rows, csv_path, run = read_rows(args.table), Path(args.table), None
            run_file = csv_path.with_name("consistency_run.json")
            if run_file.is_file():
                run = json.loads(run_file.read_text())
        else:
            if not args.images or not args.out:
                raise ResattnError("Give --images (e.g. pack) and --out (a folder), or --table with an existing CSV.")
            rows, csv_path, run = _compute(args, sys.argv[1:] if argv is None else argv)
        command = run.get("command") if run else ""
        body = markdown(rows, command=command, run=run)
        if args.results:
            write_section(args.results, body)
            print(f"wrote the consistency block of {args.results}")
        elif args.table:
            print(body)
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _compute(args, argv: list[str]) -> tuple[list[dict], Path, dict]:
    from ..analysis.image_sets import load_images
    from ..device import pick_device

    reductions = [r.strip() for r in args.reductions.split(",") if r.strip()]
    networks = find_networks(args.folders, args.checkpoints)
    if not networks:
        raise ResattnError(f"No checkpoints in {', '.join(args.folders)}: give --folders or --checkpoints.")
    masked = [n for n in networks if n.has_masks]
    classes = list((masked or networks)[0].card.classes)
    device = pick_device(args.device)
    images = load_images(args.images, classes=classes, limit=args.limit, sample="stratified", seed=args.seed)
    start = time.perf_counter()
    result = consistency(networks, images, reductions=reductions, any_recipe=args.any_recipe, seed=args.seed,
                         batch_size=args.batch_size, device=device, progress=True)
    out = Path(args.out)
    csv_path = write_rows(result.rows, out / "consistency.csv")
    command = "python -m resattn.consistency " + " ".join(argv)
    run = {"command": command.strip(), "csv": str(csv_path), "images": args.images, "n_images": len(images),
           "image_names": images.names, "seed": args.seed, "reductions": reductions, "any_recipe": args.any_recipe,
           "networks": len(result.seconds), "checkpoints": {n.label: n.path for n in networks},
           "seconds_per_network": {k: round(v, 1) for k, v in result.seconds.items()},
           "seconds_total": round(time.perf_counter() - start, 1), "device": str(device),
           "threads": torch.get_num_threads(), "skipped": result.skipped}
    (out / "consistency_run.json").write_text(json.dumps(run, indent=2) + "\n")
    for line in result.skipped:
        print(f"skipped {line}")
    per = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"wrote {csv_path}: {len(result.rows)} rows from {len(result.seconds)} networks on {len(images)} images "
          f"({per})")
    # The block of results.md is rendered from the rows as the CSV holds them (rounded), so that
    # regenerating it from the committed table gives the same text: every number is in the file.
    return read_rows(csv_path), csv_path, run
