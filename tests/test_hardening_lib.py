"""Library hardening, property-based: whatever bytes, images, checkpoint files, cards or
tensors come in, the library answers with a result or its own error, never anything else."""
from __future__ import annotations

import io
import itertools
import json
import shutil
import threading

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, build_tiny, count_hooks, run_in_threads, toy_card
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import resattn
from resattn import CheckpointError, ImageError, ResattnError

# Pillow warns (UserWarning) about the corrupt files these tests feed it; that is expected.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FAST = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------ images

# Which modes each format can store (checked: saving must succeed for every pair).
FORMAT_MODES = {
    "PNG": ["L", "RGB", "RGBA", "P", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P"],
    "BMP": ["L", "RGB", "RGBA", "P"],
    "TIFF": ["L", "RGB", "RGBA", "P", "I;16", "CMYK"],
    "WEBP": ["RGB", "RGBA"],
}
PAIRS = [(fmt, mode) for fmt, modes in FORMAT_MODES.items() for mode in modes]
LOSSLESS = {"PNG", "TIFF", "BMP"}

MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"GIF87a", b"BM", b"II*\x00", b"MM\x00*",
         b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"\x00\x00\x01\x00", b"8BPS", b"P6\n", b"%PDF-1.4", b"<svg"]


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "P":
        img = Image.fromarray(rng.integers(0, 16, (height, width), dtype=np.uint8), "L").convert("P")
        img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
        return img
    bands = len(mode)  # L, RGB, RGBA, CMYK
    arr = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)


def check_result(result) -> None:
    assert isinstance(result, Image.Image)
    assert result.mode == "RGB"
    assert result.width >= 1 and result.height >= 1
    np.asarray(result)  # the pixels are really there


@FAST
@given(st.sampled_from(MAGIC), st.binary(max_size=2048))
def test_random_bytes_give_an_rgb_image_or_image_error(magic, tail):
    try:
        result = resattn.load_image(magic + tail)
    except ImageError as exc:
        assert str(exc).strip().endswith(".")
        return
    check_result(result)


def _base_images() -> list[bytes]:
    out = []
    for fmt, mode in PAIRS:
        buf = io.BytesIO()
        make_image(mode, 11, 7, seed=len(out)).save(buf, fmt)
        out.append(buf.getvalue())
    return out


BASES = _base_images()


@FAST
@given(st.sampled_from(range(len(BASES))), st.data())
def test_corrupted_images_give_an_rgb_image_or_image_error(index, data):
    raw = bytearray(BASES[index])
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    flips = data.draw(st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(0, 255)), max_size=8),
                      label="flips")
    for at, value in flips:
        if raw:
            raw[at] = value
    try:
        result = resattn.load_image(bytes(raw))
    except ImageError:
        return
    check_result(result)


@FAST
@given(st.sampled_from(PAIRS), st.integers(1, 64), st.integers(1, 64), st.integers(0, 2 ** 32 - 1))
def test_valid_images_of_any_mode_and_format_load_as_rgb(pair, width, height, seed):
    fmt, mode = pair
    img = make_image(mode, width, height, seed)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    result = resattn.load_image(buf.getvalue())
    assert result.mode == "RGB" and result.size == (width, height)
    if fmt in LOSSLESS and mode in ("L", "RGB", "P"):
        assert np.array_equal(np.asarray(result), np.asarray(img.convert("RGB")))


@FAST
@given(st.sampled_from(["JPEG", "PNG", "WEBP"]), st.integers(1, 8), st.integers(1, 40), st.integers(1, 40))
def test_exif_orientation_turns_the_size(fmt, orientation, width, height):
    img = make_image("RGB", width, height, seed=orientation)
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, fmt, exif=exif.tobytes())
    result = resattn.load_image(buf.getvalue())
    assert result.size == ((height, width) if orientation >= 5 else (width, height))


