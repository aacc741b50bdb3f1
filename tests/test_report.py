"""`python -m resattn.report`: the CSV files the issue names (exact columns), the nulls and
sanity rows they hold, a sharded torchrun run that writes the same files as one process,
and bad inputs ending with one line on stderr and exit code 2. A tiny checkpoint and a few
generated images keep it fast."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import resattn
from resattn.checkpoints import model_card, save_checkpoint
from resattn.report import AGREEMENT_COLUMNS, FAITHFULNESS_COLUMNS, SANITY_COLUMNS, figure_name, main

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["red", "green", "blue"]
FAST = ["--steps", "2", "--ig-steps", "2", "--draws", "8", "--bootstrap", "50", "--batch-size", "16",
        "--device", "cpu", "--threads", "1"]
MODULES = ["stage1.1", "stage2.1", "stage3.1"]
METHODS = {"abs_ig", "ig", "grad_cam", "grad_cam_module", "occlusion"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from conftest import build_tiny

    model = build_tiny(num_classes=len(CLASSES), seed=3)
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(folder / "tiny", model, model_card(model, classes=CLASSES, input_size=32))


def generated_images(folder: Path, count: int = 3, offset: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(offset)
    paths = []
    for i in range(count):
        pixels = (rng.random((40, 48, 3)) * 80).astype(np.uint8)
        pixels[10:30, 12:36, (i + offset) % 3] += 150  # a coloured block on noise
        paths.append(folder / f"photo {i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def image_tree(root: Path, per_class: int = 2) -> Path:
    for c, name in enumerate(("red", "green")):
        generated_images(root / name, per_class, offset=c)
    return root


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


@pytest.fixture(scope="module")
def report(tmp_path_factory, checkpoint) -> Path:
    folder = tmp_path_factory.mktemp("report")
    images = image_tree(folder / "images")
    out = folder / "out"
    assert main(["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out), *FAST]) == 0
    return out


def test_the_three_csv_files_have_the_issues_columns(report):
    columns, rows = read_csv(report / "agreement.csv")
    assert columns == ["checkpoint", "module", "reduction", "method", "metric", "n_images", "value", "null_mean",
                       "null_low", "null_high", "p_holm"] == AGREEMENT_COLUMNS
    assert len(rows) == len(MODULES) * 3 * len(METHODS) * 3
    assert {r["method"] for r in rows} == METHODS
    assert {r["metric"] for r in rows} == {"spearman", "iou", "pointing"}
    assert {r["reduction"] for r in rows} == {"mean", "class_weighted", "top_channels"}
    assert {r["checkpoint"] for r in rows} == {"tiny"} and {r["n_images"] for r in rows} == {"4"}
    for r in rows:
        value, mean, low, high, p = (float(r[k]) for k in ("value", "null_mean", "null_low", "null_high", "p_holm"))
        assert low <= mean <= high and 0 <= p <= 1
        assert (-1 <= value <= 1) if r["metric"] == "spearman" else (0 <= value <= 1)

    columns, rows = read_csv(report / "faithfulness.csv")
    assert columns == ["checkpoint", "order", "n_images", "deletion_auc", "deletion_low", "deletion_high",
                       "insertion_auc", "insertion_low", "insertion_high"] == FAITHFULNESS_COLUMNS
    orders = [r["order"] for r in rows]
    assert orders == ([f"mask:{m}:{r}" for m in MODULES for r in ("mean", "class_weighted", "top_channels")]
                      + ["abs_ig", "ig", "grad_cam"] + [f"grad_cam_module:{m}" for m in MODULES]
                      + ["occlusion", "random_pixel"] + [f"random_smooth:{m}" for m in MODULES])
    for r in rows:
        for curve in ("deletion", "insertion"):
            auc, low, high = (float(r[f"{curve}_{k}"]) for k in ("auc", "low", "high"))
            assert 0 <= low <= auc <= high <= 1
    impute_columns, impute_rows = read_csv(report / "faithfulness_impute.csv")
    assert impute_columns == FAITHFULNESS_COLUMNS and [r["order"] for r in impute_rows] == orders

    columns, rows = read_csv(report / "sanity.csv")
    assert columns == ["checkpoint", "randomised_through", "module", "reduction", "spearman_to_original",
                       "ssim_to_original"] == SANITY_COLUMNS
    assert [r["randomised_through"] for r in rows[::9]] == ["stage3", "stage2", "stage1"]
    for r in rows:
        stage_of_module = int(r["module"][5])
        randomised = stage_of_module >= int(r["randomised_through"][5])
        rho, ssim = float(r["spearman_to_original"]), float(r["ssim_to_original"])
        if not randomised and r["reduction"] != "class_weighted":
            # Below the randomised stages the mask is the trained one, exactly (the class
            # weights come from the gradient, which passes through the randomised stages).
            assert rho == 1.0 and ssim == pytest.approx(1.0), r
        if randomised:
            assert rho < 0.999 or ssim < 0.999, r


def test_the_extra_files_hold_both_nulls_reductions_and_causal_tests(report):
    _, rows = read_csv(report / "agreement_nulls.csv")
    assert {r["null"] for r in rows} == {"shuffle", "smooth"}
    for r in rows:
        assert float(r["value_low"]) <= float(r["value"]) <= float(r["value_high"])
        assert float(r["p"]) <= float(r["p_holm"]) <= 1
    # agreement.csv shows, per cell, the null whose test is the less significant.
    _, main_rows = read_csv(report / "agreement.csv")
    by_cell = {}
    for r in rows:
        by_cell.setdefault((r["module"], r["reduction"], r["method"], r["metric"]), []).append(r)
    for r in main_rows:
        pair = by_cell[(r["module"], r["reduction"], r["method"], r["metric"])]
        larger = max(pair, key=lambda x: float(x["p"]))
        assert float(r["null_mean"]) == float(larger["null_mean"])
    _, rows = read_csv(report / "reductions.csv")
    assert len(rows) == 9
    for r in rows:
        assert 0 <= float(r["variance_kept"]) <= 1 and 0 <= float(r["peak_on_border"]) <= 1
        assert 0 < float(r["border_chance"]) <= 1
    _, rows = read_csv(report / "causal.csv")
    assert {(r["module"], r["replacement"]) for r in rows} == {(m, k) for m in MODULES
                                                                for k in ("dataset_mean", "one", "other_image")}
    _, rows = read_csv(report / "sanity_agreement.csv")
    assert {r["randomised_through"] for r in rows} == {"stage1", "stage2", "stage3"}
    _, rows = read_csv(report / "metrics.csv")
    assert [r["file"] for r in rows] == ["green/photo 0.png", "green/photo 1.png", "red/photo 0.png",
                                         "red/photo 1.png"]
    assert all(r["true_label"] in CLASSES and r["predicted_label"] in CLASSES for r in rows)
    assert sorted(p.name for p in report.glob("*.png")) == ["green__photo_0.png", "green__photo_1.png",
                                                             "red__photo_0.png", "red__photo_1.png"]


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_the_same_files(tmp_path, report, checkpoint):
    images = image_tree(tmp_path / "images")
    out = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "resattn.report", "--checkpoint", str(checkpoint), "--images", str(images),
                           "--out", str(out), *FAST],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(p.name for p in out.glob("*.csv"))
    assert written == sorted(p.name for p in report.glob("*.csv"))
    for name in written:
        assert (out / name).read_text() == (report / name).read_text(), name
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in report.glob("*.png"))
    assert '"processes": 2' in (out / "report.json").read_text()


def test_model_without_masks_gets_attributions_and_random_orders_only(tmp_path):
    model = resattn.create_model("attention56_cifar", attention="none", width=0.125, num_classes=2).eval()
    ckpt = save_checkpoint(tmp_path / "plain", model, model_card(model, classes=["a", "b"], input_size=32))
    generated_images(tmp_path / "images", 2)
    assert main(["--checkpoint", str(ckpt), "--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                 "--no-figures", *FAST]) == 0
    columns, rows = read_csv(tmp_path / "out" / "agreement.csv")
    assert columns == AGREEMENT_COLUMNS and rows == []
    _, rows = read_csv(tmp_path / "out" / "faithfulness.csv")
    assert [r["order"] for r in rows] == ["abs_ig", "ig", "grad_cam", "occlusion", "random_pixel",
                                          "random_smooth:stage1.1", "random_smooth:stage2.1", "random_smooth:stage3.1"]


@pytest.mark.parametrize("case", ["bad checkpoint", "missing images", "bad steps", "bad fill", "missing argument"])
def test_bad_inputs_exit_2_with_one_line(tmp_path, checkpoint, capsys, case):
    generated_images(tmp_path / "images", 1)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    base = ["--checkpoint", str(checkpoint), "--images", str(tmp_path / "images"), "--out", str(tmp_path)]
    args = {
        "bad checkpoint": ["--checkpoint", str(junk), "--images", str(tmp_path / "images"), "--out", str(tmp_path)],
        "missing images": ["--checkpoint", str(checkpoint), "--images", str(tmp_path / "none"), "--out", str(tmp_path)],
        "bad steps": base + ["--steps", "0"],
        "bad fill": base + ["--fills", "blur,paint"],
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
