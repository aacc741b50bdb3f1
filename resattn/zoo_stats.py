"""The statistics of `python -m resattn.results`: paired comparisons of trained configurations
on the same val images, and the test of the paper's central claim across depths.

- the difference of seed-averaged accuracies with a **paired bootstrap** interval over images
  (the test set's noise, given these trained networks);
- **Welch's t-test** over the seeds' accuracies (training's noise), and its generalisation to a
  contrast of four configurations (`contrast_test`, Welch-Satterthwaite df), Holm-corrected
  over the comparisons of one table;
- per seed, the **exact McNemar test** on the images the two networks disagree on.

A difference is called real only when both sides have two or more seeds, the bootstrap interval
excludes 0 and the corrected Welch p-value is below `ALPHA`; when only the images separate two
configurations it is "not established"; otherwise "not readable".
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as sps

from .analysis import significance

if TYPE_CHECKING:
    from .results import Config

BOOTSTRAP = 2000
ALPHA = 0.05
ATTENTION_ORDER = ("mixed", "channel", "spatial", "none")
# Paper, CIFAR-10 top-1 error (%) with mixed attention, one run each (Wang et al. 2017, Table 3).
PAPER_CIFAR10_ERROR = {"arl": {56: 5.52, 92: 4.99, 128: 4.44, 164: 4.31},
                       "nal": {56: 5.89, 92: 5.35, 128: 5.57, 164: 7.18}}


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
    """Holm's step-down adjustment (`significance.holm`) of the p-values that exist; None (no
    test: a side with one seed) stays None and does not count towards the family."""
    present = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    for i, p in zip(present, significance.holm([pvalues[i] for i in present]) if present else []):
        adjusted[i] = float(p)
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


def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
