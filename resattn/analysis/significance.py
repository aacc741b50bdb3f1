"""Intervals, tests and the verdict sentences built from them.

- Intervals over images: percentile bootstrap of the mean (`bootstrap_weights`,
  `bootstrap_interval`), resampling images with replacement within each class (the report's
  images are drawn stratified by class, so the resamples are too), seeded.
- Null bands: the mean and the 2.5 / 97.5 % percentiles of the mean over images under each
  null draw (`null_band`): what the number would be on these images by chance.
- Tests: each image's value minus the mean of its own null draws, d_i; a two-sided one-sample
  t-test of mean d = 0 over images (`paired_p`). Holm's step-down correction
  (`holm`) over a family of tests (all cells of one checkpoint).
- Verdicts (`agreement_verdict`, `difference_verdict`): sentences computed from those
  numbers, never written by hand. "Above chance" needs both a corrected p below `ALPHA`
  and the value outside the null band on the same side; anything else is "not
  distinguishable from chance".
"""
from __future__ import annotations

import math

import numpy as np

from .agreement import rng_for

ALPHA = 0.05
BOOTSTRAP = 2000


def bootstrap_weights(labels, resamples: int = BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """resamples x N counts: how often each image is drawn in each bootstrap resample,
    images resampled with replacement within their class (label; -1 = its own group)."""
    labels = np.asarray(labels)
    n = len(labels)
    rng = rng_for(seed, "bootstrap", n)
    weights = np.zeros((int(resamples), n), dtype=np.float64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        draws = rng.integers(0, len(members), size=(int(resamples), len(members)))
        rows = np.repeat(np.arange(int(resamples)), len(members))
        np.add.at(weights, (rows, members[draws.ravel()]), 1.0)
    return weights


def bootstrap_interval(values, weights: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean over images: values N or N x S -> (low, high), each
    a float (N) or an S array. NaN values are not allowed (every image counts)."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(len(values), -1)
    means = weights @ flat / weights.sum(axis=1, keepdims=True)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    if values.ndim == 1:
        return float(low[0]), float(high[0])
    return low.reshape(values.shape[1:]), high.reshape(values.shape[1:])


def null_band(draws, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """draws: N x ... x K (each image's metric under K null draws). The mean over images of
    each draw is one sample of the mean under the null; returns its (mean, low, high)."""
    draws = np.asarray(draws, dtype=np.float64)
    means = draws.mean(axis=0)  # ... x K
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=-1)
    return means.mean(axis=-1), low, high


def paired_p(differences) -> np.ndarray:
    """Two-sided p of a one-sample t-test of mean = 0 over axis 0 (N x ...). A column whose
    differences are all 0 gets p = 1 (no evidence of any difference)."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    n = d.shape[0]
    mean = d.mean(axis=0)
    sd = d.std(axis=0, ddof=1) if n > 1 else np.zeros_like(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / math.sqrt(max(n, 1)))
    p = 2 * stats.t.sf(np.abs(t), df=max(n - 1, 1))
    p = np.where(sd > 0, p, np.where(mean == 0, 1.0, 0.0))
    return p if p.ndim else float(p)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (same shape): controls the family-wise error rate
    over all of them, whatever their dependence."""
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    m = len(flat)
    order = np.argsort(flat, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for step, index in enumerate(order):
        running = max(running, min(1.0, (m - step) * flat[index]))
        adjusted[index] = running
    return adjusted.reshape(p.shape)


# --------------------------------------------------------------------------- verdicts

def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    if p < 1e-4:
        return f"{p:.0e}"
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def side(value: float, low: float, high: float, p: float, alpha: float = ALPHA) -> int:
    """+1 above the band and significant, -1 below it and significant, 0 otherwise."""
    if not (math.isfinite(p) and p < alpha):
        return 0
    if value > high:
        return 1
    if value < low:
        return -1
    return 0


def agreement_verdict(row: dict, *, tests: int | None = None, alpha: float = ALPHA) -> str:
    """One sentence for one agreement cell (a row of agreement.csv: module, reduction,
    method, metric, n_images, value, null_mean, null_low, null_high, p_holm)."""
    from .agreement import METRIC_LABELS
    from .attribution import REPORT_METHOD_LABELS
    from .reduce import ANALYSIS_REDUCTION_LABELS

    value, low, high, p = (float(row[k]) for k in ("value", "null_low", "null_high", "p_holm"))
    what = (f"{METRIC_LABELS.get(row['metric'], row['metric'])} of {row['module']}'s mask "
            f"({ANALYSIS_REDUCTION_LABELS.get(row['reduction'], row['reduction'])}) with "
            f"{REPORT_METHOD_LABELS.get(row['method'], row['method'])}")
    family = f" over {tests} tests" if tests else ""
    numbers = (f"{value:.3f} over {int(float(row['n_images']))} images; chance {float(row['null_mean']):.3f} "
               f"(95 % band {low:.3f} to {high:.3f}); Holm-corrected p = {format_p(p)}{family}")
    verdict = side(value, low, high, p, alpha)
    if verdict > 0:
        return f"Above chance: {what} is {numbers}."
    if verdict < 0:
        return f"Below chance: {what} is {numbers}."
    return f"Not distinguishable from chance: {what} is {numbers}."


def difference_verdict(name: str, reference: str, quantity: str, difference: float, low: float, high: float,
                       p: float, *, better: str, n_images: int, alpha: float = ALPHA) -> str:
    """One sentence for a paired comparison (e.g. deletion AUC of a mask order minus that of
    a random order): `better` is "lower" or "higher", the direction a faithful map moves."""
    significant = math.isfinite(p) and p < alpha and (low > 0 or high < 0)
    numbers = (f"{quantity} differs from that of {reference} by {difference:+.3f} (95 % CI {low:+.3f} to {high:+.3f}) "
               f"over {n_images} images; Holm-corrected p = {format_p(p)}")
    if not significant:
        return f"{name} is not distinguishable from {reference}: {numbers}."
    good = (difference < 0) == (better == "lower")
    return f"{name} is {'better' if good else 'worse'} than {reference}: {numbers}."


def band_side(value: float, low: float, high: float) -> int:
    """+1 above a band, -1 below it, 0 inside."""
    return 1 if value > high else -1 if value < low else 0


def image_agreement_verdict(row: dict, method_label: str) -> str:
    """One sentence for one image's agreement value against its smooth null band (a row
    of `nulls.image_agreement`). One image proves nothing about the network: the sentence
    says where the value lies, not what the masks are."""
    from .agreement import METRIC_LABELS

    where = {1: "above", -1: "below", 0: "inside"}[band_side(row["value"], row["null_low"], row["null_high"])]
    return (f"{METRIC_LABELS.get(row['metric'], row['metric'])} with {method_label}: {row['value']:.3f}, {where} the "
            f"95 % band of {row['draws']} smooth random maps like this mask ({row['null_low']:.3f} to "
            f"{row['null_high']:.3f}; uncorrected p = {format_p(row['p'])}).")


def agreement_summary(rows: list[dict], alpha: float = ALPHA) -> str:
    """One sentence over all agreement.csv rows of a checkpoint: how many cells are above
    chance, below it, or not distinguishable, by the corrected test and the null band."""
    if not rows:
        return "This report has no agreement rows (the network has no soft masks)."
    sides = [side(float(r["value"]), float(r["null_low"]), float(r["null_high"]), float(r["p_holm"]), alpha)
             for r in rows]
    n_images = int(float(rows[0]["n_images"]))
    return (f"Of the {len(rows)} tests of this checkpoint (module × reduction × method × metric, {n_images} images), "
            f"{sides.count(1)} are above chance, {sides.count(-1)} below chance and {sides.count(0)} not "
            f"distinguishable from chance (Holm-corrected p < {alpha:g} and the value outside the null's 95 % band).")


def band_verdict(name: str, quantity: str, value: float, low: float, high: float, *, better: str,
                 reference: str) -> str:
    """Where one image's AUC lies against the band of random orders. `better`: "lower"
    (deletion) or "higher" (insertion)."""
    where = band_side(value, low, high)
    if where == 0:
        return (f"{name}: {quantity} {value:.3f} lies inside the band of {reference} ({low:.3f} to {high:.3f}): "
                "no better than random on this image.")
    good = (where < 0) == (better == "lower")
    return (f"{name}: {quantity} {value:.3f} lies {'below' if where < 0 else 'above'} the band of {reference} "
            f"({low:.3f} to {high:.3f}): {'better' if good else 'worse'} than random on this image.")


def causal_verdict(row: dict, alpha: float = ALPHA) -> str:
    """One sentence for a row of causal.csv (a module's mask replaced over the whole set)."""
    what = {"dataset_mean": "its mean over the images", "one": "1 everywhere",
            "other_image": "another image's mask"}.get(row["replacement"], row["replacement"])
    change, low, high = (float(row[k]) for k in ("logit_change", "logit_change_low", "logit_change_high"))
    p = float(row["p_holm"])
    numbers = (f"the explained class's logit changes by {change:+.3f} (95 % CI {low:+.3f} to {high:+.3f}) over "
               f"{int(float(row['n_images']))} images and the prediction changes for "
               f"{100 * float(row['prediction_changed']):.1f} % of them; Holm-corrected p = {format_p(p)}")
    if p < alpha and (low > 0 or high < 0):
        return f"Replacing {row['module']}'s mask by {what} changes the logit: {numbers}."
    return f"Replacing {row['module']}'s mask by {what} makes no change distinguishable from 0: {numbers}."
