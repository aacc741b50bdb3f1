"""The mask-vs-attribution tables of docs/results.md, from `python -m resattn.report` runs.

    python scripts/results_tables.py runs/report/attention56_mixed_arl/metrics.csv [more metrics.csv ...]

Each metrics.csv is one checkpoint's report (its folder name names the checkpoint). Prints two
markdown tables: the agreement of every module's mask with every attribution (mean Spearman
rank correlation, mean top-20 % IoU, pointing-game hit rate; NaN rows, e.g. from constant maps,
skipped), and the mean deletion / insertion AUC of every map against a random order.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

METHODS = {"ig": "IG", "gradcam": "Grad-CAM", "occlusion": "Occlusion"}


def _name(path: Path) -> str:
    return path.parent.name.removeprefix("attention56_")


def agreement_table(frames: dict[str, pd.DataFrame]) -> str:
    rows = ["| model | module | Spearman " + " / ".join(METHODS.values()) + " | IoU " + " / ".join(METHODS.values())
            + " | pointing " + " / ".join(METHODS.values()) + " |", "|---|---|---|---|---|"]
    for name, df in frames.items():
        modules = sorted({c.split("_")[0] for c in df.columns if c.endswith("_spearman")})
        for module in modules:
            cells = []
            for metric, digits in (("spearman", 2), ("iou", 2), ("pointing", 2)):
                cells.append(" / ".join(f"{df[f'{module}_{m}_{metric}'].mean(skipna=True):.{digits}f}" for m in METHODS))
            rows.append(f"| {name} | {module} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def faithfulness_table(frames: dict[str, pd.DataFrame]) -> str:
    rows = ["| model | images | top-1 on them | deletion AUC: masks (stage 1 / 2 / 3) | IG | Grad-CAM | Occlusion | random "
            "| insertion AUC: masks | IG | Grad-CAM | Occlusion | random |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, df in frames.items():
        masks = sorted(c.removeprefix("deletion_auc_mask_") for c in df.columns if c.startswith("deletion_auc_mask_"))
        cells = [str(len(df)), f"{100 * (df['true_label'] == df['predicted_label']).mean():.0f} %"]
        for kind in ("deletion", "insertion"):
            cells.append(" / ".join(f"{df[f'{kind}_auc_mask_{m}'].mean():.3f}" for m in masks) or "—")
            cells += [f"{df[f'{kind}_auc_{m}'].mean():.3f}" for m in (*METHODS, "random")]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    frames = {_name(Path(p)): pd.read_csv(p) for p in argv}
    print(agreement_table({k: v for k, v in frames.items() if any(c.endswith("_spearman") for c in v.columns)}))
    print()
    print(faithfulness_table(frames))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
