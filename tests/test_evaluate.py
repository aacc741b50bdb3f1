"""resattn.evaluate, the source of every accuracy in the README and the cards: exact top-1,
per-class accuracy, confusion matrix and per-image rows on a small generated set whose
answers are known in advance, through `evaluate_model` and through the CLI on both input
forms (a pack .npz and an ImageFolder tree).

The "network" is an oracle that reads the answer written into each image (its red level),
so every expected number is counted by hand from CONFUSION below, not computed by the code
under test."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

import resattn.checkpoints
from resattn.data import ImageSet, TensorImageDataset
from resattn.evaluate import evaluate_model, main, metrics_from_confusion

CLASSES = ["apple", "boat", "cloud"]
# Rows: true class, columns: predicted class. 13 images, 9 right: top-1 9/13 = 69.23 %,
# per class 3/4 = 75 %, 2/4 = 50 %, 4/5 = 80 %.
CONFUSION = [[3, 1, 0],
             [0, 2, 2],
             [1, 0, 4]]
TOP1, PER_CLASS = 69.23, [75.0, 50.0, 80.0]
# The images in a fixed, mixed order (not sorted by class), so per-image rows are checked too.
PAIRS = [(t, p) for t, row in enumerate(CONFUSION) for p, n in enumerate(row) for _ in range(n)]
ORDER = [7, 0, 12, 3, 9, 1, 5, 11, 2, 8, 4, 10, 6]
PAIRS = [PAIRS[i] for i in ORDER]
MARGIN = 2.0  # the oracle's winning logit; the others are 0
P_WIN = math.exp(MARGIN) / (math.exp(MARGIN) + len(CLASSES) - 1)
# Not ImageNet's: evaluation must normalise with what the card says.
MEAN, STD = [0.25, 0.5, 0.75], [0.5, 0.25, 0.125]
SIZE = 32


def red_level(prediction: int) -> int:
    return 30 + 40 * prediction


class Oracle(nn.Module):
    """Predicts the class whose red level (30 + 40 k, whole image) the image carries,
    reading the pixels back through the normalisation of its card."""

    def __init__(self, mean=MEAN, std=STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean[0]))
        self.register_buffer("std", torch.tensor(std[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = (x[:, 0] * self.std + self.mean).mean((1, 2)) * 255
        predicted = ((red - 30) / 40).round().long().clamp(0, len(CLASSES) - 1)
        return F.one_hot(predicted, len(CLASSES)).float() * MARGIN


def image_of(prediction: int, seed: int, size: int = 48) -> np.ndarray:
    """A size x size RGB image that the oracle answers `prediction` for: constant red, and
    green/blue noise that must not matter."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    array[..., 0] = red_level(prediction)
    return array


def card(classes=CLASSES) -> dict:
    return {"arch": "attention56_cifar", "attention": "mixed", "residual": "arl", "width": 0.125,
            "classes": list(classes), "mean": MEAN, "std": STD, "input_size": SIZE}


def card_transform() -> v2.Transform:
    """What evaluation should do with card(): resize, scale to [0, 1], the card's mean/std."""
    return v2.Compose([v2.Resize((SIZE, SIZE), antialias=True), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(MEAN, STD)])


def check_result(result: dict) -> None:
    assert result["images"] == len(PAIRS)
    assert result["confusion"] == CONFUSION
    assert result["top1"] == TOP1
    assert result["per_class_top1"] == PER_CLASS


# ----------------------------------------------------------------------------- evaluate_model

@pytest.mark.parametrize("batch_size", [1, 4, 13, 100])
def test_evaluate_model_counts_exactly(batch_size):
    """Any batch size (4 leaves a last batch of 1): the same exact numbers."""
    images = torch.from_numpy(np.stack([image_of(p, seed=i) for i, (_, p) in enumerate(PAIRS)]))
    labels = torch.tensor([t for t, _ in PAIRS])
    data = ImageSet(images, labels, CLASSES, [f"gen/{i}" for i in range(len(PAIRS))])
    loader = DataLoader(TensorImageDataset(data, card_transform()), batch_size=batch_size)
    result = evaluate_model(Oracle(), loader, len(CLASSES), torch.device("cpu"), per_image=True)
    check_result(result)
    assert [row[:3] for row in result["rows"]] == [(i, t, p) for i, (t, p) in enumerate(PAIRS)]
    assert [row[3] for row in result["rows"]] == pytest.approx([P_WIN] * len(PAIRS), abs=1e-6)


