"""Ship seed networks compactly: write checkpoints as float16 safetensors (half the bytes),
which `resattn.load_checkpoint` loads back as float32.

Usage:
    python scripts/export_fp16.py SRC [SRC ...] DEST_FOLDER [--data PACK] [--limit N] [--no-check]

Each SRC is a checkpoint (stem, .safetensors or .json), e.g. runs/<name>/<name>; it is
written to DEST_FOLDER/<name>.safetensors + .json (e.g. checkpoints/seeds/, which the app's
checkpoint list does not show: the seeds are read by the Compare page's consistency panel and
by `python -m resattn.consistency`). The card gains "storage": "float16, loaded as float32".

Unless --no-check, every network is first evaluated on the val split of the pack (all of it,
or --limit images drawn stratified by class) with its float32 weights and with the weights
rounded to float16; the card records both top-1 values ("storage_check"), and a network
whose top-1 moves by more than --tolerance points (default 0.2) is not written (exit 1).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resattn.checkpoints import _stem, export_fp16, fp16_top1, load_checkpoint  # noqa: E402
from resattn.errors import ResattnError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/export_fp16.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="SRC ... DEST_FOLDER")
    parser.add_argument("--data", default="pack", help="images for the check: 'pack' (default) or a .npz")
    parser.add_argument("--limit", type=int, help="check on this many val images (stratified; default: all)")
    parser.add_argument("--tolerance", type=float, default=0.2, help="largest top-1 change allowed, in points")
    parser.add_argument("--no-check", action="store_true", help="write without evaluating")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if len(args.paths) < 2:
        print("error: give one or more checkpoints and then the destination folder.", file=sys.stderr)
        return 2
    *sources, dest = args.paths
    dest = Path(dest)
    try:
        from resattn.device import pick_device

        device = pick_device(args.device)
        images = None
        for source in sources:
            name = _stem(source).name
            fields = {}
            if not args.no_check:
                model, card = load_checkpoint(source, device=device)
                if images is None:
                    from resattn.analysis.image_sets import load_images

                    images = load_images(args.data, classes=card["classes"], limit=args.limit, sample="stratified")
                start = time.perf_counter()
                check = fp16_top1(model, images, card=card, device=device)
                check["command"] = ("python scripts/export_fp16.py ... --data " + args.data
                                    + (f" --limit {args.limit}" if args.limit else ""))
                print(f"{name}: top-1 {check['top1_fp32']:.2f} % (float32) -> {check['top1_fp16']:.2f} % (float16) "
                      f"on {check['images']} val images, {check['changed']} predictions changed "
                      f"({time.perf_counter() - start:.0f} s)")
                if abs(check["difference"]) > args.tolerance:
                    print(f"error: {name} moves by {check['difference']:+.2f} points in float16 (more than "
                          f"{args.tolerance:g}); keep it in float32.", file=sys.stderr)
                    return 1
                fields["storage_check"] = check
            written = export_fp16(source, dest / name, card_fields=fields)
            print(f"{name}: wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)")
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
