"""docs/depth.png: val error against depth for attention residual learning (ARL) and naive
attention learning (NAL), mixed attention, from the zoo's cards (mean ± sd over seeds of one
recipe), beside the paper's CIFAR-10 numbers (Wang et al. 2017, Table 3).

Usage: python scripts/depth_figure.py [--out docs/depth.png]
Only configurations trained with one recipe are drawn (the one whose mixed-attention runs cover
the most depth x residual cells), so depth is the only thing that changes along a line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resattn import results, zoo_stats  # noqa: E402

PAPER = zoo_stats.PAPER_CIFAR10_ERROR
STYLE = {"arl": ("#1b9e77", "o", "ARL: (1 + M)·T"), "nal": ("#d95f02", "s", "NAL: M·T")}


def ours(configs: list[results.Config]) -> tuple[str, dict[str, dict[int, tuple[float, float, int]]]]:
    """residual -> depth -> (mean error, sd, seeds) for mixed attention with the zoo recipe."""
    # The recipe whose mixed-attention runs cover the most (depth, residual) cells, then the most
    # runs: depth must be the only thing that changes along a line.
    cells: dict[tuple, set] = {}
    runs: dict[tuple, int] = {}
    for c in configs:
        if c.first.card["attention"] != "mixed":
            continue
        key = c.first.recipe_key()
        cells.setdefault(key, set()).add((c.first.depth, c.first.card["residual"]))
        runs[key] = runs.get(key, 0) + len(c.runs)
    recipe = max(cells, key=lambda k: (len(cells[k]), runs[k]))
    found: dict[str, dict[int, tuple[float, float, int]]] = {"arl": {}, "nal": {}}
    label = ""
    for c in configs:
        card = c.first.card
        if card["attention"] != "mixed" or c.first.recipe_key() != recipe:
            continue
        label = c.recipe_label
        error = 100 - c.accuracies
        found[card["residual"]][c.first.depth] = (error.mean(), error.std(ddof=1) if len(error) > 1 else 0.0,
                                                  len(error))
    return label, found


def draw(configs: list[results.Config], out: Path) -> Path:
    recipe, data = ours(configs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for residual, (colour, marker, label) in STYLE.items():
        points = sorted(data[residual].items())
        if points:
            depths = [d for d, _ in points]
            left.errorbar(depths, [m for _, (m, _, _) in points], yerr=[s for _, (_, s, _) in points],
                          color=colour, marker=marker, capsize=4, label=label)
            # NAL's error lies above ARL's: its seed counts go above the points, ARL's below.
            offset = (6, 6) if residual == "nal" else (6, -14)
            for d, (m, _, n) in points:
                left.annotate(f"n={n}", (d, m), textcoords="offset points", xytext=offset, fontsize=8,
                              color=colour)
        paper = sorted(PAPER[residual].items())
        right.plot([d for d, _ in paper], [e for _, e in paper], color=colour, marker=marker, label=label)
    left.set_title(f"This project: Imagenette val, mixed attention\n(mean ± sd over seeds; {recipe})")
    left.set_ylabel("top-1 error (%)")
    right.set_title("Paper: CIFAR-10, mixed attention\n(Wang et al. 2017, Table 3; one run each)")
    for ax in (left, right):
        ax.set_xlabel("depth (layers)")
        ax.set_xticks([56, 92, 128, 164])
        ax.grid(alpha=0.3)
        ax.margins(y=0.1)
        ax.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=results.PROJECT / "docs" / "depth.png")
    args = parser.parse_args(argv)
    print(f"wrote {draw(results.group(results.load_runs()), args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
