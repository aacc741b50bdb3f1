"""Build a pack from the official Imagenette download: `python -m resattn.data prepare SRC
--size 128 --out PACK.npz` calls `prepare_pack`.

The pack is the format of the shipped Imagenette-128 file (../shared/data/README.md): every
image a square JPEG, concatenated, with offsets, labels, split flags, class names and source
paths. resattn.data reads it; this module only writes it, from a folder or a .tgz in the
official layout (train/ and val/ of WordNet-id folders), streaming the archive without
unpacking it.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .data import IMAGE_SUFFIXES, PACK_JPEG_QUALITY, SPLITS, class_name
from .errors import ResattnError


@dataclass
class _Source:
    """One image file of the source: split, class folder, path inside the source, bytes."""
    split: str
    folder: str
    relative: str  # e.g. "train/n01440764/n01440764_10026.JPEG" (the pack's `files`)


def _layout_of(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """(split, class folder) of a path ending in <split>/<class>/<file>, or None for any
    other file (a CSV beside the splits, macOS "._" files, a README)."""
    if len(parts) < 3 or parts[-3] not in SPLITS or parts[-1].startswith("."):
        return None
    if Path(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return parts[-3], parts[-2]


def _square_jpeg(data: bytes, size: int) -> bytes:
    """One source image as the pack stores it: RGB, squashed to size x size with LANCZOS
    (as the shipped pack was made, so its statistics match), JPEG quality 90."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=PACK_JPEG_QUALITY)
    return out.getvalue()


def _folder_sources(root: Path):
    """(source, bytes reader) for every image of a folder in the official layout, sorted."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        found = _layout_of(path.relative_to(root).parts)
        if found:
            yield _Source(*found, f"{found[0]}/{found[1]}/{path.name}"), path.read_bytes


def _archive_sources(archive: Path, progress):
    """The same for a .tgz / .tar, read in one pass (a stream: the archive is never
    unpacked to disk); `progress(n)` is told how many archive bytes were read."""
    import tarfile
    import zlib

    class Counting(io.RawIOBase):
        def __init__(self, raw):
            self.raw = raw

        def readable(self):
            return True

        def readinto(self, buffer):
            n = self.raw.readinto(buffer)
            progress(n or 0)
            return n

    with open(archive, "rb") as raw:
        stream = io.BufferedReader(Counting(raw), 1 << 20)
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    found = _layout_of(Path(member.name).parts)
                    if not found:
                        continue
                    data = tar.extractfile(member).read()
                    yield _Source(*found, f"{found[0]}/{found[1]}/{Path(member.name).name}"), lambda d=data: d
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise ResattnError(f"{archive} is truncated or not a tar archive ({type(exc).__name__}: {exc}); download "
                               "it again (the official file is imagenette2-160.tgz or imagenette2.tgz).") from None


def prepare_pack(source: str | os.PathLike, out: str | os.PathLike, *, size: int = 128,
                 progress: bool = True) -> tuple[Path, str, dict]:
    """Build a pack (the format of PACK_NAME, see ../shared/data/README.md) from the official
    Imagenette download: a folder or a .tgz holding train/ and val/ of class folders
    (WordNet ids become readable names). Returns (path, sha256, counts per split).

    Images are sorted by (split, path) as in the shipped pack; labels follow the sorted
    class folders. The file is written next to `out` and renamed into place at the end,
    so an interrupted run never leaves a half-written pack behind."""
    import hashlib
    import warnings

    from tqdm import tqdm

    source, out = Path(source).expanduser(), Path(out).expanduser()
    if size < 8 or size > 1024:
        raise ResattnError(f"--size must be between 8 and 1024 pixels, got {size}.")
    if out.suffix != ".npz":
        raise ResattnError(f"The pack is an .npz file: name the output like {out.with_suffix('.npz').name}.")
    if source.is_dir():
        total = sum(1 for p in source.rglob("*") if p.is_file())
        bar = tqdm(total=total, desc="prepare", unit="file", disable=not progress)
        sources = _folder_sources(source)
        step = lambda item: bar.update(1)  # noqa: E731
    elif source.is_file():
        bar = tqdm(total=source.stat().st_size, desc="prepare", unit="B", unit_scale=True, disable=not progress)
        sources = _archive_sources(source, bar.update)
        step = lambda item: None  # noqa: E731
    else:
        raise ResattnError(f"No folder or archive at {source}: pass the Imagenette folder (with train/ and val/) "
                           "or its .tgz.")
    records, skipped = [], []
    with bar:
        for item, read in sources:
            step(item)
            try:
                records.append((item, _square_jpeg(read(), size)))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                skipped.append(f"{item.relative} ({exc})")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}")
    found = {split: sorted({r.folder for r, _ in records if r.split == split}) for split in SPLITS}
    if not found["train"] or not found["val"]:
        have = ", ".join(f"{s}/ with {len(found[s])} class folder(s)" for s in SPLITS)
        raise ResattnError(f"{source} is not in the Imagenette layout: expected train/ and val/, each holding one "
                           f"folder of images per class (e.g. train/n01440764/*.JPEG); found {have}.")
    if found["train"] != found["val"]:
        odd = sorted(set(found["train"]) ^ set(found["val"]))
        raise ResattnError(f"train/ and val/ of {source} hold different classes ({', '.join(odd[:5])}): "
                           "use the complete download.")
    folders = found["train"]
    if len(folders) > 255:
        raise ResattnError(f"{source} has {len(folders)} classes; a pack holds at most 255.")
    records.sort(key=lambda r: (SPLITS.index(r[0].split), r[0].relative))
    lengths = np.array([len(data) for _, data in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    arrays = {
        "jpeg": np.frombuffer(b"".join(data for _, data in records), dtype=np.uint8),
        "offsets": offsets,
        "labels": np.array([folders.index(r.folder) for r, _ in records], dtype=np.uint8),
        "split": np.array([SPLITS.index(r.split) for r, _ in records], dtype=np.uint8),
        "wnids": np.array(folders),
        "class_names": np.array([class_name(f) for f in folders]),
        "files": np.array([r.relative for r, _ in records]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, out)
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    counts = {split: int((arrays["split"] == i).sum()) for i, split in enumerate(SPLITS)}
    return out, digest.hexdigest(), counts
