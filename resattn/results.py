"""`python -m resattn.results [--write]`: the zoo's accuracy tables, computed from the model cards
and the per-image predictions, with the statistics needed to read them.

Sources: every card in `checkpoints/` (shipped) and `docs/cards/` (not shipped), and for each
the file `docs/predictions/<name>.csv` that `python -m resattn.evaluate --predictions` wrote
(index, label, prediction, probability per val image). Runs are grouped into
*configurations*: the same architecture, attention, residual mode and recipe, differing only
in the seed. For each configuration: the seeds' mean and standard deviation. For the pairs
of configurations the paper makes claims about (ARL vs NAL at each depth, mixed vs channel vs
spatial vs none at depth 56), a paired comparison on the same val images:

- the difference of the seed-averaged accuracies with a **paired bootstrap** 95 % interval
  over images (the uncertainty of the test set, given these trained networks);
- where both sides have two or more seeds, **Welch's t-test** over the seeds' accuracies
  (the uncertainty of training), Holm-corrected over the comparisons of one table;
- per seed, the **exact McNemar test** on the images the two networks disagree on.

A difference is called real only when both sides have two or more seeds, the bootstrap
interval excludes 0 and the corrected Welch p-value is below 0.05; the sentence says which.

With `--write`, the block between `<!-- zoo:begin -->` and `<!-- zoo:end -->` of
docs/results.md is replaced (the rest of the file is left alone); without, it is printed.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats as sps

PROJECT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"
ATTENTION_ORDER = ("mixed", "channel", "spatial", "none")
BOOTSTRAP = 2000
ALPHA = 0.05
# Paper, CIFAR-10 top-1 error (%) with mixed attention, one run each (Wang et al. 2017, Table 3).
PAPER_CIFAR10_ERROR = {"arl": {56: 5.52, 92: 4.99, 128: 4.44, 164: 4.31},
                       "nal": {56: 5.89, 92: 5.35, 128: 5.57, 164: 7.18}}


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


# --------------------------------------------------------------------------- statistics

def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, reps: int = BOOTSTRAP,
                     seed: int = 0) -> tuple[float, float, float]:
    """Difference of seed-averaged accuracy (points, a - b) and its 95 % percentile interval,
    resampling the val images (the same resample for both sides)."""
    # per image: fraction of seeds right
    return bootstrap_mean(correct_a.mean(0) - correct_b.mean(0), reps, seed)


def bootstrap_mean(per_image: np.ndarray, reps: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a per-image quantity (in points) and its 95 % percentile interval over images."""
    rng = np.random.default_rng(seed)
    n = len(per_image)
    boot = np.array([per_image[rng.integers(0, n, n)].mean() for _ in range(reps)])
    low, high = np.percentile(boot, [2.5, 97.5])
    return 100 * per_image.mean(), 100 * low, 100 * high


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """(images only a gets right, only b gets right, two-sided exact p)."""
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    if only_a + only_b == 0:
        return 0, 0, 1.0
    return only_a, only_b, float(sps.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def welch(acc_a: np.ndarray, acc_b: np.ndarray) -> float | None:
    if len(acc_a) < 2 or len(acc_b) < 2:
        return None
    if acc_a.std() == 0 and acc_b.std() == 0:
        return 1.0 if acc_a.mean() == acc_b.mean() else 0.0
    return float(sps.ttest_ind(acc_a, acc_b, equal_var=False).pvalue)


def contrast_test(groups: list[tuple[np.ndarray, int]]) -> tuple[float, float] | None:
    """Two-sided p and Welch-Satterthwaite df of a contrast sum(sign * mean accuracy) over groups
    of seeds (Welch's t-test generalised to more than two groups); None unless every group has
    two or more seeds."""
    if any(len(acc) < 2 for acc, _ in groups):
        return None
    estimate = sum(sign * acc.mean() for acc, sign in groups)
    parts = [acc.var(ddof=1) / len(acc) for acc, _ in groups]
    se2 = sum(parts)
    if se2 == 0:
        return (1.0 if estimate == 0 else 0.0), float("inf")
    df = se2 ** 2 / sum(v ** 2 / (len(acc) - 1) for v, (acc, _) in zip(parts, groups))
    return float(2 * sps.t.sf(abs(estimate) / np.sqrt(se2), df)), float(df)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values that exist (None stays None)."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass
class Comparison:
    a: Config
    b: Config
    diff: float
    low: float
    high: float
    welch_p: float | None
    mcnemar: list[tuple[int, int, int, float]]  # seed, only a, only b, p
    welch_holm: float | None = None

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def real(self) -> bool:
        # One seed says nothing about training's noise: no ordering is read from it.
        return self.excludes_zero and self.welch_holm is not None and self.welch_holm < ALPHA

    @property
    def verdict(self) -> str:
        """real; not established (the test set separates these networks, training's noise is
        unknown or not ruled out); not readable (not even the test set separates them)."""
        return "real" if self.real else "not established" if self.excludes_zero else "not readable"

    def leads(self) -> str:
        """In how many shared seeds the side ahead on average is ahead (McNemar counts)."""
        ahead = sum((oa > ob) if self.diff > 0 else (ob > oa) for _, oa, ob, _ in self.mcnemar)
        side = self.a if self.diff > 0 else self.b
        side = side.label if self.a.label != self.b.label else f"{side.label} ({side.recipe_label})"
        return f"{side} is ahead in {ahead} of {len(self.mcnemar)} seeds"

    def sentence(self) -> str:
        seeds = f"{len(self.a.runs)} vs {len(self.b.runs)} seeds"
        interval = f"{self.diff:+.2f} points [{self.low:+.2f}, {self.high:+.2f}]"
        if self.real:
            side = self.a if self.diff > 0 else self.b
            side = side.label if self.a.label != self.b.label else f"{side.label} ({side.recipe_label})"
            return f"{side} is more accurate: {interval} ({seeds})."
        why = []
        if self.welch_holm is None:
            why.append("one side has a single seed, so training's noise is unknown")
        if not self.excludes_zero:
            why.append("the image-bootstrap interval includes 0")
        if self.welch_holm is not None and self.welch_holm >= ALPHA:
            why.append(f"the seeds do not separate them (Holm p = {self.welch_holm:.2f})")
        if self.excludes_zero:
            return (f"not established: {interval} ({seeds}); the image-bootstrap interval excludes 0 and "
                    f"{self.leads()}, but {' and '.join(why)}.")
        return f"no difference can be read: {interval} ({seeds}); {' and '.join(why)}."


def compare(a: Config, b: Config) -> Comparison | None:
    ca, cb = a.correct, b.correct
    if ca is None or cb is None or ca.shape[1] != cb.shape[1]:
        return None
    diff, low, high = paired_bootstrap(ca, cb)
    seeds_a = {run.seed: run for run in a.runs}
    tests = [(run.seed, *mcnemar_exact(seeds_a[run.seed].correct, run.correct)) for run in b.runs
             if run.seed in seeds_a and run.correct is not None and seeds_a[run.seed].correct is not None]
    return Comparison(a, b, diff, low, high, welch(a.accuracies, b.accuracies), tests)


@dataclass
class DepthContrast:
    """The paper's central claim: ARL's lead over NAL grows with depth. `diff` is (ARL − NAL at
    the deeper network) − (ARL − NAL at the shallower), in points, one recipe throughout."""
    shallow: Comparison
    deep: Comparison
    diff: float
    low: float
    high: float
    test: tuple[float, float] | None  # seed-level p, df
    holm_p: float | None = None

    @property
    def verdict(self) -> str:
        excludes_zero = self.low > 0 or self.high < 0
        if excludes_zero and self.holm_p is not None and self.holm_p < ALPHA:
            return "grows" if self.diff > 0 else "shrinks"
        return "not established" if excludes_zero else "not readable"

    def sentence(self) -> str:
        d1, d2 = self.shallow.a.first.depth, self.deep.a.first.depth
        gaps = (f"ARL − NAL is {self.shallow.diff:+.2f} points at depth {d1} and {self.deep.diff:+.2f} at "
                f"depth {d2}: a change of {self.diff:+.2f} [{self.low:+.2f}, {self.high:+.2f}]")
        paper = ""
        if d1 in PAPER_CIFAR10_ERROR["arl"] and d2 in PAPER_CIFAR10_ERROR["arl"]:
            gap = {d: PAPER_CIFAR10_ERROR["nal"][d] - PAPER_CIFAR10_ERROR["arl"][d] for d in (d1, d2)}
            paper = (f" (the paper, CIFAR-10, one run each: {gap[d1]:+.2f} and {gap[d2]:+.2f} points, "
                     f"a change of {gap[d2] - gap[d1]:+.2f})")
        if self.test is None:
            why = "a configuration has a single seed, so training's noise is unknown"
        else:
            why = f"seed-level test p = {fmt_p(self.test[0])}, Holm {fmt_p(self.holm_p)}"
        if self.verdict in ("grows", "shrinks"):
            return (f"ARL's lead over NAL {self.verdict} from depth {d1} to {d2} in this recipe "
                    f"({self.shallow.a.recipe_label}): {gaps}{paper}; {why}.")
        return f"Whether ARL's lead over NAL changes from depth {d1} to {d2} is {self.verdict}: {gaps}{paper}; {why}."


def depth_contrasts(found: list[Comparison]) -> list[DepthContrast]:
    """ARL − NAL (mixed attention) compared between consecutive depths trained with one recipe."""
    by_recipe: dict[tuple, list[Comparison]] = {}
    for c in found:
        a, b = c.a.first.card, c.b.first.card
        if (a["attention"], a["residual"], b["attention"], b["residual"]) == ("mixed", "arl", "mixed", "nal") \
                and a["arch"] == b["arch"]:
            by_recipe.setdefault(c.a.first.recipe_key(), []).append(c)
    contrasts = []
    for pairs in by_recipe.values():
        pairs.sort(key=lambda c: c.a.first.depth)
        for shallow, deep in zip(pairs, pairs[1:]):
            sides = (deep.a.correct, deep.b.correct, shallow.a.correct, shallow.b.correct)
            if len({side.shape[1] for side in sides}) != 1:
                continue
            per_image = (sides[0].mean(0) - sides[1].mean(0)) - (sides[2].mean(0) - sides[3].mean(0))
            diff, low, high = bootstrap_mean(per_image)
            test = contrast_test([(deep.a.accuracies, 1), (deep.b.accuracies, -1),
                                  (shallow.a.accuracies, -1), (shallow.b.accuracies, 1)])
            contrasts.append(DepthContrast(shallow, deep, diff, low, high, test))
    for contrast, adjusted in zip(contrasts, holm([c.test[0] if c.test else None for c in contrasts])):
        contrast.holm_p = adjusted
    return contrasts


def claimed_pairs(configs: list[Config]) -> list[tuple[Config, Config]]:
    """The pairs the paper makes claims about, within one recipe: ARL vs NAL (mixed) at every
    depth; mixed, channel, spatial and none against each other at every depth that has them."""
    by_key = {(c.first.card["arch"], c.first.card["attention"], c.first.card["residual"], c.first.recipe_key()): c
              for c in configs}
    pairs = []
    for (arch, attention, residual, recipe), config in by_key.items():
        if attention == "mixed" and residual == "arl":
            nal = by_key.get((arch, "mixed", "nal", recipe))
            if nal:
                pairs.append((config, nal))
    # bf16 against fp32: the same configuration and recipe, only the precision differs.
    for (arch, attention, residual, recipe), config in by_key.items():
        if recipe[-2] == "fp32":
            bf16 = by_key.get((arch, attention, residual, (*recipe[:-2], "bf16", recipe[-1])))
            if bf16:
                pairs.append((bf16, config))
    arl_types = {}
    for (arch, attention, residual, recipe), config in by_key.items():
        if residual == "arl" or attention == "none":
            arl_types.setdefault((arch, recipe), []).append(config)
    for group_ in arl_types.values():
        group_.sort(key=lambda c: ATTENTION_ORDER.index(c.first.card["attention"]))
        pairs += list(combinations(group_, 2))
    return pairs


def comparisons(configs: list[Config]) -> list[Comparison]:
    found = [c for c in (compare(a, b) for a, b in claimed_pairs(configs)) if c is not None]
    for comp, adjusted in zip(found, holm([c.welch_p for c in found])):
        comp.welch_holm = adjusted
    return found


# ------------------------------------------------------------------------------ markdown

def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


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