def test_every_declared_format_mode_pair_saves():
    # Keeps FORMAT_MODES honest: the property test above must not silently skip a pair.
    for fmt, mode in PAIRS:
        img = make_image(mode, 3, 2, seed=0)
        img.save(io.BytesIO(), fmt)


def test_closed_or_failing_file_objects():
    closed = io.BytesIO(b"\x89PNG\r\n\x1a\n")
    closed.close()
    with pytest.raises(ImageError):
        resattn.load_image(closed)

    class Failing(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            raise OSError("the network share went away")

    with pytest.raises(ImageError, match="could not be decoded"):
        resattn.load_image(io.BufferedReader(Failing()))


# ------------------------------------------------------------------ checkpoints

@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    model = build_tiny(seed=11)
    stem = tmp_path_factory.mktemp("fuzz") / "toy"
    resattn.save_checkpoint(stem, model, toy_card(model))
    return (stem.with_name("toy.safetensors").read_bytes(), stem.with_name("toy.json").read_text())


CASES = itertools.count()


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), st.booleans())
def test_corrupted_safetensors_load_or_raise_checkpoint_error(checkpoint_bytes, tmp_path, data, keep_json):
    weights, card_text = checkpoint_bytes
    raw = bytearray(weights)
    header_end = 8 + int.from_bytes(raw[:8], "little")
    # Aim half of the changes at the 8-byte length and the JSON header, where parsing happens.
    region = data.draw(st.sampled_from([(0, header_end), (0, len(raw))]), label="region")
    for _ in range(data.draw(st.integers(1, 6), label="changes")):
        raw[data.draw(st.integers(*region).filter(lambda i: i < len(raw)), label="at")] = data.draw(
            st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw)), label="length")]
    folder = tmp_path / f"case{next(CASES)}"
    folder.mkdir()
    (folder / "toy.safetensors").write_bytes(bytes(raw))
    if keep_json:
        (folder / "toy.json").write_text(card_text)
    try:
        model, card = resattn.load_checkpoint(folder / "toy")
    except CheckpointError as exc:
        assert str(exc).strip().endswith(".")
        return
    finally:
        shutil.rmtree(folder)
    assert card["arch"] == "attention56_cifar" and not model.training


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
                    max_leaves=8)


def field(valid):
    return st.one_of(st.sampled_from(valid), JSON)


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arch=field(["attention56_cifar", "attention56", "attention164"]),
       attention=field(["mixed", "none"]), residual=field(["arl", "nal"]),
       width=st.one_of(st.sampled_from([0.125, 0.25]), st.floats(-10, 1e12), JSON),
       classes=st.one_of(st.just(TINY_CLASSES), JSON), input_size=field([32, 224]),
       mean=field([[0.5, 0.5, 0.5]]), std=field([[0.2, 0.2, 0.2]]))
def test_any_card_loads_or_raises_checkpoint_error(checkpoint_bytes, tmp_path, arch, attention, residual, width,
                                                   classes, input_size, mean, std):
    weights, card_text = checkpoint_bytes
    card = json.loads(card_text)
    card.update(arch=arch, attention=attention, residual=residual, width=width, classes=classes,
                input_size=input_size, mean=mean, std=std)
    stem = tmp_path / "fuzzed"
    stem.with_name("fuzzed.safetensors").write_bytes(weights)
    stem.with_name("fuzzed.json").write_text(json.dumps(card))
    try:
        model, loaded = resattn.load_checkpoint(stem)
    except CheckpointError as exc:
        assert str(exc).strip().endswith(".")
        return
    # Only the card the weights were saved with (up to the residual mode, which has no
    # weights of its own, and harmless extra fields) can load.
    assert (arch, attention, width, classes) == ("attention56_cifar", "mixed", 0.125, TINY_CLASSES)
    assert loaded == card and model.residual == residual


# ------------------------------------------------------------------ trace

MODELS: dict = {}  # one model per attention type, shared by the examples below


