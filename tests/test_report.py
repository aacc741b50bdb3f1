"""`python -m resattn.report`: figures and metrics.csv for a few generated images with a tiny
checkpoint; bad inputs end with one line on stderr and exit code 2."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resattn
from resattn.checkpoints import model_card, save_checkpoint
from resattn.report import csv_columns, figure_name, main, summary

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["red", "green", "blue"]
FAST = ["--steps", "4", "--ig-steps", "4", "--batch-size", "16", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = resattn.create_model("attention56_cifar", width=0.125, num_classes=len(CLASSES)).eval()
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(folder / "tiny", model, model_card(model, classes=CLASSES, input_size=32))


def generated_images(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        pixels = (rng.random((40, 48, 3)) * 80).astype(np.uint8)
        pixels[10:30, 12:36, i % 3] += 150  # a coloured block on noise
        paths.append(folder / f"photo {i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def test_report_writes_figures_and_metrics(tmp_path, checkpoint, capsys):
    generated_images(tmp_path / "images")
    out = tmp_path / "out"
    assert main(["--checkpoint", str(checkpoint), "--images", str(tmp_path / "images"), "--out", str(out), *FAST]) == 0
    columns, rows = read_csv(out / "metrics.csv")
    modules = ["stage1.1", "stage2.1", "stage3.1"]
    assert columns == csv_columns(modules)
    assert "stage2.1_gradcam_spearman" in columns and "deletion_auc_random" in columns
    assert "insertion_auc_mask_stage3.1" in columns and "deletion_auc_occlusion" in columns
    assert [r["file"] for r in rows] == ["photo 0.png", "photo 1.png", "photo 2.png"]
    for row in rows:
        assert row["true_label"] == ""  # a plain folder: labels unknown
        assert row["predicted_label"] in CLASSES
        assert 0 < float(row["probability"]) <= 1
        assert all(row[c] != "" for c in columns if c != "true_label")
        assert all(row[c] in ("0", "1") for c in columns if c.endswith("_pointing"))
        assert all(0 <= float(row[c]) <= 1 for c in columns if "_auc_" in c or c.endswith("_iou"))
        assert all(-1 <= float(row[c]) <= 1 for c in columns if c.endswith("_spearman"))
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == ["photo_0.png", "photo_1.png", "photo_2.png"]
    with Image.open(out / "photo_0.png") as fig:
        assert fig.size[0] > 500 and fig.size[1] > 500
    printed = capsys.readouterr().out
    assert "3 images" in printed and "mask stage3.1" in printed
    mean_random = np.mean([float(r["deletion_auc_random"]) for r in rows])
    assert any(line.split() == ["random", f"{mean_random:.3f}",
                                f"{np.mean([float(r['insertion_auc_random']) for r in rows]):.3f}"]
               for line in printed.splitlines())


def test_report_on_a_class_tree_with_limit(tmp_path, checkpoint):
    generated_images(tmp_path / "tree" / "green", 2)
    generated_images(tmp_path / "tree" / "unknown", 2)
    out = tmp_path / "out"
    code = main(["--checkpoint", str(checkpoint), "--images", str(tmp_path / "tree"), "--out", str(out),
                 "--limit", "2", "--no-figures", *FAST])
    assert code == 0
    _, rows = read_csv(out / "metrics.csv")
    assert [(r["file"], r["true_label"]) for r in rows] == [("green/photo 0.png", "green"), ("unknown/photo 1.png", "")]
    assert not list(out.glob("*.png"))


def test_model_without_masks_gets_attribution_columns_only(tmp_path):
    model = resattn.create_model("attention56_cifar", attention="none", width=0.125, num_classes=2).eval()
    ckpt = save_checkpoint(tmp_path / "plain", model, model_card(model, classes=["a", "b"], input_size=32))
    generated_images(tmp_path / "images", 1)
    assert main(["--checkpoint", str(ckpt), "--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                 "--no-figures", *FAST]) == 0
    columns, rows = read_csv(tmp_path / "out" / "metrics.csv")
    assert columns == csv_columns([]) and len(rows) == 1
    assert not any("stage" in c for c in columns)


@pytest.mark.parametrize("case", ["bad checkpoint", "missing images", "bad steps", "missing argument"])
def test_bad_inputs_exit_2_with_one_line(tmp_path, checkpoint, capsys, case):
    generated_images(tmp_path / "images", 1)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    args = {
        "bad checkpoint": ["--checkpoint", str(junk), "--images", str(tmp_path / "images"), "--out", str(tmp_path)],
        "missing images": ["--checkpoint", str(checkpoint), "--images", str(tmp_path / "none"), "--out", str(tmp_path)],
        "bad steps": ["--checkpoint", str(checkpoint), "--images", str(tmp_path / "images"), "--out", str(tmp_path),
                      "--steps", "0"],
        "missing argument": ["--checkpoint", str(checkpoint), "--images", str(tmp_path / "images")],
    }[case]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's errors exit from inside main
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_bad_checkpoint_from_the_command_line(tmp_path):
    generated_images(tmp_path / "images", 1)
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "resattn.report", "--checkpoint", str(junk), "--images",
                           str(tmp_path / "images"), "--out", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "out").exists()


def test_figure_names_are_unique_and_safe():
    taken: set[str] = set()
    assert figure_name("n01440764/ILSVRC2012_val_1.JPEG", taken) == "n01440764__ILSVRC2012_val_1.png"
    assert figure_name("a b/c.png", taken) == "a_b__c.png"
    assert figure_name("a b/c.jpg", taken) == "a_b__c-2.png"


def test_summary_means_skip_nan():
    rows = [{"m_ig_spearman": "0.5", "m_ig_iou": "0.2", "m_ig_pointing": "1"},
            {"m_ig_spearman": "nan", "m_ig_iou": "0.4", "m_ig_pointing": "0"}]
    lines = summary(rows, ["m"], methods=["ig"])
    assert lines[2].split() == ["mask", "m", "0.500", "0.300", "0.500"]
