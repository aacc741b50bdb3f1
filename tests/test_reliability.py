"""Issue 8's hostile inputs and faults, each recorded as a row of docs/reliability.md:
every image case through the library and through the app's uploader (the session keeps
serving the next upload), a 1,000-trace soak, and training killed while it writes its
checkpoint or started without disk space. The checkpoint and concurrency rows come from
test_checkpoints.py, test_app.py, test_trace.py and test_browser.py."""
from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resattn
from resattn import ImageError

from conftest import build_tiny, count_hooks
from test_app import assert_clean, chart, navigation_v2, png_bytes, start, toy_zoo, use_upload, zoo_env  # noqa: F401
from test_images import PDF, SVG, encode, noisy_rgb, png_declaring
from test_train import TINY, run_train

ROOT = Path(__file__).resolve().parents[1]
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# ----------------------------------------------------------------------------- the image cases

def _exif_rotated() -> bytes:
    """60 x 30 as stored, red block top-left; EXIF orientation 6 says "turn 90° clockwise"."""
    img = Image.new("RGB", (60, 30), GREEN)
    img.paste(RED, (0, 0, 15, 15))
    exif = img.getexif()
    exif[0x0112] = 6
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (6, 4), colour) for colour in (RED, GREEN, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _panorama() -> bytes:
    img = Image.new("RGB", (10000, 300), GREEN)
    img.paste(RED, (9990, 0, 10000, 300))
    return encode(img, "PNG", compress_level=1)


def _rgba() -> bytes:
    img = Image.new("RGBA", (40, 20), (255, 0, 0, 255))
    img.paste((0, 0, 255, 0), (20, 0, 40, 20))  # right half fully transparent
    return encode(img, "PNG")


def _sixteen_bit() -> bytes:
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)[None, :].repeat(8, axis=0)
    return encode(Image.fromarray(ramp), "PNG")


