"""`python -m resattn.evaluate CHECKPOINT`: top-1, per-class accuracy and confusion matrix on
the val split of the Imagenette pack (or a user's ImageFolder tree)."""
from __future__ import annotations

import argparse
import json
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data import TensorImageDataset, load_split
from .device import pick_device
from .errors import ResattnError


@torch.inference_mode()
def evaluate_model(model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device,
                   *, progress: bool = False, channels_last: bool = True, per_image: bool = False) -> dict:
    """Accuracy figures of `model` on every batch of `loader` (labels 0..num_classes-1).
    With `per_image`, also "rows": (index, label, prediction, probability of the prediction)
    for every image in the loader's order, for paired comparisons between networks."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    rows = []
    for images, labels in tqdm(loader, desc="eval", disable=not progress, leave=False):
        logits = model(images.to(device, memory_format=memory_format)).float().cpu()
        probability, predicted = logits.softmax(1).max(1)
        confusion += torch.bincount(labels * num_classes + predicted, minlength=num_classes ** 2).view(
            num_classes, num_classes)
        if per_image:
            rows += [(len(rows) + i, int(t), int(p), float(q))
                     for i, (t, p, q) in enumerate(zip(labels, predicted, probability))]
    result = metrics_from_confusion(confusion)
    if per_image:
        result["rows"] = rows
    return result


def write_predictions(path, rows) -> None:
    """One CSV row per image: index (position in the split), label, prediction, probability."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "prediction", "probability"])
        for index, label, prediction, probability in rows:
            writer.writerow([index, label, prediction, f"{probability:.5f}"])


def metrics_from_confusion(confusion: torch.Tensor) -> dict:
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1).double()
    return {
        "top1": round(100.0 * confusion.diag().sum().item() / max(1, confusion.sum().item()), 2),
        "per_class_top1": [round(100.0 * v, 2) for v in per_class.tolist()],
        "images": int(confusion.sum()),
        "confusion": confusion.tolist(),  # rows: true class, columns: predicted class
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.evaluate", description=__doc__)
    parser.add_argument("checkpoint", help="checkpoint path (.safetensors, its .json card, or the stem)")
    parser.add_argument("--data", help="the pack (.npz) or an ImageFolder root with val/ (default: find the pack)")
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--limit", type=int, help="at most this many images per class (a quick look)")
    parser.add_argument("--size", type=int, help="input size (default: the card's input size)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--predictions", metavar="FILE.csv",
                        help="also write one row per image: index, label, prediction, probability")
    parser.add_argument("--check-card", type=float, nargs="?", const=0.5, metavar="POINTS",
                        help="exit 1 unless top-1 is within POINTS (default 0.5) of the card's val_top1; "
                             "checks that a checkpoint still does what its card says")
    args = parser.parse_args(argv)
    # The card's number was measured on the whole val split at the card's size; a --limit or
    # --size run is a different measurement, so it is not held to it.
    if args.check_card is not None and (args.limit or args.size or args.split != "val"):
        print("error: --check-card compares with the card's full val split at its own size; "
              "drop --limit, --size and --split.", file=sys.stderr)
        return 2
    try:
        from .checkpoints import as_card, load_checkpoint

        device = pick_device(args.device)
        model, card = load_checkpoint(args.checkpoint, device=device)
        model = model.to(memory_format=torch.channels_last)
        card = as_card(card)  # a ModelCard from load_checkpoint; a plain dict card is validated here
        if args.size:
            card = card.replace(input_size=args.size)
        size = card.input_size
        images = load_split(args.data, args.split, limit=args.limit)
        if images.classes != list(card.classes):
            raise ResattnError("The data's classes differ from the checkpoint's; evaluate on the data it was trained on.")
        if args.check_card is not None and card.val_top1 is None:
            raise ResattnError("The card records no val_top1 to check against; evaluate without --check-card.")
        # The card's preprocessing (size, mean, std), the very maths the app's card.preprocess runs.
        loader = DataLoader(TensorImageDataset(images, card.transform()), batch_size=args.batch_size)
        result = evaluate_model(model, loader, card.num_classes, device, progress=True,
                                per_image=bool(args.predictions))
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint}: top-1 {result['top1']:.2f} % on {result['images']} {args.split} images at {size} px")
    width = max(len(c) for c in card.classes)
    print(f"{'class':<{width}}  top-1 %   " + " ".join(f"{i:>4}" for i in range(card.num_classes)))
    for i, (name, acc) in enumerate(zip(card.classes, result["per_class_top1"])):
        row = " ".join(f"{v:>4}" for v in result["confusion"][i])
        print(f"{name:<{width}}  {acc:7.2f}   {row}")
    rows = result.pop("rows", None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": str(args.checkpoint), "split": args.split, "size": size, **result}, f, indent=2)
    if args.predictions:
        try:
            write_predictions(args.predictions, rows)
        except OSError as exc:
            print(f"error: Could not write {args.predictions} ({exc.strerror or exc}); choose another path.",
                  file=sys.stderr)
            return 1
    if args.check_card is not None:
        difference = result["top1"] - card.val_top1
        verdict = "ok" if abs(difference) <= args.check_card else "MISMATCH"
        print(f"{args.checkpoint}: card {card.val_top1:.2f} %, now {result['top1']:.2f} % "
              f"({difference:+.2f} points; tolerance {args.check_card:g}): {verdict}")
        if verdict != "ok":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
