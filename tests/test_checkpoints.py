"""Checkpoints: exact round trips, every way of naming a checkpoint, the card stored in the
weights, .pt files read without unpickling code, and a clear CheckpointError (touching
nothing else) for every kind of bad file."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLASSES, build_tiny, peak_rss_during, toy_card
from safetensors.torch import load_file, save_file

import resattn
from resattn import CheckpointError
from resattn.checkpoints import list_checkpoints, read_card


def logits_of(model, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return model(x)


def sibling(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


def folder_state(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder (hidden ones included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def edit_card(stem: Path, **changes) -> None:
    """Change fields of the .json card (the safetensors copy stays as saved)."""
    path = sibling(stem, ".json")
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


def assert_sentence(exc: BaseException) -> None:
    message = str(exc).strip()
    assert message and message.endswith("."), message


# ------------------------------------------------------------------ round trips

def test_round_trip_gives_identical_logits_and_card(saved_checkpoint):
    stem, original, card = saved_checkpoint
    model, loaded_card = resattn.load_checkpoint(stem)
    assert loaded_card == card
    assert not model.training
    assert (model.arch, model.attention, model.residual, model.width) == ("attention56_cifar", "mixed", "arl", 0.125)
    assert torch.equal(logits_of(model), logits_of(original))
    saved, loaded = original.state_dict(), model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


@pytest.mark.parametrize("attention,residual", [("mixed", "arl"), ("channel", "arl"), ("spatial", "arl"),
                                                ("mixed", "nal"), ("none", "arl")])
def test_every_zoo_configuration_round_trips(attention, residual, tmp_path):
    """The card's attention type and residual mode are what the loaded network computes: a
    NAL checkpoint must not come back as ARL (the weights are the same shape, so only the
    logits can tell)."""
    original = build_tiny(attention=attention, residual=residual, seed=4)
    resattn.save_checkpoint(tmp_path / "ckpt", original, toy_card(original))
    model, _ = resattn.load_checkpoint(tmp_path / "ckpt")
    assert (model.attention, model.residual) == (attention, residual)
    assert torch.equal(logits_of(model), logits_of(original))


@pytest.mark.parametrize("how", ["stem", "str", "json", "safetensors", "safetensors-str"])
def test_load_by_stem_json_or_safetensors_path(how, saved_checkpoint):
    stem, original, card = saved_checkpoint
    path = {"stem": stem, "str": str(stem), "json": sibling(stem, ".json"),
            "safetensors": sibling(stem, ".safetensors"), "safetensors-str": str(sibling(stem, ".safetensors"))}[how]
    model, loaded_card = resattn.load_checkpoint(path, device="cpu")
    assert loaded_card == card
    assert torch.equal(logits_of(model, 1), logits_of(original, 1))
    assert read_card(path) == card


def test_card_in_the_weights_is_used_when_the_json_is_missing(checkpoint_copy, saved_checkpoint):
    _, original, card = saved_checkpoint
    sibling(checkpoint_copy, ".json").unlink()
    model, loaded_card = resattn.load_checkpoint(checkpoint_copy)
    assert loaded_card == card
    assert torch.equal(logits_of(model), logits_of(original))
    assert list_checkpoints(checkpoint_copy.parent) == [(checkpoint_copy, card)]


@pytest.mark.parametrize("name", ["toy_w0.125", "attention56.mixed.arl", "with space"])
def test_names_with_dots_and_spaces(name, tmp_path):
    model = build_tiny(seed=4)
    card = toy_card(model)
    stem = tmp_path / name
    weights = resattn.save_checkpoint(stem, model, card)
    assert weights == sibling(stem, ".safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name + ".json", name + ".safetensors"])
    for path in (stem, sibling(stem, ".json"), sibling(stem, ".safetensors")):
        loaded, loaded_card = resattn.load_checkpoint(path)
        assert loaded_card == card and torch.equal(logits_of(loaded), logits_of(model))
    assert list_checkpoints(tmp_path) == [(stem, card)]


def test_json_card_is_what_save_wrote(saved_checkpoint):
    stem, _, card = saved_checkpoint
    assert json.loads(sibling(stem, ".json").read_text()) == card
    assert read_card(stem)["classes"] == TINY_CLASSES


def test_saving_again_replaces_atomically(checkpoint_copy):
    other = build_tiny(seed=9)
    card = toy_card(other)
    card["weights"] = "second save"
    resattn.save_checkpoint(checkpoint_copy, other, card)
    files = sorted(p.name for p in checkpoint_copy.parent.iterdir())
    assert files == [checkpoint_copy.name + ".json", checkpoint_copy.name + ".safetensors"]  # no temp files
    model, loaded_card = resattn.load_checkpoint(checkpoint_copy)
    assert loaded_card["weights"] == "second save"
    assert torch.equal(logits_of(model), logits_of(other))


# ------------------------------------------------------------------ .pt files

def test_pt_state_dict_with_json_card_loads(saved_checkpoint, tmp_path):
    _, original, card = saved_checkpoint
    torch.save(original.state_dict(), tmp_path / "plain.pt")
    (tmp_path / "plain.json").write_text(json.dumps(card))
    model, loaded_card = resattn.load_checkpoint(tmp_path / "plain.pt")
    assert loaded_card == card
    assert torch.equal(logits_of(model), logits_of(original))


def test_pt_with_embedded_card_loads(saved_checkpoint, tmp_path):
    _, original, card = saved_checkpoint
    torch.save({"state_dict": original.state_dict(), "card": card}, tmp_path / "bundle.pth")
    model, loaded_card = resattn.load_checkpoint(tmp_path / "bundle.pth")
    assert loaded_card == card
    assert torch.equal(logits_of(model), logits_of(original))


def test_pt_without_a_card_is_refused(saved_checkpoint, tmp_path):
    _, original, _ = saved_checkpoint
    torch.save(original.state_dict(), tmp_path / "nocard.pt")
    with pytest.raises(CheckpointError, match="no model card") as info:
        resattn.load_checkpoint(tmp_path / "nocard.pt")
    assert_sentence(info.value)


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle", "pickle-named-safetensors"])
def test_hostile_pickle_is_refused_without_running(container, saved_checkpoint, tmp_path, reliability):
    _, original, card = saved_checkpoint
    marker = tmp_path / "pwned"
    if container == "torch-zip":
        path = tmp_path / "evil.pt"
        torch.save({"state_dict": original.state_dict(), "extra": Payload(marker)}, path)
    elif container == "raw-pickle":
        path = tmp_path / "evil.pt"
        path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    else:
        path = tmp_path / "evil.safetensors"
        torch.save(Payload(marker), path)
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError) as info:
        resattn.load_checkpoint(path)
    reliability("checkpoints", f"pickle whose payload writes a file ({container})",
                "CheckpointError, payload never runs",
                f"CheckpointError: {info.value}; payload file {'WRITTEN' if marker.exists() else 'not written'}")
    assert_sentence(info.value)
    assert not marker.exists()
    if container == "torch-zip":
        # The payload is live: an unsafe load would have run it.
        torch.load(path, weights_only=False)
        assert marker.exists()


# ------------------------------------------------------------------ bad files

def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def huge_header_file(path: Path, card: dict) -> None:
    """A safetensors header declaring a 4 TB tensor whose data would lie beyond the file."""
    header = {"__metadata__": {"card": json.dumps(card)},
              "fc.weight": {"dtype": "F32", "shape": [100000, 100000, 100], "data_offsets": [0, 4 * 10 ** 12]}}
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 64)


BAD_FILES = {
    "truncated-weights": lambda stem, card: truncate(sibling(stem, ".safetensors")),
    "truncated-weights-no-json": lambda stem, card: (truncate(sibling(stem, ".safetensors")),
                                                     sibling(stem, ".json").unlink()),
    "header-only": lambda stem, card: truncate(sibling(stem, ".safetensors"), 0.001),
    "empty-weights": lambda stem, card: sibling(stem, ".safetensors").write_bytes(b""),
    "huge-header-length": lambda stem, card: sibling(stem, ".safetensors").write_bytes(
        struct.pack("<Q", 2 ** 62) + b"{}"),
    "huge-tensor": lambda stem, card: (huge_header_file(sibling(stem, ".safetensors"), card),
                                       sibling(stem, ".json").unlink()),
    "huge-tensor-with-json": lambda stem, card: huge_header_file(sibling(stem, ".safetensors"), card),
    "weights-missing": lambda stem, card: sibling(stem, ".safetensors").unlink(),
    "json-not-json": lambda stem, card: sibling(stem, ".json").write_text("{arch: attention56,"),
    "json-not-utf8": lambda stem, card: sibling(stem, ".json").write_bytes(b"\xff\xfe\x00garbage\x80"),
    "json-a-list": lambda stem, card: sibling(stem, ".json").write_text("[1, 2, 3]"),
    "json-deeply-nested": lambda stem, card: sibling(stem, ".json").write_text("[" * 100000 + "]" * 100000),
    "json-missing-keys": lambda stem, card: sibling(stem, ".json").write_text(json.dumps({"arch": "attention56"})),
    "unknown-arch": lambda stem, card: edit_card(stem, arch="attention57"),
    "unknown-attention": lambda stem, card: edit_card(stem, attention="softmax"),
    "unknown-residual": lambda stem, card: edit_card(stem, residual="dense"),
    "wrong-width": lambda stem, card: edit_card(stem, width=0.25),
    "wrong-attention": lambda stem, card: edit_card(stem, attention="none"),
    "wrong-arch": lambda stem, card: edit_card(stem, arch="attention92_cifar"),
    "wrong-class-count": lambda stem, card: edit_card(stem, classes=TINY_CLASSES + ["extra"]),
    "empty-classes": lambda stem, card: edit_card(stem, classes=[]),
    "classes-not-names": lambda stem, card: edit_card(stem, classes=[1, 2, 3, 4]),
    "width-string": lambda stem, card: edit_card(stem, width="wide"),
    "width-negative": lambda stem, card: edit_card(stem, width=-0.125),
    "width-enormous": lambda stem, card: edit_card(stem, width=1e9),
    "width-infinite": lambda stem, card: sibling(stem, ".json").write_text(
        sibling(stem, ".json").read_text().replace('"width": 0.125', '"width": Infinity')),
    "width-bool": lambda stem, card: edit_card(stem, width=True),
    "input-size-enormous": lambda stem, card: edit_card(stem, input_size=10 ** 9),
    "mean-wrong-length": lambda stem, card: edit_card(stem, mean=[0.5, 0.5]),
    "std-zero": lambda stem, card: edit_card(stem, std=[0.2, 0.0, 0.2]),
    "weights-renamed": lambda stem, card: save_file(
        {"x" + k: v for k, v in load_file(str(sibling(stem, ".safetensors"))).items()},
        str(sibling(stem, ".safetensors"))),
    "weights-missing-a-tensor": lambda stem, card: save_file(
        {k: v for k, v in load_file(str(sibling(stem, ".safetensors"))).items() if k != "fc.bias"},
        str(sibling(stem, ".safetensors"))),
    "weights-not-safetensors": lambda stem, card: sibling(stem, ".safetensors").write_bytes(os.urandom(4096)),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_checkpoint_raises_checkpoint_error_and_touches_nothing(kind, saved_checkpoint, tmp_path, reliability):
    folder = tmp_path / "zoo"
    folder.mkdir()
    good_stem, _, card = saved_checkpoint
    for suffix in (".safetensors", ".json"):
        shutil.copy2(sibling(good_stem, suffix), folder / ("good" + suffix))
        shutil.copy2(sibling(good_stem, suffix), folder / ("bad" + suffix))
    (folder / "notes.txt").write_text("other files must stay as they are\n")
    bad = folder / "bad"
    BAD_FILES[kind](bad, card)
    before = folder_state(folder)
    start = time.perf_counter()
    messages = []

    def load_all() -> None:
        for path in (bad, sibling(bad, ".safetensors"), sibling(bad, ".json")):
            with pytest.raises(CheckpointError) as info:
                resattn.load_checkpoint(path)
            assert_sentence(info.value)
            messages.append(str(info.value))

    _, grown = peak_rss_during(load_all)  # the peak of these loads, not of the whole session
    seconds, grown = time.perf_counter() - start, grown // 1024  # KiB
    untouched = folder_state(folder) == before
    reliability("checkpoints", kind.replace("-", " "), "CheckpointError; the other files untouched",
                f"CheckpointError: {messages[0]} ({seconds:.2f} s, peak RSS +{grown // 1024} MiB; folder "
                f"{'untouched' if untouched else 'CHANGED'})")
    assert seconds < 20
    assert grown < 512 * 1024  # < 512 MiB
    assert untouched
    # The good checkpoint beside it still loads, and the listing shows it.
    listed = [stem.name for stem, _ in list_checkpoints(folder)]
    assert "good" in listed
    resattn.load_checkpoint(folder / "good")


def test_missing_checkpoint(tmp_path):
    for path in (tmp_path / "nothing", tmp_path / "nothing.safetensors", tmp_path / "nothing.json",
                 tmp_path / "nothing.pt", tmp_path / "nothing.pth"):
        with pytest.raises(CheckpointError) as info:
            resattn.load_checkpoint(path)
        assert_sentence(info.value)
        assert "nothing" in str(info.value)


def test_wrong_width_names_the_mismatch(checkpoint_copy):
    edit_card(checkpoint_copy, width=0.25)
    with pytest.raises(CheckpointError, match="do not fit") as info:
        resattn.load_checkpoint(checkpoint_copy)
    assert "width 0.25" in str(info.value) and "of another shape" in str(info.value)


def test_card_only_listing_skips_bad_entries(saved_checkpoint, tmp_path):
    _, _, card = saved_checkpoint
    good_stem = saved_checkpoint[0]
    names = ["a_good", "b_truncated", "c_corrupt_json", "d_unknown_arch", "e_good", "f_no_card"]
    for name in names:
        for suffix in (".safetensors", ".json"):
            shutil.copy2(sibling(good_stem, suffix), tmp_path / (name + suffix))
    truncate(tmp_path / "b_truncated.safetensors")
    (tmp_path / "b_truncated.json").unlink()
    (tmp_path / "c_corrupt_json.json").write_text("{")
    edit_card(tmp_path / "d_unknown_arch", arch="resnet50")
    (tmp_path / "f_no_card.json").unlink()
    save_file(load_file(str(tmp_path / "f_no_card.safetensors")), str(tmp_path / "f_no_card.safetensors"))
    (tmp_path / "orphan.json").write_text(json.dumps(card))  # a card without weights is not listed
    listed = list_checkpoints(tmp_path)
    assert [(stem.name, c) for stem, c in listed] == [("a_good", card), ("e_good", card)]
    assert list_checkpoints(tmp_path / "does-not-exist") == []


def test_huge_declared_tensor_is_refused_quickly(tmp_path, saved_checkpoint):
    _, _, card = saved_checkpoint
    path = tmp_path / "huge.safetensors"
    huge_header_file(path, card)
    assert path.stat().st_size < 10_000
    start = time.perf_counter()

    def load() -> None:
        with pytest.raises(CheckpointError, match="not a readable safetensors file"):
            resattn.load_checkpoint(path)

    _, peak = peak_rss_during(load)
    assert time.perf_counter() - start < 5
    assert peak < 256 * 2**20


def test_read_card_needs_no_weights(saved_checkpoint, tmp_path):
    _, _, card = saved_checkpoint
    (tmp_path / "cardonly.json").write_text(json.dumps(card))
    assert read_card(tmp_path / "cardonly") == card
    with pytest.raises(CheckpointError, match="No weights"):
        resattn.load_checkpoint(tmp_path / "cardonly")


# ------------------------------------------------------------------ the zoo tables

def test_zoo_tables_are_read_from_the_cards(saved_checkpoint, tmp_path):
    from resattn import zoo

    stem, model, card = saved_checkpoint
    for suffix in (".safetensors", ".json"):
        shutil.copy2(sibling(stem, suffix), tmp_path / ("toy" + suffix))
    other = dict(card, metrics={"val_top1": 61.5, "val_per_class_top1": [10.0, 20.0, 30.0, 40.0]})
    extra = tmp_path / "extra" / "toy_seed1.json"
    extra.parent.mkdir()
    extra.write_text(json.dumps(other))
    summary = zoo.table(tmp_path).splitlines()
    params = sum(p.numel() for p in model.parameters())
    assert len(summary) == 3 and summary[2].startswith("| toy | mixed | arl |")
    assert f"{params / 1e6:.2f} M" in summary[2] and "25.00 %" in summary[2]
    per_class = zoo.per_class_table(tmp_path, [extra]).splitlines()
    assert per_class[0] == "| class | toy | toy_seed1 |"
    assert per_class[2] == f"| {TINY_CLASSES[0]} | 25.0 | 10.0 |"
    assert per_class[-1] == "| **all** | **25.00** | **61.50** |"
