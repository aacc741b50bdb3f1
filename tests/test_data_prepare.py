"""`python -m resattn.data prepare`: a small generated archive in the official Imagenette
layout (train/ and val/ of WordNet-id folders under a top folder, a CSV beside them, a
greyscale photo, photos of several aspect ratios) becomes a pack that the library reads
back with readable class names; broken sources get one line on stderr and a non-zero exit."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny
from PIL import Image

import resattn
from resattn import data, pack
from resattn.checkpoints import model_card
from resattn.errors import ResattnError

ROOT = Path(__file__).resolve().parents[1]
WNIDS = ("n01440764", "n03028079", "n03888257")  # tench, church, parachute
NAMES = ["tench", "church", "parachute"]
PER_CLASS = {"train": 3, "val": 2}


def _photo(seed: int, width: int, grey: bool = False) -> bytes:
    """A JPEG whose colour says its class (for the label check) with some noise."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 60, (96, width, 3), dtype=np.uint8)
    array[..., seed % 3] += 150
    image = Image.fromarray(array)
    out = io.BytesIO()
    (image.convert("L") if grey else image).save(out, format="JPEG", quality=95)
    return out.getvalue()


def official_files() -> dict[str, bytes]:
    """path inside the download -> bytes, as imagenette2-160 lays them out."""
    files = {"imagenette2-160/noisy_imagenette.csv": b"path,noisy_labels_0\n"}
    for split, count in PER_CLASS.items():
        for label, wnid in enumerate(WNIDS):
            for i in range(count):
                files[f"imagenette2-160/{split}/{wnid}/{wnid}_{i}.JPEG"] = _photo(
                    label, 96 + 32 * i, grey=(split == "val" and i == 1))
    return files


def write_archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resattn.data", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=120)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return write_archive(tmp_path_factory.mktemp("download") / "imagenette2-160.tgz", official_files())


def test_an_official_archive_round_trips(archive, tmp_path, monkeypatch):
    out = tmp_path / "pack.npz"
    result = run_cli("prepare", str(archive), "--size", "32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256 {sha}" in result.stdout
    assert "prepare" in result.stderr  # the tqdm progress bar
    assert not list(tmp_path.glob("*.partial*"))

    monkeypatch.setenv("RESATTN_DATA", str(out))
    assert data.find_pack() == out
    expected = {name: payload for name, payload in official_files().items() if name.endswith(".JPEG")}
    for split, count in PER_CLASS.items():
        images = data.load_pack(str(out), split)
        assert images.classes == NAMES
        assert images.images.shape == (count * len(WNIDS), 32, 32, 3)
        assert images.labels.tolist() == [c for c in range(len(WNIDS)) for _ in range(count)]
        assert images.names == sorted(n.split("/", 1)[1] for n in expected if f"/{split}/" in n)
        # Each photo is the source photo squashed to 32 x 32: its dominant colour channel is its class.
        for image, label in zip(images.images.numpy(), images.labels.tolist()):
            if image.std(axis=-1).mean() > 5:  # the greyscale one has no dominant channel
                assert int(image.reshape(-1, 3).mean(0).argmax()) == label
    with np.load(out, allow_pickle=False) as pack:
        assert list(pack["wnids"]) == list(WNIDS)
        assert pack["offsets"][-1] == pack["jpeg"].size
        assert list(pack["split"]) == [0] * 9 + [1] * 6


def test_a_folder_gives_the_same_pack_and_evaluate_reads_it(archive, tmp_path):
    folder = tmp_path / "imagenette2-160"
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    from_folder, _, counts = pack.prepare_pack(folder, tmp_path / "from_folder.npz", size=32, progress=False)
    from_archive, _, _ = pack.prepare_pack(archive, tmp_path / "from_archive.npz", size=32, progress=False)
    assert counts == {"train": 9, "val": 6}
    with np.load(from_folder) as a, np.load(from_archive) as b:
        for name in ("jpeg", "offsets", "labels", "split", "wnids", "class_names", "files"):
            assert np.array_equal(a[name], b[name]), name

    # `evaluate` finds the pack through RESATTN_DATA and its class names match a checkpoint's.
    model = build_tiny("attention56_cifar", num_classes=len(NAMES))
    card = model_card(model, classes=NAMES, input_size=32, train_size=32, weights="random weights, for tests",
                      metrics={}, recipe={"command": "tests/test_data_prepare.py", "epochs": 0})
    resattn.save_checkpoint(tmp_path / "toy", model, card)
    result = subprocess.run([sys.executable, "-m", "resattn.evaluate", str(tmp_path / "toy"), "--size", "32"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "RESATTN_DATA": str(from_folder)})
    assert result.returncode == 0, result.stderr
    assert "on 6 val images at 32 px" in result.stdout


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_a_truncated_archive_is_one_line(archive, tmp_path):
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    out = tmp_path / "pack.npz"
    line = _one_line_error(run_cli("prepare", str(cut), "--out", str(out)))
    assert "truncated" in line and "download it again" in line
    assert not out.exists() and not list(tmp_path.glob("*.npz"))


def test_a_wrong_layout_is_one_line(tmp_path):
    files = {f"photos/{i}.jpg": _photo(i, 64) for i in range(4)}  # no train/ and val/
    line = _one_line_error(run_cli("prepare", str(write_archive(tmp_path / "flat.tgz", files)),
                                   "--out", str(tmp_path / "pack.npz")))
    assert "not in the Imagenette layout" in line and "train/" in line
    only_train = {name: payload for name, payload in official_files().items() if "/val/" not in name}
    line = _one_line_error(run_cli("prepare", str(write_archive(tmp_path / "half.tgz", only_train)),
                                   "--out", str(tmp_path / "pack.npz")))
    assert "val/ with 0 class folder(s)" in line


def test_not_an_archive_and_a_missing_source(tmp_path):
    text = tmp_path / "notes.tgz"
    text.write_text("this is not an archive\n" * 50)
    assert "not a tar archive" in _one_line_error(run_cli("prepare", str(text), "--out", str(tmp_path / "p.npz")))
    with pytest.raises(ResattnError, match="No folder or archive"):
        pack.prepare_pack(tmp_path / "nowhere.tgz", tmp_path / "p.npz", progress=False)
    with pytest.raises(ResattnError, match=r"\.npz"):
        pack.prepare_pack(tmp_path, tmp_path / "p.zip", progress=False)


def test_image_folders_named_by_wordnet_id_get_readable_names(tmp_path):
    for wnid in WNIDS[:2]:
        (tmp_path / wnid).mkdir()
        (tmp_path / wnid / "a.jpg").write_bytes(_photo(0, 64))
    (tmp_path / "my_class").mkdir()
    (tmp_path / "my_class" / "b.jpg").write_bytes(_photo(1, 64))
    assert data.load_folder(tmp_path, size=16).classes == ["my_class", "tench", "church"]  # folder order
    assert torch.is_tensor(data.load_folder(tmp_path, size=16).images)