def test_evaluate_model_without_per_image_has_no_rows():
    data = ImageSet(torch.from_numpy(np.stack([image_of(1, 0), image_of(2, 1)])), torch.tensor([1, 0]), CLASSES,
                    ["a", "b"])
    loader = DataLoader(TensorImageDataset(data, card_transform()), batch_size=2)
    result = evaluate_model(Oracle(), loader, len(CLASSES), torch.device("cpu"))
    assert "rows" not in result
    assert result["confusion"] == [[0, 0, 1], [0, 1, 0], [0, 0, 0]] and result["top1"] == 50.0
    assert result["per_class_top1"] == [0.0, 100.0, 0.0]  # a class without images counts 0, not NaN


def test_metrics_from_confusion_by_hand():
    result = metrics_from_confusion(torch.tensor(CONFUSION))
    check_result(result)


# ----------------------------------------------------------------------------- the CLI

def write_folder(root: Path) -> list[tuple[str, int, int]]:
    """root/val/<class>/*.png (lossless); also a train/ split, which must not be counted.
    Returns (relative file, label, prediction) in the order ImageFolder reads them."""
    expected = []
    for i, (t, p) in enumerate(PAIRS):
        path = root / "val" / CLASSES[t] / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_of(p, seed=i)).save(path)
        expected.append((f"{CLASSES[t]}/img{i:02d}.png", t, p))
    for t, name in enumerate(CLASSES):
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_of(t, seed=99)).save(root / "train" / name / "x.png")
    return sorted(expected)  # class folders in sorted order, files sorted inside each


def write_pack(path: Path) -> list[tuple[str, int, int]]:
    """A pack in the Imagenette-128 layout: JPEG bytes back to back, offsets, labels, split
    (0 train, 1 val), class names, file names. Val images interleaved with train ones."""
    blobs, labels, split, files, expected = [], [], [], [], []
    for i, (t, p) in enumerate(PAIRS):
        for which in (0, 1):  # a train image before every val image
            buffer = io.BytesIO()
            Image.fromarray(image_of(p if which else (p + 1) % 3, seed=i)).save(buffer, "JPEG", quality=95)
            blobs.append(np.frombuffer(buffer.getvalue(), np.uint8))
            labels.append(t)
            split.append(which)
            files.append(f"{'val' if which else 'train'}/{CLASSES[t]}/{i}.jpg")
        expected.append((files[-1], t, p))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(path, jpeg=np.concatenate(blobs), offsets=offsets, labels=np.array(labels, np.int64),
             split=np.array(split, np.uint8), class_names=np.array(CLASSES), files=np.array(files))
    return expected


@pytest.fixture
def oracle_checkpoint(monkeypatch):
    """`python -m resattn.evaluate` loading the oracle with a card of CLASSES."""
    def load(path, device=None):
        return Oracle().to(device), card()

    monkeypatch.setattr(resattn.checkpoints, "load_checkpoint", load)


