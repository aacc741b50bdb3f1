"""docs/results.md's analysis sections, written only from the files of `python -m resattn.report`.

    python scripts/results_tables.py docs/reports/*/                 # print the markdown
    python scripts/results_tables.py --write docs/results.md docs/reports/*/

Each argument is one checkpoint's report folder (agreement.csv, faithfulness.csv, ...,
report.json). With --write, the text between the markers `<!-- analysis:begin -->` and
`<!-- analysis:end -->` of the given file is replaced (the markers are appended at the end
of the file when missing); nothing outside them changes. Every number printed is read from
those files, every verdict is computed from them (resattn.analysis.significance), and a
checkpoint whose report covers fewer than FULL images is marked provisional.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from resattn.analysis.significance import (  # noqa: E402
    ALPHA,
    agreement_summary,
    agreement_verdict,
    causal_verdict,
    format_p,
    side,
)

BEGIN, END = "<!-- analysis:begin -->", "<!-- analysis:end -->"
FULL = 500  # images per checkpoint the issue asks for
METHODS = {"abs_ig": "\\|IG\\|", "ig": "signed IG", "grad_cam": "Grad-CAM (last stage)",
           "grad_cam_module": "Grad-CAM (module)", "occlusion": "Occlusion"}
REDUCTIONS = {"mean": "mean", "class_weighted": "class-weighted", "top_channels": "top channels"}
METRICS = {"spearman": "Spearman ρ", "iou": "top-20 % IoU", "pointing": "pointing game"}
LISTED = 12  # verdict sentences listed per checkpoint (the rest are in agreement.csv)


def read(folder: Path, name: str) -> list[dict]:
    path = folder / name
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def f3(x) -> str:
    return f"{float(x):.3f}"


def signed(x) -> str:
    return f"{float(x):+.3f}"


def interval(low, high, fmt=f3) -> str:
    return f"[{fmt(low)}, {fmt(high)}]"


def rel(folder: Path, name: str = "") -> str:
    try:
        return str((folder / name).resolve().relative_to(ROOT))
    except ValueError:
        return str(folder / name)


class Report:
    def __init__(self, folder: Path):
        self.folder = folder
        self.info = json.loads((folder / "report.json").read_text()) if (folder / "report.json").is_file() else {}
        self.agreement = read(folder, "agreement.csv")
        self.faithfulness = read(folder, "faithfulness.csv")
        self.name = self.faithfulness[0]["checkpoint"] if self.faithfulness else folder.name
        self.faithfulness_impute = read(folder, "faithfulness_impute.csv")
        self.tests = read(folder, "faithfulness_tests.csv")
        self.sanity = read(folder, "sanity.csv")
        self.reductions = read(folder, "reductions.csv")
        self.causal = read(folder, "causal.csv")
        self.n = int(self.info.get("n_images", 0))

    @property
    def provisional(self) -> bool:
        return self.n < FULL

    def command(self) -> str:
        info, settings = self.info, self.info.get("settings", {})
        parts = [f"python -m resattn.report --checkpoint {info.get('checkpoint')} --images {info.get('images')}"]
        if info.get("limit"):
            parts.append(f"--limit {info['limit']}")
        if settings.get("seed"):
            parts.append(f"--seed {settings['seed']}")
        parts.append(f"--no-figures --out {rel(self.folder)}")
        return " ".join(parts)


def overview(reports: list[Report]) -> list[str]:
    lines = ["| checkpoint | images | sample | processes × threads | device | s per image | command |",
             "|---|---|---|---|---|---|---|"]
    for r in reports:
        i = r.info
        lines.append(f"| {r.name}{' (provisional)' if r.provisional else ''} | {r.n} | {i.get('sample')} | "
                     f"{i.get('processes')} × {i.get('threads')} | {i.get('device')} | {i.get('seconds_per_image')} | "
                     f"`{r.command()}` |")
    return lines


def reductions_table(reports: list[Report]) -> list[str]:
    lines = ["| checkpoint | module | reduction | spatial variance kept [95 % CI] | most one map can keep (first "
             "principal component) | peak on the border ring [95 % CI] | ring's share of positions |",
             "|---|---|---|---|---|---|---|"]
    for r in reports:
        for row in r.reductions:
            best = (f"{f3(row['first_component_share'])} "
                    f"{interval(row['first_component_low'], row['first_component_high'])}"
                    if row.get("first_component_share") else "—")
            lines.append(f"| {r.name} | {row['module']} | {REDUCTIONS[row['reduction']]} | {f3(row['variance_kept'])} "
                         f"{interval(row['variance_kept_low'], row['variance_kept_high'])} | {best} | "
                         f"{f3(row['peak_on_border'])} {interval(row['peak_on_border_low'], row['peak_on_border_high'])}"
                         f" | {f3(row['border_chance'])} |")
    return lines


def cell(row: dict) -> str:
    mark = {1: " ▲", -1: " ▼", 0: ""}[side(float(row["value"]), float(row["null_low"]), float(row["null_high"]),
                                          float(row["p_holm"]))]
    return f"{f3(row['value'])} {interval(row['null_low'], row['null_high'])}{mark}"


def agreement_tables(reports: list[Report], metric: str) -> list[str]:
    lines = ["| checkpoint | module | reduction | " + " | ".join(METHODS.values()) + " |",
             "|---|---|---|" + "---|" * len(METHODS)]
    for r in reports:
        by = {(x["module"], x["reduction"], x["method"]): x for x in r.agreement if x["metric"] == metric}
        for module in dict.fromkeys(x["module"] for x in r.agreement):
            for reduction in REDUCTIONS:
                cells = [cell(by[(module, reduction, m)]) if (module, reduction, m) in by else "—" for m in METHODS]
                lines.append(f"| {r.name} | {module} | {REDUCTIONS[reduction]} | " + " | ".join(cells) + " |")
    return lines


def escape(text: str) -> str:
    """A sentence inside markdown: |IG| would start a table cell."""
    return text.replace("|", "\\|")


def agreement_sentences(r: Report) -> list[str]:
    differing = [x for x in r.agreement
                 if side(float(x["value"]), float(x["null_low"]), float(x["null_high"]), float(x["p_holm"])) != 0]
    differing.sort(key=lambda x: -max(float(x["value"]) - float(x["null_high"]), float(x["null_low"]) - float(x["value"])))
    lines = [f"- {escape(agreement_verdict(x, tests=len(r.agreement)))}" for x in differing[:LISTED]]
    if len(differing) > LISTED:
        link = os.path.relpath(r.folder / "agreement.csv", ROOT / "docs")
        lines.append(f"- … and {len(differing) - LISTED} more cells that differ from chance, in [agreement.csv]({link}).")
    return lines


def faithfulness_table(r: Report) -> list[str]:
    impute = {x["order"]: x for x in r.faithfulness_impute}
    lines = ["| order | deletion AUC, blur [95 % CI] | insertion AUC, blur | deletion AUC, imputed | "
             "insertion AUC, imputed |", "|---|---|---|---|---|"]
    for x in r.faithfulness:
        y = impute.get(x["order"])
        cells = [f"{f3(x['deletion_auc'])} {interval(x['deletion_low'], x['deletion_high'])}",
                 f"{f3(x['insertion_auc'])} {interval(x['insertion_low'], x['insertion_high'])}"]
        cells += ([f"{f3(y['deletion_auc'])} {interval(y['deletion_low'], y['deletion_high'])}",
                   f"{f3(y['insertion_auc'])} {interval(y['insertion_low'], y['insertion_high'])}"] if y else ["—", "—"])
        lines.append(f"| {x['order']} | " + " | ".join(cells) + " |")
    return lines


def test_word(row: dict) -> str:
    low, high, p = float(row["low"]), float(row["high"]), float(row["p_holm"])
    if not (p < ALPHA and (low > 0 or high < 0)):
        return "not distinguishable"
    good = (float(row["difference"]) < 0) == (row["curve"] == "deletion")
    return "better" if good else "worse"


def tests_table(r: Report) -> list[str]:
    """Each mask order against its module's smooth random order, each attribution against
    pixel noise: the paired difference per fill and curve."""
    keep = [x for x in r.tests if (x["order"].startswith("mask:") and x["reference"].startswith("random_smooth:"))
            or (not x["order"].startswith(("mask:", "grad_cam_module:")) and x["reference"] == "random_pixel")]
    columns = [(fill, curve) for fill in ("blur", "impute") for curve in ("deletion", "insertion")]
    lines = ["| order | reference | " + " | ".join(f"{curve}, {'blur' if fill == 'blur' else 'imputed'}"
                                                    for fill, curve in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    pairs = dict.fromkeys((x["order"], x["reference"]) for x in keep)
    by = {(x["order"], x["reference"], x["fill"], x["curve"]): x for x in keep}
    for order, reference in pairs:
        cells = []
        for fill, curve in columns:
            x = by.get((order, reference, fill, curve))
            cells.append(f"{signed(x['difference'])} {interval(x['low'], x['high'], signed)} {test_word(x)}, "
                         f"p = {format_p(float(x['p_holm']))}" if x else "—")
        lines.append(f"| {order} | {reference} | " + " | ".join(cells) + " |")
    return lines


def causal_table(reports: list[Report]) -> list[str]:
    lines = ["| checkpoint | module | mask replaced by | logit change [95 % CI] | prediction changed [95 % CI] | "
             "p (Holm) | |", "|---|---|---|---|---|---|---|"]
    for r in reports:
        for x in r.causal:
            significant = float(x["p_holm"]) < ALPHA and (float(x["logit_change_low"]) > 0
                                                           or float(x["logit_change_high"]) < 0)
            verdict = "changes the logit" if significant else "no change distinguishable from 0"
            changed = interval(x["prediction_changed_low"], x["prediction_changed_high"])
            lines.append(f"| {r.name} | {x['module']} | {x['replacement']} | {signed(x['logit_change'])} "
                         f"{interval(x['logit_change_low'], x['logit_change_high'], signed)} | "
                         f"{f3(x['prediction_changed'])} {changed} | {format_p(float(x['p_holm']))} | {verdict} |")
    return lines


def sanity_table(reports: list[Report]) -> list[str]:
    lines = ["| checkpoint | randomised through | module | Spearman to trained: mean / class-weighted / top channels "
             "| SSIM to trained: mean / class-weighted / top channels |", "|---|---|---|---|---|"]
    for r in reports:
        by = {(x["randomised_through"], x["module"], x["reduction"]): x for x in r.sanity}
        for through, module in dict.fromkeys((x["randomised_through"], x["module"]) for x in r.sanity):
            rho = " / ".join(f3(by[(through, module, k)]["spearman_to_original"]) for k in REDUCTIONS)
            ssim = " / ".join(f3(by[(through, module, k)]["ssim_to_original"]) for k in REDUCTIONS)
            lines.append(f"| {r.name} | {through} | {module} | {rho} | {ssim} |")
    return lines


def counts(r: Report) -> str:
    """One computed sentence per checkpoint on the faithfulness tests of its masks."""
    masks = [x for x in r.tests if x["order"].startswith("mask:") and x["reference"].startswith("random_smooth:")]
    words = [test_word(x) for x in masks]
    return (f"{r.name}: of {len(masks)} comparisons of a mask order with its module's smooth random order (every "
            f"module, reduction, fill and curve), {words.count('better')} are better, {words.count('worse')} worse and "
            f"{words.count('not distinguishable')} not distinguishable (paired over {r.n} images, Holm-corrected "
            f"p < {ALPHA:g} and the 95 % CI excluding 0).")


def section(reports: list[Report]) -> str:
    masked = [r for r in reports if r.agreement]
    out = [BEGIN, "## Masks against attributions, deletion and insertion, interventions", ""]
    out += ["Generated by `python scripts/results_tables.py --write docs/results.md "
            + " ".join(rel(r.folder) for r in reports) + "` from the files `python -m resattn.report` wrote in "
            "those folders: every number below is in them, every verdict is computed from them "
            "(`resattn.analysis.significance`); nothing here is typed by hand. The definitions are in "
            "`resattn/analysis/study.py` and `python -m resattn.report --help`.", ""]
    provisional = [r for r in reports if r.provisional]
    if provisional:
        out += [f"**Provisional:** {', '.join(f'{r.name} ({r.n} images)' for r in provisional)} "
                f"{'has' if len(provisional) == 1 else 'have'} fewer than the {FULL} images per checkpoint the "
                "analysis calls for; intervals are wide and the tests weak. Rerun with `--limit 500` and regenerate "
                "this section before reading anything into them.", ""]
    out += overview(reports) + [""]
    if masked:
        out += ["### What one map keeps of a mask", "",
                "Each module's mask M (C channels) is reduced to one map three ways: the mean over channels; a "
                "class-weighted sum (each channel weighted by the spatial mean of the gradient of the explained "
                "class's logit at the module's output, Grad-CAM's weights applied to M); the mean of the 8 channels "
                "with the most energy. *Spatial variance kept*: the share of the mask's spatial variance (summed over "
                "channels) that lies along the reduction's channel weights. *Peak on the border ring*: how often the "
                "map's maximum sits on the outermost ring of positions, beside the ring's share of all positions "
                "(where a peak placed at random would land).", ""]
        out += reductions_table(masked) + [""]
        out += ["### Agreement with attributions, against chance", "",
                "Every value is the mean over images; in brackets the 95 % band of the null the corrected test was "
                "run against (the less significant of two: attributions of other images; random maps with the "
                "mask's spatial autocorrelation). ▲ / ▼: above / below chance (Holm-corrected p < 0.05 over every "
                "test of the checkpoint, and outside the band). Maps are compared on a 32 × 32 grid with ties broken "
                "at random.", ""]
        for metric, label in METRICS.items():
            out += [f"**{label}**", ""] + agreement_tables(masked, metric) + [""]
        for r in masked:
            out += [f"**{r.name}.** {agreement_summary(r.agreement)}", ""] + agreement_sentences(r) + [""]
    out += ["### Deletion and insertion", "",
            "Area under the curve of the explained class's probability as pixels are deleted (lower is more "
            "faithful) or inserted (higher is more faithful), in 16 steps, for two fills: a blurred image, and "
            "every perturbed image imputed from the pixels it keeps (ROAD's idea, against out-of-distribution "
            "fill). Means over images with bootstrap intervals.", ""]
    for r in reports:
        out += [f"**{r.name}**", ""] + faithfulness_table(r) + [""]
    out += ["Paired differences (order minus reference, the same images), with the 95 % CI and the Holm-corrected "
            "p over every comparison of the checkpoint: each mask order against random orders as smooth as the "
            "module's mask, each attribution against pixel noise.", ""]
    for r in reports:
        out += [f"**{r.name}**", ""] + tests_table(r) + [""]
    if masked:
        out += [f"- {counts(r)}" for r in masked] + [""]
        out += ["### Does a module's mask carry class evidence?", "",
                "The explained class's logit when one module's mask is replaced, for every image, by its mean over "
                "the images (what is left is the image-specific part), by 1, or by another image's mask; the share "
                "of images whose prediction changes.", ""]
        out += causal_table(masked) + [""]
        out += [f"- **{r.name}**: {causal_verdict(x)}" for r in masked for x in r.causal
                if float(x["p_holm"]) < ALPHA] or ["- No replacement changes the logit distinguishably from 0."]
        out += ["", "### Sanity check: randomised mask branches", "",
                "Cascading randomisation (Adebayo et al., 2018) from the top stage down: the convolution weights of "
                "every mask branch from that stage up replaced by random ones of the same norm, BatchNorm and its "
                "statistics kept. How close each module's reduced mask stays to the trained one (1 = unchanged; "
                "modules below the randomised stages are unchanged except for the class-weighted reduction, whose "
                "weights come from a gradient that passes through them).", ""]
        out += sanity_table(masked) + [""]
    out.append(END)
    return "\n".join(out) + "\n"


def write(target: Path, text: str) -> None:
    current = target.read_text() if target.is_file() else ""
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = head + text.rstrip("\n") + tail
    else:
        new = current.rstrip("\n") + "\n\n" + text
    target.write_text(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/results_tables.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="report folders (one per checkpoint)")
    parser.add_argument("--write", help="replace the analysis block of this markdown file")
    args = parser.parse_args(argv)
    folders = [Path(f) for f in args.folders]
    missing = [str(f) for f in folders if not (f / "faithfulness.csv").is_file()]
    if missing:
        print(f"error: no report in {', '.join(missing)} (run python -m resattn.report --out there first)",
              file=sys.stderr)
        return 2
    text = section([Report(f) for f in folders])
    if args.write:
        write(Path(args.write), text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
