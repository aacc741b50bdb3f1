"""Resumable reports: each image's results are saved in OUT/partial/ as soon as the image is
done, so a rerun of the same command after an interruption (a killed session, Ctrl-C, a
crash) analyses only the images still missing, then computes every table over all images.

Layout of OUT/partial/:

  manifest.json        what the saved images belong to: the checkpoint (a hash of its
                       weights and of the card fields that make inputs), the image set (a
                       hash of the sampled names, labels and pixels), every setting that
                       changes an image's results (`--bootstrap` does not: it only enters
                       the tables, computed at the end) and whether figures are drawn.
  image-000042.npz     image 42's ImageRecord (the set-level steps' input), written to a
                       temporary file and renamed, so a file is either whole or absent; the
                       zip's CRC checks it on reading; it names the manifest it belongs to.

A rerun whose manifest differs is refused with one line (which setting differs and what to
do: the same command, `--fresh`, or another `--out`). The folder is removed once the
report's files are written. Files are per image, not per process, so a run may resume with
another number of torchrun processes. No pickle: the record's dicts (str or tuple keys;
arrays, numpy scalars, Python scalars or tuples of them) go to an index in JSON (Python
floats round-trip exactly) and one .npy member per array (dtype kept), so a resumed record
equals the one analysed, bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from ..analysis import study
from ..errors import ResattnError

FOLDER = "partial"
MANIFEST = "manifest.json"
FORMAT = 1  # of the files below; a change makes old partial folders another run
# Settings that only enter the tables computed at the end: a resume may change them.
TABLE_ONLY = ("bootstrap",)
_DICTS = [f.name for f in fields(study.ImageRecord) if f.name not in ("index", "label", "target", "probability",
                                                                       "extras")]


def _sha256(chunks) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def checkpoint_hash(model: torch.nn.Module, card) -> str:
    """The weights (every tensor's name, dtype, shape and bytes) and the card fields that
    make the inputs and name the classes."""
    def chunks():
        for name, tensor in sorted(model.state_dict().items()):
            t = tensor.detach().cpu()
            yield f"{name}|{t.dtype}|{tuple(t.shape)}|".encode()
            yield t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        yield json.dumps({"classes": list(card.classes), "mean": list(card.mean), "std": list(card.std),
                          "input_size": card.input_size}, sort_keys=True).encode()
    return _sha256(chunks())


def images_hash(images) -> str:
    """The sampled set: its file names, labels and pixels, in order."""
    return _sha256([json.dumps(list(images.names)).encode(), images.labels.numpy().tobytes(),
                    images.images.contiguous().numpy().tobytes()])


def manifest(checkpoint_digest: str, images, settings: study.StudySettings, figures: bool) -> dict:
    """What the saved images belong to, compared key by key on a resume: contents, not
    paths or names, so a moved checkpoint or image folder (or another working directory)
    still resumes."""
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()
              if k not in TABLE_ONLY}
    return {"format": FORMAT, "checkpoint_sha256": checkpoint_digest, "n_images": len(images),
            "images_sha256": images_hash(images), "settings": values, "figures": figures}


def _run_id(man: dict) -> str:
    return _sha256([json.dumps(man, sort_keys=True).encode()])[:16]


def _difference(saved: dict, current: dict) -> str:
    """The first differing entry, in words (readable entries before the hashes)."""
    for key in sorted(set(saved) | set(current), key=lambda k: (k.endswith("sha256"), k)):
        a, b = saved.get(key), current.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return _difference(a, b)
        if key.endswith("sha256"):
            return f"the {key.removesuffix('_sha256')} differs"
        return f"{key} was {a!r}, now {b!r}"
    return "they differ"


# --------------------------------------------------------------------------- one record

def _encode_key(key):
    return list(key) if isinstance(key, tuple) else key


def _decode_key(key):
    return tuple(key) if isinstance(key, list) else key


def _encode_value(value, arrays: dict):
    if isinstance(value, (np.ndarray, np.generic)):
        name = f"a{len(arrays)}"
        arrays[name] = np.asarray(value)
        return {"array": name, "scalar": isinstance(value, np.generic)}
    if isinstance(value, tuple):
        return {"tuple": [_encode_value(v, arrays) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot save a {type(value).__name__} in a partial record")


def _decode_value(encoded, arrays):
    if "array" in encoded:
        array = arrays[encoded["array"]]
        return array[()] if encoded["scalar"] else array
    if "tuple" in encoded:
        return tuple(_decode_value(v, arrays) for v in encoded["tuple"])
    return encoded["value"]


def encode_record(record: study.ImageRecord, run: str = "") -> dict[str, np.ndarray]:
    """The npz members of one record (figure extras are not kept)."""
    arrays: dict[str, np.ndarray] = {}
    index = {"run": run, "index": record.index, "label": record.label, "target": record.target,
             "probability": _encode_value(record.probability, arrays),
             "dicts": {name: [[_encode_key(k), _encode_value(v, arrays)] for k, v in getattr(record, name).items()]
                       for name in _DICTS}}
    # The index as UTF-8 bytes (a numpy str array would take 4 bytes a character).
    return {"index": np.frombuffer(json.dumps(index, allow_nan=True).encode(), dtype=np.uint8), **arrays}


def decode_record(members) -> tuple[study.ImageRecord, str]:
    """(the record, the run it names) from npz members (`np.load(..., allow_pickle=False)`)."""
    index = json.loads(members["index"].tobytes().decode())
    arrays = {name: members[name] for name in members if name != "index"}
    dicts = {name: {_decode_key(k): _decode_value(v, arrays) for k, v in index["dicts"][name]} for name in _DICTS}
    record = study.ImageRecord(index=index["index"], label=index["label"], target=index["target"],
                               probability=_decode_value(index["probability"], arrays), **dicts)
    return record, index["run"]


# --------------------------------------------------------------------------- the folder

class PartialResults:
    """OUT/partial/ for one run: `prepare` (rank 0: start or check the manifest), `check`
    (every rank), then `done`, `load`, `save` per image, and `remove` at the end."""

    def __init__(self, out: Path, current: dict) -> None:
        self.folder = Path(out) / FOLDER
        self.current = current
        self.run = _run_id(current)

    def path(self, index: int) -> Path:
        return self.folder / f"image-{index:06d}.npz"

    def prepare(self, fresh: bool) -> None:
        """Rank 0, before the others look: with `fresh` discard any saved images; write the
        manifest unless one is there (a resume; `check` compares it)."""
        if fresh and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".*.tmp"):  # a write that a kill interrupted
            stale.unlink(missing_ok=True)
        target = self.folder / MANIFEST
        if not target.exists():
            _atomic(target, lambda f: f.write(json.dumps(self.current, indent=2).encode() + b"\n"))

    def check(self) -> None:
        """Every rank: refuse to resume images saved by another run."""
        try:
            saved = json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError):
            saved = None
        if saved != self.current:
            why = _difference(saved, self.current) if isinstance(saved, dict) else "its manifest is unreadable"
            raise ResattnError(f"{self.folder} holds the saved images of another report ({why}): rerun with the "
                               "same settings to resume it, pass --fresh to discard it, or choose another --out.")

    def done(self, indices) -> list[int]:
        """Those of `indices` whose record is saved."""
        return [int(i) for i in indices if self.path(int(i)).is_file()]

    def load(self, index: int) -> study.ImageRecord:
        path = self.path(index)
        try:
            with np.load(path, allow_pickle=False) as members:
                record, run = decode_record(members)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ResattnError(f"{path} is damaged ({exc}); delete it (that image is analysed again) and rerun.") \
                from None
        if run != self.run or record.index != index:
            raise ResattnError(f"{path} belongs to another report; pass --fresh to discard {self.folder}, or choose "
                               "another --out.")
        return record

    def save(self, record: study.ImageRecord) -> None:
        members = encode_record(record, self.run)
        _atomic(self.path(record.index), lambda f: np.savez_compressed(f, **members))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _atomic(target: Path, write) -> None:
    """Write to a temporary file beside `target`, flush it to disk, then rename it over
    `target`: a kill leaves the old file or the new one, never half of one."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