def _cmyk() -> bytes:
    return encode(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG", quality=95)  # red


def _px(img, xy):
    return tuple(int(v) for v in img.getpixel(xy))


def _near(a, b, tol=40):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


# name -> (file name, bytes, expected, check of the loaded image or None for a refusal)
IMAGE_CASES = {
    "empty file": ("empty.jpg", lambda: b"", "ImageError: empty", None),
    "text file renamed .jpg": ("notes.jpg", lambda: b"This is a text file, not a photo.\n" * 20,
                               "ImageError: not an image", None),
    "truncated JPEG": ("cut.jpg", lambda: encode(noisy_rgb(64, 48), "JPEG", quality=90)[:1500],
                       "ImageError: truncated", None),
    "PNG bomb declaring 30000x30000": ("bomb.png", lambda: png_declaring(30000, 30000),
                                       "ImageError naming the megapixels, before decoding", None),
    "SVG": ("drawing.svg", lambda: SVG, "ImageError: not a raster image", None),
    "PDF": ("paper.pdf", lambda: PDF, "ImageError: not an image", None),
    "16-bit PNG": ("ramp16.png", _sixteen_bit, "RGB, full 0-255 range (not clipped)",
                   lambda im: _px(im, (0, 0))[0] == 0 and _px(im, (255, 0))[0] == 255
                   and len({_px(im, (x, 0))[0] for x in range(256)}) > 200),
    "CMYK JPEG": ("cmyk.jpg", _cmyk, "RGB, colours converted (red stays red)",
                  lambda im: _near(_px(im, (8, 4)), RED)),
    "RGBA PNG": ("alpha.png", _rgba, "RGB, transparency composited on white",
                 lambda im: _near(_px(im, (5, 10)), RED, 2) and _px(im, (35, 10)) == (255, 255, 255)),
    "1x1 image": ("dot.png", lambda: encode(Image.new("RGB", (1, 1), BLUE), "PNG"), "a 1x1 RGB image",
                  lambda im: im.size == (1, 1) and _px(im, (0, 0)) == BLUE),
    "10000x300 panorama": ("pano.png", _panorama, "10000x300 RGB, right edge intact",
                           lambda im: im.size == (10000, 300) and _px(im, (9995, 150)) == RED),
    "animated GIF": ("anim.gif", _animated_gif, "the first frame (red)",
                     lambda im: im.size == (6, 4) and _near(_px(im, (3, 2)), RED, 4)),
    "EXIF-rotated photo": ("rotated.jpg", _exif_rotated, "upright: 30x60, red block top-right",
                           lambda im: im.size == (30, 60) and _near(_px(im, (24, 5)), RED)
                           and _near(_px(im, (5, 5)), GREEN)),
}


def _describe(image: Image.Image) -> str:
    return f"{image.mode} {image.size[0]}x{image.size[1]}"


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_case_through_the_library(case, reliability):
    _, make, expected, check = IMAGE_CASES[case]
    data = make()
    started = time.perf_counter()
    try:
        image = resattn.load_image(data)
    except ImageError as exc:
        observed = f"ImageError: {exc}"
        reliability("images", f"library: {case}", expected, observed)
        assert check is None, observed
        message = str(exc)
        assert message[:1].isupper() and message.endswith("."), message
        assert time.perf_counter() - started < 2
        return
    ok = check is not None and image.mode == "RGB" and check(image)
    reliability("images", f"library: {case}", expected, f"{_describe(image)}, {'as expected' if ok else 'WRONG'}")
    assert check is not None, f"{case} should have been refused, got {_describe(image)}"
    assert ok


def _numbers(field) -> list[float]:
    """A plotly data field as floats (plotly sends arrays base64-encoded as {dtype, bdata})."""
    import base64

    if isinstance(field, dict):
        return np.frombuffer(base64.b64decode(field["bdata"]), dtype=field["dtype"]).astype(float).tolist()
    return [float(v) for v in field]


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_case_through_the_app_uploader(case, zoo_env, reliability):  # noqa: F811 (fixture)
    """Upload the case, then a good photo in the same session: the case either gives the
    prediction the library computes for the same decoded image, or an st.error with a
    sentence and the sample photo instead; the next upload is then served normally."""
    from ui import cache

    from ui.sidebar import UPLOAD_TYPES

    name, make, expected, check = IMAGE_CASES[case]
    label = case
    if name.rsplit(".", 1)[-1] not in UPLOAD_TYPES:
        # The uploader refuses the extension itself (test_browser checks that); here the file
        # arrives renamed, as a user would rename it to get past the picker.
        name = name.rsplit(".", 1)[0] + ".png"
        label = f"{case} renamed {name}"
    data = make()
    at = start()
    use_upload(at, name, data, mime="application/octet-stream")
    assert_clean(at)
    errors = [e.value for e in at.error]
    shown = at.get("plotly_chart")
    if errors:
        observed = f"st.error: {errors[0]}; page still drawn ({len(shown)} charts)"
    else:
        # The app's prediction must be the library's on the same (upright, converted) image.
        model, card = resattn.load_checkpoint(zoo_env / "attention56_mixed_arl")
        image = cache.decode_upload(cache.image_sha(data), data)
        x = resattn.data.preprocess(image, card["input_size"], card["mean"], card["std"])
        with torch.inference_mode():
            probs = sorted(torch.softmax(model(x)[0], 0).tolist(), reverse=True)
        got = _numbers(chart(at, "predictions")["data"][0]["x"])
        same = np.allclose(sorted(got, reverse=True), probs[:len(got)], atol=1e-4)
        observed = f"prediction shown, {'equal to' if same else 'DIFFERENT from'} the library's on the decoded image"
    # The same session serves the next, good upload.
    use_upload(at, "next.png", png_bytes(seed=11))
    assert_clean(at)
    follow = "next upload served" if not at.error and at.query_params["img"] == "upload" else "next upload FAILED"
    reliability("images", f"app upload: {label}", "prediction, or st.error with what to do; app keeps serving",
                f"{observed}; {follow}")
    if check is None:
        assert errors and errors[0].startswith(name) and errors[0].rstrip("*").endswith("."), errors
        assert shown, "the page must still draw the sample photo"
    else:
        assert not errors, errors
        assert same
    assert follow == "next upload served"


# ----------------------------------------------------------------------------- soak

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_a_thousand_traces_leave_no_hooks_and_no_memory_growth(reliability):
    """1,000 traces through one model, as the app's cached model serves them in a lecture,
    each kept only as long as a page would keep it: RSS after the soak is within 5 % of
    RSS after a warm-up of 100 traces, and no hook is left behind."""
    model = build_tiny("attention56", width=0.25, seed=5)  # the zoo's width, at its 128 px
    images = [torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(16)]
    hooks_before = count_hooks(model)

    def traces(n: int) -> None:
        for i in range(n):
            tr = resattn.trace(model, images[i % len(images)])
            arrays = {r.name: r.mask.numpy().copy() for r in tr.modules}  # what the app keeps
            del tr, arrays

    traces(100)
    gc.collect()
    warm = _rss_bytes()
    started = time.perf_counter()
    traces(1000)
    gc.collect()
    after = _rss_bytes()
    growth = (after - warm) / warm
    reliability("soak", "1,000 traces through one model (after 100 warm-up)",
                "hooks unchanged, RSS growth <= 5 %",
                f"hooks {hooks_before} -> {count_hooks(model)}; RSS {warm / 2**20:.0f} -> {after / 2**20:.0f} MiB "
                f"({100 * growth:+.2f} %); {time.perf_counter() - started:.1f} s")
    assert count_hooks(model) == hooks_before == 0
    assert growth <= 0.05


def test_the_app_caches_are_bounded(reliability):
    """Every st.cache_data / st.cache_resource in the app has max_entries (and the trace
    caches a ttl), so a long lecture cannot fill memory; the bounds go into the table."""
    import ast

    unbounded, bounds = [], {}
    for path in sorted((ROOT / "ui").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and ast.unparse(deco.func) in ("st.cache_data", "st.cache_resource"):
                    kw = {k.arg: ast.unparse(k.value) for k in deco.keywords}
                    if "max_entries" not in kw:
                        unbounded.append(f"{path.name}:{node.name}")
                    bounds[(path.stem, node.name)] = kw.get("max_entries", "UNBOUNDED")
    import importlib

    from ui import cache

    resolved = {}
    for (module, fn), v in bounds.items():
        names = vars(importlib.import_module(f"ui.{module}"))
        resolved[fn] = eval(v, {}, names) if v != "UNBOUNDED" else v  # noqa: S307 (our own source)
    reliability("soak", "the app's caches", "every cache has max_entries",
                "; ".join(f"{fn} {n}" for fn, n in resolved.items()) + f"; trace ttl {cache.TRACE_TTL_S} s; "
                f"uploads shrunk to {cache.MAX_SIDE} px")
    assert not unbounded, unbounded
    assert len(resolved) >= 10


# ----------------------------------------------------------------------------- training faults

DYING_WRITER = textwrap.dedent("""
    # Run the trainer, but die (SIGKILL) half-way through writing the checkpoint of epoch 2:
    # the temporary file is on disk, half-written, when the process vanishes.
    import os, signal, sys
    import resattn.train as train
    real, calls = train.atomic_write, []
    def dying(target, write):
        calls.append(target)
        if len(calls) < 2:
            return real(target, write)
        def half(tmp):
            write(tmp)
            with open(tmp, "r+b") as f:
                f.truncate(os.path.getsize(tmp) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(target, half)
    train.atomic_write = dying
    sys.exit(train.main(sys.argv[1:]))
""")


def test_kill_9_while_the_checkpoint_is_written(tmp_path, reliability):
    out = tmp_path / "run"
    args = [a if a != "2" else "3" for a in TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    died = subprocess.run([sys.executable, "-c", DYING_WRITER, *args, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    leftovers = sorted(p.name for p in out.glob(".last.pt.*"))
    state = torch.load(out / "last.pt", weights_only=True)  # the previous, whole file
    resumed = run_train(*args, "--out", str(out), "--resume")
    epochs = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    reliability("training", "kill -9 while last.pt is being written (epoch 2)",
                "last.pt is the previous whole file; resume loses at most one epoch",
                f"exit {died.returncode}; half-written temp file {'left' if leftovers else 'absent'}; last.pt at "
                f"epoch {state['epoch']}; resume exit {resumed.returncode}, logged epochs {epochs}; temp files "
                f"after resume: {len(list(out.glob('.last.pt.*')))}")
    assert died.returncode == -9
    assert leftovers, "the kill should have left the half-written temporary file"
    assert state["epoch"] == 1 and state["step"] == 0
    assert resumed.returncode == 0, resumed.stderr
    assert epochs[-1] == 3 and sorted(set(epochs)) == [1, 2, 3]
    assert not list(out.glob(".last.pt.*")), "resume should clear stale temporary files"


def test_a_full_disk_fails_before_training(tmp_path, monkeypatch, capsys, reliability):
    import shutil

    import resattn.train as train

    real = shutil.disk_usage
    monkeypatch.setattr(train.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=50 * 2**20))  # 50 MiB free
    monkeypatch.setattr(train.signal, "signal", lambda *args: None)
    out = tmp_path / "run"
    started = time.perf_counter()
    code = train.main([*TINY, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    reliability("training", "disk nearly full (50 MiB free)", "one-line error before training, exit 2",
                f"exit {code} after {time.perf_counter() - started:.1f} s: {err}")
    assert code == 2 and len(err.splitlines()) == 1 and "free" in err and "--out" in err
    assert not (out / "last.pt").exists() and not (out / "log.jsonl").exists()


def test_the_disk_filling_up_during_training_gives_one_line(tmp_path, monkeypatch, capsys, reliability):
    """ENOSPC when an epoch's checkpoint is written: one line naming the file and what to
    do, exit 1, and the last whole checkpoint stays usable."""
    import errno

    import resattn.train as train

    real, calls = train.atomic_write, []

    def full(target, write):
        calls.append(target)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(target, write)

    monkeypatch.setattr(train, "atomic_write", full)
    monkeypatch.setattr(train.signal, "signal", lambda *args: None)  # keep pytest's own handlers
    out = tmp_path / "run"
    code = train.main([*[a if a != "2" else "3" for a in TINY], "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    last = err[-1] if err else ""
    reliability("training", "disk full while an epoch's checkpoint is written",
                "one line, exit 1, the previous checkpoint kept", f"exit {code}: {last}")
    assert code == 1 and last.startswith("error:") and "No space left" in last and "--resume" in last
    assert "Traceback" not in "\n".join(err)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
