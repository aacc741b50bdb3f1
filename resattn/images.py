"""Reading a user's image safely: any common format in, an RGB PIL image out, or ImageError."""
from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

# Decompression bombs: refuse anything larger before decoding a pixel. Pillow reads the
# size from the header, so the check costs nothing even for a 1 GB image.
MAX_PIXELS = 40_000_000


def load_image(source: str | os.PathLike | bytes | BinaryIO) -> Image.Image:
    """Open an image from a path, bytes or a file-like object and return it as RGB.

    EXIF orientation is applied; greyscale, palette, CMYK and 16-bit images are converted;
    transparency is composited on white; an animation gives its first frame. The returned
    image is a new one that holds no file open.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise ImageError(f"No image file at {os.fspath(source)}: check the path.")
    elif not hasattr(source, "read"):
        raise TypeError(f"load_image takes a path, bytes or a file-like object, not {type(source).__name__}")
    if _is_empty(source):
        raise ImageError("The file is empty (0 bytes); choose an image file.")
    try:
        # Pillow refuses images above 2 x Image.MAX_IMAGE_PIXELS itself and only warns above
        # 1 x; our own MAX_PIXELS check below is stricter than both. (No warnings.catch_warnings
        # here: it swaps global state and is not thread-safe, and the app loads from threads.)
        img = Image.open(source)
        # `with` closes the file Pillow opened for a path, also when decoding fails.
        with img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"The image is {width} x {height} pixels, more than the "
                                 f"{MAX_PIXELS // 1_000_000} megapixels accepted; resize it and try again.")
            if width < 1 or height < 1:
                raise ImageError("The image has no pixels; choose another file.")
            img.seek(0)
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"The image is larger than the {MAX_PIXELS // 1_000_000} megapixels accepted; "
                         "resize it and try again.") from None
    except UnidentifiedImageError:
        raise ImageError("This file is not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...); "
                         "choose an image file.") from None
    except Exception as exc:
        # A corrupt file can make Pillow's decoders raise almost anything (OSError, SyntaxError,
        # struct.error, TypeError for a TIFF tag of the wrong type, ...): all mean "unreadable".
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ImageError(f"The image could not be decoded ({detail}); it may be truncated or corrupt: "
                         "choose another file.") from None


def _is_empty(source) -> bool:
    """True for a 0-byte path or a seekable stream with nothing left to read (others are left
    to Pillow, which calls them unreadable)."""
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source) == 0
    try:
        if not source.seekable():
            return False
        position = source.tell()
        first = source.read(1)
        source.seek(position)
        return not first
    except (AttributeError, OSError, ValueError):
        return False


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I;16"):
        # 16-bit greyscale: 0..65535 maps linearly onto 0..255 (Pillow's own convert("L")
        # would clip everything above 255 to white).
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.rint(arr * (255.0 / 65535.0)).astype(np.uint8), mode="L")
    elif img.mode in ("I", "F"):
        # 32-bit integer or float greyscale has no fixed range: stretch the values present to
        # 0..255; a constant image keeps its value, clipped to 0..255.
        arr = np.asarray(img, dtype=np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.clip(arr, 0.0, 255.0)
        img = Image.fromarray(np.rint(arr).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")
