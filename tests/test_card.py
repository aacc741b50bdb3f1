"""resattn.card.ModelCard: the typed card that load_checkpoint validates once. Every shipped
card round-trips to its file byte for byte; a broken card is refused with a sentence naming
the key; the card's preprocess is, tensor for tensor, what resattn.data.preprocess computed
before the card owned it (that function is gone: the card is the only path); a plain dict card still saves."""
from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, build_tiny, toy_card
from PIL import Image
from torchvision.transforms import v2

import resattn
from resattn import CheckpointError, ModelCard
from resattn.card import IMAGENET_MEAN, IMAGENET_STD, as_card
from resattn.checkpoints import read_card

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "checkpoints").rglob("*.json"))
MEAN, STD = [0.3, 0.5, 0.7], [0.2, 0.25, 0.3]  # not ImageNet's: a card's own values must be used


def old_preprocess(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """resattn.data.preprocess as it was before the card owned preprocessing (commit 13ae7ba)."""
    x = v2.functional.pil_to_tensor(image.convert("RGB"))
    x = v2.functional.resize(x, [size, size], antialias=True)
    x = v2.functional.to_dtype(x, torch.float32, scale=True)
    return v2.functional.normalize(x, list(mean), list(std)).unsqueeze(0)


def photo(height: int = 61, width: int = 97, seed: int = 0) -> Image.Image:
    """A generated, non-square photo-like image: smooth gradients plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=-1) * 200
    return Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8))


def tiny_card(**changes) -> dict:
    card = {"arch": "attention56_cifar", "attention": "mixed", "residual": "arl", "width": 0.125,
            "classes": list(TINY_CLASSES), "mean": MEAN, "std": STD, "input_size": 32}
    card.update(changes)
    return card


# ------------------------------------------------------------------ the file keeps its keys

@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_card_round_trips_byte_for_byte(path):
    text = path.read_text()
    raw = json.loads(text)
    card = read_card(path)
    assert isinstance(card, ModelCard)
    assert card.to_dict() == raw and list(card.to_dict()) == list(raw)  # same keys, same order
    assert json.dumps(card.to_dict(), indent=2) + "\n" == text  # how save_checkpoint writes it
    # the Mapping view is the file, too
    assert dict(card) == raw and card == raw and list(card) == list(raw)
    assert card["classes"] == raw["classes"] and card.get("no such key") is None
    # and the typed fields say what the file says
    assert (card.arch, card.attention, card.residual, card.width) == tuple(raw[k] for k in
                                                                           ("arch", "attention", "residual", "width"))
    assert card.classes == tuple(raw["classes"]) and card.num_classes == len(raw["classes"])
    assert card.input_size == raw["input_size"] and list(card.mean) == raw["mean"] and list(card.std) == raw["std"]
    assert card.val_top1 == raw["metrics"]["val_top1"] and card.command == raw["recipe"]["command"]
    assert card.seed == raw["recipe"]["seed"]


def test_shipped_cards_are_found():
    assert len(SHIPPED) >= 5


def test_a_card_with_extra_keys_nulls_and_no_input_size_round_trips(tmp_path):
    raw = {"note": {"nested": [1, 2.5, None]}, **tiny_card(), "mean": None, "weights": "test", "train_size": None}
    del raw["input_size"]
    card = ModelCard.from_dict(raw)
    assert card.to_dict() == raw and list(card.to_dict()) == list(raw)
    assert card.mean == IMAGENET_MEAN and card.std == tuple(STD)  # a null mean: the default, written back as null
    assert card.input_size == 32  # attention56_cifar's own input size, not written back
    assert "input_size" not in card and card.extra["note"]["nested"] == (1, 2.5, None)
    model = build_tiny()
    resattn.save_checkpoint(tmp_path / "extra", model, card)
    assert json.loads((tmp_path / "extra.json").read_text()) == raw
    _, loaded = resattn.load_checkpoint(tmp_path / "extra")
    assert loaded == raw and loaded.to_dict() == raw


def test_the_card_is_read_only():
    card = ModelCard.from_dict(tiny_card(metrics={"val_top1": 50.0, "val_per_class_top1": [50.0] * 4}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.input_size = 64
    with pytest.raises(TypeError):
        card["input_size"] = 64
    with pytest.raises(TypeError):
        card.metrics["val_top1"] = 99.0
    copy = card["metrics"]
    copy["val_per_class_top1"].append(1.0)  # a copy: the card does not change
    assert card["metrics"]["val_per_class_top1"] == [50.0] * 4


def test_pickle_and_replace_keep_the_card():
    card = ModelCard.from_dict(tiny_card(extra_field=[1, {"a": 2}]))
    again = pickle.loads(pickle.dumps(card))
    assert again == card and again.to_dict() == card.to_dict() and again.input_size == 32
    bigger = card.replace(input_size=64)
    assert bigger.input_size == 64 and bigger["input_size"] == 64 and card.input_size == 32
    with pytest.raises(CheckpointError, match="input_size"):
        card.replace(input_size=0)


def test_a_card_built_from_fields_writes_what_it_holds():
    card = ModelCard(arch="attention56_cifar", attention="channel", residual="nal", width=0.25,
                     classes=["a", "b"], input_size=48)
    assert card.to_dict() == {"arch": "attention56_cifar", "attention": "channel", "residual": "nal", "width": 0.25,
                              "classes": ["a", "b"], "input_size": 48}
    assert ModelCard.from_dict(card.to_dict()) == card and card.mean == IMAGENET_MEAN


# ------------------------------------------------------------------ validated once, clearly

@pytest.mark.parametrize("change,words", [
    ({"arch": None}, "lacks arch"),
    ({"classes": []}, "'classes' must be a non-empty list"),
    ({"width": "wide"}, "width 'wide'"),
    ({"input_size": 12.5}, "input_size 12.5"),
    ({"mean": [0.5, 0.5]}, "mean [0.5, 0.5]"),
    ({"std": [0.2, 0.0, 0.2]}, "std [0.2, 0.0, 0.2]"),
    ({"train_size": "big"}, "train_size 'big'"),
    ({"metrics": [1, 2]}, "metrics [1, 2]"),
    ({"weights": 3}, "weights 3"),
    ({"attention": "sideways"}, "attention 'sideways'"),
])
def test_a_broken_card_is_refused_with_a_sentence_naming_the_key(checkpoint_copy, change, words):
    stem = checkpoint_copy
    card = json.loads(stem.with_name(stem.name + ".json").read_text())
    card.update(change)
    card = {k: v for k, v in card.items() if v is not None}
    stem.with_name(stem.name + ".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError) as info:
        resattn.load_checkpoint(stem)
    message = str(info.value)
    assert words in message and message.strip().endswith("."), message
    assert str(stem) in message  # names the file


def test_a_dict_card_is_validated_where_one_is_accepted():
    with pytest.raises(CheckpointError, match="lacks classes"):
        as_card({k: v for k, v in tiny_card().items() if k != "classes"})
    assert as_card(tiny_card()) == tiny_card()


def test_a_plain_dict_card_still_saves_and_loads_as_a_model_card(tmp_path):
    model = build_tiny(seed=1)
    card = toy_card(model)
    assert type(card) is dict
    resattn.save_checkpoint(tmp_path / "plain", model, card)
    loaded_model, loaded = resattn.load_checkpoint(tmp_path / "plain")
    assert isinstance(loaded, ModelCard) and loaded == card
    # saving the ModelCard again writes the same bytes
    resattn.save_checkpoint(tmp_path / "again", loaded_model, loaded)
    assert (tmp_path / "again.json").read_text() == (tmp_path / "plain.json").read_text()


# ------------------------------------------------------------------ the one way to an input

@pytest.mark.parametrize("size,shape", [(32, (61, 97)), (48, (48, 48)), (64, (40, 33))])
def test_preprocess_equals_the_old_path_for_a_generated_photo(size, shape):
    card = ModelCard.from_dict(tiny_card(input_size=size))
    image = photo(*shape, seed=size)
    x = card.preprocess(image)
    assert x.shape == (1, 3, size, size) and x.dtype == torch.float32
    assert torch.equal(x, old_preprocess(image, size, MEAN, STD))  # bit for bit
    # the pixels the network sees, normalised, are the input
    pixels = card.pixels(image)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, size, size)
    by_hand = (pixels.float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(x[0], by_hand, rtol=0, atol=1e-5)


def test_preprocess_uses_the_card_and_not_imagenet():
    image = photo(seed=3)
    ours = ModelCard.from_dict(tiny_card()).preprocess(image)
    imagenet = ModelCard.from_dict(tiny_card(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))).preprocess(image)
    assert not torch.allclose(ours, imagenet)
    assert ModelCard.from_dict(tiny_card(input_size=16)).preprocess(image).shape == (1, 3, 16, 16)


def test_the_batch_and_dataset_paths_are_the_same_maths():
    card = ModelCard.from_dict(tiny_card(input_size=40))
    images = [photo(56, 56, seed=s) for s in range(3)]
    batch = torch.stack([torch.from_numpy(np.array(im)) for im in images])  # uint8 N x H x W x 3
    one_by_one = torch.cat([card.preprocess(im) for im in images])
    assert torch.equal(card.preprocess_batch(batch), one_by_one)
    assert torch.equal(torch.stack([card.transform()(im.permute(2, 0, 1)) for im in batch]), one_by_one)


def test_preprocess_refuses_what_is_not_an_image():
    with pytest.raises(TypeError, match="PIL image"):
        ModelCard.from_dict(tiny_card()).preprocess(np.zeros((8, 8, 3), np.uint8))


# ------------------------------------------------------------------ no second implementation

IMAGE_OPS = re.compile(r"\b(?:v2|TF|functional|transforms)\.(?:Resize|Normalize|normalize|resize|pil_to_tensor|"
                       r"to_dtype|ToDtype|ToImage|ToTensor|to_tensor|CenterCrop|center_crop)\b")
SIZE_READS = re.compile(r"""\.get\(\s*["']input_size["']|\[\s*["']input_size["']\s*\]|\bDEFAULT_INPUT_SIZE\b""")


def sources(*skip: str) -> dict[str, str]:
    files = [ROOT / "app.py", *(p for folder in ("resattn", "ui", "pages") for p in (ROOT / folder).rglob("*.py"))]
    return {str(p.relative_to(ROOT)): p.read_text() for p in files
            if p.is_file() and str(p.relative_to(ROOT)) not in skip}


def test_only_resattn_data_resizes_and_normalises_images():
    """The maths of turning pixels into an input lives in resattn/data.py (which the card
    calls); anywhere else a torchvision resize/normalise is a second implementation."""
    found = [f"{path}: {m.group(0)}" for path, text in sources("resattn/data.py").items()
             for m in IMAGE_OPS.finditer(text)]
    assert not found, found
    assert IMAGE_OPS.search("x = v2.functional.resize(x, [s, s])")  # the pattern sees what it must


def test_only_the_card_derives_the_input_size():
    """card.input_size is the input size; no other code reads the key or re-derives its default."""
    found = [f"{path}: {m.group(0)}" for path, text in sources("resattn/card.py").items()
             if not path.startswith("resattn/model/") for m in SIZE_READS.finditer(text)]
    assert not found, found
    assert SIZE_READS.search('size = int(card.get("input_size", 224))')
