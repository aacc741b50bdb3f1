"""docs/results.md's generated blocks are what their generators write from the committed files.

Every number in those blocks must come from a run (the cards, docs/predictions/, docs/reports/,
docs/consistency/). A block that was edited by hand, or left stale after a new card or report
landed, fails here with the command that regenerates it.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from resattn import consistency, results

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
sys.path.insert(0, str(ROOT / "scripts"))
import results_tables  # noqa: E402  (a script, not a package)


def block(text: str, begin: str, end: str) -> str:
    assert text.count(begin) == 1 and text.count(end) == 1, f"docs/results.md must hold {begin} … {end} once"
    return text[text.index(begin):text.index(end) + len(end)]


def analysis_folders(text: str) -> list[str]:
    found = re.search(r"--write docs/results\.md (.*?)` from", block(text, results_tables.BEGIN, results_tables.END))
    assert found, "the analysis block must name the report folders it was generated from"
    return found.group(1).split()


def analysis_block(folders: list[str], root: Path = ROOT) -> str:
    return results_tables.section([results_tables.Report(root / f) for f in folders]).rstrip("\n")


def consistency_block(folder: Path) -> str:
    rows = consistency.read_rows(folder / "consistency.csv")
    run = json.loads((folder / "consistency_run.json").read_text())
    return f"{consistency.BEGIN}\n{consistency.markdown(rows, command=run.get('command', ''), run=run)}\n{consistency.END}"


def test_the_zoo_block_is_the_cards_and_predictions():
    text = DOC.read_text()
    assert block(text, results.BEGIN, results.END) == results.render(ROOT), \
        "docs/results.md's zoo block is stale or hand-edited: run `python -m resattn.results --write`"


def test_the_analysis_block_is_the_reports_of_every_shipped_checkpoint():
    text = DOC.read_text()
    folders = analysis_folders(text)
    shipped = {p.stem for p in (ROOT / "checkpoints").glob("*.json")}
    assert shipped <= {Path(f).name for f in folders}, "every shipped checkpoint's report belongs in the block"
    assert block(text, results_tables.BEGIN, results_tables.END) == analysis_block(folders), \
        "docs/results.md's analysis block is stale or hand-edited: run the command it names"


def test_the_consistency_block_is_the_consistency_table():
    text = DOC.read_text()
    assert block(text, consistency.BEGIN, consistency.END) == consistency_block(ROOT / "docs" / "consistency"), \
        "docs/results.md's consistency block is stale or hand-edited: run `python -m resattn.consistency " \
        "--table docs/consistency/consistency.csv --results docs/results.md`"


# The three checks above must fail when a source changes: the same comparison on a copy with one
# number altered.

def test_a_changed_card_changes_the_zoo_block(tmp_path):
    for sub in ("checkpoints", "docs/cards", "docs/predictions"):
        shutil.copytree(ROOT / sub, tmp_path / sub, ignore=shutil.ignore_patterns("*.safetensors", "seeds"))
    card_path = tmp_path / "checkpoints" / "attention56_spatial_arl.json"
    card = json.loads(card_path.read_text())
    card["metrics"]["val_top1"] = round(card["metrics"]["val_top1"] - 1.0, 2)
    card_path.write_text(json.dumps(card))
    assert results.render(tmp_path) != block(DOC.read_text(), results.BEGIN, results.END)


def test_a_changed_report_value_changes_the_analysis_block(tmp_path):
    text = DOC.read_text()
    folders = analysis_folders(text)
    for f in folders:
        shutil.copytree(ROOT / f, tmp_path / f)
    agreement = tmp_path / folders[0] / "agreement.csv"
    lines = agreement.read_text().splitlines()
    header = lines[0].split(",")
    first = lines[1].split(",")
    first[header.index("value")] = f"{float(first[header.index('value')]) + 0.25:.6f}"
    agreement.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    assert analysis_block(folders, tmp_path) != block(text, results_tables.BEGIN, results_tables.END)


@pytest.mark.parametrize("column", ["value", "low"])
def test_a_changed_consistency_row_changes_the_block(tmp_path, column):
    source = ROOT / "docs" / "consistency"
    shutil.copytree(source, tmp_path / "c")
    table = tmp_path / "c" / "consistency.csv"
    lines = table.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index(column)] = f"{float(row[header.index(column)]) - 0.3:.4f}"
    table.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    assert consistency_block(tmp_path / "c") != block(DOC.read_text(), consistency.BEGIN, consistency.END)