@settings(deadline=None, max_examples=25)
@given(st.integers(1, 2), st.integers(1, 40), st.integers(1, 40), st.sampled_from(["mixed", "channel", "none"]))
def test_trace_handles_any_image_size(n, height, width, attention):
    if attention not in MODELS:
        MODELS[attention] = build_tiny(attention=attention, seed=2)
    model = MODELS[attention]
    x = torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(height * 100 + width))
    tr = resattn.trace(model, x)
    assert tr.logits.shape == (n, len(TINY_CLASSES)) and torch.isfinite(tr.logits).all()
    for r in tr.modules:
        assert r.input.shape == r.trunk.shape == r.output.shape
        if attention == "none":
            assert r.mask is None
        else:
            assert r.mask.shape == r.trunk.shape
            torch.testing.assert_close(r.output, (1 + r.mask) * r.trunk)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 8), torch.zeros(1, 2, 8, 8), torch.zeros(2, 3, 8, 8, 1),
                                 np.zeros((1, 3, 8, 8), np.float32), "image.png"])
def test_trace_refuses_what_is_not_an_image_batch(bad):
    model = build_tiny()
    with pytest.raises(ResattnError):
        resattn.trace(model, bad)
    assert count_hooks(model) == 0


ZOO = [("mixed", "arl"), ("channel", "arl"), ("spatial", "arl"), ("mixed", "nal"), ("none", "arl")]


def same_trace(a, b) -> bool:
    """Equal tensor for tensor (not close): names, logits and every record's input, T, M, H."""
    def equal(x, y):
        return (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))

    return a.names == b.names and torch.equal(a.logits, b.logits) and all(
        equal(r.input, q.input) and equal(r.trunk, q.trunk) and equal(r.mask, q.mask) and equal(r.output, q.output)
        for r, q in zip(a.modules, b.modules))


def test_traces_and_plain_passes_from_many_threads_at_once():
    """Every network of the zoo (mixed, channel, spatial ARL, mixed NAL, no attention), each
    traced from several threads while other threads run plain forward passes on the same
    models: every trace and every plain pass equals its serial twin tensor for tensor, no
    worker raises (an exception in any thread fails the test) and no hook survives."""
    models = [build_tiny(attention=a, residual=r, seed=1 + i) for i, (a, r) in enumerate(ZOO)]
    inputs = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    serial = {(m, i): resattn.trace(models[m], inputs[i]) for m in range(len(models)) for i in range(len(inputs))}
    with torch.inference_mode():
        serial_plain = [model(inputs[-1]) for model in models]
    assert not same_trace(serial[(0, 0)], serial[(0, 1)]) and not same_trace(serial[(0, 0)], serial[(1, 0)])
    stop = threading.Event()

    def tracer(m: int, i: int) -> list[str]:
        return [f"{ZOO[m]} input {i}" for _ in range(2) if not same_trace(resattn.trace(models[m], inputs[i]),
                                                                         serial[(m, i)])]

    def plain(m: int) -> list[str]:
        wrong = []
        with torch.inference_mode():
            while not stop.is_set():
                if not torch.equal(models[m](inputs[-1]), serial_plain[m]):
                    wrong.append(f"plain pass on {ZOO[m]}")
        return wrong

    noise_results: list = []
    noise = threading.Thread(target=lambda: noise_results.append(
        run_in_threads(plain, [(m,) for m in range(len(models))], start_together=False)))
    noise.start()
    try:
        traced = run_in_threads(tracer, [(m, i) for m in range(len(models)) for i in range(len(inputs) - 1)])
    finally:
        stop.set()
        noise.join(timeout=120)
    assert not noise.is_alive() and len(noise_results) == 1, "a plain-pass worker raised or hung (see above)"
    wrong = [w for ws in traced + noise_results[0] for w in ws]
    assert not wrong, wrong
    assert all(count_hooks(m) == 0 for m in models)
