"""Reading a user's image safely: any common format in, an RGB PIL image out, or ImageError."""
from __future__ import annotations

import io
import os
import warnings
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
    transparency is composited on white; an animation gives its first frame.
    """
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            if not os.path.isfile(source):
                raise ImageError(f"No image file at {source}: check the path.")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise ImageError(f"The image is {width} x {height} pixels, more than the {MAX_PIXELS // 1_000_000} "
                             "megapixels accepted; resize it and try again.")
        if width < 1 or height < 1:
            raise ImageError("The image has no pixels; choose another file.")
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"The image is larger than the {MAX_PIXELS // 1_000_000} megapixels accepted; "
                         "resize it and try again.") from None
    except UnidentifiedImageError:
        raise ImageError("This file is not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...); "
                         "choose an image file.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"The image could not be decoded ({exc}); it may be truncated or corrupt: "
                         "choose another file.") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: scale the real range of values to 0..255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")
