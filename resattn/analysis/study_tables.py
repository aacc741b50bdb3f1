"""The tables of the dataset study (`resattn.analysis.study`), from every image's values: the
agreement of masks and attributions against both nulls, faithfulness (deletion / insertion
AUCs) and its paired tests against the reference orders, the sanity check, the reductions and
the causal test, each with bootstrap intervals over images and Holm-corrected p. Plain lists
of dicts, which the report writes as CSV."""
from __future__ import annotations

import math

import numpy as np

from .agreement import METRICS
from .attribution import REPORT_METHODS
from .reduce import ANALYSIS_REDUCTIONS
from .significance import bootstrap_interval, holm, null_band, paired_p
from .study import REPLACEMENTS, agreement_cells


def _g(x: float) -> str:
    """Six significant digits: enough for any table, and the same text in every run."""
    return "nan" if not math.isfinite(x) else f"{x:.6g}"


def agreement_rows(checkpoint: str, modules: list[str], observed: np.ndarray, nulls: dict[str, np.ndarray],
                   weights: np.ndarray) -> tuple[list[dict], list[dict]]:
    """(agreement.csv rows, agreement_nulls.csv rows) from observed (N x cells x metrics)
    and each null's draws (N x cells x metrics x K; a null without draws is left out).

    agreement.csv gives, per cell and metric, the null whose paired test is the less
    significant (the larger p: a difference from chance must hold against both), and its
    p Holm-corrected over every cell and metric of the checkpoint. agreement_nulls.csv
    gives both nulls with the value's bootstrap interval, each null's raw p and its own
    Holm correction."""
    cells = agreement_cells(modules)
    n = observed.shape[0]
    value = observed.mean(axis=0)
    low, high = bootstrap_interval(observed.reshape(n, -1), weights)
    low, high = low.reshape(value.shape), high.reshape(value.shape)
    stats = {}
    for name, draws in nulls.items():
        if draws is None or draws.shape[-1] == 0:
            continue
        mean, lo, hi = null_band(draws)
        p = paired_p(observed - draws.mean(axis=-1))
        stats[name] = (mean, lo, hi, np.asarray(p, dtype=np.float64))
    names = list(stats)
    p_all = np.stack([stats[k][3] for k in names])  # nulls x cells x metrics
    chosen = np.argmax(p_all, axis=0)
    p_cell = np.take_along_axis(p_all, chosen[None], axis=0)[0]
    p_holm = holm(p_cell)
    main, detail = [], []
    for c, (module, reduction, method) in enumerate(cells):
        for j, metric in enumerate(METRICS):
            mean, lo, hi, _ = stats[names[chosen[c, j]]]
            main.append({"checkpoint": checkpoint, "module": module, "reduction": reduction, "method": method,
                         "metric": metric, "n_images": n, "value": _g(value[c, j]), "null_mean": _g(mean[c, j]),
                         "null_low": _g(lo[c, j]), "null_high": _g(hi[c, j]), "p_holm": _g(p_holm[c, j])})
    for name in names:
        mean, lo, hi, p = stats[name]
        corrected = holm(p)
        for c, (module, reduction, method) in enumerate(cells):
            for j, metric in enumerate(METRICS):
                detail.append({"checkpoint": checkpoint, "module": module, "reduction": reduction, "method": method,
                               "metric": metric, "n_images": n, "value": _g(value[c, j]),
                               "value_low": _g(low[c, j]), "value_high": _g(high[c, j]), "null": name,
                               "null_mean": _g(mean[c, j]), "null_low": _g(lo[c, j]), "null_high": _g(hi[c, j]),
                               "p": _g(p[c, j]), "p_holm": _g(corrected[c, j])})
    return main, detail


def faithfulness_rows(checkpoint: str, orders: list[str], auc: np.ndarray, weights: np.ndarray) -> list[dict]:
    """faithfulness.csv rows for one fill from auc (N x orders x 2: deletion, insertion)."""
    n = auc.shape[0]
    mean = auc.mean(axis=0)
    low, high = bootstrap_interval(auc.reshape(n, -1), weights)
    low, high = low.reshape(mean.shape), high.reshape(mean.shape)
    return [{"checkpoint": checkpoint, "order": order, "n_images": n,
             "deletion_auc": _g(mean[o, 0]), "deletion_low": _g(low[o, 0]), "deletion_high": _g(high[o, 0]),
             "insertion_auc": _g(mean[o, 1]), "insertion_low": _g(low[o, 1]), "insertion_high": _g(high[o, 1])}
            for o, order in enumerate(orders)]


def faithfulness_references(orders: list[str]) -> list[tuple[str, str]]:
    """(order, reference) pairs that faithfulness_tests.csv compares: every order against
    the pixel-noise order, and every map of one module (its mask reductions, Grad-CAM at
    its output) against that module's smooth random order."""
    pairs = [(o, "random_pixel") for o in orders if not o.startswith("random_")]
    for o in orders:
        module = o.split(":")[1] if o.startswith(("mask:", "grad_cam_module:")) else None
        if module is not None and f"random_smooth:{module}" in orders:
            pairs.append((o, f"random_smooth:{module}"))
    return pairs


