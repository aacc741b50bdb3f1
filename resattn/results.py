"""`python -m resattn.results [--write]`: the zoo's accuracy tables, computed from the model cards
and the per-image predictions, with the statistics needed to read them.

Sources: every card in `checkpoints/` (shipped) and `docs/cards/` (not shipped), and for each
the file `docs/predictions/<name>.csv` that `python -m resattn.evaluate --predictions` wrote
(index, label, prediction, probability per val image). Runs are grouped into
*configurations*: the same architecture, attention, residual mode and recipe, differing only
in the seed. For each configuration: the seeds' mean and standard deviation. For the pairs
of configurations the paper makes claims about (ARL vs NAL at each depth, mixed vs channel vs
spatial vs none at depth 56), a paired comparison on the same val images, and whether ARL's
lead over NAL grows with depth: the statistics are in `resattn/zoo_stats.py`, whose docstring
says which test measures which noise and when a difference is called real.

With `--write`, the block between `<!-- zoo:begin -->` and `<!-- zoo:end -->` of
docs/results.md is replaced (the rest of the file is left alone); without, it is printed.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .zoo_stats import (
    ALPHA,
    ATTENTION_ORDER,
    BOOTSTRAP,
    Comparison,
    DepthContrast,
    comparisons,
    depth_contrasts,
    fmt_p,
)

PROJECT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"


@dataclass
class Run:
    """One trained network: its card and, when written, its per-image predictions."""
    name: str
    card: dict
    shipped: bool
    correct: np.ndarray | None = None  # bool per val image, in the split's order

    @property
    def recipe(self) -> dict:
        return self.card.get("recipe", {})

    @property
    def seed(self) -> int:
        return int(self.recipe.get("seed", 0))

    @property
    def top1(self) -> float:
        return float(self.card["metrics"]["val_top1"])

    @property
    def depth(self) -> int:
        return int("".join(ch for ch in self.card["arch"] if ch.isdigit()) or 0)

    @property
    def precision(self) -> str:
        return "bf16" if self.recipe.get("precision", "fp32").startswith("bf16") else "fp32"

    def recipe_key(self) -> tuple:
        """Everything a run was trained with except the seed and the attention configuration."""
        r = self.recipe
        return (self.card.get("width"), self.card.get("train_size"), self.card["metrics"].get("eval_size"),
                r.get("planned_epochs", r.get("epochs")), r.get("batch_size"), r.get("optimizer"), r.get("schedule"),
                r.get("augmentation"), r.get("label_smoothing"), self.precision, r.get("weight_average", "none"))

    def config_key(self) -> tuple:
        return (self.card["arch"], self.card["attention"], self.card["residual"], self.recipe_key())


@dataclass
class Config:
    """Runs of one configuration (same everything but the seed)."""
    runs: list[Run] = field(default_factory=list)

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def label(self) -> str:
        c = self.first.card
        what = "no attention" if c["attention"] == "none" else f"{c['attention']} {c['residual'].upper()}"
        return f"A{self.first.depth} {what}"

    @property
    def recipe_label(self) -> str:
        r = self.first.recipe
        epochs = r.get("planned_epochs", r.get("epochs"))
        extra = ", EMA" if r.get("weight_average", "none") != "none" else ""
        return f"w{self.first.card.get('width')}, {epochs} ep, {self.first.precision}{extra}"

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([run.top1 for run in self.runs])

    @property
    def correct(self) -> np.ndarray | None:
        """Seeds x images for the runs whose predictions were written (None: no run has them).
        Old runs may lack them; the accuracies of all runs still enter the seed statistics."""
        found = [run.correct for run in self.runs if run.correct is not None]
        return np.stack(found) if found else None

    def summary(self) -> str:
        acc = self.accuracies
        if len(acc) == 1:
            return f"{acc[0]:.2f}"
        return f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}"


def read_predictions(path: Path) -> np.ndarray:
    with open(path, newline="") as f:
        rows = sorted((int(r["index"]), int(r["label"]) == int(r["prediction"])) for r in csv.DictReader(f))
    return np.array([ok for _, ok in rows], dtype=bool)


def load_runs(root: Path = PROJECT) -> list[Run]:
    runs = []
    for folder, shipped in ((root / "checkpoints", True), (root / "docs" / "cards", False)):
        for path in sorted(folder.glob("*.json")):
            card = json.loads(path.read_text())
            if "arch" not in card or "val_top1" not in card.get("metrics", {}):
                continue
            if "unfinished" in card.get("weights", ""):  # snapshots are not results
                continue
            run = Run(path.stem, card, shipped)
            predictions = root / "docs" / "predictions" / f"{path.stem}.csv"
            if predictions.is_file():
                run.correct = read_predictions(predictions)
            runs.append(run)
    return runs


def group(runs: list[Run]) -> list[Config]:
    configs: dict[tuple, Config] = {}
    for run in runs:
        configs.setdefault(run.config_key(), Config()).runs.append(run)
    for config in configs.values():
        config.runs.sort(key=lambda r: (r.seed, not r.shipped))
    # The recipe with the most runs (the zoo's) is listed first at each depth.
    counts: dict[tuple, int] = {}
    for config in configs.values():
        counts[config.first.recipe_key()] = counts.get(config.first.recipe_key(), 0) + len(config.runs)
    reference = max(counts, key=counts.get) if counts else None
    return sorted(configs.values(), key=lambda c: (
        c.first.depth, c.first.recipe_key() != reference, c.first.precision,
        c.first.card["attention"] == "none", c.first.card["residual"] != "arl",
        ATTENTION_ORDER.index(c.first.card["attention"]) if c.first.card["attention"] in ATTENTION_ORDER else 9,
        c.recipe_label))


# ------------------------------------------------------------------------------ markdown

def runs_table(runs: list[Run]) -> str:
    rows = ["| run | arch | attention | residual | seed | recipe | val top-1 % | train time | where |",
            "|---|---|---|---|---|---|---|---|---|"]
    for config in group(runs):
        for run in config.runs:
            wall = run.recipe.get("wall_time_s")
            rows.append(f"| {run.name} | {run.card['arch']} | {run.card['attention']} | "
                        f"{run.card['residual'] if run.card['attention'] != 'none' else '—'} | {run.seed} | "
                        f"{config.recipe_label} | {run.top1:.2f} | {f'{wall / 60:.0f} min' if wall else '—'} | "
                        f"{'checkpoints/' if run.shipped else 'docs/cards/'} |")
    return "\n".join(rows)


def configs_table(configs: list[Config]) -> str:
    rows = ["| configuration | recipe | seeds | val top-1 %, mean ± sd over seeds | min – max |",
            "|---|---|---|---|---|"]
    for c in configs:
        acc = c.accuracies
        rows.append(f"| {c.label} | {c.recipe_label} | {', '.join(str(r.seed) for r in c.runs)} | {c.summary()} | "
                    f"{acc.min():.2f} – {acc.max():.2f} |")
    return "\n".join(rows)


def comparisons_table(found: list[Comparison]) -> str:
    if not found:
        return "(no pair of configurations has per-image predictions yet)"
    rows = ["| A | B | recipe (A) | A − B, points | 95 % paired bootstrap | Welch p (Holm) | McNemar per seed "
            "(only A / only B, p) | verdict |",
            "|---|---|---|---|---|---|---|---|"]
    for c in found:
        mcn = "; ".join(f"s{seed}: {oa}/{ob}, {fmt_p(p)}" for seed, oa, ob, p in c.mcnemar) or "—"
        rows.append(f"| {c.a.label} | {c.b.label}{'' if c.b.recipe_label == c.a.recipe_label else f' ({c.b.recipe_label})'} | {c.a.recipe_label} | {c.diff:+.2f} | [{c.low:+.2f}, {c.high:+.2f}] | "
                    f"{fmt_p(c.welch_p)} ({fmt_p(c.welch_holm)}) | {mcn} | {c.verdict} |")
    return "\n".join(rows)


def depth_table(contrasts: list[DepthContrast]) -> str:
    if not contrasts:
        return "(no recipe has mixed ARL and NAL with per-image predictions at two depths yet)"
    rows = ["| recipe | depths | ARL − NAL, shallower | ARL − NAL, deeper | change, points | 95 % paired bootstrap "
            "| seed-level p (df; Holm) | verdict |", "|---|---|---|---|---|---|---|---|"]
    for c in contrasts:
        test = f"{fmt_p(c.test[0])} ({c.test[1]:.1f}; {fmt_p(c.holm_p)})" if c.test else "—"
        rows.append(f"| {c.shallow.a.recipe_label} | {c.shallow.a.first.depth} → {c.deep.a.first.depth} | "
                    f"{c.shallow.diff:+.2f} | {c.deep.diff:+.2f} | {c.diff:+.2f} | [{c.low:+.2f}, {c.high:+.2f}] | "
                    f"{test} | {c.verdict} |")
    return "\n".join(rows)


def render(root: Path = PROJECT) -> str:
    runs = load_runs(root)
    configs = group(runs)
    found = comparisons(configs)
    with_predictions = sum(run.correct is not None for run in runs)
    parts = [
        BEGIN,
        "<!-- generated by `python -m resattn.results --write` from the cards and docs/predictions/; "
        "edit the generator, not this block -->",
        "",
        f"### Every trained run ({len(runs)} cards; {with_predictions} with per-image predictions)",
        "",
        runs_table(runs),
        "",
        "### Configurations: mean ± sd over seeds",
        "",
        "A configuration is one architecture, attention, residual mode and recipe; its runs differ only "
        "in the seed. With one seed no spread can be given, and no ordering against another "
        "configuration can be read from it.",
        "",
        configs_table(configs),
        "",
        "### Paired comparisons on the same val images",
        "",
        f"A − B is the difference of the seed-averaged val top-1 of the runs with per-image predictions. The "
        f"interval is a paired bootstrap over the val images ({BOOTSTRAP} resamples, seed 0; it measures the "
        "test set's noise, not training's). "
        "Welch's t-test over the seeds' accuracies measures training's noise (only with ≥ 2 seeds on both "
        "sides; Holm-corrected over this table's rows). McNemar: exact binomial test on the images that "
        "exactly one of the two networks of the same seed gets right. *Real* means both sides have ≥ 2 "
        f"seeds, the bootstrap interval excludes 0 and the corrected Welch p is below {ALPHA}.",
        "",
        comparisons_table(found),
        "",
    ]
    parts += [f"- {c.a.label} ({c.a.recipe_label}) vs {c.b.label} ({c.b.recipe_label}): {c.sentence()}"
              for c in found]
    parts += ["", "### Does ARL's lead over NAL grow with depth?", "",
              "The paper's central claim. For each recipe trained at two depths, the change of the ARL − NAL "
              "difference from the shallower to the deeper network: a paired bootstrap over the val images "
              f"(all four configurations see the same images; {BOOTSTRAP} resamples) and a seed-level test of "
              "the same contrast (Welch's t-test generalised to four groups of seeds, Welch–Satterthwaite df; "
              f"Holm-corrected over the rows). *Grows* means the interval lies above 0 and the corrected p is "
              f"below {ALPHA}.", "",
              depth_table(depth_contrasts(found)), ""]
    parts += [f"- {c.sentence()}" for c in depth_contrasts(found)]
    parts += ["", END]
    return "\n".join(parts)


def write(root: Path = PROJECT) -> Path:
    path = root / "docs" / "results.md"
    text = path.read_text() if path.is_file() else "# Results\n"
    block = render(root)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## The zoo, generated\n\n" + block + "\n"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the generated block of docs/results.md")
    parser.add_argument("--root", type=Path, default=PROJECT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write:
        print(f"wrote {write(args.root)}")
    else:
        print(render(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
