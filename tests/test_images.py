"""load_image: every source kind, EXIF orientation, every common mode, odd sizes, and a clear
ImageError (a sentence) for everything that is not a readable image. All images are generated."""
from __future__ import annotations

import gc
import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

import resattn
from resattn import ImageError
from resattn.images import MAX_PIXELS

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def close_to(pixel, expected, tol: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


def assert_sentence(exc: BaseException) -> None:
    message = str(exc).strip()
    assert message[:1].isupper() and message.endswith("."), message


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height RGB pixels (the data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def noisy_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


# ------------------------------------------------------------------ sources

def test_path_bytes_and_file_like_give_the_same_image(tmp_path):
    img = noisy_rgb(23, 17)
    data = encode(img, "PNG")
    path = tmp_path / "noise.png"
    path.write_bytes(data)
    results = [resattn.load_image(path), resattn.load_image(str(path)), resattn.load_image(data),
               resattn.load_image(bytearray(data)), resattn.load_image(memoryview(data)),
               resattn.load_image(io.BytesIO(data))]
    with open(path, "rb") as handle:
        results.append(resattn.load_image(handle))
        assert not handle.closed  # the caller's file stays the caller's
    for result in results:
        assert isinstance(result, Image.Image) and result.mode == "RGB" and result.size == (23, 17)
        assert np.array_equal(np.asarray(result), np.asarray(img))


def test_returned_image_holds_no_file_open(tmp_path):
    """Files opened for a path are closed by load_image itself, on success and on failure,
    not left for the garbage collector (which warns, and may run late)."""
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "cut.png").write_bytes(encode(noisy_rgb(64, 64), "PNG")[:300])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = resattn.load_image(tmp_path / "anim.gif")
        with pytest.raises(ImageError):
            resattn.load_image(tmp_path / "cut.png")
        gc.collect()
    assert image.size == (8, 8)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_not_a_source_is_a_type_error():
    with pytest.raises(TypeError, match="path, bytes or a file-like"):
        resattn.load_image(12345)


# ------------------------------------------------------------------ orientation

def corner_image() -> Image.Image:
    """60 x 30, green, with a red 15 x 15 block in the top-left corner."""
    img = Image.new("RGB", (60, 30), GREEN)
    img.paste(RED, (0, 0, 15, 15))
    return img


@pytest.mark.parametrize("orientation,size,red_at", [
    (1, (60, 30), "top-left"),
    (3, (60, 30), "bottom-right"),  # rotated 180
    (6, (30, 60), "top-right"),  # stored rotated: display turns it 90 degrees clockwise
    (8, (30, 60), "bottom-left"),  # 90 degrees counter-clockwise
])
def test_exif_orientation_is_applied(orientation, size, red_at):
    img = corner_image()
    exif = img.getexif()
    exif[0x0112] = orientation
    result = resattn.load_image(encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert result.size == size
    w, h = size
    corners = {"top-left": (5, 5), "top-right": (w - 6, 5), "bottom-left": (5, h - 6), "bottom-right": (w - 6, h - 6)}
    for name, xy in corners.items():
        expected = RED if name == red_at else GREEN
        assert close_to(result.getpixel(xy), expected, tol=40), (name, result.getpixel(xy))


# ------------------------------------------------------------------ modes

def test_greyscale():
    result = resattn.load_image(encode(Image.new("L", (5, 4), 77), "PNG"))
    assert result.mode == "RGB" and result.getpixel((2, 2)) == (77, 77, 77)


def palette_image() -> Image.Image:
    img = Image.new("P", (4, 2), 0)
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putpixel((1, 0), 1)
    img.putpixel((2, 0), 2)
    return img


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF"])
def test_palette_without_transparency(fmt):
    result = resattn.load_image(encode(palette_image(), fmt))
    assert result.mode == "RGB"
    assert [result.getpixel((x, 0)) for x in range(3)] == [RED, GREEN, BLUE]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_composites_on_white(fmt):
    result = resattn.load_image(encode(palette_image(), fmt, transparency=1))
    assert [result.getpixel((x, 0)) for x in range(3)] == [RED, WHITE, BLUE]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_rgba_composites_on_white(fmt):
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (10, 20, 30, 0))  # fully transparent -> white
    img.putpixel((1, 0), (255, 0, 0, 255))  # opaque red stays red
    img.putpixel((2, 0), (255, 0, 0, 128))  # half red over white -> pink
    result = resattn.load_image(encode(img, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert result.getpixel((0, 0)) == WHITE
    assert result.getpixel((1, 0)) == RED
    assert close_to(result.getpixel((2, 0)), (255, 127, 127), tol=2)


def test_la_composites_on_white():
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (0, 0))
    img.putpixel((1, 0), (100, 255))
    result = resattn.load_image(encode(img, "PNG"))
    assert result.getpixel((0, 0)) == WHITE and result.getpixel((1, 0)) == (100, 100, 100)


def test_cmyk_jpeg():
    img = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    img.paste((0, 0, 0, 255), (8, 0, 16, 8))  # full black
    result = resattn.load_image(encode(img, "JPEG", quality=95))
    assert result.mode == "RGB"
    assert close_to(result.getpixel((2, 4)), RED) and close_to(result.getpixel((13, 4)), (0, 0, 0))


def test_sixteen_bit_png_uses_the_full_range():
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)[None, :].repeat(3, axis=0)
    img = Image.fromarray(ramp)
    data = encode(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = np.asarray(resattn.load_image(data))
    assert out.shape == (3, 256, 3)
    grey = out[0, :, 0].astype(int)
    assert grey[0] == 0 and grey[-1] == 255
    assert (np.diff(grey) >= 0).all() and len(set(grey.tolist())) > 200  # not clipped at 255


@pytest.mark.parametrize("value,expected", [(65535, 255), (0, 0), (32896, 128), (257 * 200, 200)])
def test_sixteen_bit_values_map_linearly(value, expected):
    """A flat 16-bit image keeps its brightness (a white one stays white)."""
    img = Image.fromarray(np.full((4, 5), value, np.uint16))
    result = resattn.load_image(encode(img, "PNG"))
    assert result.getpixel((1, 1)) == (expected,) * 3


def test_one_pixel_image():
    result = resattn.load_image(encode(Image.new("RGB", (1, 1), BLUE), "PNG"))
    assert result.size == (1, 1) and result.getpixel((0, 0)) == BLUE


def test_panorama():
    img = Image.new("RGB", (10000, 300), GREEN)
    img.paste(RED, (9990, 0, 10000, 300))
    result = resattn.load_image(encode(img, "PNG", compress_level=1))
    assert result.size == (10000, 300) and result.getpixel((9995, 150)) == RED


def test_animated_gif_gives_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 4), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    for source in (path, path.read_bytes()):
        result = resattn.load_image(source)
        assert result.size == (6, 4) and close_to(result.getpixel((3, 2)), RED, tol=4)


# ------------------------------------------------------------------ refusals

SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def tiff_with_float_strip_offsets() -> bytes:
    """A TIFF whose StripOffsets tag has type DOUBLE: Pillow's decoder raises TypeError
    (found by fuzzing)."""
    data = bytearray(encode(noisy_rgb(13, 9), "TIFF"))
    ifd = struct.unpack("<I", data[4:8])[0]
    (entries,) = struct.unpack("<H", data[ifd:ifd + 2])
    for i in range(entries):
        at = ifd + 2 + 12 * i
        if struct.unpack("<H", data[at:at + 2])[0] == 273:  # StripOffsets
            data[at + 2:at + 4] = struct.pack("<H", 12)  # type DOUBLE
            return bytes(data)
    raise AssertionError("no StripOffsets tag")


@pytest.mark.parametrize("kind", ["empty", "text", "truncated-jpeg", "truncated-png", "svg", "pdf",
                                  "jpeg-header-only", "bad-tiff-tag", "random"])
def test_unreadable_bytes_raise_image_error(kind):
    jpeg = encode(noisy_rgb(64, 48), "JPEG", quality=90)
    data = {
        "empty": b"",
        "text": b"This is a text file, not a photo.\n" * 20,
        "truncated-jpeg": jpeg[: len(jpeg) // 2],
        "truncated-png": encode(noisy_rgb(64, 48), "PNG")[:400],
        "svg": SVG,
        "pdf": PDF,
        "jpeg-header-only": jpeg[:200],
        "bad-tiff-tag": tiff_with_float_strip_offsets(),
        "random": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    }[kind]
    with pytest.raises(ImageError) as info:
        resattn.load_image(data)
    assert_sentence(info.value)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("definitely not a JPEG\n")
    with pytest.raises(ImageError, match="not an image") as info:
        resattn.load_image(path)
    assert_sentence(info.value)


@pytest.mark.parametrize("name", ["missing.png", "."])
def test_missing_file_or_a_folder(name, tmp_path):
    with pytest.raises(ImageError, match="No image file") as info:
        resattn.load_image(tmp_path / name)
    assert_sentence(info.value)


# 10000 x 10000 lies between Pillow's warning and error thresholds: Pillow only warns.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("width,height", [(30000, 30000), (10000, 10000), (7000, 7000), (1, 50_000_000),
                                          (2 ** 31 - 1, 2 ** 31 - 1)])
def test_decompression_bomb_is_refused_before_decoding(width, height):
    data = png_declaring(width, height)
    assert len(data) < 200
    start = time.perf_counter()
    with pytest.raises(ImageError, match="megapixels") as info:
        resattn.load_image(data)
    assert time.perf_counter() - start < 1.0
    assert_sentence(info.value)
    assert width * height > MAX_PIXELS


def test_just_under_the_pixel_limit_is_not_called_a_bomb():
    # 6000 x 6000 = 36 MP is accepted as far as the size check goes; the fake data then
    # fails to decode, which must be reported as a decoding problem, not as too large.
    with pytest.raises(ImageError) as info:
        resattn.load_image(png_declaring(6000, 6000))
    assert "megapixels" not in str(info.value)
    assert_sentence(info.value)