def faithfulness_test_rows(checkpoint: str, fills: list[str], orders: list[str], auc: np.ndarray,
                           weights: np.ndarray) -> list[dict]:
    """Paired differences of AUC (order minus reference) per fill and curve with bootstrap
    intervals and t-test p-values, Holm-corrected over all rows. auc: N x fills x orders x 2."""
    n = auc.shape[0]
    pairs = faithfulness_references(orders)
    rows, diffs = [], []
    for f, fill in enumerate(fills):
        for order, reference in pairs:
            for k, curve in enumerate(("deletion", "insertion")):
                d = auc[:, f, orders.index(order), k] - auc[:, f, orders.index(reference), k]
                diffs.append(d)
                rows.append({"checkpoint": checkpoint, "fill": fill, "order": order, "reference": reference,
                             "curve": curve, "n_images": n})
    if not rows:
        return []
    d = np.stack(diffs, axis=1)
    low, high = bootstrap_interval(d, weights)
    p = holm(np.atleast_1d(paired_p(d)))
    for i, row in enumerate(rows):
        row.update({"difference": _g(d[:, i].mean()), "low": _g(low[i]), "high": _g(high[i]), "p_holm": _g(p[i])})
    return rows


def sanity_rows(checkpoint: str, steps: list[str], modules: list[str], values: np.ndarray) -> list[dict]:
    """sanity.csv rows from values (N x steps x modules x reductions x 2: spearman, ssim)."""
    mean = values.mean(axis=0)
    return [{"checkpoint": checkpoint, "randomised_through": through, "module": m, "reduction": r,
             "spearman_to_original": _g(mean[s, i, j, 0]), "ssim_to_original": _g(mean[s, i, j, 1])}
            for s, through in enumerate(steps) for i, m in enumerate(modules) for j, r in enumerate(ANALYSIS_REDUCTIONS)]


def sanity_agreement_rows(checkpoint: str, steps: list[str], modules: list[str], values: np.ndarray,
                          trained: np.ndarray) -> list[dict]:
    """How the agreement moves: values N x steps x modules x reductions x methods x metrics
    (randomised masks vs the trained network's attributions), trained N x cells x metrics."""
    mean, base = values.mean(axis=0), trained.mean(axis=0)
    cells = agreement_cells(modules)
    rows = []
    for s, through in enumerate(steps):
        for c, (m, r, a) in enumerate(cells):
            i, j, k = modules.index(m), ANALYSIS_REDUCTIONS.index(r), REPORT_METHODS.index(a)
            for q, metric in enumerate(METRICS):
                rows.append({"checkpoint": checkpoint, "randomised_through": through, "module": m, "reduction": r,
                             "method": a, "metric": metric, "n_images": values.shape[0],
                             "value": _g(mean[s, i, j, k, q]), "trained_value": _g(base[c, q])})
    return rows


def reduction_rows(checkpoint: str, modules: list[str], kept: np.ndarray, border: np.ndarray,
                   chance: dict, weights: np.ndarray, best: np.ndarray | None = None) -> list[dict]:
    """reductions.csv: kept, border N x modules x reductions; best N x modules (the first
    principal component's share: the most any one map of the channels can keep). NaN
    shares (a mask constant over space) are left out of that cell's mean and interval, and
    n_images says so."""
    rows = []
    for i, m in enumerate(modules):
        if best is not None:
            b = best[:, i]
            ok_b = np.isfinite(b)
            blo, bhi = bootstrap_interval(b[ok_b], weights[:, ok_b]) if ok_b.any() else (math.nan, math.nan)
            best_cells = {"first_component_share": _g(float(b[ok_b].mean()) if ok_b.any() else math.nan),
                          "first_component_low": _g(blo), "first_component_high": _g(bhi)}
        else:
            best_cells = {}
        for j, r in enumerate(ANALYSIS_REDUCTIONS):
            k = kept[:, i, j]
            ok = np.isfinite(k)
            klo, khi = bootstrap_interval(k[ok], weights[:, ok]) if ok.any() else (math.nan, math.nan)
            blo, bhi = bootstrap_interval(border[:, i, j], weights)
            rows.append({"checkpoint": checkpoint, "module": m, "reduction": r, "n_images": int(ok.sum()),
                         "variance_kept": _g(float(k[ok].mean()) if ok.any() else math.nan),
                         "variance_kept_low": _g(klo), "variance_kept_high": _g(khi),
                         "peak_on_border": _g(float(border[:, i, j].mean())), "peak_on_border_low": _g(blo),
                         "peak_on_border_high": _g(bhi), "border_chance": _g(chance[m]), **best_cells})
    return rows


def causal_rows(checkpoint: str, modules: list[str], effects: np.ndarray, weights: np.ndarray) -> list[dict]:
    """causal.csv from effects N x modules x replacements x 3 (logit change, probability
    change, prediction changed); p of the logit change (t-test), Holm over the rows."""
    n = effects.shape[0]
    mean = effects.mean(axis=0)
    low, high = bootstrap_interval(effects.reshape(n, -1), weights)
    low, high = low.reshape(mean.shape), high.reshape(mean.shape)
    p = holm(np.asarray(paired_p(effects[..., 0]), dtype=np.float64))
    rows = []
    for i, m in enumerate(modules):
        for j, replacement in enumerate(REPLACEMENTS):
            row = {"checkpoint": checkpoint, "module": m, "replacement": replacement, "n_images": n}
            for q, name in enumerate(("logit_change", "probability_change", "prediction_changed")):
                row.update({name: _g(mean[i, j, q]), f"{name}_low": _g(low[i, j, q]),
                            f"{name}_high": _g(high[i, j, q])})
            row["p_holm"] = _g(p[i, j])
            rows.append(row)
    return rows
