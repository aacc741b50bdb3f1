"""scripts/results_tables.py: docs/results.md's analysis block is written from report files
only, between its own markers, leaving the rest of the file (the zoo's block) alone."""
from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resattn.checkpoints import model_card, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["red", "green", "blue"]

pytestmark = pytest.mark.usefixtures("one_thread")


def load_script():
    spec = importlib.util.spec_from_file_location("results_tables", ROOT / "scripts" / "results_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory) -> Path:
    from conftest import build_tiny

    from resattn.report import main

    folder = tmp_path_factory.mktemp("results")
    model = build_tiny(num_classes=len(CLASSES), seed=3)
    checkpoint = save_checkpoint(folder / "tiny", model, model_card(model, classes=CLASSES, input_size=32))
    rng = np.random.default_rng(0)
    for name in ("red", "green"):
        (folder / "images" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / "images" / name / f"{i}.png")
    out = folder / "reports" / "tiny"
    assert main(["--checkpoint", str(checkpoint), "--images", str(folder / "images"), "--out", str(out), "--steps", "2",
                 "--ig-steps", "2", "--draws", "8", "--bootstrap", "50", "--no-figures", "--threads", "1",
                 "--device", "cpu"]) == 0
    return out


def test_the_block_is_replaced_between_its_markers_only(report_folder, tmp_path):
    script = load_script()
    doc = tmp_path / "results.md"
    zoo = "<!-- zoo:begin -->\n| a | 1.0 |\n<!-- zoo:end -->\n"
    doc.write_text("# Results\n\nIntro.\n\n" + zoo + "\n<!-- analysis:begin -->\nold text 0.999\n<!-- analysis:end -->\n"
                   "\nAfter.\n")
    assert script.main(["--write", str(doc), str(report_folder)]) == 0
    text = doc.read_text()
    assert text.startswith("# Results\n\nIntro.\n\n" + zoo) and text.endswith("<!-- analysis:end -->\n\nAfter.\n")
    assert "old text" not in text and text.count("<!-- analysis:begin -->") == 1
    assert "**Provisional:** tiny (4 images)" in text
    once = text
    assert script.main(["--write", str(doc), str(report_folder)]) == 0
    assert doc.read_text() == once  # regenerating is idempotent
    # Without markers the block is appended.
    plain = tmp_path / "plain.md"
    plain.write_text("# Only this\n")
    script.main(["--write", str(plain), str(report_folder)])
    assert plain.read_text().startswith("# Only this\n\n<!-- analysis:begin -->")


def test_every_agreement_cell_is_the_csv_value(report_folder):
    script = load_script()
    text = script.section([script.Report(report_folder)])
    with open(report_folder / "agreement.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    spearman = {(r["module"], r["reduction"], r["method"]): r for r in rows if r["metric"] == "spearman"}
    table = text.split("**Spearman ρ**")[1].split("**top-20 % IoU**")[0]
    seen = 0
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        reduction = {v: k for k, v in script.REDUCTIONS.items()}[cells[2]]
        for method, value in zip(script.METHODS, cells[3:]):
            row = spearman[(cells[1], reduction, method)]
            number, low, high = map(float, re.findall(r"-?\d+\.\d+", value)[:3])
            assert number == pytest.approx(float(row["value"]), abs=5e-4)
            assert (low, high) == pytest.approx((float(row["null_low"]), float(row["null_high"])), abs=5e-4)
            seen += 1
    assert seen == len(spearman) == 45
    assert "Of the 135 tests of this checkpoint" in text
    with open(report_folder / "faithfulness.csv", newline="") as f:
        first = next(csv.DictReader(f))
    assert f"| {first['order']} | {float(first['deletion_auc']):.3f} [" in text


def test_a_folder_without_a_report_is_an_error(tmp_path, capsys):
    assert load_script().main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no report in")
