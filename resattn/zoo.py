"""`python -m resattn.zoo [FOLDER] [--per-class | --verify] [CARD.json ...]`: the checkpoint zoo as a markdown
table (model, attention, residual, params, MACs at the card's input size, val top-1, train
time), read from the cards; `--per-class` gives val top-1 per class instead, one column per
checkpoint (extra cards, e.g. of a re-trained seed, may be named after the folder).
`--verify` re-evaluates every checkpoint and checks its card's val top-1 (within 0.5 point).
`checkpoints/README.md` is generated with it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .checkpoints import ModelCard, as_card, build_from_card, list_checkpoints


def count(card: ModelCard | dict) -> tuple[int, int]:
    """(parameters, multiply-accumulates for one image at the card's input size)."""
    card = as_card(card)
    model = build_from_card(card).eval()
    size = card.input_size
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


ATTENTION_ORDER = ("mixed", "channel", "spatial", "none")


def zoo_order(name: str, card: ModelCard) -> tuple:
    """The compare page's order: mixed, channel, spatial with ARL, then NAL, then no attention."""
    attention = card.attention
    rank = ATTENTION_ORDER.index(attention) if attention in ATTENTION_ORDER else len(ATTENTION_ORDER)
    return attention == "none", card.residual != "arl", rank, name


def table(folder: str | Path = "checkpoints") -> str:
    rows = ["| checkpoint | attention | residual | params | MACs | val top-1 | epochs | precision | train time | hardware |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for stem, card in sorted(list_checkpoints(folder), key=lambda sc: zoo_order(sc[0].name, sc[1])):
        params, macs = count(card)
        recipe = card.recipe
        top1 = f"{card.val_top1:.2f} %" if card.val_top1 is not None else "—"
        wall = f"{recipe['wall_time_s'] / 60:.0f} min" if "wall_time_s" in recipe else "—"
        rows.append(f"| {stem.name} | {card.attention} | {card.residual if card.attention != 'none' else '—'} "
                    f"| {params / 1e6:.2f} M | {macs / 1e9:.3f} G at {card.input_size} px | {top1} "
                    f"| {recipe.get('epochs', '—')} | {str(recipe.get('precision', 'fp32')).split()[0]} | {wall} "
                    f"| {recipe.get('hardware', '—')} |")
    return "\n".join(rows)


def per_class_table(folder: str | Path = "checkpoints", extra_cards: list[str | Path] = ()) -> str:
    """Val top-1 per class (rows) for every checkpoint (columns), from the cards."""
    import json

    cards = [(stem.name, card) for stem, card in list_checkpoints(folder)]
    cards += [(Path(p).stem, as_card(json.loads(Path(p).read_text()), p)) for p in extra_cards]
    cards = sorted(((name, card) for name, card in cards if "val_per_class_top1" in card.metrics),
                   key=lambda nc: zoo_order(*nc))
    if not cards:
        return "(no card with per-class accuracy)"
    classes = cards[0][1].classes
    rows = ["| class | " + " | ".join(name.removeprefix("attention56_") for name, _ in cards) + " |",
            "|---|" + "---|" * len(cards)]
    for i, name in enumerate(classes):
        rows.append(f"| {name} | " + " | ".join(f"{card.metrics['val_per_class_top1'][i]:.1f}"
                                               for _, card in cards) + " |")
    rows.append("| **all** | " + " | ".join(f"**{card.val_top1:.2f}**" for _, card in cards) + " |")
    return "\n".join(rows)


def verify(folder: str | Path = "checkpoints", tolerance: float = 0.5, data: str | None = None) -> list[str]:
    """Re-evaluate every checkpoint of `folder` on the val split, as `python -m resattn.evaluate`
    does; one line per checkpoint, and whether its card's val top-1 holds within `tolerance`
    points. Raises ResattnError listing those that do not."""
    from torch.utils.data import DataLoader

    from .checkpoints import load_checkpoint
    from .data import TensorImageDataset, load_split
    from .errors import ResattnError
    from .evaluate import evaluate_model

    val = load_split(data, "val")
    lines, off = [], []
    for stem, card in list_checkpoints(folder):
        claimed = card.val_top1
        if claimed is None:
            lines.append(f"{stem.name}: no val top-1 on its card, not checked")
            continue
        model, card = load_checkpoint(stem)
        loader = DataLoader(TensorImageDataset(val, card.transform()), batch_size=100)
        measured = evaluate_model(model.to(memory_format=torch.channels_last), loader, card.num_classes,
                                  torch.device("cpu"))["top1"]
        ok = abs(measured - claimed) <= tolerance
        lines.append(f"{stem.name}: card {claimed:.2f} %, measured {measured:.2f} % "
                     f"({measured - claimed:+.2f}) {'ok' if ok else 'OFF'}")
        print(lines[-1], flush=True)
        if not ok:
            off.append(stem.name)
    if off:
        raise ResattnError(f"{len(off)} checkpoint(s) differ from their card by more than {tolerance} points: "
                           f"{', '.join(off)}. Re-train them or correct the cards.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default="checkpoints")
    parser.add_argument("cards", nargs="*", help="with --per-class: more model cards (.json) to add as columns")
    parser.add_argument("--per-class", action="store_true", help="val top-1 per class, one column per checkpoint")
    parser.add_argument("--verify", action="store_true",
                        help="re-evaluate every checkpoint on the val split; exit 1 when one is more than "
                             "--tolerance points from its card")
    parser.add_argument("--tolerance", type=float, default=0.5)
    parser.add_argument("--data", help="with --verify: the pack or an ImageFolder root (default: find the pack)")
    args = parser.parse_args(argv)
    if args.verify:
        from .errors import ResattnError

        try:
            verify(args.folder, args.tolerance, args.data)
        except ResattnError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    print(per_class_table(args.folder, args.cards) if args.per_class else table(args.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
