"""`python -m resattn.zoo [FOLDER]`: the checkpoint zoo as a markdown table (model, attention,
residual, params, MACs at the card's input size, val top-1, train time), read from the cards.
`checkpoints/README.md` is generated with it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .checkpoints import build_from_card, list_checkpoints


def count(card: dict) -> tuple[int, int]:
    """(parameters, multiply-accumulates for one image at the card's input size)."""
    model = build_from_card(card).eval()
    size = int(card.get("input_size", 224))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def table(folder: str | Path = "checkpoints") -> str:
    rows = ["| checkpoint | attention | residual | params | MACs | val top-1 | epochs | train time | hardware |",
            "|---|---|---|---|---|---|---|---|---|"]
    for stem, card in list_checkpoints(folder):
        params, macs = count(card)
        recipe, metrics = card.get("recipe", {}), card.get("metrics", {})
        top1 = f"{metrics['val_top1']:.2f} %" if "val_top1" in metrics else "—"
        wall = f"{recipe['wall_time_s'] / 60:.0f} min" if "wall_time_s" in recipe else "—"
        rows.append(f"| {stem.name} | {card['attention']} | {card['residual'] if card['attention'] != 'none' else '—'} "
                    f"| {params / 1e6:.2f} M | {macs / 1e9:.3f} G at {card.get('input_size')} px | {top1} "
                    f"| {recipe.get('epochs', '—')} | {wall} | {recipe.get('hardware', '—')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.zoo", description=__doc__)
    parser.add_argument("folder", nargs="?", default="checkpoints")
    args = parser.parse_args(argv)
    print(table(args.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