@pytest.mark.parametrize("form", ["imagefolder", "pack"])
def test_the_cli_on_both_input_forms(form, tmp_path, oracle_checkpoint, capsys):
    if form == "imagefolder":
        data = tmp_path / "tree"
        expected = write_folder(data)
    else:
        data = tmp_path / "generated-pack.npz"
        expected = write_pack(data)
    out_json, out_csv = tmp_path / "result.json", tmp_path / "predictions.csv"
    code = main(["oracle", "--data", str(data), "--device", "cpu", "--batch-size", "5", "--json", str(out_json),
                 "--predictions", str(out_csv)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"top-1 {TOP1:.2f} % on {len(PAIRS)} val images at {SIZE} px" in printed.out
    result = json.loads(out_json.read_text())
    check_result(result)
    assert (result["split"], result["size"]) == ("val", SIZE)
    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "label", "prediction", "probability"]
    assert [(int(r[0]), int(r[1]), int(r[2])) for r in rows[1:]] == [(i, t, p) for i, (_, t, p) in
                                                                      enumerate(expected)]
    assert [float(r[3]) for r in rows[1:]] == pytest.approx([P_WIN] * len(PAIRS), abs=1e-5)


def test_the_cli_refuses_data_with_other_classes(tmp_path, monkeypatch, capsys):
    write_folder(tmp_path / "tree")
    monkeypatch.setattr(resattn.checkpoints, "load_checkpoint",
                        lambda path, device=None: (Oracle(), card(["apple", "boat", "dog"])))
    code = main(["oracle", "--data", str(tmp_path / "tree"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:") and "classes" in err


def test_preprocessing_by_hand():
    """What every accuracy and every trace starts from: a card's preprocess (the app, the
    README) and the evaluation transform both give (v / 255 - mean) / std with the card's
    mean and std, computed here by hand, and the same tensor for the same image."""
    from resattn.card import as_card
    from resattn.data import eval_transform

    card = as_card({"arch": "attention56", "attention": "mixed", "residual": "arl", "width": 0.25,
                    "classes": ["a", "b"], "input_size": SIZE, "mean": list(MEAN), "std": list(STD)})
    array = np.random.default_rng(7).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)  # already SIZE: no resize
    by_hand = torch.from_numpy(((array / 255.0 - np.array(MEAN)) / np.array(STD)).transpose(2, 0, 1)).float()
    x = card.preprocess(Image.fromarray(array))
    assert x.shape == (1, 3, SIZE, SIZE)
    torch.testing.assert_close(x[0], by_hand, rtol=0, atol=1e-5)
    y = eval_transform(SIZE, MEAN, STD)(torch.from_numpy(array).permute(2, 0, 1))
    torch.testing.assert_close(y, x[0], rtol=0, atol=1e-6)


def test_a_named_pack_that_does_not_exist_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    """A typo in --data (or RESATTN_DATA) must not silently evaluate on the default pack."""
    from resattn.data import find_pack
    from resattn.errors import ResattnError

    missing = tmp_path / "typo.npz"
    with pytest.raises(ResattnError, match="typo.npz"):
        find_pack(missing)
    monkeypatch.setenv("RESATTN_DATA", str(missing))
    with pytest.raises(ResattnError, match="typo.npz"):
        find_pack()


@pytest.mark.parametrize("card_top1, tolerance, expected_code", [
    (TOP1 + 0.4, [], 0),         # within the default 0.5 point
    (TOP1 - 0.6, [], 1),         # outside it, either side
    (TOP1 + 0.6, [], 1),
    (TOP1 + 0.6, ["1.0"], 0),    # a wider tolerance given on the command line
    (TOP1 + 0.2, ["0.1"], 1),    # a narrower one
])
def test_check_card_holds_a_checkpoint_to_its_card(card_top1, tolerance, expected_code, tmp_path, monkeypatch,
                                                   capsys):
    write_pack(tmp_path / "pack.npz")
    monkeypatch.setattr(resattn.checkpoints, "load_checkpoint",
                        lambda path, device=None: (Oracle(), {**card(), "metrics": {"val_top1": card_top1}}))
    code = main(["oracle", "--data", str(tmp_path / "pack.npz"), "--device", "cpu", "--check-card", *tolerance])
    out = capsys.readouterr().out
    assert code == expected_code, out
    verdict = out.strip().splitlines()[-1]
    assert f"card {card_top1:.2f} %, now {TOP1:.2f} % ({TOP1 - card_top1:+.2f} points" in verdict
    assert verdict.endswith("ok" if expected_code == 0 else "MISMATCH")


@pytest.mark.parametrize("extra, fields", [(["--limit", "2"], {"metrics": {"val_top1": TOP1}}), ([], {})])
def test_check_card_refuses_what_it_cannot_compare(extra, fields, tmp_path, monkeypatch, capsys):
    """A partial or resized run is not the card's measurement; a card without val_top1 has none."""
    write_pack(tmp_path / "pack.npz")
    monkeypatch.setattr(resattn.checkpoints, "load_checkpoint",
                        lambda path, device=None: (Oracle(), {**card(), **fields}))
    code = main(["oracle", "--data", str(tmp_path / "pack.npz"), "--device", "cpu", "--check-card", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:")
