"""The report's CSV files (their columns, the per-image metrics.csv, every table from the
gathered records) and the summary the terminal shows."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..analysis import study
from ..analysis.agreement import METRICS
from ..analysis.attribution import REPORT_METHODS
from ..analysis.reduce import ANALYSIS_REDUCTIONS
from ..analysis.significance import agreement_verdict, bootstrap_weights, side
from ..analysis.study_tables import (
    _g,
    agreement_rows,
    causal_rows,
    faithfulness_rows,
    faithfulness_test_rows,
    reduction_rows,
    sanity_agreement_rows,
    sanity_rows,
)

AGREEMENT_COLUMNS = ["checkpoint", "module", "reduction", "method", "metric", "n_images", "value", "null_mean",
                     "null_low", "null_high", "p_holm"]

FAITHFULNESS_COLUMNS = ["checkpoint", "order", "n_images", "deletion_auc", "deletion_low", "deletion_high",
                        "insertion_auc", "insertion_low", "insertion_high"]

SANITY_COLUMNS = ["checkpoint", "randomised_through", "module", "reduction", "spearman_to_original",
                  "ssim_to_original"]


def _write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def metrics_rows(records: list[study.ImageRecord], observed: np.ndarray | None, modules: list[str], orders: list[str],
                 fills: tuple[str, ...], names: list[str], classes: list[str]) -> tuple[list[str], list[dict]]:
    """metrics.csv: one row per image, every per-image value of the tables."""
    cells = study.agreement_cells(modules)
    columns = ["file", "true_label", "predicted_label", "probability"]
    columns += [f"{m}_{r}_{a}_{k}" for m, r, a in cells for k in METRICS]
    columns += [f"{c}_auc_{f}_{o}" for f in fills for o in orders for c in ("deletion", "insertion")]
    rows = []
    for i, rec in enumerate(records):
        row = {"file": names[rec.index], "true_label": classes[rec.label] if rec.label >= 0 else "",
               "predicted_label": classes[rec.target], "probability": _g(rec.probability)}
        if observed is not None:
            for c, (m, r, a) in enumerate(cells):
                for j, k in enumerate(METRICS):
                    row[f"{m}_{r}_{a}_{k}"] = _g(observed[i, c, j])
        for f in fills:
            for o in orders:
                deletion, insertion = rec.auc[(f, o)]
                row[f"deletion_auc_{f}_{o}"], row[f"insertion_auc_{f}_{o}"] = _g(deletion), _g(insertion)
        rows.append(row)
    return columns, rows


def write_tables(out: Path, checkpoint: str, settings: study.StudySettings, modules: list[str], orders: list[str],
                  cascade, records: dict, local: list, images, classes: list[str]) -> dict:
    n = len(records)
    ordered = [records[i] for i in range(n)]
    labels = np.array([r.label for r in ordered])
    weights = bootstrap_weights(labels, settings.bootstrap, settings.seed)
    fills = list(settings.fills)
    auc = np.array([[[rec.auc[(f, o)] for o in orders] for f in fills] for rec in ordered])  # N x fills x orders x 2
    for f, fill in enumerate(fills):
        name = "faithfulness.csv" if f == 0 else f"faithfulness_{fill}.csv"
        _write_csv(out / name, faithfulness_rows(checkpoint, orders, auc[:, f], weights), FAITHFULNESS_COLUMNS)
    _write_csv(out / "faithfulness_tests.csv", faithfulness_test_rows(checkpoint, fills, orders, auc, weights))
    observed = None
    result = {"files": ["faithfulness.csv"]}
    steps = [label for label, _ in cascade]
    if modules:
        observed = np.stack([v.observed for _, _, v in local])
        nulls = {"shuffle": np.stack([v.shuffle for _, _, v in local]) if n > 1 else None,
                 "smooth": np.stack([v.smooth for _, _, v in local])}
        main, detail = agreement_rows(checkpoint, modules, observed, nulls, weights)
        _write_csv(out / "agreement.csv", main, AGREEMENT_COLUMNS)
        _write_csv(out / "agreement_nulls.csv", detail)
        sanity = np.array([[[[rec.sanity[(s, m, r)] for r in ANALYSIS_REDUCTIONS] for m in modules] for s in steps]
                           for rec in ordered])
        _write_csv(out / "sanity.csv", sanity_rows(checkpoint, steps, modules, sanity), SANITY_COLUMNS)
        moved = np.array([[[[[rec.sanity_agreement[(s, m, r, a)] for a in REPORT_METHODS]
                             for r in ANALYSIS_REDUCTIONS] for m in modules] for s in steps] for rec in ordered])
        _write_csv(out / "sanity_agreement.csv", sanity_agreement_rows(checkpoint, steps, modules, moved, observed))
        kept = np.array([[[rec.kept[(m, r)] for r in ANALYSIS_REDUCTIONS] for m in modules] for rec in ordered])
        border = np.array([[[rec.border[(m, r)] for r in ANALYSIS_REDUCTIONS] for m in modules] for rec in ordered],
                          dtype=np.float64)
        best = np.array([[rec.kept[(m, "best")] for m in modules] for rec in ordered])
        _write_csv(out / "reductions.csv",
                   reduction_rows(checkpoint, modules, kept, border, ordered[0].border_chance, weights, best))
        effects = np.array([[[e[(m, r)] for r in study.REPLACEMENTS] for m in modules] for _, e, _ in local])
        _write_csv(out / "causal.csv", causal_rows(checkpoint, modules, effects, weights))
        result["agreement"] = main
    else:  # no masks: nothing to compare, randomise or replace; the files exist with their header
        for name, columns in (("agreement.csv", AGREEMENT_COLUMNS), ("sanity.csv", SANITY_COLUMNS)):
            _write_csv(out / name, [], columns)
        result["agreement"] = []
    columns, rows = metrics_rows(ordered, observed, modules, orders, tuple(fills), images.names, classes)
    _write_csv(out / "metrics.csv", rows, columns)
    result["faithfulness"] = faithfulness_rows(checkpoint, orders, auc[:, 0], weights)
    return result


def summary_lines(result: dict) -> list[str]:
    """What the terminal shows: how many agreement cells differ from chance, and the
    deletion / insertion AUC of the main orders."""
    lines = []
    rows = result.get("agreement", [])
    if rows:
        sides = [side(float(r["value"]), float(r["null_low"]), float(r["null_high"]), float(r["p_holm"]))
                 for r in rows]
        lines.append(f"agreement: {len(rows)} cells (module x reduction x method x metric); "
                     f"{sides.count(1)} above chance, {sides.count(-1)} below, {sides.count(0)} not distinguishable "
                     "(Holm-corrected p < 0.05 and outside the null band)")
        strongest = max(rows, key=lambda r: float(r["value"]) - float(r["null_high"]))
        lines.append("largest margin above its null: " + agreement_verdict(strongest, tests=len(rows)))
    lines.append(f"{'order':<34}{'deletion AUC':>24}{'insertion AUC':>24}")
    for r in result.get("faithfulness", []):
        lines.append(f"{r['order']:<34}{float(r['deletion_auc']):>10.3f} ({float(r['deletion_low']):.3f}-"
                     f"{float(r['deletion_high']):.3f}){float(r['insertion_auc']):>10.3f} "
                     f"({float(r['insertion_low']):.3f}-{float(r['insertion_high']):.3f})")
    return lines
